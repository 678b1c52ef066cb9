//! [`StoreStatus`] and the lifecycle state machine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a store is in its lifecycle.
///
/// ```text
/// PROVISIONING ──► ACTIVE ──► DECOMMISSIONED
///       └──────────────────────────▲
/// ```
///
/// `DECOMMISSIONED` is terminal. On the wire each status is its
/// `SCREAMING_SNAKE_CASE` name ([`as_str`](Self::as_str)).
///
/// The enum is `#[non_exhaustive]`: a later version may add a status, so
/// clients keep a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum StoreStatus {
    /// Being set up; every store starts here.
    Provisioning,
    /// In service.
    Active,
    /// Taken out of service for good (terminal).
    Decommissioned,
}

impl StoreStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 3] = [Self::Provisioning, Self::Active, Self::Decommissioned];

    /// The status a new store starts in.
    pub const INITIAL: Self = Self::Provisioning;

    /// The wire name: `PROVISIONING`, `ACTIVE` or `DECOMMISSIONED`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "PROVISIONING",
            Self::Active => "ACTIVE",
            Self::Decommissioned => "DECOMMISSIONED",
        }
    }

    /// Whether no transition leaves this status.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Decommissioned)
    }

    /// The statuses this one may change to (not counting itself, which is
    /// always allowed as a no-op).
    #[must_use]
    pub const fn next_states(self) -> &'static [Self] {
        match self {
            Self::Provisioning => &[Self::Active, Self::Decommissioned],
            Self::Active => &[Self::Decommissioned],
            Self::Decommissioned => &[],
        }
    }

    /// Whether a request to move from `self` to `next` is accepted (a
    /// change or a no-op).
    #[must_use]
    pub fn can_transition_to(self, next: Self) -> bool {
        self == next || self.next_states().contains(&next)
    }

    /// Checks a requested move from `self` to `next`.
    ///
    /// ```
    /// use store_domain::{StoreStatus, Transition};
    ///
    /// let t = StoreStatus::Provisioning.transition_to(StoreStatus::Active)?;
    /// assert_eq!(t, Transition::Changed { from: StoreStatus::Provisioning, to: StoreStatus::Active });
    /// assert!(StoreStatus::Active.transition_to(StoreStatus::Active)?.is_noop());
    /// assert!(StoreStatus::Decommissioned.transition_to(StoreStatus::Active).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidTransition`] when `next` is neither `self` nor one of
    /// [`next_states`](Self::next_states).
    pub fn transition_to(self, next: Self) -> Result<Transition, InvalidTransition> {
        if self == next {
            Ok(Transition::Unchanged(self))
        } else if self.next_states().contains(&next) {
            Ok(Transition::Changed {
                from: self,
                to: next,
            })
        } else {
            Err(InvalidTransition {
                from: self,
                to: next,
            })
        }
    }
}

impl fmt::Display for StoreStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StoreStatus {
    type Err = ParseStatusError;

    /// Parses the exact wire name (case-sensitive, no surrounding spaces).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or(ParseStatusError)
    }
}

/// An accepted status request: what [`StoreStatus::transition_to`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The requested status is the current one: nothing changes.
    Unchanged(StoreStatus),
    /// The status changes.
    Changed {
        /// The status before.
        from: StoreStatus,
        /// The status after.
        to: StoreStatus,
    },
}

impl Transition {
    /// Whether nothing changes.
    #[must_use]
    pub const fn is_noop(self) -> bool {
        matches!(self, Self::Unchanged(_))
    }

    /// The status after the transition.
    #[must_use]
    pub const fn status(self) -> StoreStatus {
        match self {
            Self::Unchanged(status) | Self::Changed { to: status, .. } => status,
        }
    }
}

/// A status change the lifecycle does not allow (API code
/// `INVALID_STATUS_TRANSITION`, HTTP 409).
///
/// Not retryable: the same request is refused the same way until the store's
/// status changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a store's status cannot change from {from} to {to}")]
pub struct InvalidTransition {
    /// The store's current status.
    pub from: StoreStatus,
    /// The status that was asked for.
    pub to: StoreStatus,
}

impl InvalidTransition {
    /// A sentence for API clients, naming the allowed statuses.
    ///
    /// ```
    /// use store_domain::StoreStatus;
    ///
    /// let err = StoreStatus::Active.transition_to(StoreStatus::Provisioning).unwrap_err();
    /// assert_eq!(
    ///     err.message(),
    ///     "Cannot change status from ACTIVE to PROVISIONING. Allowed: DECOMMISSIONED."
    /// );
    /// ```
    #[must_use]
    pub fn message(&self) -> String {
        let allowed = self.from.next_states();
        if allowed.is_empty() {
            format!(
                "Cannot change status from {} to {}. {} is a final status.",
                self.from, self.to, self.from
            )
        } else {
            let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            format!(
                "Cannot change status from {} to {}. Allowed: {}.",
                self.from,
                self.to,
                names.join(", ")
            )
        }
    }
}

/// A string that is not one of the [`StoreStatus`] wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a store status: expected PROVISIONING, ACTIVE or DECOMMISSIONED")]
pub struct ParseStatusError;

#[cfg(test)]
mod tests {
    use super::StoreStatus::{Active, Decommissioned, Provisioning};
    use super::*;

    /// Every (from, to) pair and whether it is accepted.
    #[test]
    fn transition_table() {
        let table = [
            (Provisioning, Provisioning, true),
            (Provisioning, Active, true),
            (Provisioning, Decommissioned, true),
            (Active, Provisioning, false),
            (Active, Active, true),
            (Active, Decommissioned, true),
            (Decommissioned, Provisioning, false),
            (Decommissioned, Active, false),
            (Decommissioned, Decommissioned, true),
        ];
        for (from, to, allowed) in table {
            let result = from.transition_to(to);
            assert_eq!(result.is_ok(), allowed, "{from} -> {to}");
            assert_eq!(from.can_transition_to(to), allowed, "{from} -> {to}");
            match result {
                Ok(t) => {
                    assert_eq!(t.status(), to);
                    assert_eq!(t.is_noop(), from == to);
                }
                Err(err) => assert_eq!(err, InvalidTransition { from, to }),
            }
        }
    }

    #[test]
    fn only_decommissioned_is_terminal() {
        for status in StoreStatus::ALL {
            assert_eq!(status.is_terminal(), status.next_states().is_empty());
        }
        assert!(Decommissioned.is_terminal());
        assert_eq!(StoreStatus::INITIAL, Provisioning);
    }

    #[test]
    fn wire_names_round_trip() {
        for status in StoreStatus::ALL {
            assert_eq!(status.as_str().parse::<StoreStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(serde_json::from_str::<StoreStatus>(&json).unwrap(), status);
        }
    }

    #[test]
    fn parsing_is_exact() {
        for bad in ["active", " ACTIVE", "ACTIVE ", "", "DELETED", "Active"] {
            assert_eq!(bad.parse::<StoreStatus>(), Err(ParseStatusError), "{bad:?}");
        }
        assert!(serde_json::from_str::<StoreStatus>("\"active\"").is_err());
    }

    #[test]
    fn invalid_transition_messages() {
        let err = Decommissioned.transition_to(Active).unwrap_err();
        assert_eq!(
            err.message(),
            "Cannot change status from DECOMMISSIONED to ACTIVE. DECOMMISSIONED is a final status."
        );
        assert_eq!(
            err.to_string(),
            "a store's status cannot change from DECOMMISSIONED to ACTIVE"
        );
        let err = Active.transition_to(Provisioning).unwrap_err();
        assert_eq!(
            err.message(),
            "Cannot change status from ACTIVE to PROVISIONING. Allowed: DECOMMISSIONED."
        );
    }
}

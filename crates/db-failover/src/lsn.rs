//! Write-ahead-log positions and the read-your-writes token built on them.

use std::fmt;

use tokio_postgres::types::PgLsn;

/// A position in PostgreSQL's write-ahead log (`pg_lsn`), as a byte offset.
///
/// Positions grow along one timeline, so the byte distance between the
/// primary's current position and a replica's replay position is the
/// replica's lag in bytes. They do not grow across a failover: a promoted
/// replica's new timeline starts at its own replay position, which may be
/// below the old primary's last position, so positions from different
/// primaries are never compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `self - earlier` in bytes, or 0 when `earlier` is ahead.
    pub fn bytes_after(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl From<PgLsn> for Lsn {
    fn from(lsn: PgLsn) -> Lsn {
        Lsn(u64::from(lsn))
    }
}

impl fmt::Display for Lsn {
    /// PostgreSQL's own notation: `16/B374D848`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What a write hands back so that a later read can see it: the primary's
/// WAL insert position right after the write committed, and the topology
/// generation it was written in.
///
/// Pass it to [`Cluster::read_after`](crate::Cluster::read_after): a replica
/// serves the read only once its replay position has reached
/// [`CommitToken::lsn`]. A token without a position (the position could not
/// be read after the commit) always reads from the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitToken {
    lsn: Option<Lsn>,
    generation: u64,
}

impl CommitToken {
    /// A token for a write that committed at or before `lsn`.
    pub fn new(lsn: Lsn, generation: u64) -> CommitToken {
        CommitToken {
            lsn: Some(lsn),
            generation,
        }
    }

    /// A token that only the primary satisfies.
    pub fn primary_only(generation: u64) -> CommitToken {
        CommitToken {
            lsn: None,
            generation,
        }
    }

    /// The WAL position a replica must have replayed, if known.
    pub fn lsn(&self) -> Option<Lsn> {
        self.lsn
    }

    /// The topology generation the write committed in.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a replica that replayed up to `replayed` has this write.
    pub fn is_visible_at(&self, replayed: Lsn) -> bool {
        self.lsn.is_some_and(|lsn| replayed >= lsn)
    }

    /// The later of two tokens (a session that wrote twice needs both).
    pub fn max(self, other: CommitToken) -> CommitToken {
        match (self.lsn, other.lsn) {
            (Some(a), Some(b)) => CommitToken {
                lsn: Some(a.max(b)),
                generation: self.generation.max(other.generation),
            },
            _ => CommitToken::primary_only(self.generation.max(other.generation)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_postgres() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn::from(PgLsn::from(0x1_0000_0001)), Lsn(0x1_0000_0001));
    }

    #[test]
    fn distance_saturates() {
        assert_eq!(Lsn(100).bytes_after(Lsn(40)), 60);
        assert_eq!(Lsn(40).bytes_after(Lsn(100)), 0);
    }

    #[test]
    fn token_visibility_and_merge() {
        let token = CommitToken::new(Lsn(500), 3);
        assert!(!token.is_visible_at(Lsn(499)));
        assert!(token.is_visible_at(Lsn(500)));
        assert!(token.is_visible_at(Lsn(501)));
        let primary_only = CommitToken::primary_only(2);
        assert!(!primary_only.is_visible_at(Lsn(u64::MAX)));

        let merged = token.max(CommitToken::new(Lsn(700), 2));
        assert_eq!(merged.lsn(), Some(Lsn(700)));
        assert_eq!(merged.generation(), 3);
        assert_eq!(token.max(primary_only).lsn(), None);
    }
}

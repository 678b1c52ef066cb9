//! The state machine's states and the single atomic word that holds them.
//!
//! Everything a call needs to decide whether it may go ahead lives in one
//! `u64`, so the closed fast path is one plain load:
//!
//! | bits    | field      | meaning                                                  |
//! |---------|------------|----------------------------------------------------------|
//! | 0..3    | mode       | [`State`]                                                |
//! | 3..8    | streak     | opens since the last successful close (drives back-off)  |
//! | 8..24   | generation | bumped on every transition; stale permits are ignored    |
//! | 24..64  | deadline   | milliseconds since the breaker was created               |
//!
//! The deadline is when the next probe is allowed (open) or when half-open
//! gives up waiting for its probes (half-open). Every transition is one
//! compare-and-swap of the whole word, so a transition and its deadline are
//! published together.

use std::fmt;

/// The state of a breaker.
///
/// *Closed* means calls flow (the circuit is closed, as an electrical one);
/// *open* means calls are rejected. This is unrelated to "fail closed", which
/// is a caller's choice of what to do with a rejection (see
/// [`OpenAction::Deny`](crate::OpenAction::Deny)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum State {
    /// Calls flow and their outcomes are judged; the breaker opens when a rate
    /// reaches its threshold.
    Closed,
    /// Calls are rejected until the open wait is over.
    Open,
    /// A fixed number of probe calls is let through; their outcomes decide
    /// between closed and open.
    HalfOpen,
    /// Set by [`Breaker::force_open`](crate::Breaker::force_open): every call is
    /// rejected until another control call.
    ForcedOpen,
    /// Set by [`Breaker::force_closed`](crate::Breaker::force_closed): every
    /// call flows and is recorded, and the breaker never opens by itself.
    ForcedClosed,
    /// Set by [`Breaker::disable`](crate::Breaker::disable): every call flows
    /// and nothing is recorded.
    Disabled,
    /// Set by [`Breaker::metrics_only`](crate::Breaker::metrics_only): every
    /// call flows and is judged; crossing a threshold emits
    /// [`Event::ThresholdExceeded`](crate::Event::ThresholdExceeded) instead of
    /// opening.
    MetricsOnly,
}

impl State {
    /// A short lowercase name (`"closed"`, `"half_open"`, ...), as used in
    /// logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::ForcedClosed => "forced_closed",
            Self::Disabled => "disabled",
            Self::MetricsOnly => "metrics_only",
        }
    }

    /// A stable number for the state, used by the `metrics` gauge:
    /// 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed,
    /// 5 disabled, 6 metrics only.
    pub const fn code(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
            Self::ForcedOpen => 3,
            Self::ForcedClosed => 4,
            Self::Disabled => 5,
            Self::MetricsOnly => 6,
        }
    }

    /// Whether calls are let through without limit in this state.
    pub const fn admits_all(self) -> bool {
        matches!(
            self,
            Self::Closed | Self::ForcedClosed | Self::Disabled | Self::MetricsOnly
        )
    }

    /// Whether outcomes recorded in this state feed the sliding window.
    pub(crate) const fn judges_window(self) -> bool {
        matches!(self, Self::Closed | Self::ForcedClosed | Self::MetricsOnly)
    }

    /// Decodes [`State::code`]; unknown codes read as closed (they never occur).
    const fn from_code(code: u64) -> Self {
        match code {
            1 => Self::Open,
            2 => Self::HalfOpen,
            3 => Self::ForcedOpen,
            4 => Self::ForcedClosed,
            5 => Self::Disabled,
            6 => Self::MetricsOnly,
            _ => Self::Closed,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const MODE_BITS: u32 = 3;
const STREAK_SHIFT: u32 = MODE_BITS;
const STREAK_BITS: u32 = 5;
const GEN_SHIFT: u32 = STREAK_SHIFT + STREAK_BITS;
const GEN_BITS: u32 = 16;
const DEADLINE_SHIFT: u32 = GEN_SHIFT + GEN_BITS;

/// The largest back-off streak the word can hold.
pub(crate) const MAX_STREAK: u32 = (1 << STREAK_BITS) - 1;
/// The largest deadline the word can hold, in milliseconds (about 34 years).
const MAX_DEADLINE_MS: u64 = (1 << (64 - DEADLINE_SHIFT)) - 1;

/// A state generation. It wraps after 65 536 transitions; a permit would have
/// to stay out across exactly that many transitions to be mistaken for a
/// current one.
pub(crate) type Generation = u16;

/// The decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    /// The state.
    pub(crate) state: State,
    /// Opens since the last successful close, saturating at [`MAX_STREAK`].
    pub(crate) streak: u32,
    /// The generation.
    pub(crate) generation: Generation,
    /// Milliseconds since the breaker's origin (see the module docs).
    pub(crate) deadline_ms: u64,
}

impl Word {
    /// The word a new breaker starts with: closed, generation 0.
    pub(crate) const INITIAL: Word = Word {
        state: State::Closed,
        streak: 0,
        generation: 0,
        deadline_ms: 0,
    };

    /// Decodes a raw word.
    #[inline]
    pub(crate) const fn unpack(raw: u64) -> Self {
        Word {
            state: State::from_code(raw & ((1 << MODE_BITS) - 1)),
            streak: ((raw >> STREAK_SHIFT) & ((1 << STREAK_BITS) - 1)) as u32,
            generation: ((raw >> GEN_SHIFT) & ((1 << GEN_BITS) - 1)) as Generation,
            deadline_ms: raw >> DEADLINE_SHIFT,
        }
    }

    /// Encodes the word.
    #[inline]
    pub(crate) const fn pack(self) -> u64 {
        let streak = if self.streak > MAX_STREAK {
            MAX_STREAK
        } else {
            self.streak
        };
        let deadline = if self.deadline_ms > MAX_DEADLINE_MS {
            MAX_DEADLINE_MS
        } else {
            self.deadline_ms
        };
        (self.state.code() as u64)
            | ((streak as u64) << STREAK_SHIFT)
            | ((self.generation as u64) << GEN_SHIFT)
            | (deadline << DEADLINE_SHIFT)
    }

    /// The next state: generation bumped, the given state, streak and deadline.
    pub(crate) const fn next(self, state: State, streak: u32, deadline_ms: u64) -> Self {
        Word {
            state,
            streak,
            generation: self.generation.wrapping_add(1),
            deadline_ms,
        }
    }

    /// The deadline in nanoseconds since the origin.
    pub(crate) const fn deadline_nanos(self) -> u64 {
        self.deadline_ms.saturating_mul(1_000_000)
    }
}

/// Converts nanoseconds since the origin to a deadline in whole milliseconds,
/// rounding up so that a deadline is never earlier than asked for.
pub(crate) const fn deadline_ms(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000)
}

/// The raw mode bits of a word, for the fast path.
#[inline]
pub(crate) const fn raw_state(raw: u64) -> u64 {
    raw & ((1 << MODE_BITS) - 1)
}

/// The raw generation bits of a word, for the fast path.
#[inline]
pub(crate) const fn raw_generation(raw: u64) -> Generation {
    ((raw >> GEN_SHIFT) & ((1 << GEN_BITS) - 1)) as Generation
}

/// The raw mode of [`State::Closed`].
pub(crate) const RAW_CLOSED: u64 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trips() {
        let states = [
            State::Closed,
            State::Open,
            State::HalfOpen,
            State::ForcedOpen,
            State::ForcedClosed,
            State::Disabled,
            State::MetricsOnly,
        ];
        for state in states {
            for (streak, generation, deadline_ms) in [
                (0, 0, 0),
                (3, 17, 60_000),
                (MAX_STREAK, u16::MAX, MAX_DEADLINE_MS),
            ] {
                let word = Word {
                    state,
                    streak,
                    generation,
                    deadline_ms,
                };
                let raw = word.pack();
                assert_eq!(Word::unpack(raw), word);
                assert_eq!(raw_generation(raw), generation);
                assert_eq!(raw_state(raw), u64::from(state.code()));
            }
        }
    }

    #[test]
    fn pack_saturates_streak_and_deadline() {
        let word = Word {
            state: State::Open,
            streak: 1000,
            generation: 1,
            deadline_ms: u64::MAX,
        };
        let back = Word::unpack(word.pack());
        assert_eq!(back.streak, MAX_STREAK);
        assert_eq!(back.deadline_ms, MAX_DEADLINE_MS);
        assert_eq!(back.state, State::Open);
    }

    #[test]
    fn deadlines_round_up() {
        assert_eq!(deadline_ms(0), 0);
        assert_eq!(deadline_ms(1), 1);
        assert_eq!(deadline_ms(1_000_000), 1);
        assert_eq!(deadline_ms(1_000_001), 2);
    }

    #[test]
    fn generation_wraps() {
        let word = Word {
            generation: u16::MAX,
            ..Word::INITIAL
        };
        assert_eq!(word.next(State::Open, 1, 5).generation, 0);
    }
}

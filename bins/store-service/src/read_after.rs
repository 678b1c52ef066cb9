//! The `Read-After` header: db-failover's [`CommitToken`] as opaque text.
//!
//! Form: `<generation>.<lsn in hex>` (or `<generation>.p` for a token only
//! the primary satisfies). A value that does not parse is not an error: the
//! read goes to the primary, which always has the write.

use db_failover::{CommitToken, Lsn};

/// The header name.
pub const READ_AFTER: &str = "read-after";

/// The token as header text.
pub fn encode(token: &CommitToken) -> String {
    match token.lsn() {
        Some(lsn) => format!("{}.{:x}", token.generation(), lsn.0),
        None => format!("{}.p", token.generation()),
    }
}

/// The token of header text; anything unparsable reads from the primary.
pub fn decode(text: &str) -> CommitToken {
    let parsed = text.split_once('.').and_then(|(generation, lsn)| {
        let generation = generation.parse::<u64>().ok()?;
        if lsn == "p" {
            return Some(CommitToken::primary_only(generation));
        }
        let lsn = u64::from_str_radix(lsn, 16).ok()?;
        Some(CommitToken::new(Lsn(lsn), generation))
    });
    parsed.unwrap_or_else(|| CommitToken::primary_only(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let token = CommitToken::new(Lsn(0x16_B374_D848), 3);
        assert_eq!(decode(&encode(&token)), token);
        let primary = CommitToken::primary_only(2);
        assert_eq!(decode(&encode(&primary)), primary);
        assert_eq!(decode("garbage").lsn(), None);
        assert_eq!(decode("1.zz").lsn(), None);
    }
}

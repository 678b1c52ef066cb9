//! Character-level rules: line breaks, tabs, control characters and
//! bidirectional controls.
//!
//! - A line break is `\n`, `\r\n`, `\r`, NEL (U+0085), LINE SEPARATOR (U+2028)
//!   or PARAGRAPH SEPARATOR (U+2029). Where the policy allows line breaks each
//!   becomes `\n`; elsewhere each becomes one space.
//! - A tab stays where the policy allows tabs and becomes one space elsewhere.
//! - Vertical tab and form feed become one space.
//! - Every other control character (Unicode category Cc) is removed.
//! - Bidirectional embedding, override and isolate controls (U+202A–U+202E,
//!   U+2066–U+2069) and U+FEFF are removed unless the policy keeps them: they make
//!   `invoice<U+202E>fdp.exe` display as `invoiceexe.pdf`. A U+FEFF at the very
//!   start is a byte-order mark and goes in any case.

use crate::SanitizeReport;

/// The character rules of one [`TextPolicy`](crate::TextPolicy).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CharRules {
    /// Keep line breaks (as `\n`).
    pub(crate) allow_newlines: bool,
    /// Keep tabs.
    pub(crate) allow_tabs: bool,
    /// Remove bidirectional controls and U+FEFF.
    pub(crate) strip_bidi: bool,
}

/// Whether `c` is a bidirectional embedding/override/isolate control or U+FEFF.
pub(crate) const fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

impl CharRules {
    /// Whether `c` is changed or removed by these rules (a `\n` that stays a
    /// `\n` is not; a `\r` always is).
    fn touches(self, c: char) -> bool {
        match c {
            '\n' => !self.allow_newlines,
            '\t' => !self.allow_tabs,
            '\u{2028}' | '\u{2029}' => true,
            c if c.is_control() => true,
            c => self.strip_bidi && is_bidi_control(c),
        }
    }

    /// Applies the rules to `text`; `None` when nothing changes.
    pub(crate) fn apply(self, text: &str, report: &mut SanitizeReport) -> Option<String> {
        // A leading U+FEFF is a byte-order mark, never content (and the HTML
        // parser drops it), so it goes whatever the policy says.
        let body = text.trim_start_matches('\u{FEFF}');
        report.bidi_controls_removed += (text.len() - body.len()) / '\u{FEFF}'.len_utf8();
        let Some(first) = body.find(|c| self.touches(c)) else {
            return (body.len() != text.len()).then(|| body.to_owned());
        };
        let mut out = String::with_capacity(body.len());
        out.push_str(&body[..first]);
        let mut chars = body[first..].chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                    if c == '\r' && chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    if self.allow_newlines {
                        out.push('\n');
                    } else {
                        out.push(' ');
                        report.whitespace_replaced += 1;
                    }
                }
                '\t' if self.allow_tabs => out.push('\t'),
                '\t' | '\u{0B}' | '\u{0C}' => {
                    out.push(' ');
                    report.whitespace_replaced += 1;
                }
                c if c.is_control() => report.control_chars_removed += 1,
                // Still a leading byte-order mark once the controls before it are gone.
                '\u{FEFF}' if out.is_empty() => report.bidi_controls_removed += 1,
                c if self.strip_bidi && is_bidi_control(c) => report.bidi_controls_removed += 1,
                c => out.push(c),
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: CharRules = CharRules {
        allow_newlines: false,
        allow_tabs: false,
        strip_bidi: true,
    };
    const MULTILINE: CharRules = CharRules {
        allow_newlines: true,
        allow_tabs: true,
        strip_bidi: true,
    };

    fn check(rules: CharRules, input: &str, expected: &str) -> SanitizeReport {
        let mut report = SanitizeReport::default();
        let out = rules.apply(input, &mut report);
        assert_eq!(out.as_deref().unwrap_or(input), expected, "input {input:?}");
        report
    }

    #[test]
    fn clean_text_is_borrowed() {
        let mut report = SanitizeReport::default();
        assert!(STRICT.apply("plain text, ünïcode ✓", &mut report).is_none());
        assert!(
            MULTILINE
                .apply("two\nlines\tand a tab", &mut report)
                .is_none()
        );
        assert_eq!(report, SanitizeReport::default());
    }

    #[test]
    fn line_breaks_become_spaces_when_not_allowed() {
        let report = check(
            STRICT,
            "a\r\nb\rc\nd\u{85}e\u{2028}f\u{2029}g",
            "a b c d e f g",
        );
        assert_eq!(report.whitespace_replaced, 6);
    }

    #[test]
    fn line_breaks_normalise_to_lf_when_allowed() {
        let report = check(
            MULTILINE,
            "a\r\nb\rc\nd\u{85}e\u{2028}f",
            "a\nb\nc\nd\ne\nf",
        );
        assert_eq!(report.whitespace_replaced, 0);
    }

    #[test]
    fn tabs_follow_the_policy() {
        check(STRICT, "a\tb", "a b");
        check(MULTILINE, "a\tb", "a\tb");
        check(MULTILINE, "a\u{0B}b\u{0C}c", "a b c");
    }

    #[test]
    fn other_controls_are_removed() {
        let report = check(STRICT, "a\0b\u{7}c\u{1B}[31md\u{7F}e\u{9B}f", "abc[31mdef");
        assert_eq!(report.control_chars_removed, 5);
    }

    #[test]
    fn bidi_controls_and_bom_are_removed() {
        let input = "\u{FEFF}invoice\u{202E}fdp.exe\u{202C} \u{2066}x\u{2069}";
        let report = check(STRICT, input, "invoicefdp.exe x");
        assert_eq!(report.bidi_controls_removed, 5);
    }

    #[test]
    fn bidi_controls_can_be_kept() {
        let rules = CharRules {
            strip_bidi: false,
            ..STRICT
        };
        check(rules, "a\u{202E}b\u{FEFF}", "a\u{202E}b\u{FEFF}");
    }

    #[test]
    fn leading_byte_order_marks_always_go() {
        let rules = CharRules {
            strip_bidi: false,
            ..STRICT
        };
        let report = check(rules, "\u{FEFF}\u{FEFF}a\u{FEFF}", "a\u{FEFF}");
        assert_eq!(report.bidi_controls_removed, 2);
        check(rules, "\0\u{FEFF}a", "a");
    }

    #[test]
    fn marks_that_are_not_controls_stay() {
        // Joiners and left-to-right/right-to-left marks are needed by some scripts.
        check(
            STRICT,
            "a\u{200D}b\u{200C}c\u{200E}d\u{200F}",
            "a\u{200D}b\u{200C}c\u{200E}d\u{200F}",
        );
    }
}

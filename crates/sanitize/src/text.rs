//! Plain-text cleaning: [`clean_text`] and its [`TextPolicy`].
//!
//! One *pass* is: character rules → HTML removal and decoding → character
//! rules again (decoding can produce controls) → NFC → trim. Passes repeat
//! until one changes nothing; then any `<` that would still open markup (only
//! a trailing `</` survives HTML parsing as text) is removed, and passes
//! resume if that changed anything. The output is therefore a fixed point:
//! cleaning it again returns it unchanged, and reading it as HTML gives back
//! the same text (no tag, no comment, no character reference left to decode).
//!
//! Each pass decodes one level of character references. After [`MAX_PASSES`]
//! rounds without a fixed point the text is pathological (`&amp;amp;amp;…lt;`):
//! every remaining `<` and `&` is removed from it, and one pass without the
//! HTML step (which such text no longer needs) makes it a fixed point.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

use crate::control::CharRules;
use crate::{SanitizeError, SanitizeReport, markup};

/// The default for [`TextPolicy::max_chars`].
pub const DEFAULT_MAX_CHARS: usize = 1000;
/// The default for [`TextPolicy::max_input_bytes`]: 16 KiB, four times what
/// 1000 characters of four-byte UTF-8 need. The HTML parser's cost grows with
/// the square of the nesting depth of the markup (16 KiB of nested `<div>`
/// takes about 23 ms on a 2-core server, 64 KiB about 370 ms), so this bound
/// also bounds the worst case.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 16 * 1024;
/// How many passes [`clean_text`] makes at most before it falls back to
/// removing every `<` and `&`. Ordinary text needs one or two; each further
/// pass decodes one more level of nested character references.
pub const MAX_PASSES: usize = 8;

/// The field name used in errors when the policy has none.
const UNNAMED_FIELD: &str = "value";

/// How [`clean_text`] treats one kind of text field.
///
/// The defaults suit a single-line field: at most [`DEFAULT_MAX_CHARS`]
/// characters, no line breaks, no tabs, bidirectional controls removed.
///
/// ```
/// use sanitize::TextPolicy;
///
/// let name = TextPolicy::default().field("name").min_chars(3).max_chars(100);
/// let notes = TextPolicy::default().field("notes").max_chars(5000).allow_newlines(true);
/// # let _ = (name, notes);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct TextPolicy {
    /// The field name that errors report (`"value"` when `None`).
    pub field: Option<Cow<'static, str>>,
    /// The most characters (Unicode scalar values) the cleaned text may have.
    pub max_chars: usize,
    /// The fewest characters the cleaned text must have (0: empty is fine).
    pub min_chars: usize,
    /// The largest raw input accepted, in bytes, checked before any work so a
    /// huge input is refused at the cost of reading its length.
    pub max_input_bytes: usize,
    /// Keep line breaks (normalised to `\n`); otherwise each becomes a space.
    pub allow_newlines: bool,
    /// Keep tabs; otherwise each becomes a space.
    pub allow_tabs: bool,
    /// Remove bidirectional embedding/override/isolate controls and U+FEFF.
    pub strip_bidi_controls: bool,
}

impl Default for TextPolicy {
    fn default() -> Self {
        Self {
            field: None,
            max_chars: DEFAULT_MAX_CHARS,
            min_chars: 0,
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
            allow_newlines: false,
            allow_tabs: false,
            strip_bidi_controls: true,
        }
    }
}

impl TextPolicy {
    /// Sets the field name that errors report.
    #[must_use]
    pub fn field(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.field = Some(name.into());
        self
    }

    /// Sets the most characters the cleaned text may have.
    #[must_use]
    pub const fn max_chars(mut self, max: usize) -> Self {
        self.max_chars = max;
        self
    }

    /// Sets the fewest characters the cleaned text must have.
    #[must_use]
    pub const fn min_chars(mut self, min: usize) -> Self {
        self.min_chars = min;
        self
    }

    /// Sets the largest raw input accepted, in bytes.
    #[must_use]
    pub const fn max_input_bytes(mut self, max: usize) -> Self {
        self.max_input_bytes = max;
        self
    }

    /// Keeps line breaks (as `\n`) or turns each into a space.
    #[must_use]
    pub const fn allow_newlines(mut self, allow: bool) -> Self {
        self.allow_newlines = allow;
        self
    }

    /// Keeps tabs or turns each into a space.
    #[must_use]
    pub const fn allow_tabs(mut self, allow: bool) -> Self {
        self.allow_tabs = allow;
        self
    }

    /// Removes (the default) or keeps bidirectional controls and U+FEFF.
    #[must_use]
    pub const fn strip_bidi_controls(mut self, strip: bool) -> Self {
        self.strip_bidi_controls = strip;
        self
    }

    const fn rules(&self) -> CharRules {
        CharRules {
            allow_newlines: self.allow_newlines,
            allow_tabs: self.allow_tabs,
            strip_bidi: self.strip_bidi_controls,
        }
    }

    fn field_name(&self) -> String {
        self.field.as_deref().unwrap_or(UNNAMED_FIELD).to_owned()
    }
}

/// Cleans untrusted text into plain text: trimmed, NFC, without control
/// characters, bidirectional controls or any HTML, within the policy's length
/// bounds.
///
/// The output is *plain text*, not HTML: `Joe's & Co` stays `Joe's & Co`, and
/// must still be escaped wherever it is put into HTML. What it guarantees is
/// that it holds no markup (no `<` before a letter, `/`, `!` or `?`) and no
/// character reference that would decode to something else, and that cleaning
/// it again changes nothing.
///
/// # Errors
///
/// [`SanitizeError::InputTooLarge`] when the raw input is over
/// [`TextPolicy::max_input_bytes`]; [`SanitizeError::TooLong`] or
/// [`SanitizeError::TooShort`] when the cleaned text is outside the bounds.
pub fn clean_text(input: &str, policy: &TextPolicy) -> Result<String, SanitizeError> {
    let mut report = SanitizeReport::default();
    clean(input, policy, &mut report, false).map_err(|v| v.into_error(policy.field_name()))
}

/// Like [`clean_text`], and also says what was removed or changed.
///
/// # Errors
///
/// As [`clean_text`].
pub fn clean_text_report(
    input: &str,
    policy: &TextPolicy,
) -> Result<(String, SanitizeReport), SanitizeError> {
    let mut report = SanitizeReport::default();
    let text =
        clean(input, policy, &mut report, true).map_err(|v| v.into_error(policy.field_name()))?;
    Ok((text, report))
}

/// A bound that cleaned text broke, before it is tied to a field or a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    /// See [`SanitizeError::InputTooLarge`].
    InputTooLarge { max: usize, actual: usize },
    /// See [`SanitizeError::TooLong`].
    TooLong { max: usize, actual: usize },
    /// See [`SanitizeError::TooShort`].
    TooShort { min: usize, actual: usize },
}

impl Violation {
    /// The error for a value named `field` (a field name or a JSON pointer).
    pub(crate) fn into_error(self, field: String) -> SanitizeError {
        match self {
            Self::InputTooLarge { max, actual } => {
                SanitizeError::InputTooLarge { field, max, actual }
            }
            Self::TooLong { max, actual } => SanitizeError::TooLong { field, max, actual },
            Self::TooShort { min, actual } => SanitizeError::TooShort { field, min, actual },
        }
    }
}

/// The whole cleaning: passes to a fixed point, then the bounds.
///
/// `detect_markup` costs one extra tokenizer run per pass over text with `<`
/// or `&`; it only feeds [`SanitizeReport::markup_removed`].
pub(crate) fn clean(
    input: &str,
    policy: &TextPolicy,
    report: &mut SanitizeReport,
    detect_markup: bool,
) -> Result<String, Violation> {
    if input.len() > policy.max_input_bytes {
        return Err(Violation::InputTooLarge {
            max: policy.max_input_bytes,
            actual: input.len(),
        });
    }
    let rules = policy.rules();
    let mut text = Cow::Borrowed(input);
    let mut settled = false;
    for _ in 0..MAX_PASSES {
        // Openers are removed only from a fixed point of the pass: inside a
        // pass they would break up tags that the next pass removes whole.
        let next = pass(&text, rules, report, detect_markup)
            .or_else(|| markup::defuse_openers(&text, report));
        match next {
            Some(next) => text = Cow::Owned(next),
            None => {
                settled = true;
                break;
            }
        }
    }
    if !settled {
        report.pass_limit_reached = true;
        let mut plain: String = text.chars().filter(|c| !matches!(c, '<' | '&')).collect();
        // One pass settles it (see `plain_pass`); the loop only guards that.
        for _ in 0..MAX_PASSES {
            match plain_pass(&plain, rules, report) {
                Some(next) => plain = next,
                None => break,
            }
        }
        text = Cow::Owned(plain);
    }
    if text != input {
        report.changed = true;
    }

    let actual = text.chars().count();
    if actual > policy.max_chars {
        return Err(Violation::TooLong {
            max: policy.max_chars,
            actual,
        });
    }
    if actual < policy.min_chars {
        return Err(Violation::TooShort {
            min: policy.min_chars,
            actual,
        });
    }
    Ok(text.into_owned())
}

/// One pass; `None` when it changes nothing (a fixed point).
fn pass(
    text: &str,
    rules: CharRules,
    report: &mut SanitizeReport,
    detect_markup: bool,
) -> Option<String> {
    let mut current = Cow::Borrowed(text);
    step(&mut current, |t| rules.apply(t, report));
    if markup::may_hold_markup(&current) {
        if detect_markup && markup::holds_markup(&current) {
            report.markup_removed = true;
        }
        step(&mut current, |t| Some(markup::strip(t)));
        step(&mut current, |t| rules.apply(t, report));
    }
    step(&mut current, |t| nfc(t, report));
    step(&mut current, |t| trim(t, report));
    match current {
        Cow::Owned(out) if out != text => Some(out),
        _ => None,
    }
}

/// The pass for text without `<` and `&`, which needs no HTML step; `None`
/// when it changes nothing.
///
/// Its output is a fixed point: NFC adds no control character, and trimming
/// leaves no leading byte-order mark for the character rules to remove.
fn plain_pass(text: &str, rules: CharRules, report: &mut SanitizeReport) -> Option<String> {
    let mut current = Cow::Borrowed(text);
    step(&mut current, |t| rules.apply(t, report));
    step(&mut current, |t| nfc(t, report));
    step(&mut current, |t| trim(t, report));
    match current {
        Cow::Owned(out) if out != text => Some(out),
        _ => None,
    }
}

/// Applies one step that returns `None` when it changes nothing.
fn step<'a>(current: &mut Cow<'a, str>, f: impl FnOnce(&str) -> Option<String>) {
    if let Some(next) = f(current) {
        *current = Cow::Owned(next);
    }
}

/// Unicode Normalization Form C; `None` when the text is already in it.
fn nfc(text: &str, report: &mut SanitizeReport) -> Option<String> {
    if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        return None;
    }
    let out: String = text.nfc().collect();
    if out == text {
        return None;
    }
    report.normalized = true;
    Some(out)
}

/// Trims Unicode whitespace at both ends, and byte-order marks at the start
/// (which trimming can expose: ` \u{FEFF}x`); `None` when there is none.
fn trim(text: &str, report: &mut SanitizeReport) -> Option<String> {
    let trimmed = text
        .trim_start_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}')
        .trim_end();
    if trimmed.len() == text.len() {
        return None;
    }
    report.whitespace_trimmed = true;
    Some(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let policy = TextPolicy::default();
        let out = clean_text(input, &policy).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(out, expected, "input {input:?}");
        assert_eq!(
            clean_text(&out, &policy).as_deref(),
            Ok(expected),
            "not idempotent"
        );
    }

    fn report_of(input: &str) -> SanitizeReport {
        clean_text_report(input, &TextPolicy::default())
            .map(|(_, r)| r)
            .unwrap_or_default()
    }

    #[test]
    fn plain_text_is_unchanged() {
        check("Joe's & Co", "Joe's & Co");
        check("1 < 2 and 3 > 2", "1 < 2 and 3 > 2");
        check("Crème brûlée — 10 €", "Crème brûlée — 10 €");
        assert_eq!(report_of("Joe's & Co"), SanitizeReport::default());
    }

    #[test]
    fn text_that_reads_as_markup_is_markup() {
        check("I <3 you", "I <3 you");
        check("a<b", "a");
        check("a<b and c>d", "ad");
    }

    #[test]
    fn trims() {
        check("  padded\u{3000}\u{A0}", "padded");
        assert!(report_of(" x ").whitespace_trimmed);
    }

    #[test]
    fn normalises_to_nfc() {
        check("Cre\u{300}me", "Crème");
        check("\u{212B}", "\u{C5}");
        assert!(report_of("e\u{301}").normalized);
    }

    #[test]
    fn nfc_runs_after_controls_are_gone() {
        // A removed control between a letter and its accent must not leave the
        // pair uncomposed.
        check("e\u{7}\u{301}", "\u{E9}");
    }

    #[test]
    fn removes_controls_and_bidi() {
        check("a\0b\u{1B}c", "abc");
        check("inv\u{202E}fdp.exe", "invfdp.exe");
        let report = report_of("\u{FEFF}a\u{7}");
        assert_eq!(
            (report.bidi_controls_removed, report.control_chars_removed),
            (1, 1)
        );
    }

    #[test]
    fn newlines_and_tabs_follow_the_policy() {
        check("one\r\ntwo\tthree", "one two three");
        let multi = TextPolicy::default().allow_newlines(true).allow_tabs(true);
        assert_eq!(
            clean_text("one\r\ntwo\tthree\r", &multi).as_deref(),
            Ok("one\ntwo\tthree")
        );
    }

    #[test]
    fn strips_markup_and_reports_it() {
        check("<b>Hello</b> <i>world</i>", "Hello world");
        let report = report_of("<b>x</b>");
        assert!(report.markup_removed && report.changed);
        assert!(!report_of("a < b").markup_removed);
    }

    #[test]
    fn decoded_entities_do_not_resurrect_markup() {
        check("&lt;script&gt;alert(1)&lt;/script&gt;", "");
        check("&lt;b&gt;bold&lt;/b&gt;", "bold");
        check("a &lt; b", "a < b");
        check("AT&amp;T", "AT&T");
    }

    #[test]
    fn dangling_openers_are_removed() {
        check("x </", "x /");
        check("x <", "x <");
        // U+212A KELVIN SIGN normalises to an ASCII `K`: the `<K` it makes is
        // a tag for the next pass, which removes it.
        check("<\u{212A}", "");
        check("a <\u{212A}> b", "a  b");
    }

    #[test]
    fn pass_limit_falls_back_to_removing_lt_and_amp() {
        let nested = format!("a&{}lt;b&gt;c & d", "amp;".repeat(MAX_PASSES + 2));
        let (out, report) = clean_text_report(&nested, &TextPolicy::default()).unwrap_or_default();
        assert!(report.pass_limit_reached);
        assert!(!out.contains(['<', '&']), "{out}");
        assert_eq!(clean_text(&out, &TextPolicy::default()), Ok(out.clone()));
    }

    #[test]
    fn pass_limit_fallback_settles_in_one_plain_pass() {
        let keep_bidi = TextPolicy::default().strip_bidi_controls(false);
        let nested = format!(
            " \u{FEFF} \u{FEFF}&{}lt;x\u{7}e\u{301} ",
            "amp;".repeat(MAX_PASSES + 2)
        );
        let (out, report) = clean_text_report(&nested, &keep_bidi).unwrap_or_default();
        assert!(report.pass_limit_reached);
        let mut again = SanitizeReport::default();
        assert_eq!(
            plain_pass(&out, keep_bidi.rules(), &mut again),
            None,
            "{out:?}"
        );
        assert_eq!(clean_text(&out, &keep_bidi), Ok(out));
    }

    #[test]
    fn leading_byte_order_marks_go_even_when_bidi_controls_stay() {
        let keep_bidi = TextPolicy::default().strip_bidi_controls(false);
        assert_eq!(
            clean_text(" \u{FEFF} \u{FEFF}a\u{FEFF}", &keep_bidi).as_deref(),
            Ok("a\u{FEFF}")
        );
        assert_eq!(clean_text("\u{FEFF}a&b", &keep_bidi).as_deref(), Ok("a&b"));
    }

    #[test]
    fn nested_encoding_within_the_limit_is_decoded_fully() {
        let nested = format!("a&{}lt;b&gt;c", "amp;".repeat(MAX_PASSES - 3));
        check(&nested, "ac");
    }

    #[test]
    fn length_is_counted_in_characters() {
        let policy = TextPolicy::default().field("name").max_chars(3);
        assert_eq!(clean_text("éèê", &policy).as_deref(), Ok("éèê"));
        assert_eq!(
            clean_text("<b>ab</b>cd", &policy),
            Err(SanitizeError::TooLong {
                field: "name".into(),
                max: 3,
                actual: 4
            })
        );
    }

    #[test]
    fn min_length_is_checked_after_cleaning() {
        let policy = TextPolicy::default().field("name").min_chars(3);
        assert_eq!(
            clean_text("  <i>ab</i>  ", &policy),
            Err(SanitizeError::TooShort {
                field: "name".into(),
                min: 3,
                actual: 2
            })
        );
    }

    #[test]
    fn raw_input_size_is_checked_first() {
        let policy = TextPolicy::default().max_input_bytes(10);
        let err = clean_text(&"<b></b>".repeat(2), &policy);
        assert_eq!(
            err,
            Err(SanitizeError::InputTooLarge {
                field: "value".into(),
                max: 10,
                actual: 14
            })
        );
    }

    #[test]
    fn errors_do_not_echo_input() {
        let policy = TextPolicy::default().max_chars(5);
        let secret = "SECRET-PAYLOAD ".repeat(10);
        let err = clean_text(&secret, &policy)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("at most 5") && !err.contains("SECRET"),
            "{err}"
        );
    }

    #[test]
    fn deep_html_nesting_does_not_overflow() {
        // As deep as the default input bound allows.
        let deep = "<div>".repeat((DEFAULT_MAX_INPUT_BYTES - 1) / 5) + "x";
        assert_eq!(
            clean_text(&deep, &TextPolicy::default()).as_deref(),
            Ok("x")
        );
    }
}

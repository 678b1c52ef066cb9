//! What cleaning changed, for callers that log or refuse altered input.

/// What cleaning removed or changed.
///
/// Returned by [`clean_text_report`](crate::clean_text_report) and
/// [`clean_json_report`](crate::clean_json_report). A caller that wants to
/// refuse any input that needed cleaning checks [`changed`](Self::changed); one
/// that only logs picks the fields it cares about. For JSON the counts add up
/// over every string and key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SanitizeReport {
    /// Some value differed from its cleaned form (any of the below, or a
    /// character reference such as `&amp;` that was decoded).
    pub changed: bool,
    /// HTML markup was removed: tags, comments, doctypes, processing
    /// instructions, and the content of `script`, `style` and similar elements.
    pub markup_removed: bool,
    /// Control characters removed (C0 and C1, other than line breaks and tabs).
    pub control_chars_removed: usize,
    /// Line breaks and tabs the policy does not allow, each replaced by one space
    /// (`\r\n` counts once).
    pub whitespace_replaced: usize,
    /// Bidirectional embedding, override and isolate controls
    /// (U+202A–U+202E, U+2066–U+2069) and byte-order marks (U+FEFF) removed.
    pub bidi_controls_removed: usize,
    /// `<` characters removed because they would have opened markup
    /// (`<` before a letter, `/`, `!` or `?`, left over after entity decoding).
    pub markup_openers_removed: usize,
    /// Leading or trailing whitespace was trimmed.
    pub whitespace_trimmed: bool,
    /// Unicode normalisation (NFC) changed the text.
    pub normalized: bool,
    /// Some text needed more cleaning passes than the limit
    /// (deeply nested character references such as `&amp;amp;amp;lt;`), so
    /// every remaining `<` and `&` was removed from it.
    pub pass_limit_reached: bool,
    /// JSON pointers of the object members dropped because of a forbidden key
    /// (`__proto__`, `constructor`, `prototype`).
    pub keys_dropped: Vec<String>,
}

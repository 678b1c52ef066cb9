//! HTML removal: the text is parsed as an HTML fragment by `ammonia` (the
//! HTML5 parsing algorithm of `html5ever`, as a browser would), every element,
//! comment, doctype and processing instruction is dropped, the content of
//! elements that a browser does not show as text is dropped with them, and the
//! remaining text is decoded back from ammonia's escaped output to plain text.
//!
//! Decoding can bring markup back (`&lt;b&gt;` decodes to `<b>`); the text
//! pipeline therefore runs until nothing changes, and [`defuse_openers`]
//! removes any `<` that would still open a tag.

use std::sync::LazyLock;

use crate::SanitizeReport;

/// Elements removed together with their content: a browser runs, styles or
/// hides it rather than showing it as text.
const CONTENT_DROPPED: [&str; 7] = [
    "script", "style", "template", "iframe", "noscript", "noembed", "noframes",
];

/// The sanitizer: no tag, no attribute, no comment is allowed. Built once.
static STRIPPER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::empty();
    builder
        .generic_attributes(Default::default())
        .tag_attributes(Default::default())
        .url_schemes(Default::default())
        .link_rel(None)
        .strip_comments(true)
        .clean_content_tags(CONTENT_DROPPED.into_iter().collect());
    builder
});

/// Whether the HTML parser could read `text` as anything but itself.
///
/// In running text (HTML's data state) only a `<` that opens markup (see
/// [`opens_markup`]) or a `&` that starts a character reference (before an
/// ASCII letter or digit, or `#`) is more than a character; every other `<`
/// and `&` is read as itself. Text without either skips the parser: `1 < 2`,
/// `AT&T` and `Joe's & Co` cost a scan, not a parse. (NUL and carriage
/// returns, which the parser also rewrites, are gone by then; a property test
/// below checks the claim.)
pub(crate) fn may_hold_markup(text: &str) -> bool {
    text.as_bytes().windows(2).any(|pair| match pair[0] {
        b'<' => opens_markup(char::from(pair[1])),
        b'&' => pair[1].is_ascii_alphanumeric() || pair[1] == b'#',
        _ => false,
    })
}

/// Whether parsing `text` as HTML finds any markup (tag, comment, doctype,
/// processing instruction). Costs one tokenizer run; used only for reports.
pub(crate) fn holds_markup(text: &str) -> bool {
    ammonia::is_html(text)
}

/// The text content of `text` read as an HTML fragment, as plain text:
/// markup dropped, character references decoded once.
pub(crate) fn strip(text: &str) -> String {
    let escaped = STRIPPER.clean(text).to_string();
    // With no element kept, ammonia's output is text escaped by html5ever's
    // serializer (`&` `<` `>` U+00A0 as `&amp;` `&lt;` `&gt;` `&nbsp;`), and
    // decoding it once is the exact inverse.
    html_escape::decode_html_entities(&escaped).into_owned()
}

/// Whether `c`, right after `<`, makes the `<` start markup in HTML: a start or
/// end tag (`<a`, `</`), a comment or doctype (`<!`) or a processing
/// instruction (`<?`).
const fn opens_markup(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?')
}

/// Removes every `<` that would open markup; `None` when there is none.
///
/// A run of `<` before an opener is removed whole, so that removing one `<`
/// never joins another `<` to the opener (`<<a` becomes `a`, not `<a`).
pub(crate) fn defuse_openers(text: &str, report: &mut SanitizeReport) -> Option<String> {
    let needs = |(i, _): &(usize, &str)| {
        let rest = text[*i..].trim_start_matches('<');
        rest.chars().next().is_some_and(opens_markup)
    };
    text.match_indices('<').find(needs)?;

    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let after = run.trim_start_matches('<');
        let run_len = run.len() - after.len();
        if after.chars().next().is_some_and(opens_markup) {
            report.markup_openers_removed += run_len;
        } else {
            out.push_str(&run[..run_len]);
        }
        rest = after;
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::CharRules;

    #[test]
    fn tags_go_text_stays() {
        assert_eq!(strip("<b>bold</b> and <i>italic</i>"), "bold and italic");
        assert_eq!(strip("<p>one</p><p>two</p>"), "onetwo");
    }

    #[test]
    fn comments_go() {
        assert_eq!(strip("a<!-- hidden -->b"), "ab");
    }

    #[test]
    fn hidden_content_goes_with_its_element() {
        for tag in CONTENT_DROPPED {
            assert_eq!(strip(&format!("a<{tag}>hidden</{tag}>b")), "ab", "{tag}");
        }
    }

    #[test]
    fn escaped_output_is_decoded_back() {
        assert_eq!(strip("Joe's & Co"), "Joe's & Co");
        assert_eq!(strip("1 < 2 > 0"), "1 < 2 > 0");
        assert_eq!(strip("a\u{A0}b"), "a\u{A0}b");
        assert_eq!(strip(r#""quoted""#), r#""quoted""#);
    }

    #[test]
    fn references_are_decoded_once() {
        assert_eq!(strip("&lt;b&gt;"), "<b>");
        assert_eq!(strip("&amp;lt;b&amp;gt;"), "&lt;b&gt;");
        assert_eq!(strip("&#60;&#x3C;&eacute;"), "<<é");
    }

    use proptest::strategy::Strategy;

    /// Characters the HTML parser treats specially in some way.
    const PARSER_SPECIALS: &[char] = &[
        '\0',
        '\r',
        '\n',
        '\t',
        '\u{B}',
        '\u{C}',
        '\u{85}',
        '\u{A0}',
        '\u{2028}',
        '\u{FEFF}',
        '\u{FFFD}',
        '\u{FFFE}',
        '\u{FFFF}',
        '\u{1FFFE}',
        '\u{E000}',
        '>',
        '"',
        '\'',
        '=',
        '/',
        '!',
        '?',
        '-',
        ';',
        '#',
        'a',
        'Z',
        '3',
        'é',
        ' ',
        '<',
        '&',
    ];

    proptest::proptest! {
        /// The fast path skips the parser for text that `may_hold_markup`
        /// clears (after the character rules, which run first). That is sound
        /// only if the parser would give such text back unchanged.
        #[test]
        fn parser_returns_text_it_need_not_see_unchanged(raw in proptest::prop_oneof![
            proptest::prelude::any::<String>(),
            proptest::collection::vec(proptest::sample::select(PARSER_SPECIALS), 0..32)
                .prop_map(String::from_iter),
        ]) {
            let rules = CharRules { allow_newlines: true, allow_tabs: true, strip_bidi: false };
            let text = rules.apply(&raw, &mut SanitizeReport::default()).unwrap_or(raw);
            if !may_hold_markup(&text) {
                proptest::prop_assert_eq!(strip(&text), text);
            }
        }

        /// The same with every `<` and `&` that could matter taken out, so
        /// that each case exercises the claim.
        #[test]
        fn parser_returns_cleared_text_unchanged(raw in proptest::prelude::any::<String>()) {
            let rules = CharRules { allow_newlines: true, allow_tabs: true, strip_bidi: false };
            let text = rules.apply(&raw, &mut SanitizeReport::default()).unwrap_or(raw);
            let text = text.replace("<", "< ").replace("&", "& ");
            proptest::prop_assert!(!may_hold_markup(&text));
            proptest::prop_assert_eq!(strip(&text), text);
        }
    }

    #[test]
    fn fast_path_test_matches_parser_need() {
        for plain in [
            "plain > text",
            "a < b",
            "I <3 you",
            "x <",
            "AT & T",
            "a&",
            "&;",
            "<<",
            "< /",
        ] {
            assert!(!may_hold_markup(plain), "{plain:?}");
        }
        for markup in ["<b", "</", "<!", "<?", "AT&T", "&lt;", "&#60;", "&1", "<<a"] {
            assert!(may_hold_markup(markup), "{markup:?}");
        }
    }

    #[test]
    fn markup_detection() {
        assert!(holds_markup("a <b>c</b>"));
        assert!(holds_markup("<!-- c -->"));
        assert!(!holds_markup("a < b & c"));
        assert!(!holds_markup("&lt;b&gt;"));
    }

    fn defused(text: &str) -> String {
        defuse_openers(text, &mut SanitizeReport::default()).unwrap_or_else(|| text.to_owned())
    }

    #[test]
    fn openers_are_removed() {
        assert_eq!(defused("a <b"), "a b");
        assert_eq!(defused("x </"), "x /");
        assert_eq!(defused("<!x <?y"), "!x ?y");
        assert_eq!(defused("<<<a"), "a");
    }

    #[test]
    fn other_less_than_signs_stay() {
        assert_eq!(
            defuse_openers("1 < 2, 3<4, <3, <<, <", &mut SanitizeReport::default()),
            None
        );
        assert_eq!(defused("<< 2 <<x"), "<< 2 x");
    }

    #[test]
    fn openers_are_counted() {
        let mut report = SanitizeReport::default();
        defuse_openers("<<a </b", &mut report);
        assert_eq!(report.markup_openers_removed, 3);
    }
}

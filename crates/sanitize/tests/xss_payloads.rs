//! Real cross-site-scripting payloads, in the style of the OWASP XSS filter
//! evasion cheat sheet, each with the exact plain text `clean_text` makes of it.

use sanitize::{TextPolicy, clean_text};

/// `(payload, expected output)`.
const CASES: &[(&str, &str)] = &[
    // Event handlers on ordinary elements.
    ("<img src=x onerror=alert(1)>", ""),
    ("<IMG SRC=x ONERROR=alert(1)>caption", "caption"),
    ("<svg/onload=alert(1)>", ""),
    ("<svg><script>alert(1)</script></svg>", ""),
    ("<body onload=alert(1)>hi", "hi"),
    ("<details open ontoggle=alert(1)>x</details>", "x"),
    ("<input autofocus onfocus=alert(1)>", ""),
    // `javascript:` URLs.
    ("<a href=\"javascript:alert(1)\">click</a>", "click"),
    ("<a href=\"jav&#x09;ascript:alert(1)\">click</a>", "click"),
    ("<a href=\"JaVaScRiPt:alert(1)\">click</a> me", "click me"),
    // A URL that is only text stays text: it is not a link in plain text.
    ("javascript:alert(1)", "javascript:alert(1)"),
    // Script and style content goes with the element.
    ("<script>alert(1)</script>", ""),
    ("<SCRIPT SRC=//xss.example/x.js></SCRIPT>", ""),
    ("<ScRiPt>alert(1)</sCrIpT>after", "after"),
    (
        "<style>body{background:url(javascript:alert(1))}</style>text",
        "text",
    ),
    (
        "<div style=\"width: expression(alert(1))\">styled</div>",
        "styled",
    ),
    // Nested and malformed tags.
    ("<scr<script>ipt>alert(1)</script>", "ipt>alert(1)"),
    // `<` + `<script>` whose raw content ends at `</script>`, leaving
    // `</script>` as text, an end tag for the next pass.
    ("<<script>script>alert(1)<</script>/script>", ""),
    ("<script<script>>alert(1)</script>", ">alert(1)"),
    ("<img src=\"x\" onerror=\"alert(1)\"", ""),
    ("<b>unclosed bold", "unclosed bold"),
    ("text <img src=x onerror=alert(1)", "text"),
    ("<a href=x>link", "link"),
    // Entity-encoded tags, decoded and removed like the real thing.
    ("&lt;script&gt;alert(1)&lt;/script&gt;", ""),
    ("&lt;img src=x onerror=alert(1)&gt;", ""),
    ("&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;", ""),
    ("&#60;script&#62;alert(1)&#60;/script&#62;", ""),
    ("&#x3C;script&#x3E;alert(1)&#x3C;/script&#x3E;", ""),
    ("&#0000060;b&#0000062;bold", "bold"),
    ("&lt;b&gt;not bold&lt;/b&gt;", "not bold"),
    ("&lt b", "< b"),
    // Null bytes and other controls inside tags.
    ("<scr\0ipt>alert(1)</script>", ""),
    ("<img\0 src=x onerror=alert(1)>", ""),
    ("<a href=\"java\0script:alert(1)\">x</a>", "x"),
    ("<\u{7}script>alert(1)</script>", ""),
    // Bidirectional override spoofing.
    ("invoice\u{202E}fdp.exe", "invoicefdp.exe"),
    ("\u{2067}admin\u{2069}", "admin"),
    ("&#x202E;gpj.exe", "gpj.exe"),
    // Comments, conditional comments, CDATA, processing instructions, doctype.
    ("a<!-- <script>alert(1)</script> -->b", "ab"),
    (
        "<!--[if gte IE 4]><script>alert(1)</script><![endif]-->ok",
        "ok",
    ),
    ("x<!-->y", "xy"),
    ("<![CDATA[<script>alert(1)</script>]]>", "alert(1)]]>"),
    ("<svg><![CDATA[<script>alert(1)</script>]]></svg>", ""),
    ("<?xml version=\"1.0\"?>doc", "doc"),
    ("<!DOCTYPE html>doc", "doc"),
    ("&lt;!-- hidden --&gt;shown", "shown"),
    // Frames and embedded documents.
    ("<iframe src=\"javascript:alert(1)\"></iframe>", ""),
    (
        "<iframe srcdoc=\"<script>alert(1)</script>\">fallback</iframe>",
        "",
    ),
    (
        "<object data=\"javascript:alert(1)\">fallback</object>",
        "fallback",
    ),
    ("<embed src=\"javascript:alert(1)\">", ""),
    (
        "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">",
        "\">",
    ),
    // Mutation-XSS style: markup hidden in raw-text elements.
    ("<textarea><img src=x onerror=alert(1)></textarea>", ""),
    ("<title></title><img src=x onerror=alert(1)>", ""),
    ("<xmp><script>alert(1)</script></xmp>", ""),
    ("<plaintext><b>x</b>", "x"),
    (
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
        "",
    ),
    // Meta refresh and base.
    (
        "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
        "",
    ),
    ("<base href=\"javascript:alert(1)//\">", ""),
    // A dangling opener is removed, a lone `<` stays.
    ("x </", "x /"),
    ("1 < 2", "1 < 2"),
];

#[test]
fn payloads_clean_to_the_expected_text() {
    let policy = TextPolicy::default();
    let mut failures = Vec::new();
    for &(payload, expected) in CASES {
        match clean_text(payload, &policy) {
            Ok(out) if out == expected => {}
            other => failures.push(format!("{payload:?}: expected {expected:?}, got {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn payload_outputs_hold_no_markup_and_are_stable() {
    let policy = TextPolicy::default();
    for &(payload, _) in CASES {
        let Ok(out) = clean_text(payload, &policy) else {
            panic!("{payload:?} was refused");
        };
        let bytes = out.as_bytes();
        for pair in bytes.windows(2) {
            let opens = pair[0] == b'<'
                && (pair[1].is_ascii_alphabetic() || matches!(pair[1], b'/' | b'!' | b'?'));
            assert!(!opens, "{payload:?} cleaned to {out:?}");
        }
        assert_eq!(clean_text(&out, &policy).as_ref(), Ok(&out), "{payload:?}");
    }
}

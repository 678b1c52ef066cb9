//! Throughput of `clean_text` on mixed input (plain text, markup, character
//! references, non-ASCII text) of 1 KiB and 64 KiB, and of `clean_json` on a
//! representative store configuration object.
//!
//! `cargo bench -p sanitize --bench throughput -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sanitize::{JsonPolicy, TextPolicy, clean_json, clean_text};
use serde_json::{Value, json};

/// One paragraph of the mix; repeated and cut to the wanted size.
const MIX: &str = "Welcome to Joe's Café & Bakery! We bake fresh bread every morning, \
    from 7 to 11. <b>Special offer</b>: 2 croissants for 3 €. Crème brûlée, \
    Schwarzwälder Kirschtorte, 抹茶ケーキ and ☕ on <i>request</i>. \
    <a href=\"https://example.invalid/menu\" onclick=\"track()\">See the menu</a> \
    &mdash; prices &lt; 10 € &amp; no booking needed.<br>\n\
    <script>alert('x')</script>Opening hours may vary on holidays; \
    <!-- internal note --> call us at +33 1 23 45 67 89. Cafe\u{301} au lait, \
    <span style=\"color:red\">limited</span> stock.\n";

/// `MIX` repeated and cut to at most `bytes` bytes, on a character boundary.
fn mixed_input(bytes: usize) -> String {
    let mut text = MIX.repeat(bytes / MIX.len() + 1);
    let mut cut = bytes;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text
}

/// A store configuration as a client would send it.
fn store_config() -> Value {
    json!({
        "name": "  Joe's Café & <b>Bakery</b> ",
        "description": "<p>Fresh bread every morning.</p><script>alert(1)</script> Prices &lt; 10 €.",
        "locale": "fr-FR",
        "currency": "EUR",
        "timezone": "Europe/Paris",
        "theme": {
            "primary_color": "#aa3300",
            "logo_url": "https://cdn.example.invalid/logo.png",
            "font": "Inter",
            "dark_mode": false
        },
        "opening_hours": [
            {"day": "mon", "open": "07:00", "close": "19:00"},
            {"day": "tue", "open": "07:00", "close": "19:00"},
            {"day": "wed", "open": "07:00", "close": "19:00"},
            {"day": "thu", "open": "07:00", "close": "19:00"},
            {"day": "fri", "open": "07:00", "close": "20:00"},
            {"day": "sat", "open": "08:00", "close": "20:00"}
        ],
        "features": ["click_and_collect", "delivery", "gift_cards", "loyalty"],
        "delivery": {"radius_km": 5.5, "fee_cents": 250, "free_above_cents": 3000},
        "contact": {"email": "contact@example.invalid", "phone": "+33 1 23 45 67 89"},
        "tags": ["bakery", "café", "pâtisserie", "<img src=x onerror=alert(1)>"],
        "__proto__": {"admin": true},
        "max_orders_per_hour": 40,
        "accepts_cash": true,
        "notes": null
    })
}

fn text(c: &mut Criterion) {
    let policy = TextPolicy::default()
        .max_chars(usize::MAX)
        .max_input_bytes(usize::MAX)
        .allow_newlines(true);
    let mut group = c.benchmark_group("clean_text");
    for (name, bytes) in [("mixed_1KiB", 1024), ("mixed_64KiB", 64 * 1024)] {
        let input = mixed_input(bytes);
        assert!(
            clean_text(&input, &policy).is_ok(),
            "the benchmark must time the success path"
        );
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| b.iter(|| clean_text(black_box(&input), &policy)));
    }
    group.finish();
}

fn json(c: &mut Criterion) {
    let policy = JsonPolicy::default();
    let config = store_config();
    let bytes = serde_json::to_vec(&config)
        .map(|v| v.len())
        .unwrap_or_default();
    assert!(
        clean_json(config.clone(), &policy).is_ok(),
        "the benchmark must time the success path"
    );
    let mut group = c.benchmark_group("clean_json");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("store_config", |b| {
        b.iter_batched(
            || config.clone(),
            |value| clean_json(black_box(value), &policy),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, text, json);
criterion_main!(benches);

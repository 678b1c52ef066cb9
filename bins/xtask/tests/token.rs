//! `cargo xtask token --subject NAME` end to end: the real binary against
//! the OpenBao of a real `cargo xtask up --no-services` (on free ports, in a
//! temporary folder). Each subject has its own `sub`, the same on every
//! call (whatever the scope, and after a restart of the stack); without
//! `--subject` the token is not one of theirs.

mod common;

use common::{Place, Stack, xtask};
use serde_json::Value;

/// `xtask token ARGS --dir DIR`: the claims of the token it prints.
fn token(place: &Place, args: &[&str]) -> Value {
    let out = place.run("token", args);
    assert!(
        out.status.success(),
        "xtask token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let jwt = text.trim();
    assert_eq!(jwt.lines().count(), 1, "one token on stdout: {text}");
    let claims = jwt.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&base64url(claims)).expect("JSON claims")
}

/// Unpadded base64url, decoded by hand (no dependency for a test).
fn base64url(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        other => panic!("not base64url: {other}"),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn sub(claims: &Value) -> String {
    let sub = claims["sub"].as_str().expect("a sub claim");
    assert!(!sub.is_empty(), "{claims}");
    sub.to_owned()
}

#[test]
fn token_subject_gives_each_client_its_own_stable_sub() {
    let place = Place::new();
    let first = Stack::up(&place, &[]);
    let alice = token(&place, &["--subject", "alice"]);
    let bob = token(&place, &["--subject", "bob"]);
    let again = token(&place, &["--subject", "alice"]);
    let secrets = token(&place, &["--subject", "alice", "--scope", "stores:secrets"]);
    let default = token(&place, &[]);

    assert_ne!(sub(&alice), sub(&bob), "two subjects, two subs");
    assert_eq!(sub(&alice), sub(&again), "the same NAME, the same sub");
    assert_eq!(
        sub(&alice),
        sub(&secrets),
        "a subject keeps its sub whatever the scope"
    );
    assert_ne!(sub(&default), sub(&alice), "no --subject: not alice");
    assert_ne!(sub(&default), sub(&bob), "no --subject: not bob");
    // Everything else is the gateway's usual token.
    assert_eq!(alice["scope"], "stores:read stores:write", "{alice}");
    assert_eq!(secrets["scope"], "stores:secrets", "{secrets}");
    for claims in [&alice, &bob, &default] {
        assert_eq!(claims["aud"], default["aud"], "{claims}");
        assert_eq!(claims["iss"], default["iss"], "{claims}");
        assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    }

    // A name that cannot be an AppRole's is refused before OpenBao is asked.
    let out = xtask(&[
        "token",
        "--subject",
        "Alice Smith",
        "--dir",
        place.dir.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--subject `Alice Smith`"), "{stderr}");
    first.stop();

    // A restart keeps OpenBao's data: alice is still alice.
    let second = Stack::up(&place, &[]);
    let later = token(&place, &["--subject", "alice"]);
    assert_eq!(sub(&later), sub(&alice), "the sub survives a restart");
    second.stop();
}

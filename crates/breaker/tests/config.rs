//! Policies and registries loaded from configuration (feature `serde`).
#![cfg(feature = "serde")]

use std::collections::BTreeMap;
use std::time::Duration;

use breaker::{Backoff, OpenAction, Policy, Preset, Registry, State, Window};

const TABLE: &str = r#"{
    "vault": { "preset": "vault" },
    "store": { "preset": "store-service", "open_wait": "45s" },
    "inventory": {
        "window": { "kind": "time", "duration": "60s", "buckets": 6 },
        "minimum_calls": 20,
        "failure_rate_threshold": 40,
        "slow_calls": { "duration": "2s", "rate_threshold": 80 },
        "call_timeout": "5s",
        "open_wait": "10s",
        "backoff": { "kind": "exponential", "multiplier": 2.0, "max": "5m", "jitter": 0.2 },
        "permitted_probes": 3,
        "max_half_open_wait": "30s",
        "on_open": "deny"
    }
}"#;

#[test]
fn loads_a_policy_table_with_presets_and_overrides() {
    let table: BTreeMap<String, Policy> = serde_json::from_str(TABLE).expect("valid table");
    assert_eq!(table["vault"], Preset::Vault.policy());
    let store = &table["store"];
    assert_eq!(store.open_wait(), Duration::from_secs(45));
    assert_eq!(store.failure_rate_threshold(), 50.0);
    assert_eq!(store.call_timeout(), Some(Duration::from_secs(15)));

    let inventory = &table["inventory"];
    assert_eq!(inventory.window(), Window::time(Duration::from_secs(60), 6));
    assert_eq!(inventory.minimum_calls(), 20);
    assert_eq!(inventory.failure_rate_threshold(), 40.0);
    let slow = inventory.slow_calls().expect("slow calls on");
    assert_eq!(slow.duration, Duration::from_secs(2));
    assert_eq!(slow.rate_threshold, 80.0);
    assert_eq!(inventory.call_timeout(), Some(Duration::from_secs(5)));
    assert_eq!(
        inventory.backoff(),
        Backoff::exponential(2.0, Duration::from_secs(300)).with_jitter(0.2)
    );
    assert_eq!(inventory.permitted_probes(), 3);
    assert_eq!(inventory.max_half_open_wait(), Duration::from_secs(30));
    assert_eq!(inventory.on_open(), OpenAction::Deny);

    let registry = Registry::new(table).expect("distinct names");
    assert_eq!(registry.len(), 3);
    let snapshots = registry.snapshots();
    let names: Vec<&str> = snapshots.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["inventory", "store", "vault"]);
    assert!(snapshots.iter().all(|s| s.state == State::Closed));
}

#[test]
fn every_preset_round_trips() {
    for preset in Preset::ALL {
        let policy = preset.policy();
        let text = serde_json::to_string(&policy).expect("serializes");
        let back: Policy = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, policy, "{preset}: {text}");
        let named: Policy = serde_json::from_str(&format!(r#"{{"preset": "{}"}}"#, preset.name()))
            .expect("by name");
        assert_eq!(named, policy);
    }
}

#[test]
fn false_turns_off_timeout_and_slow_calls() {
    let policy: Policy = serde_json::from_str(
        r#"{ "preset": "vault", "call_timeout": false, "slow_calls": false }"#,
    )
    .expect("valid");
    assert_eq!(policy.call_timeout(), None);
    assert_eq!(policy.slow_calls(), None);
}

#[test]
fn invalid_configuration_fails_to_load() {
    let cases = [
        (
            r#"{ "failure_rate_threshold": 0 }"#,
            "failure_rate_threshold",
        ),
        (
            r#"{ "failure_rate_threshold": 150 }"#,
            "failure_rate_threshold",
        ),
        (
            r#"{ "window": { "kind": "count", "size": 5 }, "minimum_calls": 6 }"#,
            "minimum_calls",
        ),
        (r#"{ "open_wait": "soon" }"#, "invalid duration"),
        (r#"{ "open_wait": "0s" }"#, "open_wait"),
        (r#"{ "preset": "mainframe" }"#, "unknown variant"),
        (r#"{ "treshold": 50 }"#, "unknown field"),
        (r#"{ "permitted_probes": 0 }"#, "permitted_probes"),
        (r#"{ "call_timeout": true }"#, "call_timeout"),
        (
            r#"{ "backoff": { "kind": "exponential", "multiplier": 0.5, "max": "1m" } }"#,
            "backoff.multiplier",
        ),
    ];
    for (text, expected) in cases {
        let error = serde_json::from_str::<Policy>(text).expect_err(text);
        assert!(
            error.to_string().contains(expected),
            "{text}: {error} should mention {expected}"
        );
    }
}

#[test]
fn duplicate_registry_names_are_rejected() {
    let error =
        Registry::new([("a", Policy::default()), ("a", Policy::default())]).expect_err("duplicate");
    assert_eq!(error, breaker::ConfigError::DuplicateName("a".to_owned()));
}

#[test]
fn snapshots_serialize_for_health_endpoints() {
    let registry = Registry::new([("vault", Preset::Vault.policy())]).expect("valid");
    let json = serde_json::to_value(registry.snapshots()).expect("serializes");
    assert_eq!(json[0]["name"], "vault");
    assert_eq!(json[0]["state"], "closed");
    assert_eq!(json[0]["failure_rate"], serde_json::Value::Null);
    assert_eq!(json[0]["totals"]["rejected"], 0);
}

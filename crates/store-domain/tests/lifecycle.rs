//! The lifecycle: the state machine (with property tests), `Store::apply`
//! and the audit events.

use proptest::prelude::*;
use serde_json::{Value, json};
use store_domain::{
    Actor, ApplyError, ChangedField, CreateStore, ErrorCode, EventKind, FieldChange,
    InvalidTransition, Secrets, Store, StoreEvent, StoreStatus, Transition, UpdateStore,
    ValidUpdate,
};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-11-26 09:00:00 UTC);
const T1: OffsetDateTime = datetime!(2026-11-26 09:05:00.25 UTC);

fn new_store() -> Store {
    let (store, _secrets) = CreateStore::new("Corner Shop")
        .with_secret("WIFI", "pw")
        .validate()
        .unwrap()
        .into_store(Uuid::from_u128(7), T0);
    store
}

fn update(request: UpdateStore) -> ValidUpdate {
    request.validate().unwrap()
}

fn status_strategy() -> impl Strategy<Value = StoreStatus> {
    prop::sample::select(StoreStatus::ALL.to_vec())
}

proptest! {
    /// For any sequence of requested statuses, applied from PROVISIONING:
    /// DECOMMISSIONED never leaves, nothing goes back to PROVISIONING,
    /// asking for the current status is a no-op, and a refusal leaves the
    /// status as it was.
    #[test]
    fn state_machine_invariants(requests in prop::collection::vec(status_strategy(), 0..40)) {
        let mut status = StoreStatus::INITIAL;
        let mut left_provisioning = false;
        for next in requests {
            let before = status;
            match before.transition_to(next) {
                Ok(transition) => {
                    prop_assert_eq!(transition.is_noop(), before == next);
                    prop_assert_eq!(transition.status(), next);
                    if before == next {
                        prop_assert_eq!(transition, Transition::Unchanged(before));
                    }
                    status = transition.status();
                }
                Err(err) => {
                    prop_assert_eq!(err, InvalidTransition { from: before, to: next });
                    prop_assert_ne!(before, next);
                }
            }
            if before == StoreStatus::Decommissioned {
                prop_assert_eq!(status, StoreStatus::Decommissioned);
            }
            if before == StoreStatus::Active {
                prop_assert_ne!(status, StoreStatus::Provisioning);
            }
            left_provisioning |= status != StoreStatus::Provisioning;
            if left_provisioning {
                prop_assert_ne!(status, StoreStatus::Provisioning);
            }
        }
    }

    /// The same sequence through `Store::apply`: versions grow by one per
    /// accepted update, refused ones change nothing, and each accepted one
    /// yields an event listing a status change exactly when the status
    /// changed.
    #[test]
    fn apply_follows_the_state_machine(requests in prop::collection::vec(status_strategy(), 0..20)) {
        let mut store = new_store();
        for next in requests {
            let request = update(UpdateStore::based_on(store.version).with_status(next));
            match store.apply(&request, T1) {
                Ok(after) => {
                    prop_assert!(store.status.can_transition_to(next));
                    prop_assert_eq!(after.status, next);
                    prop_assert_eq!(after.version, store.version + 1);
                    let event = StoreEvent::updated(&store, &after, false, "r", None);
                    let status_changed = event.changes.iter().any(|c| c.field == ChangedField::Status);
                    prop_assert_eq!(status_changed, store.status != next);
                    store = after;
                }
                Err(ApplyError::InvalidTransition(err)) => {
                    prop_assert_eq!(err.from, store.status);
                    prop_assert!(!store.status.can_transition_to(next));
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn a_new_store_is_provisioning_at_version_1() {
    let store = new_store();
    assert_eq!(store.status, StoreStatus::Provisioning);
    assert_eq!(store.version, 1);
    assert_eq!((store.created_at, store.updated_at), (T0, T0));
    assert_eq!(store.secret_keys, ["WIFI"]);
    assert_eq!(store.etag(), "\"1\"");
}

#[test]
fn apply_replaces_given_fields_only() {
    let store = new_store();
    let request = update(
        UpdateStore::based_on(1)
            .with_name("<b>New</b> Name")
            .with_config(serde_json::from_value(json!({"a": 1})).unwrap())
            .with_secrets(Secrets::new().with("API_KEY", "k").with("PIN", "1")),
    );
    let after = store.apply(&request, T1).unwrap();
    assert_eq!(after.name, "New Name");
    assert_eq!(after.status, StoreStatus::Provisioning);
    assert_eq!(Value::Object(after.config.clone()), json!({"a": 1}));
    assert_eq!(after.secret_keys, ["API_KEY", "PIN"]);
    assert_eq!(after.version, 2);
    assert_eq!(after.created_at, T0);
    assert_eq!(after.updated_at, T1);
    assert_eq!(after.id, store.id);

    let only_status = update(UpdateStore::based_on(2).with_status(StoreStatus::Active));
    let later = after.apply(&only_status, T1).unwrap();
    assert_eq!(later.name, after.name);
    assert_eq!(later.config, after.config);
    assert_eq!(later.secret_keys, after.secret_keys);
}

#[test]
fn apply_checks_the_version_first() {
    let store = new_store();
    let stale = update(UpdateStore::based_on(5).with_status(StoreStatus::Provisioning));
    let err = store.apply(&stale, T1).unwrap_err();
    assert_eq!(
        err,
        ApplyError::VersionMismatch {
            expected: 5,
            current: 1
        }
    );
    assert_eq!(err.code(), ErrorCode::ConcurrencyError);
    assert!(!err.is_retryable());

    let unversioned = update(UpdateStore::default().with_name("Shop"));
    let err = store.apply(&unversioned, T1).unwrap_err();
    assert_eq!(err, ApplyError::VersionRequired);
    assert_eq!(err.code(), ErrorCode::PreconditionRequired);
    // ... which If-Match can supply.
    assert!(
        store
            .apply(&unversioned.with_expected_version(1), T1)
            .is_ok()
    );

    let mut decommissioned = new_store();
    decommissioned.status = StoreStatus::Decommissioned;
    let revive = update(UpdateStore::based_on(1).with_status(StoreStatus::Active));
    let err = decommissioned.apply(&revive, T1).unwrap_err();
    assert_eq!(
        err,
        ApplyError::InvalidTransition(InvalidTransition {
            from: StoreStatus::Decommissioned,
            to: StoreStatus::Active
        })
    );
    assert_eq!(err.code(), ErrorCode::InvalidStatusTransition);
}

#[test]
fn apply_refuses_to_overflow_the_version() {
    let mut store = new_store();
    store.version = i32::MAX;
    let request = update(UpdateStore::based_on(i32::MAX).with_name("Shop"));
    assert_eq!(store.apply(&request, T1), Err(ApplyError::VersionExhausted));
}

#[test]
fn created_event_lists_every_field() {
    let store = new_store();
    let event = StoreEvent::created(&store, "req-1", None);
    assert_eq!(event.kind, EventKind::Created);
    assert_eq!(event.version, 1);
    assert_eq!(event.occurred_at, T0);
    assert_eq!(event.request_id, "req-1");
    assert_eq!(event.actor, None);
    assert_eq!(
        event.changes,
        [
            FieldChange {
                field: ChangedField::Name,
                old: Value::Null,
                new: json!("Corner Shop")
            },
            FieldChange {
                field: ChangedField::Status,
                old: Value::Null,
                new: json!("PROVISIONING")
            },
            FieldChange {
                field: ChangedField::Config,
                old: Value::Null,
                new: json!({})
            },
            FieldChange {
                field: ChangedField::Secrets,
                old: Value::Null,
                new: json!(["WIFI"])
            },
        ]
    );
}

#[test]
fn updated_event_lists_changed_fields_with_secret_names_only() {
    let store = new_store();
    let request = update(
        UpdateStore::based_on(1)
            .with_name("Corner Shop")
            .with_status(StoreStatus::Active)
            .with_secrets(Secrets::new().with("WIFI", "new-password")),
    );
    let after = store.apply(&request, T1).unwrap();
    let alice = Actor::new("auth0|alice").unwrap();
    let event = StoreEvent::updated(
        &store,
        &after,
        request.secrets().is_some(),
        "req-2",
        Some(alice.clone()),
    );
    assert_eq!(event.kind, EventKind::Updated);
    assert_eq!(event.actor, Some(alice));
    assert_eq!(event.version, 2);
    assert_eq!(event.occurred_at, T1);
    // The name did not change; the secret's value did, under the same key.
    assert_eq!(
        event.changes,
        [
            FieldChange {
                field: ChangedField::Status,
                old: json!("PROVISIONING"),
                new: json!("ACTIVE")
            },
            FieldChange {
                field: ChangedField::Secrets,
                old: json!(["WIFI"]),
                new: json!(["WIFI"])
            },
        ]
    );
    let text = serde_json::to_string(&event).unwrap();
    assert!(!text.contains("new-password"));
    assert!(!text.contains("\"pw\""));
}

//! What a Vault call costs while the breaker is open, against a real OpenBao
//! that was stopped: the call is rejected before any IO. For comparison, the
//! same read served from the last-known-good fallback, and a call that does
//! reach the stopped server (breaker disabled: connection refused).
//!
//! Run: `cargo bench -p vault-client --bench open_breaker`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use vault_client::breaker::{Policy, State, Window};
use vault_client::{AuthMethod, Client, Config, Error, Source};

fn open_breaker(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (bao, client) = runtime.block_on(async {
        let bao = testkit::OpenBao::start().await.expect("OpenBao starts");
        bao.enable_kv2("secret").await.expect("kv2");
        bao.kv_put("secret", "app", json!({ "password": "p" }))
            .await
            .expect("put");
        let policy = Policy::builder()
            .window(Window::count(4))
            .minimum_calls(4)
            .failure_rate_threshold(50.0)
            .open_wait(Duration::from_secs(3600))
            .build()
            .expect("policy");
        let config = Config::builder()
            .address(bao.addr())
            .auth(AuthMethod::token(bao.root_token()))
            .max_retries(0)
            .breaker_policy(policy)
            .build()
            .expect("config");
        let client = Client::new(config).await.expect("client");
        // Keep a last known good value, then stop the server.
        client.kv2("secret").read("app").await.expect("first read");
        bao.stop().await.expect("stop");
        while client.breaker().state() != State::Open {
            let _ = client.read("secret/data/app").await;
        }
        (bao, client)
    });

    let mut group = c.benchmark_group("vault_client");
    group.bench_function("call_while_open", |b| {
        b.to_async(&runtime).iter(|| async {
            match client.read("secret/data/app").await {
                Err(Error::CircuitOpen { .. }) => {}
                other => panic!("expected a rejection, got {other:?}"),
            }
        })
    });
    group.bench_function("kv2_read_while_open_from_last_known_good", |b| {
        b.to_async(&runtime).iter(|| async {
            let secret = client.kv2("secret").read("app").await.expect("fallback");
            assert!(matches!(secret.source, Source::LastKnownGood { .. }));
        })
    });
    client.breaker().disable();
    group.bench_function("call_to_stopped_server_breaker_disabled", |b| {
        b.to_async(&runtime).iter(|| async {
            match client.read("secret/data/app").await {
                Err(Error::Connect { .. }) => {}
                other => panic!("expected connection refused, got {other:?}"),
            }
        })
    });
    group.finish();
    drop(client);
    drop(bao);
}

criterion_group!(benches, open_breaker);
criterion_main!(benches);

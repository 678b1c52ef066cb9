//! Shared set-up of the integration tests: a real OpenBao per test, and
//! clients with short back-offs so failures surface quickly.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use testkit::OpenBao;
use vault_client::breaker::{Policy, Window};
use vault_client::{AuthMethod, Backoff, Client, Config, ConfigBuilder};

/// A server of its own.
pub async fn bao() -> OpenBao {
    OpenBao::start().await.expect("OpenBao starts")
}

/// A config for `bao` with the root token and short retry back-offs.
pub fn root_config(bao: &OpenBao) -> ConfigBuilder {
    Config::builder()
        .address(bao.addr())
        .auth(AuthMethod::token(bao.root_token()))
        .retry_backoff(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(100),
        ))
}

/// A client with the root token.
pub async fn root_client(bao: &OpenBao) -> Client {
    Client::new(root_config(bao).build().expect("valid config"))
        .await
        .expect("client")
}

/// A breaker that judges after 4 calls and opens for `open_wait`.
pub fn quick_breaker(open_wait: Duration) -> Policy {
    Policy::builder()
        .window(Window::count(4))
        .minimum_calls(4)
        .failure_rate_threshold(50.0)
        .call_timeout(Duration::from_secs(5))
        .open_wait(open_wait)
        .build()
        .expect("valid policy")
}

/// Mounts KV v2 at `mount` and waits until its upgrade to versioned storage
/// is over (until then OpenBao answers 400 "Upgrading from non-versioned to
/// versioned data" for a moment, which made set-up writes fail on a loaded
/// machine).
pub async fn enable_kv2(bao: &OpenBao, mount: &str) {
    bao.enable_kv2(mount).await.expect("KV v2 mounted");
    for _ in 0..200 {
        match bao
            .call(
                reqwest::Method::GET,
                &format!("{mount}/data/set-up-probe"),
                None,
            )
            .await
        {
            Err(e) if format!("{e:?}").contains("Upgrading") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => return,
        }
    }
    panic!("KV v2 at {mount} still upgrading after 10 s");
}

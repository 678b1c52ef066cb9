//! The binary: `--help`, configuration errors naming the bad key, and the
//! graceful shutdown on SIGTERM (requests in flight finish, then the
//! process exits).

mod common;

use std::time::Duration;

use axum::{Router, routing::get};
use common::*;
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_gateway");

/// The gateway binary, started with a configuration file; killed on drop.
struct Binary {
    service: testkit::Service,
    base: String,
    /// Holds the configuration file.
    _dir: tempfile::TempDir,
}

impl Binary {
    /// Writes `config` to a file and starts the binary on a free port with
    /// `env`, its output to a log file (never a pipe that could fill up).
    fn spawn(config: &str, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let port = testkit::free_port().unwrap();
        let command = env.iter().fold(
            testkit::ServiceCommand::new(BINARY)
                .current_dir(dir.path())
                .env("GATEWAY_CONFIG", &path)
                .env("PORT", port.to_string())
                .env("HOST", "127.0.0.1"),
            |command, (name, value)| command.env(name, value),
        );
        Self {
            service: testkit::Service::spawn(command).unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// What it wrote so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.service.log()).unwrap_or_default()
    }

    /// Waits for `/ready`.
    async fn ready(&self) {
        get_until(
            &format!("{}/ready", self.base),
            "",
            200,
            Duration::from_secs(30),
        )
        .await;
    }

    /// SIGTERM, then the exit status (within 20 s).
    async fn terminate(&mut self) -> std::process::ExitStatus {
        self.service
            .terminate(Duration::from_secs(20))
            .await
            .expect("the gateway exits")
    }
}

/// `[auth]` for `security` and one route `prefix` → `upstream` needing
/// `stores:read`.
fn one_route(security: &Security, prefix: &str, upstream: std::net::SocketAddr) -> String {
    format!(
        "[auth]\njwks_url = \"{}\"\nissuer = \"{}\"\naudiences = [\"{}\"]\n\n[[routes]]\nprefix = \"{prefix}\"\nupstream = \"http://{upstream}\"\nscopes = {{ GET = [\"stores:read\"] }}\n",
        security.issuer.jwks_url, security.issuer.issuer, security.issuer.client_id
    )
}

/// A local HTTP server for `app`; its address.
async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn help_lists_every_variable_and_bad_keys_are_named() {
    let help = Command::new(BINARY).arg("--help").output().await.unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for var in gateway::settings::ENVIRONMENT {
        assert!(help.contains(var), "{var} missing from --help:\n{help}");
    }

    let dir = tempfile::tempdir().unwrap();
    let good_auth =
        "[auth]\njwks_url = \"http://127.0.0.1:1/keys\"\nissuer = \"i\"\naudiences = [\"a\"]\n";
    let cases = [
        (
            format!(
                "{good_auth}[[routes]]\nprefix = \"/api/x\"\nupstream = \"not a url\"\nscopes = {{ GET = [\"r\"] }}\n"
            ),
            "routes[0].upstream",
        ),
        (format!("{good_auth}max_age = \"soon\"\n"), "max_age"),
        (
            good_auth.replace("audiences = [\"a\"]", "audiences = []"),
            "auth.audiences",
        ),
        (
            format!("{good_auth}[server]\nbody_limit_bytes = 0\n"),
            "server.body_limit_bytes",
        ),
        (
            "[auth]\nissuer = \"i\"\naudiences = [\"a\"]\n".to_owned(),
            "jwks_url",
        ),
    ];
    for (text, key) in cases {
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).unwrap();
        let output = Command::new(BINARY)
            .current_dir(dir.path())
            .env("GATEWAY_CONFIG", &path)
            .env("PORT", "0")
            .env("PAGERDUTY_ROUTING_KEY", "pd-secret-value")
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{key}: started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{key} not named:\n{stderr}");
        assert!(
            !stderr.contains("pd-secret-value"),
            "secret printed:\n{stderr}"
        );
    }
    let missing = Command::new(BINARY)
        .env_remove("GATEWAY_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--config"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight() {
    let security = Security::start().await;
    // A slow upstream (1 s per request) that says when a request arrived.
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<()>();
    let upstream = serve(Router::new().fallback(get(move || {
        let arrived = arrived.clone();
        async move {
            let _ = arrived.send(());
            tokio::time::sleep(Duration::from_secs(1)).await;
            "slow answer"
        }
    })))
    .await;
    let mut gateway = Binary::spawn(
        &one_route(&security, "/api/slow", upstream),
        &[("RUST_LOG", "info".to_owned())],
    );
    gateway.ready().await;
    let token = security.token("stores:read").await;
    let url = format!("{}/api/slow/x", gateway.base);
    let in_flight = tokio::spawn(async move { http().get(url).bearer_auth(token).send().await });
    // SIGTERM while the request is at the upstream.
    tokio::time::timeout(Duration::from_secs(20), arrivals.recv())
        .await
        .expect("the request reaches the upstream");
    let base = gateway.base.clone();
    let terminating = tokio::spawn(async move { gateway.terminate().await });
    let answer = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "slow answer");
    let status = terminating.await.unwrap();
    assert!(status.success(), "{status}");
    // New connections are refused once it is gone.
    assert!(http().get(format!("{base}/health")).send().await.is_err());
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the gateway exports its spans
/// and the upstream sees the client's trace continued by the gateway's
/// span (same trace id, the gateway's span as parent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_and_trace_context_propagation() {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };

    let security = Security::start().await;
    // The upstream: answers with the traceparent it received.
    let upstream = serve(Router::new().fallback(get(
        |headers: axum::http::HeaderMap| async move {
            headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        },
    )))
    .await;
    // The OTLP collector: counts trace exports.
    let exports = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&exports);
    let otlp = serve(Router::new().route(
        "/v1/traces",
        axum::routing::post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "" }
        }),
    ))
    .await;
    let mut gateway = Binary::spawn(
        &one_route(&security, "/api/trace", upstream),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
            // The request span is an `info` span: filtered out, there is
            // no gateway span to propagate (the client's context passes
            // through unchanged).
            ("RUST_LOG", "info".to_owned()),
        ],
    );
    gateway.ready().await;
    let token = security.token("stores:read").await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let seen = http()
        .get(format!("{}/api/trace/x", gateway.base))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-{client_span}-01"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!(parts[1], trace, "the trace continues: {seen}");
    assert_ne!(
        parts[2], client_span,
        "the gateway's span is the parent: {seen}"
    );
    assert_eq!(parts[2].len(), 16, "{seen}");

    // SIGTERM: the gateway drains, then flushes its spans on exit.
    let status = gateway.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        exports.load(Ordering::SeqCst) >= 1,
        "no span export reached the collector"
    );
}

/// A security service that never answered: not ready, every request
/// refused with the fail-closed 503, and the critical alert logged once
/// as a JSON ERROR line with `alert="critical"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_security_service_fails_closed_with_a_critical_log_line() {
    let nowhere = testkit::free_port().unwrap();
    let mut gateway = Binary::spawn(
        &format!(
            "[auth]\njwks_url = \"http://127.0.0.1:{nowhere}/keys\"\nissuer = \"i\"\naudiences = [\"a\"]\nrefresh_interval = \"200ms\"\nmax_age = \"1s\"\n"
        ),
        &[("RUST_LOG", "info".to_owned())],
    );
    let base = gateway.base.clone();
    get_until(&format!("{base}/health"), "", 200, Duration::from_secs(30)).await;
    let ready = http().get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["signingKeys"], false, "{ready}");
    for _ in 0..5 {
        let denied = get_with(&format!("{base}/api/stores"), "whatever").await;
        assert_eq!(denied.status(), 503);
        assert!(denied.headers().contains_key("retry-after"));
        let problem: serde_json::Value = denied.json().await.unwrap();
        assert_eq!(problem["error"], "SECURITY_SERVICE_UNAVAILABLE");
        assert_eq!(
            problem["message"],
            "Access denied due to security system unavailability."
        );
    }
    let status = gateway.terminate().await;
    assert!(status.success(), "{status}");
    let mut critical = Vec::new();
    for line in gateway.stderr().lines() {
        assert!(!line.contains("whatever"), "a token was logged: {line}");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        // (The security breaker opening is an alert of its own.)
        if entry["fields"]["alert"] == "critical"
            && entry["fields"]["name"] == "security_fail_closed"
        {
            critical.push(entry);
        }
    }
    assert_eq!(critical.len(), 1, "{critical:?}");
    assert_eq!(critical[0]["level"], "ERROR");
}

//! The gateway as its Dockerfile builds it (`cargo build -p gateway`,
//! nothing of the workspace's other crates unified in) reaches an `https`
//! JWKS: OpenBao's TLS listener, under a private CA trusted through
//! `server.extra_ca_file` (beside the platform's roots), and a request
//! gets its 200 through the gateway.
//! Without a TLS backend of its own, the binary fails closed forever.

mod common;

use std::{path::Path, time::Duration};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use testkit::OpenBao;

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files
/// in `dir`: (ca, cert, key).
fn pki(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gateway test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    (
        write("ca.pem", ca.pem()),
        write("server.pem", server.pem()),
        write("server-key.pem", server_key.serialize_pem()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_built_alone_fetches_an_https_jwks() {
    // First the binary alone, copied away before anything rebuilds it.
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("gateway");
    std::fs::copy(testkit::build_binary("gateway").unwrap(), &binary).expect("copy the binary");

    let (ca, cert, key) = pki(dir.path());
    let bao = OpenBao::builder()
        .tls(&cert, &key)
        .start()
        .await
        .expect("OpenBao starts with a TLS listener");
    let issuer = bao
        .configure_oidc_issuer("gateway", "api", Duration::from_secs(600))
        .await
        .expect("issuer");
    let https = bao.tls_addr().expect("a TLS address").to_owned();
    let jwks_url = format!("{https}/v1/identity/oidc/.well-known/keys");
    let token = bao.oidc_token(&issuer, "stores:read").await.expect("token");
    let (echo, seen) = echo_upstream().await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
extra_ca_file = "{ca}"

[auth]
jwks_url = "{jwks_url}"
issuer = "{iss}"
audiences = ["{aud}"]
fetch_timeout = "2s"

[degraded]
queue_path = "{queue}"

[[routes]]
prefix = "/api/echo"
upstream = "http://{echo}"
scopes = {{ GET = ["stores:read"] }}
"#,
            ca = ca.display(),
            iss = issuer.issuer,
            aud = issuer.client_id,
            queue = dir.path().join("queue.redb").display(),
        ),
    )
    .unwrap();
    let gateway = testkit::Service::spawn(
        testkit::ServiceCommand::new(&binary)
            .env_clear()
            .env("GATEWAY_CONFIG", &config)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("RUST_LOG", "info"),
    )
    .expect("the gateway starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = http();
    let answer = eventually("a 200 through the gateway", Duration::from_secs(30), || {
        let request = http
            .get(format!("{base}/api/echo/x"))
            .bearer_auth(&token)
            .send();
        async move {
            let r = request.await.ok()?;
            (r.status() == 200).then_some(r)
        }
    })
    .await;
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["uri"], "/api/echo/x");
    assert_eq!(seen.lock().unwrap().len(), 1);
    let log = std::fs::read_to_string(gateway.log()).unwrap_or_default();
    assert!(!log.contains("SECURITY_SERVICE_UNAVAILABLE"), "{log}");
}

//! TLS to a real OpenBao whose certificate comes from a CA this test makes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use testkit::OpenBao;
use vault_client::{AuthMethod, Client, Config, Delivery, Error};

struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, a server certificate for `bao.test` only (not for 127.0.0.1), and a
/// client certificate, all written as PEM files.
fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vault-client test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["bao.test".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["store-service".to_owned()]).unwrap();
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &issuer).unwrap();

    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    std::fs::create_dir(dir.path().join("cas")).unwrap();
    std::fs::write(dir.path().join("cas/ca.crt"), ca_cert.pem()).unwrap();
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server-key.pem", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
        dir,
    }
}

async fn health(config: Config) -> Result<u16, Error> {
    let client = Client::new(config).await?;
    client.health().await.map(|h| h.status)
}

fn tls_base(bao: &OpenBao) -> vault_client::ConfigBuilder {
    Config::builder()
        .address(bao.tls_addr().expect("TLS listener"))
        .auth(AuthMethod::token(bao.root_token()))
        .max_retries(0)
}

fn assert_tls_refused(result: Result<u16, Error>) {
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.delivery(), Delivery::NotSent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca() {
    let pki = pki();
    let bao = OpenBao::builder()
        .tls(&pki.server_cert, &pki.server_key)
        .start()
        .await
        .unwrap();
    common::enable_kv2(&bao, "secret").await;
    bao.kv_put("secret", "app", serde_json::json!({ "k": "over TLS" }))
        .await
        .unwrap();

    // Our CA, and the name in the certificate.
    let good = tls_base(&bao)
        .ca_cert(&pki.ca)
        .tls_server_name("bao.test")
        .build()
        .unwrap();
    let client = Client::new(good).await.unwrap();
    assert_eq!(client.health().await.unwrap().status, 200);
    let read = client.kv2("secret").read("app").await.unwrap();
    assert_eq!(read.data.get_str("k"), Some("over TLS"));

    // The certificate does not name 127.0.0.1.
    assert_tls_refused(health(tls_base(&bao).ca_cert(&pki.ca).build().unwrap()).await);
    // The system trust store does not know our CA.
    assert_tls_refused(health(tls_base(&bao).tls_server_name("bao.test").build().unwrap()).await);
    // A folder of CA files works like one file; so does PEM in memory.
    let from_dir = tls_base(&bao)
        .ca_path(pki.dir.path().join("cas"))
        .tls_server_name("bao.test")
        .build()
        .unwrap();
    assert_eq!(health(from_dir).await.unwrap(), 200);
    let in_memory = tls_base(&bao)
        .ca_pem(std::fs::read(&pki.ca).unwrap())
        .tls_server_name("bao.test")
        .build()
        .unwrap();
    assert_eq!(health(in_memory).await.unwrap(), 200);
    // Development only: no verification at all.
    assert_eq!(
        health(tls_base(&bao).skip_verify(true).build().unwrap())
            .await
            .unwrap(),
        200
    );

    // The same through VAULT_* variables.
    let env: BTreeMap<String, String> = [
        ("VAULT_ADDR", bao.tls_addr().unwrap()),
        ("VAULT_CACERT", pki.ca.to_str().unwrap()),
        ("VAULT_TLS_SERVER_NAME", "bao.test"),
        ("VAULT_TOKEN", bao.root_token()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let client = Client::new(Config::from_environment(&env).unwrap())
        .await
        .unwrap();
    assert!(client.kv2("secret").read("app").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let pki = pki();
    let bao = OpenBao::builder()
        .tls(&pki.server_cert, &pki.server_key)
        .tls_client_ca(&pki.ca)
        .start()
        .await
        .unwrap();
    let with_cert = tls_base(&bao)
        .ca_cert(&pki.ca)
        .tls_server_name("bao.test")
        .client_cert(&pki.client_cert, &pki.client_key)
        .build()
        .unwrap();
    assert_eq!(health(with_cert).await.unwrap(), 200);
    let without = tls_base(&bao)
        .ca_cert(&pki.ca)
        .tls_server_name("bao.test")
        .build()
        .unwrap();
    let err = health(without).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tls { .. } | Error::Transport { .. } | Error::Connect { .. }
        ),
        "{err}"
    );
    // A key that is not a key is a configuration error, before any request.
    let broken = tls_base(&bao)
        .ca_cert(&pki.ca)
        .client_cert(&pki.client_cert, Path::new(&pki.ca))
        .build()
        .unwrap();
    assert!(matches!(health(broken).await, Err(Error::Config(_))));
}

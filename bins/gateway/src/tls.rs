//! The TLS of the gateway's own HTTPS clients (the security service's
//! keys, PagerDuty): rustls with `ring` as the process's provider, the
//! platform's roots and `server.extra_ca_file`'s beside them.

use std::path::Path;

use anyhow::Context as _;

/// reqwest (rustls without a built-in provider in this workspace) needs
/// `ring` installed as the process default.
pub fn rustls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTPS client (no proxy from the environment), trusting the
/// platform's roots and those of `extra_ca_file`.
pub fn https_client(extra_ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    rustls_provider();
    let mut http = reqwest::Client::builder().no_proxy();
    if let Some(path) = extra_ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("server.extra_ca_file: reading {}", path.display()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("server.extra_ca_file: {} is not PEM", path.display()))?;
        anyhow::ensure!(
            !roots.is_empty(),
            "server.extra_ca_file: {} holds no certificate",
            path.display()
        );
        http = http.tls_certs_merge(roots);
    }
    http.build().context("building the HTTP client")
}

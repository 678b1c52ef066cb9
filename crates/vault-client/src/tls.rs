//! TLS to Vault: rustls with the `ring` provider, configured by this crate
//! (custom CA bundle or folder, client certificate, a server name override,
//! or no verification at all) and handed to reqwest ready-made.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::{ConfigError, TlsConfig};

/// Installs rustls' `ring` provider as the process-wide default, unless one
/// is installed already; returns whether this call installed it.
///
/// This crate turns on reqwest's `rustls-no-provider` feature (to avoid
/// aws-lc's C build). Cargo unifies features, so every reqwest client built
/// in the same binary, even a plain-HTTP one in another crate, then needs a
/// process-wide provider or panics when built. [`Client::new`](crate::Client::new)
/// calls this; call it first thing in `main` (or in a test helper) when
/// other code builds reqwest clients before the first Vault client exists.
pub fn install_crypto_provider() -> bool {
    rustls::crypto::ring::default_provider()
        .install_default()
        .is_ok()
}

/// The rustls configuration for `tls`.
pub(crate) fn client_config(tls: &TlsConfig) -> Result<ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?;

    let verifier: Arc<dyn ServerCertVerifier> = if tls.skip_verify {
        Arc::new(AcceptAnyCert {
            algorithms: provider.signature_verification_algorithms,
        })
    } else {
        let roots = custom_roots(tls)?;
        let base: Arc<dyn ServerCertVerifier> = match roots {
            Some(roots) => {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| ConfigError::Tls(e.to_string()))?
            }
            None => Arc::new(
                rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
                    .map_err(|e| ConfigError::Tls(format!("system trust store: {e}")))?,
            ),
        };
        match &tls.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| ConfigError::Tls(format!("invalid TLS server name {name:?}")))?;
                Arc::new(NameOverride { inner: base, name })
            }
            None => base,
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| ConfigError::Tls(format!("client key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::Tls(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The CA certificates configured, or `None` for the system's.
fn custom_roots(tls: &TlsConfig) -> Result<Option<RootCertStore>, ConfigError> {
    let mut certs = Vec::new();
    if let Some(file) = &tls.ca_cert {
        certs.extend(read_certs(file)?);
    }
    if let Some(dir) = &tls.ca_path {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| ConfigError::Tls(format!("CA folder {}: {e}", dir.display())))?;
        let mut files: Vec<_> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e, "pem" | "crt" | "cer"))
            })
            .collect();
        files.sort();
        for file in files {
            certs.extend(read_certs(&file)?);
        }
        if certs.is_empty() {
            return Err(ConfigError::Tls(format!(
                "CA folder {} holds no *.pem, *.crt or *.cer certificate",
                dir.display()
            )));
        }
    }
    for pem in &tls.ca_pem {
        let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
        let parsed = parsed.map_err(|e| ConfigError::Tls(format!("CA PEM: {e}")))?;
        if parsed.is_empty() {
            return Err(ConfigError::Tls("CA PEM holds no certificate".into()));
        }
        certs.extend(parsed);
    }
    if certs.is_empty() {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| ConfigError::Tls(format!("CA certificate: {e}")))?;
    }
    Ok(Some(roots))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| ConfigError::Tls(format!("{}: {e}", path.display())))?
        .collect();
    let certs = certs.map_err(|e| ConfigError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::Tls(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Verifies the certificate as usual, but for a configured name instead of
/// the address's host (`VAULT_TLS_SERVER_NAME`).
struct NameOverride {
    /// The verifier that checks the chain.
    inner: Arc<dyn ServerCertVerifier>,
    /// The name the certificate must carry.
    name: ServerName<'static>,
}

impl fmt::Debug for NameOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NameOverride")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for NameOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `SKIP_VERIFY`: any certificate for any name. The handshake signature is
/// still checked (it proves the peer holds the key of the certificate it
/// sent, which is worth little when the certificate is not checked).
#[derive(Debug)]
struct AcceptAnyCert {
    /// The provider's signature algorithms.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rustls error in `error`'s source chain, if TLS failed. An
/// `io::Error` hides the error it wraps from `source()` (it returns the
/// wrapped error's own source), so wrapped errors are opened explicitly.
pub(crate) fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls.to_string());
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
        && let Some(found) = tls_failure(inner)
    {
        return Some(found);
    }
    error.source().and_then(tls_failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_roots_and_bad_files() {
        assert!(client_config(&TlsConfig::default()).is_ok());
        let missing = TlsConfig {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..TlsConfig::default()
        };
        assert!(matches!(client_config(&missing), Err(ConfigError::Tls(_))));
        let garbage = TlsConfig {
            ca_pem: vec![b"not a certificate".to_vec()],
            ..TlsConfig::default()
        };
        assert!(matches!(client_config(&garbage), Err(ConfigError::Tls(_))));
        let empty_dir = tempdir();
        let folder = TlsConfig {
            ca_path: Some(empty_dir.clone()),
            ..TlsConfig::default()
        };
        assert!(matches!(client_config(&folder), Err(ConfigError::Tls(_))));
        let _ = std::fs::remove_dir(empty_dir);
        let bad_name = TlsConfig {
            server_name: Some("not a name!".into()),
            ..TlsConfig::default()
        };
        assert!(client_config(&bad_name).is_err());
        let skip = TlsConfig {
            skip_verify: true,
            ..TlsConfig::default()
        };
        assert!(client_config(&skip).is_ok());
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vault-client-tls-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

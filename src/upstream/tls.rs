//! TLS toward upstream servers: one rustls client configuration for the process, verifying
//! server certificates against the system roots or the operator's CA bundle.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio_rustls::client::TlsStream;

use super::connect::UpstreamTcp;
use super::error::UpstreamError;

/// Shared TLS client configuration.
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
}

impl TlsConnector {
    /// Loads the CA bundle (or the system roots when `ca` is `None`).
    pub fn new(ca: Option<&Path>) -> Result<Self, UpstreamError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| UpstreamError::Config(format!("{}: {e}", path.display())))?;
                let mut added = 0;
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let cert = cert
                        .map_err(|e| UpstreamError::Config(format!("{}: {e}", path.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| UpstreamError::Config(format!("{}: {e}", path.display())))?;
                    added += 1;
                }
                if added == 0 {
                    return Err(UpstreamError::Config(format!(
                        "{}: no certificates found",
                        path.display()
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    // Individual unparsable system certificates are skipped, as browsers do.
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            inner: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Runs the TLS handshake on a connected socket, verifying the certificate for `name`.
    pub async fn handshake(
        &self,
        name: &str,
        tcp: UpstreamTcp,
    ) -> Result<TlsStream<UpstreamTcp>, UpstreamError> {
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|_| UpstreamError::Tls(format!("{name:?} is not a valid server name")))?;
        self.inner
            .connect(server_name, tcp)
            .await
            .map_err(|e| UpstreamError::Tls(e.to_string()))
    }
}

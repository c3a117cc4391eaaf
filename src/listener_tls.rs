//! TLS on the public listener (docs/protocol.md §7), for deployments without a TLS-terminating
//! load balancer: the certificate chain and key are read when the settings are built, at
//! start-up and again on every SIGHUP, so a renewed certificate is served to new connections
//! without a restart; connections already open keep theirs.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::ListenerTlsConfig;
use crate::upstream::UpstreamError;

/// The acceptor for the configured certificate, or `None` when the listener is plain HTTP.
pub fn acceptor(cfg: &ListenerTlsConfig) -> Result<Option<TlsAcceptor>, UpstreamError> {
    let (Some(cert_file), Some(key_file)) = (&cfg.cert_file, &cfg.key_file) else {
        return Ok(None);
    };
    let chain = read_chain(cert_file)?;
    let key = read_key(key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            UpstreamError::Config(format!(
                "{} and {} do not make a usable certificate: {e}",
                cert_file.display(),
                key_file.display()
            ))
        })?;
    // HTTP/2 for BOSH where the browser offers it; WebSockets need HTTP/1.1 (no RFC 8441).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn open(path: &Path) -> Result<BufReader<File>, UpstreamError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| UpstreamError::Config(format!("cannot read {}: {e}", path.display())))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, UpstreamError> {
    let chain = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UpstreamError::Config(format!("{}: {e}", path.display())))?;
    if chain.is_empty() {
        return Err(UpstreamError::Config(format!(
            "{}: no PEM certificate",
            path.display()
        )));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, UpstreamError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|e| UpstreamError::Config(format!("{}: {e}", path.display())))?
        .ok_or_else(|| UpstreamError::Config(format!("{}: no PEM private key", path.display())))
}

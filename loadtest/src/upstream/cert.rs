//! The fixture's TLS identity, made at start: a throwaway CA and a server certificate for the
//! served domains signed by it. Clients (the gateway's `--upstream-ca`) trust the CA.

use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and the server configuration presenting a leaf it signed.
pub struct Identity {
    /// The CA certificate, PEM: what clients must trust.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
    /// rustls configuration presenting the leaf (and the CA after it).
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Makes a CA and a leaf for `domains` (as DNS subject alternative names).
pub fn generate(domains: &[String]) -> Result<Identity> {
    let ca_key = KeyPair::generate().context("CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "xmpp-loadtest upstream fixture CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).context("CA certificate")?;

    let leaf_key = KeyPair::generate().context("server key")?;
    let mut leaf_params = CertificateParams::new(domains.to_vec()).context("server names")?;
    // CA:FALSE, so a client that (wrongly) accepted a CA as a server certificate is not tested
    // against something it would accept for the wrong reason.
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.distinguished_name.push(
        DnType::CommonName,
        domains.first().map_or("localhost", String::as_str),
    );
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .context("server certificate")?;

    let chain = vec![leaf.der().clone(), ca.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("server certificate and key")?;
    Ok(Identity {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server_config: Arc::new(server_config),
    })
}

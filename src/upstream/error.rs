//! Why an upstream stream could not be had or went away, with the low-cardinality kind each
//! failure is counted under. What a client is told for each is decided once, in the session
//! core (`session::Failure::condition`).

use crate::xml::XmlError;

/// Why an upstream stream could not be had or went away.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The client named a domain the operator did not configure.
    #[error("domain is not served here")]
    UnknownDomain,
    /// DNS resolution failed or found nothing.
    #[error("resolution failed: {0}")]
    Resolve(String),
    /// No endpoint accepted a connection.
    #[error("connection to {endpoint} failed: {reason}")]
    Connect {
        /// The endpoint that failed last.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// TLS could not be set up or the certificate did not verify.
    #[error("TLS with upstream failed: {0}")]
    Tls(String),
    /// The route requires TLS and the server offered none.
    #[error("upstream offers no STARTTLS but the route requires TLS")]
    TlsUnavailable,
    /// Every endpoint of the route is down and being probed (the circuit breaker is open).
    #[error("every endpoint of the route is down")]
    AllDown,
    /// An endpoint took longer than the connect timeout.
    #[error("upstream did not answer within the connect timeout")]
    Timeout,
    /// Reading or writing the upstream socket failed.
    #[error("upstream I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent XML the gateway will not pass on.
    #[error("upstream sent bad XML: {0}")]
    Xml(#[from] XmlError),
    /// The server broke the stream protocol (for example no features after the header).
    #[error("upstream protocol error: {0}")]
    Protocol(&'static str),
    /// The server ended the stream with a stream error (the `<stream:error/>` element).
    #[error("upstream stream error")]
    StreamError(bytes::Bytes),
    /// The TLS configuration (CA file) is unusable.
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl UpstreamError {
    /// Low-cardinality kind for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::UnknownDomain => "unknown_domain",
            UpstreamError::Resolve(_) => "dns",
            UpstreamError::Connect { .. } => "tcp",
            UpstreamError::Tls(_) | UpstreamError::TlsUnavailable | UpstreamError::Config(_) => {
                "tls"
            }
            UpstreamError::Timeout => "timeout",
            UpstreamError::AllDown => "all_down",
            UpstreamError::Io(_) => "io",
            UpstreamError::Xml(_) | UpstreamError::Protocol(_) | UpstreamError::StreamError(_) => {
                "stream"
            }
        }
    }
}

//! Why a session could not open or could not go on, and the one mapping from each failure to
//! the condition the client is told (RFC 6120 §4.9.3 stream error conditions; the BOSH adapter
//! names the same conditions in its terminate bodies, docs/protocol.md §4).

use bytes::Bytes;

use crate::upstream::UpstreamError;

/// A failure of the session core.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The client named no domain (`to` missing or empty).
    #[error("no domain named")]
    NoDomain,
    /// A stream restart named another domain than the session serves.
    #[error("restart names another domain")]
    WrongDomain,
    /// The browser sent faster than its rate limits allow, in `close` mode (docs/protocol.md
    /// §7).
    #[error("the browser sent faster than its rate limits")]
    RateExceeded,
    /// The process buffers more than `limits.max_buffered_bytes_total` and this session holds
    /// more than its share: one of the slowest readers, cut (docs/protocol.md §7).
    #[error("the gateway's buffers are full and this session holds more than its share")]
    OverCeiling,
    /// Opening, reading or writing the upstream stream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl Failure {
    /// The condition the client is told: `host-unknown` for a domain the gateway does not
    /// serve (docs/protocol.md §1: never an open relay), `remote-connection-failed` for an
    /// upstream server that cannot be reached or whose stream broke, whatever the cause.
    pub fn condition(&self) -> &'static str {
        match self {
            Failure::NoDomain | Failure::WrongDomain => "host-unknown",
            Failure::RateExceeded | Failure::OverCeiling => "policy-violation",
            Failure::Upstream(UpstreamError::UnknownDomain) => "host-unknown",
            Failure::Upstream(_) => "remote-connection-failed",
        }
    }

    /// The server's own `<stream:error/>`, which the client is shown instead of a condition of
    /// the gateway's.
    pub fn server_error(&self) -> Option<&Bytes> {
        match self {
            Failure::Upstream(UpstreamError::StreamError(e)) => Some(e),
            _ => None,
        }
    }

    /// The session end reason (a metrics label) for a session this failure ends.
    pub fn end_reason(&self) -> &'static str {
        match self {
            Failure::NoDomain | Failure::WrongDomain => "bad_input",
            Failure::RateExceeded => "rate_limited",
            Failure::OverCeiling => "slow_reader",
            Failure::Upstream(UpstreamError::StreamError(_)) => "upstream_stream_error",
            Failure::Upstream(_) => "upstream_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::XmlError;

    // One mapping for both transports: the same failure is the same condition everywhere.
    #[test]
    fn each_failure_has_one_condition() {
        let io = || UpstreamError::Io(std::io::ErrorKind::UnexpectedEof.into());
        let cases = [
            (Failure::NoDomain, "host-unknown", "bad_input"),
            (Failure::WrongDomain, "host-unknown", "bad_input"),
            (
                Failure::Upstream(UpstreamError::UnknownDomain),
                "host-unknown",
                "upstream_error",
            ),
            (
                Failure::Upstream(io()),
                "remote-connection-failed",
                "upstream_error",
            ),
            (
                Failure::Upstream(UpstreamError::Xml(XmlError::TooDeep)),
                "remote-connection-failed",
                "upstream_error",
            ),
            (
                Failure::Upstream(UpstreamError::Timeout),
                "remote-connection-failed",
                "upstream_error",
            ),
        ];
        for (failure, condition, reason) in cases {
            assert_eq!(failure.condition(), condition, "{failure:?}");
            assert_eq!(failure.end_reason(), reason, "{failure:?}");
            assert!(failure.server_error().is_none());
        }
        let e = Failure::Upstream(UpstreamError::StreamError(Bytes::from_static(b"<x/>")));
        assert_eq!(e.server_error().map(|b| &b[..]), Some(&b"<x/>"[..]));
        assert_eq!(e.end_reason(), "upstream_stream_error");
    }
}

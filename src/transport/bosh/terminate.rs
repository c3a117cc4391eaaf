//! How a BOSH session ends (XEP-0124 §17): the condition and the `type='terminate'` body that
//! tells the client, with the server's error or the redirect it carries.

use bytes::Bytes;

use crate::session::{Failure, StreamEnd};

/// Why a session is terminated (XEP-0124 §17.2 conditions, or none for a plain terminate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminate {
    /// Client asked for it, or the server closed the stream.
    Normal,
    /// A protocol condition such as `item-not-found` or `policy-violation`.
    Condition(&'static str),
    /// The upstream server sent a stream error (carried in the body).
    RemoteStreamError(Bytes),
    /// The node drains and the client should reconnect at this URI (XEP-0124 §17.3).
    SeeOtherUri(String),
}

impl Terminate {
    /// The terminate body's condition for a failure of the session core: the same condition a
    /// WebSocket client gets (`Failure::condition`), except that XEP-0124 §17.2 has a name of
    /// its own for a session request without `to` (`improper-addressing`) and carries the
    /// server's stream error as `remote-stream-error`.
    pub fn from_failure(failure: &Failure) -> Self {
        if let Some(e) = failure.server_error() {
            return Terminate::RemoteStreamError(e.clone());
        }
        match failure {
            Failure::NoDomain => Terminate::Condition("improper-addressing"),
            other => Terminate::Condition(other.condition()),
        }
    }

    /// How the session ends when the upstream stream did.
    pub fn from_end(end: StreamEnd) -> Self {
        match end {
            StreamEnd::Closed => Terminate::Normal,
            StreamEnd::Error(e) => Terminate::RemoteStreamError(e),
            StreamEnd::Failed(f) => Terminate::from_failure(&f),
        }
    }
}

/// The terminate body for `why`: its condition, and the server's `<stream:error/>` or the
/// redirect's `<uri/>` where there is one. It never carries stanzas (docs/protocol.md §4,
/// ending a session).
pub fn terminate_body(why: &Terminate) -> Bytes {
    let mut s = String::from("<body xmlns='http://jabber.org/protocol/httpbind' xmlns:stream='http://etherx.jabber.org/streams' type='terminate'");
    match why {
        Terminate::Normal => {}
        Terminate::Condition(c) => s.push_str(&format!(" condition='{c}'")),
        Terminate::RemoteStreamError(_) => s.push_str(" condition='remote-stream-error'"),
        Terminate::SeeOtherUri(_) => s.push_str(" condition='see-other-uri'"),
    }
    let detail = match why {
        Terminate::RemoteStreamError(e) => e.clone(),
        Terminate::SeeOtherUri(uri) => {
            Bytes::from(format!("<uri>{}</uri>", crate::xml::escape_attr(uri)))
        }
        _ => {
            s.push_str("/>");
            return Bytes::from(s);
        }
    };
    s.push('>');
    let mut bytes = s.into_bytes();
    bytes.extend_from_slice(&detail);
    bytes.extend_from_slice(b"</body>");
    Bytes::from(bytes)
}

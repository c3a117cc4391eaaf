//! How a BOSH session ends (XEP-0124 §17): the condition and the `type='terminate'` body that
//! tells the client, with the redirect it carries for `see-other-uri`.

use bytes::Bytes;

use crate::session::{Failure, StreamEnd};

/// Why a session is terminated (XEP-0124 §17.2 conditions, or none for a plain terminate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminate {
    /// Client asked for it, or the server closed the stream.
    Normal,
    /// A protocol condition such as `item-not-found` or `policy-violation`.
    Condition(&'static str),
    /// The upstream server sent a stream error. The body names the condition only: stanza's
    /// BOSH transport never reports the end of a session whose terminate body has a child it
    /// knows, such as the `<stream:error/>` (docs/protocol.md §4, upstream failures).
    RemoteStreamError,
    /// The node drains and the client should reconnect at this URI (XEP-0124 §17.3).
    SeeOtherUri(String),
}

impl Terminate {
    /// The terminate body's condition for a failure of the session core: the same condition a
    /// WebSocket client gets (`Failure::condition`), except that XEP-0124 §17.2 has a name of
    /// its own for a session request without `to` (`improper-addressing`) and reports the
    /// server's stream error as `remote-stream-error`.
    pub fn from_failure(failure: &Failure) -> Self {
        if failure.server_error().is_some() {
            return Terminate::RemoteStreamError;
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
            StreamEnd::Error(_) => Terminate::RemoteStreamError,
            StreamEnd::Failed(f) => Terminate::from_failure(&f),
        }
    }
}

/// The terminate body for `why`: its condition, and the redirect's `<uri/>` for
/// `see-other-uri`. It never carries stanzas (docs/protocol.md §4, ending a session).
pub fn terminate_body(why: &Terminate) -> Bytes {
    let mut s = String::from("<body xmlns='http://jabber.org/protocol/httpbind' xmlns:stream='http://etherx.jabber.org/streams' type='terminate'");
    match why {
        Terminate::Normal => {}
        Terminate::Condition(c) => s.push_str(&format!(" condition='{c}'")),
        Terminate::RemoteStreamError => s.push_str(" condition='remote-stream-error'"),
        Terminate::SeeOtherUri(_) => s.push_str(" condition='see-other-uri'"),
    }
    let Terminate::SeeOtherUri(uri) = why else {
        s.push_str("/>");
        return Bytes::from(s);
    };
    s.push_str(&format!(
        "><uri>{}</uri></body>",
        crate::xml::escape_attr(uri)
    ));
    Bytes::from(s)
}

//! RFC 7395 framing toward the browser: the `<open/>` that stands for a server stream header,
//! `<close/>`, stream errors (a standalone `<stream:error/>` followed by `<close/>`), and how a
//! refused input or a binary frame is answered. Every element goes out as one text message.

use bytes::Bytes;
use futures_util::SinkExt;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::metrics::METRICS;
use crate::session::Failure;
use crate::settings::Settings;
use crate::xml::split::StreamHeader;
use crate::xml::{escape_attr, push_attr, XmlError};

/// The browser's WebSocket, over the upgraded HTTP connection.
pub type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// `<close/>` (RFC 7395 §3.6).
pub const CLOSE: &[u8] = b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";

/// The framing `<open/>` for a server stream header (RFC 7395 §3.4).
pub fn open_element(h: &StreamHeader, domain: &str) -> String {
    let mut s = String::with_capacity(160);
    s.push_str("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'");
    push_attr(&mut s, "from", Some(h.from.as_deref().unwrap_or(domain)));
    push_attr(&mut s, "id", h.id.as_deref());
    push_attr(&mut s, "version", Some("1.0"));
    push_attr(&mut s, "xml:lang", h.lang.as_deref());
    s.push_str("/>");
    s
}

/// One element as a text message.
pub fn text_message(b: Bytes) -> Message {
    // Elements come from the validating splitter, so this check never fails in practice; an
    // invalid sequence would become an empty frame rather than a panic.
    Message::Text(b.try_into().unwrap_or_default())
}

/// Sends one element as a text message.
pub async fn send_text(ws: &mut Ws, b: Bytes) -> Result<(), WsError> {
    ws.send(text_message(b)).await
}

/// How a closing stream ends toward the client.
#[derive(Clone, Copy, Debug)]
pub enum Ending {
    /// A plain `<close/>` (either side closed).
    Close,
    /// The node drains: `see-other-uri` where configured, else `system-shutdown`.
    Drain,
}

/// Sends the client's last words and closes the WebSocket (RFC 7395 §3.6). Returns the end
/// reason.
pub async fn finish(ws: &mut Ws, ending: Ending, settings: &Settings) -> &'static str {
    match ending {
        Ending::Close => {
            let _ = send_text(ws, Bytes::from_static(CLOSE)).await;
            let _ = ws.close(None).await;
            "closed"
        }
        Ending::Drain => {
            match &settings.config.drain.websocket_redirect {
                // RFC 7395 §3.6.1: see-other-uri on <close/> moves the client elsewhere.
                Some(uri) => {
                    let close = format!(
                        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing' see-other-uri='{}'/>",
                        escape_attr(uri)
                    );
                    let _ = send_text(ws, Bytes::from(close)).await;
                    let _ = ws.close(None).await;
                }
                None => {
                    let _ = stream_error(ws, "system-shutdown", None).await;
                }
            }
            "shutdown"
        }
    }
}

/// Sends a stream error, `<close/>`, and closes the WebSocket (RFC 7395 §3.6.1). Before the
/// stream is open (`before_open` names the domain), an `<open/>` goes first, as RFC 6120
/// §4.9.1.2 asks.
pub async fn stream_error(
    ws: &mut Ws,
    condition: &str,
    before_open: Option<&str>,
) -> Result<(), WsError> {
    let el = format!(
        "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    );
    send_error_element(ws, Bytes::from(el), before_open).await
}

/// Tells the client about a failure of the session core: the server's own stream error where
/// it sent one, else the failure's condition.
pub async fn failure(ws: &mut Ws, failure: &Failure, before_open: Option<&str>) {
    let _ = match failure.server_error() {
        Some(el) => send_error_element(ws, el.clone(), before_open).await,
        None => stream_error(ws, failure.condition(), before_open).await,
    };
}

/// Sends a complete `<stream:error/>` element, `<close/>`, and closes the WebSocket.
pub async fn send_error_element(
    ws: &mut Ws,
    el: Bytes,
    before_open: Option<&str>,
) -> Result<(), WsError> {
    if let Some(domain) = before_open {
        let h = StreamHeader {
            id: Some(format!("{:016x}", rand::random::<u64>())),
            ..Default::default()
        };
        ws.feed(text_message(open_element(&h, domain).into()))
            .await?;
    }
    ws.feed(text_message(el)).await?;
    ws.feed(text_message(Bytes::from_static(CLOSE))).await?;
    ws.flush().await?;
    ws.close(None).await
}

/// A refused input: counted, logged, answered with its stream error.
pub async fn reject(ws: &mut Ws, e: &XmlError) {
    tracing::info!(reason = e.reason(), "client input refused");
    METRICS.input_rejected(e.reason());
    let _ = stream_error(ws, e.condition(), None).await;
}

/// docs/protocol.md §3: text frames only.
pub async fn binary_refused(ws: &mut Ws) {
    METRICS.input_rejected("binary_frame");
    let _ = stream_error(ws, "unsupported-encoding", None).await;
    let _ = ws
        .close(Some(CloseFrame {
            code: CloseCode::Unsupported,
            reason: "text frames only".into(),
        }))
        .await;
}

//! The WebSocket upgrade (RFC 7395 §3.1–3.3): the request must be a version-13 upgrade that
//! asks for the subprotocol `xmpp`, from an allowed origin, on a node that is not draining.
//! Anything else is an HTTP error with a plain-text reason; an accepted upgrade starts the
//! session task.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use super::task;
use crate::client_addr::ClientAddr;
use crate::http::{text, Body};
use crate::metrics::{Transport, METRICS};
use crate::session::{next_session_id, Context};
use crate::settings::Settings;

/// Answers the upgrade request and starts the session task. `peer` is the client's address
/// (docs/protocol.md §7); `permit` (the connection's slot) is held until the session ends.
pub fn upgrade<P: Send + 'static>(
    req: Request<Incoming>,
    ctx: Context,
    peer: ClientAddr,
    permit: P,
) -> Response<Body> {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if req.method() != http::Method::GET
        || !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
    {
        return text(
            StatusCode::BAD_REQUEST,
            "this endpoint only accepts WebSocket upgrades\n",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .body(Full::new(Bytes::from_static(
                b"unsupported WebSocket version; use 13\n",
            )))
            .expect("static response parts are valid");
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    // RFC 7395 §3.1: the subprotocol `xmpp` is mandatory and echoed.
    if !has_token(header::SEC_WEBSOCKET_PROTOCOL, "xmpp") {
        METRICS.input_rejected("no_subprotocol");
        return text(
            StatusCode::BAD_REQUEST,
            "WebSocket subprotocol 'xmpp' is required (RFC 7395)\n",
        );
    }
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .unwrap_or("");
    if ctx.shutdown.is_stopping() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining; connect to another node\n",
        );
    }
    let allowed = &ctx.settings.config.websocket.allowed_origins;
    if !allowed.is_empty() && !allowed.iter().any(|a| a == origin) {
        tracing::info!(%peer, origin, "WebSocket origin refused");
        METRICS.input_rejected("origin");
        return text(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    if !origin.is_empty() && allowed.is_empty() {
        tracing::debug!(%peer, origin, "WebSocket session from origin");
    }
    // docs/protocol.md §7: refused before the upgrade, so the refusal costs no upstream
    // connection and a load balancer can send the client elsewhere.
    let slot = match ctx.admit(peer.ip(), Transport::WebSocket) {
        Ok(slot) => slot,
        Err(refusal) => {
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many sessions; try again later\n",
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(refusal.retry_after_secs()),
            );
            return r;
        }
    };
    let accept = derive_accept_key(key.as_bytes());
    let tracker = ctx.shutdown.clone();
    // Boxed, like the session's start: the upgrade and the request are needed once, and a task
    // keeps room for all it holds for the session's whole life.
    let upgrade = Box::pin(hyper::upgrade::on(req));
    tracker.spawn(async move {
        // The session's place under the caps is given back when the task ends.
        match upgrade.await {
            Ok(upgraded) => {
                let ws = Box::new(
                    WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(ws_config(&ctx.settings)),
                    )
                    .await,
                );
                let id = next_session_id();
                let span = tracing::info_span!("session", id, transport = "websocket", %peer);
                task::run(ws, ctx, slot, peer).instrument(span).await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "upgrade failed"),
        }
        drop(permit);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a valid header"),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, "xmpp")
        .body(Full::new(Bytes::new()))
        .expect("static response parts are valid")
}

/// What tungstenite reads into at a time. It zero-fills this much before every read and
/// allocates it again after every frame, and an idle session holds it: a typical stanza frame
/// (a few hundred bytes) fits, a larger frame is read whole once its header is known.
/// docs/PERFORMANCE.md has the figures (4096 cost 1,500 instructions per read in memset alone).
const READ_BUFFER_BYTES: usize = 1024;

/// tungstenite's defaults allocate 128 KiB buffers per connection; a session needs a few KiB.
fn ws_config(settings: &Settings) -> WebSocketConfig {
    let limits = &settings.config.limits;
    let max = limits.max_stanza_bytes;
    // Room for the largest element the server may send (with the declarations it gains and
    // its frame header) even behind a full batch: tungstenite refuses a message that would
    // not fit.
    let max_write = limits
        .max_buffered_bytes
        .max(limits.max_upstream_stanza_bytes)
        + 64 * 1024;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(max_write)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

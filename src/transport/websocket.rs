//! XMPP over WebSocket (RFC 7395, PROTOCOL.md §3): the HTTP upgrade with subprotocol `xmpp`,
//! then one task per connection that turns framing elements (`<open/>`, `<close/>`) into
//! upstream stream headers and back, and relays every other element unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::http::{text, Body};
use crate::metrics::METRICS;
use crate::server::{ConnectionPermit, Gateway, Settings};
use crate::session::{next_session_id, Outbound, Session, Transport};
use crate::upstream::stream::StreamParams;
use crate::upstream::UpstreamError;
use crate::xml::client::{parse_client_frame, ClientFrame, OpenFrame};
use crate::xml::split::StreamHeader;
use crate::xml::{escape_attr, push_attr, XmlError};

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How long the upstream gets to answer a `<close/>` before the WebSocket is closed anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Answers the upgrade request and starts the session task (RFC 7395 §3.1–3.3).
pub fn upgrade(
    req: Request<Incoming>,
    gw: Arc<Gateway>,
    peer: SocketAddr,
    permit: ConnectionPermit,
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
    if gw.shutdown.is_stopping() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining; connect to another node\n",
        );
    }
    let settings = gw.settings();
    let allowed = &settings.config.websocket.allowed_origins;
    if !allowed.is_empty() && !allowed.iter().any(|a| a == origin) {
        tracing::info!(%peer, origin, "WebSocket origin refused");
        METRICS.input_rejected("origin");
        return text(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let accept = derive_accept_key(key.as_bytes());
    let origin = origin.to_string();
    let task_gw = gw.clone();
    gw.shutdown.spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config(&settings)),
                )
                .await;
                let id = next_session_id();
                let span = tracing::info_span!("session", id, transport = "websocket", %peer);
                run(ws, task_gw, settings, origin).instrument(span).await;
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

/// tungstenite's defaults allocate 128 KiB buffers per connection; a session needs a few KiB.
fn ws_config(settings: &Settings) -> WebSocketConfig {
    let max = settings.config.limits.max_stanza_bytes;
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(settings.config.limits.max_buffered_bytes)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Why a session ended; a metrics label.
type Reason = &'static str;

/// The session from the first `<open/>` to the closing handshake.
async fn run(mut ws: Ws, gw: Arc<Gateway>, settings: Arc<Settings>, origin: String) {
    if !origin.is_empty() && settings.config.websocket.allowed_origins.is_empty() {
        tracing::debug!(origin, "WebSocket session from origin");
    }
    let open_timeout = Duration::from_secs(settings.config.limits.open_timeout_secs);
    let open = tokio::select! {
        r = tokio::time::timeout(open_timeout, first_open(&mut ws, &settings)) => match r {
            Ok(Some(open)) => open,
            Ok(None) => return,
            Err(_) => {
                let _ = stream_error(&mut ws, "connection-timeout", None).await;
                return;
            }
        },
        _ = gw.shutdown.cancelled() => {
            let _ = stream_error(&mut ws, "system-shutdown", None).await;
            return;
        }
    };
    // PROTOCOL.md §1: the client names the domain; only configured domains are served.
    let Some(to) = open.to.clone().filter(|t| !t.is_empty()) else {
        METRICS.input_rejected("no_to");
        let _ = stream_error(&mut ws, "host-unknown", None).await;
        return;
    };
    let params = StreamParams {
        to: to.clone(),
        from: open.from.clone(),
        lang: open.lang.clone(),
    };
    let opened = tokio::select! {
        r = Session::open(&gw, Transport::WebSocket, params) => r,
        _ = gw.shutdown.cancelled() => {
            let _ = stream_error(&mut ws, "system-shutdown", Some(&to)).await;
            return;
        }
    };
    let opened = match opened {
        Ok(o) => o,
        Err(e) => {
            tracing::info!(domain = %to, error = %e, "upstream stream not opened");
            let _ = match e {
                UpstreamError::StreamError(bytes) => {
                    send_error_element(&mut ws, bytes, Some(&to)).await
                }
                other => stream_error(&mut ws, other.condition(), Some(&to)).await,
            };
            return;
        }
    };
    let mut session = opened.session;
    tracing::info!(domain = %to, "session open");
    let first = async {
        send_text(&mut ws, open_element(&opened.header, &to).into()).await?;
        send_text(&mut ws, opened.features).await
    };
    let reason = match first.await {
        Ok(()) => relay(&mut ws, &mut session, &gw, &settings).await,
        Err(_) => "client_gone",
    };
    session.finish(reason).await;
}

/// Waits for the client's first `<open/>`. `None` when the client left or sent something else
/// (which has been answered with a stream error).
async fn first_open(ws: &mut Ws, settings: &Settings) -> Option<OpenFrame> {
    loop {
        let msg = match ws.next().await? {
            Ok(msg) => msg,
            // PROTOCOL.md §2: an oversized frame is refused like any oversized element.
            Err(WsError::Capacity(_)) => {
                reject(ws, &XmlError::TooLarge).await;
                return None;
            }
            Err(_) => return None,
        };
        match msg {
            Message::Text(t) => match parse_client_frame(Bytes::from(t), &settings.xml_limits) {
                Ok(ClientFrame::Open(open)) => return Some(open),
                Ok(ClientFrame::Whitespace) => continue,
                Ok(_) => {
                    // RFC 7395 §3.4: the first element must be <open/>.
                    METRICS.input_rejected("not_open");
                    let _ = stream_error(ws, "invalid-xml", None).await;
                    return None;
                }
                Err(e) => {
                    reject(ws, &e).await;
                    return None;
                }
            },
            Message::Binary(_) => {
                binary_refused(ws).await;
                return None;
            }
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                let _ = ws.flush().await;
            }
        }
    }
}

/// The relay loop: client frames, upstream items, keepalive and drain in one `select!`.
async fn relay(ws: &mut Ws, session: &mut Session, gw: &Gateway, settings: &Settings) -> Reason {
    let interval = settings.config.ping_interval();
    let max_missed = settings.config.websocket.max_missed_pongs;
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut missed = 0u32;
    // Set once the stream is being closed (the client's <close/>, or a drain): the deadline
    // for the server's answer, and what the client is told at the end.
    let mut closing: Option<(Instant, Ending)> = None;
    // A client that stops reading is cut off instead of being buffered without bound.
    let write_timeout = interval * max_missed.max(1);
    loop {
        let close_deadline = async {
            match closing {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = ws.next() => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    // tungstenite refuses a frame over max_stanza_bytes before the XML layer
                    // sees it; PROTOCOL.md §2 wants the same policy-violation as TooLarge.
                    Some(Err(WsError::Capacity(_))) => {
                        reject(ws, &XmlError::TooLarge).await;
                        let _ = session.close_stream().await;
                        return "bad_input";
                    }
                    _ => {
                        // The browser vanished (PROTOCOL.md §3 and §4's note on reloads).
                        session.leave().await;
                        return "client_gone";
                    }
                };
                match msg {
                    Message::Text(t) => {
                        match parse_client_frame(Bytes::from(t), &settings.xml_limits) {
                            // After </stream:stream> went upstream the server reads no more.
                            Ok(ClientFrame::Element(_)) if closing.is_some() => {}
                            Ok(ClientFrame::Element(el)) => {
                                if session.send(&el).await.is_err() {
                                    let _ = stream_error(ws, "remote-connection-failed", None).await;
                                    return "upstream_error";
                                }
                            }
                            Ok(ClientFrame::Open(open)) => {
                                if let Some(reason) = restart(ws, session, open).await {
                                    return reason;
                                }
                            }
                            Ok(ClientFrame::Close { .. }) => {
                                // RFC 7395 §3.6: answer the close; the server closes the socket.
                                if closing.is_none() {
                                    let _ = session.close_stream().await;
                                    closing = Some((Instant::now() + CLOSE_GRACE, Ending::Close));
                                }
                            }
                            Ok(ClientFrame::Whitespace) => {}
                            Err(e) => {
                                reject(ws, &e).await;
                                let _ = session.close_stream().await;
                                return "bad_input";
                            }
                        }
                    }
                    Message::Binary(_) => {
                        binary_refused(ws).await;
                        let _ = session.close_stream().await;
                        return "bad_input";
                    }
                    Message::Pong(_) => missed = 0,
                    Message::Ping(_) | Message::Frame(_) => {
                        // tungstenite queued the pong; push it out now.
                        let _ = ws.flush().await;
                    }
                    Message::Close(_) if closing.is_some() => {
                        // The client sent <close/> and did not wait for the answer: the close
                        // already went upstream.
                        let _ = ws.flush().await;
                        return "closed";
                    }
                    Message::Close(_) => {
                        // A close frame without <close/> (a tab closing): the client is gone.
                        session.leave().await;
                        let _ = ws.flush().await;
                        return "client_close";
                    }
                }
            }
            out = session.next_outbound() => {
                let ending = closing.map_or(Ending::Close, |(_, e)| e);
                let write = tokio::time::timeout(write_timeout, forward(ws, session, out, ending, settings));
                match write.await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::End(reason)) => return reason,
                    Err(_) => {
                        METRICS.input_rejected("slow_reader");
                        session.leave().await;
                        return "slow_reader";
                    }
                }
            }
            _ = ping.tick() => {
                if missed >= max_missed {
                    METRICS.websocket_pings_missed.inc();
                    tracing::info!(missed, "pings unanswered; closing");
                    session.leave().await;
                    let _ = ws.close(Some(CloseFrame { code: CloseCode::Away, reason: "ping timeout".into() })).await;
                    return "ping_timeout";
                }
                missed += 1;
                if ws.send(Message::Ping(Bytes::new())).await.is_err() {
                    session.leave().await;
                    return "client_gone";
                }
            }
            _ = close_deadline => {
                let ending = closing.map_or(Ending::Close, |(_, e)| e);
                return finish(ws, ending, settings).await;
            }
            _ = gw.shutdown.cancelled(), if closing.is_none() => {
                // PROTOCOL.md §6: a resumable stream is left to the server, which keeps what
                // is in flight for the client's <resume/> through another node. Any other
                // stream is closed first and relayed until the server's close, so stanzas
                // already on their way still reach the client; then the client is told where
                // to go.
                if session.is_resumable() {
                    session.leave().await;
                    return finish(ws, Ending::Drain, settings).await;
                }
                let _ = session.close_stream().await;
                closing = Some((Instant::now() + CLOSE_GRACE, Ending::Drain));
            }
        }
    }
}

enum Flow {
    Continue,
    End(Reason),
}

/// How a closing stream ends toward the client.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// A plain `<close/>` (either side closed).
    Close,
    /// The node drains: `see-other-uri` where configured, else `system-shutdown`.
    Drain,
}

/// Sends the client's last words and closes the WebSocket (RFC 7395 §3.6).
async fn finish(ws: &mut Ws, ending: Ending, settings: &Settings) -> Reason {
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

/// Writes one upstream item, and any already buffered behind it, with one flush.
async fn forward(
    ws: &mut Ws,
    session: &mut Session,
    first: Result<Outbound, UpstreamError>,
    ending: Ending,
    settings: &Settings,
) -> Flow {
    let mut next = Some(first);
    while let Some(item) = next.take() {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                tracing::info!(error = %e, "upstream stream failed");
                let condition = match &e {
                    UpstreamError::Xml(_) => "undefined-condition",
                    _ => "remote-connection-failed",
                };
                let _ = stream_error(ws, condition, None).await;
                return Flow::End("upstream_error");
            }
        };
        let sent = match item {
            Outbound::Element(b) | Outbound::Features(b) => ws.feed(text_message(b)).await,
            Outbound::Header(h) => {
                ws.feed(text_message(open_element(&h, session.domain()).into()))
                    .await
            }
            Outbound::StreamError(b) => {
                tracing::info!("upstream stream error");
                // RFC 6120 §4.9.1.1: the stream error is followed by closing the stream.
                let _ = session.close_stream().await;
                let _ = send_error_element(ws, b, None).await;
                return Flow::End("upstream_stream_error");
            }
            Outbound::End => {
                // Either the answer to the client's <close/> or the server leaving first; both
                // are answered with <close/> and the WebSocket is closed by us (RFC 7395 §3.6).
                let _ = session.close_stream().await;
                return Flow::End(finish(ws, ending, settings).await);
            }
        };
        if sent.is_err() {
            session.leave().await;
            return Flow::End("client_gone");
        }
        next = session.buffered_outbound().transpose();
    }
    if ws.flush().await.is_err() {
        session.leave().await;
        return Flow::End("client_gone");
    }
    Flow::Continue
}

/// A new `<open/>` after SASL success restarts the upstream stream (RFC 7395 §3.5); the
/// server's new header reaches the client through the relay loop.
async fn restart(ws: &mut Ws, session: &mut Session, open: OpenFrame) -> Option<Reason> {
    if let Some(to) = &open.to {
        if !to.eq_ignore_ascii_case(session.domain()) {
            METRICS.input_rejected("restart_domain");
            let _ = stream_error(ws, "host-unknown", None).await;
            let _ = session.close_stream().await;
            return Some("bad_input");
        }
    }
    if session.restart(open.from, open.lang).await.is_err() {
        let _ = stream_error(ws, "remote-connection-failed", None).await;
        return Some("upstream_error");
    }
    None
}

const CLOSE: &[u8] = b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";

/// The framing `<open/>` for a server stream header (RFC 7395 §3.4).
fn open_element(h: &StreamHeader, domain: &str) -> String {
    let mut s = String::with_capacity(160);
    s.push_str("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'");
    push_attr(&mut s, "from", Some(h.from.as_deref().unwrap_or(domain)));
    push_attr(&mut s, "id", h.id.as_deref());
    push_attr(&mut s, "version", Some("1.0"));
    push_attr(&mut s, "xml:lang", h.lang.as_deref());
    s.push_str("/>");
    s
}

fn text_message(b: Bytes) -> Message {
    // Elements come from the validating splitter, so this check never fails in practice; an
    // invalid sequence would become an empty frame rather than a panic.
    Message::Text(b.try_into().unwrap_or_default())
}

async fn send_text(ws: &mut Ws, b: Bytes) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    ws.send(text_message(b)).await
}

/// Sends a stream error, `<close/>`, and closes the WebSocket (RFC 7395 §3.6.1). Before the
/// stream is open, an `<open/>` goes first, as RFC 6120 §4.9.1.2 asks.
async fn stream_error(
    ws: &mut Ws,
    condition: &str,
    before_open: Option<&str>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let el = format!(
        "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    );
    send_error_element(ws, Bytes::from(el), before_open).await
}

async fn send_error_element(
    ws: &mut Ws,
    el: Bytes,
    before_open: Option<&str>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
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

async fn reject(ws: &mut Ws, e: &XmlError) {
    tracing::info!(reason = e.reason(), "client input refused");
    METRICS.input_rejected(e.reason());
    let _ = stream_error(ws, e.condition(), None).await;
}

/// PROTOCOL.md §3: text frames only.
async fn binary_refused(ws: &mut Ws) {
    METRICS.input_rejected("binary_frame");
    let _ = stream_error(ws, "unsupported-encoding", None).await;
    let _ = ws
        .close(Some(CloseFrame {
            code: CloseCode::Unsupported,
            reason: "text frames only".into(),
        }))
        .await;
}

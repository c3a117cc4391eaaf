//! One task per WebSocket session: wait for the first `<open/>`, open the session, then relay in
//! one `select!` over browser messages, upstream batches, keepalive pings, the closing deadline
//! and the drain, until the closing handshake (RFC 7395 §3.4–3.6).

use std::time::Duration;

use bytes::Bytes;
use std::task::Poll;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;

use super::framing::{
    binary_refused, failure, finish, open_element, reject, send_error_element, send_text,
    stream_error, text_message, Ending, Ws,
};
use crate::admission::Slot;
use crate::deadline::is_timed_out;
use crate::metrics::{Transport, METRICS};
use crate::session::{
    sleep_until_some, Batch, Context, Drain, Event, Failure, OpenRequest, Outbound, Session,
    StreamEnd,
};
use crate::settings::Settings;
use crate::xml::client::{parse_client_frame, ClientFrame, OpenFrame};
use crate::xml::XmlError;

/// How long the upstream gets to answer a `<close/>` before the WebSocket is closed anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Why a session ended; a metrics label.
type Reason = &'static str;

/// The session from the first `<open/>` to the closing handshake.
///
/// The task keeps room for the largest state it can be in for the session's whole life, so
/// what only the start needs (the first `<open/>`, dialling and negotiating the server's
/// stream) runs in a boxed future of its own, and the WebSocket is boxed (docs/PERFORMANCE.md,
/// "Commits compared").
pub async fn run(ws: Box<Ws>, ctx: Context, mut slot: Slot) {
    let mut ws = ws;
    let Some(mut session) = Box::pin(start(&mut ws, &ctx)).await else {
        return;
    };
    let reason = relay(&mut ws, &mut session, &ctx, &mut slot).await;
    Box::pin(session.finish(reason)).await;
}

/// Waits for the first `<open/>`, opens the session and answers with `<open/>` and the
/// server's features; `None` when the session ended before that (the browser was told).
async fn start(ws: &mut Ws, ctx: &Context) -> Option<Session> {
    let settings = &ctx.settings;
    let open_timeout = Duration::from_secs(settings.config.limits.open_timeout_secs);
    let open = tokio::select! {
        r = tokio::time::timeout(open_timeout, first_open(ws, settings)) => match r {
            Ok(Some(open)) => open,
            Ok(None) => return None,
            Err(_) => {
                let _ = stream_error(ws, "connection-timeout", None).await;
                return None;
            }
        },
        _ = ctx.shutdown.cancelled() => {
            let _ = stream_error(ws, "system-shutdown", None).await;
            return None;
        }
    };
    let domain = open.to.clone().unwrap_or_default();
    // Before the stream is open, errors follow an <open/> naming the domain (RFC 6120
    // §4.9.1.2), when there is one.
    let before_open = (!domain.is_empty()).then_some(domain.as_str());
    let request = OpenRequest {
        to: open.to,
        from: open.from,
        lang: open.lang,
    };
    let opened = tokio::select! {
        r = Session::open(settings, Transport::WebSocket, request) => r,
        _ = ctx.shutdown.cancelled() => {
            let _ = stream_error(ws, "system-shutdown", before_open).await;
            return None;
        }
    };
    let opened = match opened {
        Ok(o) => o,
        Err(e) => {
            failure(ws, &e, before_open).await;
            return None;
        }
    };
    let mut session = opened.session;
    let first = async {
        send_text(ws, open_element(&opened.header, &domain).into()).await?;
        send_text(ws, opened.features).await
    };
    match first.await {
        Ok(()) => Some(session),
        Err(_) => {
            session.leave().await;
            session.finish("client_gone").await;
            None
        }
    }
}

async fn first_open(ws: &mut Ws, settings: &Settings) -> Option<OpenFrame> {
    loop {
        let msg = match ws.next().await? {
            Ok(msg) => msg,
            // docs/protocol.md §2: an oversized frame is refused like any oversized element.
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

/// The relay loop: client frames, upstream batches, keepalive and drain in one `select!`.
///
/// docs/protocol.md §7: no branch waits on a peer. Frames for the browser are handed to the
/// WebSocket and written by the same poll that reads from it ([`browser`]); what the browser
/// sends is queued for the server and written while the loop waits on the server. So a peer
/// that stops reading holds up nothing but what is meant for it: pings, the closing deadline
/// and the drain fire meanwhile, and the write deadline cuts it.
async fn relay(ws: &mut Ws, session: &mut Session, ctx: &Context, slot: &mut Slot) -> Reason {
    let settings = &ctx.settings;
    let interval = settings.config.ping_interval();
    let max_missed = settings.config.websocket.max_missed_pongs;
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut missed = 0u32;
    // Set once the stream is being closed (the client's <close/>, or a drain): the deadline
    // for the server's answer, and what the client is told at the end.
    let mut closing: Option<(Instant, Ending)> = None;
    let batch_bytes = settings.config.limits.max_buffered_bytes;
    // Frames handed to the WebSocket and not yet written to the browser: until they are, the
    // server's next batch waits (TCP pushes back on the server), but what the browser sent
    // still goes out to it.
    let mut unflushed = false;
    // Made once: a wait on the drain registers with the one notifier every session shares, and
    // doing that on each turn of the loop took its lock twice per stanza.
    let drain = ctx.shutdown.cancelled();
    tokio::pin!(drain);
    loop {
        let close_deadline = sleep_until_some(closing.map(|(at, _)| at));
        // docs/protocol.md §7: a browser over its rate limits, or with as much queued for a
        // server that does not take it as a session may hold, is not read until that changes;
        // everything else (the server's stanzas, pings, the drain) goes on.
        let paused = session.paused_until();
        let resume = sleep_until_some(paused);
        let reading = paused.is_none() && session.accepts_input();
        let from_server = !unflushed;
        let to_server = unflushed && session.has_output();
        tokio::select! {
            _ = resume => {}
            event = browser(ws, reading, unflushed), if reading || unflushed => {
                let msg = match event {
                    Browser::Flushed(Ok(())) => {
                        unflushed = false;
                        continue;
                    }
                    Browser::Flushed(Err(e)) => return write_failed(session, &e).await,
                    Browser::Read(msg) => msg,
                };
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    // tungstenite refuses a frame over max_stanza_bytes before the XML layer
                    // sees it; docs/protocol.md §2 wants the same policy-violation as TooLarge.
                    Some(Err(WsError::Capacity(_))) => {
                        reject(ws, &XmlError::TooLarge).await;
                        return "bad_input";
                    }
                    // A read also writes (the pong tungstenite owes): the write deadline can
                    // end it, as it ends a flush.
                    Some(Err(e @ WsError::Io(_))) => return write_failed(session, &e).await,
                    _ => {
                        // The browser vanished (docs/protocol.md §3 and §4's note on reloads).
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
                                if let Err(e) = session.send(&el) {
                                    failure(ws, &e, None).await;
                                    return e.end_reason();
                                }
                                // A full queue counts toward the process's ceiling at once.
                                if !session.accepts_input() && over_ceiling(slot, session, settings) {
                                    return cut_over_ceiling(ws, session).await;
                                }
                            }
                            // Nor a new stream header behind the closing tag.
                            Ok(ClientFrame::Open(_)) if closing.is_some() => {}
                            Ok(ClientFrame::Open(open)) => {
                                // RFC 7395 §3.5: a new <open/> after SASL success restarts the
                                // stream; the server's new header comes through the relay.
                                let request = OpenRequest { to: open.to, from: open.from, lang: open.lang };
                                if let Err(e) = session.restart(request) {
                                    failure(ws, &e, None).await;
                                    return e.end_reason();
                                }
                            }
                            Ok(ClientFrame::Close { .. }) => {
                                // RFC 7395 §3.6: answer the close; the server closes the socket.
                                if closing.is_none() {
                                    session.close_stream();
                                    closing = Some((Instant::now() + CLOSE_GRACE, Ending::Close));
                                }
                            }
                            Ok(ClientFrame::Whitespace) => {}
                            Err(e) => {
                                reject(ws, &e).await;
                                return "bad_input";
                            }
                        }
                    }
                    Message::Binary(_) => {
                        binary_refused(ws).await;
                        return "bad_input";
                    }
                    Message::Pong(_) => missed = 0,
                    // tungstenite queued the pong; the next poll writes it.
                    Message::Ping(_) | Message::Frame(_) => unflushed = true,
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
            next = session.next_event(from_server, batch_bytes), if from_server || to_server => {
                let batch = match next {
                    Event::Batch(batch) => batch,
                    Event::Written(Ok(())) => {
                        // The queue that filled up is written: its report goes down again.
                        if over_ceiling(slot, session, settings) {
                            return cut_over_ceiling(ws, session).await;
                        }
                        continue;
                    }
                    Event::Written(Err(e)) => {
                        failure(ws, &e, None).await;
                        return e.end_reason();
                    }
                };
                let ending = closing.map_or(Ending::Close, |(_, e)| e);
                // A client that stops reading fails the write after limits.write_timeout_secs
                // (every socket has that deadline); meanwhile it is given no more.
                match forward(ws, batch, ending, settings).await {
                    Forwarded::Continue { handed } => unflushed |= handed,
                    Forwarded::End(reason) => return reason,
                    Forwarded::WriteFailed(e) => return write_failed(session, &e).await,
                }
                if over_ceiling(slot, session, settings) {
                    return cut_over_ceiling(ws, session).await;
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
                if let Err(e) = ws.start_send_unpin(Message::Ping(Bytes::new())) {
                    return write_failed(session, &e).await;
                }
                unflushed = true;
            }
            _ = close_deadline => {
                let ending = closing.map_or(Ending::Close, |(_, e)| e);
                return finish(ws, ending, settings).await;
            }
            _ = &mut drain, if closing.is_none() => {
                // docs/protocol.md §6: a resumable stream is left to the server; any other is
                // closed first and relayed until the server's close, so stanzas already on
                // their way still reach the client; then the client is told where to go.
                match session.drain().await {
                    Drain::Left => return finish(ws, Ending::Drain, settings).await,
                    Drain::Close => {
                        session.close_stream();
                        closing = Some((Instant::now() + CLOSE_GRACE, Ending::Drain));
                    }
                }
            }
        }
    }
}

/// docs/protocol.md §7: reports what the session holds; past the process's ceiling, the
/// sessions holding the most are cut.
fn over_ceiling(slot: &mut Slot, session: &Session, settings: &Settings) -> bool {
    slot.set_buffered(session.buffered(), &settings.config.limits)
        .is_err()
}

async fn cut_over_ceiling(ws: &mut Ws, session: &mut Session) -> Reason {
    METRICS.input_rejected("slow_reader");
    session.leave().await;
    failure(ws, &Failure::OverCeiling, None).await;
    Failure::OverCeiling.end_reason()
}

/// A write to the browser failed: the browser is gone, or took nothing for the write timeout
/// (a slow reader). The server's stream is left as for any vanished browser.
async fn write_failed(session: &mut Session, err: &WsError) -> Reason {
    session.leave().await;
    match err {
        WsError::Io(io) if is_timed_out(io) => {
            METRICS.input_rejected("slow_reader");
            tracing::info!("browser took no bytes within the write timeout; cut off");
            "slow_reader"
        }
        _ => "client_gone",
    }
}

/// What the browser's side of the relay brought.
enum Browser {
    /// Everything handed to the WebSocket has been written, or writing failed.
    Flushed(Result<(), WsError>),
    /// A message from the browser (`None` at the end of the connection).
    Read(Option<Result<Message, WsError>>),
}

/// One poll for both directions of the browser's connection: writing what was handed to the
/// WebSocket (when `flush`) and reading its next message (when `read`). Cancel-safe.
async fn browser(ws: &mut Ws, read: bool, flush: bool) -> Browser {
    std::future::poll_fn(|cx| {
        if flush {
            if let Poll::Ready(r) = ws.poll_flush_unpin(cx) {
                return Poll::Ready(Browser::Flushed(r));
            }
        }
        if read {
            if let Poll::Ready(msg) = ws.poll_next_unpin(cx) {
                return Poll::Ready(Browser::Read(msg));
            }
        }
        Poll::Pending
    })
    .await
}

/// What became of a batch written to the browser.
enum Forwarded {
    /// Handed to the WebSocket (`handed`: at least one frame, to be flushed); the session goes
    /// on.
    Continue { handed: bool },
    /// The stream ended and the client has been told; the session is over for this reason.
    End(Reason),
    /// The browser's connection failed.
    WriteFailed(WsError),
}

/// Hands an upstream batch to the WebSocket, which the relay then writes with one flush; if
/// the batch ends the stream, writes the end too (bounded by the write deadline).
async fn forward(
    ws: &mut Ws,
    mut batch: Batch<'_>,
    ending: Ending,
    settings: &Settings,
) -> Forwarded {
    // Never waits. The WebSocket takes frames while its socket does, and one more: the rest of
    // the batch stays in the session (whose read buffer is given back when idle, and counts
    // toward the process's ceiling) until the relay has flushed that one.
    let handed = std::future::poll_fn(|cx| {
        let mut handed = false;
        loop {
            if handed {
                match ws.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Ready(Ok(true)),
                }
            }
            let Some(item) = batch.next() else {
                return Poll::Ready(Ok(handed));
            };
            let message = match item {
                Outbound::Element(b) => text_message(b),
                Outbound::Header(h) => text_message(open_element(&h, batch.domain()).into()),
            };
            if let Err(e) = ws.start_send_unpin(message) {
                return Poll::Ready(Err(e));
            }
            handed = true;
        }
    })
    .await;
    let handed = match handed {
        Ok(handed) => handed,
        Err(e) => return Forwarded::WriteFailed(e),
    };
    if let Some(end) = batch.end() {
        let reason = end.end_reason();
        match end {
            // Either the answer to the client's <close/> or the server leaving first; both
            // are answered with <close/> and the WebSocket is closed by us (RFC 7395 §3.6).
            StreamEnd::Closed => return Forwarded::End(finish(ws, ending, settings).await),
            StreamEnd::Error(el) => {
                let _ = send_error_element(ws, el, None).await;
            }
            StreamEnd::Failed(e) => failure(ws, &e, None).await,
        }
        return Forwarded::End(reason);
    }
    Forwarded::Continue { handed }
}

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
use crate::client_addr::ClientAddr;
use crate::deadline::is_timed_out;
use crate::metrics::{Transport, METRICS};
use crate::session::{
    sleep_until_some, Batch, Context, Drain, Event, Failure, OpenRequest, Outbound, Session,
    StreamEnd,
};
use crate::settings::Settings;
use crate::xml::client::{parse_client_text, ClientFrame, OpenFrame};
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
pub async fn run(ws: Box<Ws>, ctx: Context, mut slot: Slot, peer: ClientAddr) {
    let mut ws = ws;
    let Some(mut session) = Box::pin(start(&mut ws, &ctx, peer)).await else {
        return;
    };
    let reason = relay(&mut ws, &mut session, &ctx, &mut slot).await;
    Box::pin(session.finish(reason)).await;
}

/// Waits for the first `<open/>`, opens the session and answers with `<open/>` and the
/// server's features; `None` when the session ended before that (the browser was told).
async fn start(ws: &mut Ws, ctx: &Context, peer: ClientAddr) -> Option<Session> {
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
        r = Session::open(settings, Transport::WebSocket, request, peer) => r,
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
            Message::Text(t) => match parse_client_text(t, &settings.xml_limits) {
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
///
/// The loop only decides how the session ends ([`Exit`]); the steps that end it (telling the
/// browser why, closing) run once, boxed, in [`conclude`]. The task keeps room for its largest
/// await for the session's whole life, and those steps were the largest (docs/PERFORMANCE.md,
/// "Commits compared").
async fn relay(ws: &mut Ws, session: &mut Session, ctx: &Context, slot: &mut Slot) -> Reason {
    let settings = &ctx.settings;
    let interval = settings.config.ping_interval();
    let max_missed = settings.config.websocket.max_missed_pongs;
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut state = Relay {
        missed: 0,
        closing: None,
        unflushed: false,
    };
    let batch_bytes = settings.config.limits.max_buffered_bytes;
    // Made once: a wait on the drain registers with the one notifier every session shares, and
    // doing that on each turn of the loop took its lock twice per stanza.
    let drain = ctx.shutdown.cancelled();
    tokio::pin!(drain);
    let exit = loop {
        let close_deadline = sleep_until_some(state.closing.map(|(at, _)| at));
        // docs/protocol.md §7: a browser over its rate limits, or with as much queued for a
        // server that does not take it as a session may hold, is not read until that changes;
        // everything else (the server's stanzas, pings, the drain) goes on.
        let paused = session.paused_until();
        let resume = sleep_until_some(paused);
        let reading = paused.is_none() && session.accepts_input();
        let unflushed = state.unflushed;
        let from_server = !unflushed;
        let to_server = unflushed && session.has_output();
        tokio::select! {
            _ = resume => {}
            event = browser(ws, reading, unflushed), if reading || unflushed => {
                let exit = match event {
                    Browser::Flushed(Ok(())) => {
                        state.unflushed = false;
                        None
                    }
                    Browser::Flushed(Err(e)) => Some(Exit::WriteFailed(e)),
                    Browser::Read(msg) => state.on_browser(msg, session, slot, settings),
                };
                if let Some(exit) = exit {
                    break exit;
                }
            }
            next = session.next_event(from_server, batch_bytes), if from_server || to_server => {
                let mut batch = match next {
                    Event::Batch(batch) => batch,
                    Event::Written(Ok(())) => {
                        // The queue that filled up is written: its report goes down again.
                        if over_ceiling(slot, session, settings) {
                            break Exit::OverCeiling;
                        }
                        continue;
                    }
                    Event::Written(Err(e)) => break Exit::Failure(e),
                };
                // A client that stops reading fails the write after limits.write_timeout_secs
                // (every socket has that deadline); meanwhile it is given no more.
                let handed = hand_off(ws, &mut batch).await;
                match (handed, batch.end()) {
                    (Err(e), _) => break Exit::WriteFailed(e),
                    (Ok(_), Some(end)) => break Exit::StreamEnded(end, state.ending()),
                    (Ok(handed), None) => state.unflushed |= handed,
                }
                if over_ceiling(slot, session, settings) {
                    break Exit::OverCeiling;
                }
            }
            _ = ping.tick() => {
                if state.missed >= max_missed {
                    break Exit::PingTimeout(state.missed);
                }
                state.missed += 1;
                if let Err(e) = ws.start_send_unpin(Message::Ping(Bytes::new())) {
                    break Exit::WriteFailed(e);
                }
                state.unflushed = true;
            }
            _ = close_deadline => break Exit::Finish(state.ending()),
            _ = &mut drain, if state.closing.is_none() => {
                // docs/protocol.md §6: a resumable stream is left to the server; any other is
                // closed first and relayed until the server's close, so stanzas already on
                // their way still reach the client; then the client is told where to go.
                match session.drain().await {
                    Drain::Left => break Exit::Finish(Ending::Drain),
                    Drain::Close => {
                        session.close_stream();
                        state.closing = Some((Instant::now() + CLOSE_GRACE, Ending::Drain));
                    }
                }
            }
        }
    };
    Box::pin(conclude(ws, session, exit, settings)).await
}

/// What the relay loop keeps between turns, besides its timers.
struct Relay {
    /// Pings sent since the last pong.
    missed: u32,
    /// Set once the stream is being closed (the client's <close/>, or a drain): the deadline
    /// for the server's answer, and what the client is told at the end.
    closing: Option<(Instant, Ending)>,
    /// Frames handed to the WebSocket and not yet written to the browser: until they are, the
    /// server's next batch waits (TCP pushes back on the server), but what the browser sent
    /// still goes out to it.
    unflushed: bool,
}

impl Relay {
    /// How the browser is told the stream ended: as it was being closed, else a plain close.
    fn ending(&self) -> Ending {
        self.closing.map_or(Ending::Close, |(_, e)| e)
    }

    /// What the browser sent: queued for the server, or the way the session ends.
    fn on_browser(
        &mut self,
        msg: Option<Result<Message, WsError>>,
        session: &mut Session,
        slot: &mut Slot,
        settings: &Settings,
    ) -> Option<Exit> {
        let msg = match msg {
            Some(Ok(msg)) => msg,
            // tungstenite refuses a frame over max_stanza_bytes before the XML layer sees
            // it; docs/protocol.md §2 wants the same policy-violation as TooLarge.
            Some(Err(WsError::Capacity(_))) => return Some(Exit::Rejected(XmlError::TooLarge)),
            // A read also writes (the pong tungstenite owes): the write deadline can end it,
            // as it ends a flush.
            Some(Err(e @ WsError::Io(_))) => return Some(Exit::WriteFailed(e)),
            // The browser vanished (docs/protocol.md §3 and §4's note on reloads).
            _ => return Some(Exit::Gone),
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => return Some(Exit::Binary),
            Message::Pong(_) => {
                self.missed = 0;
                return None;
            }
            // tungstenite queued the pong; the next poll writes it.
            Message::Ping(_) | Message::Frame(_) => {
                self.unflushed = true;
                return None;
            }
            // The client sent <close/> and did not wait for the answer: the close already
            // went upstream.
            Message::Close(_) if self.closing.is_some() => return Some(Exit::Closed),
            // A close frame without <close/> (a tab closing): the client is gone.
            Message::Close(_) => return Some(Exit::ClientClose),
        };
        match parse_client_text(text, &settings.xml_limits) {
            // After </stream:stream> went upstream the server reads no more.
            Ok(ClientFrame::Element(_)) if self.closing.is_some() => {}
            Ok(ClientFrame::Element(el)) => {
                if let Err(e) = session.send(&el) {
                    return Some(Exit::Failure(e));
                }
                // A full queue counts toward the process's ceiling at once.
                if !session.accepts_input() && over_ceiling(slot, session, settings) {
                    return Some(Exit::OverCeiling);
                }
            }
            // Nor a new stream header behind the closing tag.
            Ok(ClientFrame::Open(_)) if self.closing.is_some() => {}
            Ok(ClientFrame::Open(open)) => {
                // RFC 7395 §3.5: a new <open/> after SASL success restarts the stream; the
                // server's new header comes through the relay.
                let request = OpenRequest {
                    to: open.to,
                    from: open.from,
                    lang: open.lang,
                };
                if let Err(e) = session.restart(request) {
                    return Some(Exit::Failure(e));
                }
            }
            Ok(ClientFrame::Close { .. }) => {
                // RFC 7395 §3.6: answer the close; the server closes the socket.
                if self.closing.is_none() {
                    session.close_stream();
                    self.closing = Some((Instant::now() + CLOSE_GRACE, Ending::Close));
                }
            }
            Ok(ClientFrame::Whitespace) => {}
            Err(e) => return Some(Exit::Rejected(e)),
        }
        None
    }
}

/// How a relay ends, decided by the loop and carried out by [`conclude`].
enum Exit {
    /// Writing to the browser failed (see [`write_failed`]).
    WriteFailed(WsError),
    /// The session failed: the browser gets the failure's stream error.
    Failure(Failure),
    /// What the browser sent is refused.
    Rejected(XmlError),
    /// The browser sent a binary frame.
    Binary,
    /// The session holds more than the process's ceiling allows.
    OverCeiling,
    /// The browser's connection ended without a close.
    Gone,
    /// A close frame after the client's `<close/>`.
    Closed,
    /// A close frame without `<close/>`.
    ClientClose,
    /// The browser left this many pings unanswered.
    PingTimeout(u32),
    /// The stream is over on both sides: `<close/>` (or the drain's words), then the close.
    Finish(Ending),
    /// The server's stream ended.
    StreamEnded(StreamEnd, Ending),
}

/// Carries out how the relay ends; returns the end reason.
async fn conclude(ws: &mut Ws, session: &mut Session, exit: Exit, settings: &Settings) -> Reason {
    match exit {
        Exit::WriteFailed(e) => write_failed(session, &e).await,
        Exit::Failure(e) => {
            failure(ws, &e, None).await;
            e.end_reason()
        }
        Exit::Rejected(e) => {
            reject(ws, &e).await;
            "bad_input"
        }
        Exit::Binary => {
            binary_refused(ws).await;
            "bad_input"
        }
        Exit::OverCeiling => {
            METRICS.input_rejected("slow_reader");
            session.leave().await;
            failure(ws, &Failure::OverCeiling, None).await;
            Failure::OverCeiling.end_reason()
        }
        Exit::Gone => {
            session.leave().await;
            "client_gone"
        }
        Exit::Closed => {
            let _ = ws.flush().await;
            "closed"
        }
        Exit::ClientClose => {
            session.leave().await;
            let _ = ws.flush().await;
            "client_close"
        }
        Exit::PingTimeout(missed) => {
            METRICS.websocket_pings_missed.inc();
            tracing::info!(missed, "pings unanswered; closing");
            session.leave().await;
            let away = CloseFrame {
                code: CloseCode::Away,
                reason: "ping timeout".into(),
            };
            let _ = ws.close(Some(away)).await;
            "ping_timeout"
        }
        Exit::Finish(ending) => finish(ws, ending, settings).await,
        Exit::StreamEnded(end, ending) => end_stream(ws, end, ending, settings).await,
    }
}

/// docs/protocol.md §7: reports what the session holds; past the process's ceiling, the
/// sessions holding the most are cut.
fn over_ceiling(slot: &mut Slot, session: &Session, settings: &Settings) -> bool {
    slot.set_buffered(session.buffered(), &settings.config.limits)
        .is_err()
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

/// Hands an upstream batch to the WebSocket, which the relay then writes with one flush.
/// Returns whether at least one frame was handed (and is to be flushed). An async fn of a few
/// words: the batch stays with the relay, which ends the stream if the batch says so.
async fn hand_off(ws: &mut Ws, batch: &mut Batch<'_>) -> Result<bool, WsError> {
    // Never waits. The WebSocket takes frames while its socket does, and one more: the rest of
    // the batch stays in the session (whose read buffer is given back when idle, and counts
    // toward the process's ceiling) until the relay has flushed that one.
    std::future::poll_fn(|cx| {
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
    .await
}

/// The server's stream ended: tells the browser how. Boxed by its caller, as every ending
/// step of the relay is, so that an idle session's task keeps no room for it.
async fn end_stream(ws: &mut Ws, end: StreamEnd, ending: Ending, settings: &Settings) -> Reason {
    let reason = end.end_reason();
    match end {
        // Either the answer to the client's <close/> or the server leaving first; both are
        // answered with <close/> and the WebSocket is closed by us (RFC 7395 §3.6).
        StreamEnd::Closed => return finish(ws, ending, settings).await,
        StreamEnd::Error(el) => {
            let _ = send_error_element(ws, el, None).await;
        }
        StreamEnd::Failed(e) => failure(ws, &e, None).await,
    }
    reason
}

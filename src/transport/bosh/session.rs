//! One task per BOSH session: it owns the upstream stream and the [`BoshState`], receives the
//! HTTP requests routed to its sid over a bounded channel, and answers them through one-shot
//! channels. Nothing here is shared, so nothing is locked.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::state::{Action, BoshState, Request, Terminate};
use super::Sessions;
use crate::server::Gateway;
use crate::session::{Outbound, Session};
use crate::upstream::UpstreamError;

/// How long an ended session waits for the client's next request to tell it why.
const LINGER: Duration = Duration::from_secs(10);
/// The same during a drain: a live client is between two requests for milliseconds, and a
/// vanished one must not hold the process. The public listener keeps serving connections as
/// long (`server.rs`), so such requests can still arrive.
pub const LINGER_DRAINING: Duration = Duration::from_secs(2);

/// Where a response goes: the HTTP handler waiting for it. If that handler is gone (the client
/// dropped the connection), the response stays cached for a repeated rid.
pub type Reply = oneshot::Sender<Bytes>;

/// The sending side handlers use to reach a session.
pub type Handle = mpsc::Sender<Request<Reply>>;

/// Runs the session until it ends, then removes its sid.
pub async fn run(
    sid: Arc<str>,
    mut session: Session,
    mut state: BoshState<Reply>,
    mut rx: mpsc::Receiver<Request<Reply>>,
    gw: Arc<Gateway>,
    sessions: Arc<Sessions>,
) {
    let settings = gw.settings();
    let limit = settings.config.limits.max_buffered_bytes;
    let redirect = settings.config.drain.bosh_redirect.as_deref();
    let mut told_shutdown = false;
    let reason = loop {
        let mut actions = Vec::new();
        let deadline = state.next_deadline();
        let tick = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            req = rx.recv() => match req {
                Some(req) => actions = state.on_request(req, Instant::now()),
                None => break "closed",
            },
            // Stanzas wait in the session for a request; past the limit, stop reading upstream
            // and let TCP push back on the server.
            out = session.next_outbound(), if state.pending_bytes() < limit => {
                absorb_upstream(out, &mut session, &mut state, limit, &mut actions);
            }
            _ = tick => state.on_tick(Instant::now(), &mut actions),
            _ = gw.shutdown.cancelled(), if !told_shutdown => {
                told_shutdown = true;
                if session.is_resumable() {
                    // PROTOCOL.md §6 with XEP-0198: the server keeps what is in flight for
                    // the client's <resume/> through another node.
                    session.leave().await;
                }
                // The client is told at once, with every stanza pending. The upstream stream
                // stays open while requests already on their way arrive (see `linger`), so
                // their payload still reaches the server; then it is closed.
                state.on_shutdown(redirect, &mut actions);
            }
        }
        if let Some(reason) = perform(&mut session, &mut state, actions).await {
            break reason;
        }
    };
    if told_shutdown || !state.end_delivered() {
        told_shutdown = linger(
            &mut session,
            &mut state,
            &mut rx,
            &gw,
            told_shutdown,
            settings.config.bosh_inactivity(),
        )
        .await;
    }
    if told_shutdown && !session.is_resumable() {
        // The drain's requests in flight have been carried out: now the stream ends.
        let _ = session.close_stream().await;
    }
    sessions.remove(&sid);
    rx.close();
    // Requests that raced with the end still get an answer.
    while let Ok(req) = rx.try_recv() {
        let _ = req
            .reply
            .send(super::state::terminate_body(&Terminate::Condition(
                "item-not-found",
            )));
    }
    session.finish(reason).await;
}

/// Hands one upstream item, and every item already buffered behind it, to the state machine,
/// then lets it answer a held request with the batch.
fn absorb_upstream(
    first: Result<Outbound, UpstreamError>,
    session: &mut Session,
    state: &mut BoshState<Reply>,
    limit: usize,
    actions: &mut Vec<Action<Reply>>,
) {
    let mut next = Some(first);
    while let Some(out) = next.take() {
        match out {
            Ok(Outbound::Element(b) | Outbound::Features(b)) => state.on_upstream(b),
            // XEP-0206: a restarted stream's header is not shown; its features are.
            Ok(Outbound::Header(_)) => {}
            Ok(Outbound::StreamError(e)) => {
                state.on_upstream_end(Terminate::RemoteStreamError(e), actions);
                break;
            }
            Ok(Outbound::End) => {
                state.on_upstream_end(Terminate::Normal, actions);
                break;
            }
            Err(e) => {
                tracing::info!(error = %e, "upstream stream failed");
                state.on_upstream_end(Terminate::Condition("remote-connection-failed"), actions);
                break;
            }
        }
        if state.pending_bytes() >= limit {
            break;
        }
        next = session.buffered_outbound().transpose();
    }
    state.flush(actions);
}

/// After the session ended: a client with no request held learns why from its next request
/// (within [`LINGER`]); in a drain, requests that crossed the terminate body on the wire are
/// still carried out for [`LINGER_DRAINING`]. Returns whether a drain began meanwhile.
async fn linger(
    session: &mut Session,
    state: &mut BoshState<Reply>,
    rx: &mut mpsc::Receiver<Request<Reply>>,
    gw: &Gateway,
    mut draining: bool,
    inactivity: Duration,
) -> bool {
    let period = if draining { LINGER_DRAINING } else { LINGER };
    let until = Instant::now() + period.min(inactivity);
    let timer = tokio::time::sleep_until(until);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            Some(req) = rx.recv() => {
                let actions = state.on_request(req, Instant::now());
                perform(session, state, actions).await;
                if !draining {
                    return false;
                }
            }
            _ = &mut timer => return draining,
            // A drain that starts while lingering must not wait the full period.
            _ = gw.shutdown.cancelled(), if !draining => {
                draining = true;
                timer.as_mut().reset(until.min(Instant::now() + LINGER_DRAINING));
            }
        }
    }
}

/// Carries out actions in order; returns the end reason once the session is over.
async fn perform(
    session: &mut Session,
    state: &mut BoshState<Reply>,
    actions: Vec<Action<Reply>>,
) -> Option<&'static str> {
    let mut end = None;
    let mut queue: VecDeque<_> = actions.into();
    while let Some(action) = queue.pop_front() {
        let upstream_ok = match action {
            Action::Forward(elements) => {
                let mut ok = true;
                for el in elements {
                    if session.send(&el).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                ok
            }
            Action::Restart => session.restart(None, None).await.is_ok(),
            Action::CloseUpstream => {
                let _ = session.close_stream().await;
                true
            }
            Action::LeaveUpstream => {
                session.leave().await;
                true
            }
            Action::Respond(reply, body) => {
                // A closed receiver means the client hung up; the body is cached for its retry.
                let _ = reply.send(body);
                true
            }
            Action::End(reason) => {
                end = end.or(Some(reason));
                true
            }
        };
        if !upstream_ok {
            let mut more = Vec::new();
            state.on_upstream_end(Terminate::Condition("remote-connection-failed"), &mut more);
            queue.extend(more);
        }
    }
    end
}

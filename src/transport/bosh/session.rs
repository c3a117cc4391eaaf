//! One task per BOSH session: it owns the upstream stream and the [`BoshState`], receives the
//! HTTP requests routed to its sid over a bounded channel, and answers them through one-shot
//! channels. Nothing here is shared, so nothing is locked.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::state::{Action, BoshState, Request, Terminate};
use super::Sessions;
use crate::server::Gateway;
use crate::session::{Outbound, Session};

/// How long an ended session waits for the client's next request to tell it why.
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);
/// The same during a drain: a live client is between two requests for milliseconds, and a
/// vanished one must not hold the process.
const LINGER_DRAINING: std::time::Duration = std::time::Duration::from_secs(2);

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
                let mut next = Some(out);
                while let Some(out) = next.take() {
                    match out {
                        Ok(Outbound::Element(b) | Outbound::Features(b)) => state.on_upstream(b),
                        // XEP-0206: a restarted stream's header is not shown; its features are.
                        Ok(Outbound::Header(_)) => {}
                        Ok(Outbound::StreamError(e)) => {
                            state.on_upstream_end(Terminate::RemoteStreamError(e), &mut actions);
                            break;
                        }
                        Ok(Outbound::End) => {
                            state.on_upstream_end(Terminate::Normal, &mut actions);
                            break;
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "upstream stream failed");
                            state.on_upstream_end(Terminate::Condition("remote-connection-failed"), &mut actions);
                            break;
                        }
                    }
                    if state.pending_bytes() >= limit {
                        break;
                    }
                    next = session.buffered_outbound().transpose();
                }
                state.flush(&mut actions);
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
                // stays open while requests already on their way arrive (below), so their
                // payload still reaches the server; then it is closed.
                state.on_shutdown(redirect, &mut actions);
            }
        }
        if let Some(reason) = perform(&mut session, &mut state, actions).await {
            break reason;
        }
    };
    // A client with no request held when the session ended learns why from its next one; in a
    // drain, requests that crossed the terminate body on the wire are still carried out.
    if told_shutdown || !state.end_delivered() {
        let linger = if told_shutdown {
            LINGER_DRAINING
        } else {
            LINGER
        };
        let until = Instant::now() + linger.min(settings.config.bosh_inactivity());
        let linger = tokio::time::sleep_until(until);
        tokio::pin!(linger);
        loop {
            tokio::select! {
                Some(req) = rx.recv() => {
                    let actions = state.on_request(req, Instant::now());
                    perform(&mut session, &mut state, actions).await;
                    if !told_shutdown {
                        break;
                    }
                }
                _ = &mut linger => break,
                // A drain that starts while lingering must not wait the full period.
                _ = gw.shutdown.cancelled(), if !told_shutdown => {
                    told_shutdown = true;
                    linger.as_mut().reset(until.min(Instant::now() + LINGER_DRAINING));
                }
            }
        }
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

/// Carries out actions in order; returns the end reason once the session is over.
async fn perform(
    session: &mut Session,
    state: &mut BoshState<Reply>,
    actions: Vec<Action<Reply>>,
) -> Option<&'static str> {
    let mut end = None;
    let mut queue: std::collections::VecDeque<_> = actions.into();
    while let Some(action) = queue.pop_front() {
        match action {
            Action::Forward(elements) => {
                for el in elements {
                    if session.send(&el).await.is_err() {
                        let mut more = Vec::new();
                        state.on_upstream_end(
                            Terminate::Condition("remote-connection-failed"),
                            &mut more,
                        );
                        queue.extend(more);
                        break;
                    }
                }
            }
            Action::Restart => {
                if session.restart(None, None).await.is_err() {
                    let mut more = Vec::new();
                    state.on_upstream_end(
                        Terminate::Condition("remote-connection-failed"),
                        &mut more,
                    );
                    queue.extend(more);
                }
            }
            Action::CloseUpstream => {
                let _ = session.close_stream().await;
            }
            Action::LeaveUpstream => session.leave().await,
            Action::Respond(reply, body) => {
                // A closed receiver means the client hung up; the body is cached for its retry.
                let _ = reply.send(body);
            }
            Action::End(reason) => end = end.or(Some(reason)),
        }
    }
    end
}

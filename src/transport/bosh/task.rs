//! One task per BOSH session: it owns the upstream stream and the [`BoshState`], receives the
//! HTTP requests routed to its sid over a bounded channel, and answers them through one-shot
//! channels. Nothing here is shared, so nothing is locked.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::registry::{Registry, Reply, Routed};
use super::state::{terminate_body, Action, BoshState, Terminate};
use crate::admission::Slot;
use crate::config::LimitsConfig;
use crate::metrics::METRICS;
use crate::session::{sleep_until_some, Batch, Context, Event, Failure, Outbound, Session};

/// How long an ended session waits for the client's next request to tell it why.
const LINGER: Duration = Duration::from_secs(10);
/// The same during a drain: a live client is between two requests for milliseconds, and a
/// vanished one must not hold the process. The public listener keeps serving connections as
/// long (`server.rs`), so such requests can still arrive.
pub const LINGER_DRAINING: Duration = Duration::from_secs(2);

/// What a session's task owns.
pub struct Task {
    /// The session's id, removed from the registry at the end.
    pub sid: Arc<str>,
    /// Its place under the caps.
    pub slot: Slot,
    /// The upstream stream.
    pub session: Session,
    /// The BOSH state machine.
    pub state: BoshState<Reply>,
    /// The requests routed to this session.
    pub rx: mpsc::Receiver<Routed>,
    /// The settings and the drain.
    pub ctx: Context,
    /// Where the sid is registered.
    pub registry: Arc<Registry>,
}

/// Runs the session until it ends, then removes its sid.
///
/// The parts come boxed and are moved out at once (the box is freed): a future keeps its
/// arguments apart from its locals, so parts passed one by one would take their room twice for
/// the session's whole life (about 1 KB).
pub async fn run(task: Box<Task>) {
    let Task {
        sid,
        mut slot,
        mut session,
        mut state,
        mut rx,
        ctx,
        registry,
    } = unbox(task);
    let settings = &ctx.settings;
    let limits = &settings.config.limits;
    let limit = limits.max_buffered_bytes;
    let redirect = settings.config.drain.bosh_redirect.as_deref();
    let mut told_shutdown = false;
    // Set when the task itself ends the session for a reason the state machine cannot name.
    let mut cut: Option<&'static str> = None;
    // Made once: a wait on the drain registers with the one notifier every session shares, and
    // doing that on each turn of the loop took its lock twice per stanza.
    let drain = ctx.shutdown.cancelled();
    tokio::pin!(drain);
    let reason = loop {
        let mut actions = Vec::new();
        let deadline = state.next_deadline();
        let tick = sleep_until_some(deadline);
        // docs/protocol.md §7: a browser over its rate limits has its next requests wait until
        // the limits allow them; held requests are still answered on their timers.
        let paused = session.paused_until();
        let resume = sleep_until_some(paused);
        // docs/protocol.md §7: with as much queued for a server that does not take it as a
        // session may hold, requests wait until the server catches up; the timers go on.
        let reading = paused.is_none() && session.accepts_input();
        let from_server = state.pending_bytes() < limit;
        let flushing = !from_server && session.has_output();
        let room = limit.saturating_sub(state.pending_bytes());
        tokio::select! {
            _ = resume => {}
            req = rx.recv(), if reading => match req {
                Some(req) => actions = state.on_request(*req, Instant::now()),
                None => break "closed",
            },
            // Stanzas wait in the session for a request; past the limit, stop reading upstream
            // and let TCP push back on the server. What the browser sent still goes out.
            next = session.next_event(from_server, room), if from_server || flushing => match next {
                Event::Batch(batch) => {
                    absorb(batch, &mut state, &mut actions);
                    cut = cut.or(report_held(&mut slot, &mut state, &session, limits, &mut actions));
                }
                Event::Written(Err(e)) => {
                    state.on_upstream_end(Terminate::from_failure(&e), &mut actions);
                    cut = Some(e.end_reason());
                }
                // The queue that filled up is written: its report goes down again.
                Event::Written(Ok(())) => {
                    cut = cut.or(report_held(&mut slot, &mut state, &session, limits, &mut actions));
                }
            },
            _ = tick => state.on_tick(Instant::now(), &mut actions),
            // Last: the future borrows the state, after the other branches have read it.
            _ = abandoned(&mut state) => state.on_abandoned(&mut actions),
            _ = &mut drain, if !told_shutdown => {
                told_shutdown = true;
                // docs/protocol.md §6: a resumable stream is left to the server at once. Any
                // other stays open while requests already on their way arrive (see `linger`),
                // so their payload still reaches the server; `finish` then closes it. The
                // client is told at once, with every stanza pending.
                session.drain().await;
                state.on_shutdown(redirect, &mut actions);
            }
        }
        if let Some(reason) = perform(&mut session, &mut state, actions).await {
            break cut.unwrap_or(reason);
        }
        // A queue that filled up counts toward the process's ceiling at once.
        if !session.accepts_input() && cut.is_none() {
            let mut actions = Vec::new();
            cut = report_held(
                &mut slot,
                &mut state,
                &session,
                &settings.config.limits,
                &mut actions,
            );
            if let Some(reason) = perform(&mut session, &mut state, actions).await {
                break cut.unwrap_or(reason);
            }
        }
    };
    // The ending steps are boxed, so the task needs no room for them while the session lives.
    if told_shutdown || !state.settled() {
        Box::pin(linger(
            &mut session,
            &mut state,
            &mut rx,
            &ctx,
            told_shutdown,
            settings.config.bosh_inactivity(),
        ))
        .await;
    }
    registry.remove(&sid);
    rx.close();
    // Requests that raced with the end still get an answer.
    while let Ok(req) = rx.try_recv() {
        let _ = req
            .reply
            .send(terminate_body(&Terminate::Condition("item-not-found")));
    }
    Box::pin(session.finish(reason)).await;
}

/// Moves a value out of its box and frees the box (`*boxed` alone keeps the allocation until
/// the box's binding goes out of scope).
#[allow(clippy::boxed_local)] // Taking the box is the point: it is freed on return.
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// Resolves once every connection the oldest held request could be answered on has closed
/// (hyper drops a request whose HTTP connection closes, and with it its receiver).
async fn abandoned(state: &mut BoshState<Reply>) {
    match state.oldest_held_replies() {
        Some(replies) => {
            for reply in replies {
                reply.closed().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// docs/protocol.md §7: reports what the session holds (stanzas waiting for a request, bytes
/// from and for the server). Past the process's ceiling, the sessions holding the most are cut:
/// the terminate goes into `actions`, and the end reason is returned.
fn report_held(
    slot: &mut Slot,
    state: &mut BoshState<Reply>,
    session: &Session,
    limits: &LimitsConfig,
    actions: &mut Vec<Action<Reply>>,
) -> Option<&'static str> {
    let held = state.pending_bytes() + session.buffered();
    slot.set_buffered(held, limits).err()?;
    METRICS.input_rejected("slow_reader");
    state.on_upstream_end(Terminate::from_failure(&Failure::OverCeiling), actions);
    Some(Failure::OverCeiling.end_reason())
}

/// Hands one upstream batch to the state machine, then lets it answer a held request with it.
fn absorb(mut batch: Batch<'_>, state: &mut BoshState<Reply>, actions: &mut Vec<Action<Reply>>) {
    for item in batch.by_ref() {
        match item {
            Outbound::Element(b) => state.on_upstream(b),
            // XEP-0206: a restarted stream's header is not shown; its features are.
            Outbound::Header(_) => {}
        }
    }
    if let Some(end) = batch.end() {
        state.on_upstream_end(Terminate::from_end(end), actions);
    }
    state.flush(actions);
}

/// After the session ended: a client with no request held learns why (and gets the stanzas
/// that were pending) from its next requests, and an answer that carried stanzas at the end
/// can be asked for again, within [`LINGER`]; in a drain, requests that crossed the terminate
/// body on the wire are still carried out for [`LINGER_DRAINING`]. Each goes through the state
/// machine, key check first, like any request: nothing is forwarded or answered here.
async fn linger(
    session: &mut Session,
    state: &mut BoshState<Reply>,
    rx: &mut mpsc::Receiver<Routed>,
    ctx: &Context,
    mut draining: bool,
    inactivity: Duration,
) {
    let period = if draining { LINGER_DRAINING } else { LINGER };
    let until = Instant::now() + period.min(inactivity);
    let timer = tokio::time::sleep_until(until);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            Some(req) = rx.recv() => {
                let actions = state.on_request(*req, Instant::now());
                perform(session, state, actions).await;
                // Stanzas pending at the end come before the terminate body: linger until
                // the client has that too, and for a repeat of an answer that carried them.
                if !draining && state.settled() {
                    return;
                }
            }
            _ = &mut timer => return,
            // Payload forwarded meanwhile goes out now, not only when the session finishes.
            _ = session.flush(), if session.has_output() => {}
            // A drain that starts while lingering must not wait the full period.
            _ = ctx.shutdown.cancelled(), if !draining => {
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
        let failed = match action {
            Action::Forward(elements) => elements.iter().find_map(|el| session.send(el).err()),
            Action::Restart => session.restart(Default::default()).err(),
            Action::CloseUpstream => {
                session.close_stream();
                None
            }
            Action::LeaveUpstream => {
                session.leave().await;
                None
            }
            Action::Respond(reply, body) => {
                // A closed receiver means the client hung up; the body is cached for its retry.
                let _ = reply.send(body);
                None
            }
            Action::End(reason) => {
                end = end.or(Some(reason));
                None
            }
        };
        if let Some(e) = failed {
            // The failure names the reason better than the terminate condition does.
            end = end.or(Some(e.end_reason()));
            let mut more = Vec::new();
            state.on_upstream_end(Terminate::from_failure(&e), &mut more);
            queue.extend(more);
        }
    }
    end
}

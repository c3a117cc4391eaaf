//! One HTTP request to `/http-bind`: CORS and method checks, the body read within its limit and
//! parsed, then either a session request (opened through the session core, which starts the
//! session's task) or a request routed by sid to its session's task, answered with the
//! `<body/>` the task sends back (XEP-0124 §7–§8, docs/protocol.md §4).

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use super::body::{self, Body as BoshBody, BodyError};
use super::registry::{Handle, Registry, Routed};
use super::state::{
    retry_body, terminate_body, BoshState, Kind, Params, Request as BoshRequest, Terminate,
};
use super::task;
use crate::admission::Slot;
use crate::client_addr::ClientAddr;
use crate::cluster::forward::{self, ForwardError};
use crate::cluster::metrics::CLUSTER;
use crate::cluster::{Cluster, Owner, FIND_BOUND};
use crate::http::body::read_bounded;
use crate::http::{text, Body};
use crate::metrics::{Transport, METRICS};
use crate::session::{next_session_id, Context, OpenRequest, Session};
use crate::xml::escape_attr;

/// Handles one request to `/http-bind` from the client at `peer` (docs/protocol.md §7).
///
/// A held request's future lives for up to `wait` seconds, one or more for every session, so
/// it is kept small: the headers are checked and dropped before it starts, the body is read in
/// a boxed step, and a session request's start (dialling, negotiation) is boxed too. While the
/// request is held, only the few words of `Waiting` remain.
pub fn handle(
    req: Request<Incoming>,
    ctx: Context,
    registry: &Arc<Registry>,
    peer: ClientAddr,
) -> impl Future<Output = Response<Body>> + Send + 'static {
    let checked = check_headers(&req, &ctx);
    let registry = registry.clone();
    let body = req.into_body();
    async move {
        let (cors, gzip) = match checked {
            Ok(c) => c,
            Err(refused) => return *refused,
        };
        let data = match Box::pin(read_body(body, &ctx, peer)).await {
            Ok(data) => data,
            Err(refused) => return with_cors(*refused, cors),
        };
        let answer = match dispatch(&data, &ctx, &registry, peer, &cors, false) {
            Next::Respond(r) => return *r,
            Next::Create(start) => start.await,
            Next::Route(waiting) => waiting.wait().await,
        };
        respond(answer, gzip, ctx.settings.config.bosh.gzip_min_bytes, cors)
    }
}

/// What the headers decide: the CORS origin to answer with and whether the answer may be
/// gzipped, or the whole answer (a refused origin, a preflight, a method that is not POST).
fn check_headers(
    req: &Request<Incoming>,
    ctx: &Context,
) -> Result<(HeaderValue, bool), Box<Response<Body>>> {
    let cors = match cors_origin(ctx, req.headers().get(header::ORIGIN)) {
        Ok(c) => c,
        Err(()) => {
            METRICS.input_rejected("origin");
            return Err(Box::new(text(
                StatusCode::FORBIDDEN,
                "origin not allowed\n",
            )));
        }
    };
    match *req.method() {
        Method::OPTIONS => Err(Box::new(preflight(cors))),
        Method::POST => Ok((cors, accepts_gzip(req.headers()))),
        _ => Err(Box::new(with_cors(
            text(StatusCode::METHOD_NOT_ALLOWED, "BOSH requests are POSTed\n"),
            cors,
        ))),
    }
}

/// The body, read within its limit and deadline, or the refusal (without CORS headers).
async fn read_body(
    body: Incoming,
    ctx: &Context,
    peer: ClientAddr,
) -> Result<Bytes, Box<Response<Body>>> {
    let settings = &ctx.settings;
    let limit = settings.config.bosh.max_body_bytes;
    let deadline = Duration::from_secs(settings.config.limits.body_read_timeout_secs);
    match read_bounded(body, limit, deadline).await {
        Ok(buf) => Ok(buf.freeze()),
        Err(e) => {
            METRICS.input_rejected(e.reason());
            tracing::info!(%peer, error = %e, "BOSH request body refused");
            Err(Box::new(e.response()))
        }
    }
}

/// Where a parsed request goes next.
enum Next<'a> {
    /// Answered at once.
    Respond(Box<Response<Body>>),
    /// A session request: the session's start, answered with the creation body.
    Create(Pin<Box<dyn Future<Output = Bytes> + Send + 'a>>),
    /// A request for a session's task.
    Route(Waiting),
}

/// `forwarded`: the request came from another node of the cluster, which found its session's
/// tag to be this node's (docs/protocol.md §8): it is answered here, never created or sent on.
fn dispatch<'a>(
    data: &Bytes,
    ctx: &'a Context,
    registry: &'a Arc<Registry>,
    peer: ClientAddr,
    cors: &HeaderValue,
    forwarded: bool,
) -> Next<'a> {
    if let Some(w) = registry
        .cluster()
        .filter(|_| !forwarded)
        .and_then(|cluster| to_owner(cluster, data, ctx, peer))
    {
        return Next::Route(w);
    }
    match body::parse(data, &ctx.settings.xml_limits) {
        Ok(b) if b.sid.is_none() && forwarded => Next::Route(Waiting::Answered(terminate_body(
            &Terminate::Condition("bad-request"),
        ))),
        Ok(b) if b.sid.is_none() && ctx.shutdown.is_stopping() => {
            // docs/protocol.md §6: no new sessions on a draining node. HTTP 503 (with the BOSH
            // answer in the body) lets a load balancer retry the request on another node,
            // even when a cookie still points here.
            let mut r = unavailable("system-shutdown", 1, cors.clone());
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Next::Respond(Box::new(r))
        }
        Ok(b) if b.sid.is_none() => match admit(&b, ctx, peer, cors) {
            Ok(slot) => Next::Create(Box::pin(create(b, ctx, registry, peer, slot))),
            Err(refused) => Next::Respond(refused),
        },
        Ok(b) => {
            let kind = if b.terminate {
                Kind::Terminate
            } else if b.restart {
                Kind::Restart
            } else {
                Kind::Normal
            };
            Next::Route(route(b, registry, kind))
        }
        Err(BodyError::NotBosh(why)) => {
            METRICS.input_rejected("not_bosh");
            Next::Respond(Box::new(with_cors(
                text(StatusCode::BAD_REQUEST, why),
                cors.clone(),
            )))
        }
        Err(e) => {
            let reason = match &e {
                BodyError::Xml(x) => x.reason(),
                _ => "bad_attribute",
            };
            METRICS.input_rejected(reason);
            tracing::info!(%peer, error = %e, "BOSH body refused");
            // docs/protocol.md §2: bad input ends the session. The request goes to its session
            // without payload, which ends it only if the rid (and key) check out, so knowing
            // a sid is not enough to end someone else's session.
            Next::Route(match body::root_attributes(data) {
                // The wrapper's attributes only: nothing of the payload goes anywhere.
                Some(root) if root.sid.is_some() && root.rid.is_some() => {
                    route(root, registry, Kind::Invalid)
                }
                _ => Waiting::Answered(terminate_body(&Terminate::Condition("bad-request"))),
            })
        }
    }
}

/// A session request (XEP-0124 §7.1, XEP-0206 §3).
/// docs/protocol.md §7: a session request takes a slot under the caps before anything is
/// dialled. A refusal is HTTP 503 with `Retry-After`, carrying a `policy-violation` terminate
/// body, so a load balancer can retry elsewhere and a client reads why. A request that is no
/// session request at all (no `rid`) is left to `create` and takes no slot.
fn admit(
    b: &BoshBody,
    ctx: &Context,
    peer: ClientAddr,
    cors: &HeaderValue,
) -> Result<Option<Slot>, Box<Response<Body>>> {
    if b.rid.is_none() {
        return Ok(None);
    }
    match ctx.admit(peer.ip(), Transport::Bosh) {
        Ok(slot) => Ok(Some(slot)),
        Err(refusal) => Err(Box::new(unavailable(
            "policy-violation",
            refusal.retry_after_secs(),
            cors.clone(),
        ))),
    }
}

/// A new session this node does not take: HTTP 503 with `Retry-After`, so a load balancer can
/// retry elsewhere, and the terminate body with `condition` for a client that reads it.
fn unavailable(
    condition: &'static str,
    retry_after_secs: u64,
    cors: HeaderValue,
) -> Response<Body> {
    let mut r = respond(
        terminate_body(&Terminate::Condition(condition)),
        false,
        usize::MAX,
        cors,
    );
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    r
}

async fn create(
    b: BoshBody,
    ctx: &Context,
    registry: &Arc<Registry>,
    peer: ClientAddr,
    slot: Option<Slot>,
) -> Bytes {
    let (Some(rid), Some(slot)) = (b.rid, slot) else {
        return terminate_body(&Terminate::Condition("bad-request"));
    };
    let cfg = &ctx.settings.config.bosh;
    let hold = b.hold.unwrap_or(1).min(cfg.max_hold) as usize;
    let params = Params {
        wait: Duration::from_secs(
            b.wait
                .unwrap_or(cfg.max_wait_secs)
                .clamp(1, cfg.max_wait_secs),
        ),
        hold,
        requests: hold + 1,
        inactivity: Duration::from_secs(cfg.inactivity_secs),
        polling: Duration::from_secs(cfg.polling_secs),
        maxpause: Duration::from_secs(cfg.max_pause_secs),
        acks: b.ack.is_some(),
    };
    let id = next_session_id();
    let span = tracing::info_span!("session", id, transport = "bosh", %peer);
    let request = OpenRequest {
        to: b.to.clone(),
        from: b.from.clone(),
        lang: b.lang.clone(),
    };
    let opened = match Session::open(&ctx.settings, Transport::Bosh, request, peer)
        .instrument(span.clone())
        .await
    {
        Ok(o) => o,
        Err(e) => return terminate_body(&Terminate::from_failure(&e)),
    };
    let sid = registry.new_sid();
    let created = creation_body(
        &sid,
        &params,
        &b,
        opened.session.domain(),
        &opened.header.id,
        opened.tls,
        &opened.features,
    );
    let state = BoshState::new(
        params.clone(),
        rid,
        b.newkey.clone(),
        created.clone(),
        Instant::now(),
    );
    // Bounded: a client may have at most `requests` requests in flight; a little slack for
    // retries, beyond which handlers wait.
    let (tx, rx) = mpsc::channel(params.requests + 2);
    registry.insert(sid.clone(), tx);
    let run = task::run(Box::new(task::Task {
        sid,
        slot,
        session: opened.session,
        state,
        rx,
        ctx: ctx.clone(),
        registry: registry.clone(),
    }));
    ctx.shutdown.spawn(run.instrument(span));
    created
}

fn creation_body(
    sid: &str,
    p: &Params,
    b: &BoshBody,
    to: &str,
    authid: &Option<String>,
    secure: bool,
    features: &Bytes,
) -> Bytes {
    let mut s = String::with_capacity(512 + features.len());
    s.push_str("<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' xmlns:stream='http://etherx.jabber.org/streams'");
    s.push_str(&format!(
        " sid='{sid}' wait='{}' requests='{}' hold='{}' inactivity='{}' polling='{}' maxpause='{}' ver='{}' from='{}' xmpp:version='1.0' xmpp:restartlogic='true' accept='gzip'",
        p.wait.as_secs(),
        p.requests,
        p.hold,
        p.inactivity.as_secs(),
        p.polling.as_secs(),
        p.maxpause.as_secs(),
        negotiated_ver(b.ver.as_deref()),
        escape_attr(to),
    ));
    if let Some(id) = authid {
        s.push_str(&format!(" authid='{}'", escape_attr(id)));
    }
    if secure {
        s.push_str(" secure='true'");
    }
    if let Some(rid) = b.rid.filter(|_| b.ack.is_some()) {
        s.push_str(&format!(" ack='{rid}'"));
    }
    s.push('>');
    let mut bytes = s.into_bytes();
    bytes.extend_from_slice(features);
    bytes.extend_from_slice(b"</body>");
    Bytes::from(bytes)
}

/// The BOSH version implemented (XEP-0124 1.11).
const BOSH_VERSION: (u32, u32) = (1, 11);

/// XEP-0124 §7.2: `ver` in the session creation response is the version the gateway implements
/// or the client's, whichever is lower; ours when the client sent none (or nothing readable).
fn negotiated_ver(client: Option<&str>) -> String {
    let parse = |v: &str| -> Option<(u32, u32)> {
        let (major, minor) = v.trim().split_once('.')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    };
    let (major, minor) = client
        .and_then(parse)
        .map_or(BOSH_VERSION, |c| c.min(BOSH_VERSION));
    format!("{major}.{minor}")
}

/// docs/protocol.md §8: a request for a session of another node of the cluster goes to that
/// node, whose answer is this request's; `None` for a session of this node (or of none). The
/// wrapper's sid is all such a request is read for here; the node holding it checks the rest.
fn to_owner(
    cluster: &Arc<Cluster>,
    data: &Bytes,
    ctx: &Context,
    peer: ClientAddr,
) -> Option<Waiting> {
    let sid = body::root_attributes(data)?.sid?;
    if cluster.owner(&sid) == Owner::Here {
        return None;
    }
    let cluster = cluster.clone();
    let data = data.clone();
    // The member holds the request for up to the session's wait, at most `max_wait_secs`.
    let deadline = Duration::from_secs(ctx.settings.config.bosh.max_wait_secs) + FORWARD_SLACK;
    let gone = || terminate_body(&Terminate::Condition("item-not-found"));
    Some(Waiting::Forwarded(Box::pin(async move {
        match cluster.find(&sid, FIND_BOUND).await {
            Owner::Peer(addr) => {
                match forward::bosh(cluster.link(), addr, peer.socket_addr(), data, deadline).await
                {
                    Ok(body) => body,
                    // No answer in time, or a broken one: the session may well be alive, so the
                    // client repeats the request (a recoverable error, XEP-0124 §17.3) and gets
                    // the owner's answer to that rid.
                    Err(e @ (ForwardError::Timeout | ForwardError::Answer)) => {
                        tracing::info!(%peer, node = %addr, error = %e, "forwarded BOSH request unanswered; the client repeats it");
                        retry_body()
                    }
                    Err(e) => {
                        tracing::info!(%peer, node = %addr, error = %e, "forwarded BOSH request failed");
                        gone()
                    }
                }
            }
            Owner::Unknown => {
                CLUSTER.forwarded("owner_unknown");
                gone()
            }
            Owner::Here => gone(),
        }
    })))
}

/// Beyond the longest hold, how long a forwarded request may take.
const FORWARD_SLACK: Duration = Duration::from_secs(10);

/// Answers a BOSH request that another node of the cluster forwarded here
/// (docs/protocol.md §8): with the body the session's task sends, as for a request of this
/// node's own; the forwarding node adds CORS and compression. `Err` is a refusal that is not
/// a BOSH answer (HTTP 400 for a body that is not BOSH).
pub async fn handle_forwarded(
    data: Bytes,
    ctx: Context,
    registry: Arc<Registry>,
    peer: ClientAddr,
) -> Result<Bytes, Response<Body>> {
    CLUSTER.received.inc();
    let cors = HeaderValue::from_static("*");
    Ok(match dispatch(&data, &ctx, &registry, peer, &cors, true) {
        Next::Respond(r) => return Err(*r),
        // Not reached: a forwarded request without a sid is answered at once.
        Next::Create(_) => terminate_body(&Terminate::Condition("bad-request")),
        Next::Route(waiting) => waiting.wait().await,
    })
}

/// Hands a request to its session's task.
fn route(b: BoshBody, registry: &Registry, kind: Kind) -> Waiting {
    let sid = b.sid.as_deref().unwrap_or_default();
    let (Some(handle), Some(rid)) = (registry.get(sid), b.rid) else {
        // XEP-0124 §17.2: unknown sid.
        return Waiting::Answered(terminate_body(&Terminate::Condition("item-not-found")));
    };
    let (reply, answer) = oneshot::channel();
    let req = Box::new(BoshRequest {
        rid,
        key: b.key,
        newkey: b.newkey,
        kind,
        payload: b.children,
        pause: b.pause,
        ack: b.ack,
        reply,
    });
    match handle.try_send(req) {
        Ok(()) => Waiting::Sent(answer),
        Err(TrySendError::Full(req)) => Waiting::Queued(handle, req, answer),
        Err(TrySendError::Closed(_)) => {
            Waiting::Answered(terminate_body(&Terminate::Condition("item-not-found")))
        }
    }
}

/// A request handed to its session's task, or the answer when it could not be.
enum Waiting {
    /// With the task: the answer comes through the receiver.
    Sent(oneshot::Receiver<Bytes>),
    /// The task's channel is full (a client with more requests in flight than it may have):
    /// the request goes once there is room.
    Queued(Handle, Routed, oneshot::Receiver<Bytes>),
    /// Answered already: unknown sid, ended session, bad input without a session.
    Answered(Bytes),
    /// On its way to the node of the cluster that holds the session.
    Forwarded(Pin<Box<dyn Future<Output = Bytes> + Send>>),
}

impl Waiting {
    /// The answer. If the client disconnects meanwhile, this future is dropped; the session
    /// keeps the response for a repeated rid, so nothing is lost.
    async fn wait(self) -> Bytes {
        let answer = match self {
            Waiting::Answered(body) => return body,
            Waiting::Forwarded(answer) => return answer.await,
            Waiting::Sent(answer) => answer,
            Waiting::Queued(handle, req, answer) => {
                if handle.send(req).await.is_err() {
                    return terminate_body(&Terminate::Condition("item-not-found"));
                }
                answer
            }
        };
        let started = std::time::Instant::now();
        let _held = HeldGauge::new();
        let body = answer
            .await
            .unwrap_or_else(|_| terminate_body(&Terminate::Condition("item-not-found")));
        METRICS
            .bosh_request_duration
            .observe(started.elapsed().as_secs_f64());
        body
    }
}

/// Counts a request as held while its handler waits, including when the client hangs up.
struct HeldGauge;

impl HeldGauge {
    fn new() -> Self {
        METRICS.bosh_held_requests.inc();
        HeldGauge
    }
}

impl Drop for HeldGauge {
    fn drop(&mut self) {
        METRICS.bosh_held_requests.dec();
    }
}

fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q0 = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !q0
        })
}

/// The `Access-Control-Allow-Origin` value, or `Err` for a refused origin.
fn cors_origin(ctx: &Context, origin: Option<&HeaderValue>) -> Result<HeaderValue, ()> {
    let allowed = &ctx.settings.config.bosh.allowed_origins;
    match origin {
        _ if allowed.is_empty() => Ok(HeaderValue::from_static("*")),
        // A copy, not a clone: a clone shares hyper's read buffer, and would keep all of it
        // for as long as the request is held.
        Some(o) if allowed.iter().any(|a| a.as_bytes() == o.as_bytes()) => {
            Ok(HeaderValue::from_bytes(o.as_bytes()).expect("a header value's own bytes"))
        }
        Some(_) => Err(()),
        // Not a cross-origin browser request (no Origin header).
        None => Ok(HeaderValue::from_static("*")),
    }
}

fn with_cors(mut r: Response<Body>, origin: HeaderValue) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::VARY,
        HeaderValue::from_static("Origin, Accept-Encoding"),
    );
    r
}

fn preflight(origin: HeaderValue) -> Response<Body> {
    let r = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS")
        .header(header::ACCESS_CONTROL_ALLOW_HEADERS, "Content-Type")
        .header(header::ACCESS_CONTROL_MAX_AGE, "86400")
        .body(Full::new(Bytes::new()))
        .expect("static response parts are valid");
    with_cors(r, origin)
}

fn respond(body: Bytes, gzip: bool, gzip_min: usize, cors: HeaderValue) -> Response<Body> {
    let mut builder = Response::builder().header(header::CONTENT_TYPE, "text/xml; charset=utf-8");
    let body = if gzip && body.len() >= gzip_min {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 2),
            flate2::Compression::fast(),
        );
        match enc.write_all(&body).and_then(|_| enc.finish()) {
            Ok(z) => {
                builder = builder.header(header::CONTENT_ENCODING, "gzip");
                Bytes::from(z)
            }
            Err(_) => body,
        }
    } else {
        body
    };
    let r = builder
        .body(Full::new(body))
        .expect("static response parts are valid");
    with_cors(r, cors)
}

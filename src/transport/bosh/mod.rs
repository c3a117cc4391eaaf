//! XMPP over BOSH (XEP-0124 + XEP-0206, PROTOCOL.md §4) at `/http-bind`: the HTTP side. A
//! session request opens an upstream stream through the shared session core and starts the
//! session's task; every later request is parsed here, routed by sid to that task over a
//! bounded channel, and answered with the `<body/>` the task sends back.

pub mod body;
pub mod session;
pub mod state;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use self::body::{Body as BoshBody, BodyError};
use self::state::{terminate_body, BoshState, Kind, Params, Request as BoshRequest, Terminate};
use crate::http::{text, Body};
use crate::metrics::METRICS;
use crate::server::Gateway;
use crate::session::{next_session_id, Session, Transport};
use crate::upstream::stream::StreamParams;
use crate::upstream::UpstreamError;
use crate::xml::escape_attr;

const SHARDS: usize = 64;

/// Live sessions by sid, sharded so concurrent requests rarely contend. Only lookups happen
/// under a lock; session state lives in the session's task.
pub struct Sessions {
    shards: Vec<Mutex<HashMap<Arc<str>, session::Handle>>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Sessions {
    fn shard(&self, sid: &str) -> &Mutex<HashMap<Arc<str>, session::Handle>> {
        // sids are random, so their first bytes spread evenly.
        let h = sid
            .bytes()
            .take(4)
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.shards[h % SHARDS]
    }

    fn get(&self, sid: &str) -> Option<session::Handle> {
        self.shard(sid)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sid)
            .cloned()
    }

    fn insert(&self, sid: Arc<str>, handle: session::Handle) {
        self.shard(&sid)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sid, handle);
    }

    fn remove(&self, sid: &str) {
        self.shard(sid)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sid);
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A new session id: 128 random bits from the operating system's CSPRNG-seeded generator.
fn new_sid() -> Arc<str> {
    format!("{:032x}", rand::random::<u128>()).into()
}

/// Handles one request to `/http-bind`.
pub async fn handle(req: Request<Incoming>, gw: Arc<Gateway>, peer: SocketAddr) -> Response<Body> {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let cors = match cors_origin(&gw, origin.as_ref()) {
        Ok(c) => c,
        Err(()) => {
            METRICS.input_rejected("origin");
            return text(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
    };
    match *req.method() {
        Method::OPTIONS => return preflight(cors),
        Method::POST => {}
        _ => {
            return with_cors(
                text(StatusCode::METHOD_NOT_ALLOWED, "BOSH requests are POSTed\n"),
                cors,
            )
        }
    }
    let gzip = accepts_gzip(req.headers());
    let settings = gw.settings();
    let limit = settings.config.bosh.max_body_bytes;
    let data = match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            METRICS.input_rejected("too_large");
            return with_cors(
                text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
                cors,
            );
        }
    };
    let parsed = body::parse(data.clone(), &settings.xml_limits);
    let answer = match parsed {
        Ok(b) if b.sid.is_none() && gw.shutdown.is_stopping() => {
            // PROTOCOL.md §6: no new sessions on a draining node. HTTP 503 (with the BOSH
            // answer in the body) lets a load balancer retry the request on another node,
            // even when a cookie still points here.
            let mut r = respond(
                terminate_body(&Terminate::Condition("system-shutdown")),
                false,
                usize::MAX,
                cors,
            );
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        Ok(b) if b.sid.is_none() => create(b, &gw, peer).await,
        Ok(b) => {
            let kind = if b.terminate {
                Kind::Terminate
            } else if b.restart {
                Kind::Restart
            } else {
                Kind::Normal
            };
            continue_session(b, &gw, kind).await
        }
        Err(BodyError::NotBosh(why)) => {
            METRICS.input_rejected("not_bosh");
            return with_cors(text(StatusCode::BAD_REQUEST, why), cors);
        }
        Err(e) => {
            let reason = match &e {
                BodyError::Xml(x) => x.reason(),
                _ => "bad_attribute",
            };
            METRICS.input_rejected(reason);
            tracing::info!(%peer, error = %e, "BOSH body refused");
            // PROTOCOL.md §2: bad input ends the session. The request goes to its session
            // without payload, which ends it only if the rid (and key) check out, so knowing
            // a sid is not enough to end someone else's session.
            match body::root_attributes(&data, &settings.xml_limits) {
                Some(root) if root.sid.is_some() && root.rid.is_some() => {
                    continue_session(
                        BoshBody {
                            children: Vec::new(),
                            ..root
                        },
                        &gw,
                        Kind::Invalid,
                    )
                    .await
                }
                _ => terminate_body(&Terminate::Condition("bad-request")),
            }
        }
    };
    respond(answer, gzip, settings.config.bosh.gzip_min_bytes, cors)
}

/// A session request (XEP-0124 §7.1, XEP-0206 §3).
async fn create(b: BoshBody, gw: &Arc<Gateway>, peer: SocketAddr) -> Bytes {
    let Some(rid) = b.rid else {
        return terminate_body(&Terminate::Condition("bad-request"));
    };
    let Some(to) = b.to.clone().filter(|t| !t.is_empty()) else {
        METRICS.input_rejected("no_to");
        return terminate_body(&Terminate::Condition("improper-addressing"));
    };
    let settings = gw.settings();
    let cfg = &settings.config.bosh;
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
    let stream = StreamParams {
        to: to.clone(),
        from: b.from.clone(),
        lang: b.lang.clone(),
    };
    let opened = match Session::open(gw, Transport::Bosh, stream)
        .instrument(span.clone())
        .await
    {
        Ok(o) => o,
        Err(e) => {
            span.in_scope(
                || tracing::info!(domain = %to, error = %e, "upstream stream not opened"),
            );
            return match e {
                UpstreamError::StreamError(err) => {
                    terminate_body(&Terminate::RemoteStreamError(err))
                }
                UpstreamError::UnknownDomain => {
                    terminate_body(&Terminate::Condition("host-unknown"))
                }
                _ => terminate_body(&Terminate::Condition("remote-connection-failed")),
            };
        }
    };
    let sid = new_sid();
    let created = creation_body(
        &sid,
        &params,
        &b,
        &to,
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
    gw.bosh_sessions.insert(sid.clone(), tx);
    span.in_scope(|| tracing::info!(domain = %to, "session open"));
    let task = session::run(
        sid,
        opened.session,
        state,
        rx,
        gw.clone(),
        gw.bosh_sessions.clone(),
    );
    gw.shutdown.spawn(task.instrument(span));
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

async fn continue_session(b: BoshBody, gw: &Gateway, kind: Kind) -> Bytes {
    let sid = b.sid.as_deref().unwrap_or_default();
    let (Some(handle), Some(rid)) = (gw.bosh_sessions.get(sid), b.rid) else {
        // XEP-0124 §17.2: unknown sid.
        return terminate_body(&Terminate::Condition("item-not-found"));
    };
    let (reply, answer) = oneshot::channel();
    let req = BoshRequest {
        rid,
        key: b.key,
        newkey: b.newkey,
        kind,
        payload: b.children,
        pause: b.pause,
        ack: b.ack,
        reply,
    };
    if handle.send(req).await.is_err() {
        return terminate_body(&Terminate::Condition("item-not-found"));
    }
    let started = std::time::Instant::now();
    let _held = HeldGauge::new();
    // If the client disconnects, this future is dropped; the session keeps the response for a
    // repeated rid, so nothing is lost.
    let body = answer
        .await
        .unwrap_or_else(|_| terminate_body(&Terminate::Condition("item-not-found")));
    METRICS
        .bosh_request_duration
        .observe(started.elapsed().as_secs_f64());
    body
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
fn cors_origin(gw: &Gateway, origin: Option<&HeaderValue>) -> Result<HeaderValue, ()> {
    let settings = gw.settings();
    let allowed = &settings.config.bosh.allowed_origins;
    match origin {
        _ if allowed.is_empty() => Ok(HeaderValue::from_static("*")),
        Some(o) if allowed.iter().any(|a| a.as_bytes() == o.as_bytes()) => Ok(o.clone()),
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

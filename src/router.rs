//! The HTTP routes of both listeners. The public listener: `/xmpp-websocket` (the WebSocket
//! adapter), `/http-bind` (the BOSH adapter), XEP-0156 host-meta and the static demo files. The
//! admin listener: `/healthz`, `/readyz` and `/metrics`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::client_addr::ClientAddr;
use crate::cluster::{self, auth, metrics::CLUSTER};
use crate::gateway::Gateway;
use crate::http::body::read_bounded;
use crate::http::{hostmeta, static_files, text, Body};
use crate::metrics::METRICS;
use crate::transport::{bosh, websocket};

/// The answer to a request of the public listener, on its way.
pub type Answer = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Routes one request of the public listener. `http_peer` sent it: the socket's peer, or the
/// client a trusted proxy's PROXY header named. `permit` is the connection's slot, held by a
/// WebSocket session for as long as it lives.
///
/// The routing itself is synchronous; what is left to wait for is one boxed future that owns
/// only what its route needs. A held BOSH request waits in it for up to `wait` seconds, so no
/// room is kept there for the request's headers or for the other routes.
pub fn public<P: Send + 'static>(
    req: Request<Incoming>,
    gw: &Gateway,
    http_peer: SocketAddr,
    permit: P,
) -> Answer {
    // One snapshot of the settings serves the whole request, even across a reload.
    let ctx = gw.context();
    let settings = ctx.settings.clone();
    // docs/protocol.md §7: what sessions are admitted and logged by.
    let client = |req: &Request<Incoming>| {
        let trusted = &settings.config.limits.trusted_proxies;
        ClientAddr::of_request(req.headers(), http_peer, trusted)
    };
    let ready = |r: Response<Body>| -> Answer { Box::pin(std::future::ready(r)) };
    let path = req.uri().path();
    match (req.method(), path) {
        (_, "/xmpp-websocket") => {
            let peer = client(&req);
            ready(websocket::upgrade(req, ctx, peer, permit))
        }
        (_, "/http-bind" | "/http-bind/") => {
            let peer = client(&req);
            Box::pin(bosh::handle(req, ctx, &gw.bosh, peer))
        }
        (&Method::OPTIONS, p) if p.starts_with("/.well-known/host-meta") => {
            ready(hostmeta::preflight())
        }
        (&Method::GET | &Method::HEAD, "/.well-known/host-meta") => {
            ready(hostmeta::xrd(&req, &settings))
        }
        (&Method::GET | &Method::HEAD, "/.well-known/host-meta.json") => {
            ready(hostmeta::json(&req, &settings))
        }
        (&Method::GET | &Method::HEAD, _) if settings.config.static_dir.is_some() => {
            Box::pin(async move { static_files::serve(&req, &settings).await })
        }
        _ => ready(text(StatusCode::NOT_FOUND, "not found\n")),
    }
}

/// Routes one request of a cluster node's internal listener (docs/protocol.md §8), from
/// `peer`: which node this is, and BOSH requests other nodes forward to the sessions held
/// here. Every request must be signed with the cluster's secret; anything else is 401.
pub fn cluster(req: Request<Incoming>, gw: &Gateway, peer: SocketAddr) -> Answer {
    let ready = |r: Response<Body>| -> Answer { Box::pin(std::future::ready(r)) };
    let Some(cluster) = gw.cluster.clone() else {
        return ready(text(StatusCode::NOT_FOUND, "not found\n"));
    };
    let ctx = gw.context();
    let registry = gw.bosh.clone();
    Box::pin(async move {
        let (parts, body) = req.into_parts();
        let method = parts.method.as_str();
        let path = parts.uri.path();
        if !matches!(
            (&parts.method, path),
            (&Method::GET, cluster::NODE_PATH) | (&Method::POST, cluster::BOSH_PATH)
        ) {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        let signature = parts.headers.get(auth::HEADER).map(|v| v.as_bytes());
        let refuse = |refused: auth::Refused| {
            CLUSTER.refused(refused.reason());
            // Counted; logged at debug only, so that refusals cannot flood the log.
            tracing::debug!(%peer, error = %refused, "cluster request refused");
            text(StatusCode::UNAUTHORIZED, "not signed by a member\n")
        };
        // No body is read for a request that cannot be a member's.
        if let Err(refused) = cluster.signer().precheck(signature) {
            return refuse(refused);
        }
        let limits = &ctx.settings.config.limits;
        let deadline = std::time::Duration::from_secs(limits.body_read_timeout_secs);
        let limit = ctx.settings.config.bosh.max_body_bytes;
        let data = match read_bounded(body, limit, deadline).await {
            Ok(d) => d.freeze(),
            Err(e) => return e.response(),
        };
        let client = parts
            .headers
            .get(auth::CLIENT_HEADER)
            .map_or(&[][..], |v| v.as_bytes());
        let client = std::str::from_utf8(client).unwrap_or_default();
        if let Err(refused) = cluster
            .signer()
            .verify(signature, method, path, client, &data)
        {
            return refuse(refused);
        }
        let answer = if parts.method == Method::GET {
            Bytes::from(cluster.tag().to_owned())
        } else {
            // The browser's address, for this node's logs; the forwarding node when it names
            // none.
            let browser = client.parse::<SocketAddr>().unwrap_or(peer);
            let forwarded =
                bosh::handler::handle_forwarded(data, ctx, registry, ClientAddr::from(browser));
            match forwarded.await {
                Ok(body) => body,
                Err(refused) => return refused,
            }
        };
        // The answer is signed too, for this request: only a member answers a member.
        let request_signature =
            std::str::from_utf8(signature.unwrap_or_default()).unwrap_or_default();
        let answer_signature = cluster.signer().sign_answer(request_signature, &answer);
        Response::builder()
            .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .header(auth::HEADER, answer_signature)
            .body(Full::new(answer))
            .expect("static response parts are valid")
    })
}

/// Routes one request of the admin listener.
pub async fn admin(req: Request<Incoming>, gw: &Gateway) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            // docs/protocol.md §6: not ready while draining or with nothing to serve.
            let settings = gw.settings();
            if gw.shutdown.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if settings.upstreams.route_count() == 0 {
                text(StatusCode::SERVICE_UNAVAILABLE, "no routes configured\n")
            } else if !settings.upstreams.ready().await {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no upstream endpoint answers\n",
                )
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET, "/metrics") => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .body(Full::new(Bytes::from(render_metrics(&gw.settings()))))
            .expect("static response parts are valid"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `/metrics`: the process's metrics and those built from the settings in force.
fn render_metrics(settings: &crate::settings::Settings) -> Vec<u8> {
    METRICS.render_with(
        settings.upstreams.endpoint_counts(),
        settings.pools.counts(),
    )
}

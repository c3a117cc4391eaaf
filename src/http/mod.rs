//! The hyper services: routing of the public listener (WebSocket upgrade, XEP-0156 host-meta,
//! static demo files) and of the admin listener (metrics, health, readiness).

pub mod hostmeta;
pub mod static_files;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::metrics::METRICS;
use crate::server::{ConnectionPermit, Gateway};

/// Response body used by every endpoint.
pub type Body = Full<Bytes>;

/// Routes one request of the public listener.
pub async fn public(
    req: Request<Incoming>,
    gw: Arc<Gateway>,
    peer: SocketAddr,
    permit: ConnectionPermit,
) -> Response<Body> {
    let path = req.uri().path();
    match (req.method(), path) {
        (_, "/xmpp-websocket") => crate::transport::websocket::upgrade(req, gw, peer, permit),
        (_, "/http-bind" | "/http-bind/") => crate::transport::bosh::handle(req, gw, peer).await,
        (&Method::OPTIONS, p) if p.starts_with("/.well-known/host-meta") => hostmeta::preflight(),
        (&Method::GET | &Method::HEAD, "/.well-known/host-meta") => hostmeta::xrd(&req, &gw),
        (&Method::GET | &Method::HEAD, "/.well-known/host-meta.json") => hostmeta::json(&req, &gw),
        (&Method::GET | &Method::HEAD, _) if gw.settings().config.static_dir.is_some() => {
            static_files::serve(&req, &gw).await
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Routes one request of the admin listener.
pub async fn admin(req: Request<Incoming>, gw: &Gateway) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            // PROTOCOL.md §6: not ready while draining or with nothing to serve.
            if gw.shutdown.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if gw.settings().upstreams.route_count() == 0 {
                text(StatusCode::SERVICE_UNAVAILABLE, "no routes configured\n")
            } else if !gw.settings().upstreams.reachable().await {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no upstream endpoint reachable\n",
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
            .body(Full::new(Bytes::from(METRICS.render())))
            .expect("static response parts are valid"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response parts are valid")
}

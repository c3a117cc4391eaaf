//! HTTP building blocks shared by every endpoint: the response body type, plain-text
//! responses, bounded request-body reading, XEP-0156 host-meta and the static demo files. The routes that use them are in
//! `router.rs`.

pub mod body;
pub mod hostmeta;
pub mod static_files;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

/// Marks a request that arrived over the public listener's own TLS (a request extension), so
/// that what it is told (host-meta's URLs) says `https://` and `wss://`.
#[derive(Debug, Clone, Copy)]
pub struct Secure;

/// Response body used by every endpoint.
pub type Body = Full<Bytes>;

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response parts are valid")
}

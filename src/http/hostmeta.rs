//! XEP-0156 discovery (PROTOCOL.md §5): `/.well-known/host-meta` (XRD) and
//! `/.well-known/host-meta.json` (JRD) list the public connection URLs, with CORS open so a web
//! client on another origin can read them.

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;

use super::Body;
use crate::server::Gateway;
use crate::xml::escape_attr;

const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";

/// The WebSocket URL announced: from config, or derived from the request's Host header (and
/// `X-Forwarded-Proto` from a TLS-terminating proxy).
fn websocket_url<B>(req: &Request<B>, gw: &Gateway) -> Option<String> {
    if let Some(url) = &gw.config.discovery.websocket_url {
        return Some(url.clone());
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    // A Host header is attacker-chosen: only host[:port] characters go into the document.
    let valid = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !valid {
        return None;
    }
    let secure = req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    Some(format!("{}://{host}/xmpp-websocket", if secure { "wss" } else { "ws" }))
}

fn respond(content_type: &'static str, body: String) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(header::CACHE_CONTROL, "max-age=300")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// The XRD document.
pub fn xrd<B>(req: &Request<B>, gw: &Gateway) -> Response<Body> {
    let mut doc = String::from("<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n");
    if let Some(url) = websocket_url(req, gw) {
        doc.push_str(&format!("  <Link rel='{REL_WEBSOCKET}' href='{}'/>\n", escape_attr(&url)));
    }
    doc.push_str("</XRD>\n");
    respond("application/xrd+xml; charset=utf-8", doc)
}

/// The JRD (JSON) document.
pub fn json<B>(req: &Request<B>, gw: &Gateway) -> Response<Body> {
    let links: Vec<String> = websocket_url(req, gw)
        .map(|url| format!("{{\"rel\":\"{REL_WEBSOCKET}\",\"href\":\"{}\"}}", json_escape(&url)))
        .into_iter()
        .collect();
    respond("application/json", format!("{{\"links\":[{}]}}\n", links.join(",")))
}

/// CORS preflight for the discovery documents.
pub fn preflight() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS")
        .header(header::ACCESS_CONTROL_MAX_AGE, "86400")
        .body(Full::new(Bytes::new()))
        .expect("static response parts are valid")
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

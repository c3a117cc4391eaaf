//! XEP-0156 discovery (docs/protocol.md §5): `/.well-known/host-meta` (XRD) and
//! `/.well-known/host-meta.json` (JRD) list the public connection URLs, with CORS open so a web
//! client on another origin can read them.

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;

use super::Body;
use crate::settings::Settings;
use crate::xml::escape_attr;

const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";

/// The announced links: from config, or derived from the request.
fn links<B>(req: &Request<B>, settings: &Settings) -> Vec<(&'static str, String)> {
    let d = &settings.config.discovery;
    let ws = d
        .websocket_url
        .clone()
        .or_else(|| derived_url(req, "ws", "/xmpp-websocket"));
    let bosh = d
        .bosh_url
        .clone()
        .or_else(|| derived_url(req, "http", "/http-bind"));
    [(REL_WEBSOCKET, ws), (REL_BOSH, bosh)]
        .into_iter()
        .filter_map(|(rel, url)| Some((rel, url?)))
        .collect()
}

/// A URL derived from the request's Host header (and `X-Forwarded-Proto` from a
/// TLS-terminating proxy): `scheme` is `ws` or `http`, made secure when the proxy says https.
fn derived_url<B>(req: &Request<B>, scheme: &str, path: &str) -> Option<String> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    // A Host header is attacker-chosen: only host[:port] characters go into the document.
    let valid = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !valid {
        return None;
    }
    let secure = req.extensions().get::<super::Secure>().is_some()
        || req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let scheme = if secure {
        format!("{scheme}s")
    } else {
        scheme.to_string()
    };
    Some(format!("{scheme}://{host}{path}"))
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
pub fn xrd<B>(req: &Request<B>, settings: &Settings) -> Response<Body> {
    let mut doc = String::from("<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n");
    for (rel, url) in links(req, settings) {
        doc.push_str(&format!(
            "  <Link rel='{rel}' href='{}'/>\n",
            escape_attr(&url)
        ));
    }
    doc.push_str("</XRD>\n");
    respond("application/xrd+xml; charset=utf-8", doc)
}

/// The JRD (JSON) document.
pub fn json<B>(req: &Request<B>, settings: &Settings) -> Response<Body> {
    let links: Vec<String> = links(req, settings)
        .into_iter()
        .map(|(rel, url)| format!("{{\"rel\":\"{rel}\",\"href\":\"{}\"}}", json_escape(&url)))
        .collect();
    respond(
        "application/json",
        format!("{{\"links\":[{}]}}\n", links.join(",")),
    )
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

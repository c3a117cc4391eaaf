//! Stream negotiation (RFC 6120 §4-§7) up to a bound resource: stream headers and features,
//! STARTTLS, SASL, and resource binding.

use bytes::Bytes;
use xmpp_gateway::xml::split::{Element, StreamHeader, StreamItem};
use xmpp_gateway::xml::{NS_SASL, NS_TLS};

use super::conn::{Conn, End};
use super::io::Io;
use super::sasl::{self, Pending, Step};
use super::server::Stats;
use crate::tag::{self, StartTag};

const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";

/// A connection that has bound a resource.
pub struct Bound {
    /// `user@domain`, lower case.
    pub bare: String,
    pub resource: String,
    /// ` from='user@domain/resource'`, escaped: what stanzas from this client are stamped with.
    pub from_attr: Bytes,
    /// The bind result, which the session sends once the connection is routable.
    pub result: Bytes,
}

impl Bound {
    /// `user@domain/resource`.
    pub fn full(&self) -> String {
        format!("{}/{}", self.bare, self.resource)
    }
}

/// Where a connection is in its negotiation.
struct State {
    /// The served domain of the current stream.
    domain: Option<String>,
    /// The authenticated localpart, after SASL success.
    user: Option<String>,
    /// A SASL exchange waiting for the client's response.
    pending: Option<Pending>,
}

/// Negotiates until a resource is bound.
pub async fn run(conn: &mut Conn) -> Result<Bound, End> {
    let mut state = State {
        domain: None,
        user: None,
        pending: None,
    };
    loop {
        match conn.next_item().await? {
            StreamItem::Header(header) => open(conn, &mut state, &header).await?,
            StreamItem::End => {
                conn.send(b"</stream:stream>").await?;
                return Err(End::Closed);
            }
            StreamItem::Element(element) => {
                if let Some(bound) = element_received(conn, &mut state, element).await? {
                    return Ok(bound);
                }
            }
        }
    }
}

/// Answers a stream header with ours and the features of this stage (RFC 6120 §4.3).
async fn open(conn: &mut Conn, state: &mut State, header: &StreamHeader) -> Result<(), End> {
    let domain = header.to.as_deref().and_then(|to| conn.shared.domain(to));
    let Some(domain) = domain.map(str::to_owned) else {
        return Err(End::Error("host-unknown"));
    };
    conn.send_header(&domain).await?;
    // RFC 6120 §6.4.6: the stream after SASL is for the same domain.
    if state.user.is_some() && state.domain.as_deref() != Some(domain.as_str()) {
        return Err(End::Error("host-unknown"));
    }
    let features = features(conn, state.user.is_some());
    state.domain = Some(domain);
    conn.send(features.as_bytes()).await
}

fn features(conn: &Conn, authenticated: bool) -> String {
    let mut out = String::from("<stream:features>");
    if authenticated {
        out.push_str("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>");
        out.push_str("<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>");
    } else {
        let tls_offered = conn.shared.tls.is_some() && !conn.io.is_tls();
        if tls_offered {
            out.push_str("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>");
            if conn.shared.config.require_tls {
                out.push_str("<required/>");
            }
            out.push_str("</starttls>");
        }
        // RFC 6120 §5.3.1: when TLS is mandatory, nothing else is offered before it.
        if !(tls_offered && conn.shared.config.require_tls) {
            out.push_str("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>");
            for mechanism in sasl::MECHANISMS {
                out.push_str(&format!("<mechanism>{mechanism}</mechanism>"));
            }
            out.push_str("</mechanisms>");
        }
    }
    out.push_str("</stream:features>");
    out
}

async fn element_received(
    conn: &mut Conn,
    state: &mut State,
    element: Element,
) -> Result<Option<Bound>, End> {
    let bytes = &element.bytes[..];
    let Some(tag) = tag::start_tag(bytes, 0) else {
        return Err(End::Error("not-well-formed"));
    };
    let ns = tag.ns(None);
    match (tag.local(), ns.as_deref()) {
        (b"starttls", Some(NS_TLS)) if state.user.is_none() => starttls(conn).await.map(|()| None),
        (b"auth", Some(NS_SASL)) if state.user.is_none() => {
            let mechanism = tag.attr("mechanism").map(|a| a.value().into_owned());
            let payload = tag::text(bytes, &tag).unwrap_or_default();
            if conn.shared.config.require_tls && !conn.io.is_tls() {
                return sasl_failure(conn, "encryption-required").await;
            }
            let domain = state.domain.clone().unwrap_or_default();
            let step = sasl::auth(
                mechanism.as_deref().unwrap_or_default(),
                payload.trim(),
                &domain,
                &conn.shared,
            );
            sasl_step(conn, state, step).await
        }
        (b"response", Some(NS_SASL)) if state.user.is_none() => {
            let Some(pending) = state.pending.take() else {
                return sasl_failure(conn, "malformed-request").await;
            };
            let payload = tag::text(bytes, &tag).unwrap_or_default();
            let domain = state.domain.clone().unwrap_or_default();
            let step = sasl::response(pending, payload.trim(), &domain, &conn.shared);
            sasl_step(conn, state, step).await
        }
        (b"abort", Some(NS_SASL)) if state.user.is_none() => {
            state.pending = None;
            sasl_failure(conn, "aborted").await
        }
        (b"iq", _) if state.user.is_some() => bind(state, bytes, &tag),
        // RFC 6120 §4.9.3.12: nothing but negotiation before a resource is bound.
        _ => Err(End::Error("not-authorized")),
    }
}

/// RFC 6120 §5.4.2: `<proceed/>`, the TLS handshake, and a fresh stream.
async fn starttls(conn: &mut Conn) -> Result<(), End> {
    let Some(acceptor) = conn.shared.tls.clone().filter(|_| !conn.io.is_tls()) else {
        conn.send(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>")
            .await?;
        return Err(End::Closed);
    };
    conn.send(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await?;
    // Bytes sent after <starttls/> but before the handshake would be read as if they had
    // come over TLS (the STARTTLS injection class of bugs): refuse them.
    if conn.splitter.buffered() != 0 {
        return Err(End::Closed);
    }
    let Io::Plain(tcp) = std::mem::replace(&mut conn.io, Io::Closed) else {
        return Err(End::Closed);
    };
    let tls = acceptor.accept(tcp).await?;
    conn.io = Io::Tls(Box::new(tls));
    conn.splitter.reset();
    conn.header_sent = false;
    Ok(())
}

async fn sasl_failure(conn: &mut Conn, condition: &str) -> Result<Option<Bound>, End> {
    let failure =
        format!("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{condition}/></failure>");
    conn.send(failure.as_bytes()).await?;
    Ok(None)
}

async fn sasl_step(conn: &mut Conn, state: &mut State, step: Step) -> Result<Option<Bound>, End> {
    match step {
        Step::Challenge(payload, pending) => {
            state.pending = Some(pending);
            let challenge = format!(
                "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</challenge>",
                sasl::encode(&payload)
            );
            conn.send(challenge.as_bytes()).await?;
        }
        Step::Failure(condition) => return sasl_failure(conn, condition).await,
        Step::Success { user, data } => {
            let success = match data {
                Some(data) => format!(
                    "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</success>",
                    sasl::encode(&data)
                ),
                None => "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>".to_owned(),
            };
            conn.send(success.as_bytes()).await?;
            Stats::add(&conn.shared.stats.logins);
            state.user = Some(user.to_lowercase());
            // RFC 6120 §6.4.6: a new stream follows, over the same socket.
            conn.splitter.reset();
            conn.header_sent = false;
        }
    }
    Ok(None)
}

/// RFC 6120 §7: `<iq type='set'><bind><resource/></bind></iq>`. The client's resource if it
/// names a usable one, a generated one otherwise.
fn bind(state: &State, bytes: &[u8], iq: &StartTag<'_>) -> Result<Option<Bound>, End> {
    let child = tag::first_child(bytes, iq);
    let is_bind = iq.attr("type").is_some_and(|t| t.raw == b"set")
        && child
            .as_ref()
            .is_some_and(|c| c.local() == b"bind" && c.ns(Some(iq)).as_deref() == Some(NS_BIND));
    let (Some(child), true) = (child, is_bind) else {
        return Err(End::Error("not-authorized"));
    };
    let resource = tag::first_child(bytes, &child)
        .filter(|r| r.local() == b"resource")
        .and_then(|r| tag::text(bytes, &r))
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty() && r.len() <= 1023 && !r.chars().any(char::is_control))
        .unwrap_or_else(generated_resource);
    let (Some(user), Some(domain)) = (&state.user, &state.domain) else {
        return Err(End::Error("not-authorized"));
    };
    let bare = format!("{user}@{domain}");
    let full = format!("{bare}/{resource}");
    let escaped = tag::escape(&full);
    let mut result = String::from("<iq type='result'");
    if let Some(id) = iq.attr("id") {
        result.push_str(" id=");
        push_raw(&mut result, id);
    }
    result.push_str(&format!(
        "><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>{escaped}</jid></bind></iq>"
    ));
    Ok(Some(Bound {
        from_attr: Bytes::from(format!(" from='{escaped}'")),
        result: Bytes::from(result),
        bare,
        resource,
    }))
}

/// An attribute value as the client wrote it, in its own quotes (still escaped).
pub fn push_raw(out: &mut String, attr: &tag::Attr<'_>) {
    let quote = attr.quote as char;
    out.push(quote);
    out.push_str(&String::from_utf8_lossy(attr.raw));
    out.push(quote);
}

fn generated_resource() -> String {
    use rand::Rng;
    format!("fixture-{:012x}", rand::thread_rng().gen::<u64>() >> 16)
}

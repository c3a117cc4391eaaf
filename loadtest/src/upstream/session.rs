//! A bound connection: read stanzas, stamp them with the sender's full JID, hand them to the
//! recipient's writer; answer what is addressed to the server itself.
//!
//! This is the fixture's hot path. Per stanza: one scan of the start tag, one copy (the
//! stanza with `from` replaced), one shard lock held only for the lookup, one queue send.

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;
use xmpp_gateway::xml::split::StreamItem;

use super::conn::{stream_error, Conn};
use super::negotiate::{push_raw, Bound};
use super::server::{Shared, Stats};
use super::writer::{self, Out, Outbox};
use crate::tag::{self, StartTag};

/// Serves a bound connection until either side ends it.
pub async fn run(conn: Conn, bound: Bound) {
    let Conn {
        io,
        mut splitter,
        shared,
        id,
        ..
    } = conn;
    let Some((mut reader, writer_half)) = io.split() else {
        return;
    };
    let (outbox, queue) = writer::outbox();
    // The bind result goes first into the queue, and the writer starts only once the
    // connection is in the table: a client that has read its bind result is routable.
    if outbox.try_send(Out::Data(bound.result.clone())).is_err() {
        return;
    }
    let replaced = shared
        .table
        .bind(&bound.bare, &bound.resource, id, outbox.clone());
    let (done, mut writer_gone) = oneshot::channel();
    tokio::spawn(writer::run(writer_half, queue, done));
    if let Some(old) = replaced {
        // RFC 6120 §7.7.2.2: the resource was bound already; the older session goes.
        let _ = old.send(Out::Close(stream_error("conflict"))).await;
    }
    let mut session = Session {
        shared: &shared,
        bound: &bound,
        outbox: &outbox,
    };
    let last_words = 'read: loop {
        tokio::select! {
            _ = &mut writer_gone => break None,
            read = reader.read_into(splitter.buffer_mut()) => match read {
                Ok(0) | Err(_) => break None,
                Ok(_) => {}
            },
        }
        loop {
            match splitter.next_item() {
                Ok(None) => break,
                Ok(Some(StreamItem::Element(element))) => session.stanza(element.bytes).await,
                Ok(Some(StreamItem::End)) => {
                    break 'read Some(Bytes::from_static(b"</stream:stream>"))
                }
                // A restart the fixture did not ask for: the splitter refuses it before this.
                Ok(Some(StreamItem::Header(_))) => {
                    break 'read Some(stream_error("policy-violation"))
                }
                Err(err) => break 'read Some(stream_error(err.condition())),
            }
        }
        splitter.release_idle_memory();
    };
    // Offline before the client can see the stream end: whoever it told it was leaving
    // finds it gone.
    shared.table.unbind(&bound.bare, &bound.resource, id);
    if let Some(last_words) = last_words {
        let _ = outbox.send(Out::Close(last_words)).await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Presence,
    Iq,
}

struct Session<'a> {
    shared: &'a Shared,
    bound: &'a Bound,
    /// This connection's own queue, for answers from the server.
    outbox: &'a Outbox,
}

impl Session<'_> {
    async fn stanza(&mut self, bytes: Bytes) {
        let Some(tag) = tag::start_tag(&bytes, 0) else {
            return;
        };
        let kind = match tag.name {
            b"message" => Kind::Message,
            b"presence" => Kind::Presence,
            b"iq" => Kind::Iq,
            // Nothing else was offered (no stream management, no compression).
            _ => return,
        };
        let to = tag.attr("to").map(|a| a.value());
        let Some(to) = to.as_deref().filter(|to| !self.is_server_or_self(to)) else {
            return self.for_server(kind, &bytes, &tag).await;
        };
        let (bare, resource) = match to.split_once('/') {
            Some((bare, resource)) => (bare, Some(resource)),
            None => (to, None),
        };
        let bare = lower(bare);
        if let Some(recipient) = self.shared.table.lookup(&bare, resource) {
            let stamped = stamp(&bytes, &tag, &self.bound.from_attr);
            if recipient.send(Out::Data(stamped)).await.is_ok() {
                Stats::add(&self.shared.stats.routed);
                return;
            }
        }
        self.offline(kind, &tag).await;
    }

    /// `to` is a served domain or the sender's own bare JID: the server answers.
    fn is_server_or_self(&self, to: &str) -> bool {
        self.shared.domain(to).is_some() || to.eq_ignore_ascii_case(&self.bound.bare)
    }

    /// RFC 6121 §8.5.2: no such resource online.
    async fn offline(&mut self, kind: Kind, tag: &StartTag<'_>) {
        if kind == Kind::Iq && is_request(tag) {
            return self.iq_error(tag, "service-unavailable").await;
        }
        Stats::add(&self.shared.stats.dropped);
    }

    /// A stanza for the server itself (RFC 6120 §10.3).
    async fn for_server(&mut self, kind: Kind, bytes: &[u8], tag: &StartTag<'_>) {
        match kind {
            // Accepted; the fixture keeps no rosters, so there is nobody to broadcast to.
            Kind::Presence => {}
            Kind::Message => Stats::add(&self.shared.stats.dropped),
            Kind::Iq if !is_request(tag) => {}
            Kind::Iq => {
                let child = tag::first_child(bytes, tag);
                let payload = child.as_ref().map(|c| (c.local(), c.ns(Some(tag))));
                let is_get = tag.attr("type").is_some_and(|t| t.raw == b"get");
                match payload.as_ref().map(|(l, ns)| (*l, ns.as_deref())) {
                    // XEP-0199 ping; the session establishment of RFC 3921 §3, now a no-op.
                    Some((b"ping", Some("urn:xmpp:ping")))
                    | Some((b"session", Some("urn:ietf:params:xml:ns:xmpp-session"))) => {
                        self.iq_reply(tag, "result", "").await
                    }
                    // RFC 6121 §2.1.3: an empty roster.
                    Some((b"query", Some("jabber:iq:roster"))) if is_get => {
                        self.iq_reply(tag, "result", "<query xmlns='jabber:iq:roster'/>")
                            .await
                    }
                    _ => self.iq_error(tag, "service-unavailable").await,
                }
            }
        }
    }

    async fn iq_error(&mut self, tag: &StartTag<'_>, condition: &str) {
        let error = format!(
            "<error type='cancel'><{condition} \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        );
        self.iq_reply(tag, "error", &error).await
    }

    /// An iq answer to the client: same `id`, `from` the original `to`.
    async fn iq_reply(&mut self, tag: &StartTag<'_>, kind: &str, payload: &str) {
        let mut out = format!("<iq type='{kind}'");
        if let Some(id) = tag.attr("id") {
            out.push_str(" id=");
            push_raw(&mut out, id);
        }
        if let Some(to) = tag.attr("to") {
            out.push_str(" from=");
            push_raw(&mut out, to);
        }
        out.push_str(" to='");
        out.push_str(&tag::escape(&self.bound.full()));
        out.push('\'');
        if payload.is_empty() {
            out.push_str("/>");
        } else {
            out.push('>');
            out.push_str(payload);
            out.push_str("</iq>");
        }
        // Our own writer drains this queue on its own task, so waiting here cannot deadlock.
        let _ = self.outbox.send(Out::Data(Bytes::from(out))).await;
    }
}

/// `get` or `set`: an iq that must be answered (RFC 6120 §8.2.3).
fn is_request(tag: &StartTag<'_>) -> bool {
    tag.attr("type")
        .is_some_and(|t| t.raw == b"get" || t.raw == b"set")
}

/// JIDs are compared in lower case (the localpart and domain are case-insensitive in the
/// cases a benchmark uses); no allocation when the JID already is.
fn lower(bare: &str) -> std::borrow::Cow<'_, str> {
    if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(bare.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(bare)
    }
}

/// The stanza with `from_attr` right after its name and any `from` the client wrote removed
/// (RFC 6120 §8.1.2.1: the server stamps the sender's full JID).
pub fn stamp(bytes: &Bytes, tag: &StartTag<'_>, from_attr: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(bytes.len() + from_attr.len());
    out.extend_from_slice(&bytes[..tag.name_end]);
    out.extend_from_slice(from_attr);
    match tag.attr("from") {
        Some(from) => {
            out.extend_from_slice(&bytes[tag.name_end..from.span.start]);
            out.extend_from_slice(&bytes[from.span.end..]);
        }
        None => out.extend_from_slice(&bytes[tag.name_end..]),
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamping_replaces_a_written_from_and_adds_one_otherwise() {
        let from = b" from='a@d/r'";
        let forged = Bytes::from_static(b"<message to='b@d' from='eve@d/x'><body/></message>");
        let tag = tag::start_tag(&forged, 0).unwrap();
        assert_eq!(
            &stamp(&forged, &tag, from)[..],
            b"<message from='a@d/r' to='b@d'><body/></message>"
        );
        let plain = Bytes::from_static(b"<presence/>");
        let tag = tag::start_tag(&plain, 0).unwrap();
        assert_eq!(&stamp(&plain, &tag, from)[..], b"<presence from='a@d/r'/>");
    }
}

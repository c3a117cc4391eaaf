//! A browser-like BOSH client (XEP-0124, XEP-0206) over raw HTTP/1.1 for the fault and overload
//! tests: a session's sid and next rid, requests on a kept-alive connection, and checks that
//! every answer is one standalone `<body/>` (docs/protocol.md §4).

use std::net::SocketAddr;

use super::*;

pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
pub const XML: (&str, &str) = ("Content-Type", "text/xml; charset=utf-8");
/// The rid of every session request; large, as real clients pick them (XEP-0124 §14.1).
pub const FIRST_RID: u64 = 4_095_000_001;

/// A session request for [`DOMAIN`] with extra attributes (e.g. `" wait='10' hold='1'"`).
pub fn session_request(rid: u64, attrs: &str) -> String {
    format!(
        "<body xmlns='{NS_HTTPBIND}' content='text/xml; charset=utf-8' to='{DOMAIN}' rid='{rid}' \
         xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'{attrs}/>"
    )
}

/// An answer to a BOSH request: HTTP 200, text/xml, one standalone `<body/>`; returns its text.
pub fn check_body(reply: &HttpReply) -> String {
    assert_eq!(reply.status, 200, "{reply:?}");
    let content_type = reply.header("content-type").expect("content-type");
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    let text = reply.text();
    let root = parse_standalone(&text);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_HTTPBIND, "body"),
        "{text}"
    );
    text
}

/// A session request refused as docs/protocol.md §7 has it for BOSH: 503, `Retry-After` in
/// seconds, and a terminate body saying `policy-violation`.
pub fn assert_refused(reply: &HttpReply) {
    assert_eq!(reply.status, 503, "{reply:?}");
    let retry: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry >= 1, "{reply:?}");
    let text = reply.text();
    assert_eq!(
        terminate_condition(&text).as_deref(),
        Some("policy-violation"),
        "{text}"
    );
}

/// The `condition` of a `type='terminate'` body, `Some("")` for one without a condition,
/// `None` for a body that does not terminate.
pub fn terminate_condition(text: &str) -> Option<String> {
    let root = parse_standalone(text);
    (root.attr("type") == Some("terminate"))
        .then(|| root.attr("condition").unwrap_or_default().to_string())
}

/// The `id` attributes in `text`, in order.
pub fn ids(text: &str) -> Vec<String> {
    text.split(" id='")
        .skip(1)
        .map(|rest| rest.split('\'').next().unwrap_or_default().to_string())
        .collect()
}

/// A BOSH session seen from the browser.
pub struct BoshClient {
    pub addr: SocketAddr,
    /// The kept-alive connection requests go on.
    pub conn: HttpConn,
    pub sid: String,
    /// The last rid used.
    pub rid: u64,
}

impl BoshClient {
    /// Sends a session request on a new connection without waiting for the answer.
    pub async fn send_session_request(addr: SocketAddr, attrs: &str) -> HttpConn {
        let mut conn = HttpConn::connect(addr).await;
        let body = session_request(FIRST_RID, attrs);
        conn.send("POST", "/http-bind", &[XML], body.as_bytes())
            .await;
        conn
    }

    /// The session `conn`'s session request created, from its answer `reply`.
    pub fn created(addr: SocketAddr, conn: HttpConn, reply: &HttpReply) -> Self {
        let text = check_body(reply);
        assert_eq!(terminate_condition(&text), None, "{text}");
        let sid = parse_standalone(&text)
            .attr("sid")
            .unwrap_or_else(|| panic!("no sid: {text}"))
            .to_string();
        Self {
            addr,
            conn,
            sid,
            rid: FIRST_RID,
        }
    }

    /// A request body for this session.
    pub fn body(&self, rid: u64, attrs: &str, payload: &str) -> String {
        format!(
            "<body xmlns='{NS_HTTPBIND}' sid='{}' rid='{rid}'{attrs}>{payload}</body>",
            self.sid
        )
    }

    /// The body of the next request (rid + 1).
    pub fn next_body(&mut self, attrs: &str, payload: &str) -> String {
        self.rid += 1;
        self.body(self.rid, attrs, payload)
    }

    /// Sends the next request without waiting for its answer (it may be held).
    pub async fn send(&mut self, attrs: &str, payload: &str) {
        let body = self.next_body(attrs, payload);
        self.conn
            .send("POST", "/http-bind", &[XML], body.as_bytes())
            .await;
    }

    /// The answer to the last request sent, within [`TIMEOUT`].
    pub async fn response(&mut self) -> String {
        check_body(&self.conn.response().await)
    }

    /// Sends the next request and reads its answer.
    pub async fn request(&mut self, attrs: &str, payload: &str) -> String {
        self.send(attrs, payload).await;
        self.response().await
    }

    /// Sends `stanza` (whose id is `id`) and polls until an answer carries `id`; every answer
    /// on the way must be alive and carry nothing else. Returns how long it took.
    pub async fn round_trip(&mut self, stanza: &str, id: &str) -> Duration {
        let started = tokio::time::Instant::now();
        let mut answer = self.request("", stanza).await;
        loop {
            assert_eq!(terminate_condition(&answer), None, "{answer}");
            let got = ids(&answer);
            if got.iter().any(|i| i == id) {
                assert_eq!(got, vec![id.to_string()], "{answer}");
                return started.elapsed();
            }
            assert!(
                got.is_empty(),
                "unexpected stanzas waiting for {id}: {answer}"
            );
            answer = self.request("", "").await;
        }
    }

    /// Ends the session (`type='terminate'`) and checks the answer.
    pub async fn terminate(&mut self) {
        let answer = self.request(" type='terminate'", "").await;
        assert_eq!(
            terminate_condition(&answer).as_deref(),
            Some(""),
            "{answer}"
        );
    }
}

//! The signature every request between nodes carries (docs/protocol.md §8): HMAC-SHA256 under
//! the shared secret over the time, the method, the path, the client's address and the body,
//! so the internal listener serves only the nodes that know the secret, and a request seen on
//! the wire can neither be changed nor replayed once its time is out of the window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

/// The header that carries the signature: `t=<unix seconds>,sig=<hex>`.
pub const HEADER: &str = "x-xmpp-gateway-cluster";
/// The header that carries the browser's address to the node holding the session, for its
/// logs (signed with the rest).
pub const CLIENT_HEADER: &str = "x-xmpp-gateway-client";
/// How far a request's time may be from the receiver's clock.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Why a request between nodes was refused (`cluster_requests_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No signature header, or one that does not parse.
    #[error("no signature")]
    Missing,
    /// Signed too long ago or too far ahead: a replay or a clock far off.
    #[error("signature time outside the window")]
    Stale,
    /// A signature that does not fit: another secret, or a changed request.
    #[error("bad signature")]
    Bad,
}

impl Refused {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Missing => "missing",
            Refused::Stale => "stale",
            Refused::Bad => "bad_signature",
        }
    }
}

/// Signs and checks requests with the cluster's secret.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    /// A signer for `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The HMAC of `head` followed by `body`, computed without copying the body.
    fn mac(&self, head: &str, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(head.as_bytes());
        ctx.update(body);
        ctx.sign()
    }

    /// Whether `sig` is the HMAC of `head` followed by `body`, compared in constant time: how
    /// much of a guess fits says nothing.
    fn fits(&self, head: &str, body: &[u8], sig: &[u8]) -> bool {
        let mut signed = Vec::with_capacity(head.len() + body.len());
        signed.extend_from_slice(head.as_bytes());
        signed.extend_from_slice(body);
        hmac::verify(&self.key, &signed, sig).is_ok()
    }

    /// The signature header's value for a request sent now.
    pub fn sign(&self, method: &str, path: &str, client: &str, body: &[u8]) -> String {
        let time = now();
        let tag = self.mac(&request_head(time, method, path, client), body);
        format!("t={time},sig={}", hex(tag.as_ref()))
    }

    /// Refuses at once a request whose signature header is missing, malformed or out of the
    /// time window, before its body is read; `verify` checks the rest.
    pub fn precheck(&self, header: Option<&[u8]>) -> Result<(), Refused> {
        fresh(header).map(|_| ())
    }

    /// Checks `header` (the signature header's value, if any) against the request.
    pub fn verify(
        &self,
        header: Option<&[u8]>,
        method: &str,
        path: &str,
        client: &str,
        body: &[u8],
    ) -> Result<(), Refused> {
        let (time, sig) = fresh(header)?;
        let head = request_head(time, method, path, client);
        self.fits(&head, body, &sig)
            .then_some(())
            .ok_or(Refused::Bad)
    }

    /// The signature of an answer: over the signature of the request it answers and the
    /// answer's body, so that only a member can answer, and only this request.
    pub fn sign_answer(&self, request_signature: &str, body: &[u8]) -> String {
        hex(self.mac(&answer_head(request_signature), body).as_ref())
    }

    /// Whether `header` (an answer's signature header) signs `body` as the answer to the
    /// request signed `request_signature`.
    pub fn verify_answer(
        &self,
        request_signature: &str,
        header: Option<&[u8]>,
        body: &[u8],
    ) -> bool {
        header
            .and_then(|h| unhex(std::str::from_utf8(h).ok()?))
            .is_some_and(|sig| self.fits(&answer_head(request_signature), body, &sig))
    }
}

/// What a request's signature covers ahead of its body.
fn request_head(time: u64, method: &str, path: &str, client: &str) -> String {
    format!("{time}\n{method} {path}\n{client}\n")
}

/// What an answer's signature covers ahead of its body.
fn answer_head(request_signature: &str) -> String {
    format!("answer\n{request_signature}\n")
}

/// The time and signature of a request's header, if it parses and its time is in the window.
fn fresh(header: Option<&[u8]>) -> Result<(u64, Vec<u8>), Refused> {
    let (time, sig) = header.and_then(parse).ok_or(Refused::Missing)?;
    if now().abs_diff(time) > WINDOW.as_secs() {
        return Err(Refused::Stale);
    }
    Ok((time, sig))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `t=<secs>,sig=<64 hex digits>`.
fn parse(value: &[u8]) -> Option<(u64, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?;
    let (t, sig) = value.split_once(',')?;
    let time = t.strip_prefix("t=")?.parse().ok()?;
    Some((time, unhex(sig.strip_prefix("sig=")?)?))
}

/// 64 hex digits: an HMAC-SHA256.
fn unhex(sig: &str) -> Option<Vec<u8>> {
    if sig.len() != 64 {
        return None;
    }
    (0..sig.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(sig.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_and_any_change_does_not() {
        let s = Signer::new(b"0123456789abcdef0123");
        let h = s.sign("POST", "/cluster/v1/bosh", "192.0.2.7:5000", b"<body/>");
        let ok = |m, p, c, b: &[u8]| s.verify(Some(h.as_bytes()), m, p, c, b);
        let browser = "192.0.2.7:5000";
        assert_eq!(ok("POST", "/cluster/v1/bosh", browser, b"<body/>"), Ok(()));
        // Any part changed: the method, the path, the browser's address, the body.
        for (method, path, client, body) in [
            ("GET", "/cluster/v1/bosh", browser, &b"<body/>"[..]),
            ("POST", "/cluster/v1/node", browser, b"<body/>"),
            ("POST", "/cluster/v1/bosh", "192.0.2.8:5000", b"<body/>"),
            ("POST", "/cluster/v1/bosh", browser, b"<body />"),
        ] {
            assert_eq!(
                ok(method, path, client, body),
                Err(Refused::Bad),
                "{method} {path} {client}"
            );
        }
        let other = Signer::new(b"another secret of the same size");
        assert_eq!(
            other.verify(
                Some(h.as_bytes()),
                "POST",
                "/cluster/v1/bosh",
                "192.0.2.7:5000",
                b"<body/>"
            ),
            Err(Refused::Bad)
        );
    }

    #[test]
    fn an_answer_verifies_only_for_its_request_and_body() {
        let s = Signer::new(b"0123456789abcdef0123");
        let request = s.sign("POST", "/cluster/v1/bosh", "", b"<body/>");
        let other = s.sign("POST", "/cluster/v1/bosh", "", b"<body rid='2'/>");
        let sig = s.sign_answer(&request, b"<body>a</body>");
        assert!(s.verify_answer(&request, Some(sig.as_bytes()), b"<body>a</body>"));
        assert!(!s.verify_answer(&request, Some(sig.as_bytes()), b"<body>b</body>"));
        assert!(!s.verify_answer(&other, Some(sig.as_bytes()), b"<body>a</body>"));
        assert!(!s.verify_answer(&request, None, b"<body>a</body>"));
        let impostor = Signer::new(b"not the cluster's secret at all")
            .sign_answer(&request, b"<body>a</body>");
        assert!(!s.verify_answer(&request, Some(impostor.as_bytes()), b"<body>a</body>"));
    }

    #[test]
    fn a_missing_malformed_or_stale_signature_is_refused() {
        let s = Signer::new(b"0123456789abcdef0123");
        let v = |h: Option<&str>| s.verify(h.map(str::as_bytes), "GET", "/", "", b"");
        assert_eq!(v(None), Err(Refused::Missing));
        assert_eq!(v(Some("t=1,sig=zz")), Err(Refused::Missing));
        assert_eq!(v(Some("sig=00")), Err(Refused::Missing));
        let old = now() - WINDOW.as_secs() - 5;
        let tag = s.mac(&request_head(old, "GET", "/", ""), b"");
        let stale = format!("t={old},sig={}", hex(tag.as_ref()));
        assert_eq!(v(Some(&stale)), Err(Refused::Stale));
        assert_eq!(s.precheck(Some(stale.as_bytes())), Err(Refused::Stale));
        assert_eq!(s.precheck(None), Err(Refused::Missing));
        let recent = now();
        let tag = s.mac(&request_head(recent, "GET", "/", ""), b"");
        assert_eq!(
            v(Some(&format!("t={recent},sig={}", hex(tag.as_ref())))),
            Ok(())
        );
    }
}

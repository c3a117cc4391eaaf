//! Shared helpers for the integration tests: a gateway on 127.0.0.1 port 0, a scripted upstream
//! XMPP server (plain or TLS, with a PKI generated at test time), a WebSocket client speaking
//! RFC 7395, raw HTTP over a `TcpStream`, and a checker that a frame stands alone as an XML
//! document.
//!
//! Every wait is bounded by a timeout and waits on an event (bytes, a frame, EOF), never on a
//! sleep, so a failing test fails in seconds with a message saying what did not arrive.

#![allow(dead_code)] // each test binary uses a different subset

pub mod bosh;
pub mod peers;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response as WsResponse;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use xmpp_gateway::config::{Config, RouteConfig, TlsPolicy};
use xmpp_gateway::gateway::Gateway;
use xmpp_gateway::server::Server;

/// The domain every test serves.
pub const DOMAIN: &str = "example.test";
/// Upper bound for any single wait in a test.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub const NS_CLIENT: &str = "jabber:client";
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
pub const NS_STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// The closing tag of an XMPP stream.
pub const STREAM_END: &str = "</stream:stream>";

/// Pre-TLS features of a typical server: STARTTLS plus SASL with a channel-binding mechanism.
pub const FEATURES_STARTTLS_AND_SASL: &str = "<stream:features>\
<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
<mechanism>SCRAM-SHA-1-PLUS</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism>\
</mechanisms></stream:features>";

/// Features a server offers when STARTTLS is mandatory.
pub const FEATURES_STARTTLS_REQUIRED: &str = "<stream:features>\
<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
</stream:features>";

/// Post-TLS (or plain-only) SASL features.
pub const FEATURES_SASL: &str = "<stream:features>\
<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
<mechanism>SCRAM-SHA-1-PLUS</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism>\
</mechanisms></stream:features>";

/// Post-SASL features.
pub const FEATURES_BIND: &str = "<stream:features>\
<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><sm xmlns='urn:xmpp:sm:3'/>\
</stream:features>";

// ---------------------------------------------------------------------------------------------
// Configuration and the gateway under test
// ---------------------------------------------------------------------------------------------

/// A route for `domain` to the given endpoints.
///
/// Without health checks: the tests count the connections sessions make, and a check is one
/// more (the checks have tests of their own, which turn them on).
pub fn route(domain: &str, endpoints: &[SocketAddr], tls: TlsPolicy) -> RouteConfig {
    RouteConfig {
        endpoints: endpoints.iter().map(ToString::to_string).collect(),
        tls,
        check_interval_secs: 0,
        ..RouteConfig::new(domain)
    }
}

/// A configuration listening on ephemeral loopback ports with the given routes.
pub fn config(routes: Vec<RouteConfig>) -> Config {
    let mut config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        routes,
        ..Config::default()
    };
    // Keep failure paths fast; individual tests tighten further.
    config.limits.connect_timeout_secs = 3;
    config.limits.open_timeout_secs = 5;
    config
}

/// [`DOMAIN`] routed to one plain (`tls = disabled`) upstream.
pub fn plain_config(upstream: SocketAddr) -> Config {
    config(vec![route(DOMAIN, &[upstream], TlsPolicy::Disabled)])
}

/// Waits until the async check `holds` is true, looking every 20 ms; fails naming `what`
/// after [`TIMEOUT`].
pub async fn eventually<F, Fut>(what: &str, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !holds().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {TIMEOUT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway serving on ephemeral ports inside the test's runtime.
pub struct TestGateway {
    /// Public listener (WebSocket, host-meta).
    pub addr: SocketAddr,
    /// Admin listener (health, readiness, metrics).
    pub admin_addr: SocketAddr,
    /// The shared state, e.g. to begin a drain.
    pub gateway: Arc<Gateway>,
    task: JoinHandle<()>,
}

/// Binds the gateway on the loopback ports of `config` and runs it.
pub async fn start_gateway(mut config: Config) -> TestGateway {
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = Server::bind(config).await.expect("gateway binds");
    let addr = server.local_addr();
    let admin_addr = server.admin_addr();
    let gateway = server.gateway();
    let task = tokio::spawn(server.run());
    TestGateway {
        addr,
        admin_addr,
        gateway,
        task,
    }
}

impl TestGateway {
    /// The WebSocket endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/xmpp-websocket", self.addr)
    }

    /// A WebSocket connection with subprotocol `xmpp`.
    pub async fn ws(&self) -> WsClient {
        WsClient::connect(self.addr, &[]).await
    }

    /// A WebSocket connection whose stream to [`DOMAIN`] is open: returns the client with the
    /// `<open/>` and features it received.
    pub async fn open_session(&self) -> (WsClient, String, String) {
        let mut ws = self.ws().await;
        let (open, features) = ws.open(DOMAIN).await;
        (ws, open, features)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Scripted upstream XMPP server
// ---------------------------------------------------------------------------------------------

/// A TCP server on 127.0.0.1:0 that runs a per-test script on every accepted connection.
pub struct ScriptedUpstream;

/// Observes a [`ScriptedUpstream`]: how many connections it accepted and what each script
/// returned.
pub struct UpstreamHandle<T> {
    connections: Arc<AtomicUsize>,
    scripts: mpsc::UnboundedReceiver<JoinHandle<T>>,
    accept_task: JoinHandle<()>,
}

impl ScriptedUpstream {
    /// Starts the server. `script` gets each connection and its zero-based number.
    pub async fn start<F, Fut, T>(mut script: F) -> (SocketAddr, UpstreamHandle<T>)
    where
        F: FnMut(UpstreamConn<TcpStream>, usize) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("upstream binds");
        let addr = listener.local_addr().expect("bound address");
        let connections = Arc::new(AtomicUsize::new(0));
        let (tx, scripts) = mpsc::unbounded_channel();
        let counter = connections.clone();
        let accept_task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.set_nodelay(true);
                let _ = tx.send(tokio::spawn(script(UpstreamConn::new(tcp), n)));
            }
        });
        (
            addr,
            UpstreamHandle {
                connections,
                scripts,
                accept_task,
            },
        )
    }
}

impl<T> UpstreamHandle<T> {
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits for the next connection's script to finish and returns its result; a panic in
    /// the script (a failed assertion on the upstream side) fails the test here.
    pub async fn finished(&mut self) -> T {
        let wait = async {
            let script = self.scripts.recv().await.expect("accept loop alive");
            match script.await {
                Ok(v) => v,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("upstream script did not finish: {e}"),
            }
        };
        tokio::time::timeout(TIMEOUT * 2, wait)
            .await
            .expect("upstream script finished in time")
    }
}

impl<T> Drop for UpstreamHandle<T> {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// How a read from the upstream socket ended without finding what was asked for.
#[derive(Debug)]
pub enum ReadEnd {
    /// The peer closed the connection (or TLS ended) first.
    Eof,
    /// The socket failed.
    Error(std::io::Error),
    /// Nothing matching arrived in time.
    Timeout,
}

/// One accepted upstream connection with an accumulating read buffer, so bytes read past what
/// one `read_until` wanted are kept for the next.
pub struct UpstreamConn<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> UpstreamConn<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Accumulates bytes until they contain `needle`; returns everything up to and including
    /// it. Fails with how the read ended otherwise.
    pub async fn try_read_until(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, ReadEnd> {
        let needle = needle.as_bytes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = find(&self.buf, needle) {
                let rest = self.buf.split_off(pos + needle.len());
                return Ok(std::mem::replace(&mut self.buf, rest));
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(ReadEnd::Timeout),
                Ok(Ok(0)) => return Err(ReadEnd::Eof),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(ReadEnd::Error(e)),
            }
        }
    }

    /// As [`try_read_until`](Self::try_read_until), stopping at whichever of `needles` ends
    /// first in the received bytes; returns its index and everything up to it.
    pub async fn try_read_until_any(
        &mut self,
        needles: &[&str],
        timeout: Duration,
    ) -> Result<(usize, Vec<u8>), ReadEnd> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let first = needles
                .iter()
                .enumerate()
                .filter_map(|(i, n)| find(&self.buf, n.as_bytes()).map(|at| (at + n.len(), i)))
                .min();
            if let Some((end, i)) = first {
                let rest = self.buf.split_off(end);
                return Ok((i, std::mem::replace(&mut self.buf, rest)));
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(ReadEnd::Timeout),
                Ok(Ok(0)) => return Err(ReadEnd::Eof),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(ReadEnd::Error(e)),
            }
        }
    }

    /// [`try_read_until`](Self::try_read_until) within [`TIMEOUT`], as text; panics with what
    /// was received when `needle` does not arrive.
    pub async fn read_until(&mut self, needle: &str) -> String {
        match self.try_read_until(needle, TIMEOUT).await {
            Ok(bytes) => String::from_utf8(bytes).expect("gateway sends UTF-8"),
            Err(end) => panic!(
                "upstream waited for {needle:?} and got {end:?} after {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads until the peer closes; returns every byte not yet consumed. A TLS peer that
    /// closes without close_notify or a reset also counts as closed.
    pub async fn read_to_eof(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!(
                    "upstream socket still open after {TIMEOUT:?}; received {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    let rest = std::mem::take(&mut self.buf);
                    return String::from_utf8(rest).expect("gateway sends UTF-8");
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Writes and flushes (flushing matters over TLS).
    pub async fn write(&mut self, data: &str) {
        self.stream
            .write_all(data.as_bytes())
            .await
            .expect("upstream write");
        self.stream.flush().await.expect("upstream flush");
    }

    /// Reads the gateway's stream header (`<?xml ...?><stream:stream ...>`), returning it.
    pub async fn read_stream_header(&mut self) -> String {
        let mut header = self.read_until("<stream:stream").await;
        header.push_str(&self.read_until(">").await);
        assert!(
            header.contains(&format!("xmlns:stream='{NS_STREAM}'")),
            "{header}"
        );
        header
    }

    /// What a Prosody-like server does with a new stream: reads the header, answers with its
    /// own header (stream id `id`) and `features`. Returns the gateway's header.
    pub async fn answer_stream(&mut self, id: &str, features: &str) -> String {
        let header = self.read_stream_header().await;
        self.write(&format!("{}{features}", server_header(id)))
            .await;
        header
    }

    /// Exactly the next `n` bytes.
    pub async fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk))
                .await
                .expect("bytes in time")
                .expect("read");
            assert!(read > 0, "EOF after {} of {n} bytes", self.buf.len());
            self.buf.extend_from_slice(&chunk[..read]);
        }
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    /// Bytes received but not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

impl UpstreamConn<TcpStream> {
    /// The socket and what was read past the last `read_until`, for a script that reads and
    /// writes at once.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Resets the connection (SO_LINGER 0, then close: an RST), as when a server process is
    /// killed or a middlebox cuts the connection.
    pub fn reset(self) {
        let _ = self.stream.set_zero_linger();
        drop(self);
    }

    /// Writes raw bytes (not necessarily UTF-8) and flushes.
    pub async fn write_bytes(&mut self, data: &[u8]) {
        self.try_write_bytes(data).await.expect("upstream write");
    }

    /// As [`write_bytes`](Self::write_bytes), for a peer that may have closed.
    pub async fn try_write_bytes(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data).await?;
        self.stream.flush().await
    }

    /// Runs the server side of the TLS handshake after `<proceed/>` (RFC 6120 §5.4.3.3).
    pub async fn start_tls(
        self,
        acceptor: &TlsAcceptor,
    ) -> std::io::Result<UpstreamConn<tokio_rustls::server::TlsStream<TcpStream>>> {
        assert!(
            self.buf.is_empty(),
            "plaintext pipelined before the TLS handshake"
        );
        let tls = tokio::time::timeout(TIMEOUT, acceptor.accept(self.stream))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        Ok(UpstreamConn::new(tls))
    }
}

/// A Prosody-like server stream header.
pub fn server_header(id: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' id='{id}' from='{DOMAIN}' \
         version='1.0' xml:lang='en'>"
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Returns a port on 127.0.0.1 where nothing listens (bound, then released).
pub async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("address")
}

// ---------------------------------------------------------------------------------------------
// TLS: a CA and a server certificate generated at test time
// ---------------------------------------------------------------------------------------------

/// A file removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    fn write(contents: &str) -> Self {
        Self::new("pem", contents)
    }

    /// A file in the temp directory with a unique name ending in `suffix`.
    pub fn new(suffix: &str, contents: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "xmpp-gateway-test-{}-{}.{suffix}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).expect("write temp file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A test CA (its PEM in a file for `Config::upstream_ca`) and a TLS acceptor serving a
/// certificate for a domain.
pub struct TestPki {
    /// The CA certificate, PEM.
    pub ca_file: TempFile,
    /// Serves a certificate for the domain, signed by the CA in `ca_file`.
    pub acceptor: TlsAcceptor,
}

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

fn new_ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-signed CA");
    Ca { cert, key }
}

fn acceptor_signed_by(ca: &Ca, domain: &str) -> TlsAcceptor {
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec![domain.to_string()]).expect("server params");
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("server certificate");
    let chain = vec![cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server TLS config");
    TlsAcceptor::from(Arc::new(config))
}

/// PEM texts of a new CA and of a certificate for `name` it signed, with that certificate's
/// key: what an operator gives the gateway's own listener (`tls.cert_file`, `tls.key_file`).
pub fn listener_certificate(name: &str) -> (String, String, String) {
    let ca = new_ca("xmpp-gateway listener test CA");
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("server params");
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("server certificate");
    (ca.cert.pem(), cert.pem(), key.serialize_pem())
}

impl TestPki {
    /// A CA and a server certificate for `domain` signed by it.
    pub fn new(domain: &str) -> Self {
        let ca = new_ca("xmpp-gateway test CA");
        let ca_file = TempFile::write(&ca.cert.pem());
        let acceptor = acceptor_signed_by(&ca, domain);
        Self { ca_file, acceptor }
    }

    /// An acceptor whose certificate for `domain` is signed by some other CA, which the
    /// gateway must not trust.
    pub fn foreign_acceptor(domain: &str) -> TlsAcceptor {
        acceptor_signed_by(&new_ca("someone else's CA"), domain)
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------------------------

/// One thing a WebSocket client saw.
#[derive(Debug)]
pub enum WsEvent {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame.
    Close,
    /// The connection ended (EOF or error) without a close frame.
    Ended(String),
    /// Nothing within the timeout.
    Timeout,
}

/// A browser-like RFC 7395 client.
pub struct WsClient {
    ws: WebSocketStream<TcpStream>,
    /// The server's handshake response.
    pub response: WsResponse,
    /// Pings seen so far (answered by tungstenite while reading).
    pub pings: usize,
}

/// The client's `<open/>` for `domain`.
pub fn open_frame(domain: &str) -> String {
    format!("<open xmlns='{NS_FRAMING}' to='{domain}' version='1.0'/>")
}

/// The framing `<close/>`.
pub const CLOSE_FRAME: &str = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";

impl WsClient {
    /// The client's end of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.ws.get_ref().local_addr().expect("local address")
    }

    /// Connects to `/xmpp-websocket` with `Sec-WebSocket-Protocol: xmpp` and extra headers.
    pub async fn connect(addr: SocketAddr, headers: &[(&'static str, &str)]) -> Self {
        Self::try_connect(addr, headers)
            .await
            .expect("WebSocket handshake")
    }

    /// As [`connect`](Self::connect), returning the connection or handshake error.
    pub async fn try_connect(
        addr: SocketAddr,
        headers: &[(&'static str, &str)],
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{addr}/xmpp-websocket").into_client_request()?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "xmpp".parse().expect("header"));
        for (name, value) in headers {
            req.headers_mut()
                .insert(*name, value.parse().expect("header value"));
        }
        let tcp = TcpStream::connect(addr).await?;
        let (ws, response) =
            tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(req, tcp))
                .await
                .expect("handshake in time")?;
        Ok(Self {
            ws,
            response,
            pings: 0,
        })
    }

    /// Sends a text frame.
    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send text frame");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::binary(data.to_vec()))
            .await
            .expect("send binary frame");
    }

    /// The next event within `timeout`; pings are counted and skipped.
    pub async fn next_event(&mut self, timeout: Duration) -> WsEvent {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return WsEvent::Timeout,
                Ok(next) => next,
            };
            return match next {
                None => WsEvent::Ended("end of stream".into()),
                Some(Err(e)) => WsEvent::Ended(e.to_string()),
                Some(Ok(Message::Text(t))) => WsEvent::Text(t.to_string()),
                Some(Ok(Message::Binary(b))) => WsEvent::Binary(b.to_vec()),
                Some(Ok(Message::Close(_))) => WsEvent::Close,
                Some(Ok(Message::Ping(_))) => {
                    self.pings += 1;
                    continue;
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
            };
        }
    }

    /// The next text frame within [`TIMEOUT`]; anything else fails the test.
    pub async fn recv(&mut self) -> String {
        match self.next_event(TIMEOUT).await {
            WsEvent::Text(t) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The server closes: a close frame (or the end of the connection) comes next, and no
    /// further text frame.
    pub async fn expect_close(&mut self) {
        match self.next_event(TIMEOUT).await {
            WsEvent::Close | WsEvent::Ended(_) => {}
            other => panic!("expected the WebSocket to close, got {other:?}"),
        }
    }

    /// Starts the WebSocket closing handshake with a close frame (no `<close/>` element).
    pub async fn close_frame(&mut self) {
        self.ws.close(None).await.expect("send close frame");
    }

    /// Sends `<open/>` for `domain`; returns the `<open/>` and the features received.
    pub async fn open(&mut self, domain: &str) -> (String, String) {
        self.send(&open_frame(domain)).await;
        let open = self.recv().await;
        let root = parse_standalone(&open);
        assert_eq!(
            (root.ns.as_str(), root.name.as_str()),
            (NS_FRAMING, "open"),
            "{open}"
        );
        let features = self.recv().await;
        let root = parse_standalone(&features);
        assert_eq!(
            (root.ns.as_str(), root.name.as_str()),
            (NS_STREAM, "features"),
            "{features}"
        );
        (open, features)
    }

    /// Drops the TCP connection without a WebSocket close (a vanished browser).
    pub fn vanish(self) {
        drop(self.ws);
    }

    /// The WebSocket itself, e.g. to split it into a sender and a receiver.
    pub fn into_inner(self) -> WebSocketStream<TcpStream> {
        self.ws
    }
}

/// RFC 7395 §3.6 and docs/protocol.md §3: a standalone `<stream:error/>` with `condition`, then
/// `<close/>`, then the WebSocket closes.
pub async fn expect_stream_error(ws: &mut WsClient, condition: &str) {
    let frame = ws.recv().await;
    assert_stream_error(&frame, condition);
    expect_close_element_and_socket_close(ws).await;
}

/// As [`expect_stream_error`] for a stream that was never opened: RFC 6120 §4.9.1.2 lets the
/// server open the stream (an `<open/>`) before the error.
pub async fn expect_stream_error_before_open(ws: &mut WsClient, condition: &str) {
    let mut frame = ws.recv().await;
    if parse_standalone(&frame).name == "open" {
        frame = ws.recv().await;
    }
    assert_stream_error(&frame, condition);
    expect_close_element_and_socket_close(ws).await;
}

/// `<close/>` then the WebSocket close.
pub async fn expect_close_element_and_socket_close(ws: &mut WsClient) {
    let close = ws.recv().await;
    let root = parse_standalone(&close);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_FRAMING, "close"),
        "{close}"
    );
    ws.expect_close().await;
}

/// `frame` is a standalone `<stream:error/>` whose condition is `condition`.
pub fn assert_stream_error(frame: &str, condition: &str) {
    let root = parse_standalone(frame);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_STREAM, "error"),
        "{frame}"
    );
    assert!(
        root.children
            .iter()
            .any(|(ns, name)| ns == NS_STREAMS_ERR && name == condition),
        "expected condition {condition} in {frame}"
    );
}

// ---------------------------------------------------------------------------------------------
// Standalone XML check
// ---------------------------------------------------------------------------------------------

/// The root of a standalone XML element.
#[derive(Debug)]
pub struct Root {
    /// Namespace of the root.
    pub ns: String,
    /// Local name of the root.
    pub name: String,
    /// Attributes of the root as written (qualified name, unescaped value).
    pub attrs: Vec<(String, String)>,
    /// Namespace and local name of each child element.
    pub children: Vec<(String, String)>,
}

impl Root {
    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `frame` as a document that must be exactly one well-formed element, without
/// surrounding whitespace, in which every prefix is declared (docs/protocol.md §2: every element
/// handed to a browser stands alone). Panics otherwise.
pub fn parse_standalone(frame: &str) -> Root {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    use quick_xml::reader::NsReader;

    assert_eq!(frame, frame.trim(), "whitespace around a frame");
    let mut reader = NsReader::from_str(frame);
    let mut depth = 0usize;
    let mut roots = 0usize;
    let mut root: Option<Root> = None;
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .unwrap_or_else(|e| panic!("{e}: {frame}"));
        let ns = match resolved {
            ResolveResult::Bound(ns) => String::from_utf8(ns.0.to_vec()).expect("utf-8"),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => {
                panic!(
                    "undeclared prefix {:?} in {frame}",
                    String::from_utf8_lossy(&p)
                )
            }
        };
        let element = match &event {
            Event::Start(e) | Event::Empty(e) => Some(e.clone()),
            _ => None,
        };
        if let Some(e) = element {
            let local = String::from_utf8(e.local_name().as_ref().to_vec()).expect("utf-8");
            for a in e.attributes() {
                let a = a.unwrap_or_else(|err| panic!("{err}: {frame}"));
                if let (ResolveResult::Unknown(p), _) = reader.resolve_attribute(a.key) {
                    panic!(
                        "undeclared attribute prefix {:?} in {frame}",
                        String::from_utf8_lossy(&p)
                    );
                }
            }
            if depth == 0 {
                roots += 1;
                let attrs = e
                    .attributes()
                    .map(|a| {
                        let a = a.expect("attribute");
                        let key = String::from_utf8(a.key.as_ref().to_vec()).expect("utf-8");
                        let value = a.unescape_value().expect("attribute value").into_owned();
                        (key, value)
                    })
                    .collect();
                root = Some(Root {
                    ns: ns.clone(),
                    name: local.clone(),
                    attrs,
                    children: Vec::new(),
                });
            } else if depth == 1 {
                root.as_mut().expect("root").children.push((ns, local));
            }
        }
        match event {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth -= 1,
            Event::Empty(_) => {}
            Event::Text(t) if depth == 0 => panic!("text outside the element: {t:?} in {frame}"),
            Event::Eof => break,
            Event::Decl(_) | Event::DocType(_) | Event::PI(_) | Event::Comment(_) => {
                panic!("declaration, DTD, PI or comment sent to the client: {frame}")
            }
            _ => {}
        }
    }
    assert_eq!(depth, 0, "unclosed element: {frame}");
    assert_eq!(roots, 1, "a frame must hold exactly one element: {frame}");
    root.expect("one root")
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------------------------

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names in lower case, with values.
    pub headers: Vec<(String, String)>,
    /// The body (Content-Length bytes).
    pub body: String,
}

impl HttpResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as is and reads one response (headers, then a Content-Length body).
pub async fn http_raw(addr: SocketAddr, request: &str) -> HttpResponse {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes())
        .await
        .expect("send request");
    tokio::time::timeout(TIMEOUT, read_response(&mut tcp))
        .await
        .expect("response in time")
}

/// `GET path` with `Host` and extra headers, `Connection: close`.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    http_raw(addr, &req).await
}

async fn read_response(tcp: &mut TcpStream) -> HttpResponse {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.expect("read response");
        assert!(
            n > 0,
            "connection closed before the response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("ASCII head");
    let mut body = buf.split_off(head_end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().expect("content-length"))
        .unwrap_or(0);
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

/// A WebSocket upgrade request for `/xmpp-websocket`, with extra header lines.
pub fn upgrade_request(addr: SocketAddr, extra: &str) -> String {
    format!(
        "GET /xmpp-websocket HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over one kept-alive connection
// ---------------------------------------------------------------------------------------------

/// A response read from an [`HttpConn`], body as bytes (it may be gzip-compressed).
#[derive(Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Header names in lower case, with values.
    pub headers: Vec<(String, String)>,
    /// The body (Content-Length bytes), as received.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

/// One client TCP connection carrying HTTP/1.1 requests one after another (keep-alive). Bytes
/// read past one response are kept for the next, so pipelined or interim (`100 Continue`)
/// responses are read in order.
pub struct HttpConn {
    addr: SocketAddr,
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    /// The client's end of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().expect("local address")
    }

    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let _ = tcp.set_nodelay(true);
        Self {
            addr,
            tcp,
            buf: Vec::new(),
        }
    }

    /// Writes raw bytes.
    pub async fn write_raw(&mut self, data: &[u8]) {
        self.tcp.write_all(data).await.expect("send request bytes");
    }

    /// The head of a request with `Host` and `Content-Length` (when `body_len` is given) and
    /// extra header lines, ending with the empty line.
    pub fn head(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_len: Option<usize>,
    ) -> String {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(len) = body_len {
            head.push_str(&format!("Content-Length: {len}\r\n"));
        }
        head.push_str("\r\n");
        head
    }

    /// Sends a whole request without waiting for the response.
    pub async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = self
            .head(method, path, headers, Some(body.len()))
            .into_bytes();
        req.extend_from_slice(body);
        self.write_raw(&req).await;
    }

    /// Reads the next response within `timeout`.
    pub async fn try_response(&mut self, timeout: Duration) -> Result<HttpReply, ReadEnd> {
        let deadline = tokio::time::Instant::now() + timeout;
        let head_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos;
            }
            self.fill(deadline).await?;
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().expect("content-length"))
            .unwrap_or(0);
        assert!(
            !headers
                .iter()
                .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
            "chunked responses are not expected here: {head}"
        );
        let start = head_end + 4;
        while self.buf.len() < start + len {
            self.fill(deadline).await?;
        }
        let rest = self.buf.split_off(start + len);
        let body = self.buf.split_off(start);
        self.buf = rest;
        Ok(HttpReply {
            status,
            headers,
            body,
        })
    }

    /// Reads the next response within [`TIMEOUT`]; panics with how the read ended otherwise.
    pub async fn response(&mut self) -> HttpReply {
        match self.try_response(TIMEOUT).await {
            Ok(r) => r,
            Err(end) => panic!(
                "no HTTP response: {end:?} after {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Sends a request and reads its response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpReply {
        self.send(method, path, headers, body).await;
        self.response().await
    }

    async fn fill(&mut self, deadline: tokio::time::Instant) -> Result<(), ReadEnd> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
            Err(_) => Err(ReadEnd::Timeout),
            Ok(Ok(0)) => Err(ReadEnd::Eof),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Ok(Err(e)) => Err(ReadEnd::Error(e)),
        }
    }
}

//! Requests from this node to another member's internal listener (docs/protocol.md §8): a
//! forwarded BOSH request, answered with the `<body/>` the session's node sends, and the
//! question which node a member is. Signed, over pooled HTTP/1.1 connections, within a
//! deadline: a member that is gone or stalls costs a request its answer, never a hang.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::auth;
use super::metrics::CLUSTER;

/// Path of the internal listener that answers which node it is.
pub const NODE_PATH: &str = "/cluster/v1/node";
/// Path of the internal listener that takes forwarded BOSH requests.
pub const BOSH_PATH: &str = "/cluster/v1/bosh";

/// The way to the other members: pooled connections, and the secret requests are signed with.
pub struct Link {
    /// Signs and checks requests between nodes.
    pub signer: auth::Signer,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Link {
    /// Connections give up after `connect_timeout`; an idle one is closed after `idle`.
    pub fn new(signer: auth::Signer, connect_timeout: Duration, idle: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self { signer, client }
    }
}

/// The largest answer taken from a member: a BOSH body carries at most what a session
/// buffers for its client, far below this.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Why a request to a member got no answer (`cluster_forwarded_total{result}`).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No connection: the member is gone (refused, unreachable, connect timeout).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No answer within the deadline.
    #[error("no answer in time")]
    Timeout,
    /// An answer other than 200 (a member that refused the signature: another secret).
    #[error("answered HTTP {0}")]
    Status(StatusCode),
    /// The connection failed after it was made, or the answer was not what was asked for.
    #[error("broken answer")]
    Answer,
    /// An answer without a member's signature: the address is not a member.
    #[error("answer not signed by a member")]
    Unsigned,
}

impl ForwardError {
    /// The metric label.
    pub fn result(&self) -> &'static str {
        match self {
            ForwardError::Connect(_) => "connect_failed",
            ForwardError::Timeout => "timeout",
            ForwardError::Status(_) => "refused",
            ForwardError::Answer => "broken",
            ForwardError::Unsigned => "unsigned",
        }
    }
}

/// Forwards a BOSH request body to the member at `addr` that holds its session, for the
/// browser at `client`, and returns the `<body/>` it answers. `deadline` covers the whole
/// exchange, held time included.
pub async fn bosh(
    link: &Link,
    addr: SocketAddr,
    client: SocketAddr,
    body: Bytes,
    deadline: Duration,
) -> Result<Bytes, ForwardError> {
    let started = Instant::now();
    let client = client.to_string();
    let post = |body, deadline| call(link, addr, "POST", BOSH_PATH, &client, body, deadline);
    let mut answer = post(body.clone(), deadline).await;
    if matches!(answer, Err(ForwardError::Answer)) {
        // A pooled connection the member closed as it was reused: once more, on a new one. A
        // request it did take is answered from its cache (a repeated rid).
        answer = post(body, deadline.saturating_sub(started.elapsed())).await;
    }
    CLUSTER.forwarded(match &answer {
        Ok(_) => "ok",
        Err(e) => e.result(),
    });
    if answer.is_ok() {
        CLUSTER
            .forward_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    answer
}

/// One signed request to a member's internal listener.
pub async fn call(
    link: &Link,
    addr: SocketAddr,
    method: &str,
    path: &str,
    client: &str,
    body: Bytes,
    deadline: Duration,
) -> Result<Bytes, ForwardError> {
    let signature = link.signer.sign(method, path, client, &body);
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header(auth::HEADER, signature.as_str())
        .header(auth::CLIENT_HEADER, client)
        .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .body(Full::new(body))
        .map_err(|_| ForwardError::Answer)?;
    let exchange = async {
        let resp = link.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                ForwardError::Connect(e.to_string())
            } else {
                ForwardError::Answer
            }
        })?;
        if resp.status() != StatusCode::OK {
            return Err(ForwardError::Status(resp.status()));
        }
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|_| ForwardError::Answer)?;
        // Only a member answers: an address that is not one (reassigned, an impostor) is
        // told nothing it could use, and what it says is not taken.
        let sig = parts.headers.get(auth::HEADER).map(|v| v.as_bytes());
        if !link.signer.verify_answer(&signature, sig, &body) {
            return Err(ForwardError::Unsigned);
        }
        Ok(body)
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| ForwardError::Timeout)?
}

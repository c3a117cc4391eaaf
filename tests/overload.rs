//! Overload (issue 9; docs/protocol.md §7): twice `limits.max_sessions` clients, WebSocket and
//! BOSH mixed, connect at once. Exactly the cap is admitted and keeps working with bounded
//! round trips through the server; the rest are refused clearly (HTTP 503 with `Retry-After`,
//! BOSH with a `policy-violation` terminate body) without costing an upstream connection; once
//! the load is gone, new sessions are admitted again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::bosh::*;
use common::peers::*;
use common::*;
use tokio::sync::Barrier;

const CAP: usize = 50;

enum Client {
    Ws(Box<WsClient>),
    Bosh(BoshClient),
}

enum Outcome {
    Admitted(Box<Client>),
    Refused,
}

impl Client {
    async fn round_trip(&mut self, id: &str) -> Duration {
        match self {
            Client::Ws(ws) => ws_round_trip(ws, id).await,
            Client::Bosh(bosh) => bosh.round_trip(&message(id), id).await,
        }
    }

    async fn close(self) {
        match self {
            Client::Ws(mut ws) => {
                ws.send(CLOSE_FRAME).await;
                expect_close_element_and_socket_close(&mut ws).await;
            }
            Client::Bosh(mut bosh) => bosh.terminate().await,
        }
    }
}

/// A WebSocket whose refusal must come before the upgrade: HTTP 503 with `Retry-After`.
async fn try_ws(addr: std::net::SocketAddr) -> Outcome {
    match WsClient::try_connect(addr, &[]).await {
        Ok(mut ws) => {
            ws.open(DOMAIN).await;
            Outcome::Admitted(Box::new(Client::Ws(Box::new(ws))))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .expect("Retry-After in seconds");
            assert!(retry >= 1);
            Outcome::Refused
        }
        Err(e) => panic!("a WebSocket neither admitted nor refused: {e}"),
    }
}

/// A BOSH session request, refused with 503, `Retry-After` and `policy-violation`.
async fn try_bosh(addr: std::net::SocketAddr) -> Outcome {
    let mut conn = BoshClient::send_session_request(addr, BOSH_ATTRS).await;
    let reply = conn.response().await;
    if reply.status == 200 {
        return Outcome::Admitted(Box::new(Client::Bosh(BoshClient::created(
            addr, conn, &reply,
        ))));
    }
    assert_refused(&reply);
    Outcome::Refused
}

/// `n` clients (WebSocket and BOSH alternately) try to connect at the same moment.
async fn crowd(gw: &TestGateway, n: usize) -> (Vec<Client>, usize) {
    let start = Arc::new(Barrier::new(n));
    let attempts: Vec<_> = (0..n)
        .map(|i| {
            let (addr, start) = (gw.addr, start.clone());
            tokio::spawn(async move {
                start.wait().await;
                if i % 2 == 0 {
                    try_ws(addr).await
                } else {
                    try_bosh(addr).await
                }
            })
        })
        .collect();
    let (mut admitted, mut refused) = (Vec::new(), 0);
    for attempt in attempts {
        match attempt.await.expect("attempt") {
            Outcome::Admitted(c) => admitted.push(*c),
            Outcome::Refused => refused += 1,
        }
    }
    (admitted, refused)
}

/// Every client exchanges `rounds` messages at once; returns every round trip's duration.
async fn exchange(clients: Vec<Client>, rounds: usize, tag: &str) -> (Vec<Client>, Vec<Duration>) {
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut times = Vec::new();
                for r in 0..rounds {
                    times.push(c.round_trip(&format!("{tag}-{i}-{r}")).await);
                }
                (c, times)
            })
        })
        .collect();
    let (mut clients, mut times) = (Vec::new(), Vec::new());
    for t in tasks {
        let (c, ts) = t.await.expect("round trips");
        clients.push(c);
        times.extend(ts);
    }
    times.sort();
    (clients, times)
}

fn report(what: &str, times: &[Duration]) {
    let p50 = times[times.len() / 2];
    let max = *times.last().unwrap();
    eprintln!(
        "{what}: {} round trips, p50 {p50:?}, max {max:?}",
        times.len()
    );
    assert!(
        max < ROUND_TRIP_BOUND,
        "{what}: slowest round trip {max:?}, bound {ROUND_TRIP_BOUND:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_session_cap_at_once_admits_the_cap_refuses_the_rest_and_recovers() {
    let (up, handle) = ScriptedUpstream::start(|conn, _| echo(conn)).await;
    let mut c = plain_config(up);
    c.limits.max_sessions = CAP;
    // Every client here is 127.0.0.1: only the global cap is under test.
    c.limits.max_sessions_per_address = 100_000;
    c.limits.new_sessions_burst = 100_000;
    c.limits.new_sessions_per_address_per_sec = 100_000;
    c.bosh.max_wait_secs = 10;
    let gw = start_gateway(c).await;

    let (admitted, refused) = crowd(&gw, 2 * CAP).await;
    assert_eq!(
        (admitted.len(), refused),
        (CAP, CAP),
        "the cap is admitted, the rest refused"
    );
    assert_eq!(handle.connections(), CAP, "a refused session dials nothing");
    assert_eq!(gw.gateway.admission.sessions(), CAP);

    let (admitted, times) = exchange(admitted, 5, "full").await;
    report("at the cap", &times);
    // Still full: one more is refused.
    assert!(matches!(try_bosh(gw.addr).await, Outcome::Refused));

    for c in admitted {
        c.close().await;
    }
    wait_for_sessions(&gw, 0, TIMEOUT).await;

    // The load is gone: a new crowd of the cap's size is admitted whole and works.
    let (admitted, refused) = crowd(&gw, CAP).await;
    assert_eq!((admitted.len(), refused), (CAP, 0));
    let (admitted, times) = exchange(admitted, 5, "again").await;
    report("after the load", &times);
    for c in admitted {
        c.close().await;
    }
    wait_for_sessions(&gw, 0, TIMEOUT).await;
    assert_eq!(handle.connections(), 2 * CAP);
}

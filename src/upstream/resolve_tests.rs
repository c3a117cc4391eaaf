//! The route cache against a scripted name server on loopback, which counts the queries it
//! gets and can hold its answers back or fail them.

use std::sync::atomic::AtomicU16;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::*;

const DOMAIN: &str = "example.test";
const TARGET: &str = "xmpp.example.test.";
const TTL: u32 = 300;

/// A name server for [`DOMAIN`]: `_xmpp-client._tcp` points at [`TARGET`] on `port`, which
/// has the address 127.0.0.1; everything else does not exist.
struct Dns {
    addr: SocketAddr,
    queries: Arc<Mutex<Vec<(String, RecordType)>>>,
    /// The SRV port answered.
    port: Arc<AtomicU16>,
    /// Every name is answered NXDOMAIN.
    failing: Arc<AtomicBool>,
    /// While false, answers wait.
    open: watch::Sender<bool>,
}

impl Dns {
    async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dns = Dns {
            addr: socket.local_addr().unwrap(),
            queries: Arc::default(),
            port: Arc::new(AtomicU16::new(5222)),
            failing: Arc::default(),
            open: watch::channel(true).0,
        };
        let (queries, port, failing) = (dns.queries.clone(), dns.port.clone(), dns.failing.clone());
        let mut open = dns.open.subscribe();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(q) = query.queries().first().cloned() else {
                    continue;
                };
                queries
                    .lock()
                    .unwrap()
                    .push((q.name().to_ascii(), q.query_type()));
                if open.wait_for(|open| *open).await.is_err() {
                    return;
                }
                let mut answer = Message::new();
                answer
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(OpCode::Query)
                    .set_recursion_desired(true)
                    .set_recursion_available(true)
                    .add_query(q.clone());
                let name = q.name().to_ascii();
                let rdata = match q.query_type() {
                    _ if failing.load(Ordering::SeqCst) => None,
                    RecordType::SRV if name == format!("_xmpp-client._tcp.{DOMAIN}.") => {
                        let target = Name::from_ascii(TARGET).unwrap();
                        Some(RData::SRV(SRV::new(
                            0,
                            5,
                            port.load(Ordering::SeqCst),
                            target,
                        )))
                    }
                    RecordType::A if name == TARGET => Some(RData::A(A::new(127, 0, 0, 1))),
                    _ => None,
                };
                match rdata {
                    Some(rdata) => {
                        answer.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
                    }
                    None => {
                        answer.set_response_code(ResponseCode::NXDomain);
                    }
                }
                let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
            }
        });
        dns
    }

    fn count(&self, name: &str, kind: RecordType) -> usize {
        let queries = self.queries.lock().unwrap();
        queries
            .iter()
            .filter(|(n, k)| n == name && *k == kind)
            .count()
    }

    fn srv_queries(&self) -> usize {
        self.count(&format!("_xmpp-client._tcp.{DOMAIN}."), RecordType::SRV)
    }
}

/// A route resolved by SRV (plain upstream, so `_xmpps-client` is not asked).
fn srv_route() -> Route {
    Route {
        config: RouteConfig {
            tls: TlsPolicy::Disabled,
            backoff_min_ms: 1000,
            backoff_max_ms: 60000,
            ..RouteConfig::new(DOMAIN)
        },
        endpoints: Vec::new(),
    }
}

fn ports(resolved: &[Resolved]) -> Vec<u16> {
    resolved
        .iter()
        .flat_map(|r| r.addrs.iter().map(|a| a.port()))
        .collect()
}

/// Polls `condition` until it holds, for at most 10 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_answer_is_used_for_its_ttl_without_asking_again() {
    let dns = Dns::start().await;
    let resolver = Resolver::with_name_server(dns.addr);
    let route = srv_route();
    for _ in 0..3 {
        let resolved = resolver.endpoints(&route).await.unwrap();
        assert_eq!(resolved[0].endpoint.host, "xmpp.example.test");
        assert_eq!(resolved[0].addrs, ["127.0.0.1:5222".parse().unwrap()]);
    }
    let entry = resolver.cache.lock().unwrap().get(DOMAIN).cloned().unwrap();
    assert!(
        !entry.refreshing.load(Ordering::SeqCst),
        "no refresh of a fresh answer"
    );
    assert_eq!(dns.srv_queries(), 1);
    assert_eq!(dns.count(TARGET, RecordType::A), 1);
}

#[tokio::test]
async fn session_starts_that_find_nothing_share_one_lookup() {
    let dns = Dns::start().await;
    dns.open.send_replace(false);
    let resolver = Arc::new(Resolver::with_name_server(dns.addr));
    let route = Arc::new(srv_route());
    let starts: Vec<_> = (0..50)
        .map(|_| {
            let (resolver, route) = (resolver.clone(), route.clone());
            async move { resolver.endpoints(&route).await }
        })
        .collect();
    let all = tokio::spawn(async move {
        let starts = futures_util::future::join_all(starts).await;
        starts
            .into_iter()
            .map(|r| r.map(|r| ports(&r)))
            .collect::<Vec<_>>()
    });
    // Every start is waiting on the one query the server holds.
    eventually("the SRV query", || dns.srv_queries() == 1).await;
    dns.open.send_replace(true);
    for resolved in all.await.unwrap() {
        assert_eq!(resolved.unwrap(), [5222]);
    }
    assert_eq!(dns.srv_queries(), 1);
}

#[tokio::test]
async fn an_expired_answer_is_used_at_once_while_one_refresh_runs() {
    let dns = Dns::start().await;
    let resolver = Resolver::with_name_server(dns.addr);
    let route = srv_route();
    resolver.endpoints(&route).await.unwrap();
    // The server now holds its answers, and has moved to another port.
    dns.open.send_replace(false);
    dns.port.store(5333, Ordering::SeqCst);
    resolver.age(Duration::from_secs(u64::from(TTL) + 1));
    for _ in 0..20 {
        let resolved = tokio::time::timeout(Duration::from_secs(1), resolver.endpoints(&route))
            .await
            .expect("an expired answer does not wait for the name server");
        assert_eq!(ports(&resolved.unwrap()), [5222]);
    }
    eventually("the refresh's SRV query", || dns.srv_queries() == 2).await;
    dns.open.send_replace(true);
    eventually("the refreshed answer", || {
        let entry = resolver.cache.lock().unwrap().get(DOMAIN).cloned().unwrap();
        let answer = entry.answer.lock().unwrap().clone().unwrap();
        answer.result.is_ok_and(|r| ports(&r) == [5333])
    })
    .await;
    assert_eq!(ports(&resolver.endpoints(&route).await.unwrap()), [5333]);
    assert_eq!(
        dns.srv_queries(),
        2,
        "twenty starts on an expired answer, one refresh"
    );
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_previous_answer() {
    let dns = Dns::start().await;
    let resolver = Resolver::with_name_server(dns.addr);
    let route = srv_route();
    resolver.endpoints(&route).await.unwrap();
    dns.failing.store(true, Ordering::SeqCst);
    resolver.age(Duration::from_secs(u64::from(TTL) + 1));
    assert_eq!(ports(&resolver.endpoints(&route).await.unwrap()), [5222]);
    let entry = resolver.cache.lock().unwrap().get(DOMAIN).cloned().unwrap();
    eventually("the refresh to fail", || {
        !entry.refreshing.load(Ordering::SeqCst) && dns.srv_queries() >= 2
    })
    .await;
    let after = dns.queries.lock().unwrap().len();
    assert_eq!(ports(&resolver.endpoints(&route).await.unwrap()), [5222]);
    assert_eq!(
        dns.queries.lock().unwrap().len(),
        after,
        "the old answer is used, not asked for again, until the retry"
    );
}

#[tokio::test]
async fn a_failed_lookup_is_remembered_for_a_few_seconds() {
    let dns = Dns::start().await;
    dns.failing.store(true, Ordering::SeqCst);
    let resolver = Resolver::with_name_server(dns.addr);
    let route = srv_route();
    assert!(matches!(
        resolver.endpoints(&route).await,
        Err(UpstreamError::Resolve(_))
    ));
    let asked = dns.queries.lock().unwrap().len();
    assert!(asked >= 2, "SRV, then the domain's own address: {asked}");
    assert!(resolver.endpoints(&route).await.is_err());
    assert_eq!(dns.queries.lock().unwrap().len(), asked);
    // Once it is older than NEGATIVE_TTL, the name server is asked again, and now answers.
    dns.failing.store(false, Ordering::SeqCst);
    resolver.age(NEGATIVE_TTL);
    assert_eq!(ports(&resolver.endpoints(&route).await.unwrap()), [5222]);
}

#[tokio::test]
async fn static_host_names_are_resolved_once_and_literals_never() {
    let dns = Dns::start().await;
    let resolver = Resolver::with_name_server(dns.addr);
    let mut route = srv_route();
    route.endpoints = vec![
        Endpoint {
            host: "xmpp.example.test".into(),
            port: 5999,
            direct_tls: false,
            priority: 0,
        },
        Endpoint {
            host: "::1".into(),
            port: 5998,
            direct_tls: false,
            priority: 0,
        },
    ];
    for _ in 0..3 {
        assert_eq!(
            ports(&resolver.endpoints(&route).await.unwrap()),
            [5999, 5998]
        );
    }
    assert_eq!(dns.count(TARGET, RecordType::A), 1);
    assert_eq!(dns.srv_queries(), 0);
    route.endpoints.remove(0);
    let literal = Resolver::with_name_server(dns.addr);
    let before = dns.queries.lock().unwrap().len();
    assert_eq!(
        literal.endpoints(&route).await.unwrap()[0].addrs,
        ["[::1]:5998".parse().unwrap()]
    );
    assert_eq!(dns.queries.lock().unwrap().len(), before);
}

// docs/protocol.md §6: a route resolved by SRV whose endpoints are not checked is still known
// to readiness without any session (the first round resolves it); before, /readyz stayed 503
// until a session came, which behind a load balancer never happens.
#[tokio::test]
async fn readiness_knows_an_unchecked_srv_route_without_a_session() {
    let dns = Dns::start().await;
    let mut config = crate::config::Config::default();
    config.routes = vec![crate::config::RouteConfig {
        tls: TlsPolicy::Disabled,
        check_interval_secs: 0,
        ..crate::config::RouteConfig::new(DOMAIN)
    }];
    let mut upstreams = crate::upstream::Upstreams::new(&config).unwrap();
    upstreams.resolver = Resolver::with_name_server(dns.addr);
    let upstreams = Arc::new(upstreams);
    crate::upstream::checks::start(&upstreams);
    assert!(upstreams.ready().await, "the SRV target is known, and up");
    assert_eq!(dns.srv_queries(), 1);
}

//! State-machine tests, one per rule of docs/protocol.md §4, on paused tokio time.

use super::*;

pub(super) fn params(hold: usize) -> Params {
    Params {
        wait: Duration::from_secs(30),
        hold,
        requests: hold + 1,
        inactivity: Duration::from_secs(60),
        polling: Duration::from_secs(2),
        maxpause: Duration::from_secs(120),
        acks: false,
    }
}

pub(super) fn new_state(hold: usize) -> BoshState<u32> {
    BoshState::new(
        params(hold),
        100,
        None,
        Bytes::from_static(b"<body created/>"),
        Instant::now(),
    )
}

pub(super) fn req(rid: u64, tag: u32) -> Request<u32> {
    Request {
        rid,
        key: None,
        newkey: None,
        kind: Kind::Normal,
        payload: vec![],
        pause: None,
        ack: None,
        reply: tag,
    }
}

pub(super) fn with_payload(rid: u64, tag: u32, payload: &'static str) -> Request<u32> {
    Request {
        payload: vec![Bytes::from_static(payload.as_bytes())],
        ..req(rid, tag)
    }
}

/// (tag, body) of every Respond action.
pub(super) fn responses(actions: &[Action<u32>]) -> Vec<(u32, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Respond(t, b) => Some((*t, String::from_utf8(b.to_vec()).unwrap())),
            _ => None,
        })
        .collect()
}

pub(super) fn forwarded(actions: &[Action<u32>]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Forward(v) => Some(
                v.iter()
                    .map(|b| String::from_utf8(b.to_vec()).unwrap())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

pub(super) fn ended(actions: &[Action<u32>]) -> Option<&'static str> {
    actions.iter().find_map(|a| match a {
        Action::End(r) => Some(*r),
        _ => None,
    })
}

#[tokio::test(start_paused = true)]
async fn bosh_rid_out_of_order_waits_for_the_gap() {
    // docs/protocol.md §4: requests are processed in rid order within the window.
    let mut s = new_state(1);
    let a = s.on_request(with_payload(102, 2, "<message id='2'/>"), Instant::now());
    assert!(forwarded(&a).is_empty(), "rid 102 must wait for 101");
    let a = s.on_request(with_payload(101, 1, "<message id='1'/>"), Instant::now());
    assert_eq!(
        forwarded(&a),
        vec!["<message id='1'/>", "<message id='2'/>"]
    );
    // hold=1: processing 102 after 101 answers 101 at once.
    assert_eq!(
        responses(&a).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(s.held(), 1);
}

#[tokio::test(start_paused = true)]
async fn bosh_repeated_rid_returns_the_identical_cached_response() {
    // docs/protocol.md §4: a repeated rid gets the identical cached response again.
    let mut s = new_state(1);
    s.on_request(req(101, 1), Instant::now());
    s.on_upstream(Bytes::from_static(b"<message id='x'/>"));
    let mut a = Vec::new();
    s.flush(&mut a);
    let first = responses(&a);
    assert_eq!(first.len(), 1);
    assert!(first[0].1.contains("<message id='x'/>"));
    let again = s.on_request(req(101, 9), Instant::now());
    assert_eq!(responses(&again), vec![(9, first[0].1.clone())]);
    // The session request's own response is cached too.
    let created = s.on_request(req(100, 8), Instant::now());
    assert_eq!(
        responses(&created),
        vec![(8, "<body created/>".to_string())]
    );
}

#[tokio::test(start_paused = true)]
async fn bosh_rid_outside_the_window_is_item_not_found() {
    let mut s = new_state(1);
    let a = s.on_request(req(103, 1), Instant::now());
    let r = responses(&a);
    assert!(
        r[0].1.contains("type='terminate'") && r[0].1.contains("condition='item-not-found'"),
        "{r:?}"
    );
    assert_eq!(ended(&a), Some("bad_input"));
    // A rid too old to be cached is item-not-found as well.
    let mut s = new_state(1);
    for rid in 101..=105 {
        s.on_request(req(rid, rid as u32), Instant::now());
    }
    let a = s.on_request(req(101, 1), Instant::now());
    assert!(responses(&a)[0].1.contains("item-not-found"));
}

#[tokio::test(start_paused = true)]
async fn bosh_hold_answers_the_oldest_when_another_arrives() {
    // docs/protocol.md §4: at most `hold` requests are held.
    let mut s = new_state(1);
    assert!(responses(&s.on_request(req(101, 1), Instant::now())).is_empty());
    let a = s.on_request(req(102, 2), Instant::now());
    assert_eq!(responses(&a), vec![(1, "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:stream='http://etherx.jabber.org/streams'/>".into())]);
    assert_eq!(s.held(), 1);
    let mut s = new_state(2);
    s.on_request(req(101, 1), Instant::now());
    assert!(responses(&s.on_request(req(102, 2), Instant::now())).is_empty());
    assert_eq!(s.held(), 2);
}

#[tokio::test(start_paused = true)]
async fn bosh_more_than_requests_simultaneous_is_policy_violation() {
    // hold=1, requests=2: 101 held and 103 arriving means 102 is in flight too: three at once.
    let mut s = new_state(1);
    s.on_request(req(101, 1), Instant::now());
    let a = s.on_request(req(103, 3), Instant::now());
    let all = responses(&a);
    assert!(
        all.iter()
            .all(|(_, b)| b.contains("condition='policy-violation'")),
        "{all:?}"
    );
    let mut tags: Vec<u32> = all.iter().map(|r| r.0).collect();
    tags.sort();
    assert_eq!(tags, vec![1, 3], "every outstanding request is told");
    assert_eq!(ended(&a), Some("bad_input"));
}

#[tokio::test(start_paused = true)]
async fn bosh_polling_faster_than_allowed_is_policy_violation() {
    let mut s = new_state(0);
    let a = s.on_request(req(101, 1), Instant::now());
    assert_eq!(responses(&a).len(), 1, "hold=0 answers at once");
    tokio::time::advance(Duration::from_millis(500)).await;
    let a = s.on_request(req(102, 2), Instant::now());
    assert!(responses(&a)[0].1.contains("policy-violation"));
    // Waiting the polling interval is fine.
    let mut s = new_state(0);
    s.on_request(req(101, 1), Instant::now());
    tokio::time::advance(Duration::from_secs(2)).await;
    let a = s.on_request(req(102, 2), Instant::now());
    assert!(!responses(&a)[0].1.contains("terminate"));
}

#[tokio::test(start_paused = true)]
async fn bosh_wait_expiry_answers_an_empty_body() {
    let mut s = new_state(1);
    s.on_request(req(101, 1), Instant::now());
    let deadline = s.next_deadline().unwrap();
    assert_eq!(deadline, Instant::now() + Duration::from_secs(30));
    tokio::time::advance(Duration::from_secs(29)).await;
    let mut a = Vec::new();
    s.on_tick(Instant::now(), &mut a);
    assert!(a.is_empty());
    tokio::time::advance(Duration::from_secs(1)).await;
    s.on_tick(Instant::now(), &mut a);
    let r = responses(&a);
    assert_eq!(r.len(), 1);
    assert!(r[0].1.ends_with("/>") && !r[0].1.contains("terminate"));
}

#[tokio::test(start_paused = true)]
async fn bosh_inactivity_ends_the_session_and_closes_upstream() {
    let mut s = new_state(1);
    let mut a = Vec::new();
    tokio::time::advance(Duration::from_secs(59)).await;
    s.on_tick(Instant::now(), &mut a);
    assert!(ended(&a).is_none());
    tokio::time::advance(Duration::from_secs(1)).await;
    s.on_tick(Instant::now(), &mut a);
    assert_eq!(ended(&a), Some("inactivity"));
    assert!(a.iter().any(|x| matches!(x, Action::LeaveUpstream)));
}

#[tokio::test(start_paused = true)]
async fn bosh_pause_answers_held_and_extends_inactivity_up_to_maxpause() {
    let mut s = new_state(1);
    s.on_request(req(101, 1), Instant::now());
    let a = s.on_request(
        Request {
            pause: Some(600),
            ..req(102, 2)
        },
        Instant::now(),
    );
    assert_eq!(responses(&a).len(), 2, "a pause answers every held request");
    let mut a = Vec::new();
    tokio::time::advance(Duration::from_secs(119)).await;
    s.on_tick(Instant::now(), &mut a);
    assert!(
        ended(&a).is_none(),
        "a 600 s pause is capped at maxpause (120 s), not inactivity (60 s)"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    s.on_tick(Instant::now(), &mut a);
    assert_eq!(ended(&a), Some("inactivity"));
}

#[tokio::test(start_paused = true)]
async fn bosh_acks_name_the_highest_rid_when_answering_an_older_request() {
    let mut p = params(1);
    p.acks = true;
    let mut s = BoshState::new(p, 100, None, Bytes::new(), Instant::now());
    s.on_request(req(101, 1), Instant::now());
    let a = s.on_request(req(102, 2), Instant::now());
    assert!(
        responses(&a)[0].1.contains("ack='102'"),
        "{:?}",
        responses(&a)
    );
}

#[tokio::test(start_paused = true)]
async fn bosh_refused_body_ends_the_session_with_bad_request_once_its_rid_checks_out() {
    let mut s = new_state(1);
    // Out of the window: the session is not ended by someone who merely knows the sid.
    let a = s.on_request(
        Request {
            kind: Kind::Invalid,
            ..req(150, 1)
        },
        Instant::now(),
    );
    assert!(responses(&a)[0].1.contains("item-not-found"));
    let mut s = new_state(1);
    let a = s.on_request(
        Request {
            kind: Kind::Invalid,
            ..req(101, 1)
        },
        Instant::now(),
    );
    assert!(responses(&a)[0].1.contains("condition='bad-request'"));
    assert!(a.iter().any(|x| matches!(x, Action::CloseUpstream)));
    assert_eq!(ended(&a), Some("bad_input"));
}

#[tokio::test(start_paused = true)]
async fn bosh_drain_tells_the_client_at_once_and_still_delivers_requests_in_flight() {
    // docs/protocol.md §6: the held request is answered at once, with the pending stanza in an
    // ordinary body; a request that was already on its way has its payload forwarded and gets
    // the redirect.
    let mut s = new_state(1);
    s.on_request(req(101, 1), Instant::now());
    s.on_upstream(Bytes::from_static(b"<message id='pending'/>"));
    let mut a = Vec::new();
    s.on_shutdown(Some("https://lb.example/http-bind"), &mut a);
    let r = responses(&a);
    assert_eq!(r.len(), 1);
    assert!(r[0].1.contains("<message id='pending'/>") && !r[0].1.contains("terminate"));
    assert!(!s.end_delivered());
    let a = s.on_request(
        with_payload(102, 2, "<message id='raced'/>"),
        Instant::now(),
    );
    assert_eq!(forwarded(&a), vec!["<message id='raced'/>"]);
    let r = responses(&a);
    assert!(r[0].1.contains("condition='see-other-uri'") && !r[0].1.contains("pending"));
    assert!(s.end_delivered());
}

#[tokio::test(start_paused = true)]
async fn bosh_key_sequence_is_checked() {
    // XEP-0124 §15: K(n-1) = hex(SHA-1(K(n))).
    let k2 = "second";
    let k1 = sha1_hex(k2);
    let k0 = sha1_hex(&k1);
    let mut s: BoshState<u32> =
        BoshState::new(params(1), 100, Some(k0), Bytes::new(), Instant::now());
    let a = s.on_request(
        Request {
            key: Some(k1.clone()),
            ..req(101, 1)
        },
        Instant::now(),
    );
    assert!(ended(&a).is_none());
    let a = s.on_request(
        Request {
            key: Some(k2.to_string()),
            ..req(102, 2)
        },
        Instant::now(),
    );
    assert!(ended(&a).is_none());
    // A wrong key is refused alone; the session is not ended by whoever sent it (keys.rs).
    let a = s.on_request(
        Request {
            key: Some("wrong".into()),
            ..req(103, 3)
        },
        Instant::now(),
    );
    let r = responses(&a);
    assert!(
        r.len() == 1 && r[0].0 == 3 && r[0].1.contains("item-not-found"),
        "{r:?}"
    );
    assert_eq!(ended(&a), None);
}

#[tokio::test(start_paused = true)]
async fn bosh_restart_asks_for_an_upstream_restart_and_waits_for_features() {
    let mut s = new_state(1);
    let a = s.on_request(
        Request {
            kind: Kind::Restart,
            ..req(101, 1)
        },
        Instant::now(),
    );
    assert!(a.iter().any(|x| matches!(x, Action::Restart)));
    assert!(
        responses(&a).is_empty(),
        "held until the new features arrive"
    );
    s.on_upstream(Bytes::from_static(b"<stream:features/>"));
    let mut a = Vec::new();
    s.flush(&mut a);
    assert!(responses(&a)[0].1.contains("<stream:features/>"));
}

#[tokio::test(start_paused = true)]
async fn bosh_terminate_forwards_payload_and_answers_every_held_request() {
    let mut s = new_state(2);
    s.on_request(req(101, 1), Instant::now());
    let a = s.on_request(
        Request {
            kind: Kind::Terminate,
            ..with_payload(102, 2, "<presence type='unavailable'/>")
        },
        Instant::now(),
    );
    assert_eq!(forwarded(&a), vec!["<presence type='unavailable'/>"]);
    assert!(a.iter().any(|x| matches!(x, Action::CloseUpstream)));
    let r = responses(&a);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|(_, b)| b.contains("type='terminate'")));
    assert_eq!(ended(&a), Some("closed"));
}

#[tokio::test(start_paused = true)]
async fn bosh_no_loss_when_one_response_in_fifty_is_dropped() {
    // docs/protocol.md §4: a response lost on the HTTP side is recovered by repeating the rid; no
    // stanza is lost or duplicated. 10,000 messages, hold=1.
    let mut s = new_state(1);
    let mut received = Vec::new();
    let mut rid = 101u64;
    let mut tag = 0u32;
    let mut sent = 0u32;
    let mut dropped = 0;
    let mut outstanding: Vec<u64> = Vec::new();
    let handle =
        |actions: Vec<Action<u32>>, received: &mut Vec<String>, dropped: &mut u32| -> Vec<u64> {
            let mut lost = Vec::new();
            for (t, body) in responses(&actions) {
                let rid = u64::from(t >> 8);
                if t % 50 == 0 && t & 1 == 0 {
                    // The HTTP connection dropped: this response never arrives.
                    *dropped += 1;
                    lost.push(rid);
                    continue;
                }
                for part in body.split("<message ").skip(1) {
                    received.push(part.split('/').next().unwrap().to_string());
                }
            }
            lost
        };
    while sent < 10_000 || !outstanding.is_empty() {
        tag += 2;
        let t = ((rid as u32) << 8) | (tag & 0xff);
        let a = s.on_request(req(rid, t), Instant::now());
        outstanding.extend(handle(a, &mut received, &mut dropped));
        rid += 1;
        for _ in 0..3 {
            if sent < 10_000 {
                s.on_upstream(Bytes::from(format!("<message id='{sent}'/>")));
                sent += 1;
            }
        }
        let mut a = Vec::new();
        s.flush(&mut a);
        outstanding.extend(handle(a, &mut received, &mut dropped));
        // The client repeats every lost rid (with a tag that is never dropped).
        for lost in std::mem::take(&mut outstanding) {
            let a = s.on_request(req(lost, ((lost as u32) << 8) | 1), Instant::now());
            outstanding.extend(handle(a, &mut received, &mut dropped));
        }
        if sent >= 10_000 {
            // Drain: one more request collects what is left.
            let t = ((rid as u32) << 8) | 1;
            let a = s.on_request(req(rid, t), Instant::now());
            outstanding.extend(handle(a, &mut received, &mut dropped));
            rid += 1;
            let mut a = Vec::new();
            s.flush(&mut a);
            outstanding.extend(handle(a, &mut received, &mut dropped));
            if outstanding.is_empty() && received.len() >= 10_000 {
                break;
            }
        }
    }
    assert!(dropped > 0, "the test must actually drop responses");
    let expected: Vec<String> = (0..10_000).map(|i| format!("id='{i}'")).collect();
    assert_eq!(received.len(), 10_000, "each message exactly once");
    assert_eq!(received, expected, "in order");
}

#[tokio::test(start_paused = true)]
async fn bosh_a_request_waiting_for_a_gap_ends_a_pause() {
    // The client is back (its next request overtook the one before it): inactivity applies
    // again, and the deadline the task sleeps until is the one `on_tick` acts on.
    let mut s = new_state(2);
    let pause = Request {
        pause: Some(120),
        ..req(101, 1)
    };
    s.on_request(pause, Instant::now());
    assert!(s.on_request(req(103, 3), Instant::now()).is_empty());
    assert_eq!(
        s.next_deadline(),
        Some(Instant::now() + Duration::from_secs(60))
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    let mut a = Vec::new();
    s.on_tick(Instant::now(), &mut a);
    assert_eq!(ended(&a), Some("inactivity"));
}

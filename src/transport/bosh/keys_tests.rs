//! Tests of key sequencing (XEP-0124 §15, docs/protocol.md §4 "Keys"): a request without the
//! right key gets nothing of the session and changes nothing of it, whatever its rid. On paused
//! tokio time, with the state machine's test helpers.

use bytes::Bytes;
use tokio::time::Instant;

use super::super::tests::{ended, forwarded, new_state, params, req, responses, with_payload};
use super::super::{sha1_hex, terminate_body, BoshState, Request, Terminate};

/// Length of the test key chain: the session request carries K(N) as `newkey`.
const N: usize = 10;

/// K(0) = "seed", K(i) = hex(SHA-1(K(i-1))).
fn chain(seed: &str) -> Vec<String> {
    let mut keys = vec![seed.to_string()];
    for _ in 0..N {
        let next = sha1_hex(keys.last().unwrap());
        keys.push(next);
    }
    keys
}

/// A session created at rid 100 with `newkey` K(N); its creation answer carries the features.
fn keyed(hold: usize) -> (BoshState<u32>, Vec<String>) {
    let keys = chain("seed");
    let s = BoshState::new(
        params(hold),
        100,
        Some(keys[N].clone()),
        Bytes::from_static(b"<body sid='s'><stream:features/></body>"),
        Instant::now(),
    );
    (s, keys)
}

/// The key the client sends with `rid`: K(N-1) with 101, K(N-2) with 102, ...
fn key_for(keys: &[String], rid: u64) -> Option<String> {
    Some(keys[N - (rid - 100) as usize].clone())
}

fn with_key(rid: u64, tag: u32, key: Option<String>) -> Request<u32> {
    Request {
        key,
        ..req(rid, tag)
    }
}

fn refused(tag: u32) -> (u32, String) {
    let body = terminate_body(&Terminate::Condition("item-not-found"));
    (tag, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(start_paused = true)]
async fn bosh_keyed_replay_of_an_answered_rid_needs_the_key_it_first_carried() {
    let (mut s, keys) = keyed(1);
    // The session request carried no key: its answer, with the stream features, goes to nobody
    // who comes with the sid, whatever they send.
    for (tag, key) in [
        (5, None),
        (6, Some("guess".into())),
        (7, keys.get(N).cloned()),
    ] {
        let a = s.on_request(with_key(100, tag, key), Instant::now());
        assert_eq!(responses(&a), vec![refused(tag)]);
        assert!(ended(&a).is_none(), "{a:?}");
    }
    s.on_request(with_key(101, 1, key_for(&keys, 101)), Instant::now());
    s.on_upstream(Bytes::from_static(b"<message id='secret'/>"));
    let mut a = Vec::new();
    s.flush(&mut a);
    let first = responses(&a);
    assert!(first[0].1.contains("secret"), "{first:?}");
    // Not without a key, not with a guess, not with the next key (which hashes to this one).
    for (tag, key) in [
        (5, None),
        (6, Some("guess".into())),
        (7, key_for(&keys, 102)),
    ] {
        let a = s.on_request(with_key(101, tag, key), Instant::now());
        assert_eq!(responses(&a), vec![refused(tag)]);
        assert!(ended(&a).is_none(), "{a:?}");
    }
    // The client's own repeat gets the identical answer, and the session goes on.
    let a = s.on_request(with_key(101, 8, key_for(&keys, 101)), Instant::now());
    assert_eq!(responses(&a), vec![(8, first[0].1.clone())]);
    let a = s.on_request(with_key(102, 2, key_for(&keys, 102)), Instant::now());
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(s.held(), 1);
}

#[tokio::test(start_paused = true)]
async fn bosh_keyed_repeat_of_a_held_rid_joins_it_only_with_its_key() {
    let (mut s, keys) = keyed(1);
    s.on_request(with_key(101, 1, key_for(&keys, 101)), Instant::now());
    for (tag, key) in [(5, None), (6, Some("guess".into()))] {
        let a = s.on_request(with_key(101, tag, key), Instant::now());
        assert_eq!(responses(&a), vec![refused(tag)]);
    }
    assert!(s
        .on_request(with_key(101, 2, key_for(&keys, 101)), Instant::now())
        .is_empty());
    s.on_upstream(Bytes::from_static(b"<message id='secret'/>"));
    let mut a = Vec::new();
    s.flush(&mut a);
    let tags: Vec<u32> = responses(&a).iter().map(|r| r.0).collect();
    assert_eq!(tags, vec![1, 2], "only the client's copies get the stanza");
}

#[tokio::test(start_paused = true)]
async fn bosh_keyed_wrong_key_in_order_is_answered_alone_and_the_rid_stays_free() {
    // XEP-0124 §15: the request is not processed. The session is not ended either: whoever
    // knows only the sid must not be able to end it.
    let (mut s, keys) = keyed(1);
    let bogus = Request {
        key: Some("guess".into()),
        ..with_payload(101, 9, "<presence type='unavailable'/>")
    };
    let a = s.on_request(bogus, Instant::now());
    assert_eq!(responses(&a), vec![refused(9)]);
    assert!(forwarded(&a).is_empty() && ended(&a).is_none(), "{a:?}");
    let real = Request {
        key: key_for(&keys, 101),
        ..with_payload(101, 1, "<presence/>")
    };
    let a = s.on_request(real, Instant::now());
    assert_eq!(forwarded(&a), vec!["<presence/>"]);
    assert!(ended(&a).is_none(), "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn bosh_keyed_rid_out_of_the_window_with_a_wrong_key_leaves_the_session_alone() {
    let (mut s, keys) = keyed(1);
    for (tag, rid, key) in [(5, 103, None), (6, 150, Some("guess".to_string()))] {
        let a = s.on_request(with_key(rid, tag, key), Instant::now());
        assert_eq!(responses(&a), vec![refused(tag)]);
        assert!(ended(&a).is_none(), "{a:?}");
    }
    // Nor is it overactivity: 101 held and a stranger's 103 are not three requests at once.
    s.on_request(with_key(101, 1, key_for(&keys, 101)), Instant::now());
    let a = s.on_request(with_key(103, 7, Some("guess".into())), Instant::now());
    assert_eq!(responses(&a), vec![refused(7)]);
    assert!(ended(&a).is_none(), "{a:?}");
    assert_eq!(s.held(), 1);
    let a = s.on_request(with_key(102, 2, key_for(&keys, 102)), Instant::now());
    assert!(ended(&a).is_none(), "{a:?}");
    assert_eq!(
        responses(&a).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1]
    );
}

#[tokio::test(start_paused = true)]
async fn bosh_keyed_bogus_request_ahead_of_a_gap_never_displaces_the_real_one() {
    let real = |keys: &[String]| Request {
        key: key_for(keys, 102),
        ..with_payload(102, 2, "<message id='real'/>")
    };
    let bogus = || Request {
        key: Some("guess".into()),
        ..with_payload(102, 9, "<message id='bogus'/>")
    };
    // The real one is parked first: the bogus one is answered alone.
    let (mut s, keys) = keyed(2);
    assert!(s.on_request(real(&keys), Instant::now()).is_empty());
    let a = s.on_request(bogus(), Instant::now());
    assert_eq!(responses(&a), vec![refused(9)]);
    let a = s.on_request(with_key(101, 1, key_for(&keys, 101)), Instant::now());
    assert_eq!(forwarded(&a), vec!["<message id='real'/>"]);
    assert!(ended(&a).is_none(), "{a:?}");
    // The bogus one comes first: it waits unchecked, and the real one takes its place.
    let (mut s, keys) = keyed(2);
    assert!(s.on_request(bogus(), Instant::now()).is_empty());
    let a = s.on_request(real(&keys), Instant::now());
    assert_eq!(responses(&a), vec![refused(9)]);
    let a = s.on_request(with_key(101, 1, key_for(&keys, 101)), Instant::now());
    assert_eq!(forwarded(&a), vec!["<message id='real'/>"]);
    assert!(ended(&a).is_none(), "{a:?}");
    // Left alone, it is checked in order like any other, answered alone, and changes nothing.
    let (mut s, keys) = keyed(2);
    assert!(s.on_request(bogus(), Instant::now()).is_empty());
    let a = s.on_request(with_key(101, 1, key_for(&keys, 101)), Instant::now());
    assert_eq!(responses(&a), vec![refused(9)]);
    assert!(forwarded(&a).is_empty() && ended(&a).is_none(), "{a:?}");
    let a = s.on_request(real(&keys), Instant::now());
    assert_eq!(forwarded(&a), vec!["<message id='real'/>"]);
}

#[tokio::test(start_paused = true)]
async fn bosh_keyed_request_that_overtakes_a_newkey_waits_and_is_checked_in_order() {
    // XEP-0124 §15.5: 101 switches to a new chain and 102 already uses it. Arriving first, 102
    // cannot be checked against the old chain; it waits, and the new key lets it through.
    let (mut s, keys) = keyed(2);
    let fresh = chain("another seed");
    let after = Request {
        key: fresh.get(N - 1).cloned(),
        ..with_payload(102, 2, "<message id='after'/>")
    };
    assert!(s.on_request(after, Instant::now()).is_empty());
    let switch = Request {
        key: key_for(&keys, 101),
        newkey: fresh.get(N).cloned(),
        ..with_payload(101, 1, "<message id='before'/>")
    };
    let a = s.on_request(switch, Instant::now());
    assert_eq!(
        forwarded(&a),
        vec!["<message id='before'/>", "<message id='after'/>"]
    );
    assert!(ended(&a).is_none(), "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn bosh_keyed_end_tells_an_unchecked_early_request_nothing() {
    let (mut s, _) = keyed(2);
    assert!(s
        .on_request(with_key(102, 9, Some("guess".into())), Instant::now())
        .is_empty());
    let mut a = Vec::new();
    s.on_shutdown(Some("https://lb.example/http-bind"), &mut a);
    assert_eq!(responses(&a), vec![refused(9)]);
}

#[tokio::test(start_paused = true)]
async fn bosh_keyed_after_the_end_nothing_goes_to_a_request_without_the_key() {
    let (mut s, keys) = keyed(1);
    s.on_request(with_key(101, 1, key_for(&keys, 101)), Instant::now());
    s.on_upstream(Bytes::from_static(b"<message id='secret'/>"));
    let mut a = Vec::new();
    s.on_shutdown(Some("https://lb.example/http-bind"), &mut a);
    let carried = responses(&a);
    assert!(carried[0].1.contains("secret"), "{carried:?}");
    // Neither the stanza again, nor the redirect, nor anything forwarded.
    for (tag, rid, key) in [
        (5, 101, None),
        (6, 101, key_for(&keys, 102)),
        (7, 150, None),
        (8, 90, None),
        (9, 102, Some("guess".to_string())),
    ] {
        let bogus = Request {
            key,
            ..with_payload(rid, tag, "<message id='injected'/>")
        };
        let a = s.on_request(bogus, Instant::now());
        assert_eq!(responses(&a), vec![refused(tag)]);
        assert!(forwarded(&a).is_empty(), "{a:?}");
    }
    let a = s.on_request(with_key(101, 2, key_for(&keys, 101)), Instant::now());
    assert_eq!(responses(&a), vec![(2, carried[0].1.clone())]);
    let r = responses(&s.on_request(with_key(102, 3, key_for(&keys, 102)), Instant::now()));
    assert!(r[0].1.contains("see-other-uri"), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn bosh_copies_of_a_held_rid_are_bounded_and_the_displaced_are_told_to_retry() {
    // XEP-0124 §14.3: a client repeats a request once its connection broke, so only the newest
    // copies have a reader; XEP-0124 §17.3: `type='error'` asks a reader, if any, to repeat it.
    let mut s = new_state(1);
    s.on_request(req(101, 1), Instant::now());
    let mut displaced = Vec::new();
    for tag in 2..=10 {
        displaced.extend(responses(&s.on_request(req(101, tag), Instant::now())));
    }
    assert_eq!(
        displaced.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>(),
        "the oldest copy goes first"
    );
    for (_, body) in &displaced {
        assert!(
            body.contains("type='error'") && !body.contains("terminate"),
            "{body}"
        );
    }
    s.on_upstream(Bytes::from_static(b"<message id='m'/>"));
    let mut a = Vec::new();
    s.flush(&mut a);
    let r = responses(&a);
    assert_eq!(r.iter().map(|r| r.0).collect::<Vec<_>>(), vec![9, 10]);
    assert!(
        r.iter().all(|(_, b)| b.contains("<message id='m'/>")),
        "{r:?}"
    );
}

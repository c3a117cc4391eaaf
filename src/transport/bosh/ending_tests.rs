//! Tests of the end of a session (docs/protocol.md §4, "Ending a session" and "After the
//! end"), on paused tokio time, with the state machine's test helpers.

use bytes::Bytes;
use tokio::time::Instant;

use super::super::tests::{ended, forwarded, new_state, params, req, responses, with_payload};
use super::super::{sha1_hex, Action, BoshState, Kind, Request, Terminate};

#[tokio::test(start_paused = true)]
async fn bosh_terminate_answers_held_requests_in_rid_order_before_the_terminate_request() {
    // docs/protocol.md §4 (ending a session): a client reading its responses in rid order sees
    // the end once, on the first one; a logout is no error, so no condition.
    let mut s = new_state(1);
    s.on_request(req(101, 1), Instant::now());
    let a = s.on_request(
        Request {
            kind: Kind::Terminate,
            ..req(102, 2)
        },
        Instant::now(),
    );
    let r = responses(&a);
    assert_eq!(r.iter().map(|(t, _)| *t).collect::<Vec<_>>(), vec![1, 2]);
    for (_, body) in &r {
        assert!(
            body.contains("type='terminate'") && !body.contains("condition"),
            "{body}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn bosh_stanzas_pending_at_the_end_reach_the_client_once() {
    // A drain with no request held: the first request still in flight gets the pending stanza,
    // the next one only the redirect, and a repeat of the first (its response lost) the same
    // body again (XEP-0124 §14.3).
    let mut s = new_state(1);
    s.on_upstream(Bytes::from_static(b"<message id='pending'/>"));
    let mut a = Vec::new();
    s.on_shutdown(Some("https://lb.example/http-bind"), &mut a);
    assert!(responses(&a).is_empty());
    let first = responses(&s.on_request(req(101, 1), Instant::now()));
    assert!(
        first[0].1.contains("<message id='pending'/>") && !first[0].1.contains("terminate"),
        "{first:?}"
    );
    let second = responses(&s.on_request(req(102, 2), Instant::now()));
    assert!(
        second[0].1.contains("condition='see-other-uri'") && !second[0].1.contains("pending"),
        "{second:?}"
    );
    let again = responses(&s.on_request(req(101, 3), Instant::now()));
    assert_eq!(again[0].1, first[0].1);
}

#[tokio::test(start_paused = true)]
async fn bosh_a_lost_response_after_the_end_is_answered_again_identically() {
    // The upstream stream ended with a stanza pending; the response carrying it is lost and the
    // client repeats its rid: the stanza is not lost with it, and the terminate still follows.
    let mut s = new_state(1);
    s.on_upstream(Bytes::from_static(b"<message id='last'/>"));
    let mut a = Vec::new();
    s.on_upstream_end(Terminate::Normal, &mut a);
    let first = responses(&s.on_request(req(101, 1), Instant::now()));
    assert!(first[0].1.contains("<message id='last'/>"), "{first:?}");
    let again = responses(&s.on_request(req(101, 2), Instant::now()));
    assert_eq!(again[0].1, first[0].1);
    let end = responses(&s.on_request(req(102, 3), Instant::now()));
    assert!(end[0].1.contains("type='terminate'"), "{end:?}");
    let end_again = responses(&s.on_request(req(102, 4), Instant::now()));
    assert_eq!(end_again[0].1, end[0].1);
}

#[tokio::test(start_paused = true)]
async fn bosh_upstream_stream_error_is_remote_stream_error_naming_only_the_condition() {
    // docs/protocol.md §4 (upstream failures): no <stream:error/> child, which stanza's BOSH
    // transport cannot end its session on.
    let mut s = new_state(1);
    s.on_request(req(101, 1), Instant::now());
    let mut a = Vec::new();
    s.on_upstream_end(Terminate::RemoteStreamError, &mut a);
    let r = responses(&a);
    assert_eq!(
        r,
        vec![(
            1,
            "<body xmlns='http://jabber.org/protocol/httpbind' \
             xmlns:stream='http://etherx.jabber.org/streams' type='terminate' \
             condition='remote-stream-error'/>"
                .to_string()
        )]
    );
    assert_eq!(ended(&a), Some("upstream_stream_error"));
}

#[tokio::test(start_paused = true)]
async fn bosh_end_without_a_held_request_is_told_on_the_next_ones() {
    // The stanzas pending at the end in an ordinary body, then the terminate: strophe.js ignores
    // the payload of a terminate body and stanza fails on it.
    let mut s = new_state(1);
    let mut a = Vec::new();
    s.on_upstream(Bytes::from_static(b"<message id='last'/>"));
    s.on_upstream_end(Terminate::Normal, &mut a);
    assert!(!s.end_delivered());
    let r = responses(&s.on_request(req(101, 1), Instant::now()));
    assert!(
        r[0].1.contains("<message id='last'/>") && !r[0].1.contains("terminate"),
        "{r:?}"
    );
    assert!(!s.end_delivered());
    let r = responses(&s.on_request(req(102, 2), Instant::now()));
    assert!(
        r[0].1.contains("type='terminate'") && !r[0].1.contains("last"),
        "{r:?}"
    );
    assert!(s.end_delivered());
}

#[tokio::test(start_paused = true)]
async fn bosh_a_clients_terminate_delivers_nothing_still_pending() {
    // The client has left; with XEP-0198 the server still counts these as unacknowledged.
    let mut s = new_state(1);
    s.on_upstream(Bytes::from_static(b"<message id='late'/>"));
    let a = s.on_request(
        Request {
            kind: Kind::Terminate,
            ..req(101, 1)
        },
        Instant::now(),
    );
    let r = responses(&a);
    assert_eq!(r.len(), 1);
    assert!(
        r[0].1.contains("type='terminate'") && !r[0].1.contains("late"),
        "{r:?}"
    );
    assert!(s.end_delivered());
}

#[tokio::test(start_paused = true)]
async fn bosh_stanzas_wait_for_the_next_request_even_when_an_early_one_got_the_terminate() {
    // A request parked for a gap gets the terminate body at the end; the stanzas pending still
    // wait for the client's next request in order, and the session is not done until then.
    let mut s = new_state(1);
    s.on_upstream(Bytes::from_static(b"<message id='m'/>"));
    assert!(s.on_request(req(102, 2), Instant::now()).is_empty());
    let mut a = Vec::new();
    s.on_upstream_end(Terminate::RemoteStreamError, &mut a);
    let r = responses(&a);
    assert_eq!(r.len(), 1);
    assert!(
        r[0].0 == 2 && r[0].1.contains("remote-stream-error"),
        "{r:?}"
    );
    assert!(!s.end_delivered() && !s.settled());
    let r = responses(&s.on_request(req(101, 1), Instant::now()));
    assert!(r[0].1.contains("<message id='m'/>"), "{r:?}");
    assert!(s.end_delivered());
}

#[tokio::test(start_paused = true)]
async fn bosh_after_the_end_requests_are_taken_in_rid_order() {
    // 102 overtakes 101 on the wire: it waits, so 101 carries the stanza and 102 the end.
    let mut s = new_state(1);
    s.on_upstream(Bytes::from_static(b"<message id='m'/>"));
    s.on_upstream_end(Terminate::Normal, &mut Vec::new());
    assert!(s.on_request(req(102, 2), Instant::now()).is_empty());
    let r = responses(&s.on_request(req(101, 1), Instant::now()));
    assert_eq!(r.iter().map(|(t, _)| *t).collect::<Vec<_>>(), vec![1, 2]);
    assert!(r[0].1.contains("<message id='m'/>") && !r[0].1.contains("terminate"));
    assert!(r[1].1.contains("type='terminate'") && !r[1].1.contains("message"));
}

#[tokio::test(start_paused = true)]
async fn bosh_after_the_end_stanzas_go_only_with_the_right_key() {
    let k1 = "first";
    let k0 = sha1_hex(k1);
    let mut s: BoshState<u32> =
        BoshState::new(params(1), 100, Some(k0), Bytes::new(), Instant::now());
    s.on_upstream(Bytes::from_static(b"<message id='m'/>"));
    s.on_upstream_end(Terminate::Normal, &mut Vec::new());
    let wrong = Request {
        key: Some("guess".into()),
        ..req(101, 1)
    };
    let r = responses(&s.on_request(wrong, Instant::now()));
    assert!(
        r[0].1.contains("item-not-found") && !r[0].1.contains("message"),
        "{r:?}"
    );
    let right = Request {
        key: Some(k1.into()),
        ..req(101, 2)
    };
    let r = responses(&s.on_request(right, Instant::now()));
    assert!(r[0].1.contains("<message id='m'/>"), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn bosh_a_terminate_after_the_end_gets_the_terminate_body_and_nothing_pending() {
    let mut s = new_state(1);
    s.on_upstream(Bytes::from_static(b"<message id='m'/>"));
    s.on_upstream_end(Terminate::Normal, &mut Vec::new());
    let logout = Request {
        kind: Kind::Terminate,
        ..req(101, 1)
    };
    let r = responses(&s.on_request(logout, Instant::now()));
    assert!(
        r[0].1.contains("type='terminate'") && !r[0].1.contains("message"),
        "{r:?}"
    );
    assert!(s.settled());
}

#[tokio::test(start_paused = true)]
async fn bosh_an_answer_that_carried_stanzas_at_the_end_stays_repeatable() {
    // hold 2: the older held request carries the stanza, the newer the terminate. The client
    // has been told, but a repeat of the first may still come, so the session is not settled.
    let mut s = new_state(2);
    s.on_request(req(101, 1), Instant::now());
    s.on_request(req(102, 2), Instant::now());
    s.on_upstream(Bytes::from_static(b"<message id='m'/>"));
    let mut a = Vec::new();
    s.on_upstream_end(Terminate::Normal, &mut a);
    let r = responses(&a);
    assert!(r[0].0 == 1 && r[0].1.contains("<message id='m'/>"), "{r:?}");
    assert!(r[1].0 == 2 && r[1].1.contains("type='terminate'"), "{r:?}");
    assert!(s.end_delivered() && !s.settled());
    let again = responses(&s.on_request(req(101, 3), Instant::now()));
    assert_eq!(again[0].1, r[0].1);
}

#[tokio::test(start_paused = true)]
async fn bosh_a_second_end_changes_nothing() {
    // A write that fails while a drain lingers must not turn the redirect into another answer.
    let mut s = new_state(1);
    s.on_shutdown(Some("https://lb.example/http-bind"), &mut Vec::new());
    let mut a = Vec::new();
    s.on_upstream_end(Terminate::Condition("remote-connection-failed"), &mut a);
    assert!(a.is_empty(), "{a:?}");
    let r = responses(&s.on_request(with_payload(101, 1, "<message/>"), Instant::now()));
    assert!(r[0].1.contains("see-other-uri"), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn bosh_a_protocol_error_leaves_nothing_waiting_for_a_later_request() {
    // The client that broke the protocol has been told and sends no more: the session is
    // done at once instead of lingering for a request that will not come.
    let mut s = new_state(1);
    s.on_upstream(Bytes::from_static(b"<message id='m'/>"));
    let bad = Request {
        kind: Kind::Invalid,
        ..req(101, 1)
    };
    let a = s.on_request(bad, Instant::now());
    assert!(responses(&a)[0].1.contains("bad-request"));
    assert!(forwarded(&a).is_empty());
    assert!(s.settled());
    assert!(matches!(a.last(), Some(Action::End("bad_input"))));
}

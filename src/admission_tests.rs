//! Tests of admission: the caps, the token bucket, and the table's bound.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn limits(max: usize, per_address: usize, rate: u32, burst: u32) -> LimitsConfig {
    LimitsConfig {
        max_sessions: max,
        max_sessions_per_address: per_address,
        new_sessions_per_address_per_sec: rate,
        new_sessions_burst: burst,
        ..LimitsConfig::default()
    }
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

#[test]
fn the_global_cap_counts_every_address_and_frees_on_drop() {
    let admission = Arc::new(Admission::default());
    let l = limits(3, 10, 100, 100);
    let now = Instant::now();
    let a = admission.admit(v4(1), &l, now).unwrap();
    let _b = admission.admit(v4(2), &l, now).unwrap();
    let _c = admission.admit(v4(3), &l, now).unwrap();
    assert_eq!(admission.admit(v4(4), &l, now).unwrap_err(), Refusal::Full);
    assert_eq!(admission.sessions(), 3);
    drop(a);
    assert_eq!(admission.sessions(), 2);
    assert!(admission.admit(v4(4), &l, now).is_ok());
}

#[test]
fn one_address_holds_at_most_its_share_and_others_are_unaffected() {
    let admission = Arc::new(Admission::default());
    let l = limits(100, 2, 100, 100);
    let now = Instant::now();
    let first = admission.admit(v4(1), &l, now).unwrap();
    let _second = admission.admit(v4(1), &l, now).unwrap();
    assert_eq!(
        admission.admit(v4(1), &l, now).unwrap_err(),
        Refusal::AddressFull
    );
    assert!(admission.admit(v4(2), &l, now).is_ok());
    drop(first);
    assert!(admission.admit(v4(1), &l, now).is_ok());
}

#[test]
fn new_sessions_follow_the_token_bucket() {
    let admission = Arc::new(Admission::default());
    let l = limits(1000, 1000, 2, 5);
    let start = Instant::now();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(admission.admit(v4(1), &l, start).unwrap());
    }
    // The burst is spent: the next token is due in half a second.
    match admission.admit(v4(1), &l, start) {
        Err(Refusal::AddressRate { retry_after }) => {
            assert_eq!(retry_after, Duration::from_millis(500));
        }
        other => panic!("expected a rate refusal, got {other:?}"),
    }
    // A refusal costs no token: after half a second exactly one more session fits.
    let later = start + Duration::from_millis(500);
    held.push(admission.admit(v4(1), &l, later).unwrap());
    assert!(matches!(
        admission.admit(v4(1), &l, later),
        Err(Refusal::AddressRate { .. })
    ));
    // Ending sessions does not give tokens back: the rate holds for open-and-close churn.
    held.clear();
    assert!(matches!(
        admission.admit(v4(1), &l, later),
        Err(Refusal::AddressRate { .. })
    ));
    // The bucket refills to its burst, no further.
    let much_later = start + Duration::from_secs(3600);
    for _ in 0..5 {
        held.push(admission.admit(v4(1), &l, much_later).unwrap());
    }
    assert!(admission.admit(v4(1), &l, much_later).is_err());
}

#[test]
fn an_ipv6_client_network_is_one_address() {
    let admission = Arc::new(Admission::default());
    let l = limits(100, 2, 100, 100);
    let now = Instant::now();
    let ip = |host: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, host));
    let _a = admission.admit(ip(1), &l, now).unwrap();
    let _b = admission.admit(ip(2), &l, now).unwrap();
    assert_eq!(
        admission.admit(ip(3), &l, now).unwrap_err(),
        Refusal::AddressFull
    );
    // Another /64 is another client; an IPv4-mapped address counts as the IPv4 address.
    let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
    assert!(admission.admit(other, &l, now).is_ok());
    let _c = admission.admit(v4(9), &l, now).unwrap();
    let _d = admission.admit(v4(9), &l, now).unwrap();
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped());
    assert_eq!(
        admission.admit(mapped, &l, now).unwrap_err(),
        Refusal::AddressFull
    );
}

#[test]
fn addresses_with_nothing_to_remember_are_forgotten() {
    let admission = Arc::new(Admission::default());
    let l = limits(1_000_000, 10, 10, 10);
    let start = Instant::now();
    // 10,000 addresses each start and end one session.
    for i in 0..10_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        drop(admission.admit(ip, &l, start).unwrap());
    }
    // Their buckets refill within a second; afterwards new addresses sweep them away.
    let later = start + Duration::from_secs(2);
    for i in 0..10_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
        drop(admission.admit(ip, &l, later).unwrap());
    }
    // The second wave is still recent (its buckets are not full again); of the first, at
    // most what a shard holds between two sweeps is left.
    let kept = admission.addresses();
    assert!(kept <= 10_000 + 64 * SHARDS, "{kept} addresses kept");
    assert_eq!(admission.sessions(), 0);
}

#[test]
fn refusals_say_when_to_retry() {
    assert_eq!(Refusal::Full.retry_after_secs(), 5);
    let soon = Refusal::AddressRate {
        retry_after: Duration::from_millis(10),
    };
    assert_eq!(soon.retry_after_secs(), 1);
    for r in [Refusal::Full, Refusal::AddressFull, soon] {
        assert!(REFUSAL_REASONS.contains(&r.reason()));
    }
}

#[test]
fn past_the_ceiling_new_sessions_wait_and_the_biggest_holder_is_told() {
    let admission = Arc::new(Admission::default());
    let l = LimitsConfig {
        max_buffered_bytes_total: 1000,
        ..limits(100, 100, 100, 100)
    };
    let now = Instant::now();
    let mut big = admission.admit(v4(1), &l, now).unwrap();
    let mut small = admission.admit(v4(2), &l, now).unwrap();
    assert_eq!(big.set_buffered(900, &l), Ok(()));
    // Over the ceiling: the small holder (under its share of 500) goes on, the big one not.
    assert_eq!(small.set_buffered(200, &l), Ok(()));
    assert_eq!(admission.buffered(), 1100);
    assert_eq!(
        admission.admit(v4(3), &l, now).unwrap_err(),
        Refusal::Memory
    );
    assert_eq!(big.set_buffered(950, &l), Err(OverCeiling));
    // Giving bytes back, or ending, brings the process under its ceiling again.
    assert_eq!(big.set_buffered(100, &l), Ok(()));
    drop(small);
    assert_eq!(admission.buffered(), 100);
    assert!(admission.admit(v4(3), &l, now).is_ok());
}

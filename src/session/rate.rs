//! What one browser may send per second (docs/protocol.md §7): two token buckets per session,
//! stanzas and bytes, each with a short burst. Over the rate, the session's transport either
//! stops reading the browser until the buckets have refilled (`throttle`, TCP pushes back on
//! the browser) or ends the session with `policy-violation` (`close`), as configured.

use tokio::time::Instant;

use crate::config::{LimitsConfig, RateExceeded};

/// One bucket: `tokens` may go below zero in throttle mode (the debt the reader waits off).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn new(rate: u64, burst: u64) -> Self {
        Bucket {
            tokens: burst as f64,
            rate: rate as f64,
            burst: burst as f64,
        }
    }

    fn refill(&mut self, secs: f64) {
        self.tokens = (self.tokens + secs * self.rate).min(self.burst);
    }

    /// Seconds until the bucket is out of debt.
    fn debt_secs(&self) -> f64 {
        if self.tokens >= 0.0 {
            0.0
        } else {
            -self.tokens / self.rate
        }
    }
}

/// The outcome of charging one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charge {
    /// Within the rate.
    Within,
    /// Over the rate in `close` mode: the element is refused.
    Exceeded,
}

/// The rate state of one session.
#[derive(Debug, Clone)]
pub(crate) struct ClientRate {
    stanzas: Bucket,
    bytes: Bucket,
    at: Instant,
    mode: RateExceeded,
}

impl ClientRate {
    pub(crate) fn new(limits: &LimitsConfig, now: Instant) -> Self {
        ClientRate {
            stanzas: Bucket::new(
                u64::from(limits.session_stanzas_per_sec),
                u64::from(limits.session_stanzas_burst),
            ),
            bytes: Bucket::new(limits.session_bytes_per_sec, limits.session_bytes_burst),
            at: now,
            mode: limits.session_rate_exceeded,
        }
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.stanzas.refill(secs);
        self.bytes.refill(secs);
        self.at = now;
    }

    /// Charges one element of `len` bytes sent by the browser.
    pub(crate) fn charge(&mut self, len: usize, now: Instant) -> Charge {
        self.refill(now);
        let len = len as f64;
        if self.mode == RateExceeded::Close
            && (self.stanzas.tokens < 1.0 || self.bytes.tokens < len)
        {
            return Charge::Exceeded;
        }
        self.stanzas.tokens -= 1.0;
        self.bytes.tokens -= len;
        Charge::Within
    }

    /// In throttle mode, when reading the browser may go on: `None` once that time has come
    /// (`now`), or while within the rate.
    pub(crate) fn paused_until(&self, now: Instant) -> Option<Instant> {
        let secs = self.stanzas.debt_secs().max(self.bytes.debt_secs());
        if secs <= 0.0 {
            return None;
        }
        let until = self.at + std::time::Duration::from_secs_f64(secs);
        (until > now).then_some(until)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(mode: RateExceeded) -> LimitsConfig {
        LimitsConfig {
            session_stanzas_per_sec: 10,
            session_stanzas_burst: 5,
            session_bytes_per_sec: 1000,
            session_bytes_burst: 4000,
            session_rate_exceeded: mode,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn throttle_lets_the_burst_through_then_pauses_for_the_debt() {
        let start = Instant::now();
        let mut rate = ClientRate::new(&limits(RateExceeded::Throttle), start);
        for _ in 0..5 {
            assert_eq!(rate.charge(10, start), Charge::Within);
            assert_eq!(rate.paused_until(start), None);
        }
        // The sixth stanza is sent, and puts the stanza bucket one token in debt: 0.1 s.
        assert_eq!(rate.charge(10, start), Charge::Within);
        assert_eq!(
            rate.paused_until(start),
            Some(start + Duration::from_millis(100))
        );
        // Bytes too: 6,000 bytes past a 4,000 burst at 1,000/s is 2 s of debt.
        let later = start + Duration::from_millis(100);
        assert_eq!(rate.charge(6000 - 60, later), Charge::Within);
        let until = rate.paused_until(later).unwrap();
        assert!(until > later + Duration::from_millis(1900), "{until:?}");
        // Once that time has come, reading goes on.
        assert_eq!(rate.paused_until(until), None);
    }

    #[test]
    fn close_refuses_what_the_buckets_cannot_pay_for() {
        let start = Instant::now();
        let mut rate = ClientRate::new(&limits(RateExceeded::Close), start);
        for _ in 0..5 {
            assert_eq!(rate.charge(10, start), Charge::Within);
        }
        assert_eq!(rate.charge(10, start), Charge::Exceeded);
        let later = start + Duration::from_millis(100);
        assert_eq!(rate.charge(10, later), Charge::Within);
        // A stanza larger than the bytes left is refused even with stanza tokens to spare.
        let much_later = start + Duration::from_secs(10);
        assert_eq!(rate.charge(4001, much_later), Charge::Exceeded);
        assert_eq!(rate.paused_until(start), None, "close mode never pauses");
    }
}

//! What a run counts, what it samples from the target process, and the report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Shards of the delivery histogram, so receivers on different threads rarely meet.
const SHARDS: usize = 64;

/// Counters and histograms shared by all sessions.
pub struct Stats {
    pub reached: AtomicU64,
    pub failed: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    /// Messages of an earlier run (kept by the server while their recipient was offline).
    pub stale: AtomicU64,
    pub senders_started: AtomicU64,
    pub senders_stopped: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    login_auth: Mutex<Histogram<u64>>,
    login_bound: Mutex<Histogram<u64>>,
    delivery: Vec<Mutex<Histogram<u64>>>,
}

/// Microseconds, from 1 µs to an hour, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            reached: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            senders_started: AtomicU64::new(0),
            senders_stopped: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            login_auth: Mutex::new(histogram()),
            login_bound: Mutex::new(histogram()),
            delivery: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
        }
    }

    /// A session that failed in `phase`; counted by kind of error.
    pub fn error(&self, phase: &str, err: &anyhow::Error) {
        self.error_kind(&format!("{phase} {}", kind(err)));
        if phase == "login" {
            self.failed.fetch_add(1, Relaxed);
        }
    }

    pub fn error_kind(&self, kind: &str) {
        *self
            .errors
            .lock()
            .expect("not poisoned")
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().expect("not poisoned").clone()
    }

    pub fn reached(&self) {
        self.reached.fetch_add(1, Relaxed);
    }

    pub fn authenticated(&self, elapsed: Duration) {
        record(&self.login_auth, elapsed.as_micros() as u64);
    }

    pub fn bound(&self, elapsed: Duration) {
        record(&self.login_bound, elapsed.as_micros() as u64);
    }

    pub fn sent(&self, count: u64) {
        self.sent.fetch_add(count, Relaxed);
    }

    pub fn duplicated(&self) {
        self.duplicated.fetch_add(1, Relaxed);
    }

    pub fn reordered(&self) {
        self.reordered.fetch_add(1, Relaxed);
    }

    /// A message received by session `index`, `latency_nanos` after it was sent.
    pub fn received(&self, index: usize, latency_nanos: u64) {
        self.received.fetch_add(1, Relaxed);
        record(&self.delivery[index % SHARDS], latency_nanos / 1000);
    }

    pub fn login_percentiles(&self) -> (Percentiles, Percentiles) {
        let auth = Percentiles::of(&self.login_auth.lock().expect("not poisoned"));
        let bound = Percentiles::of(&self.login_bound.lock().expect("not poisoned"));
        (auth, bound)
    }

    pub fn delivery_percentiles(&self) -> Percentiles {
        let mut all = histogram();
        for shard in &self.delivery {
            all.add(&*shard.lock().expect("not poisoned"))
                .expect("same bounds");
        }
        Percentiles::of(&all)
    }
}

fn record(histogram: &Mutex<Histogram<u64>>, micros: u64) {
    histogram
        .lock()
        .expect("not poisoned")
        .saturating_record(micros.max(1));
}

/// The kind of an error: its first word, with the condition for protocol errors.
fn kind(err: &anyhow::Error) -> String {
    let message = err.to_string();
    let (head, tail) = message.split_once(": ").unwrap_or((&message, ""));
    match head {
        "stream-error" | "bosh-terminate" | "http-status" | "sasl-failure" => {
            format!("{head}: {}", tail.split_whitespace().next().unwrap_or(""))
        }
        _ => head.chars().take(60).collect(),
    }
}

/// Percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// CPU time and resident memory of a process, from /proc.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ProcSample {
    /// User and system time together.
    pub cpu_secs: f64,
    /// System time alone: the kernel's share of `cpu_secs` (system calls, network stack).
    pub system_cpu_secs: f64,
    pub rss_kib: u64,
}

/// Linux reports CPU times in /proc in units of USER_HZ, 100 per second on every
/// architecture the gateway is built for.
const USER_HZ: f64 = 100.0;

impl ProcSample {
    pub fn read(pid: u32) -> std::io::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 of stat; `after` starts at field 3.
        let cpu_secs = (ticks(11) + ticks(12)) / USER_HZ;
        let system_cpu_secs = ticks(12) / USER_HZ;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Ok(ProcSample {
            cpu_secs,
            system_cpu_secs,
            rss_kib,
        })
    }
}

/// Figures of one target process over the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetFigures {
    pub pid: u32,
    /// Before the first session.
    pub start: ProcSample,
    /// With every session logged in and idle (after `--hold`).
    pub idle: ProcSample,
    /// After the traffic phase.
    pub after_traffic: ProcSample,
    /// (idle RSS − start RSS) / sessions reached.
    pub rss_per_session_kib: f64,
    /// CPU seconds spent while sessions logged in.
    pub login_cpu_secs: f64,
    /// CPU seconds of the traffic phase.
    pub traffic_cpu_secs: f64,
    /// The kernel's share of `traffic_cpu_secs`.
    pub traffic_system_cpu_secs: f64,
    /// Traffic CPU per delivered message, µs (each message is two relayed stanzas).
    pub cpu_per_message_us: f64,
}

/// Everything a run reports (printed as a table, written as JSON with `--json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub transport: String,
    pub sessions_planned: u64,
    pub sessions_reached: u64,
    pub sessions_failed: u64,
    pub ramp_secs: f64,
    pub login_to_success_ms: Percentiles,
    pub login_to_bound_ms: Percentiles,
    pub traffic_secs: f64,
    pub rate_offered: f64,
    pub rate_delivered: f64,
    pub delivery_ms: Percentiles,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    pub messages_reordered: u64,
    pub messages_of_earlier_runs: u64,
    pub errors: BTreeMap<String, u64>,
    pub targets: Vec<TargetFigures>,
}

impl Report {
    /// The run passed its own checks: every session up, every message once and in order.
    pub fn clean(&self) -> bool {
        self.sessions_reached == self.sessions_planned
            && self.messages_lost == 0
            && self.messages_duplicated == 0
            && self.messages_reordered == 0
            && self.errors.is_empty()
    }

    pub fn print(&self) {
        let p = |name: &str, v: &Percentiles| {
            println!(
                "{name:<24} p50 {:>9.3}  p95 {:>9.3}  p99 {:>9.3}  max {:>9.3}  (n={})",
                v.p50, v.p95, v.p99, v.max, v.count
            );
        };
        println!("transport                {}", self.transport);
        println!(
            "sessions                 {} of {} reached, {} failed, ramp {:.1} s",
            self.sessions_reached, self.sessions_planned, self.sessions_failed, self.ramp_secs
        );
        p("login to <success/> ms", &self.login_to_success_ms);
        p("login to bound JID ms", &self.login_to_bound_ms);
        if self.messages_sent > 0 {
            println!(
                "messages                 sent {} received {} lost {} duplicated {} reordered {} \
                 (earlier runs' {})",
                self.messages_sent,
                self.messages_received,
                self.messages_lost,
                self.messages_duplicated,
                self.messages_reordered,
                self.messages_of_earlier_runs
            );
            println!(
                "rate                     offered {:.0}/s delivered {:.0}/s over {:.1} s",
                self.rate_offered, self.rate_delivered, self.traffic_secs
            );
            p("delivery ms", &self.delivery_ms);
        }
        for t in &self.targets {
            println!(
                "pid {:<20} RSS {} → {} kB idle ({:.2} KiB/session) → {} kB; CPU login {:.2} s, \
                 traffic {:.2} s, of which system {:.2} s ({:.2} µs/message)",
                t.pid,
                t.start.rss_kib,
                t.idle.rss_kib,
                t.rss_per_session_kib,
                t.after_traffic.rss_kib,
                t.login_cpu_secs,
                t.traffic_cpu_secs,
                t.traffic_system_cpu_secs,
                t.cpu_per_message_us
            );
        }
        if self.errors.is_empty() {
            println!("errors                   none");
        }
        for (kind, count) in &self.errors {
            println!("error                    {count:>7}  {kind}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_kind_and_login_failures_by_session() {
        let stats = Stats::new();
        stats.error(
            "login",
            &anyhow::anyhow!("stream-error: host-unknown and more"),
        );
        stats.error("login", &anyhow::anyhow!("connect: refused"));
        stats.error(
            "traffic",
            &anyhow::anyhow!("closed: the server sent <close/>"),
        );
        stats.error("login", &anyhow::anyhow!("timeout"));
        stats.error_kind("traffic malformed body");
        let errors = stats.errors();
        assert_eq!(errors["login stream-error: host-unknown"], 1);
        assert_eq!(errors["login connect"], 1);
        assert_eq!(errors["traffic closed"], 1);
        assert_eq!(errors["login timeout"], 1);
        assert_eq!(errors["traffic malformed body"], 1);
        assert_eq!(stats.failed.load(Relaxed), 3);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = ProcSample::read(std::process::id()).unwrap();
        assert!(sample.rss_kib > 0);
    }

    #[test]
    fn system_time_is_the_kernels_share_of_the_cpu_time() {
        use std::io::Write;
        let pid = std::process::id();
        let before = ProcSample::read(pid).unwrap();
        // System calls until the kernel has charged this process a few ticks of system time.
        let mut null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let mut after = before;
        for _ in 0..10_000 {
            for _ in 0..1_000 {
                null.write_all(&[0; 64]).unwrap();
            }
            after = ProcSample::read(pid).unwrap();
            if after.system_cpu_secs - before.system_cpu_secs >= 0.05 {
                break;
            }
        }
        let system = after.system_cpu_secs - before.system_cpu_secs;
        assert!(system >= 0.05, "no system time charged: {system}");
        assert!(after.system_cpu_secs <= after.cpu_secs);
        assert!(after.cpu_secs - before.cpu_secs >= system);
    }
}

//! `xmpp-loadtest run`: ramp sessions up, hold them idle, drive traffic, report.
//!
//! Phases: ramp (sessions log in at `--ramp` per second, at most `--concurrency` at once),
//! hold (`--hold` seconds idle: the memory sample), traffic (`--rate` messages per second in
//! all, for `--duration` seconds, between pairs of sessions 2k and 2k+1), settle (up to
//! `--settle` seconds for messages still on their way), close.

mod bosh;
mod conn;
mod report;
mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::{watch, Semaphore};

use report::{ProcSample, Report, Stats, TargetFigures};

/// Options of `xmpp-loadtest run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// ws (RFC 7395), bosh (XEP-0206), mix (alternating ws and bosh), or tcp (RFC 6120
    /// straight to a server: the baseline).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
    /// WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:5280/xmpp-websocket")]
    pub ws: String,
    /// BOSH endpoint.
    #[arg(long, default_value = "http://127.0.0.1:5280/http-bind")]
    pub bosh: String,
    /// After the session request, every request of a BOSH session goes to this endpoint
    /// instead: another node of a gateway cluster, which forwards it to the node holding the
    /// session (the cost of that hop, against a run without it).
    #[arg(long)]
    pub bosh_then: Option<String>,
    /// XMPP server for `--transport tcp`.
    #[arg(long, default_value = "127.0.0.1:5222")]
    pub tcp: String,
    /// CA certificate (PEM) that a server offering STARTTLS is verified against (tcp).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Sessions to open.
    #[arg(long, default_value_t = 10)]
    pub sessions: usize,
    /// Sessions started per second.
    #[arg(long, default_value_t = 200.0)]
    pub ramp: f64,
    /// Logins in progress at once, at most.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Seconds every session stays idle after the ramp, before the memory sample.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Messages per second, all senders together (0: no traffic).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait after the traffic for messages still on their way.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
    /// XMPP domain.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Users are `PREFIX<N>`, N from `--first-user`.
    #[arg(long, default_value = "lt")]
    pub user_prefix: String,
    /// Number of the first session's user.
    #[arg(long, default_value_t = 0)]
    pub first_user: usize,
    /// Accounts the sessions share, each session with a resource of its own (0: one account
    /// per session). Each login's presence goes to the account's other resources.
    #[arg(long, default_value_t = 0)]
    pub accounts: usize,
    /// Every user's password.
    #[arg(long, default_value = "loadtest")]
    pub password: String,
    /// SASL mechanism (RFC 6120 §6).
    #[arg(long, value_enum, default_value_t = Mechanism::ScramSha1)]
    pub mechanism: Mechanism,
    /// BOSH `wait` in seconds.
    #[arg(long, default_value_t = 60)]
    pub bosh_wait: u64,
    /// Seconds a login may take.
    #[arg(long, default_value_t = 30.0)]
    pub login_timeout: f64,
    /// Source addresses to spread connections over: a list (127.0.0.1,127.0.0.2) or a
    /// range (127.0.1.1-127.0.1.16).
    #[arg(long)]
    pub source: Option<String>,
    /// A process to sample CPU time and RSS of (the gateway, or the server); repeatable.
    #[arg(long)]
    pub pid: Vec<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 5.0)]
    pub progress: f64,
    /// Exit with status 1 unless every session logged in and every message arrived once,
    /// in order, with no error.
    #[arg(long)]
    pub strict: bool,
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Bosh,
    Mix,
    Tcp,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    #[value(name = "scram-sha-1")]
    ScramSha1,
}

/// How a session reaches XMPP.
#[derive(Debug)]
pub enum Target {
    WebSocket { addr: SocketAddr, url: String },
    Bosh(bosh::Endpoint),
    Tcp { addr: SocketAddr },
}

/// A SCRAM salt and iteration count.
type SaltKey = (Vec<u8>, u32);

/// What all sessions of a run share.
pub struct Plan {
    targets: Vec<Target>,
    sources: Vec<IpAddr>,
    pub domain: String,
    pub user_prefix: String,
    pub first_user: usize,
    pub accounts: usize,
    pub password: String,
    /// SASL mechanism name as the server lists it.
    pub mechanism: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub bosh_wait: u64,
    /// Where a BOSH session's requests go after the session request (`--bosh-then`).
    pub bosh_then: Option<bosh::Endpoint>,
    pub login_timeout: Duration,
    pub jids: Vec<OnceLock<String>>,
    pub stats: Stats,
    /// Tells this run's messages from an earlier run's.
    pub run_id: u64,
    base: Instant,
    salted: Mutex<HashMap<SaltKey, [u8; 20]>>,
}

impl Plan {
    /// The transport of session `index` (alternating for `mix`).
    pub fn transport_of(&self, index: usize) -> &Target {
        &self.targets[index % self.targets.len()]
    }

    pub fn source(&self, index: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[index % self.sources.len()])
    }

    /// Nanoseconds since the run began: the send timestamp in each message.
    pub fn now_nanos(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// `Hi(password, salt, i)`, computed once per salt (the fixture uses one salt for all).
    pub fn salted_password(&self, salt: &[u8], iterations: u32) -> [u8; 20] {
        let key = (salt.to_vec(), iterations);
        if let Some(found) = self.salted.lock().expect("not poisoned").get(&key) {
            return *found;
        }
        let salted = crate::scram::salted_password(&self.password, salt, iterations);
        self.salted
            .lock()
            .expect("not poisoned")
            .insert(key, salted);
        salted
    }
}

/// Where the run is; sessions watch it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    Ramp,
    Hold,
    Traffic { per_sender_rate: f64 },
    Settle,
    Close,
}

pub async fn main(args: Args) -> Result<()> {
    if args.ramp.is_nan() || args.ramp <= 0.0 {
        bail!("--ramp must be more than 0 sessions per second");
    }
    let plan = Arc::new(plan(&args).await?);
    let transport = format!("{:?}", args.transport).to_lowercase();
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let progress = spawn_progress(plan.clone(), args.progress, args.sessions);
    let start: Vec<ProcSample> = sample(&args.pid)?;

    // Ramp.
    let ramp_start = Instant::now();
    let logins = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..args.sessions {
        let due = ramp_start + Duration::from_secs_f64(index as f64 / args.ramp);
        tokio::time::sleep_until(due.into()).await;
        let permit = logins.clone().acquire_owned().await.expect("never closed");
        tasks.spawn(session::run(index, plan.clone(), phase_rx.clone(), permit));
    }
    // The ramp ends when every login slot is back: each session has bound or failed.
    drop(logins.acquire_many(args.concurrency.max(1) as u32).await);
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    let login_cpu: Vec<ProcSample> = sample(&args.pid)?;

    // Hold.
    phase_tx.send_replace(Phase::Hold);
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let idle: Vec<ProcSample> = sample(&args.pid)?;

    // Traffic.
    let active = (0..args.sessions)
        .filter(|&i| {
            plan.jids[i].get().is_some() && plan.jids.get(i ^ 1).is_some_and(|j| j.get().is_some())
        })
        .count();
    let mut traffic_secs = 0.0;
    let mut after_traffic = idle.clone();
    if args.rate > 0.0 && active > 0 {
        let per_sender_rate = args.rate / active as f64;
        let traffic_start = Instant::now();
        phase_tx.send_replace(Phase::Traffic { per_sender_rate });
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        phase_tx.send_replace(Phase::Settle);
        traffic_secs = traffic_start.elapsed().as_secs_f64();
        after_traffic = sample(&args.pid)?;
        let settle_until = Instant::now() + Duration::from_secs_f64(args.settle);
        while Instant::now() < settle_until
            && !(all_stopped(&plan.stats) && all_arrived(&plan.stats))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Close.
    phase_tx.send_replace(Phase::Close);
    let closing = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .is_err()
    {
        plan.stats.error_kind("close timed out");
    }
    progress.abort();

    let stats = &plan.stats;
    let (login_auth, login_bound) = stats.login_percentiles();
    let sent = stats.sent.load(Relaxed);
    let received = stats.received.load(Relaxed);
    let reached = stats.reached.load(Relaxed);
    let targets = args
        .pid
        .iter()
        .enumerate()
        .map(|(i, &pid)| TargetFigures {
            pid,
            start: start[i],
            idle: idle[i],
            after_traffic: after_traffic[i],
            rss_per_session_kib: (idle[i].rss_kib as f64 - start[i].rss_kib as f64)
                / reached.max(1) as f64,
            login_cpu_secs: login_cpu[i].cpu_secs - start[i].cpu_secs,
            traffic_cpu_secs: after_traffic[i].cpu_secs - idle[i].cpu_secs,
            traffic_system_cpu_secs: after_traffic[i].system_cpu_secs - idle[i].system_cpu_secs,
            cpu_per_message_us: (after_traffic[i].cpu_secs - idle[i].cpu_secs) * 1e6
                / received.max(1) as f64,
        })
        .collect();
    let report = Report {
        transport,
        sessions_planned: args.sessions as u64,
        sessions_reached: reached,
        sessions_failed: stats.failed.load(Relaxed),
        ramp_secs,
        login_to_success_ms: login_auth,
        login_to_bound_ms: login_bound,
        traffic_secs,
        rate_offered: if traffic_secs > 0.0 { args.rate } else { 0.0 },
        rate_delivered: if traffic_secs > 0.0 {
            received as f64 / traffic_secs
        } else {
            0.0
        },
        delivery_ms: stats.delivery_percentiles(),
        messages_sent: sent,
        messages_received: received,
        messages_lost: sent.saturating_sub(received),
        messages_duplicated: stats.duplicated.load(Relaxed),
        messages_reordered: stats.reordered.load(Relaxed),
        messages_of_earlier_runs: stats.stale.load(Relaxed),
        errors: stats.errors(),
        targets,
    };
    report.print();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.strict && !report.clean() {
        bail!("the run was not clean (see the report)");
    }
    Ok(())
}

/// Every sender has seen the end of the traffic phase: nothing more will be sent.
fn all_stopped(stats: &Stats) -> bool {
    stats.senders_stopped.load(Relaxed) >= stats.senders_started.load(Relaxed)
}

fn all_arrived(stats: &Stats) -> bool {
    stats.received.load(Relaxed) + stats.duplicated.load(Relaxed) >= stats.sent.load(Relaxed)
}

fn sample(pids: &[u32]) -> Result<Vec<ProcSample>> {
    pids.iter()
        .map(|&pid| ProcSample::read(pid).with_context(|| format!("reading /proc/{pid}")))
        .collect()
}

/// Prints a progress line every `every` seconds until aborted.
fn spawn_progress(plan: Arc<Plan>, every: f64, planned: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if every <= 0.0 {
            return;
        }
        let begin = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(every));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let s = &plan.stats;
            eprintln!(
                "[{:>6.1} s] sessions {}/{planned} up, {} failed; messages sent {} received {}",
                begin.elapsed().as_secs_f64(),
                s.reached.load(Relaxed),
                s.failed.load(Relaxed),
                s.sent.load(Relaxed),
                s.received.load(Relaxed),
            );
        }
    })
}

async fn plan(args: &Args) -> Result<Plan> {
    let ws = || -> Result<Target> {
        let uri: http::Uri = args.ws.parse().context("--ws")?;
        Ok(Target::WebSocket {
            addr: resolve(uri.authority().context("--ws has no host")?.as_str())?,
            url: args.ws.clone(),
        })
    };
    let endpoint = |url: &str| -> Result<bosh::Endpoint> {
        let uri: http::Uri = url.parse().context("--bosh")?;
        let authority = uri
            .authority()
            .context("--bosh has no host")?
            .as_str()
            .to_owned();
        Ok(bosh::Endpoint {
            addr: resolve(&authority)?,
            path: uri.path().to_owned(),
            authority,
            source: None,
        })
    };
    let bosh = || -> Result<Target> { Ok(Target::Bosh(endpoint(&args.bosh)?)) };
    let bosh_then = args.bosh_then.as_deref().map(endpoint).transpose()?;
    let targets = match args.transport {
        Transport::Ws => vec![ws()?],
        Transport::Bosh => vec![bosh()?],
        Transport::Mix => vec![ws()?, bosh()?],
        Transport::Tcp => vec![Target::Tcp {
            addr: resolve(&args.tcp)?,
        }],
    };
    let tls = match &args.ca {
        Some(path) => Some(Arc::new(tls_config(path)?)),
        None => None,
    };
    Ok(Plan {
        targets,
        sources: parse_sources(args.source.as_deref().unwrap_or(""))?,
        domain: args.domain.clone(),
        user_prefix: args.user_prefix.clone(),
        first_user: args.first_user,
        accounts: args.accounts,
        password: args.password.clone(),
        mechanism: match args.mechanism {
            Mechanism::Plain => "PLAIN".into(),
            Mechanism::ScramSha1 => "SCRAM-SHA-1".into(),
        },
        tls,
        bosh_wait: args.bosh_wait,
        bosh_then,
        login_timeout: Duration::from_secs_f64(args.login_timeout),
        jids: (0..args.sessions).map(|_| OnceLock::new()).collect(),
        stats: Stats::new(),
        run_id: u64::from(rand::random::<u32>()),
        base: Instant::now(),
        salted: Mutex::new(HashMap::new()),
    })
}

fn resolve(authority: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))
}

fn tls_config(ca: &std::path::Path) -> Result<rustls::ClientConfig> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let roots = rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .context("CA file")?;
    client_tls(roots)
}

/// A TLS client trusting only `roots` (ring, TLS 1.2 and 1.3): the load tester's STARTTLS,
/// and the fixture's tests.
pub(crate) fn client_tls(
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth())
}

/// `a,b,c` or `first-last` (IPv4, last octet counting up).
fn parse_sources(spec: &str) -> Result<Vec<IpAddr>> {
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    if let Some((first, last)) = spec.split_once('-') {
        let first: std::net::Ipv4Addr = first.parse().context("--source")?;
        let last: std::net::Ipv4Addr = last.parse().context("--source")?;
        let (a, b) = (u32::from(first), u32::from(last));
        if b < a || b - a > 65_535 {
            bail!("--source: {spec} is not a range");
        }
        return Ok((a..=b).map(|n| IpAddr::V4(n.into())).collect());
    }
    spec.split(',')
        .map(|s| s.trim().parse().with_context(|| format!("--source {s}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_as_lists_and_ranges() {
        assert_eq!(parse_sources("").unwrap(), Vec::<IpAddr>::new());
        let range = parse_sources("127.0.1.254-127.0.2.1").unwrap();
        assert_eq!(range.len(), 4);
        assert_eq!(range[3], "127.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(parse_sources("127.0.0.1, ::1").unwrap().len(), 2);
        assert!(parse_sources("127.0.0.9-127.0.0.1").is_err());
    }
}

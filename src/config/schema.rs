//! The configuration schema: the types every part of the gateway reads, with their defaults
//! and the command-line flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use super::cluster::ClusterConfig;

/// Command-line flags. Every option can also be set in the file or the environment; the flags
/// listed here are the contract scripts rely on.
#[derive(Parser, Debug, Default, Clone)]
#[command(
    name = "xmpp-gateway",
    version,
    about = "WebSocket and BOSH gateway from browsers to XMPP servers"
)]
pub struct Cli {
    /// Public HTTP listener (WebSocket, BOSH, host-meta, demo files).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Admin listener (/metrics, /healthz, /readyz).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Serve DOMAIN, reaching it at the given endpoints, or by DNS SRV when none are given.
    /// Repeatable.
    #[arg(long = "route", value_name = "DOMAIN[=HOST:PORT[,HOST:PORT...]]")]
    pub routes: Vec<String>,
    /// PEM bundle of CA certificates that upstream server certificates are verified against
    /// (instead of the system roots).
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print the result and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Serve the files of this directory at / (the demo page).
    #[arg(long, value_name = "DIR")]
    pub static_dir: Option<PathBuf>,
    /// Seconds a drain (SIGTERM/SIGINT) waits for sessions to end before exiting.
    #[arg(long = "drain-timeout", value_name = "SECONDS")]
    pub drain_timeout: Option<u64>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Errors found while reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file, an environment variable or a flag holds something the schema refuses; the
    /// message names the key.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A `--route` value does not follow `DOMAIN[=HOST:PORT[,HOST:PORT...]]`.
    #[error("invalid route {0:?}: expected DOMAIN[=HOST:PORT[,HOST:PORT...]]")]
    Route(String),
    /// A value is out of its allowed range.
    #[error("{0}")]
    Value(String),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether and how the upstream stream is encrypted (docs/protocol.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// STARTTLS (or direct TLS) with a verified certificate, or no session.
    #[default]
    Required,
    /// STARTTLS when the server offers it, plain otherwise.
    Opportunistic,
    /// Plain TCP; only for a server on a trusted network.
    Disabled,
}

/// Whether the gateway tells a route's servers who its client is, with a PROXY protocol header
/// (HAProxy's specification) before the first byte of the stream (docs/protocol.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// No header: the server sees the gateway's address.
    #[default]
    Off,
    /// The text header (`PROXY TCP4 ...`).
    V1,
    /// The binary header.
    V2,
}

/// What happens to a session whose browser sends faster than its rate limits
/// (docs/protocol.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RateExceeded {
    /// Stop reading the browser until the buckets have refilled (TCP pushes back).
    #[default]
    Throttle,
    /// End the session with `policy-violation`.
    Close,
}

/// One served domain and how to reach its XMPP server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The XMPP domain clients name in `to`.
    pub domain: String,
    /// `host:port` endpoints tried in order; empty means DNS SRV.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Upstream TLS policy.
    #[serde(default)]
    pub tls: TlsPolicy,
    /// Static endpoints speak TLS from the first byte (XEP-0368) instead of STARTTLS.
    #[serde(default)]
    pub direct_tls: bool,
    /// Name the upstream certificate must carry, when it differs from the domain.
    #[serde(default)]
    pub tls_name: Option<String>,
    /// A PROXY protocol header naming the browser, sent to the server before anything else.
    /// Only for servers (or a proxy in front of them) that expect it: a server that does not
    /// reads it as bad XML.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// Milliseconds before the first probe of an endpoint that failed; doubled for each
    /// failed probe, with jitter (docs/protocol.md §1).
    #[serde(default = "default_backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// The longest wait between probes of an endpoint that stays down, in milliseconds.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Seconds between health checks of each endpoint that is up (docs/protocol.md §1); 0
    /// turns them off, and then only sessions find out that an endpoint fails.
    #[serde(default = "default_check_interval_secs")]
    pub check_interval_secs: u64,
    /// Streams kept open and ready for new sessions (docs/protocol.md §1, the warm pool).
    #[serde(default)]
    pub pool: PoolConfig,
}

/// A route's warm pool: upstream streams opened ahead of demand (TCP, TLS, stream header sent,
/// features received), each handed to one new session.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Streams kept ready; 0, the default, means no pool.
    pub warm: usize,
    /// A ready stream older than this is closed and replaced; keep it below the server's
    /// timeout for streams that do not authenticate.
    pub max_age_secs: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            warm: 0,
            max_age_secs: 120,
        }
    }
}

fn default_backoff_min_ms() -> u64 {
    500
}

fn default_backoff_max_ms() -> u64 {
    10_000
}

fn default_check_interval_secs() -> u64 {
    10
}

impl RouteConfig {
    /// A route for `domain` with every other setting at its default.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            endpoints: Vec::new(),
            tls: TlsPolicy::default(),
            direct_tls: false,
            tls_name: None,
            proxy_protocol: ProxyProtocol::default(),
            backoff_min_ms: default_backoff_min_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            check_interval_secs: default_check_interval_secs(),
            pool: PoolConfig::default(),
        }
    }
}

/// Logging options.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax; `RUST_LOG` itself wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// WebSocket transport options (docs/protocol.md §3).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Seconds between pings to the browser; well inside the 60 s idle cut of common proxies.
    pub ping_interval_secs: u64,
    /// Pings that may go unanswered before the session is closed.
    pub max_missed_pongs: u32,
    /// Origins allowed to open a WebSocket; empty allows any (and logs it).
    pub allowed_origins: Vec<String>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            ping_interval_secs: 25,
            max_missed_pongs: 2,
            allowed_origins: Vec::new(),
        }
    }
}

/// BOSH transport options (docs/protocol.md §4). Client requests are capped by these.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BoshConfig {
    /// Longest `wait` granted, in seconds.
    pub max_wait_secs: u64,
    /// Largest `hold` granted. 1 by default: a client that asks for more than it has request
    /// channels for (stanza asks 2 and keeps two) could otherwise find every channel held and
    /// wait up to `wait` seconds to send (docs/protocol.md §4).
    pub max_hold: u64,
    /// Seconds without a held request before a session is ended (`inactivity`). Generous,
    /// because browsers throttle timers in background tabs.
    pub inactivity_secs: u64,
    /// Shortest interval between empty requests when `hold` is 0 (`polling`).
    pub polling_secs: u64,
    /// Longest `pause` granted (`maxpause`).
    pub max_pause_secs: u64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Responses at least this large are gzip-compressed when the client accepts it.
    pub gzip_min_bytes: usize,
    /// Origins allowed by CORS; empty allows any.
    pub allowed_origins: Vec<String>,
}

impl Default for BoshConfig {
    fn default() -> Self {
        Self {
            max_wait_secs: 60,
            max_hold: 1,
            inactivity_secs: 75,
            polling_secs: 2,
            max_pause_secs: 120,
            max_body_bytes: 1024 * 1024,
            gzip_min_bytes: 1024,
            allowed_origins: Vec::new(),
        }
    }
}

/// Limits that protect the gateway and other users from one session (docs/protocol.md §2).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest element accepted from a browser, in bytes.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting accepted from a browser.
    pub max_depth: usize,
    /// Most attributes on one element from a browser.
    pub max_attributes: usize,
    /// Largest element accepted from the server, in bytes. The server relays what any user
    /// on the network sends, so only well-formedness and this size are checked on its stream
    /// (docs/protocol.md §2); it should be at least the server's own limit on what it sends.
    pub max_upstream_stanza_bytes: usize,
    /// Bytes one session holds each way (docs/protocol.md §7): stanzas waiting for the browser,
    /// past which the server is not read, and what the browser sent waiting for the server,
    /// past which the browser is not read.
    pub max_buffered_bytes: usize,
    /// Most concurrent client connections on the public listener.
    pub max_connections: usize,
    /// Bytes all sessions together may buffer (stanzas waiting for a BOSH request, partial
    /// elements from the server, what browsers sent waiting for a server): past it new sessions are refused and the sessions holding
    /// more than an equal share are cut (docs/protocol.md §7).
    pub max_buffered_bytes_total: usize,
    /// Most sessions on this node, WebSocket and BOSH together (docs/protocol.md §7).
    pub max_sessions: usize,
    /// Most concurrent sessions from one client address (an IPv4 address or an IPv6 /64).
    pub max_sessions_per_address: usize,
    /// New sessions one client address may start per second, on average (token bucket rate).
    pub new_sessions_per_address_per_sec: u32,
    /// New sessions one client address may start at once (token bucket size).
    pub new_sessions_burst: u32,
    /// Stanzas one session's browser may send per second, on average.
    pub session_stanzas_per_sec: u32,
    /// Stanzas one session's browser may send at once.
    pub session_stanzas_burst: u32,
    /// Bytes one session's browser may send per second, on average.
    pub session_bytes_per_sec: u64,
    /// Bytes one session's browser may send at once; at least `max_stanza_bytes`.
    pub session_bytes_burst: u64,
    /// Over those rates: throttle reading, or end the session with `policy-violation`.
    pub session_rate_exceeded: RateExceeded,
    /// Seconds a client may take to send its request headers. hyper restarts this timer as
    /// soon as a response is written, so it also bounds an idle HTTP/1.1 keep-alive connection.
    pub header_read_timeout_secs: u64,
    /// Largest HTTP/1.1 request head (request line and headers), in bytes; larger heads are
    /// answered 431. It is also the size of the read buffer each HTTP/1.1 connection keeps for
    /// its life, so a larger value costs memory on every connection (docs/PERFORMANCE.md §1).
    /// At least 8192. HTTP/2 has its own limit (hyper's 16 KiB header list).
    pub max_request_head_bytes: usize,
    /// Seconds a client may take to send a whole request body, whatever its pace. 30 s lets the
    /// largest stanza (256 KiB) arrive at 70 kbit/s and a full 1 MiB BOSH body at 280 kbit/s
    /// (a slow mobile uplink) while a dribbling client holds its connection no longer than one
    /// that never sends `<open/>`.
    pub body_read_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight before it is closed
    /// (HTTP/2: GOAWAY). A held BOSH request and an upgraded WebSocket are not idle.
    pub http_idle_timeout_secs: u64,
    /// Seconds without a frame from an HTTP/2 peer before it is sent a ping.
    pub http2_keep_alive_interval_secs: u64,
    /// Seconds an HTTP/2 ping may go unanswered before the connection is closed as dead.
    pub http2_keep_alive_timeout_secs: u64,
    /// Most concurrent connections on the admin listener; beyond it new ones are closed.
    pub admin_max_connections: usize,
    /// Seconds for one upstream endpoint to accept TCP, TLS and the stream header; DNS
    /// resolution of a route gets the same time.
    pub connect_timeout_secs: u64,
    /// Seconds any write to a peer (browser or server) may wait without the peer taking a
    /// byte before the connection is cut (docs/protocol.md §7).
    pub write_timeout_secs: u64,
    /// Seconds a WebSocket client may take to send its `<open/>`.
    pub open_timeout_secs: u64,
    /// Proxies whose word on the client's address is believed: a PROXY protocol header on
    /// their connections, `Forwarded`/`X-Forwarded-For` on their requests (docs/protocol.md
    /// §7). Empty (the default): the client's address is always the socket's peer.
    pub trusted_proxies: TrustedProxies,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attributes: 64,
            max_upstream_stanza_bytes: 1024 * 1024,
            max_buffered_bytes: 1024 * 1024,
            max_connections: 100_000,
            max_buffered_bytes_total: 1024 * 1024 * 1024,
            max_sessions: 100_000,
            max_sessions_per_address: 500,
            new_sessions_per_address_per_sec: 20,
            new_sessions_burst: 100,
            session_stanzas_per_sec: 50,
            session_stanzas_burst: 200,
            session_bytes_per_sec: 64 * 1024,
            session_bytes_burst: 512 * 1024,
            session_rate_exceeded: RateExceeded::Throttle,
            header_read_timeout_secs: 10,
            max_request_head_bytes: 8192,
            body_read_timeout_secs: 30,
            http_idle_timeout_secs: 60,
            http2_keep_alive_interval_secs: 20,
            http2_keep_alive_timeout_secs: 20,
            admin_max_connections: 64,
            connect_timeout_secs: 10,
            write_timeout_secs: 20,
            open_timeout_secs: 30,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// The address ranges of trusted proxies, written as CIDR ranges (`10.0.0.0/8`, `::1/128`) or
/// single addresses (`192.0.2.7`, meaning `/32` or `/128`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses the configured entries; the error names the first one that is neither a range
    /// nor an address.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| parse_range(e.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `ip` lies in one of the ranges. An IPv4 address seen as IPv4-mapped IPv6 (a
    /// dual-stack listener reports `::ffff:10.0.0.1`) is matched as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_range(entry: &str) -> Result<IpNet, String> {
    let text = entry.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!(
                "limits.trusted_proxies: {entry:?} is neither an address nor a CIDR range \
                 (ADDRESS/PREFIX, e.g. \"10.0.0.0/8\" or \"::1/128\")"
            )
        })?,
    };
    // A range of IPv4-mapped IPv6 addresses is the IPv4 range it maps, as addresses are
    // compared in their canonical form.
    let net = match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        other => other,
    };
    Ok(net.trunc())
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(d)?;
        Self::parse(&entries).map_err(serde::de::Error::custom)
    }
}

/// What sessions are told when the node drains (docs/protocol.md §6).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// WebSocket clients get `<close see-other-uri=…/>` with this URL (typically the load
    /// balancer's public URL) instead of a `system-shutdown` stream error.
    pub websocket_redirect: Option<String>,
    /// BOSH clients get `condition='see-other-uri'` with this URL instead of
    /// `system-shutdown`.
    pub bosh_redirect: Option<String>,
}

/// TLS on the public listener, for deployments without a TLS-terminating load balancer
/// (docs/protocol.md §7). Both files or neither; reread on SIGHUP.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerTlsConfig {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// Public URLs announced by XEP-0156 discovery (docs/protocol.md §5).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// `wss://…/xmpp-websocket` as browsers reach it; derived from the request when unset.
    pub websocket_url: Option<String>,
    /// `https://…/http-bind` as browsers reach it; derived from the request when unset.
    pub bosh_url: Option<String>,
}

/// The whole configuration, as the gateway uses it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Public HTTP listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Served domains.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// CA bundle for upstream certificates; system roots when unset.
    pub upstream_ca: Option<PathBuf>,
    /// Directory served at `/`.
    pub static_dir: Option<PathBuf>,
    /// TLS on the public listener (`https://`, `wss://`); plain HTTP when unset.
    pub tls: ListenerTlsConfig,
    /// Logging.
    pub log: LogConfig,
    /// WebSocket transport.
    pub websocket: WebSocketConfig,
    /// BOSH transport.
    pub bosh: BoshConfig,
    /// Limits.
    pub limits: LimitsConfig,
    /// XEP-0156 discovery.
    pub discovery: DiscoveryConfig,
    /// Seconds a drain waits for sessions to end before the process exits anyway.
    pub drain_timeout_secs: u64,
    /// Seconds between failing `/readyz` and telling sessions to leave, so load balancers
    /// stop sending new clients first (their health-check interval times the failures they
    /// need).
    pub drain_grace_secs: u64,
    /// What draining sessions are told.
    pub drain: DrainConfig,
    /// BOSH on any node of a cluster.
    pub cluster: ClusterConfig,
    /// `XMPP_GATEWAY_*` variables that name no option (other tools share the prefix, e.g. a
    /// test harness's `XMPP_GATEWAY_BIN`): ignored, and logged at start-up.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5280)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9280)),
            routes: Vec::new(),
            upstream_ca: None,
            static_dir: None,
            tls: ListenerTlsConfig::default(),
            log: LogConfig::default(),
            websocket: WebSocketConfig::default(),
            bosh: BoshConfig::default(),
            limits: LimitsConfig::default(),
            discovery: DiscoveryConfig::default(),
            drain_timeout_secs: 30,
            drain_grace_secs: 0,
            drain: DrainConfig::default(),
            cluster: ClusterConfig::default(),
            ignored_env: Vec::new(),
        }
    }
}

impl Config {
    /// BOSH inactivity period as a duration.
    pub fn bosh_inactivity(&self) -> Duration {
        Duration::from_secs(self.bosh.inactivity_secs)
    }

    /// Ping interval as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.websocket.ping_interval_secs)
    }
}

//! Configuration: the types every part of the gateway reads, their defaults, and the merge of
//! the three sources an operator uses (TOML file, `XMPP_GATEWAY_*` environment, flags).
//!
//! Precedence is file < environment < flags. The file and the environment are merged as TOML
//! values before anything is deserialised, so one `deny_unknown_fields` check names any key the
//! gateway does not know, wherever it came from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

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

/// Whether and how the upstream stream is encrypted (PROTOCOL.md §1).
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

/// WebSocket transport options (PROTOCOL.md §3).
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

/// BOSH transport options (PROTOCOL.md §4). Client requests are capped by these.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BoshConfig {
    /// Longest `wait` granted, in seconds.
    pub max_wait_secs: u64,
    /// Largest `hold` granted.
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
            max_hold: 2,
            inactivity_secs: 75,
            polling_secs: 2,
            max_pause_secs: 120,
            max_body_bytes: 1024 * 1024,
            gzip_min_bytes: 1024,
            allowed_origins: Vec::new(),
        }
    }
}

/// Limits that protect the gateway and other users from one session (PROTOCOL.md §2).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest element accepted from either side, in bytes.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting accepted.
    pub max_depth: usize,
    /// Most attributes on one element.
    pub max_attributes: usize,
    /// Bytes queued toward one side of one session before the session is cut off as a slow
    /// reader.
    pub max_buffered_bytes: usize,
    /// Most concurrent client connections on the public listener.
    pub max_connections: usize,
    /// Seconds a client may take to send its request headers.
    pub header_read_timeout_secs: u64,
    /// Seconds for one upstream endpoint to accept TCP, TLS and the stream header.
    pub connect_timeout_secs: u64,
    /// Seconds a WebSocket client may take to send its `<open/>`.
    pub open_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attributes: 64,
            max_buffered_bytes: 1024 * 1024,
            max_connections: 100_000,
            header_read_timeout_secs: 10,
            connect_timeout_secs: 10,
            open_timeout_secs: 30,
        }
    }
}

/// What sessions are told when the node drains (PROTOCOL.md §6).
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

/// Public URLs announced by XEP-0156 discovery (PROTOCOL.md §5).
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
            log: LogConfig::default(),
            websocket: WebSocketConfig::default(),
            bosh: BoshConfig::default(),
            limits: LimitsConfig::default(),
            discovery: DiscoveryConfig::default(),
            drain_timeout_secs: 30,
            drain_grace_secs: 0,
            drain: DrainConfig::default(),
            ignored_env: Vec::new(),
        }
    }
}

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "XMPP_GATEWAY_";

impl Config {
    /// Builds the configuration from the flags, the environment and the file the flags or the
    /// environment name.
    pub fn load(
        cli: &Cli,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let file = cli.config.clone().or_else(|| {
            env.iter()
                .find(|(k, _)| k == "XMPP_GATEWAY_CONFIG")
                .map(|(_, v)| PathBuf::from(v))
        });
        let text = match &file {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_sources(&text, &env, cli)
    }

    /// Merges file text, environment pairs and flags; exposed for tests.
    pub fn from_sources(
        file: &str,
        env: &[(String, String)],
        cli: &Cli,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(file).map_err(|e| ConfigError::Invalid(e.message().to_string()))?;
        let mut ignored = Vec::new();
        for (key, value) in env {
            if !apply_env(&mut table, key, value)? {
                ignored.push(key.clone());
            }
        }
        let mut config: Config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Invalid(e.message().to_string()))?;
        config.ignored_env = ignored;
        config.apply_cli(cli)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_cli(&mut self, cli: &Cli) -> Result<(), ConfigError> {
        if let Some(a) = cli.listen {
            self.listen = a;
        }
        if let Some(a) = cli.admin_listen {
            self.admin_listen = a;
        }
        if let Some(p) = &cli.upstream_ca {
            self.upstream_ca = Some(p.clone());
        }
        if let Some(p) = &cli.static_dir {
            self.static_dir = Some(p.clone());
        }
        if let Some(t) = cli.drain_timeout {
            self.drain_timeout_secs = t;
        }
        if let Some(f) = cli.log_format {
            self.log.format = f;
        }
        if !cli.routes.is_empty() {
            self.routes = merge_routes(&self.routes, &cli.routes)?;
        }
        Ok(())
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for route in &mut self.routes {
            route.domain = route
                .domain
                .trim()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if route.domain.is_empty() {
                return Err(ConfigError::Value("route with an empty domain".into()));
            }
            if !seen.insert(route.domain.clone()) {
                return Err(ConfigError::Value(format!(
                    "route {} is given twice",
                    route.domain
                )));
            }
            for ep in &route.endpoints {
                parse_endpoint(ep).ok_or_else(|| {
                    ConfigError::Value(format!(
                        "route {}: endpoint {ep:?} is not HOST:PORT",
                        route.domain
                    ))
                })?;
            }
            if route.direct_tls && route.tls == TlsPolicy::Disabled {
                return Err(ConfigError::Value(format!(
                    "route {}: direct_tls contradicts tls = \"disabled\"",
                    route.domain
                )));
            }
        }
        let l = &self.limits;
        if l.max_stanza_bytes < 1024 || l.max_depth == 0 || l.max_attributes == 0 {
            return Err(ConfigError::Value(
                "limits: max_stanza_bytes must be at least 1024, max_depth and max_attributes at least 1".into(),
            ));
        }
        if l.max_buffered_bytes < l.max_stanza_bytes {
            return Err(ConfigError::Value(
                "limits.max_buffered_bytes must be at least limits.max_stanza_bytes".into(),
            ));
        }
        if self.websocket.ping_interval_secs == 0 || self.websocket.max_missed_pongs == 0 {
            return Err(ConfigError::Value(
                "websocket.ping_interval_secs and websocket.max_missed_pongs must be at least 1"
                    .into(),
            ));
        }
        let b = &self.bosh;
        if b.max_wait_secs == 0 || b.inactivity_secs == 0 || b.max_body_bytes < 1024 {
            return Err(ConfigError::Value(
                "bosh: max_wait_secs and inactivity_secs must be at least 1, max_body_bytes at least 1024".into(),
            ));
        }
        if let Some(ca) = &self.upstream_ca {
            if !ca.is_file() {
                return Err(ConfigError::Value(format!(
                    "upstream_ca {} is not a readable file",
                    ca.display()
                )));
            }
        }
        Ok(())
    }

    /// BOSH inactivity period as a duration.
    pub fn bosh_inactivity(&self) -> Duration {
        Duration::from_secs(self.bosh.inactivity_secs)
    }

    /// Ping interval as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.websocket.ping_interval_secs)
    }
}

/// Splits `host:port` (with `[v6]:port`) into its parts.
pub fn parse_endpoint(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.trim().rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || port == 0 || host.contains(['/', ' ']) {
        return None;
    }
    Some((host.to_string(), port))
}

/// Parses one `--route` value.
pub fn parse_route_flag(s: &str) -> Result<RouteConfig, ConfigError> {
    let bad = || ConfigError::Route(s.to_string());
    let (domain, endpoints) = match s.split_once('=') {
        Some((d, eps)) => {
            let eps: Vec<String> = eps.split(',').map(|e| e.trim().to_string()).collect();
            if eps.iter().any(|e| parse_endpoint(e).is_none()) {
                return Err(bad());
            }
            (d, eps)
        }
        None => (s, Vec::new()),
    };
    let domain = domain.trim();
    if domain.is_empty() || domain.contains([':', '/', ' ', '@']) {
        return Err(bad());
    }
    Ok(RouteConfig {
        domain: domain.to_ascii_lowercase(),
        endpoints,
        tls: TlsPolicy::default(),
        direct_tls: false,
        tls_name: None,
    })
}

/// Flags name the exact set of served domains; a domain also described in the file keeps the
/// file's TLS settings and takes the flag's endpoints.
fn merge_routes(file: &[RouteConfig], flags: &[String]) -> Result<Vec<RouteConfig>, ConfigError> {
    flags
        .iter()
        .map(|flag| {
            let mut route = parse_route_flag(flag)?;
            if let Some(f) = file
                .iter()
                .find(|f| f.domain.eq_ignore_ascii_case(&route.domain))
            {
                let endpoints = std::mem::take(&mut route.endpoints);
                route = RouteConfig {
                    endpoints,
                    ..f.clone()
                };
            }
            Ok(route)
        })
        .collect()
}

/// Top-level keys of [`Config`], which `XMPP_GATEWAY_*` variables may set.
const TOP_LEVEL: &[&str] = &[
    "listen",
    "admin_listen",
    "route",
    "upstream_ca",
    "static_dir",
    "log",
    "websocket",
    "bosh",
    "limits",
    "discovery",
    "drain_timeout_secs",
    "drain_grace_secs",
    "drain",
];

/// Applies one `XMPP_GATEWAY_*` variable: `XMPP_GATEWAY_LIMITS__MAX_DEPTH=8` sets
/// `limits.max_depth`; values are read as TOML (numbers, booleans, arrays) and as plain strings
/// otherwise. `XMPP_GATEWAY_ROUTE` takes flag syntax, several routes separated by spaces.
///
/// Returns `false` for a variable whose first key names no top-level option; unknown keys
/// inside a known section are errors, like in the file.
fn apply_env(table: &mut toml::Table, key: &str, value: &str) -> Result<bool, ConfigError> {
    let Some(path) = key.strip_prefix(ENV_PREFIX) else {
        return Ok(true);
    };
    let path = path.to_ascii_lowercase();
    if path == "config" {
        return Ok(true);
    }
    if !TOP_LEVEL.contains(&path.split("__").next().unwrap_or_default()) {
        return Ok(false);
    }
    if path == "route" {
        let file_routes: Vec<RouteConfig> = match table.remove("route") {
            Some(v) => Vec::<RouteConfig>::deserialize(v)
                .map_err(|e| ConfigError::Invalid(format!("route: {}", e.message())))?,
            None => Vec::new(),
        };
        let flags: Vec<String> = value.split_whitespace().map(str::to_string).collect();
        let merged = merge_routes(&file_routes, &flags)?;
        let value = toml::Value::try_from(RoutesOut(&merged))
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        table.insert("route".into(), value);
        return Ok(true);
    }
    let parts: Vec<&str> = path.split("__").collect();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut node = table;
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            // Keys whose type is a string in the schema take the raw text.
            let keep_string = matches!(parsed, toml::Value::Integer(_) | toml::Value::Float(_))
                && matches!(*part, "listen" | "admin_listen");
            let v = if keep_string {
                toml::Value::String(value.to_string())
            } else {
                parsed.clone()
            };
            let v = match v {
                toml::Value::Table(_) | toml::Value::Datetime(_) => {
                    toml::Value::String(value.to_string())
                }
                other => other,
            };
            node.insert((*part).to_string(), v);
        } else {
            let entry = node
                .entry((*part).to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::Invalid(format!("{key}: {part} is not a table")))?;
        }
    }
    Ok(true)
}

/// Serialises merged routes back into the TOML table the schema reads.
struct RoutesOut<'a>(&'a [RouteConfig]);

impl serde::Serialize for RoutesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct One<'a>(&'a RouteConfig);
        impl serde::Serialize for One<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let r = self.0;
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("domain", &r.domain)?;
                m.serialize_entry("endpoints", &r.endpoints)?;
                let tls = match r.tls {
                    TlsPolicy::Required => "required",
                    TlsPolicy::Opportunistic => "opportunistic",
                    TlsPolicy::Disabled => "disabled",
                };
                m.serialize_entry("tls", tls)?;
                m.serialize_entry("direct_tls", &r.direct_tls)?;
                if let Some(n) = &r.tls_name {
                    m.serialize_entry("tls_name", n)?;
                }
                m.end()
            }
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for r in self.0 {
            seq.serialize_element(&One(r))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["xmpp-gateway"];
        v.extend_from_slice(args);
        Cli::parse_from(v)
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn route_flag_with_endpoints_and_srv() {
        let c = Config::from_sources(
            "",
            &[],
            &cli(&[
                "--route",
                "example.com=xmpp.example.com:5222,[::1]:5223",
                "--route",
                "Other.org",
            ]),
        )
        .unwrap();
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].domain, "example.com");
        assert_eq!(
            c.routes[0].endpoints,
            vec!["xmpp.example.com:5222", "[::1]:5223"]
        );
        assert_eq!(c.routes[1].domain, "other.org");
        assert!(
            c.routes[1].endpoints.is_empty(),
            "no endpoints means DNS SRV"
        );
        assert_eq!(c.routes[0].tls, TlsPolicy::Required);
    }

    #[test]
    fn bad_route_flag_is_rejected() {
        for bad in ["=h:1", "example.com=host", "example.com=host:0", "a b"] {
            let err = Config::from_sources("", &[], &cli(&["--route", bad])).unwrap_err();
            assert!(matches!(err, ConfigError::Route(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_file_key_is_named() {
        let err = Config::from_sources("lissten = \"1.2.3.4:5\"", &[], &cli(&[])).unwrap_err();
        assert!(err.to_string().contains("lissten"), "{err}");
        let err = Config::from_sources("[limits]\nmax_dept = 3", &[], &cli(&[])).unwrap_err();
        assert!(err.to_string().contains("max_dept"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_named() {
        let err = Config::from_sources("", &env(&[("XMPP_GATEWAY_LIMITS__NOPE", "1")]), &cli(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let file = "listen = \"127.0.0.1:1000\"\n[limits]\nmax_depth = 10\n[[route]]\ndomain = \"a.example\"\nendpoints = [\"h:5222\"]\ntls = \"opportunistic\"\n";
        let e = env(&[
            ("XMPP_GATEWAY_LISTEN", "127.0.0.1:2000"),
            ("XMPP_GATEWAY_LIMITS__MAX_DEPTH", "12"),
            ("XMPP_GATEWAY_ADMIN_LISTEN", "127.0.0.1:3000"),
            (
                "XMPP_GATEWAY_WEBSOCKET__ALLOWED_ORIGINS",
                "[\"https://x.example\"]",
            ),
            ("HOME", "/root"),
        ]);
        let c = Config::from_sources(file, &e, &cli(&["--listen", "127.0.0.1:4000"])).unwrap();
        assert_eq!(c.listen.port(), 4000);
        assert_eq!(c.admin_listen.port(), 3000);
        assert_eq!(c.limits.max_depth, 12);
        assert_eq!(c.websocket.allowed_origins, vec!["https://x.example"]);
        assert_eq!(c.routes[0].tls, TlsPolicy::Opportunistic);
    }

    #[test]
    fn flag_route_keeps_file_tls_policy() {
        let file = "[[route]]\ndomain = \"a.example\"\ntls = \"disabled\"\n";
        let c = Config::from_sources(file, &[], &cli(&["--route", "a.example=127.0.0.1:5222"]))
            .unwrap();
        assert_eq!(c.routes[0].tls, TlsPolicy::Disabled);
        assert_eq!(c.routes[0].endpoints, vec!["127.0.0.1:5222"]);
    }

    #[test]
    fn env_route_uses_flag_syntax() {
        let e = env(&[("XMPP_GATEWAY_ROUTE", "a.example=127.0.0.1:5222 b.example")]);
        let c = Config::from_sources("", &e, &cli(&[])).unwrap();
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].domain, "b.example");
    }

    #[test]
    fn env_variables_naming_no_option_are_ignored_and_reported() {
        let e = env(&[
            ("XMPP_GATEWAY_BIN", "/usr/bin/x"),
            ("XMPP_GATEWAY_LISTEN", "127.0.0.1:7"),
        ]);
        let c = Config::from_sources("", &e, &cli(&[])).unwrap();
        assert_eq!(c.listen.port(), 7);
        assert_eq!(c.ignored_env, vec!["XMPP_GATEWAY_BIN"]);
    }

    #[test]
    fn every_top_level_option_can_be_set_from_the_environment() {
        // serde names every field it knows when it meets one it does not.
        let err = Config::from_sources("no_such_option = 1", &[], &cli(&[])).unwrap_err();
        let msg = err.to_string();
        let known: Vec<&str> = msg
            .split("expected one of ")
            .nth(1)
            .expect("serde lists the fields")
            .split(", ")
            .map(|f| f.trim_matches(|c| c == '`' || c == ' '))
            .collect();
        let mut known = known;
        known.sort_unstable();
        let mut listed = TOP_LEVEL.to_vec();
        listed.sort_unstable();
        assert_eq!(known, listed);
    }

    #[test]
    fn duplicate_route_is_rejected() {
        let err = Config::from_sources(
            "",
            &[],
            &cli(&["--route", "a.example", "--route", "A.example"]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn example_config_in_deploy_is_valid() {
        let text = include_str!("../deploy/xmpp-gateway.toml");
        let c = Config::from_sources(text, &[], &cli(&[])).unwrap();
        assert!(!c.routes.is_empty());
    }
}

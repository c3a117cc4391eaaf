//! Where the configuration comes from: the TOML file, the `XMPP_GATEWAY_*` environment and the
//! flags, merged as TOML values before one deserialisation (so `deny_unknown_fields` names any
//! unknown key, wherever it came from), then validated.

use std::path::PathBuf;

use serde::Deserialize;

use super::schema::{Cli, Config, ConfigError, ProxyProtocol, RouteConfig, TlsPolicy};

/// The most ready streams one route may keep.
const MAX_WARM: usize = 1000;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "XMPP_GATEWAY_";

/// The smallest `limits.max_request_head_bytes`: hyper's HTTP/1.1 read buffer cannot be smaller.
pub const MIN_REQUEST_HEAD_BYTES: usize = 8192;

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
            if route.backoff_min_ms == 0 || route.backoff_min_ms > route.backoff_max_ms {
                return Err(ConfigError::Value(format!(
                    "route {}: backoff_min_ms must be at least 1 and at most backoff_max_ms",
                    route.domain
                )));
            }
            if route.pool.warm > MAX_WARM || (route.pool.warm > 0 && route.pool.max_age_secs == 0) {
                return Err(ConfigError::Value(format!(
                    "route {}: pool.warm must be at most {MAX_WARM}, and pool.max_age_secs at least 1",
                    route.domain
                )));
            }
            if route.pool.warm > 0 && route.proxy_protocol != ProxyProtocol::Off {
                // A ready stream is opened before its browser is known; its PROXY header could
                // only name the gateway.
                return Err(ConfigError::Value(format!(
                    "route {}: pool.warm needs proxy_protocol = \"off\" (a PROXY header names the browser, unknown when a ready stream opens)",
                    route.domain
                )));
            }
            if route.direct_tls && route.tls == TlsPolicy::Disabled {
                return Err(ConfigError::Value(format!(
                    "route {}: direct_tls contradicts tls = \"disabled\"",
                    route.domain
                )));
            }
        }
        let c = &self.cluster;
        if c.listen.is_some() != c.secret_file.is_some() {
            return Err(ConfigError::Value(
                "cluster.listen and cluster.secret_file go together: set both or neither".into(),
            ));
        }
        if c.listen.is_some() && c.refresh_secs == 0 {
            return Err(ConfigError::Value(
                "cluster.refresh_secs must be at least 1".into(),
            ));
        }
        for peer in c.peers.iter().chain(&c.peers_dns) {
            parse_endpoint(peer).ok_or_else(|| {
                ConfigError::Value(format!("cluster: peer {peer:?} is not HOST:PORT"))
            })?;
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Value(
                "tls.cert_file and tls.key_file go together: set both or neither".into(),
            ));
        }
        let l = &self.limits;
        if l.max_stanza_bytes < 1024 || l.max_depth == 0 || l.max_attributes == 0 {
            return Err(ConfigError::Value(
                "limits: max_stanza_bytes must be at least 1024, max_depth and max_attributes at least 1".into(),
            ));
        }
        if l.write_timeout_secs == 0 || l.connect_timeout_secs == 0 {
            return Err(ConfigError::Value(
                "limits.write_timeout_secs and limits.connect_timeout_secs must be at least 1"
                    .into(),
            ));
        }
        if l.max_sessions == 0
            || l.max_sessions_per_address == 0
            || l.new_sessions_per_address_per_sec == 0
            || l.new_sessions_burst == 0
        {
            return Err(ConfigError::Value(
                "limits: max_sessions, max_sessions_per_address, new_sessions_per_address_per_sec and new_sessions_burst must be at least 1".into(),
            ));
        }
        if l.session_stanzas_per_sec == 0
            || l.session_stanzas_burst == 0
            || l.session_bytes_per_sec == 0
            || l.session_bytes_burst < l.max_stanza_bytes as u64
        {
            return Err(ConfigError::Value(
                "limits: session_stanzas_per_sec, session_stanzas_burst and session_bytes_per_sec must be at least 1, session_bytes_burst at least max_stanza_bytes".into(),
            ));
        }
        if l.max_upstream_stanza_bytes < 1024 {
            return Err(ConfigError::Value(
                "limits.max_upstream_stanza_bytes must be at least 1024".into(),
            ));
        }
        if l.max_buffered_bytes_total < l.max_buffered_bytes {
            return Err(ConfigError::Value(
                "limits.max_buffered_bytes_total must be at least limits.max_buffered_bytes".into(),
            ));
        }
        if l.max_buffered_bytes < l.max_stanza_bytes {
            return Err(ConfigError::Value(
                "limits.max_buffered_bytes must be at least limits.max_stanza_bytes".into(),
            ));
        }
        if l.max_request_head_bytes < MIN_REQUEST_HEAD_BYTES {
            return Err(ConfigError::Value(format!(
                "limits.max_request_head_bytes must be at least {MIN_REQUEST_HEAD_BYTES}"
            )));
        }
        let deadlines = [
            ("header_read_timeout_secs", l.header_read_timeout_secs),
            ("body_read_timeout_secs", l.body_read_timeout_secs),
            ("http_idle_timeout_secs", l.http_idle_timeout_secs),
            (
                "http2_keep_alive_interval_secs",
                l.http2_keep_alive_interval_secs,
            ),
            (
                "http2_keep_alive_timeout_secs",
                l.http2_keep_alive_timeout_secs,
            ),
        ];
        if let Some((name, _)) = deadlines.iter().find(|(_, secs)| *secs == 0) {
            // docs/protocol.md §7: every wait on a peer has a deadline; 0 would mean none.
            return Err(ConfigError::Value(format!(
                "limits.{name} must be at least 1"
            )));
        }
        if l.admin_max_connections == 0 {
            return Err(ConfigError::Value(
                "limits.admin_max_connections must be at least 1".into(),
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
        endpoints,
        ..RouteConfig::new(domain.to_ascii_lowercase())
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
pub(super) const TOP_LEVEL: &[&str] = &[
    "listen",
    "admin_listen",
    "route",
    "upstream_ca",
    "static_dir",
    "tls",
    "log",
    "websocket",
    "bosh",
    "limits",
    "discovery",
    "drain_timeout_secs",
    "drain_grace_secs",
    "drain",
    "cluster",
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

//! The one place metrics are registered and named (docs/protocol.md §6). Every series is prefixed
//! `xmpp_gateway_` and labelled only with low-cardinality values (transport, direction,
//! reason): never a user, a domain or a session id.
//!
//! Counters are plain atomics behind the `prometheus` types, so recording on the per-stanza
//! path costs an atomic add and no allocation: label lookups are done once, here.
//!
//! This module owns the label values too ([`Transport`], [`Direction`], and the lists of end
//! reasons, rejection reasons and connect failure kinds): every labelled series whose values are
//! known is exported at zero from start-up, so dashboards and `increase()` alerts work before
//! the first event. Recording a value missing from its list is a bug caught in debug builds.

use std::sync::LazyLock;

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How a session reached the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// RFC 7395.
    WebSocket = 0,
    /// XEP-0124/XEP-0206.
    Bosh = 1,
}

impl Transport {
    /// Label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        TRANSPORTS[self as usize]
    }
}

/// Why a session ended (`sessions_ended_total{reason}`).
pub const END_REASONS: &[&str] = &[
    // Either side closed the stream with the closing handshake.
    "closed",
    // The browser sent a close frame without `<close/>` (a tab closing).
    "client_close",
    // The browser's connection vanished.
    "client_gone",
    // The browser sent something refused (a stream error or BOSH condition was sent).
    "bad_input",
    // The browser stopped reading; its queue reached the limit.
    "slow_reader",
    // WebSocket pings went unanswered.
    "ping_timeout",
    // The browser sent faster than its rate limits, in `close` mode.
    "rate_limited",
    // No BOSH request arrived within `inactivity` (or the granted pause).
    "inactivity",
    // The upstream stream broke (I/O, malformed XML, protocol).
    "upstream_error",
    // The server ended the stream with a stream error.
    "upstream_stream_error",
    // The node drained.
    "shutdown",
    // The task ended without recording a reason (a panic or an aborted task).
    "aborted",
];

/// Why a client input was refused (`inputs_rejected_total{reason}`).
pub const REJECTION_REASONS: &[&str] = &[
    // XML refusals, one per `XmlError` variant.
    "not_well_formed",
    "restricted",
    "injection",
    "too_large",
    "too_deep",
    "too_many_attributes",
    "invalid_namespace",
    // HTTP and framing refusals.
    "no_subprotocol",
    "origin",
    "no_to",
    "not_open",
    "restart_domain",
    "binary_frame",
    "slow_reader",
    "not_bosh",
    "bad_attribute",
    // A request body that did not arrive within limits.body_read_timeout_secs, or broke off.
    "body_timeout",
    "body_broken",
    // A stanza over the session's rate limits, in `close` mode.
    "rate_limited",
];

/// Why a new session was refused (`sessions_refused_total{transport, reason}`); admission
/// re-exports this list and names its refusals from it.
pub const REFUSAL_REASONS: &[&str] =
    &["max_sessions", "memory", "address_sessions", "address_rate"];

/// Why an upstream stream could not be opened (`upstream_connect_failures_total{kind}`).
pub const CONNECT_FAILURE_KINDS: &[&str] = &[
    "unknown_domain",
    "dns",
    "tcp",
    "tls",
    "timeout",
    "io",
    "stream",
    "all_down",
];

/// Phases of opening an upstream stream (`upstream_connect_seconds{phase}`).
pub const CONNECT_PHASES: &[&str] = &["dns", "tcp", "tls", "stream"];

/// Registered metrics of the process.
pub struct Metrics {
    registry: Registry,
    sessions_started: IntCounterVec,
    sessions_ended: IntCounterVec,
    inputs_rejected: IntCounterVec,
    sessions_refused: IntCounterVec,
    upstream_connect_failures: IntCounterVec,
    /// WebSocket sessions closed after unanswered pings.
    pub websocket_pings_missed: IntCounter,
    session_duration: [Histogram; 2],
    connect_phase: HistogramVec,
    /// BOSH requests held open now.
    pub bosh_held_requests: IntGauge,
    /// Time from a BOSH request's arrival to its answer.
    pub bosh_request_duration: Histogram,
    /// 1 while the gateway drains, else 0.
    pub draining: IntGauge,
    /// Per transport and direction, resolved once: `[transport][direction]`.
    stanza_counters: [[IntCounter; 2]; 2],
    byte_counters: [[IntCounter; 2]; 2],
    active: [IntGauge; 2],
}

/// Direction of traffic through the gateway.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    /// From the browser toward the XMPP server.
    ToUpstream = 0,
    /// From the XMPP server toward the browser.
    ToClient = 1,
}

const TRANSPORTS: [&str; 2] = ["websocket", "bosh"];
const DIRECTIONS: [&str; 2] = ["to_upstream", "to_client"];

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("xmpp_gateway_{name}"), help)
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let sessions_active = IntGaugeVec::new(
            opts("sessions_active", "Sessions currently open."),
            &["transport"],
        )
        .expect("metric");
        let sessions_started = IntCounterVec::new(
            opts("sessions_started_total", "Sessions started."),
            &["transport"],
        )
        .expect("metric");
        let sessions_ended = IntCounterVec::new(
            opts("sessions_ended_total", "Sessions ended, by why they ended."),
            &["transport", "reason"],
        )
        .expect("metric");
        let stanzas = IntCounterVec::new(
            opts("stanzas_total", "Top-level elements relayed."),
            &["transport", "direction"],
        )
        .expect("metric");
        let bytes = IntCounterVec::new(
            opts("bytes_total", "XML bytes relayed."),
            &["transport", "direction"],
        )
        .expect("metric");
        let inputs_rejected = IntCounterVec::new(
            opts("inputs_rejected_total", "Client inputs refused, by reason."),
            &["reason"],
        )
        .expect("metric");
        let sessions_refused = IntCounterVec::new(
            opts(
                "sessions_refused_total",
                "New sessions refused by admission (caps and rates), by reason.",
            ),
            &["transport", "reason"],
        )
        .expect("metric");
        let upstream_connect_failures = IntCounterVec::new(
            opts(
                "upstream_connect_failures_total",
                "Failed attempts to open an upstream stream, by kind.",
            ),
            &["kind"],
        )
        .expect("metric");
        let websocket_pings_missed = IntCounter::with_opts(opts(
            "websocket_pings_missed_total",
            "WebSocket sessions closed because pings went unanswered.",
        ))
        .expect("metric");
        let session_duration_vec = HistogramVec::new(
            HistogramOpts::new(
                "xmpp_gateway_session_duration_seconds",
                "How long sessions lasted.",
            )
            .buckets(vec![
                1.0,
                10.0,
                60.0,
                300.0,
                1800.0,
                3600.0,
                4.0 * 3600.0,
                12.0 * 3600.0,
                86400.0,
            ]),
            &["transport"],
        )
        .expect("metric");
        let connect_phase = HistogramVec::new(
            HistogramOpts::new(
                "xmpp_gateway_upstream_connect_seconds",
                "Time spent opening upstream streams, by phase (dns, tcp, tls, stream).",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["phase"],
        )
        .expect("metric");
        let bosh_held_requests =
            IntGauge::with_opts(opts("bosh_held_requests", "BOSH requests held open now."))
                .expect("metric");
        let bosh_request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "xmpp_gateway_bosh_request_duration_seconds",
                "Time from a BOSH request to its answer.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
        )
        .expect("metric");
        let draining =
            IntGauge::with_opts(opts("draining", "1 while the gateway is draining, else 0."))
                .expect("metric");
        let build_info = IntGaugeVec::new(
            opts("build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for c in [
            Box::new(session_duration_vec.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connect_phase.clone()),
            Box::new(bosh_held_requests.clone()),
            Box::new(bosh_request_duration.clone()),
            Box::new(draining.clone()),
            Box::new(build_info),
            Box::new(prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "xmpp_gateway",
            )),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        for c in [
            Box::new(sessions_active.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(sessions_started.clone()),
            Box::new(sessions_ended.clone()),
            Box::new(stanzas.clone()),
            Box::new(bytes.clone()),
            Box::new(inputs_rejected.clone()),
            Box::new(sessions_refused.clone()),
            Box::new(upstream_connect_failures.clone()),
            Box::new(websocket_pings_missed.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // Every known label value is exported at zero from the start.
        for t in TRANSPORTS {
            sessions_started.with_label_values(&[t]);
            for r in END_REASONS {
                sessions_ended.with_label_values(&[t, r]);
            }
            for r in REFUSAL_REASONS {
                sessions_refused.with_label_values(&[t, r]);
            }
        }
        for r in REJECTION_REASONS {
            inputs_rejected.with_label_values(&[r]);
        }
        for k in CONNECT_FAILURE_KINDS {
            upstream_connect_failures.with_label_values(&[k]);
        }
        for p in CONNECT_PHASES {
            connect_phase.with_label_values(&[p]);
        }
        let pair = |v: &IntCounterVec, t: &str| {
            [
                v.with_label_values(&[t, DIRECTIONS[0]]),
                v.with_label_values(&[t, DIRECTIONS[1]]),
            ]
        };
        let stanza_counters = [pair(&stanzas, TRANSPORTS[0]), pair(&stanzas, TRANSPORTS[1])];
        let byte_counters = [pair(&bytes, TRANSPORTS[0]), pair(&bytes, TRANSPORTS[1])];
        let active = [
            sessions_active.with_label_values(&[TRANSPORTS[0]]),
            sessions_active.with_label_values(&[TRANSPORTS[1]]),
        ];
        let session_duration = [
            session_duration_vec.with_label_values(&[TRANSPORTS[0]]),
            session_duration_vec.with_label_values(&[TRANSPORTS[1]]),
        ];
        Self {
            registry,
            session_duration,
            connect_phase,
            bosh_held_requests,
            bosh_request_duration,
            draining,
            sessions_started,
            sessions_ended,
            inputs_rejected,
            sessions_refused,
            upstream_connect_failures,
            websocket_pings_missed,
            stanza_counters,
            byte_counters,
            active,
        }
    }

    /// Adds a collector defined elsewhere (the cluster's) to the process's metrics.
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) {
        self.registry.register(c).expect("metric names are unique");
    }

    /// Counts one relayed element of `len` bytes.
    pub fn relayed(&self, transport: Transport, direction: Direction, len: usize) {
        self.stanza_counters[transport as usize][direction as usize].inc();
        self.byte_counters[transport as usize][direction as usize].inc_by(len as u64);
    }

    /// A session started.
    pub fn session_started(&self, transport: Transport) {
        self.sessions_started
            .with_label_values(&[transport.as_str()])
            .inc();
        self.active[transport as usize].inc();
    }

    /// A session ended for `reason` (a fixed, low-cardinality word).
    pub fn session_ended(&self, transport: Transport, reason: &'static str, lasted: Duration) {
        debug_assert!(
            END_REASONS.contains(&reason),
            "unlisted end reason {reason}"
        );
        self.sessions_ended
            .with_label_values(&[transport.as_str(), reason])
            .inc();
        self.active[transport as usize].dec();
        self.session_duration[transport as usize].observe(lasted.as_secs_f64());
    }

    /// One phase of opening an upstream stream took `took`.
    pub fn connect_phase(&self, phase: &'static str, took: Duration) {
        debug_assert!(CONNECT_PHASES.contains(&phase), "unlisted phase {phase}");
        self.connect_phase
            .with_label_values(&[phase])
            .observe(took.as_secs_f64());
    }

    /// Sessions open now on `transport`.
    pub fn active_sessions(&self, transport: Transport) -> i64 {
        self.active[transport as usize].get()
    }

    /// A client input was refused.
    pub fn input_rejected(&self, reason: &'static str) {
        debug_assert!(
            REJECTION_REASONS.contains(&reason),
            "unlisted rejection reason {reason}"
        );
        self.inputs_rejected.with_label_values(&[reason]).inc();
    }

    /// A new session was refused by admission.
    pub fn session_refused(&self, transport: Transport, reason: &'static str) {
        debug_assert!(
            REFUSAL_REASONS.contains(&reason),
            "unlisted refusal reason {reason}"
        );
        self.sessions_refused
            .with_label_values(&[transport.as_str(), reason])
            .inc();
    }

    /// An upstream stream could not be opened.
    pub fn connect_failed(&self, kind: &'static str) {
        debug_assert!(
            CONNECT_FAILURE_KINDS.contains(&kind),
            "unlisted connect failure kind {kind}"
        );
        self.upstream_connect_failures
            .with_label_values(&[kind])
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        self.render_with(std::iter::empty(), std::iter::empty())
    }

    /// The text exposition, with `upstream_endpoints{route, state}` made from `routes` (route,
    /// endpoints up, endpoints down): the routes in force at this scrape, so a reload's old
    /// routes disappear, and nothing process-wide is kept for them.
    ///
    /// `pools` (route, streams ready, session starts served from the pool, not served) gives
    /// `upstream_pool_ready{route}` and `upstream_pool_sessions_total{route, result}`, the same
    /// way: the counters start again with the pools a reload makes.
    pub fn render_with(
        &self,
        routes: impl Iterator<Item = (String, usize, usize)>,
        pools: impl Iterator<Item = (String, usize, u64, u64)>,
    ) -> Vec<u8> {
        let mut families = self.registry.gather();
        let endpoints = IntGaugeVec::new(
            opts(
                "upstream_endpoints",
                "Endpoints of each route the gateway knows, up (in use) or down (being probed).",
            ),
            &["route", "state"],
        )
        .expect("metric");
        for (route, up, down) in routes {
            for (state, n) in [("up", up), ("down", down)] {
                endpoints
                    .with_label_values(&[route.as_str(), state])
                    .set(n as i64);
            }
        }
        families.extend(prometheus::core::Collector::collect(&endpoints));
        let ready = IntGaugeVec::new(
            opts(
                "upstream_pool_ready",
                "Streams ready in each route's warm pool (TCP, TLS, stream header and features done).",
            ),
            &["route"],
        )
        .expect("metric");
        let taken = IntCounterVec::new(
            opts(
                "upstream_pool_sessions_total",
                "Session starts on routes with a warm pool, by whether a ready stream served them (hit) or they opened their own (miss).",
            ),
            &["route", "result"],
        )
        .expect("metric");
        for (route, n, hits, misses) in pools {
            ready.with_label_values(&[route.as_str()]).set(n as i64);
            taken
                .with_label_values(&[route.as_str(), "hit"])
                .inc_by(hits);
            taken
                .with_label_values(&[route.as_str(), "miss"])
                .inc_by(misses);
        }
        families.extend(prometheus::core::Collector::collect(&ready));
        families.extend(prometheus::core::Collector::collect(&taken));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::with_capacity(4096);
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&families, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_series_are_prefixed_and_rendered() {
        METRICS.session_started(Transport::WebSocket);
        METRICS.relayed(Transport::WebSocket, Direction::ToClient, 10);
        METRICS.session_ended(Transport::WebSocket, "client_close", Duration::from_secs(1));
        let text = String::from_utf8(METRICS.render()).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("xmpp_gateway_"), "{line}");
        }
        assert!(text.contains(
            "xmpp_gateway_stanzas_total{direction=\"to_client\",transport=\"websocket\"}"
        ));
    }

    #[test]
    fn known_label_values_are_exported_before_any_event() {
        let text = String::from_utf8(METRICS.render()).unwrap();
        for t in TRANSPORTS {
            for r in END_REASONS {
                let series = format!(
                    "xmpp_gateway_sessions_ended_total{{reason=\"{r}\",transport=\"{t}\"}}"
                );
                assert!(text.contains(&series), "{series} missing");
            }
            let series = format!("xmpp_gateway_sessions_started_total{{transport=\"{t}\"}}");
            assert!(text.contains(&series), "{series} missing");
            for r in REFUSAL_REASONS {
                let series = format!(
                    "xmpp_gateway_sessions_refused_total{{reason=\"{r}\",transport=\"{t}\"}}"
                );
                assert!(text.contains(&series), "{series} missing");
            }
        }
        for r in REJECTION_REASONS {
            let series = format!("xmpp_gateway_inputs_rejected_total{{reason=\"{r}\"}}");
            assert!(text.contains(&series), "{series} missing");
        }
        for k in CONNECT_FAILURE_KINDS {
            let series = format!("xmpp_gateway_upstream_connect_failures_total{{kind=\"{k}\"}}");
            assert!(text.contains(&series), "{series} missing");
        }
    }

    #[test]
    fn every_xml_refusal_has_a_listed_reason() {
        use crate::xml::XmlError;
        for e in [
            XmlError::NotWellFormed(String::new()),
            XmlError::Restricted(""),
            XmlError::Injection(""),
            XmlError::TooLarge,
            XmlError::TooDeep,
            XmlError::TooManyAttributes,
            XmlError::InvalidNamespace(String::new()),
        ] {
            assert!(REJECTION_REASONS.contains(&e.reason()), "{e:?}");
        }
    }
}

//! The cluster's metrics, registered with the process's (`xmpp_gateway_cluster_*`).

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts};

use crate::metrics::METRICS;

/// What became of the BOSH requests this node forwarded (`cluster_forwarded_total{result}`):
/// `owner_unknown` is a session whose node no member answers for.
pub const FORWARD_RESULTS: &[&str] = &[
    "ok",
    "owner_unknown",
    "connect_failed",
    "timeout",
    "refused",
    "broken",
    "unsigned",
];

/// Why requests to the internal listener were refused (`cluster_requests_refused_total`).
pub const REFUSED_REASONS: &[&str] = &["missing", "stale", "bad_signature"];

/// The cluster's metrics.
pub struct ClusterMetrics {
    forwarded: IntCounterVec,
    /// Time from forwarding a BOSH request to the member's answer (held time included).
    pub forward_seconds: Histogram,
    refused: IntCounterVec,
    /// Requests forwarded to this node by others and served here.
    pub received: prometheus::IntCounter,
    /// Other nodes that answered the last round.
    pub members: IntGauge,
}

/// The process's cluster metrics, registered on first use.
pub static CLUSTER: LazyLock<ClusterMetrics> = LazyLock::new(ClusterMetrics::new);

impl ClusterMetrics {
    fn new() -> Self {
        let opts = |name: &str, help: &str| Opts::new(name, help);
        let forwarded = IntCounterVec::new(
            opts(
                "xmpp_gateway_cluster_forwarded_total",
                "BOSH requests forwarded to the node holding their session, by result.",
            ),
            &["result"],
        )
        .expect("metric");
        let forward_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "xmpp_gateway_cluster_forward_seconds",
                "Time from forwarding a BOSH request to the answer of the node holding its session.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0,
                120.0,
            ]),
        )
        .expect("metric");
        let refused = IntCounterVec::new(
            opts(
                "xmpp_gateway_cluster_requests_refused_total",
                "Requests to the internal listener refused, by reason.",
            ),
            &["reason"],
        )
        .expect("metric");
        let received = prometheus::IntCounter::with_opts(opts(
            "xmpp_gateway_cluster_received_total",
            "BOSH requests forwarded here by other nodes.",
        ))
        .expect("metric");
        let members = IntGauge::with_opts(opts(
            "xmpp_gateway_cluster_members",
            "Other nodes that answered the last membership round.",
        ))
        .expect("metric");
        for r in FORWARD_RESULTS {
            forwarded.with_label_values(&[r]);
        }
        for r in REFUSED_REASONS {
            refused.with_label_values(&[r]);
        }
        for c in [
            Box::new(forwarded.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(forward_seconds.clone()),
            Box::new(refused.clone()),
            Box::new(received.clone()),
            Box::new(members.clone()),
        ] {
            METRICS.register(c);
        }
        Self {
            forwarded,
            forward_seconds,
            refused,
            received,
            members,
        }
    }

    /// Counts a forwarded request's result.
    pub fn forwarded(&self, result: &'static str) {
        self.forwarded.with_label_values(&[result]).inc();
    }

    /// Counts a refused request to the internal listener.
    pub fn refused(&self, reason: &'static str) {
        self.refused.with_label_values(&[reason]).inc();
    }
}

//! Active health checks (docs/protocol.md §1, §6): every `route.check_interval_secs`, each
//! endpoint of each route that is up is asked for a stream header, as a probe asks a down one.
//! One that refuses is taken out at once; one that does not answer within the connect timeout,
//! after two checks or sessions in a row. So an endpoint that fails while no session uses it
//! is known before a session is sent there, and `/readyz` answers from this state instead of
//! dialling on request: ready while some route has an endpoint that is up and has answered
//! (with `check_interval_secs = 0`, that is up: only sessions take one out).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::health::{self, Failure, Probe};
use super::resolve::{Resolved, Route};
use super::routes::Upstreams;
use super::stream::probe;

/// Starts the health checks of `upstreams`' endpoints. Inside the runtime.
pub fn start(upstreams: &Arc<Upstreams>) {
    tokio::spawn(run(Arc::downgrade(upstreams)));
}

/// Checks `upstreams`' endpoints until it is retired or dropped: every route at once, then
/// each again `check_interval_secs` after its last round. Marks the first round done
/// (readiness waits for it). A route without checks is resolved once, so that readiness
/// knows its endpoints without waiting for a session.
async fn run(upstreams: Weak<Upstreams>) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut first = true;
    loop {
        let Some(table) = upstreams.upgrade() else {
            return;
        };
        if table.is_retired() {
            return;
        }
        let now = Instant::now();
        let routes: Vec<(Arc<Route>, bool)> = table
            .routes()
            .filter_map(|r| {
                let checked = r.config.check_interval_secs > 0;
                let is_due = due.get(&r.config.domain).map_or(true, |at| *at <= now);
                ((checked && is_due) || (first && !checked)).then_some((r, checked))
            })
            .collect();
        round(&table, &routes).await;
        first = false;
        let done = Instant::now();
        for (route, _) in routes.iter().filter(|(_, checked)| *checked) {
            let every = Duration::from_secs(route.config.check_interval_secs);
            due.insert(route.config.domain.clone(), done + every);
        }
        table.first_round_done();
        let Some(next) = due.values().min().copied() else {
            return; // No route is checked.
        };
        drop(table);
        tokio::time::sleep_until(next).await;
    }
}

/// One round over `routes`, all at once: a slow name server for one route delays no other.
async fn round(table: &Arc<Upstreams>, routes: &[(Arc<Route>, bool)]) {
    let mut tasks = tokio::task::JoinSet::new();
    for (route, checked) in routes.iter().cloned() {
        let table = table.clone();
        tasks.spawn(async move { check_route(&table, &route, checked).await });
    }
    while tasks.join_next().await.is_some() {}
}

/// Resolves `route` and, when it is `checked`, checks each of its endpoints that is up,
/// concurrently, each within the connect timeout.
async fn check_route(table: &Upstreams, route: &Route, checked: bool) {
    let resolved = tokio::time::timeout(table.connect_timeout, table.resolver.endpoints(route));
    let Ok(Ok(endpoints)) = resolved.await else {
        return;
    };
    let health = table.health(route);
    if !checked {
        for resolved in endpoints.iter() {
            health.of(resolved);
        }
        return;
    }
    let probe = probe(table, route, &route.config.domain);
    let mut checks = tokio::task::JoinSet::new();
    for resolved in endpoints.iter() {
        let state = health.of(resolved);
        if !state.is_up() {
            continue; // Its own probe is on it.
        }
        let (resolved, probe) = (resolved.clone(), probe.clone());
        checks.spawn(async move { check(&state, &resolved, &probe).await });
    }
    while checks.join_next().await.is_some() {}
}

async fn check(state: &Arc<health::EndpointHealth>, resolved: &Resolved, probe: &Probe) {
    match tokio::time::timeout(probe.timeout, health::answers(resolved, probe)).await {
        Ok(Ok(())) => health::answered(state),
        Ok(Err(e)) => {
            tracing::debug!(endpoint = %resolved.endpoint, error = %e, "health check failed");
            let how = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => Failure::Refused,
                _ => Failure::NoAnswer,
            };
            health::failed(state, resolved, probe, how);
        }
        Err(_) => {
            tracing::debug!(endpoint = %resolved.endpoint, "health check timed out");
            health::failed(state, resolved, probe, Failure::NoAnswer);
        }
    }
}

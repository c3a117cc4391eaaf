//! One load-test session: connect, log in (SASL PLAIN or SCRAM-SHA-1, bind, presence), then
//! exchange numbered messages with its partner until told to stop, checking what arrives.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use tokio::sync::watch;

use super::conn::{condition, Conn};
use super::{Phase, Plan, Target};
use crate::scram;
use crate::tag::{self, find, local_name};

const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_CLIENT: &str = "jabber:client";

/// Marks the load tester's message bodies: `lt RUN SENDER SEQ SENT_NANOS`. RUN tells this
/// run's messages from those a server kept from an earlier one (offline storage).
const BODY_TAG: &[u8] = b"<body>lt ";

/// Runs session `index` to the end; failures are counted, not returned.
pub async fn run(
    index: usize,
    plan: Arc<Plan>,
    mut phase: watch::Receiver<Phase>,
    login_slot: tokio::sync::OwnedSemaphorePermit,
) {
    let stats = &plan.stats;
    let login = tokio::time::timeout(plan.login_timeout, connect_and_login(index, &plan)).await;
    let (mut conn, jid) = match login {
        Ok(Ok(done)) => done,
        Ok(Err(err)) => return stats.error("login", &err),
        Err(_) => return stats.error("login", &anyhow::anyhow!("timeout")),
    };
    plan.jids[index].set(jid).expect("each session binds once");
    stats.reached();
    // Last: the ramp is over when every slot is back, and by then every JID is known.
    drop(login_slot);
    let outcome = exchange(index, &plan, &mut conn, &mut phase).await;
    match outcome {
        Ok(()) => {
            if tokio::time::timeout(Duration::from_secs(10), conn.close())
                .await
                .map_or(true, |closed| closed.is_err())
            {
                stats.error_kind("close did not complete");
            }
        }
        Err(err) => stats.error("traffic", &err),
    }
}

async fn connect_and_login(index: usize, plan: &Plan) -> Result<(Conn, String)> {
    let start = Instant::now();
    let source = plan.source(index);
    let domain = &plan.domain;
    let target = plan.transport_of(index);
    let mut conn = match target {
        Target::WebSocket { addr, url } => Conn::websocket(*addr, url, source, domain).await?,
        Target::Bosh(endpoint) => {
            let mut endpoint = endpoint.clone();
            endpoint.source = source;
            let mut bosh = super::bosh::Bosh::create(endpoint, domain, plan.bosh_wait).await?;
            if let Some(then) = &plan.bosh_then {
                bosh.switch(super::bosh::Endpoint {
                    source,
                    ..then.clone()
                });
            }
            Conn::Bosh(Box::new(bosh))
        }
        Target::Tcp { addr } => Conn::tcp(*addr, source, domain).await?,
    };
    let mut features = expect(&mut conn, b"features").await?;
    if matches!(target, Target::Tcp { .. }) && find(&features, b"<starttls").is_some() {
        let Some(tls) = &plan.tls else {
            bail!("starttls: offered but no --ca given");
        };
        conn.send(&["<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".to_owned()])
            .await?;
        expect(&mut conn, b"proceed").await?;
        conn.upgrade_tls(tls.clone(), domain).await?;
        features = expect(&mut conn, b"features").await?;
    }
    let account = if plan.accounts > 0 {
        index % plan.accounts
    } else {
        index
    };
    let user = format!("{}{}", plan.user_prefix, plan.first_user + account);
    authenticate(&mut conn, plan, &features, &user).await?;
    plan.stats.authenticated(start.elapsed());
    conn.restart(domain).await?;
    let features = expect(&mut conn, b"features").await?;
    if find(&features, b"urn:ietf:params:xml:ns:xmpp-bind").is_none() {
        bail!("bind: not offered");
    }
    conn.send(&[format!(
        "<iq type='set' id='bind' xmlns='{NS_CLIENT}'><bind \
         xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>lt{index}</resource></bind></iq>"
    )])
    .await?;
    let bound = expect(&mut conn, b"iq").await?;
    let result =
        tag::start_tag(&bound, 0).and_then(|iq| iq.attr("type").map(|t| t.value() == "result"));
    if result != Some(true) {
        bail!("bind: refused");
    }
    let jid = tag::text_of(&bound, "jid").context("bind: no jid")?;
    let session = find(&features, b"urn:ietf:params:xml:ns:xmpp-session");
    if session.is_some() && find(&features, b"<optional").is_none() {
        conn.send(&[format!(
            "<iq type='set' id='sess' xmlns='{NS_CLIENT}'><session \
             xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
        )])
        .await?;
        expect(&mut conn, b"iq").await?;
    }
    conn.send(&[format!("<presence xmlns='{NS_CLIENT}'/>")])
        .await?;
    plan.stats.bound(start.elapsed());
    Ok((conn, jid))
}

/// SASL PLAIN or SCRAM-SHA-1, whichever `--mechanism` says, if the server offers it.
async fn authenticate(conn: &mut Conn, plan: &Plan, features: &[u8], user: &str) -> Result<()> {
    let mechanism = plan.mechanism.as_str();
    if find(features, format!(">{mechanism}<").as_bytes()).is_none() {
        bail!("sasl: {mechanism} not offered");
    }
    let auth = |payload: &str| {
        format!(
            "<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{}</auth>",
            B64.encode(payload)
        )
    };
    if mechanism == "PLAIN" {
        conn.send(&[auth(&format!("\0{user}\0{}", plan.password))])
            .await?;
        return sasl_outcome(&conn.recv().await?).map(|_| ());
    }
    let (mut client, first) = scram::Client::start(user);
    conn.send(&[auth(&first)]).await?;
    let challenge = conn.recv().await?;
    if local_name(&challenge) != b"challenge" {
        sasl_outcome(&challenge)?;
        bail!("sasl: no challenge");
    }
    let server_first = decode(tag::text_of(&challenge, "challenge"))?;
    let last = client.finish(&server_first, |salt, iterations| {
        plan.salted_password(salt, iterations)
    })?;
    conn.send(&[format!(
        "<response xmlns='{NS_SASL}'>{}</response>",
        B64.encode(last)
    )])
    .await?;
    let mut answer = conn.recv().await?;
    if local_name(&answer) == b"challenge" {
        // Server-final as a challenge (RFC 6120 §6.3.10 allows both): answer it empty.
        client.verify(&decode(tag::text_of(&answer, "challenge"))?)?;
        conn.send(&[format!("<response xmlns='{NS_SASL}'/>")])
            .await?;
        answer = conn.recv().await?;
        return sasl_outcome(&answer).map(|_| ());
    }
    let additional = sasl_outcome(&answer)?;
    client.verify(&decode(Some(additional))?)
}

/// `<success/>` gives its text; `<failure/>` is an error naming its condition.
fn sasl_outcome(element: &Bytes) -> Result<String> {
    match local_name(element) {
        b"success" => Ok(tag::text_of(element, "success").unwrap_or_default()),
        b"failure" => bail!("sasl-failure: {}", condition(element).unwrap_or("(none)")),
        other => bail!("sasl: unexpected <{}/>", String::from_utf8_lossy(other)),
    }
}

fn decode(text: Option<String>) -> Result<String> {
    let bytes = B64
        .decode(text.context("sasl: no data")?.trim())
        .context("sasl: not base64")?;
    String::from_utf8(bytes).context("sasl: not UTF-8")
}

/// The next element named `name`; presences and messages that arrive first are skipped.
async fn expect(conn: &mut Conn, name: &[u8]) -> Result<Bytes> {
    loop {
        let element = conn.recv().await?;
        match local_name(&element) {
            n if n == name => return Ok(element),
            b"presence" | b"message" => continue,
            other => bail!(
                "unexpected: <{}/> while waiting for <{}/>",
                String::from_utf8_lossy(other),
                String::from_utf8_lossy(name)
            ),
        }
    }
}

/// Waits for the traffic phase, sends to the partner at the planned rate, checks what
/// arrives, until the phase is `Close`.
async fn exchange(
    index: usize,
    plan: &Plan,
    conn: &mut Conn,
    phase: &mut watch::Receiver<Phase>,
) -> Result<()> {
    let partner = index ^ 1;
    let mut order = Order::default();
    let mut sender: Option<Sending> = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(3600));
    loop {
        let current = *phase.borrow_and_update();
        match current {
            Phase::Close => return Ok(()),
            Phase::Traffic { per_sender_rate } if sender.is_none() => {
                if let Some(to) = plan.jids.get(partner).and_then(|jid| jid.get()) {
                    let period = Duration::from_secs_f64((1.0 / per_sender_rate).clamp(0.001, 1.0));
                    ticker = tokio::time::interval(period);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    // A random phase, so that thousands of senders do not fire together.
                    let offset = rand::random::<f64>() / per_sender_rate;
                    plan.stats.senders_started.fetch_add(1, Relaxed);
                    sender = Some(Sending {
                        to: to.clone(),
                        rate: per_sender_rate,
                        start: Instant::now() - Duration::from_secs_f64(offset.min(1.0)),
                        seq: 0,
                        stopped: false,
                    });
                }
            }
            _ => {}
        }
        let sending = matches!(current, Phase::Traffic { .. }) && sender.is_some();
        if let Some(s) = sender.as_mut().filter(|s| !sending && !s.stopped) {
            // Acknowledged: the run waits for every sender to stop before it counts losses.
            s.stopped = true;
            plan.stats.senders_stopped.fetch_add(1, Relaxed);
        }
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            element = conn.recv() => {
                let element = element?;
                if local_name(&element) == b"message" {
                    check_message(index, plan, &element, &mut order);
                }
            }
            _ = ticker.tick(), if sending => {
                if !matches!(*phase.borrow(), Phase::Traffic { .. }) {
                    continue;
                }
                let sending = sender.as_mut().expect("sending");
                let batch = sending.due(index, plan);
                if !batch.is_empty() {
                    let count = batch.len() as u64;
                    conn.send(&batch).await?;
                    plan.stats.sent(count);
                }
            }
        }
    }
}

/// The state of one session's outgoing messages.
struct Sending {
    to: String,
    /// Messages per second.
    rate: f64,
    start: Instant,
    seq: u64,
    /// The end of the traffic phase has been acknowledged.
    stopped: bool,
}

impl Sending {
    /// The messages due by now (none, one, or a batch after a late wake-up).
    fn due(&mut self, index: usize, plan: &Plan) -> Vec<String> {
        let due = (self.start.elapsed().as_secs_f64() * self.rate) as u64;
        let count = due.saturating_sub(self.seq).min(1000);
        (0..count)
            .map(|_| {
                let seq = self.seq;
                self.seq += 1;
                format!(
                    "<message to='{}' type='chat' id='m{seq}' xmlns='{NS_CLIENT}'><body>lt \
                     {} {index} {seq} {}</body></message>",
                    self.to,
                    plan.run_id,
                    plan.now_nanos()
                )
            })
            .collect()
    }
}

/// What one session has received of its partner's numbered messages.
#[derive(Default)]
struct Order {
    /// The lowest sequence number not received yet.
    next: u64,
    /// Numbers above `next` received already (out of order).
    ahead: std::collections::BTreeSet<u64>,
}

/// How a numbered message arrived.
#[derive(Debug, PartialEq)]
enum Arrival {
    InOrder,
    /// Before one with a lower number.
    Early,
    /// Received before.
    Duplicate,
}

impl Order {
    fn record(&mut self, seq: u64) -> Arrival {
        if seq < self.next || self.ahead.contains(&seq) {
            return Arrival::Duplicate;
        }
        if seq > self.next {
            self.ahead.insert(seq);
            return Arrival::Early;
        }
        self.next += 1;
        while self.ahead.remove(&self.next) {
            self.next += 1;
        }
        Arrival::InOrder
    }
}

/// Records one received message: latency, duplicates, order.
fn check_message(index: usize, plan: &Plan, element: &[u8], order: &mut Order) {
    let Some(at) = find(element, BODY_TAG) else {
        return;
    };
    let rest = &element[at + BODY_TAG.len()..];
    let end = rest.iter().position(|&b| b == b'<').unwrap_or(rest.len());
    let text = std::str::from_utf8(&rest[..end]).unwrap_or_default();
    let mut fields = text.split(' ').map(|f| f.parse::<u64>().ok());
    let (Some(Some(run)), Some(Some(from)), Some(Some(seq)), Some(Some(sent))) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        plan.stats.error_kind("traffic malformed body");
        return;
    };
    if run != plan.run_id {
        plan.stats.stale.fetch_add(1, Relaxed);
        return;
    }
    if from as usize != index ^ 1 {
        plan.stats.error_kind("traffic message from a stranger");
        return;
    }
    let latency = plan.now_nanos().saturating_sub(sent);
    match order.record(seq) {
        Arrival::Duplicate => return plan.stats.duplicated(),
        Arrival::Early => plan.stats.reordered(),
        Arrival::InOrder => {}
    }
    plan.stats.received(index, latency);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_told_apart_in_order_early_and_duplicate() {
        let mut order = Order::default();
        let arrivals: Vec<Arrival> = [0, 2, 1, 1, 2, 3, 0].map(|s| order.record(s)).into();
        use Arrival::*;
        assert_eq!(
            arrivals,
            [InOrder, Early, InOrder, Duplicate, Duplicate, InOrder, Duplicate]
        );
        assert_eq!(order.next, 4);
        assert!(order.ahead.is_empty());
    }
}

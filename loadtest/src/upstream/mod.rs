//! `xmpp-loadtest upstream`: a small, fast XMPP client-to-server server (RFC 6120) that exists
//! only as a benchmark fixture, so the gateway can be measured beyond what one Prosody process
//! serves. **Never a production server**: every user of its domains logs in with one shared
//! password, nothing is stored, there are no rosters, no presence broadcast, no offline
//! messages, no server-to-server, and its certificate is made up at start.
//!
//! What it does: stream headers and features, STARTTLS, SASL SCRAM-SHA-1 and PLAIN, resource
//! binding, and routing of message/presence/iq between bound resources with `from` stamped by
//! the server; ping, roster get and the legacy session iq are answered.
//!
//! The modules, in the order a stanza meets them: [`server`] (configuration, shared state,
//! accept loop), `conn` (one connection's life), `negotiate` and `sasl` (up to a bound
//! resource), `io` (plain or TLS socket), `session` (the routing hot path), `tag` (start-tag
//! scanning without a DOM), `route` (the sharded routing table), `writer` (the batching
//! writer task with its bounded queue), `cert` (the generated CA and certificate).

mod cert;
mod conn;
mod io;
mod negotiate;
mod route;
mod sasl;
pub mod server;
mod session;
mod writer;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

// The in-process API for tests elsewhere in the crate (`run`'s among them): start a fixture,
// read its address, CA and counters.
#[allow(unused_imports)]
pub use server::{start, Config, Counters, Fixture};

/// Options of `xmpp-loadtest upstream`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "A load-test fixture, NEVER a production server: every user of the served \
    domains logs in with one shared password, nothing is stored, and the TLS certificate is \
    generated at start. Prints `listening on ADDR` once ready; on SIGINT/SIGTERM prints its \
    counters to stderr and exits 0."
)]
pub struct Args {
    /// Address to listen on (port 0: any free port; the real one is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5222")]
    pub listen: SocketAddr,
    /// Domain served (repeatable); users of any name on these domains may log in.
    #[arg(long = "domain", value_name = "DOMAIN", default_value = "localhost")]
    pub domains: Vec<String>,
    /// Every user's password.
    #[arg(long, value_name = "PASSWORD", default_value = "loadtest")]
    pub password: String,
    /// Offer STARTTLS, with a CA and certificate generated at start.
    #[arg(long)]
    pub tls: bool,
    /// Refuse SASL before TLS (implies --tls).
    #[arg(long)]
    pub require_tls: bool,
    /// Write the generated CA certificate (PEM) here, for the gateway's --upstream-ca.
    #[arg(long, value_name = "FILE")]
    pub ca_out: Option<PathBuf>,
    /// SCRAM-SHA-1 iteration count.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub iterations: u32,
    /// Seconds a connection may take to bind a resource before `connection-timeout`.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub pre_auth_timeout: u64,
    /// Runtime worker threads (0: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
}

impl Args {
    /// The fixture configuration these options describe.
    pub fn config(&self) -> Config {
        Config {
            listen: self.listen,
            domains: self.domains.clone(),
            password: self.password.clone(),
            tls: self.tls || self.require_tls,
            require_tls: self.require_tls,
            iterations: self.iterations,
            pre_auth_timeout: Duration::from_secs(self.pre_auth_timeout),
        }
    }
}

/// Runs the fixture until SIGINT or SIGTERM, then prints its counters to stderr.
pub async fn main(args: Args) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let config = args.config();
    if args.ca_out.is_some() && !config.tls {
        anyhow::bail!("--ca-out needs --tls (there is no certificate without it)");
    }
    // Handlers first: a script that signals right after `listening on` must not find the
    // default action (death without the summary) still in place.
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let fixture = start(config).await?;
    if let (Some(path), Some(pem)) = (&args.ca_out, fixture.ca_pem()) {
        std::fs::write(path, pem).with_context(|| format!("write {}", path.display()))?;
    }
    // Scripts and tests wait for this line: print it once everything is ready, and flush.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", fixture.addr())?;
    stdout.flush()?;
    drop(stdout);

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("xmpp-loadtest upstream: {}", fixture.counters());
    Ok(())
}

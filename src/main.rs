//! The `xmpp-gateway` binary: parse the command line, set up logging, start the runtime and
//! the server, and turn signals into a drain.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use xmpp_gateway::config::{Cli, Config, LogFormat};
use xmpp_gateway::gateway::Gateway;
use xmpp_gateway::server::Server;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match Config::load(&cli, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xmpp-gateway: {e}");
            std::process::exit(2);
        }
    };
    if cli.check_config {
        if let Err(e) = xmpp_gateway::gateway::Gateway::new(config.clone()) {
            eprintln!("xmpp-gateway: {e}");
            std::process::exit(2);
        }
        println!(
            "configuration OK: {} route(s), listening on {}",
            config.routes.len(),
            config.listen
        );
        return Ok(());
    }
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(cli, config))
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(cli: Cli, config: Config) -> anyhow::Result<()> {
    if config.routes.is_empty() {
        tracing::warn!("no --route configured: every client will get host-unknown");
    }
    for name in &config.ignored_env {
        tracing::warn!(variable = %name, "environment variable names no option; ignored");
    }
    // Handlers first: a signal that arrives once the gateway says it started must be handled,
    // not take the default action (which ends the process).
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let server = Server::bind(config).await.context("starting")?;
    let gw = server.gateway();
    tracing::info!(listen = %server.local_addr(), admin = %server.admin_addr(), "xmpp-gateway started");
    let running = tokio::spawn(server.run());
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&cli, &gw),
        }
    }
    let deadline = Duration::from_secs(gw.settings().config.drain_timeout_secs);
    tracing::info!(
        tasks = gw.shutdown.tasks(),
        deadline_secs = deadline.as_secs(),
        "signal received; draining"
    );
    let grace = Duration::from_secs(gw.settings().config.drain_grace_secs);
    gw.shutdown.mark_draining();
    if !grace.is_zero() {
        // Keep serving while load balancers notice the failing /readyz.
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
    gw.shutdown.begin();
    // Nobody new will log in here: the ready streams go back to the server, before the
    // process can exit with them open.
    gw.settings().pools.close().await;
    let drained = tokio::select! {
        d = gw.shutdown.wait(deadline) => d,
        _ = term.recv() => false,
        _ = int.recv() => false,
    };
    running.abort();
    tracing::info!(drained, "stopped");
    Ok(())
}

/// SIGHUP: read the configuration again and apply what can change without a restart.
fn reload(cli: &Cli, gw: &Gateway) {
    let config = match Config::load(cli, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload refused; keeping the running configuration");
            return;
        }
    };
    match gw.reload(config) {
        Ok(needs_restart) => {
            for option in &needs_restart {
                tracing::warn!(
                    option,
                    "changed option is not reloadable; restart to apply it"
                );
            }
            tracing::info!(
                "configuration reloaded: routes, limits and TLS material apply to new sessions"
            );
        }
        Err(e) => tracing::error!(error = %e, "reload refused; keeping the running configuration"),
    }
}

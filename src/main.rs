//! The `xmpp-gateway` binary: parse the command line, set up logging, start the runtime and
//! the server, and turn signals into a drain.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use xmpp_gateway::config::{Cli, Config, LogFormat};
use xmpp_gateway::server::Server;

/// How long a drain waits for sessions before the process exits anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
        if let Err(e) = xmpp_gateway::server::Gateway::new(config.clone()) {
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
    runtime.block_on(serve(config))
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.routes.is_empty() {
        tracing::warn!("no --route configured: every client will get host-unknown");
    }
    let server = Server::bind(config).await.context("starting")?;
    let gw = server.gateway();
    tracing::info!(listen = %server.local_addr(), admin = %server.admin_addr(), "xmpp-gateway started");
    let running = tokio::spawn(server.run());
    wait_for_signal().await;
    tracing::info!(sessions = gw.shutdown.tasks(), "signal received; draining");
    gw.shutdown.begin();
    let drained = tokio::select! {
        d = gw.shutdown.wait(DRAIN_TIMEOUT) => d,
        _ = wait_for_signal() => {
            tracing::warn!("second signal; exiting now");
            false
        }
    };
    running.abort();
    tracing::info!(drained, "stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

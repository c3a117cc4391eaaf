//! `xmpp-loadtest`: load tester for xmpp-gateway, and a benchmark-only XMPP server.
//!
//! - `xmpp-loadtest run`: opens sessions over WebSocket, BOSH, or plain TCP (with STARTTLS)
//!   straight to an XMPP server, logs them in, drives message traffic between pairs, checks
//!   that every message arrives once and in order, and reports latency, losses, errors and
//!   the target process's CPU and memory.
//! - `xmpp-loadtest upstream`: a small, fast XMPP server that lets the gateway be measured
//!   beyond what one Prosody process serves. A benchmark fixture, never a production server.
//!
//! docs/PERFORMANCE.md gives the benchmarks built on it and their exact commands.

mod limits;
mod run;
mod scram;
mod tag;
mod upstream;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "xmpp-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
// Parsed once per process: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Open sessions, log them in, exchange messages, report.
    Run(run::Args),
    /// Serve the benchmark-only XMPP server (never for production use).
    Upstream(upstream::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    limits::raise_fd_limit();
    let runtime = match &cli.command {
        Command::Run(args) => runtime(args.threads)?,
        Command::Upstream(args) => runtime(args.threads)?,
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::main(args).await,
            Command::Upstream(args) => upstream::main(args).await,
        }
    })
}

/// A multi-threaded runtime with `threads` workers (0: one per core).
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

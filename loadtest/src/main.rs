//! Load generator for xmpp-gateway.
//!
//! A skeleton for now: it parses its command line and opens TCP connections to the gateway's
//! listener, so the crate builds in the workspace. The benchmark issues grow it into a WebSocket
//! and BOSH session driver that prints memory and CPU figures per session.

use clap::Parser;

/// Command-line options of the load generator.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Gateway listener to connect to.
    #[arg(long, default_value = "127.0.0.1:5280")]
    target: std::net::SocketAddr,
    /// Number of TCP connections to open.
    #[arg(long, default_value_t = 1)]
    connections: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut opened = 0usize;
    for _ in 0..args.connections {
        if tokio::net::TcpStream::connect(args.target).await.is_ok() {
            opened += 1;
        }
    }
    println!(
        "opened {opened} of {} connections to {}",
        args.connections, args.target
    );
}

//! `xmpp-loadtest upstream`: a benchmark-only XMPP server. Never a production server.

/// Options of `xmpp-loadtest upstream`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

pub async fn main(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

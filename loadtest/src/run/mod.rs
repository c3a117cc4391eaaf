//! `xmpp-loadtest run`: sessions, traffic and the report.

/// Options of `xmpp-loadtest run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

pub async fn main(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

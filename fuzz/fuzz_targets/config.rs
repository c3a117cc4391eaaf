//! `config::Config::from_sources` on arbitrary configuration text and environment: it
//! answers with a configuration or an error, never a panic.
//!
//! Input: the TOML file text, then optionally a NUL byte and `KEY=VALUE` lines taken as
//! `XMPP_GATEWAY_KEY` environment variables.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xmpp_gateway::config::{Cli, Config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (format!("XMPP_GATEWAY_{k}"), v.to_string()))
        .collect();
    // What start-up prints of either answer.
    match Config::from_sources(file, &env, &Cli::default()) {
        Ok(config) => drop(format!("{config:?}")),
        Err(e) => drop(format!("{e}")),
    }
});

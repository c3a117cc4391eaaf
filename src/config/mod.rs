//! Configuration: the types every part of the gateway reads and their defaults ([`schema`]), and
//! where the values come from (TOML file < `XMPP_GATEWAY_*` environment < flags) and how they
//! are validated ([`load`]).

pub mod cluster;
pub mod load;
pub mod schema;

pub use cluster::ClusterConfig;
pub use load::{parse_endpoint, parse_route_flag, ENV_PREFIX};
pub use schema::*;

#[cfg(test)]
mod tests;

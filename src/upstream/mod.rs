//! Upstream side of a session: which XMPP server serves a domain, how to reach it, and the
//! client-to-server stream the gateway opens to it (docs/protocol.md §1).
//!
//! What is shared between sessions lives here (routes, the resolver, the TLS configuration);
//! each session then owns one [`stream::UpstreamStream`], because XMPP authenticates per
//! stream and authenticated streams can never be shared.

//!
//! Inside, from the bottom: [`error`], [`tls`] (the rustls client), [`proxy_header`] (the
//! PROXY protocol header toward servers), [`connect`] (the socket, plain or TLS), [`resolve`] (endpoints of a route), [`health`] (which endpoints are up, and their sessions), [`checks`] (the periodic health checks), [`pool`] (streams opened ahead of sessions), [`routes`] (the shared table), and
//! [`stream`] (one stream: dial, open, STARTTLS, then elements both ways).

pub mod checks;
pub mod connect;
pub mod error;
pub mod health;
pub mod pool;
pub mod proxy_header;
pub mod resolve;
pub mod routes;
pub mod stream;
pub mod tls;

pub use error::UpstreamError;
pub use resolve::Route;
pub use routes::Upstreams;

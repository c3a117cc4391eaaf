//! xmpp-gateway: browsers speak XMPP over WebSocket (RFC 7395) or BOSH (XEP-0124/0206); the
//! gateway relays each browser session as an ordinary client-to-server stream (RFC 6120) to
//! the operator's XMPP server.
//!
//! The modules are layers; each uses only those listed before it (docs/architecture.md, checked
//! by `tests/layering.rs`). A stanza from the browser: [`server`] accepts the connection,
//! [`router`] picks the endpoint, a [`transport`] adapter unframes it and [`xml`] validates it,
//! the [`session`] core forwards it through [`upstream`]. A stanza from the server takes the same
//! path back: [`upstream`] reads, [`xml`] splits, [`session`] batches, the [`transport`] frames.

#![deny(missing_docs)]

// Listed bottom-up: each module uses only those above it (tests/layering.rs checks it).
pub mod config; // configuration types, defaults, file/env/flag merge and validation

pub mod xml; // incremental splitter, client input validation, feature filtering

pub mod metrics; // the Prometheus registry, every metric and the label values they take

pub mod shutdown; // drain/cancellation primitive shared by all tasks

pub mod deadline; // the write deadline every socket is wrapped in

pub mod client_addr; // the client's address: trusted proxies, PROXY protocol, Forwarded headers

pub mod upstream; // routes, SRV resolution, TCP/TLS/STARTTLS connector, upstream stream

pub mod listener_tls; // TLS on the public listener, reread on SIGHUP

pub mod settings; // the reloadable configuration snapshot sessions start with

pub mod admission; // the global and per-address session caps and rates

pub mod session; // transport-neutral session core: open, relay, batch, drain, failures

pub mod http; // HTTP building blocks: responses, host-meta, static files

pub mod cluster; // BOSH on any node: node tags in sids, members, signed forwarding

pub mod transport; // WebSocket and BOSH framing adapters over the session core

pub mod gateway; // the shared state: live settings, drain, BOSH registry

pub mod router; // the HTTP routes of the public and admin listeners

pub mod server; // listeners, accept loops, connection limits, drain wiring

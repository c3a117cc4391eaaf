//! xmpp-gateway: browsers speak XMPP over WebSocket (RFC 7395) or BOSH (XEP-0124/0206); the
//! gateway relays each browser session as an ordinary client-to-server stream (RFC 6120) to
//! the operator's XMPP server.
//!
//! A stanza's path: [`server`] accepts the connection, [`http`] routes it, a [`transport`]
//! adapter turns its framing into [`session`] calls, [`xml`] validates and splits, and
//! [`upstream`] carries it to the XMPP server.

#![deny(missing_docs)]

pub mod config; // configuration types, defaults, file/env/flag merge and validation
pub mod http; // hyper services: public routes (upgrade, host-meta, static) and admin routes
pub mod metrics; // the Prometheus registry and every metric the gateway exports
pub mod server; // listeners, accept loops, connection limits, shared Gateway state
pub mod session; // transport-agnostic session: client side <-> upstream stream
pub mod shutdown; // drain/cancellation primitive shared by all tasks
pub mod transport; // WebSocket (and later BOSH) framing adapters
pub mod upstream; // routes, SRV resolution, TCP/TLS/STARTTLS connector, upstream stream
pub mod xml; // incremental splitter, client input validation, feature filtering

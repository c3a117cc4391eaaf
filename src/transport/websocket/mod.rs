//! XMPP over WebSocket (RFC 7395, docs/protocol.md §3): the adapter between WebSocket messages
//! and the session core. It differs from BOSH only in framing:
//!
//! - [`upgrade`](mod@upgrade): the HTTP upgrade with subprotocol `xmpp`, origin and drain checks.
//! - [`task`]: one task per connection: the first `<open/>`, then one `select!` over browser
//!   messages, the upstream stream, keepalive pings and the drain.
//! - [`framing`]: `<open/>`, `<close/>` and stream errors as WebSocket messages.

pub mod framing;
pub mod task;
pub mod upgrade;

pub use upgrade::upgrade;

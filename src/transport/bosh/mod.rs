//! XMPP over BOSH (XEP-0124 + XEP-0206, docs/protocol.md §4) at `/http-bind`: the adapter
//! between HTTP long-polling and the session core. It differs from WebSocket only in framing:
//!
//! - [`handler`]: one HTTP request: CORS, the body read and parsed, a session request opened
//!   through the core, any other request routed by sid to its session's task.
//! - [`body`]: the `<body/>` wrapper's attributes and payload, validated by the shared XML layer.
//! - [`registry`]: live sessions by sid.
//! - [`task`]: one task per session: requests, upstream batches, timers and the drain.
//! - [`state`]: the XEP-0124 state machine (rid window, holding, cache, keys), free of I/O,
//!   its key check ahead of every rid rule (`keys.rs`) and its end (`ending.rs`), both parts
//!   of `state`.
//! - [`terminate`]: how a session ends: the condition and the terminate body.

pub mod body;
pub mod handler;
pub mod registry;
pub mod state;
pub mod task;
pub mod terminate;

pub use handler::handle;
pub use registry::Registry;

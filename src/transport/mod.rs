//! Transports: adapters between a browser-side framing and the shared session core.

pub mod websocket;
pub mod bosh;

//! Transports: adapters between a browser-side framing and the shared session core.

pub mod bosh;
pub mod websocket;

//! One browser WebSocket message (`xml::client::parse_client_frame`), under the browser
//! limits and under small ones.
//!
//! Checked: no panic; the same answer twice; what passes the small limits passes the default
//! ones the same way; an element to forward is the message trimmed, and the upstream stream
//! reads it as exactly one element that stands alone.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use xmpp_gateway::xml::client::{parse_client_frame, ClientFrame};
use xmpp_gateway::xml::Limits;
use xmpp_gateway_fuzz::assert_forwardable;

/// Limits small enough for short inputs to reach them.
const SMALL: Limits = Limits {
    max_element_bytes: 512,
    max_depth: 4,
    max_attributes: 4,
};

fuzz_target!(|data: &[u8]| {
    let msg = Bytes::copy_from_slice(data);
    let default = parse_client_frame(msg.clone(), &Limits::default());
    assert_eq!(default, parse_client_frame(msg.clone(), &Limits::default()));
    if let Ok(small) = parse_client_frame(msg, &SMALL) {
        assert_eq!(Ok(small), default, "accepted under small limits only");
    }
    if let Ok(ClientFrame::Element(element)) = default {
        assert!(
            data.windows(element.len()).any(|w| w == element),
            "forwarded bytes are not a slice of the message"
        );
        assert!(!element.first().is_some_and(u8::is_ascii_whitespace));
        assert!(!element.last().is_some_and(u8::is_ascii_whitespace));
        assert_forwardable(&element);
    }
});

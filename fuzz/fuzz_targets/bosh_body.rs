//! One BOSH request body, read as the handler reads it: `transport::bosh::body::parse`, and on
//! refusal `body::root_attributes` to tie the request to its session.
//!
//! Checked: no panic; the same answer twice; every payload child is what a WebSocket message
//! may be (one element, forwarded unchanged) and the upstream stream reads it as one element
//! that stands alone; a body that parses has the same sid, rid and key when read as refused.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use xmpp_gateway::transport::bosh::body;
use xmpp_gateway::xml::client::{parse_client_frame, ClientFrame};
use xmpp_gateway::xml::Limits;
use xmpp_gateway_fuzz::assert_forwardable;

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    let limits = Limits::default();
    let parsed = body::parse(&data, &limits);
    match &parsed {
        Ok(b) => {
            let again = body::parse(&data, &limits).expect("parses twice");
            assert_eq!(again.children, b.children);
            for child in &b.children {
                assert_eq!(
                    parse_client_frame(child.clone(), &limits),
                    Ok(ClientFrame::Element(child.clone())),
                    "a payload child is not a message of its own"
                );
                assert_forwardable(child);
            }
            let refused = body::root_attributes(&data).expect("wrapper readable");
            assert_eq!(
                (&refused.sid, refused.rid, &refused.key),
                (&b.sid, b.rid, &b.key),
                "the wrapper reads differently when refused"
            );
        }
        Err(e) => {
            assert_eq!(body::parse(&data, &limits).err().as_ref(), Some(e));
            let _ = body::root_attributes(&data);
        }
    }
});

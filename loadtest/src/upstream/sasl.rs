//! SASL for the fixture (RFC 6120 §6): PLAIN (RFC 4616) and SCRAM-SHA-1 (RFC 5802, through
//! `crate::scram`). Any user name that is a plausible localpart logs in with the one password.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::server::Shared;
use crate::scram;

/// The mechanisms offered, in order of preference.
pub const MECHANISMS: [&str; 2] = ["SCRAM-SHA-1", "PLAIN"];

/// An exchange waiting for the client's next `<response/>`.
pub enum Pending {
    /// `<auth/>` carried no initial response: the empty challenge was sent.
    Initial(Mechanism),
    /// SCRAM's server-first-message was sent.
    Scram(scram::Server),
}

#[derive(Clone, Copy)]
pub enum Mechanism {
    Plain,
    Scram,
}

/// What to answer.
pub enum Step {
    /// `<challenge/>` with this (not yet base64) payload; the exchange goes on.
    Challenge(String, Pending),
    /// `<success/>`, with additional data for SCRAM; the user's localpart.
    Success { user: String, data: Option<String> },
    /// `<failure/>` with this condition (RFC 6120 §6.5).
    Failure(&'static str),
}

/// `<auth mechanism='...'>payload</auth>`. `payload` is the element's text: empty for no
/// initial response, `=` for an empty one (RFC 6120 §6.4.2).
pub fn auth(mechanism: &str, payload: &str, domain: &str, shared: &Shared) -> Step {
    let mechanism = match mechanism {
        "PLAIN" => Mechanism::Plain,
        "SCRAM-SHA-1" => Mechanism::Scram,
        _ => return Step::Failure("invalid-mechanism"),
    };
    if payload.is_empty() {
        return Step::Challenge(String::new(), Pending::Initial(mechanism));
    }
    initial(mechanism, payload, domain, shared)
}

/// `<response>payload</response>` for the exchange `pending`.
pub fn response(pending: Pending, payload: &str, domain: &str, shared: &Shared) -> Step {
    match pending {
        Pending::Initial(mechanism) => initial(mechanism, payload, domain, shared),
        Pending::Scram(server) => {
            let Some(client_final) = decode(payload) else {
                return Step::Failure("incorrect-encoding");
            };
            match server.finish(&client_final, &shared.keys) {
                Ok(server_final) => Step::Success {
                    user: server.user,
                    data: Some(server_final),
                },
                Err(_) => Step::Failure("not-authorized"),
            }
        }
    }
}

fn initial(mechanism: Mechanism, payload: &str, domain: &str, shared: &Shared) -> Step {
    let Some(message) = decode(payload) else {
        return Step::Failure("incorrect-encoding");
    };
    match mechanism {
        Mechanism::Plain => plain(&message, domain, shared),
        Mechanism::Scram => match scram::Server::start(&message, &shared.keys) {
            Ok((server, _)) if !valid_localpart(&server.user) => Step::Failure("not-authorized"),
            Ok((server, server_first)) => Step::Challenge(server_first, Pending::Scram(server)),
            Err(_) => Step::Failure("malformed-request"),
        },
    }
}

/// RFC 4616: `authzid NUL authcid NUL passwd`. The authorization identity may be empty or
/// name the same account, as a user name or a bare JID.
fn plain(message: &str, domain: &str, shared: &Shared) -> Step {
    let mut parts = message.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Failure("malformed-request");
    };
    let same_account = authzid.is_empty()
        || authzid.eq_ignore_ascii_case(user)
        || authzid.eq_ignore_ascii_case(&format!("{user}@{domain}"));
    if !same_account {
        return Step::Failure("invalid-authzid");
    }
    if !valid_localpart(user) || password != shared.config.password {
        return Step::Failure("not-authorized");
    }
    Step::Success {
        user: user.to_owned(),
        data: None,
    }
}

/// `=` is an empty message (RFC 6120 §6.4.2); anything else must be base64 of UTF-8.
fn decode(payload: &str) -> Option<String> {
    if payload == "=" {
        return Some(String::new());
    }
    String::from_utf8(B64.decode(payload).ok()?).ok()
}

/// RFC 7622 §3.3, roughly: not empty, not too long, none of the characters a localpart may
/// not hold. Enough to keep `user@domain/resource` unambiguous.
pub fn valid_localpart(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 1023
        && !user.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@')
        })
}

/// `payload` as an element's base64 text (`=` for an empty one, RFC 6120 §6.4.2).
pub fn encode(payload: &str) -> String {
    if payload.is_empty() {
        "=".to_owned()
    } else {
        B64.encode(payload)
    }
}

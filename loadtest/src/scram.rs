//! SASL SCRAM-SHA-1 (RFC 5802) for both ends: the load tester logs in with it, and the
//! `upstream` fixture checks it. No channel binding (gs2 header `n,,`), as most clients do.

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};

type HmacSha1 = Hmac<Sha1>;

const GS2_HEADER: &str = "n,,";

fn hmac(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `Hi(password, salt, i)`: PBKDF2 with HMAC-SHA-1 (RFC 5802 §2.2).
pub fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 20] {
    let mut out = [0u8; 20];
    pbkdf2::pbkdf2::<HmacSha1>(password.as_bytes(), salt, iterations, &mut out)
        .expect("HMAC takes a key of any length");
    out
}

/// The keys a server stores for one password (RFC 5802 §3).
#[derive(Clone, Debug)]
pub struct StoredKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 20],
    pub server_key: [u8; 20],
}

impl StoredKeys {
    pub fn new(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let salted = salted_password(password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        StoredKeys {
            stored_key: Sha1::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
            salt,
            iterations,
        }
    }
}

/// Escapes a user name for `n=` (RFC 5802 §5.1: `=` and `,`).
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

fn attribute(message: &str, name: char) -> Option<&str> {
    message.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

/// Client side of one SCRAM-SHA-1 exchange.
pub struct Client {
    client_first_bare: String,
    nonce: String,
    auth_message: String,
    server_key: [u8; 20],
}

impl Client {
    /// Starts an exchange; returns the client and its client-first-message.
    pub fn start(user: &str) -> (Client, String) {
        let nonce = random_nonce();
        let bare = format!("n={},r={nonce}", saslname(user));
        let first = format!("{GS2_HEADER}{bare}");
        let client = Client {
            client_first_bare: bare,
            nonce,
            auth_message: String::new(),
            server_key: [0; 20],
        };
        (client, first)
    }

    /// Answers the server-first-message with the client-final-message. `salted` computes
    /// `Hi(password, salt, i)` so a caller can cache it across logins with the same salt.
    pub fn finish(
        &mut self,
        server_first: &str,
        salted: impl FnOnce(&[u8], u32) -> [u8; 20],
    ) -> Result<String> {
        let nonce = attribute(server_first, 'r').context("server-first has no nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            bail!("server nonce does not extend the client's");
        }
        let salt = B64
            .decode(attribute(server_first, 's').context("server-first has no salt")?)
            .context("salt is not base64")?;
        let iterations: u32 = attribute(server_first, 'i')
            .context("server-first has no iteration count")?
            .parse()
            .context("iteration count")?;
        let salted = salted(&salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 20] = Sha1::digest(client_key).into();
        let without_proof = format!("c={},r={nonce}", B64.encode(GS2_HEADER));
        self.auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.server_key = hmac(&salted, b"Server Key");
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server's signature in the server-final-message (`v=`).
    pub fn verify(&self, server_final: &str) -> Result<()> {
        let v = attribute(server_final, 'v').context("server-final has no verifier")?;
        let expected = hmac(&self.server_key, self.auth_message.as_bytes());
        if B64.decode(v).ok().as_deref() != Some(&expected[..]) {
            bail!("server signature does not match");
        }
        Ok(())
    }
}

/// Server side of one SCRAM-SHA-1 exchange.
pub struct Server {
    /// The authentication identity from the client-first-message.
    pub user: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Server {
    /// Reads the client-first-message; returns the exchange and the server-first-message.
    pub fn start(client_first: &str, keys: &StoredKeys) -> Result<(Server, String)> {
        let bare = client_first
            .strip_prefix(GS2_HEADER)
            .ok_or_else(|| anyhow!("only the gs2 header `n,,` is supported"))?;
        let user = attribute(bare, 'n')
            .context("client-first has no user name")?
            .replace("=2C", ",")
            .replace("=3D", "=");
        let client_nonce = attribute(bare, 'r').context("client-first has no nonce")?;
        let nonce = format!("{client_nonce}{}", random_nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&keys.salt),
            keys.iterations
        );
        let server = Server {
            user,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((server, server_first))
    }

    /// Checks the client-final-message; returns the server-final-message.
    pub fn finish(&self, client_final: &str, keys: &StoredKeys) -> Result<String> {
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .context("client-final has no proof")?;
        if attribute(without_proof, 'r') != Some(self.nonce.as_str()) {
            bail!("nonce mismatch");
        }
        if attribute(without_proof, 'c') != Some(B64.encode(GS2_HEADER).as_str()) {
            bail!("channel binding mismatch");
        }
        let proof = B64.decode(proof).context("proof is not base64")?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac(&keys.stored_key, auth_message.as_bytes());
        if proof.len() != 20 {
            bail!("proof has the wrong length");
        }
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if Sha1::digest(&client_key)[..] != keys.stored_key[..] {
            bail!("wrong password");
        }
        let server_signature = hmac(&keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

fn random_nonce() -> String {
    use rand::Rng;
    let bytes: [u8; 18] = rand::thread_rng().gen();
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5802 §5's example exchange, with the nonces it uses.
    #[test]
    fn the_rfc_example_proof_and_verifier() {
        let mut client = Client {
            client_first_bare: "n=user,r=fyko+d2lbbFgONRv9qkxdawL".into(),
            nonce: "fyko+d2lbbFgONRv9qkxdawL".into(),
            auth_message: String::new(),
            server_key: [0; 20],
        };
        let server_first = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
        let last = client
            .finish(server_first, |salt, i| salted_password("pencil", salt, i))
            .unwrap();
        assert_eq!(
            last,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        client.verify("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=").unwrap();
        assert!(client.verify("v=AAAApqV8S7suAoZWja4dJRkFsKQ=").is_err());
    }

    #[test]
    fn client_and_server_agree_and_a_wrong_password_is_refused() {
        let keys = StoredKeys::new("secret", b"salt-1234".to_vec(), 64);
        for (password, ok) in [("secret", true), ("wrong", false)] {
            let (mut client, first) = Client::start("u,1=x");
            let (server, server_first) = Server::start(&first, &keys).unwrap();
            assert_eq!(server.user, "u,1=x");
            let last = client
                .finish(&server_first, |salt, i| salted_password(password, salt, i))
                .unwrap();
            match server.finish(&last, &keys) {
                Ok(server_final) => {
                    assert!(ok);
                    client.verify(&server_final).unwrap();
                }
                Err(_) => assert!(!ok),
            }
        }
    }
}

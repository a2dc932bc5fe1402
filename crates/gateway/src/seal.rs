//! What the gateway hands to clients and takes back, protected under the `session_key` that
//! instances serving as one share: a `requestState` carries an HMAC-SHA256; a session id is
//! sealed (ChaCha20-Poly1305), so that any instance can take over a session without a lookup
//! and a client can neither read nor forge what it holds.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

/// Prefix of sealed session ids.
pub const SEALED_PREFIX: &str = "tgs1.";

/// Seals and opens session ids.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    /// A sealer under a key derived from the shared `session_key` (never the key itself, which
    /// also signs `requestState`s).
    pub fn new(session_key: &[u8; 32]) -> Sealer {
        let key = mac(session_key, &[b"toolgate session id"]);
        let key = UnboundKey::new(&CHACHA20_POLY1305, &key).expect("a 32-byte key");
        Sealer {
            key: LessSafeKey::new(key),
        }
    }

    /// `tgs1.` + base64url(nonce, ciphertext and tag): visible ASCII, as `Mcp-Session-Id`
    /// requires.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut data = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(SEALED_PREFIX),
                &mut data,
            )
            .expect("sealing cannot fail below 2^38 bytes");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// The plaintext of a sealed id, if this key sealed it and nobody changed it.
    pub fn open(&self, sealed: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed.strip_prefix(SEALED_PREFIX)?)
            .ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let mut data = data.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(SEALED_PREFIX), &mut data)
            .ok()?;
        Some(plain.to_vec())
    }
}

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) of the parts, each length-prefixed so that no two different lists
/// of parts are the same message.
pub fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut message = Vec::new();
    for part in parts {
        message.extend_from_slice(&(part.len() as u64).to_be_bytes());
        message.extend_from_slice(part);
    }
    hmac_sha256(key, &message)
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block is hashed first.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_sealed_id_opens_only_under_its_key_and_unchanged() {
        let sealer = Sealer::new(&[1; 32]);
        let id = sealer.seal(b"{\"grant\":\"alice\"}");
        assert!(id.starts_with(SEALED_PREFIX));
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{id}");
        assert!(!id.contains("alice"), "the content is hidden");
        assert_eq!(sealer.open(&id).unwrap(), b"{\"grant\":\"alice\"}");
        assert_ne!(
            sealer.seal(b"x"),
            sealer.seal(b"x"),
            "a fresh nonce each time"
        );
        assert!(Sealer::new(&[2; 32]).open(&id).is_none());
        let mut tampered = id.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(sealer.open(&String::from_utf8(tampered).unwrap()).is_none());
        assert!(sealer.open("tgs1.").is_none());
        assert!(sealer.open("tgs1.!!").is_none());
        assert!(sealer.open("0123").is_none());
    }

    #[test]
    fn parts_are_framed() {
        let key = [7u8; 32];
        assert_ne!(mac(&key, &[b"ab", b"c"]), mac(&key, &[b"a", b"bc"]));
    }
}

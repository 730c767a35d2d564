//! How WeChat and WeCom seal the pushes they send to a callback URL (the
//! framing of their WXBizMsgCrypt libraries), as the simulator does it:
//! AES-256-CBC with the key from the EncodingAESKey and the IV its first
//! 16 bytes, around `16 random bytes || u32 big-endian length || message
//! || receive id`, padded PKCS#7-style to 32-byte blocks; and the
//! signature, `sha1` of the sorted token, timestamp, nonce and ciphertext.
//!
//! Written here apart from the broker's own codec: the simulator is the
//! broker's oracle and shares no logic with it.

use aes::Aes256;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::Engine as _;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use rand::distributions::{Alphanumeric, DistString};
use sha1::{Digest, Sha1};

/// The 32-byte key an EncodingAESKey (43 base64 characters) stands for;
/// its last character's spare bits are ignored, as WeChat's libraries do.
pub(crate) fn aes_key(encoding_aes_key: &str) -> Option<[u8; 32]> {
    let lenient = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    lenient
        .decode(format!("{encoding_aes_key}="))
        .ok()?
        .try_into()
        .ok()
}

/// `message` sealed for `receive_id`, in base64.
pub(crate) fn encrypt(key: &[u8; 32], receive_id: &str, message: &str) -> String {
    let mut plain = Vec::new();
    plain.extend_from_slice(random(16).as_bytes());
    plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
    plain.extend_from_slice(message.as_bytes());
    plain.extend_from_slice(receive_id.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let len = plain.len();
    let iv: [u8; 16] = key[..16].try_into().expect("16 bytes");
    let sealed = cbc::Encryptor::<Aes256>::new(&(*key).into(), &iv.into())
        .encrypt_padded_mut::<NoPadding>(&mut plain, len)
        .expect("whole blocks")
        .to_vec();
    STANDARD.encode(sealed)
}

/// `sha1` of the four values sorted and joined, in lowercase hex.
pub(crate) fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    Sha1::digest(parts.concat().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Unix seconds on the host's wall clock: what a push's query carries,
/// since the receiver judges it against its own clock.
pub(crate) fn wall_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

pub(crate) fn random(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

/// Percent-encodes a query value (base64 carries `+`, `/` and `=`).
pub(crate) fn query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_ignores_spare_bits_and_the_signature_sorts() {
        let key = aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        assert_eq!(key[0], 0x69);
        assert!(aes_key("short").is_none());
        assert_eq!(
            signature("b", "a", "d", "c"),
            signature("d", "c", "b", "a"),
            "order of the arguments does not matter"
        );
        let sealed = encrypt(&key, "ww1", "<xml/>");
        assert_eq!(STANDARD.decode(&sealed).unwrap().len() % 32, 0);
    }
}

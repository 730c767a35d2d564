//! WeChat's message encryption for Open Platform pushes (the framing of
//! its WXBizMsgCrypt libraries): the signature over the sorted token,
//! timestamp, nonce and ciphertext, and AES-256-CBC with the key and IV
//! derived from the EncodingAESKey, PKCS#7 padded to 32-byte blocks, around
//! `16 random bytes || u32 big-endian length || message || receive id`.
//! The receive id is the component appid for the Open Platform; WeCom's
//! suites use their suite id or the provider's corpid.
//!
//! Every check fails closed and says only which check failed: no error
//! carries key material, ciphertext or plaintext.

use aes::Aes256;
use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use sha1::{Digest, Sha1};

use crate::secret::Secret;

/// WeChat pads to 32-byte blocks, not AES's 16: pad values run 1..=32.
const PAD_BLOCK: usize = 32;
/// The random prefix and the length field.
const HEADER: usize = 16 + 4;

/// An EncodingAESKey is 43 base64 characters whose last one usually has
/// bits beyond the 32 bytes they encode set; WeChat's own libraries
/// ignore them, so the decoder must too (the strict default refuses them).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// Ciphertext as WeChat sends it: standard base64 with padding.
const STRICT: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why a push was refused. The variants are the metric and log labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    #[error("signature mismatch")]
    Signature,
    #[error("ciphertext is not base64 of whole AES blocks")]
    Ciphertext,
    #[error("bad padding")]
    Padding,
    #[error("bad length field")]
    Length,
    #[error("receive id mismatch")]
    AppId,
}

impl CryptError {
    pub fn label(self) -> &'static str {
        match self {
            CryptError::Signature => "signature",
            CryptError::Ciphertext => "ciphertext",
            CryptError::Padding => "padding",
            CryptError::Length => "length",
            CryptError::AppId => "appid",
        }
    }
}

/// The message token, the derived AES key and the receive ids accepted
/// (the first is the one [`MessageCrypt::encrypt`] seals for).
pub struct MessageCrypt {
    token: Secret,
    key: [u8; 32],
    receive_ids: Vec<String>,
}

impl std::fmt::Debug for MessageCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageCrypt")
            .field("receive_ids", &self.receive_ids)
            .finish_non_exhaustive()
    }
}

/// `sha1` of the four values sorted and joined, in lowercase hex.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut sha = Sha1::new();
    for part in parts {
        sha.update(part.as_bytes());
    }
    hex(&sha.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(40), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Compares without stopping at the first difference, so the time taken
/// tells a forger nothing about how much of a signature was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl MessageCrypt {
    /// `None` when `aes_key` is not 43 base64 characters (configuration
    /// validation refuses those first).
    pub fn new(token: Secret, aes_key: &str, appid: &str) -> Option<Self> {
        MessageCrypt::accepting(token, aes_key, &[appid])
    }

    /// A codec whose messages may end in any of `receive_ids` (at least
    /// one); `None` as for [`MessageCrypt::new`].
    pub fn accepting(token: Secret, aes_key: &str, receive_ids: &[&str]) -> Option<Self> {
        if aes_key.len() != crate::config::AES_KEY_LEN || receive_ids.is_empty() {
            return None;
        }
        let bytes = LENIENT.decode(format!("{aes_key}=")).ok()?;
        let key: [u8; 32] = bytes.try_into().ok()?;
        Some(MessageCrypt {
            token,
            key,
            receive_ids: receive_ids.iter().map(|id| (*id).to_owned()).collect(),
        })
    }

    /// Whether `msg_signature` signs this push.
    pub fn verify(&self, timestamp: &str, nonce: &str, encrypt: &str, msg_signature: &str) -> bool {
        let expected = signature(self.token.expose(), timestamp, nonce, encrypt);
        same(
            expected.as_bytes(),
            msg_signature.to_ascii_lowercase().as_bytes(),
        )
    }

    /// The message inside `encrypt`, checked to be for one of the receive
    /// ids.
    pub fn decrypt(&self, encrypt: &str) -> Result<Vec<u8>, CryptError> {
        let mut data = STRICT
            .decode(encrypt.trim())
            .map_err(|_| CryptError::Ciphertext)?;
        if data.is_empty() || data.len() % PAD_BLOCK != 0 {
            return Err(CryptError::Ciphertext);
        }
        let iv: [u8; 16] = self.key[..16].try_into().expect("16 bytes");
        let plain = cbc::Decryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut data)
            .map_err(|_| CryptError::Ciphertext)?;
        let pad = usize::from(*plain.last().ok_or(CryptError::Padding)?);
        if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
            return Err(CryptError::Padding);
        }
        let (body, padding) = plain.split_at(plain.len() - pad);
        if !padding.iter().all(|b| usize::from(*b) == pad) {
            return Err(CryptError::Padding);
        }
        if body.len() < HEADER {
            return Err(CryptError::Length);
        }
        let len = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes")) as usize;
        let rest = &body[HEADER..];
        if len > rest.len() {
            return Err(CryptError::Length);
        }
        let (message, receive_id) = rest.split_at(len);
        // Every id is compared in full, so the time taken does not tell
        // which one (if any) matched.
        let matched = self
            .receive_ids
            .iter()
            .fold(false, |any, id| same(receive_id, id.as_bytes()) | any);
        if !matched {
            return Err(CryptError::AppId);
        }
        Ok(message.to_vec())
    }

    /// Encrypts `message` as WeChat would (used for the broker's own tests
    /// of the round trip; the simulator has its own implementation).
    pub fn encrypt(&self, message: &[u8], random: [u8; 16]) -> String {
        let receive_id = self.receive_ids[0].as_bytes();
        let mut plain = Vec::with_capacity(HEADER + message.len() + receive_id.len() + PAD_BLOCK);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
        plain.extend_from_slice(message);
        plain.extend_from_slice(receive_id);
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let len = plain.len();
        let iv: [u8; 16] = self.key[..16].try_into().expect("16 bytes");
        let cipher = cbc::Encryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, len)
            .expect("whole blocks")
            .to_vec();
        STRICT.encode(cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently of this crate, with Python's `cryptography`
    // package (AES-CBC, manual 32-byte PKCS#7) and `hashlib.sha1`:
    //   key = b64decode(AES_KEY + "="), iv = key[:16]
    //   plain = b"0123456789abcdef" + struct.pack(">I", len(MESSAGE)) + MESSAGE + APPID
    //   signature = sha1("".join(sorted([TOKEN, TIMESTAMP, NONCE, ENCRYPT])))
    // The key's last character, G, has trailing bits set, as most real
    // EncodingAESKeys do.
    const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APPID: &str = "wx0a1b2c3d4e5f6a7b";
    const TOKEN: &str = "msgtoken";
    const TIMESTAMP: &str = "1700000000";
    const NONCE: &str = "nonce123";
    const MESSAGE: &str = "<xml><AppId><![CDATA[wx0a1b2c3d4e5f6a7b]]></AppId><CreateTime>1700000000</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[ticket@@@vector-0001]]></ComponentVerifyTicket></xml>";
    const ENCRYPT: &str = "Q3stYC6hdFzMh9T8HCvyDIf49CJ70SWL5FWJxNO2JQipyuMdMHQRQU1/HZe+n/pjSQwFctPBCM5FBZzNCEL5mFB4xezjWb36TVrLJC/I8u5C07sjpJMFCFX83nu4TnqOBAiwB3TwtASP5vsrIDQkQfXHiXVXYXdn7WtONoSePzC4876SYGCsKt2DfTER5WTX1bkFIJk7b85f/MyeSWm4Zs6AxakN/QHBvYD1tfud5yz9+DOwihFMnmp6r/28WAurSMpkUuU458aWja0daH6dQTqQKPJPMeNwtAQnqLHwZ5Jx0hySwIk3zWT0L3MHUhMCyaFsuhXcsoBWb1OOqicx5D0iV1KvY+ZfmgnGnXdks3YqdTD/68DAz8DRFDa2pOfE";
    const SIGNATURE: &str = "16cbca52363dc870ecd09ef68e918feaf2f90a7d";

    fn crypt(appid: &str) -> MessageCrypt {
        MessageCrypt::new(Secret::new(TOKEN), AES_KEY, appid).unwrap()
    }

    #[test]
    fn the_independent_vector_verifies_and_decrypts() {
        let crypt = crypt(APPID);
        assert!(crypt.verify(TIMESTAMP, NONCE, ENCRYPT, SIGNATURE));
        assert_eq!(signature(TOKEN, TIMESTAMP, NONCE, ENCRYPT), SIGNATURE);
        assert_eq!(crypt.decrypt(ENCRYPT).unwrap(), MESSAGE.as_bytes());
        assert_eq!(
            crypt.encrypt(MESSAGE.as_bytes(), *b"0123456789abcdef"),
            ENCRYPT,
            "encryption reproduces the vector byte for byte"
        );
    }

    #[test]
    fn round_trips_every_padding_length() {
        let crypt = crypt(APPID);
        for len in 0..80 {
            let message = vec![b'x'; len];
            let sealed = crypt.encrypt(&message, [7; 16]);
            assert_eq!(crypt.decrypt(&sealed).unwrap(), message, "{len}");
        }
    }

    #[test]
    fn every_tampering_is_refused() {
        let crypt = crypt(APPID);
        assert!(!crypt.verify(TIMESTAMP, NONCE, ENCRYPT, &SIGNATURE.replace('1', "2")));
        assert!(!crypt.verify("1700000001", NONCE, ENCRYPT, SIGNATURE));
        assert!(!crypt.verify(TIMESTAMP, NONCE, ENCRYPT, ""));
        assert_eq!(
            self::crypt("wxsomeoneelse").decrypt(ENCRYPT),
            Err(CryptError::AppId)
        );
        assert_eq!(crypt.decrypt("not base64!"), Err(CryptError::Ciphertext));
        assert_eq!(
            crypt.decrypt(&ENCRYPT[..ENCRYPT.len() - 24]),
            Err(CryptError::Ciphertext),
            "truncated"
        );
        // A last block that decrypts to garbage has a bad pad byte.
        let mut raw = STRICT.decode(ENCRYPT).unwrap();
        let n = raw.len();
        raw[n - 20] ^= 0xff;
        let flipped = STRICT.encode(&raw);
        assert!(matches!(
            crypt.decrypt(&flipped),
            Err(CryptError::Padding | CryptError::Length | CryptError::AppId)
        ));
        // Wrong padding made on purpose: a valid frame with pad byte 33.
        let key = crypt.key;
        let mut plain = vec![0u8; 64];
        plain[63] = 33;
        let iv: [u8; 16] = key[..16].try_into().unwrap();
        let sealed = cbc::Encryptor::<Aes256>::new(&key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, 64)
            .unwrap()
            .to_vec();
        assert_eq!(
            crypt.decrypt(&STRICT.encode(sealed)),
            Err(CryptError::Padding)
        );
        assert!(MessageCrypt::new(Secret::new(TOKEN), "short", APPID).is_none());
    }

    #[test]
    fn any_of_several_receive_ids_is_accepted_and_no_other() {
        let both =
            MessageCrypt::accepting(Secret::new(TOKEN), AES_KEY, &["wwsuite", APPID]).unwrap();
        assert_eq!(both.decrypt(ENCRYPT).unwrap(), MESSAGE.as_bytes());
        let sealed = both.encrypt(b"<xml/>", [1; 16]);
        assert_eq!(crypt("wwsuite").decrypt(&sealed).unwrap(), b"<xml/>");
        let neither =
            MessageCrypt::accepting(Secret::new(TOKEN), AES_KEY, &["wwsuite", "wwother"]).unwrap();
        assert_eq!(neither.decrypt(ENCRYPT), Err(CryptError::AppId));
        // A prefix of an accepted id is not that id.
        let prefix = MessageCrypt::accepting(Secret::new(TOKEN), AES_KEY, &["wx0a1b2c"]).unwrap();
        assert_eq!(prefix.decrypt(ENCRYPT), Err(CryptError::AppId));
        assert!(MessageCrypt::accepting(Secret::new(TOKEN), AES_KEY, &[]).is_none());
    }
}

//! Reply tokens bind a reply to the command it answers. Every command carries
//! `ce_sagatoken`: an HMAC-SHA256, under a key only sagaflow holds, of the command's id
//! (`ce_id`). A participant echoes it on its reply. Command ids are derived from public
//! facts (saga id, step, phase, attempt), so without the token anyone who can write a
//! reply topic could answer for any participant; with it, only someone who read the
//! command can.
//!
//! Several keys may be configured at once: the first signs, any of them verifies, which
//! is how keys rotate without refusing replies to commands signed before.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// CloudEvents extension attribute carrying the token (`ce_sagatoken` in binary mode).
pub const EXT_TOKEN: &str = "sagatoken";
/// Shortest key accepted (bytes): the HMAC's own block of security.
pub const MIN_KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct ReplyKeys {
    keys: Vec<Vec<u8>>,
    /// Per key, the HMAC already keyed and fed the reply-token purpose: keying costs two
    /// of the hash's five block compressions, paid here once instead of per token.
    token_macs: Vec<HmacSha256>,
    required: bool,
}

impl std::fmt::Debug for ReplyKeys {
    // Never the keys themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyKeys")
            .field("keys", &self.keys.len())
            .field("required", &self.required)
            .finish()
    }
}

/// Why a reply's token is not accepted; the dead-letter reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("the reply carries no `sagatoken`; echo the command's `ce_sagatoken` header")]
    Missing,
    #[error("the reply's `sagatoken` does not match the command it names")]
    Wrong,
}

#[derive(Debug, thiserror::Error)]
#[error("reply keys must be at least {MIN_KEY_LEN} bytes; key {index} has {len}")]
pub struct KeyTooShort {
    pub index: usize,
    pub len: usize,
}

impl ReplyKeys {
    /// `keys[0]` signs; at least one key is needed.
    pub fn new(keys: Vec<Vec<u8>>, required: bool) -> Result<ReplyKeys, KeyTooShort> {
        if keys.is_empty() {
            return Err(KeyTooShort { index: 0, len: 0 });
        }
        if let Some((index, k)) = keys.iter().enumerate().find(|(_, k)| k.len() < MIN_KEY_LEN) {
            return Err(KeyTooShort {
                index,
                len: k.len(),
            });
        }
        let token_macs = keys
            .iter()
            .map(|k| {
                let mut mac = <HmacSha256 as Mac>::new_from_slice(k)
                    .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
                // The purpose first, as for every other use of these keys (`tag`).
                mac.update(b"reply-token\0");
                mac
            })
            .collect();
        Ok(ReplyKeys {
            keys,
            token_macs,
            required,
        })
    }

    /// A fresh random key (tests, benchmarks, and the first start of a database).
    pub fn random_key() -> Vec<u8> {
        [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()]
            .iter()
            .flat_map(|u| *u.as_bytes())
            .collect()
    }

    fn mac(keyed: &HmacSha256, command_id: Uuid) -> HmacSha256 {
        let mut mac = keyed.clone();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        mac.update(
            command_id
                .as_hyphenated()
                .encode_lower(&mut text)
                .as_bytes(),
        );
        mac
    }

    /// The token for a command: 43 characters of unpadded base64url.
    pub fn sign(&self, command_id: Uuid) -> String {
        URL_SAFE_NO_PAD.encode(
            Self::mac(&self.token_macs[0], command_id)
                .finalize()
                .into_bytes(),
        )
    }

    /// A 16-byte tag of `data` for `purpose` (e.g. list cursors) under the signing key:
    /// the same keys serve other things the service must recognise as its own, kept
    /// apart by the purpose.
    pub fn tag(&self, purpose: &str, data: &str) -> Vec<u8> {
        Self::tag_with(&self.keys[0], purpose, data)
    }

    /// Whether `tag` is `data`'s tag for `purpose` under any of the keys.
    pub fn check_tag(&self, purpose: &str, data: &str, tag: &[u8]) -> bool {
        self.keys.iter().any(|k| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                &Self::tag_with(k, purpose, data)[..],
                tag,
            ))
        })
    }

    fn tag_with(key: &[u8], purpose: &str, data: &str) -> Vec<u8> {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data.as_bytes());
        mac.finalize().into_bytes()[..16].to_vec()
    }

    /// Whether `token` was signed for `command_id` by one of the keys (each compared in
    /// constant time).
    pub fn check(&self, command_id: Uuid, token: Option<&str>) -> Result<(), TokenProblem> {
        let Some(token) = token else {
            return if self.required {
                Err(TokenProblem::Missing)
            } else {
                Ok(())
            };
        };
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(token) else {
            return Err(TokenProblem::Wrong);
        };
        let matched = self
            .token_macs
            .iter()
            .any(|k| Self::mac(k, command_id).verify_slice(&bytes).is_ok());
        if matched {
            Ok(())
        } else {
            Err(TokenProblem::Wrong)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys(required: bool) -> ReplyKeys {
        ReplyKeys::new(vec![ReplyKeys::random_key()], required).unwrap()
    }

    #[test]
    fn a_token_verifies_only_for_its_command() {
        let k = keys(true);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let token = k.sign(a);
        assert_eq!(token.len(), 43);
        assert_eq!(k.check(a, Some(&token)), Ok(()));
        assert_eq!(k.check(b, Some(&token)), Err(TokenProblem::Wrong));
        assert_eq!(k.check(a, Some("not base64 !")), Err(TokenProblem::Wrong));
        assert_eq!(k.check(a, Some("")), Err(TokenProblem::Wrong));
    }

    #[test]
    fn another_key_cannot_sign() {
        let (ours, theirs) = (keys(true), keys(true));
        let id = Uuid::new_v4();
        assert_eq!(
            ours.check(id, Some(&theirs.sign(id))),
            Err(TokenProblem::Wrong)
        );
    }

    #[test]
    fn a_missing_token_is_refused_only_when_required() {
        let id = Uuid::new_v4();
        assert_eq!(keys(true).check(id, None), Err(TokenProblem::Missing));
        assert_eq!(keys(false).check(id, None), Ok(()));
        assert_eq!(keys(false).check(id, Some("x")), Err(TokenProblem::Wrong));
    }

    #[test]
    fn rotation_accepts_tokens_of_every_configured_key() {
        let (old, new) = (ReplyKeys::random_key(), ReplyKeys::random_key());
        let before = ReplyKeys::new(vec![old.clone()], true).unwrap();
        let during = ReplyKeys::new(vec![new.clone(), old], true).unwrap();
        let after = ReplyKeys::new(vec![new], true).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(during.check(id, Some(&before.sign(id))), Ok(()));
        assert_eq!(after.check(id, Some(&during.sign(id))), Ok(()));
        assert_eq!(
            after.check(id, Some(&before.sign(id))),
            Err(TokenProblem::Wrong)
        );
    }

    #[test]
    fn a_token_is_the_hmac_of_the_purpose_and_the_command_id() {
        // Pinned to the definition, so a change of how it is computed cannot silently
        // refuse replies to commands signed before an upgrade.
        let key = vec![7u8; 48];
        let id = Uuid::from_u128(0x0190_f3c2_7d2e_7c1a_9b9e_3f6f_1d2a_8b10);
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!());
        mac.update(b"reply-token\0");
        mac.update(id.to_string().as_bytes());
        let expected = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let keys = ReplyKeys::new(vec![key], true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys.sign(id), expected);
        assert_eq!(keys.sign(id), keys.sign(id));
        assert_eq!(keys.check(id, Some(&expected)), Ok(()));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(ReplyKeys::new(vec![b"short".to_vec()], true).is_err());
        assert!(ReplyKeys::new(vec![], true).is_err());
    }
}

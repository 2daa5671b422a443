//! Keys: `fl1:{key name}:{secret}`. The key name makes authentication one
//! point read; only the SHA-256 of the whole key is stored (in the
//! `ServiceAccountKeyRecord` the IAM stream holds).

use fleetlog_events::Id;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ServiceError;
use fleetlog_model::iam::names::ServiceAccountKeyName;

pub(super) const KEY_PREFIX: &str = "fl1";

/// A freshly made key: its text is returned once; the record keeps its hash.
pub struct IssuedKey {
    pub name: ServiceAccountKeyName,
    pub text: String,
    pub sha256: String,
}

impl IssuedKey {
    /// A new 256-bit secret for the key `name`.
    pub fn new(name: ServiceAccountKeyName) -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let text = format!("{KEY_PREFIX}:{name}:{}", hex(&secret));
        let sha256 = hex(&Sha256::digest(text.as_bytes()));
        IssuedKey { name, text, sha256 }
    }
}

/// The key name inside a key's text, if it has the key format.
pub(super) fn key_name_of(key: &str) -> Option<ServiceAccountKeyName> {
    let mut parts = key.splitn(3, ':');
    let (Some(KEY_PREFIX), Some(name), Some(_secret)) = (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    name.parse().ok()
}

/// A random ID of `len` hex characters (at most 32), for keys and the
/// service accounts fleetd makes.
pub fn random_id(prefix: &str, len: usize) -> Result<Id, ServiceError> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut text = hex(&bytes);
    text.truncate(len);
    Id::parse(&format!("{prefix}{text}"))
        .map_err(|e| ServiceError::Internal(format!("a generated ID: {e}")))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_their_name_and_a_256_bit_secret() {
        let name: ServiceAccountKeyName = "projects/p/serviceAccounts/sa/keys/k1"
            .parse()
            .expect("valid");
        let key = IssuedKey::new(name.clone());
        let (prefix, rest) = key.text.split_once(':').expect("prefix");
        assert_eq!(prefix, KEY_PREFIX);
        let (named, secret) = rest.rsplit_once(':').expect("secret");
        assert_eq!(named, name.to_string());
        assert_eq!(secret.len(), 64);
        assert_eq!(key.sha256, hex(&Sha256::digest(key.text.as_bytes())));
        assert!(!key.sha256.contains(secret));
        assert_ne!(IssuedKey::new(name.clone()).text, key.text);
        assert_eq!(key_name_of(&key.text), Some(name));
        assert_eq!(key_name_of("fl1:garbage:x"), None);
        assert_eq!(key_name_of("not a key"), None);
    }
}

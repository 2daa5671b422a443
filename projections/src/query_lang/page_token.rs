//! Page tokens: where the previous page ended, sealed with HMAC-SHA256.
//!
//! The token carries the last item's sort key and name so the next page can
//! resume after it without server-side state. Sealing makes the token
//! opaque to clients in practice and tamper-evident: an edited cursor could
//! otherwise skip or repeat items, or probe ranges the filter would hide.
//! A digest of the query binding (parent, filter, order) goes into the
//! authenticated payload, so a token only continues the query that made it
//! (AIP-158), and the error can say which of the two went wrong.
//!
//! Layout before base64url (no padding):
//! `version (1) || binding digest (16) || bincode(Cursor) || tag (32)`,
//! the tag covering everything before it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::InvalidArgument;
use super::order::SortValue;

const FIELD: &str = "page_token";
const VERSION: u8 = 1;
const DIGEST_LEN: usize = 16;
const TAG_LEN: usize = 32;
/// Longest token accepted, in characters. Real tokens are a few hundred
/// bytes; refusing large input early bounds the work a bad token can cause.
const MAX_TOKEN_LEN: usize = 8 * 1024;

const ALTERED: &str = "page token is malformed or was altered";
const OTHER_QUERY: &str = "page token does not belong to this query; send the same parent, filter and order_by as the \
     request that returned it";

type HmacSha256 = Hmac<Sha256>;

/// Where a page ended: the last item's sort key (empty when listing in name
/// order) and its name, the final tiebreaker.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub sort_key: Vec<SortValue>,
    pub name: String,
}

/// The HMAC-SHA256 key that seals page tokens. Every server that may receive
/// a token must share it (fleetd keeps it in the data dir).
#[derive(Clone)]
pub struct PageTokenKey([u8; 32]);

impl fmt::Debug for PageTokenKey {
    /// Never prints the key: it would let anyone forge tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PageTokenKey(..)")
    }
}

impl PageTokenKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        PageTokenKey(bytes)
    }

    /// A fresh key from the thread-local CSPRNG.
    pub fn random() -> Self {
        PageTokenKey(rand::random())
    }

    /// The raw key, for persisting it.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Seals `cursor` for the query described by `query_binding`.
    pub fn seal(&self, query_binding: &str, cursor: &Cursor) -> String {
        let mut token = Vec::with_capacity(64 + cursor.name.len());
        token.push(VERSION);
        token.extend_from_slice(&binding_digest(query_binding));
        // Encoding plain data into a Vec cannot fail. Were it ever to, the
        // token would carry no cursor and be refused on use: a failed next
        // page, never a wrong one.
        token.extend(
            bincode::serde::encode_to_vec(cursor, bincode::config::standard()).unwrap_or_default(),
        );
        let tag = self.mac(&token).finalize().into_bytes();
        token.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Verifies and opens a token from [`PageTokenKey::seal`]. Anything not
    /// sealed by this key for this exact binding is `INVALID_ARGUMENT` on
    /// `page_token`.
    pub fn open(&self, query_binding: &str, token: &str) -> Result<Cursor, InvalidArgument> {
        let altered = || InvalidArgument::new(FIELD, ALTERED);
        if token.len() > MAX_TOKEN_LEN {
            return Err(altered());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| altered())?;
        let Some(split) = bytes.len().checked_sub(TAG_LEN) else {
            return Err(altered());
        };
        let (sealed, tag) = bytes.split_at(split);
        self.mac(sealed).verify_slice(tag).map_err(|_| altered())?;
        // Authentic from here on: any further mismatch is ours, not the client's.
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(altered());
        };
        if version != VERSION || rest.len() < DIGEST_LEN {
            return Err(altered());
        }
        let (digest, payload) = rest.split_at(DIGEST_LEN);
        if digest != binding_digest(query_binding) {
            return Err(InvalidArgument::new(FIELD, OTHER_QUERY));
        }
        let config = bincode::config::standard().with_limit::<MAX_TOKEN_LEN>();
        match bincode::serde::decode_from_slice::<Cursor, _>(payload, config) {
            Ok((cursor, read)) if read == payload.len() => Ok(cursor),
            _ => Err(altered()),
        }
    }

    fn mac(&self, data: &[u8]) -> HmacSha256 {
        // HMAC pads keys to the 64-byte block with zeros itself, so this is
        // HMAC under the 32-byte key; the fixed-size constructor cannot fail.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.0);
        let mut mac = <HmacSha256 as hmac::digest::KeyInit>::new(&block.into());
        mac.update(data);
        mac
    }
}

/// Identifies the query without storing it: clients may send long filters,
/// and the token only needs to recognise the same one again.
fn binding_digest(query_binding: &str) -> [u8; DIGEST_LEN] {
    let hash = Sha256::digest(query_binding.as_bytes());
    let mut digest = [0u8; DIGEST_LEN];
    digest.copy_from_slice(&hash[..DIGEST_LEN]);
    digest
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    const BINDING: &str =
        "projects/p/regions/r\nlabels.env = prod\nspec.logging_config.priority desc";

    fn key() -> PageTokenKey {
        PageTokenKey::new([7; 32])
    }

    fn cursor() -> Cursor {
        Cursor {
            sort_key: vec![
                SortValue::Int(-3),
                SortValue::Missing,
                SortValue::Str("bérlin".into()),
                SortValue::Float(2.5),
                SortValue::Bool(true),
                SortValue::UInt(9),
                SortValue::Bytes(vec![0, 255]),
            ],
            name: "projects/p/regions/r/devices/d7".into(),
        }
    }

    #[test]
    fn round_trips() {
        let token = key().seal(BINDING, &cursor());
        assert_eq!(key().open(BINDING, &token), Ok(cursor()));
        let plain = Cursor {
            sort_key: vec![],
            name: "devices/a".into(),
        };
        assert_eq!(key().open("", &key().seal("", &plain)), Ok(plain));
    }

    #[test]
    fn tokens_are_url_safe_and_opaque() {
        let token = key().seal(BINDING, &cursor());
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{token}"
        );
        assert!(!token.contains("d7"));
    }

    #[test]
    fn any_edited_byte_is_refused() {
        let token = key().seal(BINDING, &cursor());
        let bytes = URL_SAFE_NO_PAD
            .decode(&token)
            .expect("our own token decodes");
        for i in 0..bytes.len() {
            let mut edited = bytes.clone();
            edited[i] ^= 0x01;
            let err = key()
                .open(BINDING, &URL_SAFE_NO_PAD.encode(&edited))
                .expect_err("edited");
            assert_eq!(err, InvalidArgument::new("page_token", ALTERED), "byte {i}");
        }
        // Edited as text, too: one character swapped.
        let mut chars: Vec<char> = token.chars().collect();
        chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
        let edited: String = chars.into_iter().collect();
        assert!(key().open(BINDING, &edited).is_err());
        // Truncated and extended.
        assert!(key().open(BINDING, &token[..token.len() - 1]).is_err());
        assert!(key().open(BINDING, &format!("{token}AA")).is_err());
    }

    #[test]
    fn another_query_is_refused() {
        let token = key().seal(BINDING, &cursor());
        let err = key()
            .open("projects/p/regions/r\nlabels.env = dev\n", &token)
            .expect_err("other query");
        expect![[r#"invalid page_token: page token does not belong to this query; send the same parent, filter and order_by as the request that returned it"#]]
            .assert_eq(&err.to_string());
    }

    #[test]
    fn another_key_is_refused() {
        let token = key().seal(BINDING, &cursor());
        let err = PageTokenKey::new([8; 32])
            .open(BINDING, &token)
            .expect_err("other key");
        expect![[r#"invalid page_token: page token is malformed or was altered"#]]
            .assert_eq(&err.to_string());
        let random = PageTokenKey::random();
        assert_ne!(random.as_bytes(), PageTokenKey::random().as_bytes());
        assert_eq!(
            random.open(BINDING, &random.seal(BINDING, &cursor())),
            Ok(cursor())
        );
        assert!(random.open(BINDING, &token).is_err());
    }

    #[test]
    fn garbage_is_refused() {
        let long = "A".repeat(MAX_TOKEN_LEN + 1);
        for garbage in ["", "x", "!!!!", "AAAA", "====", "é", long.as_str()] {
            let err = key().open(BINDING, garbage).expect_err(garbage);
            assert_eq!(err.field, "page_token");
            assert_eq!(err.message, ALTERED);
        }
        // A correctly tagged token whose payload is not a cursor.
        let mut forged = vec![VERSION];
        forged.extend_from_slice(&binding_digest(BINDING));
        forged.extend_from_slice(&[0xff, 0xff, 0xff]);
        let tag = key().mac(&forged).finalize().into_bytes();
        forged.extend_from_slice(&tag);
        assert_eq!(
            key().open(BINDING, &URL_SAFE_NO_PAD.encode(&forged)),
            Err(InvalidArgument::new("page_token", ALTERED))
        );
    }

    #[test]
    fn mac_is_standard_hmac_sha256_under_the_32_byte_key() {
        let mut reference = <HmacSha256 as Mac>::new_from_slice(&[7; 32]).expect("any key length");
        reference.update(b"data");
        assert_eq!(
            key().mac(b"data").finalize().into_bytes(),
            reference.finalize().into_bytes()
        );
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", key()), "PageTokenKey(..)");
    }

    proptest::proptest! {
        #[test]
        fn open_never_panics(token in "\\PC*") {
            let _ = key().open(BINDING, &token);
        }
    }
}

//! Tenants and API keys. Keys look like `aiprod_test_<12 id><32 secret><6 checksum>`: the checksum
//! (CRC-32 in base62) lets a typo or a leaked-key scanner recognise a key without a database lookup,
//! and only a SHA-256 hash of the whole key is ever stored.

use super::Money;
use super::catalog::Tier;
use rand::Rng;
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    Live,
    Test,
}

impl KeyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyMode::Live => "live",
            KeyMode::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<KeyMode> {
        match s {
            "live" => Some(KeyMode::Live),
            "test" => Some(KeyMode::Test),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    pub tier: Tier,
    pub end_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub base_tier: Tier,
    pub monthly_budget: Option<Money>,
    pub trial: Option<Trial>,
    pub job_quota: Option<u32>,
    pub created_ms: i64,
}

impl Tenant {
    /// The tier in force at `now_ms`: the trial's while it runs.
    pub fn tier_at(&self, now_ms: i64) -> Tier {
        match &self.trial {
            Some(t) if now_ms < t.end_ms => t.tier,
            _ => self.base_tier,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub mode: KeyMode,
    pub prefix: String,
    pub secret_hash: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
}

const ID_LEN: usize = 12;
const SECRET_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn base62_fixed(mut n: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).expect("base62 is ASCII")
}

fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| BASE62[rng.random_range(0..62)] as char)
        .collect()
}

fn checksum(body: &str) -> String {
    base62_fixed(u64::from(crc32fast::hash(body.as_bytes())), CHECKSUM_LEN)
}

/// The stored hash of a key.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A freshly generated key: its id (`key_…`), display prefix, and the secret shown once.
pub struct NewKey {
    pub id: String,
    pub prefix: String,
    pub secret: String,
}

pub fn generate_key(mode: KeyMode) -> NewKey {
    let id = random_base62(ID_LEN);
    let body = format!("aiprod_{}_{id}{}", mode.as_str(), random_base62(SECRET_LEN));
    let secret = format!("{body}{}", checksum(&body));
    NewKey {
        id: format!("key_{id}"),
        prefix: format!("aiprod_{}_{id}", mode.as_str()),
        secret,
    }
}

/// A key that passed the format and checksum check (no database lookup yet).
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey {
    pub key_id: String,
    pub mode: KeyMode,
}

/// Checks a presented key's shape and checksum. A typo fails here, before any lookup.
pub fn parse_key(secret: &str) -> Option<ParsedKey> {
    let rest = secret.strip_prefix("aiprod_")?;
    let (mode, rest) = rest.split_once('_')?;
    let mode = KeyMode::parse(mode)?;
    if rest.len() != ID_LEN + SECRET_LEN + CHECKSUM_LEN
        || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let (body, sum) = secret.split_at(secret.len() - CHECKSUM_LEN);
    if checksum(body) != sum {
        return None;
    }
    Some(ParsedKey {
        key_id: format!("key_{}", &rest[..ID_LEN]),
        mode,
    })
}

/// Constant-time comparison of a presented key against a stored hash.
pub fn key_matches(secret: &str, stored_hash: &str) -> bool {
    use subtle::ConstantTimeEq;
    hash_key(secret)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_match() {
        for mode in [KeyMode::Live, KeyMode::Test] {
            let k = generate_key(mode);
            let parsed = parse_key(&k.secret).expect("valid key");
            assert_eq!(
                parsed,
                ParsedKey {
                    key_id: k.id.clone(),
                    mode
                }
            );
            assert!(k.secret.starts_with(&k.prefix));
            assert!(key_matches(&k.secret, &hash_key(&k.secret)));
        }
    }

    #[test]
    fn any_single_character_change_is_caught_by_the_checksum() {
        let k = generate_key(KeyMode::Test);
        let start = "aiprod_test_".len();
        for i in start..k.secret.len() {
            let mut bytes = k.secret.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let mutated = String::from_utf8(bytes).unwrap();
            assert!(parse_key(&mutated).is_none(), "mutation at {i} accepted");
        }
        assert!(parse_key("aiprod_prod_x").is_none());
        assert!(parse_key("").is_none());
    }

    #[test]
    fn trials_end() {
        let t = Tenant {
            id: "t".into(),
            name: "n".into(),
            base_tier: Tier::Bronze,
            monthly_budget: None,
            trial: Some(Trial {
                tier: Tier::Platinum,
                end_ms: 100,
            }),
            job_quota: None,
            created_ms: 0,
        };
        assert_eq!(t.tier_at(99), Tier::Platinum);
        assert_eq!(t.tier_at(100), Tier::Bronze);
    }
}

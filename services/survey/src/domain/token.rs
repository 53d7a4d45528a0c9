//! Survey tokens: single-use, expiring, unguessable.
//!
//! A token is 32 random bytes from a cryptographic RNG, written as 64 lower-case hex
//! characters (URL-safe as is). Only its SHA-256 ([`TokenHash`]) is stored, so a leaked
//! database does not give working links; with 256 random bits a plain hash is enough (nothing
//! to brute-force). Redemption is single-use: storage marks the token used in the same
//! statement that checks it (`UPDATE ... SET used_at = $now WHERE hash = $1 AND used_at IS NULL
//! AND expires_at > $now`); [`check_redeemable`] gives the precise error for the answer page.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;
const TOKEN_HEX_LEN: usize = TOKEN_BYTES * 2;

/// The secret sent to the customer. Its `Debug` output is redacted so it never reaches logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SurveyToken(String);

/// SHA-256 of a token, hex: what storage keeps and looks up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

/// Why a token cannot be redeemed. Each maps to a clear answer on the form and in gRPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed survey token")]
    Malformed,
    #[error("unknown survey token")]
    Unknown,
    #[error("survey link expired at {expired_at}")]
    Expired { expired_at: DateTime<Utc> },
    #[error("survey already answered at {used_at}")]
    AlreadyUsed { used_at: DateTime<Utc> },
}

impl SurveyToken {
    /// A new token from the thread-local cryptographic RNG.
    pub fn generate() -> SurveyToken {
        SurveyToken::generate_with(&mut rand::rng())
    }

    /// A new token from `rng` (seedable in tests; use a cryptographic RNG in production).
    pub fn generate_with<R: CryptoRng + RngCore + ?Sized>(rng: &mut R) -> SurveyToken {
        let mut bytes = [0u8; TOKEN_BYTES];
        rng.fill_bytes(&mut bytes);
        SurveyToken(hex::encode(bytes))
    }

    /// Reads a token from a link or a request; anything but 64 hex characters is refused before
    /// touching storage.
    pub fn parse(s: &str) -> Result<SurveyToken, TokenError> {
        let ok = s.len() == TOKEN_HEX_LEN && s.bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(SurveyToken(s.to_ascii_lowercase()))
        } else {
            Err(TokenError::Malformed)
        }
    }

    /// The token text, for the link.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hash under which the token is stored.
    pub fn hash(&self) -> TokenHash {
        TokenHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }
}

impl fmt::Debug for SurveyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SurveyToken(<redacted>)")
    }
}

impl TokenHash {
    /// Rebuilds a hash read back from storage.
    pub fn from_stored(s: &str) -> Option<TokenHash> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| TokenHash(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A freshly issued token: send `token`, store `hash` and `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: SurveyToken,
    pub hash: TokenHash,
    pub expires_at: DateTime<Utc>,
}

/// Issues a token valid for `ttl` from `now`.
pub fn issue_token(now: DateTime<Utc>, ttl: TimeDelta) -> IssuedToken {
    issue_token_with(&mut rand::rng(), now, ttl)
}

/// [`issue_token`] with an explicit RNG.
pub fn issue_token_with<R: CryptoRng + RngCore + ?Sized>(
    rng: &mut R,
    now: DateTime<Utc>,
    ttl: TimeDelta,
) -> IssuedToken {
    let token = SurveyToken::generate_with(rng);
    let hash = token.hash();
    let expires_at = now
        .checked_add_signed(ttl)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    IssuedToken {
        token,
        hash,
        expires_at,
    }
}

/// What storage knows about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenState {
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// Whether a token found (or not, `None`) in storage can be redeemed at `now`. A used token
/// reports [`TokenError::AlreadyUsed`] even once expired: that is the more useful answer.
pub fn check_redeemable(state: Option<&TokenState>, now: DateTime<Utc>) -> Result<(), TokenError> {
    let state = state.ok_or(TokenError::Unknown)?;
    if let Some(used_at) = state.used_at {
        return Err(TokenError::AlreadyUsed { used_at });
    }
    if now >= state.expires_at {
        return Err(TokenError::Expired {
            expired_at: state.expires_at,
        });
    }
    Ok(())
}

/// The link emailed to the customer: `{base}/s/{token}` (the survey service serves `/s/<token>`).
pub fn survey_link(public_base_url: &str, token: &SurveyToken) -> String {
    format!(
        "{}/s/{}",
        public_base_url.trim_end_matches('/'),
        token.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashSet;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn tokens_are_64_hex_chars_and_unique() {
        let tokens: HashSet<String> = (0..1000)
            .map(|_| SurveyToken::generate().as_str().to_owned())
            .collect();
        assert_eq!(tokens.len(), 1000);
        assert!(
            tokens
                .iter()
                .all(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn only_the_hash_is_stored_and_it_matches_sha256() {
        let token = SurveyToken::parse(&"ab".repeat(32)).unwrap();
        // sha256 of the 64-character token text.
        // Known answer, computed independently (Python hashlib).
        assert_eq!(
            token.hash().as_str(),
            "271a413bd339c5709fdceaec41f14f11e9fbfb5042d72d331c65f32b284cd09a"
        );
        assert_ne!(token.hash().as_str(), token.as_str());
        assert_eq!(
            TokenHash::from_stored(token.hash().as_str()),
            Some(token.hash())
        );
        assert_eq!(TokenHash::from_stored("nope"), None);
    }

    #[test]
    fn parse_refuses_anything_but_64_hex() {
        for bad in [
            "",
            "abc",
            &"g".repeat(64),
            &"a".repeat(63),
            &"a".repeat(65),
            "../../etc/passwd",
        ] {
            assert_eq!(SurveyToken::parse(bad), Err(TokenError::Malformed), "{bad}");
        }
        // Upper-case hex from a mangled link still works and hashes like the original.
        let t = SurveyToken::generate();
        assert_eq!(
            SurveyToken::parse(&t.as_str().to_uppercase())
                .unwrap()
                .hash(),
            t.hash()
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = SurveyToken::generate();
        assert!(!format!("{t:?}").contains(t.as_str()));
        let issued = issue_token(t0(), TimeDelta::days(1));
        assert!(!format!("{issued:?}").contains(issued.token.as_str()));
    }

    fn t0() -> DateTime<Utc> {
        t(0)
    }

    #[test]
    fn issued_tokens_expire_after_the_ttl() {
        let mut rng = StdRng::seed_from_u64(1);
        let issued = issue_token_with(&mut rng, t(0), TimeDelta::days(14));
        assert_eq!(issued.expires_at, t(14 * 86_400));
        assert_eq!(issued.hash, issued.token.hash());
        let again = issue_token_with(&mut StdRng::seed_from_u64(1), t(0), TimeDelta::days(14));
        assert_eq!(
            again.token, issued.token,
            "seeded RNG gives reproducible tokens in tests"
        );
    }

    #[test]
    fn redemption_rules() {
        let fresh = TokenState {
            expires_at: t(100),
            used_at: None,
        };
        assert_eq!(check_redeemable(Some(&fresh), t(99)), Ok(()));
        assert_eq!(
            check_redeemable(Some(&fresh), t(100)),
            Err(TokenError::Expired { expired_at: t(100) })
        );
        assert_eq!(check_redeemable(None, t(0)), Err(TokenError::Unknown));
        let used = TokenState {
            used_at: Some(t(50)),
            ..fresh
        };
        assert_eq!(
            check_redeemable(Some(&used), t(60)),
            Err(TokenError::AlreadyUsed { used_at: t(50) })
        );
        assert_eq!(
            check_redeemable(Some(&used), t(200)),
            Err(TokenError::AlreadyUsed { used_at: t(50) })
        );
    }

    #[test]
    fn link_joins_base_and_token() {
        let t = SurveyToken::parse(&"0f".repeat(32)).unwrap();
        let want = format!("https://shop.example/s/{}", "0f".repeat(32));
        assert_eq!(survey_link("https://shop.example/", &t), want);
        assert_eq!(survey_link("https://shop.example", &t), want);
    }

    proptest! {
        /// Distinct tokens never share a hash, and the hash never reveals the token.
        #[test]
        fn hashes_are_distinct_per_token(seed_a in any::<u64>(), seed_b in any::<u64>()) {
            let a = SurveyToken::generate_with(&mut StdRng::seed_from_u64(seed_a));
            let b = SurveyToken::generate_with(&mut StdRng::seed_from_u64(seed_b));
            prop_assert_eq!(a == b, a.hash() == b.hash());
            prop_assert!(!a.hash().as_str().contains(a.as_str()));
        }
    }
}

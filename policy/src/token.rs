//! Verifying a bearer token against a key set: pure computation, so it lives here; fetching the key
//! set is I/O and lives in the proxy, which hands the result in.
//!
//! jsonwebtoken checks the signature; which key may sign with which algorithm, and every claim, is
//! checked here against `now` as given, so each failure gets its own reason and tests need no clock.
//! The header and the claims are each parsed once: jsonwebtoken's `decode` would parse the header
//! a second time and the claims twice, which made up most of a new token's cost besides the
//! signature itself.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::decision::{Denial, Reason};
use crate::policy::Policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Okp,
}

fn family_of(alg: Algorithm) -> Option<Family> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(Family::Rsa),
        Algorithm::ES256 | Algorithm::ES384 => Some(Family::Ec),
        Algorithm::EdDSA => Some(Family::Okp),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
    }
}

struct Key {
    decoding: DecodingKey,
    family: Family,
    /// The JWK's own `alg`, when it pins one.
    alg: Option<String>,
}

/// The IdP's public signing keys.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Key>,
    without_kid: Vec<Key>,
    /// Keys in the document that could not be used for signatures (encryption keys, symmetric
    /// keys, unsupported types): reported, never trusted.
    pub skipped: usize,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .field("without_kid", &self.without_kid.len())
            .field("skipped", &self.skipped)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWKS document: {0}")]
    Malformed(String),
    #[error("the key set holds no usable signing key ({skipped} skipped)")]
    NoUsableKeys { skipped: usize },
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify signatures are skipped, not fatal: IdPs
    /// publish encryption keys in the same set.
    pub fn from_jwks(json: &str) -> Result<KeySet, JwksError> {
        let doc: Value =
            serde_json::from_str(json).map_err(|e| JwksError::Malformed(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| JwksError::Malformed("no \"keys\" array".into()))?;
        let mut set = KeySet::default();
        for raw in keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                set.skipped += 1;
                continue;
            };
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Okp,
                AlgorithmParameters::OctetKey(_) => {
                    set.skipped += 1;
                    continue;
                }
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                set.skipped += 1;
                continue;
            }
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                set.skipped += 1;
                continue;
            };
            let key = Key {
                decoding,
                family,
                alg: jwk.common.key_algorithm.map(|a| format!("{a:?}")),
            };
            match jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid, key);
                }
                None => set.without_kid.push(key),
            }
        }
        if set.is_empty() {
            return Err(JwksError::NoUsableKeys {
                skipped: set.skipped,
            });
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

/// What a verified token says, kept (in the proxy's cache) until `exp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Index into [`Policy::vendors`].
    pub vendor: usize,
    /// The value of `identity.account_claim`.
    pub account: String,
    pub iss: String,
    pub sub: Option<String>,
    pub amr: Vec<String>,
    pub acr: Option<String>,
    pub auth_time: Option<u64>,
    pub iat: Option<u64>,
    pub exp: u64,
    pub sid: Option<String>,
    pub jti: Option<String>,
    pub alg: String,
    pub kid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The token names (by `kid`) a key the set does not hold: the caller may fetch the set again
    /// and retry.
    UnknownKey {
        kid: Option<String>,
    },
    Denied(Denial),
}

impl VerifyError {
    /// The refusal, once fetching the key set again is no longer an option: a key we do not hold
    /// makes the token invalid.
    pub fn denial(self) -> Denial {
        match self {
            VerifyError::Denied(d) => d,
            VerifyError::UnknownKey { kid } => Denial::new(
                Reason::TokenInvalid,
                format!("unknown kid {:?}", kid.as_deref().unwrap_or("")),
            ),
        }
    }
}

fn invalid(rule: impl Into<std::borrow::Cow<'static, str>>) -> VerifyError {
    VerifyError::Denied(Denial::new(Reason::TokenInvalid, rule))
}

fn deny(reason: Reason, rule: &'static str) -> VerifyError {
    VerifyError::Denied(Denial::new(reason, rule))
}

fn number(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

fn string(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// Three dot-separated parts of base64url text (the signature may be empty only to be refused later):
/// checked before any key lookup so garbage never triggers a key-set refetch.
fn well_formed(token: &str) -> bool {
    let mut parts = 0;
    for part in token.split('.') {
        parts += 1;
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

/// The bearer token in an `Authorization` header value, if it is one.
pub fn bearer(header: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Policy {
    /// Checks a token's signature and claims at time `now` (seconds since the epoch).
    pub fn verify_token(
        &self,
        token: &str,
        keys: &KeySet,
        now: u64,
    ) -> Result<VerifiedToken, VerifyError> {
        let rules = &self.identity;
        if token.len() > rules.max_token_bytes {
            return Err(invalid("token larger than identity.max_token_size"));
        }
        if !well_formed(token) {
            return Err(invalid("malformed token (expected three base64url parts)"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token (header)"))?;
        let alg = header.alg;
        if !rules.algorithms.contains(&alg) {
            return Err(invalid(format!("alg {alg:?} not in identity.algorithms")));
        }
        let family = family_of(alg).ok_or_else(|| invalid("HMAC algorithms are never accepted"))?;
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) => match keys.by_kid.get(kid) {
                Some(key) => vec![key],
                None => {
                    return Err(VerifyError::UnknownKey {
                        kid: Some(kid.clone()),
                    })
                }
            },
            None => keys
                .without_kid
                .iter()
                .filter(|k| k.family == family)
                .collect(),
        };
        if candidates.is_empty() {
            return Err(invalid(
                "token has no kid and no key without one fits its alg",
            ));
        }
        // Three parts, checked by `well_formed`: the signature covers `header.payload`.
        let (signed, signature) = token.rsplit_once('.').unwrap_or_default();
        let payload = signed.split_once('.').unwrap_or_default().1;
        let mut last = invalid("signature");
        let mut verified = false;
        for key in candidates {
            if key.family != family {
                last = invalid("the key's type does not fit the token's alg");
                continue;
            }
            if key.alg.as_deref().is_some_and(|a| a != format!("{alg:?}")) {
                last = invalid("the key is pinned to another alg");
                continue;
            }
            // The key's family was checked above against the header's `alg`, which is in
            // `identity.algorithms`: what jsonwebtoken's `decode` checks before this same call.
            match jsonwebtoken::crypto::verify(signature, signed.as_bytes(), &key.decoding, alg) {
                Ok(true) => {
                    verified = true;
                    break;
                }
                Ok(false) => last = invalid("signature"),
                // Only a signature that is not base64url gets here.
                Err(_) => last = invalid("malformed token"),
            }
        }
        if !verified {
            return Err(last);
        }
        let claims: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| invalid("malformed token"))?;
        let leeway = rules.leeway_secs;

        let exp = number(claims.get("exp")).ok_or_else(|| invalid("no exp claim"))?;
        if now > exp.saturating_add(leeway) {
            return Err(deny(Reason::TokenExpired, "exp"));
        }
        if number(claims.get("nbf")).is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(deny(Reason::TokenNotYetValid, "nbf"));
        }
        let iss = string(claims.get("iss")).unwrap_or_default();
        if iss != rules.issuer {
            return Err(deny(Reason::IssuerMismatch, "identity.issuer"));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => rules.audiences.contains(a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| rules.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !aud_ok {
            return Err(deny(Reason::AudienceMismatch, "identity.audiences"));
        }
        let account = string(claims.get(&rules.account_claim))
            .filter(|a| !a.is_empty())
            .ok_or_else(|| invalid("no account claim (identity.account_claim)"))?;
        let vendor_value = string(claims.get(&rules.vendor_claim)).unwrap_or_default();
        let vendor = self.vendor_for_claim(&vendor_value).ok_or_else(|| {
            deny(
                Reason::VendorUnknown,
                "identity.vendor_claim matches no vendor",
            )
        })?;
        let amr = match claims.get("amr") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        Ok(VerifiedToken {
            vendor,
            account,
            iss,
            sub: string(claims.get("sub")),
            amr,
            acr: string(claims.get("acr")),
            auth_time: number(claims.get("auth_time")),
            iat: number(claims.get("iat")),
            exp,
            sid: string(claims.get("sid")),
            jti: string(claims.get("jti")),
            alg: format!("{alg:?}"),
            kid: header.kid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(b"Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer(b"bearer  abc "), Some("abc"));
        assert_eq!(bearer(b"Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(&[0xff, 0xfe]), None);
    }

    #[test]
    fn jwks_parsing_skips_what_cannot_sign() {
        let doc = r#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"EC","crv":"P-256","use":"enc","kid":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"sig","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"weird"}
        ]}"#;
        let set = KeySet::from_jwks(doc).unwrap();
        assert_eq!((set.len(), set.skipped), (1, 3));
        assert!(set.has_kid("sig") && !set.has_kid("hmac"));
        assert!(matches!(
            KeySet::from_jwks(r#"{"keys":[]}"#),
            Err(JwksError::NoUsableKeys { .. })
        ));
        assert!(matches!(
            KeySet::from_jwks("nope"),
            Err(JwksError::Malformed(_))
        ));
    }
}

//! A development identity provider: real signing keys (RS256, ES256, EdDSA), the JWKS that
//! publishes them, and tokens minted with whatever claims a test or the demo needs.
//!
//! The RSA key is a fixed test key checked in under `testdata/` (ring cannot generate RSA keys);
//! the EC and Ed25519 keys are generated fresh each time. None of this is for production.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs1KeyDer;
use serde_json::{json, Value};

/// The checked-in RSA test key (PKCS#1 PEM).
pub const RSA_TEST_KEY_PEM: &str = include_str!("../testdata/idp-rsa-test-key.pem");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rs256,
    Es256,
    EdDsa,
}

impl KeyKind {
    pub const ALL: [KeyKind; 3] = [KeyKind::Rs256, KeyKind::Es256, KeyKind::EdDsa];

    pub fn algorithm(self) -> Algorithm {
        match self {
            KeyKind::Rs256 => Algorithm::RS256,
            KeyKind::Es256 => Algorithm::ES256,
            KeyKind::EdDsa => Algorithm::EdDSA,
        }
    }
}

pub struct SigningKey {
    pub kind: KeyKind,
    pub kid: String,
    encoding: EncodingKey,
    /// The public half as a JWK.
    pub jwk: Value,
    /// The public key as PEM text (for building key-confusion attacks in tests).
    pub public_pem: String,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    pub fn generate(kind: KeyKind, kid: &str) -> Self {
        match kind {
            KeyKind::Rs256 => Self::rsa(kid, RSA_TEST_KEY_PEM),
            KeyKind::Es256 | KeyKind::EdDsa => {
                let alg = if kind == KeyKind::Es256 {
                    &rcgen::PKCS_ECDSA_P256_SHA256
                } else {
                    &rcgen::PKCS_ED25519
                };
                // Key generation only fails if the system RNG does; a dev tool may stop there.
                let pair = rcgen::KeyPair::generate_for(alg).expect("system random generator");
                let der = pair.serialize_der();
                let raw = pair.public_key_raw();
                let (encoding, jwk) = if kind == KeyKind::Es256 {
                    (
                        EncodingKey::from_ec_der(&der),
                        json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
                    )
                } else {
                    (
                        EncodingKey::from_ed_der(&der),
                        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}),
                    )
                };
                SigningKey::finish(kind, kid, encoding, jwk, pair.public_key_pem())
            }
        }
    }

    /// An RS256 key from PKCS#1 PEM text.
    pub fn rsa(kid: &str, pem: &str) -> Self {
        let der = PrivatePkcs1KeyDer::from_pem_slice(pem.as_bytes()).expect("PKCS#1 RSA key");
        let (n, e) = pkcs1_public(der.secret_pkcs1_der()).expect("well-formed PKCS#1");
        let encoding = EncodingKey::from_rsa_der(der.secret_pkcs1_der());
        let jwk = json!({"kty": "RSA", "n": b64(n), "e": b64(e)});
        // A public-key PEM is only used as an attack input (an HMAC "secret"); the modulus suffices.
        let public_pem = format!(
            "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
            b64(n)
        );
        SigningKey::finish(KeyKind::Rs256, kid, encoding, jwk, public_pem)
    }

    fn finish(
        kind: KeyKind,
        kid: &str,
        encoding: EncodingKey,
        mut jwk: Value,
        public_pem: String,
    ) -> Self {
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(format!("{:?}", kind.algorithm()));
        SigningKey {
            kind,
            kid: kid.to_string(),
            encoding,
            jwk,
            public_pem,
        }
    }

    /// Signs `claims` with this key, `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.kind.algorithm());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing with a valid key")
    }
}

/// Reads (modulus, public exponent) from a PKCS#1 RSAPrivateKey: SEQUENCE { version, n, e, … }.
fn pkcs1_public(der: &[u8]) -> Option<(&[u8], &[u8])> {
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n > 4 || rest.len() < n {
                return None;
            }
            (
                rest[..n]
                    .iter()
                    .fold(0usize, |acc, b| acc << 8 | *b as usize),
                &rest[n..],
            )
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    let (0x30, seq, _) = tlv(der)? else {
        return None;
    };
    let (0x02, _version, rest) = tlv(seq)? else {
        return None;
    };
    let (0x02, n, rest) = tlv(rest)? else {
        return None;
    };
    let (0x02, e, _) = tlv(rest)? else {
        return None;
    };
    Some((n.strip_prefix(&[0]).unwrap_or(n), e))
}

/// An issuer with one key of each kind.
pub struct DevIdp {
    pub issuer: String,
    pub keys: Vec<SigningKey>,
}

impl DevIdp {
    pub fn new(issuer: &str) -> Self {
        DevIdp {
            issuer: issuer.to_string(),
            keys: KeyKind::ALL
                .iter()
                .map(|k| {
                    SigningKey::generate(
                        *k,
                        &format!("{}-1", format!("{:?}", k.algorithm()).to_lowercase()),
                    )
                })
                .collect(),
        }
    }

    pub fn key(&self, kind: KeyKind) -> &SigningKey {
        self.keys
            .iter()
            .find(|k| k.kind == kind)
            .expect("one key of each kind")
    }

    /// The JWKS document publishing every key.
    pub fn jwks(&self) -> String {
        json!({"keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
    }

    /// Claims of a well-formed agent token issued at `now` for `ttl` seconds: MFA (`amr`
    /// `["pwd","mfa"]`), `auth_time` = now, a session id.
    pub fn agent_claims(
        &self,
        audience: &str,
        account: &str,
        vendor: &str,
        now: u64,
        ttl: u64,
    ) -> Value {
        json!({
            "iss": self.issuer,
            "aud": audience,
            "sub": account,
            "vendor": vendor,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "auth_time": now,
            "amr": ["pwd", "mfa"],
            "sid": format!("sid-{account}-{now}"),
            "jti": format!("jti-{account}-{now}-{}", now % 9973),
        })
    }

    pub fn mint(&self, kind: KeyKind, claims: &Value) -> String {
        self.key(kind).sign(claims)
    }
}

/// Seconds since the epoch, for minting.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

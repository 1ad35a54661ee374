//! Key material and tokens for the side-by-side benchmark (`bench/run.sh`): an ES256 key, its
//! JWKS (for vendorgate), its public key as PEM (for HAProxy's `jwt_verify`), one long-lived MFA
//! token, and N distinct tokens for the cold path (every token seen for the first time).
//!
//!     bench-idp OUT_DIR [N]

use std::io::Write;

use vendorgate_mock::idp::{now, KeyKind, SigningKey};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().expect("usage: bench-idp OUT_DIR [N]"));
    let n: usize = args.next().map_or(10_000, |s| s.parse().expect("N"));
    std::fs::create_dir_all(&out)?;
    let key = SigningKey::generate(KeyKind::Es256, "bench-es256");
    std::fs::write(
        out.join("jwks.json"),
        serde_json::json!({"keys": [key.jwk]}).to_string(),
    )?;
    std::fs::write(out.join("jwt_pub.pem"), &key.public_pem)?;
    let t = now();
    let claims = |account: String, i: usize| {
        serde_json::json!({
            "iss": "https://idp.bench", "aud": "vendorgate", "sub": account, "vendor": "bench",
            "iat": t, "nbf": t, "exp": t + 4 * 3600, "auth_time": t, "amr": ["pwd", "mfa"],
            "sid": format!("bench-session-{i}"), "jti": format!("bench-jti-{i}"),
        })
    };
    std::fs::write(
        out.join("token.txt"),
        key.sign(&claims("agent-0".into(), 0)),
    )?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("tokens.txt"))?);
    for i in 0..n {
        writeln!(f, "{}", key.sign(&claims(format!("agent-{i}"), i + 1)))?;
    }
    Ok(())
}

//! The upstream credential the proxy presents in place of the agent's token. Agents never hold it:
//! a stolen agent account is then worth only what the policy lets it do.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::HeaderValue;
use vendorgate_policy::config::{Credential, SecretSource};

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("upstream.credential: environment variable {0} is not set")]
    MissingEnv(String),
    #[error("upstream.credential: {path}: cannot read: {cause}")]
    Read {
        path: std::path::PathBuf,
        /// Not `source`: the message already says it, and a chain would say it twice.
        cause: std::io::Error,
    },
    #[error("upstream.credential: set exactly one of token_env or token_file")]
    Source,
    #[error("upstream.credential: the secret is empty or not a valid header value")]
    Invalid,
}

fn secret(src: &SecretSource) -> Result<String, CredentialError> {
    let value = match (&src.token_env, &src.token_file) {
        (Some(var), None) => {
            std::env::var(var).map_err(|_| CredentialError::MissingEnv(var.clone()))?
        }
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(|cause| CredentialError::Read {
                path: path.clone(),
                cause,
            })?
        }
        _ => return Err(CredentialError::Source),
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(CredentialError::Invalid);
    }
    Ok(value)
}

/// The `Authorization` value to send upstream, marked sensitive so it never appears in debug output.
pub fn authorization(cred: &Credential) -> Result<HeaderValue, CredentialError> {
    let text = match cred {
        Credential::ZendeskApiToken { email, secret: src } => {
            format!(
                "Basic {}",
                STANDARD.encode(format!("{email}/token:{}", secret(src)?))
            )
        }
        Credential::Bearer { secret: src } => format!("Bearer {}", secret(src)?),
    };
    let mut value = HeaderValue::from_str(&text).map_err(|_| CredentialError::Invalid)?;
    value.set_sensitive(true);
    Ok(value)
}

//! The reloadable part of the gateway: a policy and what deciding and forwarding under it needs
//! (the IdP's keys, the upstream credential, the link origins, the header lists). A reload builds a
//! new one and swaps it in; every request keeps the one it started with.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use vendorgate_policy::Config;

use crate::credential::{authorization, CredentialError};
use crate::identity::{KeySource, KeyStore, KeysError};
use crate::links::{Links, Public};

#[derive(Debug, thiserror::Error)]
pub enum ActiveError {
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("upstream.identity_header {0:?} is not a valid header name")]
    IdentityHeader(String),
    #[error("{0}: {1:?} is not a valid header name")]
    HeaderName(&'static str, String),
}

/// The reloadable part: the policy and what it needs to decide.
pub struct Active {
    pub config: Config,
    pub keys: Arc<KeyStore>,
    /// `Authorization` to send upstream, if a credential is configured.
    pub credential: Option<HeaderValue>,
    pub identity_header: Option<HeaderName>,
    /// `config.version`, shared into every decision record without copying it per request.
    pub version: Arc<str>,
    /// The upstream's origins, found in its responses and rewritten (see [`crate::links`]).
    pub links: Arc<Links>,
    /// `server.public_url`'s origin; `None`: each request's own.
    pub public_origin: Option<Public>,
    /// Request headers never sent upstream, response headers never sent to the agent.
    pub strip_request: Vec<HeaderName>,
    pub strip_response: Vec<HeaderName>,
}

/// Request headers that never reach the upstream, whatever the config says: a session with the
/// SaaS (`Cookie`), acting as another user (`X-On-Behalf-Of`, honoured by Zendesk for OAuth
/// credentials with the impersonate scope), and `Accept-Encoding` (links are rewritten in plain
/// bodies only, so the upstream is asked for no compression).
const STRIP_REQUEST: [&str; 3] = ["cookie", "x-on-behalf-of", "accept-encoding"];
/// Response headers that never reach the agent: a session cookie for the proxy's service account
/// would let the agent use the SaaS directly.
const STRIP_RESPONSE: [&str; 1] = ["set-cookie"];

fn header_names(
    builtin: &[&str],
    configured: &[String],
    key: &'static str,
) -> Result<Vec<HeaderName>, ActiveError> {
    let mut names = Vec::new();
    for name in builtin
        .iter()
        .copied()
        .chain(configured.iter().map(String::as_str))
    {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ActiveError::HeaderName(key, name.to_string()))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

impl Active {
    /// Builds from `config`, keeping `previous`'s key store when the key source is unchanged (so a
    /// policy reload does not forget keys fetched from an IdP that is down right now).
    pub fn build(config: Config, previous: Option<&Active>) -> Result<Active, ActiveError> {
        let source = KeySource::from_config(&config.identity);
        let keys = match previous {
            Some(p)
                if Some(p.keys.source()) == source.as_ref()
                    && p.config.identity.ca_bundle == config.identity.ca_bundle
                    && !matches!(source, Some(KeySource::File(_))) =>
            {
                p.keys.clone()
            }
            _ => {
                let store = KeyStore::new(&config.identity)?;
                store.spawn_refresh();
                store
            }
        };
        let credential = config
            .upstream
            .credential
            .as_ref()
            .map(authorization)
            .transpose()?;
        let identity_header = config
            .upstream
            .identity_header
            .as_ref()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| ActiveError::IdentityHeader(h.clone()))
            })
            .transpose()?;
        let u = &config.upstream;
        let origins: Vec<String> = std::iter::once(&u.url)
            .chain(&u.link_origins)
            .map(|o| o.origin())
            .collect();
        let links = Arc::new(Links::new(origins.iter().map(String::as_str)));
        let public_origin = config
            .server
            .public_url
            .as_ref()
            .map(|p| Public::new(&p.0.origin()));
        let strip_request = header_names(
            &STRIP_REQUEST,
            &u.strip_request_headers,
            "upstream.strip_request_headers",
        )?;
        let strip_response = header_names(
            &STRIP_RESPONSE,
            &u.strip_response_headers,
            "upstream.strip_response_headers",
        )?;
        Ok(Active {
            links,
            public_origin,
            strip_request,
            strip_response,
            version: Arc::from(config.version.as_str()),
            config,
            keys,
            credential,
            identity_header,
        })
    }
}

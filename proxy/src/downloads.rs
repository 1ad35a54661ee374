//! Downloads the upstream redirects to another host (Zendesk's attachments: `content_url` answers
//! 302 to a temporary URL on `*.zdusercontent.com`).
//!
//! The agent must not get that URL: it is a capability anyone holding it can use, outside the
//! proxy, unmetered and unrecorded. So the redirect is rewritten to a path of the proxy's own,
//! `/__vendorgate/download/{grant}`: opaque (128 random bits), short-lived ([`GRANT_TTL`]), and bound
//! to the vendor and account whose request was redirected. Following it is a request like any
//! other (identity, policy, limits, the trail), authorized as the request that was redirected;
//! then the proxy fetches the target itself, without the upstream credential or anything the agent
//! sent, and streams it back through the egress meter. A redirect to a host not in
//! `upstream.redirect_hosts` is refused.
//!
//! Grants live in this replica's memory: behind a load balancer, a download must come back to the
//! replica that granted it (the next request of a client's connection usually does).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;

use crate::errors::ProxyError;
use crate::http_client::{side_client, SideClient};

/// Where grants are followed.
pub const PREFIX: &str = "/__vendorgate/download/";

/// How long a grant can be followed.
pub const GRANT_TTL: Duration = Duration::from_secs(120);

/// Grants held at once; past this, expired ones are dropped, then the oldest.
const MAX_GRANTS: usize = 65_536;

/// A redirect the agent may follow through the proxy.
#[derive(Debug, Clone)]
pub struct Grant {
    pub target: Uri,
    pub vendor: String,
    pub account: String,
    /// The redirected request's normalized path: the download is authorized as a GET of it.
    pub path: String,
    expires: Instant,
}

pub struct Downloads {
    hosts: Vec<String>,
    grants: Mutex<HashMap<String, Grant>>,
    client: SideClient<Empty<Bytes>>,
}

impl Downloads {
    pub fn new(
        hosts: &[String],
        ca_bundle: Option<&std::path::Path>,
    ) -> Result<Self, vendorgate_certs::CertError> {
        Ok(Downloads {
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            grants: Mutex::default(),
            client: side_client(ca_bundle)?,
        })
    }

    /// Whether the proxy may fetch `target` for an agent: HTTPS, on a listed host.
    pub fn allows(&self, target: &Uri) -> bool {
        let Some(host) = target.host() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        target.scheme_str() == Some("https")
            && self
                .hosts
                .iter()
                .any(|pattern| match pattern.strip_prefix("*.") {
                    Some(domain) => host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                    None => *pattern == host,
                })
    }

    /// A grant to follow `target`, for this vendor and account: the token for [`PREFIX`].
    pub fn grant(&self, target: Uri, vendor: &str, account: &str, path: &str) -> String {
        // A failure of the generator leaves the grant unusable rather than guessable.
        let Some(token) = crate::unguessable::hex(16) else {
            return String::new();
        };
        let now = Instant::now();
        let mut grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        if grants.len() >= MAX_GRANTS {
            grants.retain(|_, g| g.expires > now);
            if grants.len() >= MAX_GRANTS {
                if let Some(oldest) = grants
                    .iter()
                    .min_by_key(|(_, g)| g.expires)
                    .map(|(k, _)| k.clone())
                {
                    grants.remove(&oldest);
                }
            }
        }
        grants.insert(
            token.clone(),
            Grant {
                target,
                vendor: vendor.to_string(),
                account: account.to_string(),
                path: path.to_string(),
                expires: now + GRANT_TTL,
            },
        );
        token
    }

    /// The grant behind `token`, if it is live and was made for this vendor and account.
    pub fn find(&self, token: &str, vendor: &str, account: &str) -> Option<Grant> {
        let grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        let grant = grants.get(token)?;
        (grant.expires > Instant::now() && grant.vendor == vendor && grant.account == account)
            .then(|| grant.clone())
    }

    /// Fetches a granted target: a plain GET carrying none of the agent's headers and no
    /// credential, only what a download needs (`Accept`, `Range`).
    pub async fn fetch(
        &self,
        grant: &Grant,
        agent: &HeaderMap,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = grant.target.clone();
        for name in [header::ACCEPT, header::RANGE, header::IF_RANGE] {
            if let Some(v) = agent.get(&name) {
                req.headers_mut().insert(name, v.clone());
            }
        }
        req.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static("vendorgate-download"),
        );
        self.client
            .request(req)
            .await
            .map_err(|e| ProxyError::UpstreamUnreachable(format!("download: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downloads() -> Downloads {
        Downloads::new(
            &["*.zdusercontent.com".into(), "files.example".into()],
            None,
        )
        .unwrap()
    }

    #[test]
    fn only_https_on_listed_hosts() {
        let d = downloads();
        let allows = |u: &str| d.allows(&u.parse().unwrap());
        assert!(allows(
            "https://acme.zdusercontent.com/attachments/x?name=a.pdf"
        ));
        assert!(allows("https://FILES.example/x"));
        assert!(
            !allows("http://acme.zdusercontent.com/x"),
            "not over plain HTTP"
        );
        assert!(
            !allows("https://zdusercontent.com/x"),
            "the wildcard needs a name below"
        );
        assert!(!allows("https://evilzdusercontent.com/x"));
        assert!(!allows("https://acme.zdusercontent.com.evil.example/x"));
        assert!(!allows("https://files.example.evil/x"));
    }

    #[tokio::test]
    async fn a_grant_is_opaque_and_bound_to_its_account() {
        let d = downloads();
        let target: Uri = "https://acme.zdusercontent.com/a".parse().unwrap();
        let token = d.grant(target.clone(), "acme", "agent-1", "/attachments/token/t/");
        assert_eq!(token.len(), 32);
        assert!(!token.contains("zdusercontent"));
        assert_eq!(d.find(&token, "acme", "agent-1").unwrap().target, target);
        assert!(
            d.find(&token, "acme", "agent-2").is_none(),
            "another account"
        );
        assert!(
            d.find(&token, "globex", "agent-1").is_none(),
            "another vendor"
        );
        assert!(d
            .find("00000000000000000000000000000000", "acme", "agent-1")
            .is_none());
        let other = d.grant(target, "acme", "agent-1", "/x");
        assert_ne!(token, other);
    }
}

//! Phase 2, identify: the bearer token, verified (or found in the cache of verified tokens), and
//! the download grant a request to the proxy's download path names. A request without a verified
//! token is refused here, by [`Policy::decide`]'s token step, so the refusal is the decision's.

use std::sync::Arc;

use http::{header, Method, Request};
use hyper::body::Incoming;
use vendorgate_policy::{bearer, Admission, Denial, Facts, Presented, Reason, VerifyError};

use crate::active::Active;
use crate::downloads::{self, Grant};
use crate::errors::ProxyError;
use crate::gateway::Gateway;
use crate::identity::cache::{token_key, Identity};

/// The request's verified identity, or the decision's refusal. `now` is the request's time.
pub async fn identify(
    gw: &'static Gateway,
    active: &Active,
    req: &Request<Incoming>,
    admission: &Admission,
    now: u64,
) -> Result<Arc<Identity>, Denial> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()));
    let verified = match token {
        Some(token) => verify(gw, active, token, token_key(token), now)
            .await
            .map_err(Some),
        None => Err(None),
    };
    verified.map_err(|refused| {
        let facts = Facts {
            method: req.method(),
            admission,
            token: refused
                .as_ref()
                .map_or(Presented::Missing, Presented::Unverified),
            controls: &gw.controls.current(),
        };
        // `decide` refuses it at its token step; should that ever change, it stays refused.
        let refusal = active.config.policy.decide(&facts, now, &mut ()).err();
        refusal.unwrap_or_else(|| Denial::new(Reason::TokenInvalid, "no verified token"))
    })
}

/// A download the upstream redirected this account to (see [`downloads`]): followed only by the
/// account it was granted to, with GET or HEAD. `None`: not a download.
pub fn download(
    gw: &Gateway,
    req: &Request<Incoming>,
    admission: &Admission,
    vendor: &str,
    identity: &Identity,
) -> Result<Option<Grant>, ProxyError> {
    let Some(grant) = admission.path.strip_prefix(downloads::PREFIX) else {
        return Ok(None);
    };
    gw.downloads
        .find(grant, vendor, &identity.token.account)
        .filter(|_| matches!(*req.method(), Method::GET | Method::HEAD))
        .map(Some)
        .ok_or(ProxyError::DownloadUnknown)
}

/// A verified token: from the cache, or checked against the IdP's keys (fetching them again once
/// if the token names a key we do not hold: the IdP may have rotated).
async fn verify(
    gw: &'static Gateway,
    active: &Active,
    token: &str,
    key: u128,
    now: u64,
) -> Result<Arc<Identity>, Denial> {
    if let Some(hit) = gw.tokens.get(key, now, &active.version) {
        return Ok(hit);
    }
    let policy = &active.config.policy;
    let keys = active.keys.current().ok_or_else(|| {
        Denial::new(
            Reason::IdentityKeysUnavailable,
            "no IdP key set has been obtained",
        )
    })?;
    let verified = match policy.verify_token(token, &keys, now) {
        Ok(v) => v,
        Err(VerifyError::UnknownKey { .. }) => {
            // Boxed: rare, and its state would otherwise widen every request's future.
            let refetched = Box::pin(active.keys.refetch_for_unknown_key()).await;
            let keys = active.keys.current().filter(|_| refetched).unwrap_or(keys);
            policy
                .verify_token(token, &keys, now)
                .map_err(VerifyError::denial)?
        }
        Err(refused) => return Err(refused.denial()),
    };
    let verified = Arc::new(Identity::new(
        verified,
        active.version.clone(),
        policy,
        &gw.state.prefix,
        key,
    ));
    gw.tokens.insert(key, verified.clone());
    Ok(verified)
}

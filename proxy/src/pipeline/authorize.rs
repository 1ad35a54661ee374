//! Phase 3, authorize: [`Policy::decide`] on what is now known. A download is decided as the GET
//! of the path the upstream redirected from, so a grant never reaches further than the request
//! that earned it.

use http::{Method, Request};
use hyper::body::Incoming;
use vendorgate_policy::{Admission, Allow, Controls, Denial, Facts, Policy, Presented};

use crate::downloads::Grant;
use crate::identity::cache::Identity;

pub fn authorize(
    policy: &Policy,
    req: &Request<Incoming>,
    admission: &Admission,
    identity: &Identity,
    download: Option<&Grant>,
    controls: &Controls,
    now: u64,
) -> Result<Allow, Denial> {
    let token = Presented::Verified(&identity.standing, &identity.token);
    match download {
        Some(grant) => {
            let redirected = Admission {
                client_ip: admission.client_ip,
                path: grant.path.clone(),
            };
            let facts = Facts {
                method: &Method::GET,
                admission: &redirected,
                token,
                controls,
            };
            policy.decide(&facts, now, &mut ())
        }
        None => {
            let facts = Facts {
                method: req.method(),
                admission,
                token,
                controls,
            };
            policy.decide(&facts, now, &mut ())
        }
    }
}

//! Phase 5, the upstream request: the normalized path that was authorized, the agent's credential
//! swapped for the upstream's, the agent's identity in a header, hop-by-hop and stripped headers
//! out, forwarding headers in; sent with the body streamed through the size limit and the ingress
//! meter. A download grant is fetched from its host instead, with no credential at all.

use std::future::Future;

use http::{header, HeaderName, Request, Response, Uri, Version};
use hyper::body::Incoming;
use vendorgate_policy::config::UnderscoreHeaders;
use vendorgate_policy::{Admission, Denial, Reason};

use super::{Ctx, Refusal};
use crate::body::request::RequestBody;
use crate::downloads::Grant;
use crate::errors::ProxyError;
use crate::headers::{drop_underscored, remove_where, set_forwarded, strip_hop_by_hop};
use crate::identity::cache::Identity;
use crate::metering::Meter;
use crate::state::Counter;
use crate::telemetry::request_id;
use crate::trail::record::Draft;
use crate::upstream::{classify, Lease};

/// The upstream's answer (and the pooled connection it came on, if it is one).
pub type Answer = (Response<Incoming>, Option<Lease>);

/// Sends the request (or fetches the download). The request is taken apart and rebuilt in a
/// block: only the send is held while the upstream answers, not the parts it was made from
/// (every step of a request moves its future whole, hence `async` blocks, not `async fn`s).
#[allow(clippy::manual_async_fn)] // see the doc comment
pub fn send<'a>(
    ctx: &'a Ctx<'a>,
    req: Request<Incoming>,
    admission: &'a Admission,
    identity: &'a Identity,
    download: Option<&'a Grant>,
    ingress: Vec<Counter>,
    draft: &'a mut Draft,
) -> impl Future<Output = Result<Answer, Refusal>> + 'a {
    async move {
        let gw = ctx.gw;
        if let Some(grant) = download {
            draft.forwarded = true;
            let fetch = gw.downloads.fetch(grant, req.headers());
            let fetched = tokio::time::timeout(gw.upstream.response_timeout, fetch)
                .await
                .map_err(|_| ProxyError::UpstreamTimeout)??;
            return Ok((fetched, None));
        }
        let limit = gw.config.server.max_request_body.0;
        let (sending, upload) = {
            let active = ctx.active;
            let (mut parts, body) = req.into_parts();
            let path = gw
                .upstream
                .path_for(&admission.path, parts.uri.path_and_query())
                .map_err(|e| {
                    ProxyError::UpstreamProtocol(format!("cannot build upstream URI: {e}"))
                })?;
            let mut headers = std::mem::take(&mut parts.headers);
            strip_hop_by_hop(&mut headers);
            if gw.config.server.underscore_headers == UnderscoreHeaders::Drop {
                gw.metrics
                    .underscore_headers_dropped(drop_underscored(&mut headers));
            }
            remove_where(&mut headers, |k| active.strip_request.contains(k));
            // The client sets Host (HTTP/1.1) or :authority (HTTP/2) from the URI: the upstream's.
            headers.remove(header::HOST);
            // The agent's token is for us; the upstream gets the proxy's own credential, or none.
            headers.remove(header::AUTHORIZATION);
            if let Some(credential) = &active.credential {
                headers.insert(header::AUTHORIZATION, credential.clone());
            }
            if let Some(name) = &active.identity_header {
                // Whatever the client put there is a claim, not a fact: replace it.
                headers.insert(name.clone(), identity.who.clone());
            }
            set_forwarded(&mut headers, admission.client_ip);
            headers.insert(request_id::HEADER.clone(), ctx.request_id.clone());
            headers.insert(
                HeaderName::from_static("traceparent"),
                draft.trace.traceparent(),
            );

            let (body, upload) =
                RequestBody::new(body, limit, gw.config.server.body_read_timeout.0);
            let mut body = body.counting(draft.bytes_in.clone());
            if upload.is_some() {
                // There is an upload: it may outlast the response.
                body = body.holding(ctx.in_flight.also());
            }
            if !ingress.is_empty() {
                body = body.metered(Meter::new(&gw.state, ingress));
            }
            let mut up_req = Request::new(body);
            *up_req.method_mut() = parts.method;
            *up_req.uri_mut() = Uri::from(path);
            // The pool speaks whichever version the upstream negotiated; HTTP/1.1 here means "either".
            *up_req.version_mut() = Version::HTTP_11;
            *up_req.headers_mut() = headers;
            let sending =
                tokio::time::timeout(gw.upstream.response_timeout, gw.upstream.send(up_req));
            (sending, upload)
        };

        // From here the SaaS may receive the request, whatever the client does next.
        draft.forwarded = true;
        match sending.await.map_err(|_| ProxyError::UpstreamTimeout)? {
            Ok(sent) => Ok(sent),
            Err(e) => Err(match upload {
                Some(flag) if flag.too_large() => {
                    Refusal::Proxy(ProxyError::RequestBodyTooLarge { limit })
                }
                Some(flag) if flag.ingress_cap() => Refusal::Policy(Denial::new(
                    Reason::IngressCapExceeded,
                    "limits.ingress (budget ran out during the upload)",
                )),
                Some(flag) if flag.timed_out() => Refusal::Proxy(ProxyError::RequestBodyTimeout(
                    gw.config.server.body_read_timeout.0,
                )),
                Some(flag) if flag.client_gone() => {
                    // Whatever the upstream made of the broken upload, the client left.
                    draft.client_left = true;
                    Refusal::Proxy(ProxyError::RequestBodyIncomplete(e.to_string()))
                }
                _ => Refusal::Proxy(classify(&e)),
            }),
        }
    }
}

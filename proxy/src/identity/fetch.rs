//! Fetching small JSON documents (JWKS, OIDC discovery) from the IdP over HTTPS.

use std::time::Duration;

use crate::http_client::SideClient;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};

/// A key set is a few KiB; anything near this is not one.
const MAX_DOCUMENT: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

pub type FetchClient = SideClient<Empty<Bytes>>;

/// GETs `url` and returns its body as text; any status but 200 is an error.
pub async fn get_text(client: &FetchClient, url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("{url}: timed out"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let body = tokio::time::timeout(
        TIMEOUT,
        Limited::new(resp.into_body(), MAX_DOCUMENT).collect(),
    )
    .await
    .map_err(|_| format!("{url}: timed out reading the body"))?
    .map_err(|e| format!("{url}: {e}"))?;
    String::from_utf8(body.to_bytes().to_vec()).map_err(|_| format!("{url}: body is not UTF-8"))
}

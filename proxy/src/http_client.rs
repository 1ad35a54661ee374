//! The client for the proxy's side conversations (the IdP's keys, OTLP export): HTTPS trusting a
//! configured CA bundle or the web PKI roots, or plain HTTP, HTTP/1.1, pooled. The upstream has its
//! own, per-thread client in `upstream`.

use std::path::Path;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use vendorgate_certs::{client_config, Alpn, CertError};

pub type SideClient<B> = Client<HttpsConnector<HttpConnector>, B>;

pub fn side_client<B>(ca_bundle: Option<&Path>) -> Result<SideClient<B>, CertError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut tls = client_config(ca_bundle, Alpn::Http11)?;
    // hyper-rustls sets ALPN itself from enable_http1 (and panics if it is preset).
    tls.alpn_protocols.clear();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

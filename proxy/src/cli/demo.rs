//! `vendorgate demo`: the whole thing on one machine with nothing to set up. A mock Zendesk on a free
//! loopback port, fresh dev certificates, the proxy in front on 127.0.0.1, and commands to paste.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use vendorgate::settings::load_config;
use vendorgate::StartError;
use vendorgate_certs::dev::{DevPki, LOCAL_NAMES};
use vendorgate_certs::{server_config, Alpn, ReloadableCert};
use vendorgate_mock::idp::{self, DevIdp, KeyKind};
use vendorgate_mock::{MockOptions, MockUpstream};

pub fn run(port: u16) -> anyhow::Result<()> {
    super::init_logging(vendorgate_policy::config::LogLevel::Warn);
    let dir = tempfile::Builder::new()
        .prefix("vendorgate-demo-")
        .tempdir()
        .context("creating the demo directory")?;
    super::runtime()?.block_on(demo(dir.path(), port))
}

/// The example Zendesk policy's routes, reused verbatim so the demo shows the real classification.
const ZENDESK_ROUTES: &str = include_str!("../../../examples/policies/zendesk.toml");
const ROUTES_MARKER: &str = "# ==== Routes";

const DEMO_EMAIL: &str = "vendorgate-svc@demo.example";
const DEMO_API_TOKEN: &str = "demo-zendesk-api-token";
const DEMO_ISSUER: &str = "https://idp.demo.vendorgate.invalid";

async fn demo(dir: &Path, port: u16) -> anyhow::Result<()> {
    let pki = DevPki::generate(LOCAL_NAMES)?.write_to(&dir.join("certs"))?;

    // The demo is its own IdP: fresh signing keys, their JWKS on disk, a token for one agent.
    let idp = DevIdp::new(DEMO_ISSUER);
    std::fs::write(dir.join("jwks.json"), idp.jwks())?;
    let claims = idp.agent_claims(
        "vendorgate",
        "agent.ana@northwind-bpo",
        "northwind-bpo",
        idp::now(),
        3600,
    );
    let token = idp.mint(KeyKind::Es256, &claims);
    // The upstream credential, which only the proxy holds; the mock Zendesk refuses anything else.
    std::fs::write(dir.join("zendesk-api-token"), DEMO_API_TOKEN)?;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{DEMO_EMAIL}/token:{DEMO_API_TOKEN}"))
    );

    let cert = Arc::new(ReloadableCert::load(&pki.server_cert, &pki.server_key)?);
    let upstream_tls = Arc::new(server_config(cert, Alpn::H2AndHttp11)?);
    let mock = MockUpstream::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(upstream_tls),
        MockOptions {
            require_authorization: Some(expected),
            ..MockOptions::default()
        },
    )
    .await
    .context("starting the mock upstream")?;

    let config_path = dir.join("vendorgate.toml");
    let running = match start_proxy(&config_path, port, mock.addr().port()).await {
        Err(StartupFailure::Start(StartError::Bind {
            what: "server.listen",
            ..
        })) if port != 0 => {
            eprintln!("port {port} is busy; using a free port instead");
            start_proxy(&config_path, 0, mock.addr().port()).await?
        }
        other => other?,
    };
    super::run::announce(&running)?;
    print_guide(
        dir,
        &pki.ca_cert,
        running.proxy_addr,
        running.admin_addr,
        &config_path,
        &token,
    );

    super::run::wait_for_stop(&running, Some(&config_path)).await?;
    running.shutdown();
    running.wait().await;
    mock.stop().await;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum StartupFailure {
    #[error(transparent)]
    Load(#[from] vendorgate::LoadError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("writing the demo config: {0}")]
    Write(#[from] std::io::Error),
}

/// Writes a real config file (so a newcomer can read what the demo runs) and starts from it exactly
/// as `vendorgate run` would.
async fn start_proxy(
    config_path: &Path,
    port: u16,
    mock_port: u16,
) -> Result<vendorgate::Running, StartupFailure> {
    let routes = ZENDESK_ROUTES
        .find(ROUTES_MARKER)
        .map_or("", |at| &ZENDESK_ROUTES[at..]);
    let text = format!(
        r#"# Written by `vendorgate demo`. Routes are those of examples/policies/zendesk.toml.
[server]
listen = "127.0.0.1:{port}"
tls_cert = "certs/server.pem"
tls_key = "certs/server-key.pem"

[admin]
listen = "127.0.0.1:0"

[upstream]
url = "https://localhost:{mock_port}"
ca_bundle = "certs/ca.pem"
credential = {{ type = "zendesk_api_token", email = "{DEMO_EMAIL}", token_file = "zendesk-api-token" }}

[identity]
issuer = "{DEMO_ISSUER}"
audiences = ["vendorgate"]
jwks_file = "jwks.json"
max_auth_age = "12h"

# The demo agent connects from this machine.
[[vendors]]
id = "northwind-bpo"
ip_allow = ["127.0.0.0/8", "::1/128"]
classes = ["read", "write"]

{routes}"#
    );
    std::fs::write(config_path, text)?;
    let config = load_config(config_path)?;
    Ok(vendorgate::start(config).await?)
}

fn print_guide(
    dir: &Path,
    ca: &Path,
    proxy: SocketAddr,
    admin: SocketAddr,
    config: &Path,
    token: &str,
) {
    let base = format!("https://localhost:{}", proxy.port());
    let curl = format!("curl --cacert {} -sS", ca.display());
    let auth = "-H \"Authorization: Bearer $VG_TOKEN\"";
    let show = "-w '\\n→ HTTP %{http_code}\\n'";
    println!(
        r#"
vendorgate demo is running.
  proxy     {base}  (TLS with a dev CA; HTTP/1.1 and HTTP/2)
  upstream  a mock Zendesk on a private loopback port; it only accepts the proxy's API token
  admin     http://{admin}
  config    {config}
  files     {dir} (deleted when the demo stops)

The demo is also the IdP. This token is for agent.ana@northwind-bpo (vendor northwind-bpo, classes
read and write), signed in with MFA, valid for an hour. In another terminal:

  export VG_TOKEN={token}

  # 1. Allowed: read a ticket (-i shows the request id the proxy added):
  {curl} -i {auth} {base}/api/v2/tickets/1.json

  # 2. Refused: an admin call. 403 route_denied, and the upstream never sees it:
  {curl} {show} {auth} -X DELETE {base}/api/v2/users/5.json

  # 3. Refused: a bulk export, a class this vendor does not have. 403 class_not_permitted:
  {curl} {show} {auth} '{base}/api/v2/incremental/tickets/cursor.json?start_time=0'

  # 4. Refused: no token. 401 token_missing, with a WWW-Authenticate challenge:
  {curl} -i {base}/api/v2/tickets/1.json

  # Also allowed: HTTP/2, an update (the body streams to the upstream), a path spelled to sneak
  # past the rules (normalized, then refused as what it really is):
  {curl} --http2 {auth} {base}/api/v2/tickets/2.json -o /dev/null -w '%{{http_version}} %{{http_code}}\n'
  {curl} {auth} -X PUT -H 'content-type: application/json' -d '{{"ticket":{{"status":"pending"}}}}' {base}/api/v2/tickets/1.json
  {curl} {show} {auth} --path-as-is '{base}/api/v2/tickets/%2e%2e/incremental/users/cursor.json?start_time=0'

  # Health, readiness and metrics:
  curl -sS http://{admin}/healthz; curl -sS http://{admin}/readyz; curl -sS http://{admin}/metrics

  # The decision trail: every request above, chained and reviewable:
  {vg} audit query {dir}/decisions.jsonl
  {vg} audit verify {dir}/decisions.jsonl
  {vg} audit summary {dir}/decisions.jsonl

Ctrl-C stops it (in-flight requests are allowed to finish).
"#,
        dir = dir.display(),
        config = config.display(),
        vg = std::env::current_exe()
            .map_or_else(|_| "vendorgate".to_string(), |p| p.display().to_string()),
    );
}

//! `vendorgate demo`: the whole thing on one machine with nothing to set up. A mock Zendesk on a free
//! loopback port, fresh dev certificates, the proxy in front on 127.0.0.1, and commands to paste.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use vendorgate::settings::load_config;
use vendorgate::StartError;
use vendorgate_certs::dev::{DevPki, LOCAL_NAMES};
use vendorgate_certs::{server_config, Alpn, ReloadableCert};
use vendorgate_mock::{MockOptions, MockUpstream};

pub fn run(port: u16) -> anyhow::Result<()> {
    super::init_logging(vendorgate_policy::config::LogLevel::Warn);
    let dir = tempfile::Builder::new()
        .prefix("vendorgate-demo-")
        .tempdir()
        .context("creating the demo directory")?;
    super::runtime()?.block_on(demo(dir.path(), port))
}

async fn demo(dir: &Path, port: u16) -> anyhow::Result<()> {
    let pki = DevPki::generate(LOCAL_NAMES)?.write_to(&dir.join("certs"))?;

    let cert = Arc::new(ReloadableCert::load(&pki.server_cert, &pki.server_key)?);
    let upstream_tls = Arc::new(server_config(cert, Alpn::H2AndHttp11)?);
    let mock = MockUpstream::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(upstream_tls),
        MockOptions::default(),
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
    );

    super::run::wait_for_stop(&running).await?;
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
    let text = format!(
        r#"# Written by `vendorgate demo`.
[server]
listen = "127.0.0.1:{port}"
tls_cert = "certs/server.pem"
tls_key = "certs/server-key.pem"
idle_timeout = "60s"
max_request_body = "50MiB"

[admin]
listen = "127.0.0.1:0"

[upstream]
url = "https://localhost:{mock_port}"
ca_bundle = "certs/ca.pem"
"#
    );
    std::fs::write(config_path, text)?;
    let config = load_config(config_path)?;
    Ok(vendorgate::start(config).await?)
}

fn print_guide(dir: &Path, ca: &Path, proxy: SocketAddr, admin: SocketAddr, config: &Path) {
    let base = format!("https://localhost:{}", proxy.port());
    let curl = format!("curl --cacert {}", ca.display());
    println!(
        r#"
vendorgate demo is running.
  proxy     {base}  (TLS with a dev CA; HTTP/1.1 and HTTP/2)
  upstream  a mock Zendesk on a private loopback port, reached only through the proxy
  admin     http://{admin}
  config    {config}
  files     {dir} (deleted when the demo stops)

Paste these in another terminal:

  # A ticket, with the request id the proxy added (-i shows headers):
  {curl} -i {base}/api/v2/tickets/1.json

  # The same over HTTP/2, then a page of the user list:
  {curl} --http2 -sS {base}/api/v2/tickets/2.json -o /dev/null -w '%{{http_version}} %{{http_code}}\n'
  {curl} -sS '{base}/api/v2/users.json?per_page=2'

  # Update a ticket (the body streams through to the upstream):
  {curl} -sS -X PUT -H 'content-type: application/json' -d '{{"ticket":{{"status":"pending"}}}}' {base}/api/v2/tickets/1.json

  # A cursor-based incremental export, two tickets a page:
  {curl} -sS '{base}/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=2'

  # 1 GiB streamed through the proxy (watch its memory stay flat):
  {curl} -sS -o /dev/null -w '%{{size_download}} bytes in %{{time_total}}s\n' '{base}/__mock/stream?bytes=1073741824'

  # Health and readiness:
  curl -sS http://{admin}/healthz; curl -sS http://{admin}/readyz

Ctrl-C stops it (in-flight requests are allowed to finish).
"#,
        dir = dir.display(),
        config = config.display(),
    );
}

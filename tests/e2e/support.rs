//! Shared test fixtures: dev PKI, the mock upstream, the proxy as a child process, clients.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tempfile::TempDir;
use vendorgate_certs::dev::{DevPki, DevPkiFiles, LOCAL_NAMES};
use vendorgate_certs::{client_config, server_config, Alpn, ReloadableCert};
use vendorgate_mock::idp::{self, DevIdp, KeyKind};
use vendorgate_mock::{MockOptions, MockUpstream};

pub const BIN: &str = env!("CARGO_BIN_EXE_vendorgate");

pub const ISSUER: &str = "https://idp.e2e.test";
pub const AUDIENCE: &str = "vendorgate";

/// A dev CA and server certificate, and a dev IdP whose JWKS is on disk, in a temporary directory.
pub struct Pki {
    pub dir: TempDir,
    pub files: DevPkiFiles,
    pub idp: DevIdp,
    pub jwks: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        Self::with_names(LOCAL_NAMES)
    }

    /// The same, the server certificate valid for `names`.
    pub fn with_names(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = DevPki::generate(names)
            .unwrap()
            .write_to(&dir.path().join("certs"))
            .unwrap();
        let idp = DevIdp::new(ISSUER);
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, idp.jwks()).unwrap();
        Pki {
            dir,
            files,
            idp,
            jwks,
        }
    }

    /// A valid MFA token for `account` of `vendor`, signed with `kind`.
    pub fn token_with(&self, kind: KeyKind, vendor: &str, account: &str) -> String {
        self.idp.mint(
            kind,
            &self
                .idp
                .agent_claims(AUDIENCE, account, vendor, idp::now(), 3600),
        )
    }

    pub fn token(&self) -> String {
        self.token_with(KeyKind::Es256, "acme", "agent-1")
    }

    pub fn server_tls(&self, alpn: Alpn) -> Arc<rustls::ServerConfig> {
        let cert = ReloadableCert::load(&self.files.server_cert, &self.files.server_key).unwrap();
        Arc::new(server_config(Arc::new(cert), alpn).unwrap())
    }

    pub fn client_tls(&self, alpn: Alpn) -> rustls::ClientConfig {
        client_config(Some(&self.files.ca_cert), alpn).unwrap()
    }
}

pub async fn mock(pki: &Pki, alpn: Alpn) -> MockUpstream {
    mock_with(pki, alpn, MockOptions::default()).await
}

pub async fn mock_with(pki: &Pki, alpn: Alpn, options: MockOptions) -> MockUpstream {
    MockUpstream::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(pki.server_tls(alpn)),
        options,
    )
    .await
    .unwrap()
}

/// What goes into the proxy's config besides the certificates.
pub struct ProxyConfig {
    pub upstream_url: String,
    /// Extra `key = value` lines for `[server]`.
    pub server: String,
    /// Extra `key = value` lines for `[upstream]`.
    pub upstream: String,
    /// Trust the dev CA for the upstream (off: the built-in web PKI roots).
    pub trust_dev_ca: bool,
    /// `[network]`, `[identity]`, `[[vendors]]` and `[[routes]]`; `@JWKS@` becomes the JWKS path.
    pub policy: String,
    /// The address the proxy listens on (port chosen by the system).
    pub listen: String,
    /// Environment variables for the proxy's process (`OTEL_*`, say).
    pub env: Vec<(String, String)>,
    /// Extra lines after `[admin]` (e.g. `[[admin.tokens]]` tables).
    pub admin: String,
}

/// A policy that lets vendor `acme` (anywhere on loopback) do anything: for tests about the proxy's
/// plumbing rather than its rules.
/// The test IdP, as every test policy names it (`@JWKS@` is filled in by [`ProxyConfig::render`]).
pub const IDENTITY: &str = r#"
[identity]
issuer = "https://idp.e2e.test"
audiences = ["vendorgate"]
jwks_file = "@JWKS@"
"#;

pub const OPEN_POLICY: &str = r#"
[identity]
issuer = "https://idp.e2e.test"
audiences = ["vendorgate"]
jwks_file = "@JWKS@"

[[vendors]]
id = "acme"
ip_allow = ["127.0.0.0/8", "::1/128"]
classes = ["any"]

[[routes]]
id = "everything"
path = "/**"
class = "any"
"#;

impl ProxyConfig {
    pub fn to(upstream: &MockUpstream) -> Self {
        Self::to_url(format!("https://127.0.0.1:{}", upstream.addr().port()))
    }

    pub fn to_url(url: String) -> Self {
        ProxyConfig {
            upstream_url: url,
            server: String::new(),
            upstream: String::new(),
            trust_dev_ca: true,
            policy: OPEN_POLICY.to_string(),
            admin: String::new(),
            listen: "127.0.0.1".into(),
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for the proxy's process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Listens on `ip` (127.0.0.2, 127.0.0.3…: replicas side by side) instead of 127.0.0.1.
    pub fn listen(mut self, ip: &str) -> Self {
        self.listen = ip.to_string();
        self
    }

    pub fn policy(mut self, policy: &str) -> Self {
        self.policy = policy.to_string();
        self
    }

    pub fn server(mut self, lines: &str) -> Self {
        self.server.push_str(lines);
        self.server.push('\n');
        self
    }

    pub fn admin(mut self, lines: &str) -> Self {
        self.admin.push_str(lines);
        self.admin.push('\n');
        self
    }

    pub fn upstream(mut self, lines: &str) -> Self {
        self.upstream.push_str(lines);
        self.upstream.push('\n');
        self
    }

    pub fn render(&self, pki: &Pki) -> String {
        let ca = if self.trust_dev_ca {
            format!("ca_bundle = {:?}\n", pki.files.ca_cert)
        } else {
            String::new()
        };
        format!(
            "[server]\nlisten = \"{}:0\"\ntls_cert = {:?}\ntls_key = {:?}\n{}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n{}\n\
             [upstream]\nurl = {:?}\n{ca}{}\n\
             [log]\nlevel = \"debug\"\n{}\n",
            self.listen,
            pki.files.server_cert,
            pki.files.server_key,
            self.server,
            self.admin,
            self.upstream_url,
            self.upstream,
            self.policy
                .replace("@JWKS@", &pki.jwks.display().to_string())
        )
    }
}

/// The real binary, started with `vendorgate run`, killed when dropped.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: TempDir,
    /// A valid token for acme/agent-1.
    pub token: String,
}

impl Proxy {
    pub fn start(pki: &Pki, config: ProxyConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("vendorgate.toml");
        std::fs::write(&config_path, config.render(pki)).unwrap();
        let env = config
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect::<String>();
        std::fs::write(dir.path().join("env"), env).unwrap();
        Self::start_in(pki, dir)
    }

    /// The proxy again, in the directory (config, trail, state) of one that has stopped.
    /// Killed, not stopped: what was persisted must survive a crash as well as a restart.
    pub fn restart(mut self, pki: &Pki) -> Self {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        drop(self);
        Self::start_in(pki, dir)
    }

    fn start_in(pki: &Pki, dir: TempDir) -> Self {
        let config_path = dir.path().join("vendorgate.toml");
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let token = pki.token();
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap_or_default();
        let env = env.lines().filter_map(|l| l.split_once('='));
        let mut child = Command::new(BIN)
            .envs(env)
            .args(["run", "--config"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let line = first_line(&mut child, Duration::from_secs(20));
        let Some(line) = line else {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default();
            panic!("proxy did not announce its addresses; log:\n{log}");
        };
        let addr = field(&line, "proxy=");
        let admin = field(&line, "admin=");
        Proxy {
            child,
            addr,
            admin,
            dir,
            token,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("vendorgate.toml")
    }

    /// Waits until `/readyz` says ready (the shared state reached, say), at most 10 s.
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !admin_response(self.admin, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
        {
            assert!(Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// A request carrying the default valid token.
    pub fn request(
        &self,
        method: http::Method,
        path: &str,
        body: TestBody,
    ) -> http::Request<TestBody> {
        http::Request::builder()
            .method(method)
            .uri(self.url(path))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .body(body)
            .unwrap()
    }

    pub fn get(&self, path: &str) -> http::Request<TestBody> {
        self.request(http::Method::GET, path, empty())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Like [`Proxy::wait_exit`], without blocking the test's runtime (its clients must keep
    /// answering, e.g. the HTTP/2 PING of a graceful shutdown).
    pub async fn wait_exit_async(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Peak resident memory of the proxy process so far, in KiB (Linux `VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's first stdout line, giving up after `limit`.
pub fn first_line(child: &mut Child, limit: Duration) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        if reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            let _ = tx.send(line);
        }
        // Keep draining so the child never blocks on a full pipe.
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    rx.recv_timeout(limit).ok()
}

fn field(line: &str, key: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap()
}

pub type TestBody = BoxBody<Bytes, Infallible>;
pub type TestClient = Client<HttpsConnector<HttpConnector>, TestBody>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Http {
    One,
    Two,
}

/// A real HTTPS client trusting the dev CA, speaking only the given version.
pub fn client(pki: &Pki, version: Http) -> TestClient {
    client_from(pki, version, None)
}

/// The same, with its connections bound to a local source address (127.0.0.2, 127.0.0.3, …) so
/// the proxy sees a chosen client IP.
pub fn client_from(pki: &Pki, version: Http, source: Option<&str>) -> TestClient {
    let mut tls = pki.client_tls(Alpn::Http11);
    tls.alpn_protocols.clear();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_local_address(source.map(|s| s.parse().unwrap()));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    match version {
        Http::One => {
            Client::builder(TokioExecutor::new()).build(builder.enable_http1().wrap_connector(http))
        }
        Http::Two => Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(builder.enable_http2().wrap_connector(http)),
    }
}

pub fn empty() -> TestBody {
    Empty::new().boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

pub fn get(url: &str) -> http::Request<TestBody> {
    http::Request::get(url).body(empty()).unwrap()
}

pub fn bearer_get(url: &str, token: &str) -> http::Request<TestBody> {
    http::Request::get(url)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(empty())
        .unwrap()
}

/// Sends a request and reads the whole (small) response body.
pub async fn send(
    client: &TestClient,
    req: http::Request<TestBody>,
) -> (http::response::Parts, Bytes) {
    let resp = client.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, bytes)
}

pub async fn send_json(
    client: &TestClient,
    req: http::Request<TestBody>,
) -> (http::response::Parts, serde_json::Value) {
    let (parts, bytes) = send(client, req).await;
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (parts, json)
}

/// A raw TLS connection to the proxy, for tests that misbehave on purpose.
pub async fn raw_tls(
    pki: &Pki,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki.client_tls(Alpn::Http11)));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// A free loopback port with nothing listening on it (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// A real `redis-server` on a free loopback port, without persistence, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// Keeps its data across a kill and restart (append-only file, synced on every write).
    durable: bool,
    /// More arguments for redis-server (a cluster node's).
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// One that keeps its data across [`RedisServer::stop`] and [`RedisServer::restart`], as a
    /// production Redis with persistence does.
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = RedisServer {
            child: None,
            port: closed_port(),
            dir,
            durable,
            extra: Vec::new(),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One that also listens with TLS on `tls_port` (the dev PKI's server certificate) and knows
    /// one ACL user: `user` with `password`, allowed everything; the default user is off, so
    /// nothing is answered without logging in.
    pub fn start_secured(pki: &Pki, user: &str, password: &str) -> (Self, u16) {
        let tls_port = closed_port();
        let mut server = RedisServer {
            child: None,
            port: closed_port(),
            dir: tempfile::tempdir().unwrap(),
            durable: false,
            extra: Vec::new(),
        };
        let path = |p: &std::path::Path| p.display().to_string();
        server.extra = [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &path(&pki.files.server_cert),
            "--tls-key-file",
            &path(&pki.files.server_key),
            "--tls-ca-cert-file",
            &path(&pki.files.ca_cert),
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            user,
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
        ]
        .map(String::from)
        .to_vec();
        server.restart();
        (server, tls_port)
    }

    /// Starts (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if self.durable { "yes" } else { "no" },
                "--appendfsync",
                "always",
            ])
            .args(&self.extra)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not come up on port {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process where it stands (SIGSTOP): connections stay open and nothing answers,
    /// as in a network partition or a long pause. [`RedisServer::resume`] lets it go on.
    pub fn pause(&self) {
        self.send_signal("STOP");
    }

    pub fn resume(&self) {
        self.send_signal("CONT");
    }

    fn send_signal(&self, name: &str) {
        let child = self.child.as_ref().expect("redis-server is not running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Commands Redis has run so far (`INFO commandstats`), by name: `evalsha`, `ping`…
    pub fn calls(&self, command: &str) -> u64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"INFO commandstats\r\n").unwrap();
        // A bulk string: `$<len>\r\n<text>\r\n`.
        let mut text = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).unwrap();
            text.extend_from_slice(&buf[..n]);
            let t = String::from_utf8_lossy(&text);
            if let Some((len, rest)) = t.strip_prefix('$').and_then(|t| t.split_once("\r\n")) {
                if rest.len() >= len.parse::<usize>().unwrap() {
                    break;
                }
            }
            assert!(n > 0, "redis closed the connection");
        }
        let t = String::from_utf8_lossy(&text);
        let prefix = format!("cmdstat_{command}:calls=");
        t.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        // Any answer means it is up (`-NOAUTH` from one that wants a login first).
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || buf.starts_with(b"-NOAUTH"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real Redis Cluster of three masters on loopback (each its own redis-server, cluster bus on
/// a port of its own, optionally a replica each), slots assigned by `redis-cli --cluster
/// create`; killed when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three masters.
    pub fn start() -> Self {
        Self::start_nodes(3, 0)
    }

    /// Three masters, each with a replica, and a one-second node timeout: a master that stops
    /// answering is failed over to its replica within a few seconds.
    pub fn start_with_replicas() -> Self {
        Self::start_nodes(6, 1)
    }

    fn start_nodes(count: usize, replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                let mut server = RedisServer {
                    child: None,
                    port: closed_port(),
                    dir,
                    durable: false,
                    extra: Vec::new(),
                };
                let bus = closed_port().to_string();
                let conf = server.dir.path().join("nodes.conf");
                server.extra = vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-port".into(),
                    bus,
                    "--cluster-config-file".into(),
                    conf.display().to_string(),
                    "--cluster-node-timeout".into(),
                    "1000".into(),
                ];
                server.restart();
                server
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (it comes with redis-server)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            let ok = cluster
                .nodes
                .iter()
                .all(|n| redis_cli(n.port, &["cluster", "info"]).contains("cluster_state:ok"));
            // Every replica attached to its master (a failover needs one in sync).
            let attached = cluster.nodes.iter().all(|n| {
                let role = redis_cli(n.port, &["role"]);
                !role.starts_with("slave") || role.contains("connected")
            });
            if ok && attached {
                return cluster;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the cluster never reached cluster_state:ok");
    }

    /// The port of the live master serving `slot`, as the running nodes see it (`None` while
    /// they do not agree on one, during a failover).
    pub fn master_of(&self, slot: u16) -> Option<u16> {
        let mut seen = None;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let nodes = redis_cli(node.port, &["cluster", "nodes"]);
            let owner = nodes.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let holds = fields.iter().skip(8).any(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
                });
                holds.then(|| {
                    let addr = fields[1].split('@').next().unwrap();
                    addr.rsplit(':').next().unwrap().parse::<u16>().unwrap()
                })
            })?;
            if seen.is_some_and(|p| p != owner) {
                return None;
            }
            seen = Some(owner);
        }
        seen
    }

    /// The slot a hash tag (or key) falls in.
    pub fn slot(&self, key: &str) -> u16 {
        redis_cli(self.nodes[0].port, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap()
    }

    /// The node listening on `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    /// The TOML list of its nodes, for `state.redis_cluster`.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"redis://127.0.0.1:{}\"", n.port))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// Commands run so far, over every node.
    pub fn calls(&self, command: &str) -> u64 {
        self.nodes.iter().map(|n| n.calls(command)).sum()
    }
}

/// Redis behind Sentinel on loopback: a master, a replica of it, and three sentinels watching
/// them (quorum two, the master judged down after a second), each process killed when dropped.
pub struct RedisSentinel {
    pub master: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<(Child, u16)>,
    _dir: TempDir,
}

pub const SENTINEL_MASTER: &str = "vg-master";

impl RedisSentinel {
    pub fn start() -> Self {
        let master = RedisServer::start();
        let mut replica = RedisServer {
            child: None,
            port: closed_port(),
            dir: tempfile::tempdir().unwrap(),
            durable: false,
            extra: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ],
        };
        replica.restart();
        let dir = tempfile::tempdir().unwrap();
        let sentinels = (0..3)
            .map(|i| {
                let port = closed_port();
                let conf = dir.path().join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 3000\n\
                         sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                        dir.path().display(),
                        master.port
                    ),
                )
                .unwrap();
                let child = Command::new("redis-server")
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                (child, port)
            })
            .collect();
        let sentinel = RedisSentinel {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        // Up when the replica has caught up and every sentinel knows the master and its replica.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            let synced = redis_cli(sentinel.replica.port, &["info", "replication"])
                .contains("master_link_status:up");
            let known = sentinel.sentinels.iter().all(|(_, port)| {
                redis_cli(*port, &["sentinel", "replicas", SENTINEL_MASTER])
                    .contains(&sentinel.replica.port.to_string())
            });
            if synced && known {
                return sentinel;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sentinels never saw the master and its replica");
    }

    /// The TOML list of the sentinels, for `state.redis_sentinels`.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self
            .sentinels
            .iter()
            .map(|(_, port)| format!("\"redis://127.0.0.1:{port}\""))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> u16 {
        let out = redis_cli(
            self.sentinels[0].1,
            &["sentinel", "get-master-addr-by-name", SENTINEL_MASTER],
        );
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for (child, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `redis-cli -p port args…`, its output (empty when it fails).
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A GET to the admin listener over plain HTTP/1.1; the raw response, status line and all.
pub async fn admin_response(admin: impl tokio::net::ToSocketAddrs, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

/// The body of an admin endpoint.
pub async fn admin_text(admin: std::net::SocketAddr, path: &str) -> String {
    let out = admin_response(admin, path).await;
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

/// A series' value in the proxy's `/metrics` (Prometheus text), e.g. `vendorgate_trail_writable`
/// or `vendorgate_requests_total{decision="allow",reason="allowed",vendor="acme"}`.
pub async fn metric(proxy: &Proxy, series: &str) -> f64 {
    let text = admin_text(proxy.admin, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The decision records in `decisions.jsonl` under `dir`.
pub fn records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("decisions.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// SIGTERM, and the proxy exits cleanly within ten seconds (having written out its trail).
pub async fn stop(proxy: &mut Proxy) {
    proxy.signal("TERM");
    let status = proxy.wait_exit_async(Duration::from_secs(10)).await;
    assert!(
        status.expect("proxy did not exit").success(),
        "{}",
        proxy.log()
    );
}

/// A record's field by dotted path (`vendorgate.reason`), `Null` when absent.
pub fn at(v: &serde_json::Value, path: &str) -> serde_json::Value {
    path.split('.').fold(v.clone(), |v, k| {
        v.get(k).cloned().unwrap_or(serde_json::Value::Null)
    })
}

/// `vendorgate audit verify` on the trail under `dir`: its stdout, asserting it found it intact.
pub fn audit_intact(dir: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(dir.join("decisions.jsonl"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.starts_with("intact"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The groups the record-scoping tests scope their vendor to (`group_id = [360004, 360005]`).
pub const IN_SCOPE: [u64; 2] = [360004, 360005];

/// Whether the mock's ticket `id` is in a group of [`IN_SCOPE`] (its own data, as it serves it).
pub fn in_scope(id: u64) -> bool {
    let group = vendorgate_mock::ticket("", id)["group_id"]
        .as_u64()
        .unwrap();
    IN_SCOPE.contains(&group)
}

/// The upstream with a files host for its attachments (a second mock standing in for
/// `*.zdusercontent.com`), and the proxy allowed to follow redirects there, with `policy_extra`
/// after the open policy. The upstream keeps every request id.
pub struct WithFiles {
    pub files: MockUpstream,
    pub upstream: MockUpstream,
    pub proxy: Proxy,
}

impl WithFiles {
    pub async fn start(pki: &Pki, policy_extra: &str) -> Self {
        let files = mock(pki, Alpn::H2AndHttp11).await;
        let upstream = mock_with(
            pki,
            Alpn::H2AndHttp11,
            MockOptions {
                keep_request_ids: true,
                files_origin: Some(format!("https://127.0.0.1:{}", files.addr().port())),
                ..MockOptions::default()
            },
        )
        .await;
        let proxy = Proxy::start(
            pki,
            ProxyConfig::to(&upstream)
                .upstream("redirect_hosts = [\"127.0.0.1\"]")
                .policy(&format!("{OPEN_POLICY}{policy_extra}")),
        );
        WithFiles {
            files,
            upstream,
            proxy,
        }
    }
}

/// An `[[admin.tokens]]` entry naming `token` (by its SHA-256, as the config holds it).
pub fn admin_token(name: &str, role: &str, token: &str) -> String {
    let hash = vendorgate::trail::chain::sha256_hex(token.as_bytes());
    format!("[[admin.tokens]]\nname = {name:?}\nrole = {role:?}\nsha256 = {hash:?}\n")
}

/// `vendorgate admin …` against `proxy` with `token`, as an operator would run it, off the test's
/// runtime (the mock runs on it).
pub async fn admin_cli(proxy: &Proxy, token: &str, args: &[&str]) -> std::process::Output {
    let name = &vendorgate::trail::chain::sha256_hex(token.as_bytes())[..12];
    let file = proxy.dir.path().join(format!("admin-token-{name}"));
    std::fs::write(&file, token).unwrap();
    let url = format!("http://{}", proxy.admin);
    let mut cmd = Command::new(BIN);
    cmd.args(["admin", "--url", &url, "--token-file"])
        .arg(&file)
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

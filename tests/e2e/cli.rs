//! The commands a platform team types: `check`, `certs dev`, and the README's `demo`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn vendorgate(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn check_points_at_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"a.pem\"\ntls_key = \"b.pem\"\nidle_timeout = \"5 minutes\"\n\n[upstream]\nurl = \"https://acme.zendesk.com\"\n",
    )
    .unwrap();
    let out = vendorgate(&["check", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:5:16:", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("unknown unit \"minutes\""), "{stderr}");

    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:8443\"\ntls_crt = \"a.pem\"\n",
    )
    .unwrap();
    let out = vendorgate(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(":3:1:") && stderr.contains("unknown field `tls_crt`"),
        "{stderr}"
    );
}

#[test]
fn certs_dev_then_check_a_config_that_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = vendorgate(&["certs", "dev", "--out", certs.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.path().join("vendorgate.toml");
    let idp = vendorgate_mock::idp::DevIdp::new("https://idp.e2e.test");
    std::fs::write(dir.path().join("jwks.json"), idp.jwks()).unwrap();
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"certs/server.pem\"\ntls_key = \"certs/server-key.pem\"\n\n[upstream]\nurl = \"https://acme.zendesk.com\"\n{}",
            OPEN_POLICY.replace("@JWKS@", "jwks.json")
        ),
    )
    .unwrap();
    let out = vendorgate(&["check", "--config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": OK"), "{stdout}");
    assert!(
        stdout.contains("upstream   https://acme.zendesk.com"),
        "{stdout}"
    );

    // The key of the CA given as the server key: named, not a generic failure.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("server-key.pem", "ca-key.pem");
    std::fs::write(&path, text).unwrap();
    let out = vendorgate(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ca-key.pem") && stderr.contains("does not belong"),
        "{stderr}"
    );
}

#[test]
fn the_example_zendesk_policy_is_valid_and_needs_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo_path("examples/policies/zendesk.toml")).unwrap();
    let certs = dir.path().join("certs");
    assert!(
        vendorgate(&["certs", "dev", "--out", certs.to_str().unwrap()])
            .status
            .success()
    );
    let path = dir.path().join("zendesk.toml");
    std::fs::write(&path, example).unwrap();

    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .env("ZENDESK_API_TOKEN", "test-token")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("vendor     northwind-bpo") && stdout.contains("vendor     contoso-cx"),
        "{stdout}"
    );
    assert!(
        stdout.contains("credential Zendesk API token as vendorgate-svc@acme.example"),
        "{stdout}"
    );

    // Without the secret in the environment, check says which variable is missing.
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .env_remove("ZENDESK_API_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ZENDESK_API_TOKEN is not set"), "{stderr}");
}

#[tokio::test]
async fn the_demo_serves_tickets_through_the_proxy() {
    let mut child = Command::new(BIN)
        .args(["demo", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut proxy = None;
    let mut ca = None;
    let mut token = None;
    while ca.is_none() || token.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("demo printed no guide");
        if let Some(addr) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("proxy="))
        {
            proxy = Some(addr.parse::<std::net::SocketAddr>().unwrap());
        }
        if let Some(path) = line
            .split_whitespace()
            .skip_while(|w| *w != "--cacert")
            .nth(1)
        {
            ca = Some(path.to_string());
        }
        if let Some(t) = line.trim().strip_prefix("export VG_TOKEN=") {
            token = Some(t.to_string());
        }
    }
    let (proxy, ca, token) = (proxy.unwrap(), ca.unwrap(), token.unwrap());

    let mut tls = vendorgate_certs::client_config(
        Some(std::path::Path::new(&ca)),
        vendorgate_certs::Alpn::Http11,
    )
    .unwrap();
    tls.alpn_protocols.clear();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let base = format!("https://localhost:{}", proxy.port());
    // The guide's four examples, with the outcomes it promises.
    let (parts, body) = send_json(
        &client,
        bearer_get(&format!("{base}/api/v2/tickets/1.json"), &token),
    )
    .await;
    assert_eq!(parts.status, 200, "{body}");
    assert_eq!(body["ticket"]["id"], 1);
    let delete = http::Request::delete(format!("{base}/api/v2/users/5.json"))
        .header("authorization", format!("Bearer {token}"))
        .body(empty())
        .unwrap();
    let (parts, body) = send_json(&client, delete).await;
    assert_eq!(
        (parts.status.as_u16(), body["error"].as_str()),
        (403, Some("route_denied"))
    );
    let export = format!("{base}/api/v2/incremental/tickets/cursor.json?start_time=0");
    let (parts, body) = send_json(&client, bearer_get(&export, &token)).await;
    assert_eq!(
        (parts.status.as_u16(), body["error"].as_str()),
        (403, Some("class_not_permitted"))
    );
    let (parts, body) = send_json(&client, get(&format!("{base}/api/v2/tickets/1.json"))).await;
    assert_eq!(
        (parts.status.as_u16(), body["error"].as_str()),
        (401, Some("token_missing"))
    );

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// A config's problems, all of them, from one run of `check`: `(stderr lines, success)`.
fn check_lines(path: &std::path::Path, extra: &[&str]) -> (Vec<String>, bool) {
    let mut args = vec!["check", "--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = Command::new(BIN)
        .args(&args)
        .env_remove("ZENDESK_API_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        stderr.lines().map(str::to_string).collect(),
        out.status.success(),
    )
}

#[test]
fn check_reports_every_problem_in_one_run_and_says_which_are_for_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vendorgate.toml");
    let policy = OPEN_POLICY.replace("@JWKS@", "jwks.json");
    // Three mistakes in the file itself, far apart.
    let broken = format!(
        "[server]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nidle_timeout = \"0s\"\n\n\
         [upstream]\nurl = \"https://acme.zendesk.com\"\n{policy}\n\
         [[limits.rate]]\nid = \"r\"\nper = \"account\"\nclasses = [\"exports\"]\nrequests = 5\nperiod = \"1m\"\n\n\
         [state]\nbackend = \"redis\"\n"
    );
    std::fs::write(&path, &broken).unwrap();
    let (lines, ok) = check_lines(&path, &[]);
    assert!(!ok);
    let errors: Vec<_> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 3, "{lines:#?}");
    assert!(errors[0].contains("server.idle_timeout must be greater than 0s"));
    assert!(errors[1].contains("class \"exports\" is not used by any route"));
    assert!(errors[2].contains("needs state.redis_url"));
    let located = format!("{}:", path.display());
    assert!(errors.iter().all(|e| e.contains(&located)), "{errors:#?}");
    assert!(
        lines.last().unwrap().contains("3 problems in the file"),
        "{lines:#?}"
    );

    // A valid file whose certificate, key, JWKS file and secret are all missing: four lines,
    // the secret marked as a run-time matter, each cause said once.
    let valid = format!(
        "[server]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\n\
         [upstream]\nurl = \"https://acme.zendesk.com\"\n\
         credential = {{ type = \"bearer\", token_env = \"VG_TEST_UNSET_TOKEN\" }}\n{policy}"
    );
    std::fs::write(&path, &valid).unwrap();
    let (lines, ok) = check_lines(&path, &[]);
    assert!(!ok);
    let with = |prefix: &str, words: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(prefix) && l.contains(words))
            .count()
    };
    assert_eq!(with("error: ", "server.tls_cert"), 1, "{lines:#?}");
    assert_eq!(with("error: ", "server.tls_key"), 1, "{lines:#?}");
    assert_eq!(with("error: ", "identity.jwks_file"), 1, "{lines:#?}");
    assert_eq!(
        with("run time: ", "VG_TEST_UNSET_TOKEN is not set"),
        1,
        "{lines:#?}"
    );
    for line in &lines {
        assert_eq!(
            line.matches("os error 2").count(),
            usize::from(line.contains("os error")),
            "said twice: {line}"
        );
    }
    assert!(lines
        .last()
        .unwrap()
        .contains("3 error(s), 1 run-time problem(s)"));

    // The same file linted alone: valid.
    let (lines, ok) = check_lines(&path, &["--policy-only"]);
    assert!(ok, "{lines:#?}");
}

/// Every config the project ships (examples/, and those of the Kubernetes and compose recipes)
/// passes `check --policy-only` as it is, and the full `check` once the files and secrets it
/// names exist.
#[test]
fn every_shipped_config_checks() {
    let mut configs = vec![];
    for dir in ["examples/policies", "deploy/kubernetes", "deploy/compose"] {
        for entry in std::fs::read_dir(repo_path(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                configs.push((
                    path.display().to_string(),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }
    assert!(configs.len() >= 3);
    for (name, text) in configs {
        let dir = tempfile::tempdir().unwrap();
        // Absolute paths (a container's) are moved under the temporary directory.
        let mut text = text;
        for root in ["/etc/", "/run/", "/var/"] {
            let moved = format!("\"{}{root}", dir.path().display());
            text = text.replace(&format!("\"{root}"), &moved);
        }
        let path = dir.path().join("vendorgate.toml");
        std::fs::write(&path, &text).unwrap();
        let (lines, ok) = check_lines(&path, &["--policy-only"]);
        assert!(ok, "{name}: {lines:#?}");

        // Stub what it names: the dev PKI for every certificate, key and CA, a dev JWKS.
        let config = vendorgate_policy::Config::from_toml(&text, &name).unwrap();
        let pki = vendorgate_certs::dev::DevPki::generate(vendorgate_certs::dev::LOCAL_NAMES)
            .unwrap()
            .write_to(&dir.path().join("pki"))
            .unwrap();
        let at = |p: &std::path::Path| dir.path().join(p);
        let copy = |from: &std::path::Path, to: &std::path::Path| {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(from, to).unwrap();
        };
        copy(&pki.server_cert, &at(&config.server.tls_cert));
        copy(&pki.server_key, &at(&config.server.tls_key));
        for ca in [&config.upstream.ca_bundle, &config.identity.ca_bundle]
            .into_iter()
            .flatten()
        {
            copy(&pki.ca_cert, &at(ca));
        }
        if let Some(jwks) = &config.identity.jwks_file {
            let idp = vendorgate_mock::idp::DevIdp::new("https://idp.e2e.test");
            std::fs::write(at(jwks), idp.jwks()).unwrap();
        }
        // Secrets mounted as files (compose's): stubs.
        let upstream_token = config.upstream.credential.as_ref().and_then(|c| match c {
            vendorgate_policy::config::Credential::ZendeskApiToken { secret, .. }
            | vendorgate_policy::config::Credential::Bearer { secret } => secret.token_file.clone(),
        });
        for secret in [upstream_token, config.state.redis_password_file.clone()]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(at(&secret).parent().unwrap()).unwrap();
            std::fs::write(at(&secret), "stub-secret").unwrap();
        }
        let out = Command::new(BIN)
            .args(["check", "--config", path.to_str().unwrap()])
            .env("ZENDESK_API_TOKEN", "stub-token")
            .env("REDIS_PASSWORD", "stub-password")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `vendorgate health`, a container's health check (no curl in the image): 0 when the admin
/// listener answers 200, not when it is down, and `--ready` asks `/readyz` (here: not ready, the
/// shared state never reached).
#[tokio::test]
async fn health_says_whether_the_proxy_is_alive_and_ready() {
    let pki = Pki::new();
    let upstream = mock(&pki, vendorgate_certs::Alpn::H2AndHttp11).await;
    let unreachable_redis = format!(
        "{OPEN_POLICY}\n[state]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{}/0\"\n",
        closed_port()
    );
    let proxy = Proxy::start(&pki, ProxyConfig::to(&upstream).policy(&unreachable_redis));
    let url = format!("http://{}", proxy.admin);
    let run = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            vendorgate(&args)
        })
    };
    let alive = run(vec!["health".into(), "--url".into(), url.clone()])
        .await
        .unwrap();
    assert!(
        alive.status.success(),
        "{}",
        String::from_utf8_lossy(&alive.stderr)
    );
    let ready = run(vec!["health".into(), "--ready".into(), "--url".into(), url])
        .await
        .unwrap();
    assert!(!ready.status.success());
    assert!(String::from_utf8_lossy(&ready.stderr).contains("503"));
    let down = format!("http://127.0.0.1:{}", closed_port());
    let dead = run(vec!["health".into(), "--url".into(), down])
        .await
        .unwrap();
    assert!(!dead.status.success());
}

//! The real clients agents use, unchanged but for base URL and token: zenpy (Python) and
//! node-zendesk (Node.js) walk paginated tickets, a long conversation's comments, search results
//! and an incremental export, and download an attachment, through the proxy. `.ci/run` installs both, pinned
//! (`tests/clients/`).

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// The proxy's name for zenpy, which builds `https://{subdomain}.{domain}`.
const GATEWAY_NAME: &str = "zendesk-gw.localhost";

fn clients_dir() -> std::path::PathBuf {
    repo_path("tests/clients")
}

fn installed(what: &str) -> std::path::PathBuf {
    let path = clients_dir().join(what);
    assert!(
        path.exists(),
        "{} is missing: run .ci/run, which installs the client libraries the tests use",
        path.display()
    );
    path
}

/// Runs a client script against the proxy (off the test's runtime: the mock answers on it) and
/// returns what it printed.
async fn walk(mut command: Command) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Every request the upstream saw was recorded as allowed (and so authorized and metered), and
/// none carried the agent's token.
fn all_through_the_proxy(
    upstream: &vendorgate_mock::MockUpstream,
    proxy: &Proxy,
    records: &[serde_json::Value],
) {
    let ids = upstream.request_ids();
    // 12 pages of tickets, 3 of comments, 3 of search results, and the export's pages.
    assert!(ids.len() >= 19, "{} requests", ids.len());
    for id in &ids {
        let found: Vec<_> = records
            .iter()
            .filter(|r| at(r, "http.request.id") == id.as_str())
            .collect();
        assert_eq!(found.len(), 1, "request {id}");
        assert_eq!(at(found[0], "vendorgate.decision"), "allow");
    }
    for seen in upstream.recent() {
        for (name, value) in &seen.headers {
            assert!(
                !value.contains(&proxy.token),
                "the agent's token reached the SaaS in {name}"
            );
        }
    }
}

const METERED: &str = "\n[[limits.egress]]\nid = \"agent-hourly\"\nper = \"account\"\nmax = \"1GiB\"\nwindow = \"1h\"\n";

/// Runs a client's walk against a fresh setup and checks what it read and what the SaaS saw.
async fn client_walk(
    pki: &Pki,
    command: impl FnOnce(&Proxy) -> Command,
    expected: serde_json::Value,
) {
    let WithFiles {
        files,
        upstream,
        mut proxy,
    } = WithFiles::start(pki, METERED).await;
    let read = walk(command(&proxy)).await;
    assert_eq!(read, expected);
    assert_eq!(
        files.request_count(),
        1,
        "the attachment, fetched by the proxy"
    );
    stop(&mut proxy).await;
    all_through_the_proxy(&upstream, &proxy, &records(proxy.dir.path()));
}

#[tokio::test]
async fn zenpy_walks_every_page_through_the_proxy() {
    let pki = Pki::with_names(&["localhost", "127.0.0.1", GATEWAY_NAME]);
    installed(".pydeps/zenpy");
    let command = |proxy: &Proxy| {
        let mut command = Command::new("python3");
        command
            .arg(clients_dir().join("zenpy_walk.py"))
            .env("VG_PORT", proxy.addr.port().to_string())
            .env("VG_TOKEN", &proxy.token)
            .env("REQUESTS_CA_BUNDLE", &pki.files.ca_cert);
        command
    };
    let expected = serde_json::json!({"tickets": 1186, "comments": 250, "search": 250,
                                      "incremental": 1000, "attachment_bytes": 300_000});
    client_walk(&pki, command, expected).await;
}

#[tokio::test]
async fn node_zendesk_walks_every_page_through_the_proxy() {
    let pki = Pki::new();
    installed("node_modules/node-zendesk");
    let command = |proxy: &Proxy| {
        let mut command = Command::new("node");
        command
            .arg(clients_dir().join("node_walk.js"))
            .current_dir(clients_dir())
            .env("VG_PORT", proxy.addr.port().to_string())
            .env("VG_TOKEN", &proxy.token)
            .env("NODE_EXTRA_CA_CERTS", Path::new(&pki.files.ca_cert));
        command
    };
    // node-zendesk reads one page of an incremental export.
    let expected = serde_json::json!({"tickets": 1186, "comments": 250, "search": 250,
                                      "incremental": 100, "attachment_bytes": 300_000});
    client_walk(&pki, command, expected).await;
}

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

/// Runs a client's walk against a fresh setup (the open policy and `policy_extra`) and checks what
/// it read and what the SaaS saw; returns the decision records.
async fn client_walk(
    pki: &Pki,
    policy_extra: &str,
    command: impl FnOnce(&Proxy) -> Command,
    expected: serde_json::Value,
) -> Vec<serde_json::Value> {
    let WithFiles {
        files,
        upstream,
        mut proxy,
    } = WithFiles::start(pki, policy_extra).await;
    let read = walk(command(&proxy)).await;
    assert_eq!(read, expected);
    assert_eq!(
        files.request_count(),
        1,
        "the attachment, fetched by the proxy"
    );
    stop(&mut proxy).await;
    let records = records(proxy.dir.path());
    all_through_the_proxy(&upstream, &proxy, &records);
    records
}

fn zenpy(pki: &Pki, proxy: &Proxy) -> Command {
    installed(".pydeps/zenpy");
    let mut command = Command::new("python3");
    command
        .arg(clients_dir().join("zenpy_walk.py"))
        .env("VG_PORT", proxy.addr.port().to_string())
        .env("VG_TOKEN", &proxy.token)
        .env("REQUESTS_CA_BUNDLE", &pki.files.ca_cert);
    command
}

fn node_zendesk(pki: &Pki, proxy: &Proxy) -> Command {
    installed("node_modules/node-zendesk");
    let mut command = Command::new("node");
    command
        .arg(clients_dir().join("node_walk.js"))
        .current_dir(clients_dir())
        .env("VG_PORT", proxy.addr.port().to_string())
        .env("VG_TOKEN", &proxy.token)
        .env("NODE_EXTRA_CA_CERTS", Path::new(&pki.files.ca_cert));
    command
}

#[tokio::test]
async fn zenpy_walks_every_page_through_the_proxy() {
    let pki = Pki::with_names(&["localhost", "127.0.0.1", GATEWAY_NAME]);
    let expected = serde_json::json!({"tickets": 1186, "comments": 250, "search": 250,
                                      "incremental": 1000, "attachment_bytes": 300_000});
    client_walk(&pki, METERED, |p| zenpy(&pki, p), expected).await;
}

#[tokio::test]
async fn node_zendesk_walks_every_page_through_the_proxy() {
    let pki = Pki::new();
    // node-zendesk reads one page of an incremental export.
    let expected = serde_json::json!({"tickets": 1186, "comments": 250, "search": 250,
                                      "incremental": 100, "attachment_bytes": 300_000});
    client_walk(&pki, METERED, |p| node_zendesk(&pki, p), expected).await;
}

/// The vendor's redactions (`[[vendors.redact]]`): the tickets' free text replaced, their
/// `recipient` removed, key and all.
const REDACTING: &str = "\n[[vendors.redact]]\nfields = [\"**.description\"]\n\n\
    [[vendors.redact]]\nfields = [\"tickets[].recipient\", \"results[].recipient\"]\nmode = \"remove\"\n";

/// The records of the walk's pages of tickets (there is at least one).
fn ticket_pages(records: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    let pages: Vec<_> = records
        .iter()
        .filter(|r| {
            at(r, "url.path") == "/api/v2/tickets.json" || at(r, "url.path") == "/api/v2/tickets"
        })
        .collect();
    assert!(!pages.is_empty());
    pages
}

/// Redaction seen by the real clients: every page of every walk still arrives and parses (the
/// counts are those of the unredacted walks), and of the fields taken out the clients saw only
/// the placeholder, or nothing. Each record names the fields and how many values went.
async fn redacted_walk(pki: &Pki, command: impl FnOnce(&Proxy) -> Command, incremental: u64) {
    let expected = serde_json::json!({"tickets": 1186, "comments": 250, "search": 250,
                                      "incremental": incremental, "attachment_bytes": 300_000,
                                      "fields": {"description": ["[redacted]"], "recipient": [null]}});
    let command = |proxy: &Proxy| {
        let mut command = command(proxy);
        command.env("VG_FIELDS", "description,recipient");
        command
    };
    let records = client_walk(pki, REDACTING, command, expected).await;
    let pages = ticket_pages(&records);
    for page in pages {
        let redacted = at(page, "vendorgate.redacted");
        let taken = redacted["**.description"].as_u64().unwrap();
        assert_eq!(
            redacted["tickets[].recipient"].as_u64(),
            Some(taken),
            "{page}"
        );
        assert!((1..=100).contains(&taken), "{page}");
    }
}

#[tokio::test]
async fn zenpy_never_sees_a_redacted_field() {
    let pki = Pki::with_names(&["localhost", "127.0.0.1", GATEWAY_NAME]);
    redacted_walk(&pki, |p| zenpy(&pki, p), 1000).await;
}

#[tokio::test]
async fn node_zendesk_never_sees_a_redacted_field() {
    let pki = Pki::new();
    redacted_walk(&pki, |p| node_zendesk(&pki, p), 100).await;
}

/// The same redaction seen by curl over HTTP/1.1 and HTTP/2: a page of tickets arrives whole and
/// parses, its free text replaced and `recipient` gone from every ticket. A page longer than the
/// proxy reads ahead (100 tickets, ~170 KB) streams with no `Content-Length` (the length changed as
/// it streamed); a short one (5 tickets) was read whole before the headers and carries its exact
/// length.
#[tokio::test]
async fn curl_gets_a_redacted_page_over_both_protocols() {
    let pki = Pki::new();
    // Kept whole: the mocks stop when dropped.
    let setup = WithFiles::start(&pki, REDACTING).await;
    let proxy = &setup.proxy;
    for version in ["--http1.1", "--http2"] {
        for per_page in [100, 5] {
            let mut curl = Command::new("curl");
            curl.args(["-sS", "--fail-with-body", "-D", "-", version, "--cacert"])
                .arg(&pki.files.ca_cert)
                .arg("-H")
                .arg(format!("Authorization: Bearer {}", proxy.token))
                .arg(proxy.url(&format!("/api/v2/tickets.json?page=1&per_page={per_page}")));
            let out =
                tokio::task::spawn_blocking(move || curl.output().expect("curl must be installed"))
                    .await
                    .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().unwrap())
            });
            if per_page == 100 {
                assert_eq!(length, None, "{head}");
            } else {
                assert_eq!(length, Some(body.len()), "{head}");
            }
            let page: serde_json::Value = serde_json::from_str(body).unwrap();
            let tickets = page["tickets"].as_array().unwrap();
            assert_eq!(tickets.len(), per_page, "{version}");
            for t in tickets {
                assert_eq!(t["description"], "[redacted]", "{version}");
                assert!(t.get("recipient").is_none(), "{version}");
                assert!(t["subject"].as_str().is_some_and(|s| !s.is_empty()));
            }
        }
    }
}

/// The vendor's record scope: tickets of groups 360004 and 360005 only ([`IN_SCOPE`]).
const SCOPED: &str = "\n[[vendors.scope]]\ngroup_id = [360004, 360005]\n";

/// Record scoping seen by the real clients: every walk (cursor-paginated tickets, search pages, an
/// incremental export) completes and receives exactly the tickets of the scope's groups, no other
/// group; each page's record counts what it kept and withheld, and the kept add up to what the
/// client received.
async fn scoped_walk(pki: &Pki, command: impl FnOnce(&Proxy) -> Command, incremental: u64) {
    let count = |ids: std::ops::RangeInclusive<u64>| ids.filter(|&id| in_scope(id)).count();
    let ticket = (1..).find(|&id| in_scope(id)).unwrap();
    let groups = serde_json::json!(IN_SCOPE);
    let expected = serde_json::json!({
        "tickets": count(1..=1186), "comments": if ticket == 42 { 250 } else { 3 },
        "search": count(1..=250), "incremental": count(1..=incremental),
        "attachment_bytes": 300_000,
        "groups": {"tickets": groups, "search": groups, "incremental": groups}});
    // Not vacuous: most tickets are outside the scope.
    assert!(count(1..=1186) < 1186 / 2);
    let command = |proxy: &Proxy| {
        let mut command = command(proxy);
        command
            .env("VG_GROUPS", "1")
            .env("VG_TICKET", ticket.to_string());
        command
    };
    let records = client_walk(pki, SCOPED, command, expected).await;
    let pages = ticket_pages(&records);
    let mut kept = 0;
    for page in pages {
        let scope = at(page, "vendorgate.scope");
        kept += scope["kept"].as_u64().unwrap();
        assert!(scope["withheld"].as_u64().unwrap() > 0, "{page}");
        assert!(
            scope["first"]
                .as_str()
                .unwrap()
                .starts_with("group_id 3600"),
            "{page}"
        );
    }
    assert_eq!(kept, count(1..=1186) as u64);
}

#[tokio::test]
async fn zenpy_receives_only_the_tickets_in_its_scope() {
    let pki = Pki::with_names(&["localhost", "127.0.0.1", GATEWAY_NAME]);
    scoped_walk(&pki, |p| zenpy(&pki, p), 1000).await;
}

#[tokio::test]
async fn node_zendesk_receives_only_the_tickets_in_its_scope() {
    let pki = Pki::new();
    scoped_walk(&pki, |p| node_zendesk(&pki, p), 100).await;
}

/// Free-text patterns on the tickets' descriptions: the phone number a customer wrote goes, the
/// rest of the text stays.
const SCRUBBING: &str =
    "\n[[vendors.redact]]\nfields = [\"**.description\"]\npatterns = [\"phone\", \"iban\"]\n";

/// A description as the mock writes it, its phone number replaced.
fn scrubbed_description(id: u64) -> String {
    let text = vendorgate_mock::ticket("", id)["description"]
        .as_str()
        .unwrap()
        .to_string();
    let at = text.find("+33 6 ").unwrap();
    format!("{}[redacted]{}", &text[..at], &text[at + 17..])
}

/// zenpy walks every page through a proxy scrubbing the descriptions: every page arrives, every
/// description it read is the upstream's with the phone number replaced, and the records count
/// one match per description.
#[tokio::test]
async fn zenpy_reads_descriptions_with_their_phone_numbers_replaced() {
    let pki = Pki::with_names(&["localhost", "127.0.0.1", GATEWAY_NAME]);
    let mut descriptions: Vec<String> = (1..=1186).map(scrubbed_description).collect();
    descriptions.sort();
    assert!(descriptions.iter().all(|d| !d.contains("+33")));
    let expected = serde_json::json!({"tickets": 1186, "comments": 250, "search": 250,
                                      "incremental": 1000, "attachment_bytes": 300_000,
                                      "fields": {"description": descriptions}});
    let command = |proxy: &Proxy| {
        let mut command = zenpy(&pki, proxy);
        command.env("VG_FIELDS", "description");
        command
    };
    let records = client_walk(&pki, SCRUBBING, command, expected).await;
    for page in ticket_pages(&records) {
        let n = at(page, "vendorgate.redacted")["**.description"]
            .as_u64()
            .unwrap();
        assert!((1..=100).contains(&n), "{page}");
    }
}

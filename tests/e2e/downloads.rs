//! Attachments stay inside the meter: the upstream's redirect to a files host becomes a download
//! grant on the proxy, followed through it by the account it was granted to, fetched without any
//! credential, metered and recorded; a redirect to a host not on the list is refused.

use http::StatusCode;
use serde_json::Value;
use vendorgate_mock::idp::KeyKind;

use crate::support::*;

#[tokio::test]
async fn an_attachment_comes_through_the_proxy_and_its_files_host_stays_hidden() {
    let pki = Pki::new();
    // Bound, not `..`: the upstream must outlive the requests.
    let WithFiles {
        files,
        upstream: _upstream,
        mut proxy,
    } = WithFiles::start(&pki, "").await;
    let ours = format!("https://127.0.0.1:{}", proxy.addr.port());
    let client = client(&pki, Http::One);

    let (_, meta) = send_json(&client, proxy.get("/api/v2/attachments/7.json")).await;
    let content_url = meta["attachment"]["content_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(content_url.starts_with(&ours), "{content_url}");
    let (redirect, _) = send(&client, bearer_get(&content_url, &proxy.token)).await;
    assert_eq!(redirect.status, StatusCode::FOUND);
    let location = redirect.headers["location"].to_str().unwrap().to_owned();
    let grant = location
        .strip_prefix(&format!("{ours}/__vendorgate/download/"))
        .unwrap_or_else(|| panic!("{location}"));
    assert_eq!(grant.len(), 32, "{location}");
    assert_eq!(
        files.request_count(),
        0,
        "nothing fetched before the agent asks"
    );

    let (ok, bytes) = send(&client, bearer_get(&location, &proxy.token)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(bytes.len(), 300_000);
    assert_eq!(files.request_count(), 1);
    for seen in files.recent() {
        assert!(
            !seen
                .headers
                .iter()
                .any(|(k, _)| k == "authorization" || k == "cookie"),
            "{seen:?}"
        );
    }

    // Another account of the same vendor cannot follow it.
    let other = pki.token_with(KeyKind::Es256, "acme", "agent-2");
    let (refused, body) = send_json(&client, bearer_get(&location, &other)).await;
    assert_eq!(
        (refused.status, &body["error"]),
        (StatusCode::NOT_FOUND, &"download_unknown".into())
    );
    // A redirect to a host not on the list is refused.
    let (elsewhere, body) =
        send_json(&client, proxy.get("/attachments/token/elsewhere/?name=x")).await;
    assert_eq!(
        (elsewhere.status, &body["error"]),
        (StatusCode::BAD_GATEWAY, &"upstream_redirect_refused".into())
    );
    stop(&mut proxy).await;

    let recs = records(proxy.dir.path());
    let download: Vec<&Value> = recs
        .iter()
        .filter(|r| {
            at(r, "url.path")
                .as_str()
                .unwrap()
                .starts_with("/__vendorgate/download/")
        })
        .collect();
    assert_eq!(download.len(), 2, "{recs:#?}");
    assert_eq!(at(download[0], "vendorgate.decision"), "allow");
    assert_eq!(at(download[0], "http.response.bytes"), 300_000);
    assert_eq!(at(download[0], "vendorgate.route"), "everything");
    assert_eq!(at(download[1], "vendorgate.reason"), "download_unknown");
    assert!(recs
        .iter()
        .any(|r| at(r, "vendorgate.reason") == "upstream_redirect_refused"));
    audit_intact(proxy.dir.path());
}

/// The files host declares the attachment's length: one larger than what is left of the cap is
/// refused before a byte of it goes out (a body of unknown length would be cut at the cap, as
/// the egress tests show for the upstream's own bodies).
#[tokio::test]
async fn an_attachment_larger_than_what_is_left_of_the_cap_is_refused_and_recorded() {
    let pki = Pki::new();
    let cap = "\n[[limits.egress]]\nid = \"agent-hourly\"\nper = \"account\"\nmax = \"100KiB\"\nwindow = \"1h\"\n";
    let WithFiles {
        files,
        upstream: _upstream,
        mut proxy,
    } = WithFiles::start(&pki, cap).await;
    let client = client(&pki, Http::Two);
    let (redirect, _) = send(&client, proxy.get("/attachments/token/t7/?name=a.bin")).await;
    let location = redirect.headers["location"].to_str().unwrap().to_owned();
    let (resp, body) = send_json(&client, bearer_get(&location, &proxy.token)).await;
    assert_eq!(
        (resp.status, &body["error"]),
        (StatusCode::TOO_MANY_REQUESTS, &"egress_cap_exceeded".into())
    );
    assert_eq!(files.request_count(), 1);
    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    let refused = recs
        .iter()
        .find(|r| {
            at(r, "url.path")
                .as_str()
                .unwrap()
                .starts_with("/__vendorgate/download/")
        })
        .unwrap();
    assert_eq!(
        at(refused, "vendorgate.reason"),
        "egress_cap_exceeded",
        "{refused:#}"
    );
    // Only the refusal's own small JSON went out.
    assert!(at(refused, "http.response.bytes").as_u64().unwrap() < 200);
}

/// One of unknown length is cut at the cap: the agent's download ends in an error, never a short
/// file that looks whole.
#[tokio::test]
async fn an_attachment_of_unknown_length_is_cut_at_the_cap() {
    let pki = Pki::new();
    let cap = "\n[[limits.egress]]\nid = \"agent-hourly\"\nper = \"account\"\nmax = \"100KiB\"\nwindow = \"1h\"\n";
    let WithFiles {
        files: _files,
        upstream: _upstream,
        mut proxy,
    } = WithFiles::start(&pki, cap).await;
    let client = client(&pki, Http::One);
    let (redirect, _) = send(
        &client,
        proxy.get("/attachments/token/chunked7/?name=a.bin"),
    )
    .await;
    let location = redirect.headers["location"].to_str().unwrap().to_owned();
    let resp = client
        .request(bearer_get(&location, &proxy.token))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let read = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(read.is_err(), "cut, not complete");
    // The budget is spent: the next request is refused before the upstream is asked.
    let (next, _) = send(&client, proxy.get("/api/v2/tickets/1.json")).await;
    assert_eq!(next.status, StatusCode::TOO_MANY_REQUESTS);
    stop(&mut proxy).await;
    let recs = records(proxy.dir.path());
    let cut = recs
        .iter()
        .find(|r| at(r, "vendorgate.cut_off") == true)
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert!(at(cut, "url.path")
        .as_str()
        .unwrap()
        .starts_with("/__vendorgate/download/"));
    assert!(at(cut, "http.response.bytes").as_u64().unwrap() <= 100 * 1024);
}

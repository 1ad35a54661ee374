//! The policy reloads without a restart when the config file is saved (and on `vendorgate admin
//! reload`): a valid edit takes effect while a long download goes on untouched; a broken edit is
//! refused with `file:line:column` and the old policy keeps deciding.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use vendorgate_certs::Alpn;

use crate::support::*;

const OPERATOR: &str = "vga_reload-operator-token";

#[tokio::test]
async fn a_saved_edit_takes_effect_without_dropping_a_download_and_a_broken_one_is_refused() {
    let pki = Pki::new();
    let upstream = mock(&pki, Alpn::H2AndHttp11).await;
    let admin = admin_token("ops", "operator", OPERATOR);
    let mut proxy = Proxy::start(&pki, ProxyConfig::to(&upstream).admin(&admin));
    let client = client(&pki, Http::One);
    assert_eq!(
        send(&client, proxy.get("/api/v2/tickets/1")).await.0.status,
        200
    );

    // A long download under way.
    let resp = client
        .request(proxy.get("/__mock/stream?bytes=1073741824&chunked=1"))
        .await
        .unwrap();
    let mut download = resp.into_body();
    download.frame().await.unwrap().unwrap();

    // Saved: tickets are now denied.
    let path = proxy.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    let everything = "[[routes]]\nid = \"everything\"";
    assert!(original.contains(everything));
    let denied = original.replace(
        everything,
        &format!("[[routes]]\nid = \"no-tickets\"\npath = \"/api/v2/tickets/**\"\ndeny = true\n\n{everything}"),
    );
    std::fs::write(&path, &denied).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (parts, body) = send_json(&client, proxy.get("/api/v2/tickets/1")).await;
        if parts.status == 403 {
            assert_eq!(body["error"], "route_denied");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the saved edit did not take effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The download went on through the reload.
    let mut more = 0u64;
    while more < 8 << 20 {
        let frame = tokio::time::timeout(Duration::from_secs(5), download.frame())
            .await
            .expect("the download stalled")
            .expect("the download ended")
            .expect("the download broke");
        more += frame.into_data().map_or(0, |d| d.len() as u64);
    }
    drop(download);

    // Broken: refused, saying where, and the last good policy keeps deciding.
    let broken = denied.replace("level = \"debug\"", "level = \"loud\"");
    std::fs::write(&path, &broken).unwrap();
    let out = admin_cli(&proxy, OPERATOR, &["reload"]).await;
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{said}");
    let line = broken.lines().position(|l| l.contains("loud")).unwrap() + 1;
    assert!(
        said.contains("422 config_invalid") && said.contains(&format!("vendorgate.toml:{line}:")),
        "{said}"
    );
    let (parts, _) = send(&client, proxy.get("/api/v2/tickets/1")).await;
    assert_eq!(parts.status, 403, "the broken file changed the policy");
    assert_eq!(
        send(&client, proxy.get("/api/v2/users/1")).await.0.status,
        200
    );
    let metrics = admin_text(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains("vendorgate_policy_reloads_total{result=\"ok\"} 1")
            && !metrics.contains("vendorgate_policy_reloads_total{result=\"failed\"} 0"),
        "{metrics}"
    );

    stop(&mut proxy).await;
    let reloads: Vec<(String, bool)> = records(proxy.dir.path())
        .iter()
        .filter(|r| at(r, "event.action") == "reload")
        .map(|r| {
            (
                at(r, "user.name").as_str().unwrap_or("").to_string(),
                at(r, "vendorgate.decision") == "allow",
            )
        })
        .collect();
    assert!(
        reloads.contains(&("file watcher".to_string(), true)),
        "{reloads:?}"
    );
    assert!(reloads.contains(&("ops".to_string(), false)), "{reloads:?}");
}

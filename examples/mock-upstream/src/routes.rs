//! The mock's endpoints: Zendesk-shaped `/api/v2/…` and test-only `/__mock/…`.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::body::MockBody;
use crate::data::{ticket, user};
use crate::query::Query;
use crate::server::Shared;

type Reply = Response<MockBody>;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let head = req.method() == http::Method::HEAD;
    let mut reply = route(shared, req).await?;
    if head {
        // A HEAD answer has no body (RFC 9110 §9.3.2). hyper's HTTP/1.1 server drops it, its
        // HTTP/2 server would send it, and a client then resets the stream, as Zendesk never makes
        // one do.
        *reply.body_mut() = MockBody::empty();
    }
    Ok(reply)
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let (parts, body) = req.into_parts();
    shared.record(&parts);
    let query = Query::parse(parts.uri.query());
    let path = parts.uri.path().to_string();
    let base = base_url(&parts);

    if path == "/.well-known/openid-configuration" {
        return Ok(
            match shared
                .jwks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                Some(_) => ok(json!({"issuer": base, "jwks_uri": format!("{base}/__mock/jwks")})),
                None => json_reply(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "down"})),
            },
        );
    }
    // Attachments as Zendesk serves them: `content_url` on the account's host answers 302 with a
    // temporary URL on a files host, which takes no credentials.
    if let Some(token) = path.strip_prefix("/attachments/token/") {
        let token = token.trim_end_matches('/');
        let target = if token == "elsewhere" {
            "https://files.evil.example/steal".to_string()
        } else {
            let origin = shared.options.files_origin.as_deref().unwrap_or(&base);
            let name = crate::query::encode(query.get("name").unwrap_or("file.bin"));
            format!("{origin}/files/{token}?name={name}")
        };
        let mut r = Response::new(MockBody::empty());
        *r.status_mut() = StatusCode::FOUND;
        if let Ok(v) = HeaderValue::from_str(&target) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(r);
    }
    if path.starts_with("/files/") {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(json_reply(
                StatusCode::FORBIDDEN,
                &json!({"error": "credentials are not accepted on the files host"}),
            ));
        }
        // A token starting with "chunked" is served without a declared length.
        let sized = !path.starts_with("/files/chunked");
        let mut r = Response::new(MockBody::repeat(
            shared.filler.clone(),
            shared.options.attachment_bytes,
            sized,
        ));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(r);
    }
    if let Some(rest) = path.strip_prefix("/__mock/") {
        return Ok(mock_endpoint(&shared, &parts, rest, &query, body).await);
    }
    let Some(rest) = path.strip_prefix("/api/v2/") else {
        return Ok(not_found());
    };
    if let Some(expected) = &shared.options.require_authorization {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if given != Some(expected.as_bytes()) {
            return Ok(json_reply(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "Couldn't authenticate you"}),
            ));
        }
    }
    let rest = rest.strip_suffix(".json").unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let o = &shared.options;
    let reply = match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["tickets"]) => list_tickets(&base, &query, o.tickets_total),
        (&Method::POST, ["tickets"]) => {
            let id = o.tickets_total + 1;
            let mut r = json_reply(StatusCode::CREATED, &json!({"ticket": ticket(&base, id)}));
            if let Ok(v) = HeaderValue::from_str(&format!("{base}/api/v2/tickets/{id}.json")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        (&Method::GET, ["tickets", id]) => match record_id(id, o.tickets_total) {
            Some(id) => ok(json!({"ticket": ticket(&base, id)})),
            None => not_found(),
        },
        (&Method::PUT, ["tickets", id]) => match record_id(id, o.tickets_total) {
            Some(id) => update_ticket(&base, id, body).await,
            None => not_found(),
        },
        (&Method::GET, ["tickets", id, "comments"]) => match record_id(id, o.tickets_total) {
            Some(id) => ok(comments(&base, id, &query)),
            None => not_found(),
        },
        (&Method::GET, ["search"]) => search(&base, &query, o.tickets_total),
        (&Method::GET, ["attachments", id]) => match id.parse::<u64>() {
            Ok(id) => ok(json!({"attachment": {
                "id": id, "file_name": format!("file-{id}.bin"), "size": o.attachment_bytes,
                "content_type": "application/octet-stream", "inline": false, "deleted": false,
                "url": format!("{base}/api/v2/attachments/{id}.json"),
                "content_url": format!("{base}/attachments/token/t{id}/?name=file-{id}.bin"),
                "mapped_content_url": format!("{base}/attachments/token/t{id}/?name=file-{id}.bin"),
                "thumbnails": []
            }})),
            Err(_) => not_found(),
        },
        (&Method::GET, ["users"]) => list_users(&base, &query, o.users_total),
        (&Method::GET, ["users", "me"]) => ok(json!({"user": user(&base, 901)})),
        (&Method::GET, ["users", id]) => match record_id(id, o.users_total) {
            Some(id) => ok(json!({"user": user(&base, id)})),
            None => not_found(),
        },
        (&Method::GET, ["incremental", "tickets"]) => {
            incremental_by_time(&base, &query, o.export_page_size, o.export_total)
        }
        (&Method::GET, ["incremental", kind @ ("tickets" | "users"), "cursor"]) => {
            incremental_export(&base, kind, &query, o.export_page_size, o.export_total)
        }
        (&Method::GET, ["search", "export"]) => search_export(&base, &query, o.tickets_total),
        _ => not_found(),
    };
    Ok(reply)
}

fn base_url(parts: &http::request::Parts) -> String {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    format!("https://{host}")
}

fn record_id(text: &str, total: u64) -> Option<u64> {
    text.parse().ok().filter(|id| (1..=total).contains(id))
}

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    text_reply(status, value.to_string())
}

/// A 200 whose object's members come in the order given, as Zendesk writes them (the records
/// first, then `next_page`, `count`…); `json!` sorts keys.
fn ok_ordered(members: &[(&str, Value)]) -> Reply {
    let body = members
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
        .collect::<Vec<_>>()
        .join(",");
    text_reply(StatusCode::OK, format!("{{{body}}}"))
}

fn text_reply(status: StatusCode, text: String) -> Reply {
    static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = REQUESTS.fetch_add(1, Ordering::Relaxed);
    let mut r = Response::new(MockBody::full(text));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert("x-zendesk-api-version", HeaderValue::from_static("v2"));
    h.insert("x-rate-limit", HeaderValue::from_static("700"));
    h.insert("x-rate-limit-remaining", HeaderValue::from_static("699"));
    // Zendesk hands API clients a session cookie too; through a proxy it would be the proxy's
    // service account's session.
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("_zendesk_shared_session=mock-session; path=/; secure; HttpOnly"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("zd-{n:016x}")) {
        h.insert("x-request-id", v);
    }
    r
}

fn ok(value: Value) -> Reply {
    json_reply(StatusCode::OK, &value)
}

fn not_found() -> Reply {
    json_reply(
        StatusCode::NOT_FOUND,
        &json!({"error": "RecordNotFound", "description": "Not found"}),
    )
}

fn bad_request(error: &str, description: &str) -> Reply {
    json_reply(
        StatusCode::BAD_REQUEST,
        &json!({"error": error, "description": description}),
    )
}

/// Opaque-looking cursors that encode an offset.
fn cursor(offset: u64) -> String {
    format!("eyJvIjo{offset:x}")
}

fn parse_cursor(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("eyJvIjo")?, 16).ok()
}

fn list_tickets(base: &str, q: &Query, total: u64) -> Reply {
    if let Some(page) = q.number("page") {
        // Offset pagination, refused past 10,000 records as Zendesk does.
        let per_page = q.number("per_page").unwrap_or(100).clamp(1, 100);
        let start = page.saturating_sub(1).saturating_mul(per_page);
        if start >= 10_000 {
            return bad_request(
                "InvalidPaginationParameter",
                "Offset pagination is limited to the first 10,000 records. Use cursor pagination.",
            );
        }
        let ids = (start + 1)..=(start + per_page).min(total);
        let next = (start + per_page < total).then(|| {
            format!(
                "{base}/api/v2/tickets.json?page={}&per_page={per_page}",
                page + 1
            )
        });
        let prev = (page > 1).then(|| {
            format!(
                "{base}/api/v2/tickets.json?page={}&per_page={per_page}",
                page - 1
            )
        });
        return ok(json!({
            "tickets": ids.map(|id| ticket(base, id)).collect::<Vec<_>>(),
            "next_page": next, "previous_page": prev, "count": total
        }));
    }
    let size = q.number("page[size]").unwrap_or(100);
    if size > 100 {
        return bad_request(
            "InvalidPaginationParameter",
            "page[size] must be at most 100",
        );
    }
    let start = q.get("page[after]").and_then(parse_cursor).unwrap_or(0);
    let end = (start + size).min(total);
    let has_more = end < total;
    ok(json!({
        "tickets": ((start + 1)..=end).map(|id| ticket(base, id)).collect::<Vec<_>>(),
        "meta": {"has_more": has_more, "after_cursor": cursor(end), "before_cursor": cursor(start)},
        "links": {
            "prev": format!("{base}/api/v2/tickets.json?page%5Bbefore%5D={}&page%5Bsize%5D={size}", cursor(start)),
            "next": has_more.then(|| format!("{base}/api/v2/tickets.json?page%5Bafter%5D={}&page%5Bsize%5D={size}", cursor(end))),
        }
    }))
}

fn list_users(base: &str, q: &Query, total: u64) -> Reply {
    let page = q.number("page").unwrap_or(1).max(1);
    let per_page = q.number("per_page").unwrap_or(100).clamp(1, 100);
    let start = (page - 1).saturating_mul(per_page);
    let ids = (start + 1)..=(start + per_page).min(total);
    let next = (start + per_page < total).then(|| {
        format!(
            "{base}/api/v2/users.json?page={}&per_page={per_page}",
            page + 1
        )
    });
    let prev = (page > 1).then(|| {
        format!(
            "{base}/api/v2/users.json?page={}&per_page={per_page}",
            page - 1
        )
    });
    ok(json!({
        "users": ids.map(|id| user(base, id)).collect::<Vec<_>>(),
        "next_page": next, "previous_page": prev, "count": total
    }))
}

/// `/incremental/{tickets,users}/cursor`: start with `start_time`, continue with `cursor`, stop at
/// `end_of_stream`. The whole export is `total` records, `per_page` (≤ 1000) at a time.
fn incremental_export(base: &str, kind: &str, q: &Query, default_page: u64, total: u64) -> Reply {
    let start = match (q.get("cursor"), q.number("start_time")) {
        (Some(c), _) => match parse_cursor(c) {
            Some(offset) => offset,
            None => return bad_request("InvalidCursor", "cursor is invalid"),
        },
        (None, Some(_)) => 0,
        (None, None) => {
            return bad_request("InvalidValue", "start_time or cursor is required");
        }
    };
    let per_page = q.number("per_page").unwrap_or(default_page).clamp(1, 1000);
    let end = (start + per_page).min(total);
    let end_of_stream = end >= total;
    let records: Vec<Value> = ((start + 1)..=end)
        .map(|id| {
            if kind == "tickets" {
                ticket(base, id)
            } else {
                user(base, id)
            }
        })
        .collect();
    ok(json!({
        kind: records,
        "after_url": (!end_of_stream).then(|| format!("{base}/api/v2/incremental/{kind}/cursor.json?cursor={}&per_page={per_page}", cursor(end))),
        "after_cursor": (!end_of_stream).then(|| cursor(end)),
        "before_url": null,
        "before_cursor": null,
        "end_of_stream": end_of_stream
    }))
}

fn search_export(base: &str, q: &Query, total: u64) -> Reply {
    if q.get("query").is_none_or(str::is_empty) {
        return bad_request("InvalidValue", "query is required");
    }
    if q.get("filter[type]") != Some("ticket") && q.get("filter[type]") != Some("user") {
        return bad_request(
            "InvalidValue",
            "filter[type] must be ticket, user, organization or group",
        );
    }
    let size = q.number("page[size]").unwrap_or(100).clamp(1, 1000);
    let start = q.get("page[after]").and_then(parse_cursor).unwrap_or(0);
    let end = (start + size).min(total);
    let has_more = end < total;
    let users = q.get("filter[type]") == Some("user");
    ok(json!({
        "results": ((start + 1)..=end).map(|id| if users { user(base, id) } else { ticket(base, id) }).collect::<Vec<_>>(),
        "meta": {"has_more": has_more, "after_cursor": has_more.then(|| cursor(end)), "before_cursor": null},
        "links": {"prev": null, "next": has_more.then(|| format!("{base}/api/v2/search/export.json?page%5Bafter%5D={}&page%5Bsize%5D={size}", cursor(end)))}
    }))
}

async fn update_ticket(base: &str, id: u64, body: Incoming) -> Reply {
    let Some(bytes) = read_small(body).await else {
        return bad_request("InvalidValue", "body too large or unreadable");
    };
    let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
        return bad_request("InvalidJSON", "body is not JSON");
    };
    let mut t = ticket(base, id);
    if let Some(status) = doc.pointer("/ticket/status") {
        t["status"] = status.clone();
    }
    let comment = doc.pointer("/ticket/comment/body").cloned();
    ok(json!({
        "ticket": t,
        "audit": {"id": id * 10 + 1, "ticket_id": id, "author_id": 901,
                  "events": [{"type": "Comment", "body": comment, "public": false}]}
    }))
}

/// Ticket 42 has a long conversation (250 comments, paginated like Zendesk's: 100 a page, absolute
/// `next_page`); every other ticket has three.
pub(crate) const LONG_TICKET: u64 = 42;

fn comments(base: &str, ticket_id: u64, q: &Query) -> Value {
    let total = if ticket_id == LONG_TICKET { 250 } else { 3 };
    let per_page = q.number("per_page").unwrap_or(100).clamp(1, 100);
    let page = q.number("page").unwrap_or(1).max(1);
    let start = (page - 1) * per_page;
    let link = |p: u64| {
        format!("{base}/api/v2/tickets/{ticket_id}/comments.json?page={p}&per_page={per_page}")
    };
    json!({
        "comments": ((start + 1)..=(start + per_page).min(total)).map(|i| json!({
            "id": ticket_id * 1000 + i, "type": "Comment", "author_id": 10_000 + ticket_id % 5_000,
            "body": format!("Message {i} on ticket {ticket_id}"),
            "html_body": format!("<p>Message {i} on ticket {ticket_id}</p>"),
            "plain_body": format!("Message {i} on ticket {ticket_id}"),
            "public": i % 3 != 0, "attachments": [], "audit_id": ticket_id * 1000 + i,
            "via": {"channel": "web"}, "created_at": "2025-06-01T10:00:00Z",
            "metadata": {"system": {"client": "Mozilla/5.0", "ip_address": "198.51.100.7", "location": "Lyon, France"}}
        })).collect::<Vec<_>>(),
        "next_page": (start + per_page < total).then(|| link(page + 1)),
        "previous_page": (page > 1).then(|| link(page - 1)),
        "count": total
    })
}

/// `/search?query=`: offset pagination over every ticket (at most 250 results), as `results` with
/// their `result_type`.
fn search(base: &str, q: &Query, tickets: u64) -> Reply {
    let Some(query) = q.get("query").filter(|s| !s.is_empty()) else {
        return bad_request("InvalidValue", "query is required");
    };
    let total = tickets.min(250);
    let per_page = q.number("per_page").unwrap_or(100).clamp(1, 100);
    let page = q.number("page").unwrap_or(1).max(1);
    let start = (page - 1) * per_page;
    let query = crate::query::encode(query);
    let link =
        |p: u64| format!("{base}/api/v2/search.json?page={p}&per_page={per_page}&query={query}");
    ok_ordered(&[
        (
            "results",
            ((start + 1)..=(start + per_page).min(total))
                .map(|id| {
                    let mut t = ticket(base, id);
                    t["result_type"] = json!("ticket");
                    t
                })
                .collect(),
        ),
        ("facets", Value::Null),
        (
            "next_page",
            json!((start + per_page < total).then(|| link(page + 1))),
        ),
        ("previous_page", json!((page > 1).then(|| link(page - 1)))),
        ("count", json!(total)),
    ])
}

/// The epoch second ticket `id` was last updated at, in the time-based incremental export.
const EPOCH: u64 = 1_700_000_000;

/// `/incremental/tickets?start_time=`: the time-based export, `next_page` to the next start time
/// and `end_of_stream` on the last page.
fn incremental_by_time(base: &str, q: &Query, per_page: u64, total: u64) -> Reply {
    let Some(start_time) = q.number("start_time") else {
        return bad_request("InvalidValue", "start_time is required");
    };
    let start = start_time.saturating_sub(EPOCH).min(total);
    let end = (start + per_page).min(total);
    let end_of_stream = end >= total;
    ok_ordered(&[
        (
            "tickets",
            ((start + 1)..=end)
                .map(|id| {
                    let mut t = ticket(base, id);
                    t["generated_timestamp"] = json!(EPOCH + id);
                    t
                })
                .collect(),
        ),
        (
            "next_page",
            json!(format!(
                "{base}/api/v2/incremental/tickets.json?start_time={}",
                EPOCH + end
            )),
        ),
        ("count", json!(end - start)),
        ("end_of_stream", json!(end_of_stream)),
        ("end_time", json!(EPOCH + end)),
    ])
}

async fn read_small(body: Incoming) -> Option<Bytes> {
    let limited = http_body_util::Limited::new(body, 1024 * 1024);
    limited.collect().await.ok().map(|c| c.to_bytes())
}

async fn mock_endpoint(
    shared: &Shared,
    parts: &http::request::Parts,
    rest: &str,
    q: &Query,
    body: Incoming,
) -> Reply {
    match rest {
        // What arrived, for asserting on forwarded headers and streamed uploads.
        "echo" => {
            let (bytes, sum) = match drain(body).await {
                Ok(v) => v,
                Err(e) => return bad_request("BodyError", &e),
            };
            let mut headers = serde_json::Map::new();
            for (name, value) in &parts.headers {
                let entry = headers
                    .entry(name.as_str())
                    .or_insert_with(|| Value::Array(vec![]));
                if let Value::Array(list) = entry {
                    list.push(Value::String(
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    ));
                }
            }
            let mut r = ok(json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "body_bytes": bytes,
                "body_sum": sum,
            }));
            if q.get("hop") == Some("1") {
                // Hop-by-hop headers a proxy must not pass on (RFC 9110 §7.6.1).
                let h = r.headers_mut();
                h.insert(header::CONNECTION, HeaderValue::from_static("x-mock-hop"));
                h.insert("x-mock-hop", HeaderValue::from_static("secret"));
                h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
                h.insert(
                    header::PROXY_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"up\""),
                );
                h.insert("x-mock-end-to-end", HeaderValue::from_static("kept"));
            }
            r
        }
        // `bytes` of generated JSON-ish text; `chunked=1` hides the length.
        "stream" => {
            let total = q.number("bytes").unwrap_or(1024 * 1024);
            let sized = q.get("chunked") != Some("1");
            let mut r = Response::new(MockBody::repeat(shared.filler.clone(), total, sized));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        // An incremental export of about `bytes` of tickets (`{"tickets":[…],"end_of_stream":…}`),
        // generated as it is sent: what a bulk pull through a redacting proxy looks like.
        // `broken=1`: labelled JSON, but not JSON from its first bytes.
        "export" => {
            let head: &'static [u8] = if q.get("broken") == Some("1") {
                b"{\"tickets\":[<html>"
            } else {
                b"{\"tickets\":["
            };
            let total = q.number("bytes").unwrap_or(1024 * 1024);
            let base = base_url(parts);
            let mut chunk = String::new();
            for id in 1..=64 {
                chunk.push_str(&ticket(&base, id).to_string());
                chunk.push(',');
            }
            let last = ticket(&base, 65).to_string();
            let repeats = total / chunk.len() as u64;
            let tail = format!(
                "{last}],\"end_of_stream\":true,\"count\":{}}}",
                repeats * 64 + 1
            );
            let mut r = Response::new(MockBody::framed(
                Bytes::from_static(head),
                Bytes::from(chunk),
                repeats,
                Bytes::from(tail),
            ));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            r
        }
        // A link to this host cut in two, the halves sent apart: a proxy that rewrites links
        // must find it across its reads.
        "split" => {
            let link = format!("{}/api/v2/tickets.json?page=2", base_url(parts));
            let text = format!("{{\"next_page\":\"{link}\",\"count\":1}}");
            let cut = text.find("://").unwrap_or(0) + 5;
            let halves = vec![
                Bytes::copy_from_slice(&text.as_bytes()[..cut]),
                Bytes::copy_from_slice(&text.as_bytes()[cut..]),
            ];
            let mut r = Response::new(MockBody::paced(halves, Duration::from_millis(50)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            r
        }
        "slow" => {
            let ms = q.number("ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ok(json!({"slept_ms": ms}))
        }
        "jwks" => match shared
            .jwks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            Some(doc) => static_reply(Bytes::from(doc)),
            None => json_reply(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "down"})),
        },
        "static/2k" => static_reply(shared.static_2k.clone()),
        "static/1m" => static_reply(shared.static_1m.clone()),
        _ => not_found(),
    }
}

fn static_reply(body: Bytes) -> Reply {
    let mut r = Response::new(MockBody::full(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Reads a body to its end, counting bytes and summing them (a cheap integrity check that the proxy
/// forwarded every byte in order-insensitive but loss-sensitive fashion).
async fn drain(mut body: Incoming) -> Result<(u64, u64), String> {
    let mut bytes = 0u64;
    let mut sum = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
            sum = data.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
        }
    }
    Ok((bytes, sum))
}

/// 64 KiB of ticket-like JSON text, repeated by `/__mock/stream`.
pub(crate) fn filler_chunk() -> Bytes {
    let mut text = String::with_capacity(64 * 1024 + 2048);
    let mut id = 1;
    while text.len() < 64 * 1024 {
        text.push_str(&ticket("https://mock.zendesk.com", id).to_string());
        text.push('\n');
        id += 1;
    }
    text.truncate(64 * 1024);
    Bytes::from(text)
}

/// A JSON document of exactly `size` bytes, for benchmarks.
pub(crate) fn static_json(size: usize) -> Bytes {
    let head = "{\"tickets\":\"";
    let tail = "\"}";
    let mut text = String::with_capacity(size);
    text.push_str(head);
    let fill = size.saturating_sub(head.len() + tail.len());
    text.extend(std::iter::repeat_n('x', fill));
    text.push_str(tail);
    Bytes::from(text)
}

//! `vendorgate admin …`: the admin API from a shell, so an incident needs no hand-written curl.
//! Tables for people, `--json` for scripts; a refused call exits non-zero with the API's code.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};

#[derive(Args)]
pub struct Api {
    /// The admin listener [env VENDORGATE_ADMIN_URL; default http://127.0.0.1:9901].
    #[arg(long)]
    url: Option<String>,
    /// A file holding the admin token (env VENDORGATE_ADMIN_TOKEN holds the token itself).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Lock a target out: its next request is refused and its streams in flight are cut.
    Lock {
        #[arg(long, group = "target")]
        account: Option<String>,
        #[arg(long, group = "target")]
        vendor: Option<String>,
        /// A session: the token's `sid`, else its `jti`.
        #[arg(long, group = "target")]
        session: Option<String>,
        /// A source network (CIDR), e.g. 203.0.113.0/24.
        #[arg(long, group = "target")]
        network: Option<String>,
        /// A just-in-time grant (suspends it: unlock gives it back; `revoke-grant` ends it).
        #[arg(long, group = "target")]
        grant: Option<String>,
        /// Why (recorded in the trail; never shown to the agent).
        #[arg(long)]
        message: String,
        /// How long it holds (30m, 2h, 7d); without it, until `unlock`.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Remove a lock.
    Unlock { id: String },
    /// The locks in force.
    Locks,
    /// The live sessions the proxy serves (this replica's).
    Sessions {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        vendor: Option<String>,
    },
    /// Revoke a session (its `sid`, else `jti`, as `sessions` lists it): its next request is 401
    /// `session_revoked`, its streams in flight are cut.
    Revoke {
        session: String,
        #[arg(long)]
        message: Option<String>,
    },
    /// An account's standing against every limit: requests left, bytes used, when each resets.
    Usage {
        #[arg(long)]
        vendor: String,
        #[arg(long)]
        account: String,
    },
    /// Ask for a just-in-time grant: the account may use the classes for the duration, once
    /// someone else approves (`approve`).
    Grant {
        #[arg(long)]
        vendor: String,
        #[arg(long)]
        account: String,
        /// A class to open (repeat for more), e.g. export.
        #[arg(long = "class", required = true)]
        classes: Vec<String>,
        /// How long it lasts once approved (30m, 2h), at most `grants.max_duration`.
        #[arg(long)]
        duration: String,
        /// Why (the approver and the trail read it).
        #[arg(long)]
        reason: String,
        /// The ticket it serves (required when `grants.ticket_pattern` is set).
        #[arg(long)]
        ticket: Option<String>,
    },
    /// The just-in-time grants, pending and active.
    Grants {
        #[arg(long)]
        vendor: Option<String>,
        #[arg(long)]
        account: Option<String>,
    },
    /// Approve a pending grant (not your own): active for its duration from now.
    Approve { id: String },
    /// Refuse a pending grant.
    Deny {
        id: String,
        #[arg(long)]
        message: Option<String>,
    },
    /// End an active grant now: what it allows is refused and its streams in flight are cut.
    RevokeGrant {
        id: String,
        #[arg(long)]
        message: Option<String>,
    },
    /// Read the config file again; a broken file is refused (file:line:column) and the old policy
    /// keeps serving.
    Reload,
    /// Make an admin token: prints it once, and the `[[admin.tokens]]` entry (its hash) for the
    /// config. Needs no running proxy.
    NewToken {
        #[arg(long)]
        name: String,
        /// viewer, requester (may also ask for grants) or operator
        #[arg(long, default_value = "viewer")]
        role: String,
    },
}

pub fn run(api: &Api, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::NewToken { name, role } => new_token(&name, &role),
        AdminCommand::Locks => {
            let v = call(api, Method::GET, "/v1/locks", None)?;
            show(api, &v, |v| {
                rows(v, "locks", "no locks in force", print_lock)
            });
            Ok(())
        }
        AdminCommand::Lock {
            account,
            vendor,
            session,
            network,
            grant,
            message,
            ttl,
        } => {
            let target = match (account, vendor, session, network, grant) {
                (Some(a), ..) => json!({"kind": "account", "value": a}),
                (_, Some(v), ..) => json!({"kind": "vendor", "value": v}),
                (_, _, Some(s), ..) => json!({"kind": "session", "value": s}),
                (_, _, _, Some(n), _) => json!({"kind": "network", "value": n}),
                (.., Some(g)) => json!({"kind": "grant", "value": g}),
                _ => bail!("name a target: --account, --vendor, --session, --network or --grant"),
            };
            let body = json!({"target": target, "message": message, "ttl": ttl});
            let v = call(api, Method::POST, "/v1/locks", Some(body))?;
            show(api, &v, print_made);
            Ok(())
        }
        AdminCommand::Sessions { account, vendor } => {
            let mut query = Vec::new();
            if let Some(a) = account {
                query.push(format!("account={a}"));
            }
            if let Some(v) = vendor {
                query.push(format!("vendor={v}"));
            }
            let path = format!("/v1/sessions?{}", query.join("&"));
            let v = call(api, Method::GET, &path, None)?;
            show(api, &v, |v| {
                rows(v, "sessions", "no live sessions", print_session)
            });
            Ok(())
        }
        AdminCommand::Revoke { session, message } => {
            let body = json!({"message": message});
            let path = format!("/v1/sessions/{session}/revoke");
            let v = call(api, Method::POST, &path, Some(body))?;
            show(api, &v, print_made);
            Ok(())
        }
        AdminCommand::Usage { vendor, account } => {
            let path = format!("/v1/usage?vendor={vendor}&account={account}");
            let v = call(api, Method::GET, &path, None)?;
            show(api, &v, |v| {
                rows(v, "limits", "no limits apply", print_limit)
            });
            Ok(())
        }
        AdminCommand::Grant {
            vendor,
            account,
            classes,
            duration,
            reason,
            ticket,
        } => {
            let body = json!({"vendor": vendor, "account": account, "classes": classes,
                              "duration": duration, "reason": reason, "ticket": ticket});
            let v = call(api, Method::POST, "/v1/grants", Some(body))?;
            show(api, &v, |v| print_grant(&v["grant"]));
            Ok(())
        }
        AdminCommand::Grants { vendor, account } => {
            let mut query = Vec::new();
            if let Some(v) = vendor {
                query.push(format!("vendor={v}"));
            }
            if let Some(a) = account {
                query.push(format!("account={a}"));
            }
            let path = format!("/v1/grants?{}", query.join("&"));
            let v = call(api, Method::GET, &path, None)?;
            show(api, &v, |v| rows(v, "grants", "no grants", print_grant));
            Ok(())
        }
        AdminCommand::Approve { id } => grant_act(api, &id, "approve", None),
        AdminCommand::Deny { id, message } => grant_act(api, &id, "deny", message),
        AdminCommand::RevokeGrant { id, message } => grant_act(api, &id, "revoke", message),
        AdminCommand::Reload => {
            let v = call(api, Method::POST, "/v1/reload", None)?;
            show(api, &v, |v| {
                println!(
                    "policy {} in force",
                    v["policy_version"].as_str().unwrap_or("?")
                );
                for s in v["needs_restart"].as_array().into_iter().flatten() {
                    println!(
                        "changes to [{}] take effect only after a restart",
                        s.as_str().unwrap_or("?")
                    );
                }
            });
            Ok(())
        }
        AdminCommand::Unlock { id } => {
            let v = call(api, Method::DELETE, &format!("/v1/locks/{id}"), None)?;
            show(api, &v, |v| {
                println!("removed {}", v["lock"]["id"].as_str().unwrap_or(&id))
            });
            Ok(())
        }
    }
}

/// `approve`, `deny`, `revoke` on a grant.
fn grant_act(api: &Api, id: &str, verb: &str, message: Option<String>) -> anyhow::Result<()> {
    let path = format!("/v1/grants/{id}/{verb}");
    let v = call(api, Method::POST, &path, Some(json!({"message": message})))?;
    show(api, &v, |v| print_grant(&v["grant"]));
    Ok(())
}

/// The API's answer: as it is with `--json`, else as `human` prints it for people.
fn show(api: &Api, v: &Value, human: impl FnOnce(&Value)) {
    if api.json {
        println!("{v}");
    } else {
        human(v);
    }
}

/// The items of a list answer, a line each, or `empty` when there are none.
fn rows(v: &Value, key: &str, empty: &str, row: fn(&Value)) {
    let items = v[key].as_array().map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        println!("{empty}");
    }
    items.iter().for_each(row);
}

/// A lock (or revocation) just made, and the streams it cut.
fn print_made(v: &Value) {
    print_lock(&v["lock"]);
    println!("streams cut: {}", v["streams_cut"]);
}

fn print_session(s: &Value) {
    println!(
        "{:<10} {:<24} session {:<28} since {} last {} requests {:>6} out {:>10} from {}",
        s["vendor"].as_str().unwrap_or("?"),
        s["account"].as_str().unwrap_or("?"),
        s["session"].as_str().unwrap_or("(none: lock the account)"),
        s["since"].as_str().unwrap_or("?"),
        s["last_seen"].as_str().unwrap_or("?"),
        s["requests"],
        vendorgate::audit::summary::human_bytes(s["bytes_out"].as_u64().unwrap_or(0)),
        s["addresses"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
}

fn print_limit(l: &Value) {
    match l["kind"].as_str() {
        Some("rate") => println!(
            "rate   {:<20} per {:<8} {} left of {} (whole again in {}s)",
            l["id"].as_str().unwrap_or("?"),
            l["per"].as_str().unwrap_or("?"),
            l["remaining"],
            l["burst"],
            l["full_in_secs"]
        ),
        _ => println!(
            "{:<6} {:<20} per {:<8} {} used, {} left (resets in {}s)",
            l["direction"].as_str().unwrap_or("?"),
            l["id"].as_str().unwrap_or("?"),
            l["per"].as_str().unwrap_or("?"),
            vendorgate::audit::summary::human_bytes(l["used"].as_u64().unwrap_or(0)),
            vendorgate::audit::summary::human_bytes(l["remaining"].as_u64().unwrap_or(0)),
            l["resets_in_secs"]
        ),
    }
}

/// Seconds since the epoch as RFC 3339, or `none`.
fn when(v: &Value, none: &str) -> String {
    match v.as_u64() {
        Some(t) => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
            vendorgate::trail::time::rfc3339(at)
        }
        None => none.into(),
    }
}

fn print_grant(g: &Value) {
    let state = g["state"].as_str().unwrap_or("?");
    let until = match state {
        "pending" => format!("pending until {}", when(&g["pending_until"], "?")),
        _ => format!("{state} until {}", when(&g["expires_at"], "?")),
    };
    let classes: Vec<&str> = g["classes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "{:<20} {:<10} {:<20} {:<12} {:<44} asked by {:<12} {}{} [{}]",
        g["id"].as_str().unwrap_or("?"),
        g["vendor"].as_str().unwrap_or("?"),
        g["account"].as_str().unwrap_or("?"),
        classes.join(","),
        until,
        g["requested_by"].as_str().unwrap_or("?"),
        g["approved_by"]
            .as_str()
            .map(|a| format!("approved by {a} "))
            .unwrap_or_default(),
        g["ticket"].as_str().unwrap_or("no ticket"),
        g["reason"].as_str().unwrap_or("")
    );
}

fn print_lock(l: &Value) {
    let target = format!(
        "{} {}",
        l["target"]["kind"].as_str().unwrap_or("?"),
        l["target"]["value"].as_str().unwrap_or("?")
    );
    let expires = when(&l["expires_at"], "until removed");
    println!(
        "{:<22} {:<32} by {:<12} expires {:<24} {}",
        l["id"].as_str().unwrap_or("?"),
        target,
        l["created_by"].as_str().unwrap_or("?"),
        expires,
        l["message"].as_str().unwrap_or("")
    );
}

fn token(api: &Api) -> anyhow::Result<String> {
    if let Some(file) = &api.token_file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        return Ok(text.trim().to_string());
    }
    match std::env::var("VENDORGATE_ADMIN_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => bail!("no admin token: pass --token-file or set VENDORGATE_ADMIN_TOKEN"),
    }
}

/// One call; a refusal becomes an error carrying the API's code.
fn call(api: &Api, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let token = token(api)?;
    let base = api
        .url
        .clone()
        .or_else(|| std::env::var("VENDORGATE_ADMIN_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:9901".into());
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut req = Request::builder()
        .method(method)
        .uri(&url)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .with_context(|| format!("{url} is not a URL"))?;
    let (status, bytes) = super::runtime()?.block_on(async {
        let client = vendorgate::http_client::side_client::<Full<Bytes>>(None)?;
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
            .await
            .context("the admin API did not answer in 10 s")?
            .with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, bytes))
    })?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{url}: {} {}{}",
            status.as_u16(),
            v["error"].as_str().unwrap_or("(no code)"),
            v["detail"]
                .as_str()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
    }
    Ok(v)
}

/// `vendorgate health`: asks the admin listener's `/healthz` (or `/readyz`), no token needed, and
/// fails unless it answers 200 within 5 s. For a container's health check, where there is no curl.
pub fn health(url: Option<String>, ready: bool) -> anyhow::Result<()> {
    let base = url
        .or_else(|| std::env::var("VENDORGATE_ADMIN_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:9901".into());
    let path = if ready { "/readyz" } else { "/healthz" };
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let req = Request::get(&url)
        .body(Full::new(Bytes::new()))
        .with_context(|| format!("{url} is not a URL"))?;
    let status = super::runtime()?.block_on(async {
        let client = vendorgate::http_client::side_client::<Full<Bytes>>(None)?;
        let resp = tokio::time::timeout(std::time::Duration::from_secs(5), client.request(req))
            .await
            .context("no answer in 5 s")?
            .with_context(|| format!("calling {url}"))?;
        anyhow::Ok(resp.status())
    })?;
    if !status.is_success() {
        bail!("{url}: {}", status.as_u16());
    }
    println!("{url}: {}", status.as_u16());
    Ok(())
}

fn new_token(name: &str, role: &str) -> anyhow::Result<()> {
    if !matches!(role, "viewer" | "requester" | "operator") {
        bail!("--role is viewer, requester or operator");
    }
    let random =
        vendorgate::unguessable::hex(32).context("the system's random generator failed")?;
    let token = format!("vga_{random}");
    let hash = vendorgate::trail::chain::sha256_hex(token.as_bytes());
    println!("token (shown once; keep it in your secret store): {token}");
    println!("\n[[admin.tokens]]\nname = {name:?}\nrole = {role:?}\nsha256 = {hash:?}");
    Ok(())
}

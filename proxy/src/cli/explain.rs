//! `vendorgate explain`: one request, dry-run through the policy, every rule shown.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context};
use vendorgate::identity::KeyStore;
use vendorgate::settings::load_config;
use vendorgate_policy::{bearer, Denial, Policy, VerifyError};

fn line(step: &str, detail: &str, verdict: &str) {
    println!("{step:<10} {detail:<72} {verdict}");
}

fn deny(step: &str, d: &Denial) -> anyhow::Result<()> {
    line(step, &d.rule, &format!("DENY {}", d.reason.as_str()));
    println!(
        "\ndecision   DENY {} (HTTP {})",
        d.reason.as_str(),
        d.reason.status().as_u16()
    );
    std::process::exit(2);
}

pub fn run(
    config_path: &Path,
    method: &str,
    raw: &str,
    token_file: Option<&Path>,
    ip: &str,
) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    let policy: &Policy = &config.policy;
    let method: http::Method = method.parse().context("--method")?;
    let ip: IpAddr = ip.parse().context("--ip")?;
    let (path, query) = raw
        .split_once('?')
        .map_or((raw, None), |(p, q)| (p, Some(q)));
    println!(
        "explaining {method} {raw} from {ip} against {} ({})\n",
        config_path.display(),
        config.version
    );

    let admission = match policy.admit(ip, None, path) {
        Ok(a) => a,
        Err(d) => return deny("admission", &d),
    };
    line("path", &format!("{path} → {}", admission.path), "ok");
    let vendors_here: Vec<&str> = policy
        .vendors
        .iter()
        .filter(|v| v.ips.contains(ip))
        .map(|v| v.id.as_str())
        .collect();
    line(
        "network",
        &format!("{ip} belongs to vendor(s): {}", vendors_here.join(", ")),
        "ok",
    );
    if let Some(q) = query {
        line("query", &format!("{q} (passed through, not matched)"), "-");
    }

    let Some(token_file) = token_file else {
        return deny(
            "token",
            &Denial::new(vendorgate_policy::Reason::TokenMissing, "no --token given"),
        );
    };
    let text = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading {}", token_file.display()))?;
    let text = text.trim();
    let token = bearer(text.as_bytes()).unwrap_or(text);
    let keys = super::runtime()?.block_on(async {
        let store = KeyStore::new(&config.identity)?;
        if store.current().is_none() {
            store.refetch_for_unknown_key().await;
        }
        anyhow::Ok(store.current())
    })?;
    let Some(keys) = keys else {
        bail!(
            "the IdP's keys could not be obtained ({:?})",
            vendorgate::identity::KeySource::from_config(&config.identity)
        );
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let identity = match policy.verify_token(token, &keys, now) {
        Ok(t) => t,
        Err(VerifyError::Denied(d)) => return deny("token", &d),
        Err(VerifyError::UnknownKey { kid }) => {
            return deny(
                "token",
                &Denial::new(
                    vendorgate_policy::Reason::TokenInvalid,
                    format!("unknown kid {kid:?}"),
                ),
            )
        }
    };
    line(
        "token",
        &format!(
            "{} kid {:?}, iss {}, expires in {}s",
            identity.alg,
            identity.kid.as_deref().unwrap_or("-"),
            identity.iss,
            identity.exp.saturating_sub(now)
        ),
        "ok",
    );
    let vendor = &policy.vendors[identity.vendor];
    line(
        "identity",
        &format!("account {} of vendor {}", identity.account, vendor.id),
        "ok",
    );
    let allow = match policy.authorize(&admission, &method, &policy.standing(&identity), now) {
        Ok(a) => a,
        Err(d) => return deny("authorize", &d),
    };
    line(
        "ip rule",
        &format!("vendors[{}].ip_allow contains {ip}", vendor.id),
        "ok",
    );
    line(
        "mfa",
        &format!(
            "amr [{}] acr {:?}: identity.amr_any / acr_any satisfied, auth_time within limits",
            identity.amr.join(", "),
            identity.acr.as_deref().unwrap_or("-")
        ),
        "ok",
    );
    let route = &policy.routes[allow.route];
    line(
        "route",
        &format!(
            "{} → class {}",
            route.id,
            policy.class_name(allow.route).unwrap_or("-")
        ),
        "ok",
    );
    if let Err(d) = policy.check_session_lifetime(&policy.standing(&identity), now) {
        return deny("session", &d);
    }
    line(
        "session",
        "within sessions.max_lifetime (idle timeout is checked live)",
        "ok",
    );
    for (_, r) in policy.rate_rules_for(allow.vendor, allow.route) {
        line(
            "rate",
            &format!(
                "limits.rate[{}]: {} per {}s, burst {} (checked live)",
                r.id,
                r.requests,
                r.period.as_secs(),
                r.burst
            ),
            "applies",
        );
    }
    for (_, r) in policy.byte_rules_for(false, allow.vendor, allow.route) {
        line(
            "egress",
            &format!(
                "limits.egress[{}]: {} per {}s (checked live)",
                r.id,
                r.max,
                r.window.as_secs()
            ),
            "applies",
        );
    }
    println!("\ndecision   ALLOW via {}", route.id);
    Ok(())
}

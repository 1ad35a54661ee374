//! `vendorgate explain`: one request, dry-run through the policy, every rule shown.

use std::net::IpAddr;
use std::path::Path;

use vendorgate_policy::fields::RedactMode;

use anyhow::{bail, Context};
use vendorgate::gateway::controls_file;
use vendorgate::identity::{KeySource, KeyStore};
use vendorgate::settings::load_config;
use vendorgate::state::controls::ControlStore;
use vendorgate_policy::{
    bearer, Arrival, Config, Denial, Direction, Facts, Policy, Presented, Step, VerifiedToken,
    VerifyError,
};

fn line(step: &str, detail: &str, verdict: &str) {
    println!("{step:<10} {detail:<72} {verdict}");
}

/// The decision's own trace, a line a rule.
fn show(trace: &[Step]) {
    for step in trace {
        let verdict = match step.refused {
            None => "ok".to_string(),
            Some(reason) => format!("DENY {}", reason.as_str()),
        };
        line(step.check.as_str(), &step.detail, &verdict);
    }
}

fn deny(d: &Denial) -> anyhow::Result<()> {
    println!(
        "\ndecision   DENY {} (HTTP {})",
        d.reason.as_str(),
        d.reason.status().as_u16()
    );
    std::process::exit(2);
}

/// The token in `file` (a bare token or `Bearer …`), verified against the IdP's keys as the proxy
/// would: fetched if need be, and fetched once more for a key the set lacks.
fn verify(config: &Config, file: &Path, now: u64) -> anyhow::Result<Result<VerifiedToken, Denial>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let text = text.trim();
    let token = bearer(text.as_bytes()).unwrap_or(text);
    super::runtime()?.block_on(async {
        let store = KeyStore::new(&config.identity)?;
        if store.current().is_none() {
            store.refetch_for_unknown_key().await;
        }
        let Some(keys) = store.current() else {
            bail!(
                "the IdP's keys could not be obtained ({:?})",
                KeySource::from_config(&config.identity)
            );
        };
        let policy = &config.policy;
        Ok(match policy.verify_token(token, &keys, now) {
            Err(VerifyError::UnknownKey { .. }) if store.refetch_for_unknown_key().await => {
                let keys = store.current().unwrap_or(keys);
                policy
                    .verify_token(token, &keys, now)
                    .map_err(VerifyError::denial)
            }
            other => other.map_err(VerifyError::denial),
        })
    })
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

    let mut trace = Vec::new();
    let arrival = Arrival {
        peer: ip,
        forwarded_for: None,
        path,
    };
    let admission = policy.admit(&arrival, &mut trace);
    show(&trace);
    let admission = match admission {
        Ok(a) => a,
        Err(d) => return deny(&d),
    };
    if let Some(q) = query {
        line("query", &format!("{q} (passed through, not matched)"), "-");
    }

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let verified = match token_file {
        Some(file) => Some(verify(&config, file, now)?),
        None => None,
    };
    let standing = verified
        .as_ref()
        .map(|v| v.as_ref().map(|token| (policy.standing(token), token)));
    let token = match &standing {
        None => Presented::Missing,
        Some(Ok((standing, token))) => Presented::Verified(standing, token),
        Some(Err(denial)) => Presented::Unverified(denial),
    };
    if let Some(Ok(identity)) = &verified {
        line(
            "token",
            &format!(
                "{} kid {:?}, iss {}",
                identity.alg,
                identity.kid.as_deref().unwrap_or("-"),
                identity.iss,
            ),
            "ok",
        );
        let vendor = policy.vendors.get(identity.vendor).map_or("?", |v| &v.id);
        line(
            "identity",
            &format!(
                "account {} of vendor {vendor}; amr [{}] acr {:?}",
                identity.account,
                identity.amr.join(", "),
                identity.acr.as_deref().unwrap_or("-")
            ),
            "ok",
        );
    }
    // The locks and grants this proxy keeps (beside its trail), as the proxy would read them.
    let controls = ControlStore::load(Some(controls_file(&config)))?;
    let facts = Facts {
        method: &method,
        admission: &admission,
        token,
        controls: &controls.current(),
    };
    let mut trace = Vec::new();
    let allow = policy.decide(&facts, now, &mut trace);
    show(&trace);
    let allow = match allow {
        Ok(a) => a,
        Err(d) => return deny(&d),
    };
    let route = &policy.routes[allow.route];
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
    for (_, r) in policy.byte_rules_for(Direction::Egress, allow.vendor, allow.route) {
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
    for f in policy
        .redactions(allow.vendor, allow.route)
        .map_or(&[][..], |f| &f[..])
    {
        let how = match f.mode {
            RedactMode::Scrub => format!("patterns {}", f.patterns.names().join(", ")),
            mode => mode.as_str().to_string(),
        };
        line(
            "redact",
            &format!("vendors.redact: {} ({how})", f.path),
            "applies",
        );
    }
    if let Some(scope) = policy.scope(allow.vendor, allow.route) {
        line(
            "scope",
            &format!("vendors.scope: {}", scope.describe()),
            "applies",
        );
        if let Some((resource, id)) = policy.parent_of(allow.route, &admission.path) {
            line(
                "parent",
                &format!("routes.parent: {resource}/{id} judged before forwarding"),
                "applies",
            );
        }
    }
    match &allow.grant {
        Some(grant) => println!("\ndecision   ALLOW via {} (grant {grant})", route.id),
        None => println!("\ndecision   ALLOW via {}", route.id),
    }
    Ok(())
}

//! The compiled policy: a config checked and turned into what the decision reads (address sets,
//! the route table, class masks, limit rules). The decision itself, and its order, is in
//! [`crate::decide`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use http::Method;
use jsonwebtoken::Algorithm;

use std::time::Duration;

use toml::Spanned;

use crate::config::{Backend, ByteCap, Config, GrantsConfig, SessionOverrides};
use crate::decision::{Denial, Reason};
use crate::detect::DetectRules;
use crate::fields::{FieldPath, RedactMode, Redaction};
use crate::grants::{GrantRules, MAX_DURATION_CEILING};
use crate::ipset::IpSet;
use crate::limits::{applies, ByteRule, Direction, RateRule};
use crate::routes::{Methods, RouteTable};
use crate::scope::RecordScope;
use crate::token::VerifiedToken;
use crate::window::{AccessWindows, Days, Hours, Window};

/// What a route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    Class(usize),
    Deny,
}

#[derive(Debug, Clone)]
pub struct RouteRule {
    /// The configured id, or `routes[N]`.
    pub id: String,
    pub action: RouteAction,
    /// `parent`: the resource of the record the path's `{param}` names, and that param's segment
    /// (0 is the segment after the first `/`).
    pub parent: Option<(String, usize)>,
}

#[derive(Debug, Clone)]
pub struct VendorRules {
    pub id: String,
    pub ips: IpSet,
    /// Bit i set: class i is permitted.
    classes: u128,
    pub session_idle: Duration,
    pub session_lifetime: Duration,
    /// When its agents may work (`vendors.access`); `None`: at any hour.
    pub access: Option<AccessWindows>,
    /// Where its hours of day are read (detection): its access windows' zone, else
    /// `detect.time_zone`, else UTC.
    pub zone: jiff::tz::TimeZone,
    /// The fields taken out of its JSON responses, per class index (`vendors.redact`); `None`:
    /// nothing for that class. Shared, so a response takes it without copying.
    pub redactions: Vec<Option<Arc<[Redaction]>>>,
    /// The records it may receive, per class index (`vendors.scope`); `None`: every record.
    pub scopes: Vec<Option<Arc<RecordScope>>>,
}

impl VendorRules {
    /// Whether the vendor may use class `class`.
    pub fn permits(&self, class: usize) -> bool {
        self.classes & (1 << class) != 0
    }
}

#[derive(Debug, Clone, Default)]
pub struct IdentityRules {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway_secs: u64,
    pub account_claim: String,
    pub vendor_claim: String,
    pub amr_any: Vec<String>,
    pub acr_any: Vec<String>,
    pub max_auth_age_secs: Option<u64>,
    pub max_token_bytes: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub trusted_proxies: IpSet,
    /// Every vendor's networks together: an address in none of them is refused before any token
    /// is looked at.
    pub any_vendor_ips: IpSet,
    pub vendors: Vec<VendorRules>,
    vendor_by_claim: HashMap<String, usize>,
    pub classes: Vec<String>,
    pub routes: Vec<RouteRule>,
    table: RouteTable,
    pub identity: IdentityRules,
    optional_suffix: Option<String>,
    pub rate_rules: Vec<RateRule>,
    pub egress_rules: Vec<ByteRule>,
    pub ingress_rules: Vec<ByteRule>,
    /// What just-in-time grants may open, and for how long (`[grants]`).
    pub grants: GrantRules,
    /// Behavioural detection (`[detect]`); `enabled` false without the section.
    pub detect: DetectRules,
}

/// What the identity-free checks established about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub client_ip: IpAddr,
    /// The normalized path: what is matched, and what is forwarded.
    pub path: String,
}

/// A verified token as authorization sees it under one policy ([`Policy::standing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Index into [`Policy::vendors`].
    pub vendor: usize,
    pub exp: u64,
    /// Whether `amr` or `acr` names a method the policy's `identity.amr_any` / `acr_any` accepts.
    pub mfa: bool,
    pub auth_time: Option<u64>,
    /// `auth_time`, else `iat`: where the absolute session lifetime is counted from.
    pub session_start: Option<u64>,
}

type CompileError = (Option<Range<usize>>, String);

/// Class names → a mask of their indices (`all_if_empty`: none named means every class),
/// reporting the names that no route uses.
type ClassMask<'a> = dyn Fn(&[Spanned<String>], bool, &mut Vec<CompileError>) -> u128 + 'a;

/// `[detect]`: defaults for what is left out, values within bounds, class names resolved, and the
/// zone for vendors without access windows.
fn compile_detect(
    d: Option<&crate::config::DetectConfig>,
    classes: &[String],
    class_mask: &ClassMask,
    problems: &mut Vec<CompileError>,
) -> (DetectRules, jiff::tz::TimeZone) {
    let mut rules = DetectRules::default();
    let Some(d) = d else {
        return (rules, jiff::tz::TimeZone::UTC);
    };
    rules.enabled = true;
    rules.export_classes = match &d.export_classes {
        Some(names) => class_mask(names, false, problems),
        None => classes
            .iter()
            .position(|c| c == "export")
            .map_or(0, |i| 1 << i),
    };
    let zone = match &d.time_zone {
        Some(name) => jiff::tz::TimeZone::get(name.get_ref()).unwrap_or_else(|_| {
            problems.push((
                Some(name.span()),
                format!("unknown time zone {:?}", name.get_ref()),
            ));
            jiff::tz::TimeZone::UTC
        }),
        None => jiff::tz::TimeZone::UTC,
    };
    if let Some(t) = d.lock_ttl {
        rules.lock_ttl = t.0;
    }
    if let Some(m) = d.maturity {
        rules.maturity = m.0;
    }
    let v = &d.volume;
    if let Some(a) = v.action {
        rules.volume.action = a;
    }
    for (z, slot) in [
        (&v.alert_z, &mut rules.volume.alert_z),
        (&v.lock_z, &mut rules.volume.lock_z),
    ] {
        if let Some(z) = z {
            if !(z.get_ref().is_finite() && *z.get_ref() > 0.0) {
                problems.push((
                    Some(z.span()),
                    "a z-score threshold must be more than 0".into(),
                ));
            }
            *slot = *z.get_ref();
        }
    }
    if rules.volume.lock_z < rules.volume.alert_z {
        let span = v.lock_z.as_ref().map(|z| z.span());
        problems.push((span, "detect.volume.lock_z must be at least alert_z".into()));
    }
    let alert_at = [v.min_requests, v.min_exports, v.min_bytes.map(|b| b.0)];
    let lock_at = [
        v.lock_min_requests,
        v.lock_min_exports,
        v.lock_min_bytes.map(|b| b.0),
    ];
    for i in 0..3 {
        if let Some(n) = alert_at[i] {
            rules.volume.minimum[i] = n;
        }
        if let Some(n) = lock_at[i] {
            rules.volume.lock_minimum[i] = n;
        }
    }
    if let Some(a) = d.new_network.action {
        rules.new_network = a;
    }
    if let Some(a) = d.unusual_hour.action {
        rules.unusual_hour = a;
    }
    if let Some(n) = d.unusual_hour.min_requests {
        rules.unusual_min_requests = n.max(1);
    }
    if let Some(a) = d.breadth.action {
        rules.breadth = a;
    }
    if let Some(n) = d.breadth.distinct {
        rules.breadth_distinct = n.max(1);
    }
    if let Some(w) = d.breadth.window {
        rules.breadth_window = w.0.max(std::time::Duration::from_secs(1));
    }
    if let Some(w) = &d.webhook {
        let url = w.url.get_ref();
        if !url.starts_with("https://") && !url.starts_with("http://") {
            problems.push((Some(w.url.span()), format!("{url:?} is not an http(s) URL")));
        }
    }
    (rules, zone)
}

/// `[grants]`: durations within bounds, the ticket pattern compiled (anchored), classes resolved.
fn compile_grants(
    g: &GrantsConfig,
    class_mask: &ClassMask,
    problems: &mut Vec<CompileError>,
) -> GrantRules {
    let mut rules = GrantRules::default();
    if let Some(d) = &g.max_duration {
        if d.get_ref().0.is_zero() || d.get_ref().0 > MAX_DURATION_CEILING {
            problems.push((
                Some(d.span()),
                "grants.max_duration must be more than 0s and at most 14d".into(),
            ));
        }
        rules.max_duration = d.get_ref().0;
    }
    if let Some(d) = &g.pending_ttl {
        if d.get_ref().0.is_zero() {
            problems.push((
                Some(d.span()),
                "grants.pending_ttl must be more than 0s".into(),
            ));
        }
        rules.pending_ttl = d.get_ref().0;
    }
    if let Some(p) = &g.ticket_pattern {
        match regex_lite::Regex::new(&format!("^(?:{})$", p.get_ref())) {
            Ok(re) => rules.ticket_pattern = Some(re),
            Err(e) => problems.push((
                Some(p.span()),
                format!("grants.ticket_pattern is not a regular expression: {e}"),
            )),
        }
    }
    rules.classes = class_mask(&g.classes, true, problems);
    rules
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let alg = match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "HS256" | "HS384" | "HS512" => {
            return Err(format!(
                "algorithm {name} is refused: HMAC needs a shared secret, and accepting it next to public keys invites key confusion"
            ))
        }
        "none" => return Err("algorithm none is never accepted".into()),
        other => {
            return Err(format!(
                "unknown algorithm {other:?} (expected RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA)"
            ))
        }
    };
    Ok(alg)
}

impl Policy {
    /// Compiles the policy sections of a parsed config, checking what serde could not. Every
    /// problem is reported, not only the first: an operator fixes them all in one pass.
    pub(crate) fn compile(c: &Config) -> Result<Policy, Vec<CompileError>> {
        let mut problems: Vec<CompileError> = Vec::new();
        macro_rules! err {
            ($span:expr, $msg:expr $(,)?) => {
                problems.push((Some($span), $msg))
            };
        }
        let id = &c.identity;

        // Identity.
        if id.audiences.get_ref().is_empty() {
            err!(
                id.audiences.span(),
                "identity.audiences must name at least one audience".into(),
            );
        }
        let mut algorithms = Vec::new();
        for a in &id.algorithms {
            match parse_algorithm(a.get_ref()) {
                Ok(alg) => algorithms.push(alg),
                Err(msg) => err!(a.span(), msg),
            }
        }
        if algorithms.is_empty() && id.algorithms.is_empty() {
            err!(
                id.issuer.span(),
                "identity.algorithms must not be empty".into(),
            );
        }
        let sources = [
            id.jwks_file.is_some(),
            id.jwks_url.is_some(),
            id.discovery_url.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            err!(
                id.issuer.span(),
                "identity needs exactly one of jwks_file, jwks_url or discovery_url".into(),
            );
        }
        for url in [&id.jwks_url, &id.discovery_url].into_iter().flatten() {
            if !url.get_ref().starts_with("https://") && !url.get_ref().starts_with("http://") {
                err!(
                    url.span(),
                    format!("{:?} is not an http(s) URL", url.get_ref()),
                );
            }
        }
        if id.amr_any.is_empty() && id.acr_any.is_empty() {
            err!(
                id.issuer.span(),
                "identity.amr_any and identity.acr_any are both empty: a token must prove MFA one way or the other".into(),
            );
        }
        if id.leeway.0.as_secs() > 300 {
            err!(id.issuer.span(), "identity.leeway may be at most 5m".into());
        }

        // Routes, collecting class names as they appear.
        let mut classes: Vec<String> = Vec::new();
        let mut routes = Vec::new();
        let mut table = RouteTable::default();
        for (i, r) in c.routes.iter().enumerate() {
            let action = match (&r.class, r.deny) {
                (Some(class), false) => {
                    let name = class.get_ref();
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        err!(
                            class.span(),
                            format!("class {name:?} must be letters, digits, '_' or '-'"),
                        );
                        continue;
                    }
                    let idx = match classes.iter().position(|c| c == name) {
                        Some(idx) => idx,
                        None => {
                            classes.push(name.clone());
                            classes.len() - 1
                        }
                    };
                    if idx >= 128 {
                        err!(class.span(), "at most 128 distinct classes".into());
                        continue;
                    }
                    RouteAction::Class(idx)
                }
                (None, true) => RouteAction::Deny,
                (Some(class), true) => {
                    err!(
                        class.span(),
                        "a route has either a class or deny = true, not both".into(),
                    );
                    continue;
                }
                (None, false) => {
                    err!(r.path.span(), "route needs a class (or deny = true)".into());
                    continue;
                }
            };
            let methods = if r.methods.is_empty() || r.methods.iter().any(|m| m.get_ref() == "*") {
                Methods::Any
            } else {
                let mut list = Vec::new();
                for m in &r.methods {
                    let ok = !m.get_ref().is_empty()
                        && m.get_ref().bytes().all(|b| b.is_ascii_uppercase());
                    match Method::from_bytes(m.get_ref().as_bytes()) {
                        Ok(method) if ok => list.push(method),
                        _ => err!(
                            m.span(),
                            format!(
                                "{:?} is not an HTTP method (uppercase, e.g. \"GET\")",
                                m.get_ref()
                            ),
                        ),
                    }
                }
                Methods::Only(list)
            };
            if let Err(e) = table.add(r.path.get_ref(), methods) {
                err!(
                    r.path.span(),
                    format!("route path {:?}: {e}", r.path.get_ref()),
                );
            }
            let parent = r.parent.as_ref().and_then(|p| {
                if !crate::scope::RESOURCES.contains(&p.get_ref().as_str()) {
                    err!(
                        p.span(),
                        format!(
                            "parent {:?}: one of {:?}",
                            p.get_ref(),
                            crate::scope::RESOURCES
                        ),
                    );
                    return None;
                }
                let at = r
                    .path
                    .get_ref()
                    .trim_start_matches('/')
                    .split('/')
                    .position(|s| s.starts_with('{') && s.ends_with('}'));
                if at.is_none() {
                    err!(
                        r.path.span(),
                        format!(
                            "route path {:?}: a route with a parent names it with a {{param}}",
                            r.path.get_ref()
                        ),
                    );
                }
                Some((p.get_ref().clone(), at?))
            });
            routes.push(RouteRule {
                id: r.id.clone().unwrap_or_else(|| format!("routes[{i}]")),
                action,
                parent,
            });
        }
        if c.routes.is_empty() {
            problems.push((
                None,
                "at least one [[routes]] entry is required (unmatched requests are refused)".into(),
            ));
        }

        // Class names in vendors' windows, limits and state. One that does not resolve is
        // reported and left out.
        let class_mask = |names: &[Spanned<String>],
                          all_if_empty: bool,
                          problems: &mut Vec<CompileError>|
         -> u128 {
            if names.is_empty() && all_if_empty {
                return u128::MAX;
            }
            let mut mask = 0u128;
            for n in names {
                match classes.iter().position(|c| c == n.get_ref()) {
                    Some(i) => mask |= 1 << i,
                    None => problems.push((
                        Some(n.span()),
                        format!("class {:?} is not used by any route", n.get_ref()),
                    )),
                }
            }
            mask
        };
        // Vendors.
        if c.vendors.is_empty() {
            problems.push((None, "at least one [[vendors]] entry is required".into()));
        }
        let mut vendors = Vec::new();
        let mut vendor_by_claim = HashMap::new();
        for (i, v) in c.vendors.iter().enumerate() {
            if vendors
                .iter()
                .any(|x: &VendorRules| x.id == *v.id.get_ref())
            {
                err!(
                    v.id.span(),
                    format!("vendor id {:?} is used twice", v.id.get_ref()),
                );
            }
            if v.ip_allow.get_ref().is_empty() {
                err!(
                    v.ip_allow.span(),
                    format!(
                        "vendor {:?}: ip_allow is empty, so every request would be refused",
                        v.id.get_ref()
                    ),
                );
            }
            let mut mask = 0u128;
            for class in &v.classes {
                match classes.iter().position(|c| c == class.get_ref()) {
                    Some(idx) => mask |= 1 << idx,
                    None => err!(
                        class.span(),
                        format!(
                            "class {:?} is not used by any route (known: {})",
                            class.get_ref(),
                            classes.join(", ")
                        ),
                    ),
                }
            }
            let claim_values: Vec<(String, Option<Range<usize>>)> = if v.claim_values.is_empty() {
                vec![(v.id.get_ref().clone(), Some(v.id.span()))]
            } else {
                v.claim_values
                    .iter()
                    .map(|s| (s.get_ref().clone(), Some(s.span())))
                    .collect()
            };
            for (value, span) in claim_values {
                if vendor_by_claim.insert(value.clone(), i).is_some() {
                    problems.push((span, format!("claim value {value:?} maps to two vendors")));
                }
            }
            let nets: Vec<_> = v.ip_allow.get_ref().iter().map(|n| *n.get_ref()).collect();
            let o = v.sessions.clone().unwrap_or(SessionOverrides::default());
            let access = v.access.as_ref().and_then(|a| {
                let windows = a
                    .windows
                    .iter()
                    .filter_map(|w| {
                        let days = Days::parse(w.days.get_ref())
                            .map_err(|e| problems.push((Some(w.days.span()), e.to_string())))
                            .ok()?;
                        let hours = Hours::parse(w.hours.get_ref())
                            .map_err(|e| problems.push((Some(w.hours.span()), e.to_string())))
                            .ok()?;
                        let classes = class_mask(&w.classes, false, &mut problems);
                        Some(Window {
                            days,
                            hours,
                            classes,
                        })
                    })
                    .collect();
                AccessWindows::new(a.time_zone.get_ref(), windows)
                    .map_err(|e| problems.push((Some(a.time_zone.span()), e.to_string())))
                    .ok()
            });
            let mut rules: Vec<(u128, Redaction)> = Vec::new();
            for r in &v.redact {
                let classes = class_mask(&r.classes, true, &mut problems);
                if r.fields.is_empty() {
                    problems.push((
                        None,
                        format!(
                            "vendor {:?}: a [[vendors.redact]] without fields",
                            v.id.get_ref()
                        ),
                    ));
                }
                let mut patterns = crate::patterns::Patterns::default();
                for p in &r.patterns {
                    patterns = patterns.with(*p);
                }
                let mode = match (&r.mode, patterns.is_empty()) {
                    (Some(m), false) => {
                        problems.push((
                            Some(m.span()),
                            "a redaction with patterns keeps its fields and replaces what matches \
                             in them: it takes no mode"
                                .into(),
                        ));
                        RedactMode::Scrub
                    }
                    (_, false) => RedactMode::Scrub,
                    (Some(m), true) => *m.get_ref(),
                    (None, true) => RedactMode::default(),
                };
                for f in &r.fields {
                    match f.get_ref().parse::<FieldPath>() {
                        Ok(path) => rules.push((
                            classes,
                            Redaction {
                                path,
                                mode,
                                patterns,
                            },
                        )),
                        Err(e) => problems.push((Some(f.span()), e.to_string())),
                    }
                }
            }
            let mut scopes: Vec<Option<Arc<RecordScope>>> = vec![None; classes.len()];
            for r in &v.scope {
                let mask = class_mask(&r.classes, true, &mut problems);
                if !crate::scope::RESOURCES.contains(&r.records.get_ref().as_str()) {
                    problems.push((
                        Some(r.records.span()),
                        format!(
                            "records {:?}: a scope judges one of {:?}",
                            r.records.get_ref(),
                            crate::scope::RESOURCES
                        ),
                    ));
                }
                let scope = RecordScope {
                    group_id: r.group_id.clone(),
                    brand_id: r.brand_id.clone(),
                    organization_id: r.organization_id.clone(),
                    tags: r.tags.clone(),
                };
                if scope.is_empty() {
                    problems.push((
                        Some(r.records.span()),
                        format!(
                            "vendor {:?}: a [[vendors.scope]] names no field (group_id, brand_id, \
                             organization_id, tags)",
                            v.id.get_ref()
                        ),
                    ));
                }
                let scope = Arc::new(scope);
                for (class, slot) in scopes.iter_mut().enumerate() {
                    if mask & (1 << class) == 0 {
                        continue;
                    }
                    if slot.is_some() {
                        let span = r.classes.first().map(|c| c.span());
                        problems.push((
                            span,
                            format!(
                                "vendor {:?}: two [[vendors.scope]] apply to class {:?}",
                                v.id.get_ref(),
                                classes[class]
                            ),
                        ));
                    }
                    *slot = Some(scope.clone());
                }
            }
            let redactions = (0..classes.len())
                .map(|class| {
                    let here: Vec<Redaction> = rules
                        .iter()
                        .filter(|(mask, _)| mask & (1 << class) != 0)
                        .map(|(_, r)| r.clone())
                        .collect();
                    (!here.is_empty()).then(|| Arc::from(here))
                })
                .collect();
            vendors.push(VendorRules {
                id: v.id.get_ref().clone(),
                ips: IpSet::new(&nets),
                classes: mask,
                redactions,
                scopes,
                access,
                zone: jiff::tz::TimeZone::UTC,
                session_idle: o.idle_timeout.unwrap_or(c.sessions.idle_timeout).0,
                session_lifetime: o.max_lifetime.unwrap_or(c.sessions.max_lifetime).0,
            });
        }
        for v in &vendors {
            if v.session_idle.is_zero() || v.session_lifetime.is_zero() {
                problems.push((
                    None,
                    format!(
                        "vendor {:?}: session timeouts must be greater than 0s",
                        v.id
                    ),
                ));
            }
        }

        // Limits and state. A name that does not resolve is reported and left out.
        let vendor_list = |names: &[Spanned<String>], problems: &mut Vec<CompileError>| {
            let mut out = Vec::new();
            for n in names {
                match vendors.iter().position(|v| v.id == *n.get_ref()) {
                    Some(i) => out.push(i),
                    None => problems.push((
                        Some(n.span()),
                        format!("no vendor has id {:?}", n.get_ref()),
                    )),
                }
            }
            out
        };
        let mut rate_rules: Vec<RateRule> = Vec::new();
        for r in &c.limits.rate {
            if rate_rules.iter().any(|x| x.id == *r.id.get_ref()) {
                problems.push((
                    Some(r.id.span()),
                    format!("rate limit id {:?} is used twice", r.id.get_ref()),
                ));
            }
            if r.requests == 0 || r.period.0.is_zero() || r.burst == Some(0) {
                problems.push((
                    Some(r.id.span()),
                    "a rate limit needs requests ≥ 1, burst ≥ 1 and a period greater than 0s"
                        .into(),
                ));
                continue;
            }
            rate_rules.push(RateRule {
                id: r.id.get_ref().clone(),
                per: r.per,
                classes: class_mask(&r.classes, false, &mut problems),
                vendors: vendor_list(&r.vendors, &mut problems),
                requests: r.requests,
                period: r.period.0,
                burst: r.burst.unwrap_or(r.requests),
            });
        }
        let byte_rules = |caps: &[ByteCap], kind: &str, problems: &mut Vec<CompileError>| {
            let mut out: Vec<ByteRule> = Vec::new();
            for b in caps {
                if out.iter().any(|x| x.id == *b.id.get_ref()) {
                    problems.push((
                        Some(b.id.span()),
                        format!("{kind} cap id {:?} is used twice", b.id.get_ref()),
                    ));
                }
                if b.max.0 == 0 || b.window.0.as_millis() < 1000 {
                    problems.push((
                        Some(b.id.span()),
                        format!("{kind} cap needs max > 0 and a window of at least 1s"),
                    ));
                    continue;
                }
                out.push(ByteRule {
                    id: b.id.get_ref().clone(),
                    per: b.per,
                    classes: class_mask(&b.classes, true, problems),
                    vendors: vendor_list(&b.vendors, problems),
                    max: b.max.0,
                    window: b.window.0,
                });
            }
            out
        };
        let egress_rules = byte_rules(&c.limits.egress, "egress", &mut problems);
        let ingress_rules = byte_rules(&c.limits.ingress, "ingress", &mut problems);
        let st = &c.state;
        let redis_urls = st
            .redis_url
            .iter()
            .chain(&st.redis_cluster)
            .chain(&st.redis_sentinels);
        for url in redis_urls {
            let u = url.get_ref();
            if !u.starts_with("redis://") && !u.starts_with("rediss://") {
                problems.push((
                    Some(url.span()),
                    format!("{u:?} is not a redis:// or rediss:// URL"),
                ));
            }
        }
        let ways = [
            st.redis_url.is_some(),
            !st.redis_cluster.is_empty(),
            !st.redis_sentinels.is_empty(),
        ]
        .iter()
        .filter(|w| **w)
        .count();
        if st.backend == Backend::Redis && ways == 0 {
            problems.push((
                None,
                "state.backend = \"redis\" needs state.redis_url (one server), \
                 state.redis_cluster (a cluster's nodes) or state.redis_sentinels"
                    .into(),
            ));
        }
        if ways > 1 {
            problems.push((
                None,
                "state: set one of redis_url, redis_cluster and redis_sentinels".into(),
            ));
        }
        if st.redis_sentinels.is_empty() != st.redis_sentinel_master.is_none() {
            problems.push((
                None,
                "state: redis_sentinels and redis_sentinel_master go together".into(),
            ));
        }
        if st.redis_password_env.is_some() && st.redis_password_file.is_some() {
            problems.push((
                None,
                "state: set redis_password_env or redis_password_file, not both".into(),
            ));
        }
        if !st.redis_cluster.is_empty()
            && (st.key_prefix.contains('{') || st.key_prefix.contains('}'))
        {
            problems.push((
                None,
                "state.key_prefix: no { or } with redis_cluster (they would choose the keys' slot)"
                    .into(),
            ));
        }
        let grants = compile_grants(&c.grants, &class_mask, &mut problems);
        let (detect, detect_zone) =
            compile_detect(c.detect.as_ref(), &classes, &class_mask, &mut problems);
        for v in &mut vendors {
            v.zone = v
                .access
                .as_ref()
                .map_or_else(|| detect_zone.clone(), |a| a.zone.clone());
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        let trusted: Vec<_> = c
            .network
            .trusted_proxies
            .iter()
            .map(|n| *n.get_ref())
            .collect();
        Ok(Policy {
            trusted_proxies: IpSet::new(&trusted),
            any_vendor_ips: IpSet::union(vendors.iter().map(|v| &v.ips)),
            vendors,
            vendor_by_claim,
            classes,
            routes,
            table,
            identity: IdentityRules {
                issuer: id.issuer.get_ref().clone(),
                audiences: id.audiences.get_ref().clone(),
                algorithms,
                leeway_secs: id.leeway.0.as_secs(),
                account_claim: id.account_claim.clone(),
                vendor_claim: id.vendor_claim.clone(),
                amr_any: id.amr_any.clone(),
                acr_any: id.acr_any.clone(),
                max_auth_age_secs: id.max_auth_age.map(|d| d.0.as_secs()),
                max_token_bytes: usize::try_from(id.max_token_size.0).unwrap_or(usize::MAX),
            },
            optional_suffix: c.routing.optional_suffix.clone().filter(|s| !s.is_empty()),
            rate_rules,
            egress_rules,
            ingress_rules,
            grants,
            detect,
        })
    }

    /// The route's class index, if it has one.
    fn class_of(&self, route: usize) -> Option<usize> {
        match self.routes.get(route)?.action {
            RouteAction::Class(c) => Some(c),
            RouteAction::Deny => None,
        }
    }

    /// Rate limits that apply to this vendor on this route.
    pub fn rate_rules_for(
        &self,
        vendor: usize,
        route: usize,
    ) -> impl Iterator<Item = (usize, &RateRule)> {
        let class = self.class_of(route);
        self.rate_rules
            .iter()
            .enumerate()
            .filter(move |(_, r)| class.is_some_and(|c| applies(r.classes, &r.vendors, c, vendor)))
    }

    /// The egress or ingress caps that apply to this vendor on this route.
    pub fn byte_rules_for(
        &self,
        direction: Direction,
        vendor: usize,
        route: usize,
    ) -> impl Iterator<Item = (usize, &ByteRule)> {
        let class = self.class_of(route);
        let rules = match direction {
            Direction::Ingress => &self.ingress_rules,
            Direction::Egress => &self.egress_rules,
        };
        rules
            .iter()
            .enumerate()
            .filter(move |(_, r)| class.is_some_and(|c| applies(r.classes, &r.vendors, c, vendor)))
    }

    pub fn vendor_for_claim(&self, value: &str) -> Option<usize> {
        self.vendor_by_claim.get(value).copied()
    }

    /// The records `vendor` may receive on `route` (`vendors.scope`), if it is scoped there.
    pub fn scope(&self, vendor: usize, route: usize) -> Option<&Arc<RecordScope>> {
        let class = self.class_of(route)?;
        self.vendors.get(vendor)?.scopes.get(class)?.as_ref()
    }

    /// The fields taken out of `vendor`'s responses on `route` (`vendors.redact`), if any.
    pub fn redactions(&self, vendor: usize, route: usize) -> Option<&Arc<[Redaction]>> {
        let class = self.class_of(route)?;
        self.vendors.get(vendor)?.redactions.get(class)?.as_ref()
    }

    pub fn class_name(&self, route: usize) -> Option<&str> {
        match self.routes.get(route)?.action {
            RouteAction::Class(c) => self.classes.get(c).map(String::as_str),
            RouteAction::Deny => None,
        }
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the
    /// rightmost `X-Forwarded-For` entry that is not itself a trusted proxy. A forged header from an
    /// untrusted peer is simply not read.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> Result<IpAddr, Denial> {
        let peer = peer.to_canonical();
        let Some(xff) = forwarded_for.filter(|_| self.trusted_proxies.contains(peer)) else {
            return Ok(peer);
        };
        let mut client = peer;
        for entry in xff.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let ip = parse_forwarded_ip(entry).ok_or_else(|| {
                Denial::new(
                    Reason::ForwardedForInvalid,
                    "X-Forwarded-For entry is not an IP address",
                )
            })?;
            client = ip;
            if !self.trusted_proxies.contains(ip) {
                break;
            }
        }
        Ok(client)
    }

    /// What [`Policy::decide`] reads of `token`, resolved
    /// once: a cached token's requests then check a few words kept together rather than walking
    /// its claims' strings (at 100,000 active accounts each walk is a handful of cache misses).
    /// Valid only under this policy: the MFA verdict depends on its `identity` rules.
    pub fn standing(&self, token: &VerifiedToken) -> Standing {
        let rules = &self.identity;
        let amr_ok = token.amr.iter().any(|m| rules.amr_any.contains(m));
        let acr_ok = token
            .acr
            .as_ref()
            .is_some_and(|a| rules.acr_any.contains(a));
        Standing {
            vendor: token.vendor,
            exp: token.exp,
            mfa: amr_ok || acr_ok,
            auth_time: token.auth_time,
            session_start: token.auth_time.or(token.iat),
        }
    }

    /// The parent record `route`'s `path` names (its resource and id), when the route has one
    /// (`routes.parent`): the segment at the route's `{param}`, without the optional suffix.
    pub fn parent_of<'a>(&self, route: usize, path: &'a str) -> Option<(&str, &'a str)> {
        let (resource, at) = self.routes.get(route)?.parent.as_ref()?;
        let segment = path.trim_start_matches('/').split('/').nth(*at)?;
        let id = self
            .optional_suffix
            .as_deref()
            .and_then(|suffix| segment.strip_suffix(suffix))
            .unwrap_or(segment);
        Some((resource.as_str(), id))
    }

    /// The route for a method and normalized path, the optional suffix ignored on the last segment.
    pub fn match_route(&self, method: &Method, path: &str) -> Option<usize> {
        let stripped = self
            .optional_suffix
            .as_deref()
            .and_then(|suffix| path.strip_suffix(suffix))
            .filter(|p| !p.ends_with('/'));
        self.table.find(method, stripped.unwrap_or(path))
    }
}

fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    // "1.2.3.4:5678" or "[2001:db8::1]:443"
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

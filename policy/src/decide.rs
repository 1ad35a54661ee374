//! The decision: every rule a request is held to, in the one order they are checked, and the trace
//! of what each found.
//!
//! The proxy, `vendorgate explain` and the policy tests all run this code, so what `explain` shows a
//! reviewer is what the proxy does. A new check (a lock, an access window, a grant) is one more step
//! here and nowhere else.
//!
//! The decision has two stages because the proxy does I/O between them: [`Policy::admit`] needs
//! nothing but the request (so an address that is no vendor's never costs a signature check or a
//! key fetch), then the token is verified (possibly fetching the IdP's keys again), then
//! [`Policy::decide`] judges the rest. [`Policy::evaluate`] runs both for callers that verified
//! the token up front.
//!
//! Tracing costs nothing when it is off: the proxy passes `()` (whose [`Trace::ON`] is false, so no
//! detail is ever formatted); `explain` and the tests pass a [`Vec<Step>`].

use std::net::IpAddr;

use http::Method;

use crate::controls::{Controls, Granted};
use crate::decision::{Allow, Denial, Reason};
use crate::locks::Subject;
use crate::path::normalize;
use crate::policy::{Admission, Policy, RouteAction, Standing};
use crate::token::VerifiedToken;

/// What the request presented as its credential, once the proxy has looked at it.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    /// No `Authorization: Bearer` token.
    Missing,
    /// A token that could not be verified (or no keys to verify it with), and why.
    Unverified(&'a Denial),
    /// A verified token, as this policy sees it ([`Policy::standing`]), and its claims.
    Verified(&'a Standing, &'a VerifiedToken),
}

impl<'a> Presented<'a> {
    /// The token step: a verified token's standing, or the refusal.
    pub fn verified(self) -> Result<&'a Standing, Denial> {
        match self {
            Presented::Verified(standing, _) => Ok(standing),
            Presented::Missing => Err(Denial::new(Reason::TokenMissing, "Authorization: Bearer")),
            Presented::Unverified(denial) => Err(denial.clone()),
        }
    }
}

/// What is known of an admitted request when it is decided.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub method: &'a Method,
    pub admission: &'a Admission,
    pub token: Presented<'a>,
    /// The locks and grants in force (see [`crate::controls`]).
    pub controls: &'a Controls,
}

/// A rule the decision consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// No lock in force targets the request's account, vendor, session or network.
    Lock,
    /// The path has one meaning once normalized.
    Path,
    /// The client's address, from the peer or a trusted proxy's `X-Forwarded-For`.
    ClientAddress,
    /// The address is in some vendor's `ip_allow`.
    Network,
    /// A bearer token is present and verifies.
    Token,
    /// `exp` (with the leeway) is not past.
    Expiry,
    /// The token's vendor is configured.
    Vendor,
    /// The address is in that vendor's `ip_allow`.
    VendorNetwork,
    /// `amr` / `acr` prove multi-factor authentication.
    Mfa,
    /// `auth_time` is recent enough (`identity.max_auth_age`).
    AuthAge,
    /// A route matches the method and path, and does not deny it.
    Route,
    /// The route's class is one the vendor may use, or an active grant opens it to the account.
    Class,
    /// The vendor's access windows (for that class) include this moment.
    AccessWindow,
    /// The session is younger than `sessions.max_lifetime`.
    SessionLifetime,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Lock => "lock",
            Check::Path => "path",
            Check::ClientAddress => "client",
            Check::Network => "network",
            Check::Token => "token",
            Check::Expiry => "expiry",
            Check::Vendor => "vendor",
            Check::VendorNetwork => "ip rule",
            Check::Mfa => "mfa",
            Check::AuthAge => "auth age",
            Check::Route => "route",
            Check::Class => "class",
            Check::AccessWindow => "window",
            Check::SessionLifetime => "session",
        }
    }
}

/// One rule consulted: what it looked at, and whether the request passed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub check: Check,
    pub detail: String,
    /// `None`: passed.
    pub refused: Option<Reason>,
}

/// Where the decision reports each rule it consulted.
pub trait Trace {
    /// Whether steps are wanted at all: when false, no detail is formatted.
    const ON: bool;
    fn push(&mut self, step: Step);
}

/// No trace: the proxy's request path.
impl Trace for () {
    const ON: bool = false;
    fn push(&mut self, _: Step) {}
}

impl Trace for Vec<Step> {
    const ON: bool = true;
    fn push(&mut self, step: Step) {
        Vec::push(self, step)
    }
}

/// A decision with its trace: what `explain` prints and the tests read.
#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Result<Allow, Denial>,
    pub trace: Vec<Step>,
}

/// A request as `admit` needs it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub peer: IpAddr,
    pub forwarded_for: Option<&'a str>,
    /// The path as sent, before normalization.
    pub path: &'a str,
}

/// Records a passed check (its detail formatted only when traced).
fn pass<T: Trace>(trace: &mut T, check: Check, detail: impl FnOnce() -> String) {
    if T::ON {
        trace.push(Step {
            check,
            detail: detail(),
            refused: None,
        });
    }
}

/// Records a failed check and returns its denial.
fn fail<T: Trace>(trace: &mut T, check: Check, denial: Denial) -> Denial {
    if T::ON {
        trace.push(Step {
            check,
            detail: denial.rule.to_string(),
            refused: Some(denial.reason),
        });
    }
    denial
}

impl Policy {
    /// The identity-free checks, in order: a path with one meaning, a believable client address,
    /// and that address belonging to some vendor.
    pub fn admit<T: Trace>(&self, arrival: &Arrival, trace: &mut T) -> Result<Admission, Denial> {
        let path = match normalize(arrival.path) {
            Ok(p) => p,
            Err(e) => {
                let denial = Denial::new(Reason::PathAmbiguous, e.to_string());
                return Err(fail(trace, Check::Path, denial));
            }
        };
        pass(trace, Check::Path, || format!("{} → {path}", arrival.path));
        let client_ip = self
            .client_ip(arrival.peer, arrival.forwarded_for)
            .map_err(|d| fail(trace, Check::ClientAddress, d))?;
        if client_ip != arrival.peer.to_canonical() {
            pass(trace, Check::ClientAddress, || {
                format!("{client_ip}, from a trusted proxy's X-Forwarded-For")
            });
        }
        if !self.any_vendor_ips.contains(client_ip) {
            let denial = Denial::new(
                Reason::IpNotAllowed,
                "no vendor's ip_allow contains the client address",
            );
            return Err(fail(trace, Check::Network, denial));
        }
        pass(trace, Check::Network, || {
            let vendors: Vec<&str> = self
                .vendors
                .iter()
                .filter(|v| v.ips.contains(client_ip))
                .map(|v| v.id.as_str())
                .collect();
            format!("{client_ip} belongs to vendor(s): {}", vendors.join(", "))
        });
        Ok(Admission { client_ip, path })
    }

    /// The decision for an admitted request: the locks, the token, its expiry, vendor, source
    /// address, MFA, age of the sign-in, route and class, the access window, and the session's
    /// lifetime, in that order, so the reason is the first rule broken. `now` is the request's time (seconds since the epoch).
    pub fn decide<T: Trace>(
        &self,
        facts: &Facts,
        now: u64,
        trace: &mut T,
    ) -> Result<Allow, Denial> {
        let controls = facts.controls;
        if controls.locks_to_check() {
            if controls.unknown {
                let denial = Denial::new(
                    Reason::StateUnavailable,
                    "locks: the lock list cannot be confirmed (locks.on_state_error = \"strict\")",
                );
                return Err(fail(trace, Check::Lock, denial));
            }
            let subject = self.subject(facts);
            if let Some(lock) = controls.matching(&subject, now) {
                let denial = Denial::new(
                    lock.reason(),
                    format!("locks[{}]: {}: {}", lock.id, lock.target, lock.message),
                );
                return Err(fail(trace, Check::Lock, denial));
            }
            pass(trace, Check::Lock, || {
                format!(
                    "{} lock(s) in force, none for this request",
                    controls.locks.len()
                )
            });
        }
        let token = facts
            .token
            .verified()
            .map_err(|denial| fail(trace, Check::Token, denial))?;
        let rules = &self.identity;
        if now > token.exp.saturating_add(rules.leeway_secs) {
            return Err(fail(
                trace,
                Check::Expiry,
                Denial::new(Reason::TokenExpired, "exp"),
            ));
        }
        pass(trace, Check::Expiry, || {
            format!("expires in {}s", token.exp.saturating_sub(now))
        });
        let Some(vendor) = self.vendors.get(token.vendor) else {
            let denial = Denial::new(Reason::VendorUnknown, "vendor no longer configured");
            return Err(fail(trace, Check::Vendor, denial));
        };
        pass(trace, Check::Vendor, || format!("vendor {}", vendor.id));
        let client_ip = facts.admission.client_ip;
        if !vendor.ips.contains(client_ip) {
            let denial = Denial::new(
                Reason::IpNotAllowed,
                format!("vendors[{}].ip_allow", vendor.id),
            );
            return Err(fail(trace, Check::VendorNetwork, denial));
        }
        pass(trace, Check::VendorNetwork, || {
            format!("vendors[{}].ip_allow contains {client_ip}", vendor.id)
        });
        if !token.mfa {
            let denial = Denial::new(Reason::MfaMissing, "identity.amr_any / identity.acr_any");
            return Err(fail(trace, Check::Mfa, denial));
        }
        pass(trace, Check::Mfa, || {
            "amr or acr satisfies identity.amr_any / acr_any".into()
        });
        if let Some(max_age) = rules.max_auth_age_secs {
            let denial = match token.auth_time {
                Some(t) if now.saturating_sub(t) <= max_age => None,
                Some(_) => Some(Denial::new(Reason::AuthTooOld, "identity.max_auth_age")),
                None => Some(Denial::new(
                    Reason::AuthTooOld,
                    "identity.max_auth_age (no auth_time claim)",
                )),
            };
            if let Some(denial) = denial {
                return Err(fail(trace, Check::AuthAge, denial));
            }
            pass(trace, Check::AuthAge, || {
                format!("signed in within identity.max_auth_age ({max_age}s)")
            });
        }
        let Some(route) = self.match_route(facts.method, &facts.admission.path) else {
            let denial = Denial::new(Reason::RouteUnknown, "no route matches (default deny)");
            return Err(fail(trace, Check::Route, denial));
        };
        let rule = &self.routes[route];
        let class = match rule.action {
            RouteAction::Deny => {
                let denial = Denial::new(Reason::RouteDenied, format!("routes[{}]", rule.id));
                return Err(fail(trace, Check::Route, denial));
            }
            RouteAction::Class(c) => c,
        };
        pass(trace, Check::Route, || {
            format!("{} → class {}", rule.id, self.classes[class])
        });
        let class_name = self.classes[class].as_str();
        let mut grant = None;
        if vendor.permits(class) {
            pass(trace, Check::Class, || {
                format!("vendors[{}].classes has {class_name}", vendor.id)
            });
        } else {
            let account = match facts.token {
                Presented::Verified(_, t) => t.account.as_str(),
                _ => "",
            };
            match controls.granted(&vendor.id, account, class_name, now) {
                Granted::By(g) => {
                    pass(trace, Check::Class, || {
                        format!(
                            "vendors[{}].classes lacks {class_name}; grant {} opens it until {}",
                            vendor.id,
                            g.id,
                            g.expires_at.unwrap_or(0)
                        )
                    });
                    grant = Some(g.id.clone());
                }
                Granted::Locked(lock) => {
                    let denial = Denial::new(
                        lock.reason(),
                        format!("locks[{}]: {}: {}", lock.id, lock.target, lock.message),
                    );
                    return Err(fail(trace, Check::Class, denial));
                }
                Granted::No => {
                    let denial = Denial::new(
                        Reason::ClassNotPermitted,
                        format!("vendors[{}].classes lacks {class_name}", vendor.id),
                    );
                    return Err(fail(trace, Check::Class, denial));
                }
            }
        }
        if let Some(access) = &vendor.access {
            if let Err(moment) = access.check(class, now) {
                let denial = Denial::new(
                    Reason::OutsideAccessWindow,
                    format!(
                        "vendors[{}].access: {} is outside {}",
                        vendor.id,
                        moment.text,
                        access.describe(class)
                    ),
                );
                return Err(fail(trace, Check::AccessWindow, denial));
            }
            pass(trace, Check::AccessWindow, || {
                format!(
                    "{} is inside {}",
                    access.moment(now).text,
                    access.describe(class)
                )
            });
        }
        let lifetime = vendor.session_lifetime.as_secs();
        let denial = match token.session_start {
            None => Some("no auth_time or iat to count the session from"),
            Some(start) if now.saturating_sub(start) > lifetime => Some("sessions.max_lifetime"),
            Some(_) => None,
        };
        if let Some(rule) = denial {
            let denial = Denial::new(Reason::SessionLifetimeExpired, rule);
            return Err(fail(trace, Check::SessionLifetime, denial));
        }
        pass(trace, Check::SessionLifetime, || {
            "within sessions.max_lifetime (the idle timeout is checked with the limits)".into()
        });
        Ok(Allow {
            vendor: token.vendor,
            route,
            grant,
        })
    }

    /// Who the request is, as far as it is known, for the locks.
    fn subject<'a>(&'a self, facts: &Facts<'a>) -> Subject<'a> {
        let client_ip = facts.admission.client_ip;
        match facts.token {
            Presented::Verified(standing, token) => Subject {
                client_ip,
                vendor: self.vendors.get(standing.vendor).map(|v| v.id.as_str()),
                account: Some(&token.account),
                sid: token.sid.as_deref(),
                jti: token.jti.as_deref(),
                grant: None,
            },
            _ => Subject {
                client_ip,
                vendor: None,
                account: None,
                sid: None,
                jti: None,
                grant: None,
            },
        }
    }

    /// Both stages for a request whose token was verified up front, with the trace: what
    /// `explain` prints and the tests check.
    pub fn evaluate(
        &self,
        arrival: &Arrival,
        method: &Method,
        token: Presented,
        controls: &Controls,
        now: u64,
    ) -> Decision {
        let mut trace = Vec::new();
        let outcome = self.admit(arrival, &mut trace).and_then(|admission| {
            let facts = Facts {
                method,
                admission: &admission,
                token,
                controls,
            };
            self.decide(&facts, now, &mut trace)
        });
        Decision { outcome, trace }
    }
}

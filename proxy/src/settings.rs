//! Reading the config file from disk and checking everything it points to, so that `vendorgate check`
//! and startup catch the same mistakes.

use std::path::{Path, PathBuf};

use vendorgate_certs::{client_config, load_certified_key, load_certs, load_key, Alpn};
use vendorgate_policy::config::Credential;
use vendorgate_policy::KeySet;

use crate::credential::{authorization, CredentialError};
use vendorgate_policy::{Config, ConfigErrors};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {cause}")]
    Read {
        path: PathBuf,
        /// Not `source`: the message already says it, and a chain would say it twice.
        cause: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}

/// Reads and parses `path`; relative paths inside resolve against the file's directory.
pub fn load_config(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|cause| LoadError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    let mut config = Config::from_toml(&text, &path.display().to_string())?;
    config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
    config.version = format!(
        "sha256:{}",
        &crate::trail::chain::sha256_hex(text.as_bytes())[..16]
    );
    Ok(config)
}

/// Whether a problem `check` found is in the file's world or the machine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A file the config names is missing or unusable: fix the file or the config.
    Error,
    /// Only matters where the proxy runs: a secret's environment variable that is not set here.
    RunTime,
}

/// One thing `check` found wrong beyond the config's own text.
#[derive(Debug, Clone)]
pub struct Problem {
    pub severity: Severity,
    pub message: String,
}

/// Loads every file and secret the config names (TLS certificate and key, CA bundles, the JWKS
/// file, the upstream credential) and reports each one that is unusable, not only the first.
/// Network sources (a JWKS URL, OIDC discovery, the upstream itself) are not contacted.
pub fn check_environment(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut error = |message: String| {
        problems.push(Problem {
            severity: Severity::Error,
            message,
        })
    };
    let (cert, key) = (&config.server.tls_cert, &config.server.tls_key);
    match (load_certs(cert), load_key(key)) {
        (Ok(_), Ok(_)) => {
            if let Err(e) = load_certified_key(cert, key) {
                error(format!("server.tls_key: {e}"));
            }
        }
        (cert, key) => {
            if let Err(e) = cert {
                error(format!("server.tls_cert: {e}"));
            }
            if let Err(e) = key {
                error(format!("server.tls_key: {e}"));
            }
        }
    }
    if let Err(e) = client_config(config.upstream.ca_bundle.as_deref(), Alpn::Http11) {
        error(format!("upstream.ca_bundle: {e}"));
    }
    if let Some(ca) = &config.identity.ca_bundle {
        if let Err(e) = client_config(Some(ca), Alpn::Http11) {
            error(format!("identity.ca_bundle: {e}"));
        }
    }
    if let Some(path) = &config.identity.jwks_file {
        match std::fs::read_to_string(path) {
            Err(cause) => error(format!(
                "identity.jwks_file: {}: cannot read: {cause}",
                path.display()
            )),
            Ok(text) => {
                if let Err(e) = KeySet::from_jwks(&text) {
                    error(format!("identity.jwks_file: {}: {e}", path.display()));
                }
            }
        }
    }
    if let Some(cred) = &config.upstream.credential {
        match authorization(cred) {
            Ok(_) => {}
            Err(e @ CredentialError::MissingEnv(_)) => problems.push(Problem {
                severity: Severity::RunTime,
                message: e.to_string(),
            }),
            Err(e) => problems.push(Problem {
                severity: Severity::Error,
                message: e.to_string(),
            }),
        }
    }
    // Redis's password and CA: read as the proxy will read them (a variable not set here is a
    // run-time matter, like the upstream credential's).
    if let Err(crate::state::link::LinkError::Config { field, cause }) =
        crate::state::link::Target::from_config(&config.state)
    {
        problems.push(Problem {
            severity: if field == "redis_password_env" {
                Severity::RunTime
            } else {
                Severity::Error
            },
            message: format!("state.{field}: {cause}"),
        });
    }
    // The OTLP protocol comes from the environment only; one this build cannot speak stops `run`.
    if crate::telemetry::otel::wanted(config).is_some() {
        if let Some(message) = crate::telemetry::otel::unsupported_protocol() {
            problems.push(Problem {
                severity: Severity::RunTime,
                message: format!("otel: {message}"),
            });
        }
    }
    problems
}

/// A few lines a person can read to confirm the file says what they meant.
pub fn summary(config: &Config) -> String {
    let s = &config.server;
    let u = &config.upstream;
    let ca = u.ca_bundle.as_ref().map_or_else(
        || "built-in web PKI roots".to_string(),
        |p| p.display().to_string(),
    );
    let mut out = format!(
        "listen     https://{} (cert {}, key {})\n\
         admin      http://{}\n\
         upstream   {} (trusting {}; HTTP/2 {})\n\
         limits     {} connections, headers {} within {}, request body {}, {} streams per HTTP/2 connection\n\
         timeouts   TLS handshake {}, idle keep-alive {}, upstream connect {}, upstream response {}, shutdown grace {} (idle connections {})\n",
        s.listen.get_ref(),
        s.tls_cert.display(),
        s.tls_key.display(),
        config.admin.listen.get_ref(),
        u.url,
        ca,
        if u.http2 { "offered" } else { "off" },
        s.max_connections,
        s.max_header_size,
        s.header_read_timeout,
        s.max_request_body,
        s.max_concurrent_streams,
        s.tls_handshake_timeout,
        s.idle_timeout,
        u.connect_timeout,
        u.response_timeout,
        s.shutdown_grace,
        vendorgate_policy::units::HumanDuration(s.shutdown_idle_wait()),
    );
    let id = &config.identity;
    let keys = if let Some(p) = &id.jwks_file {
        format!("JWKS file {}", p.display())
    } else if let Some(u) = &id.jwks_url {
        format!("JWKS {}", u.get_ref())
    } else {
        format!(
            "OIDC discovery {}",
            id.discovery_url.as_ref().map_or("", |u| u.get_ref())
        )
    };
    out.push_str(&format!(
        "identity   issuer {} for {}; keys from {keys}; MFA: amr in [{}]{}{}\n",
        id.issuer.get_ref(),
        id.audiences.get_ref().join(", "),
        id.amr_any.join(", "),
        if id.acr_any.is_empty() {
            String::new()
        } else {
            format!(" or acr in [{}]", id.acr_any.join(", "))
        },
        id.max_auth_age
            .map_or(String::new(), |a| format!("; sign-in at most {a} old")),
    ));
    let p = &config.policy;
    for v in &config.vendors {
        out.push_str(&format!(
            "vendor     {} ({} networks; classes {})\n",
            v.id.get_ref(),
            v.ip_allow.get_ref().len(),
            v.classes
                .iter()
                .map(|c| c.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let denies = p
        .routes
        .iter()
        .filter(|r| r.action == vendorgate_policy::RouteAction::Deny)
        .count();
    out.push_str(&format!(
        "routes     {} ({} explicit denies; classes {}); anything else is refused\n",
        p.routes.len(),
        denies,
        p.classes.join(", ")
    ));
    out.push_str(&match &u.credential {
        Some(Credential::ZendeskApiToken { email, .. }) => {
            format!("credential Zendesk API token as {email}, injected upstream\n")
        }
        Some(Credential::Bearer { .. }) => {
            "credential bearer token, injected upstream\n".to_string()
        }
        None => "credential none: the agent's Authorization is removed and nothing replaces it\n"
            .to_string(),
    });
    if u.url.scheme == vendorgate_policy::config::Scheme::Http {
        out.push_str("warning    the upstream is plain HTTP: anything injected upstream travels unencrypted\n");
    }
    out
}

//! The configuration file's model: TOML → serde structs (`deny_unknown_fields`) → checked values.
//!
//! Every error, whether from the TOML syntax, an unknown field, a bad value or a cross-field check,
//! comes back as a [`ConfigError`] naming `file:line:column`, because operators fix configs from a
//! terminal and need to land on the exact spot. Relative paths stay relative here; the proxy resolves
//! them against the config file's directory (this crate does no I/O).

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use crate::units::{ByteSize, HumanDuration};

/// A configuration problem, located in the source text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    pub message: String,
}

impl ConfigError {
    fn at(file: &str, text: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let (line, column) = span.map(|s| line_column(text, s.start)).unwrap_or((1, 1));
        ConfigError {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Every problem found in a configuration, in the order of the checks (each with its place).
/// A file that does not parse as TOML has one: parsing stops there. A file that parses has all
/// the checks run, so an operator sees every problem at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// The first problem (what a caller that shows one shows).
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    #[serde(default)]
    pub admin: Admin,
    pub upstream: Upstream,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub network: Network,
    pub identity: Identity,
    /// The subcontracting companies. At least one.
    pub vendors: Vec<Vendor>,
    /// Method + path → class or deny. Unmatched requests are refused.
    pub routes: Vec<Route>,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default)]
    pub sessions: Sessions,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub locks: LocksConfig,
    #[serde(default)]
    pub grants: GrantsConfig,
    /// Behavioural baselines and detectors; absent: off.
    #[serde(default)]
    pub detect: Option<DetectConfig>,
    #[serde(default)]
    pub trail: Trail,
    /// OpenTelemetry export (OTLP over HTTP); absent: off.
    #[serde(default)]
    pub otel: Option<Otel>,
    /// Identifies the loaded file (the proxy sets a hash of its text): recorded with each decision.
    #[serde(skip)]
    pub version: String,
    /// The compiled form of `network`, `identity`, `vendors` and `routes`, filled by
    /// [`Config::from_toml`]: holding a `Config` means holding a valid policy.
    #[serde(skip)]
    pub policy: crate::Policy,
}

/// Where client addresses come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Peers whose `X-Forwarded-For` is believed (load balancers in front of the proxy). The client
    /// is the rightmost address in the chain that is not itself a trusted proxy.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<IpNetwork>>,
}

/// The identity provider and what a token must prove.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub issuer: Spanned<String>,
    pub audiences: Spanned<Vec<String>>,
    /// Signature algorithms accepted. HMAC (`HS*`) is refused at load time: a shared secret cannot
    /// come from an IdP's public key set, and allowing it invites key-confusion attacks.
    #[serde(default = "defaults::algorithms")]
    pub algorithms: Vec<Spanned<String>>,
    /// Exactly one of `jwks_file`, `jwks_url`, `discovery_url`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub jwks_url: Option<Spanned<String>>,
    /// An OIDC issuer URL; `/.well-known/openid-configuration` is appended to find `jwks_uri`.
    #[serde(default)]
    pub discovery_url: Option<Spanned<String>>,
    /// CAs to trust for the IdP's HTTPS endpoints instead of the web PKI roots.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "defaults::leeway")]
    pub leeway: HumanDuration,
    #[serde(default = "defaults::account_claim")]
    pub account_claim: String,
    /// The claim naming the vendor; its value is matched against each vendor's `claim_values`.
    #[serde(default = "defaults::vendor_claim")]
    pub vendor_claim: String,
    /// `amr` must contain one of these…
    #[serde(default = "defaults::amr_any")]
    pub amr_any: Vec<String>,
    /// …or `acr` must be one of these.
    #[serde(default)]
    pub acr_any: Vec<String>,
    /// `auth_time` (the sign-in itself) may be at most this old. Tokens without it are refused.
    #[serde(default)]
    pub max_auth_age: Option<HumanDuration>,
    /// How often the key set is fetched again from a URL.
    #[serde(default = "defaults::jwks_refresh")]
    pub jwks_refresh: HumanDuration,
    /// A token with an unknown `kid` triggers a fetch at most this often.
    #[serde(default = "defaults::jwks_min_refetch")]
    pub jwks_min_refetch: HumanDuration,
    /// Verified tokens remembered (until their `exp`) so hot sessions skip signature checks.
    #[serde(default = "defaults::token_cache_entries")]
    pub token_cache_entries: usize,
    /// Tokens longer than this are refused unread.
    #[serde(default = "defaults::max_token_size")]
    pub max_token_size: ByteSize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vendor {
    pub id: Spanned<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Values of `identity.vendor_claim` that mean this vendor (default: the vendor's id).
    #[serde(default)]
    pub claim_values: Vec<Spanned<String>>,
    /// Networks the vendor's agents connect from.
    pub ip_allow: Spanned<Vec<Spanned<IpNetwork>>>,
    /// Route classes the vendor may use.
    pub classes: Vec<Spanned<String>>,
    /// Overrides of the global `[sessions]` for this vendor's agents.
    #[serde(default)]
    pub sessions: Option<SessionOverrides>,
    /// When its agents may work; absent: at any hour.
    #[serde(default)]
    pub access: Option<Access>,
    /// Fields of JSON responses its agents never receive (`[[vendors.redact]]`).
    #[serde(default)]
    pub redact: Vec<RedactRule>,
    /// The records its agents may receive at all (`[[vendors.scope]]`).
    #[serde(default)]
    pub scope: Vec<ScopeRule>,
}

/// The records a vendor's agents may receive, by the records' own fields (see
/// `vendorgate_policy::scope`): `group_id = [360004, 360005]`, `brand_id = [1200]`,
/// `organization_id = […]`, `tags = ["vip"]` (any one), for `classes` (default: every class). Only
/// these fields exist: any other name is a config error at its file:line:column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRule {
    /// The resource judged (`"tickets"`, the default and for now the only one).
    #[serde(default = "defaults::scope_records")]
    pub records: Spanned<String>,
    #[serde(default)]
    pub group_id: Vec<u64>,
    #[serde(default)]
    pub brand_id: Vec<u64>,
    #[serde(default)]
    pub organization_id: Vec<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub classes: Vec<Spanned<String>>,
}

/// Fields taken out of a vendor's JSON responses as they stream (see `vendorgate_policy::fields`
/// for the path syntax): `fields = ["**.email", "users[].phone"]`, `mode = "replace"` (the value
/// becomes `"[redacted]"`, the default) or `"remove"` (key and value go), or `patterns =
/// ["phone", "iban"]` (only what matches inside the text goes), for `classes` (default: every
/// class).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    pub fields: Vec<Spanned<String>>,
    /// `"replace"` (the default) or `"remove"`; none with `patterns`.
    #[serde(default)]
    pub mode: Option<Spanned<crate::fields::RedactMode>>,
    /// Free-text patterns (`"phone"`, `"iban"`) replaced inside the fields' string values, the
    /// rest of the text kept (see `vendorgate_policy::patterns`). Off unless named.
    #[serde(default)]
    pub patterns: Vec<crate::patterns::Pattern>,
    #[serde(default)]
    pub classes: Vec<Spanned<String>>,
}

/// A vendor's access windows (see `vendorgate_policy::window`): the days and hours in its own time
/// zone when its agents may work. Outside them a request is refused, 403 `outside_access_window`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// An IANA zone name (`"Africa/Tunis"`); windows are wall-clock time there, daylight saving
    /// included.
    pub time_zone: Spanned<String>,
    pub windows: Vec<AccessWindow>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessWindow {
    /// `"mon-sat"`, `"mon,wed,fri"`.
    pub days: Spanned<String>,
    /// `"08:00-19:00"`; `"22:00-06:00"` runs overnight into the next day.
    pub hours: Spanned<String>,
    /// Only for these classes, replacing the windows that name none (default: every class that no
    /// window names).
    #[serde(default)]
    pub classes: Vec<Spanned<String>>,
}

/// How long a signed-in session may last.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sessions {
    /// No request for this long ends the session; the token is refused until the agent signs in
    /// again (a new sign-in is a new session).
    #[serde(default = "defaults::session_idle")]
    pub idle_timeout: HumanDuration,
    /// Counted from `auth_time` (else `iat`): past it the session is over whatever the token's `exp`.
    #[serde(default = "defaults::session_lifetime")]
    pub max_lifetime: HumanDuration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            idle_timeout: defaults::session_idle(),
            max_lifetime: defaults::session_lifetime(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionOverrides {
    #[serde(default)]
    pub idle_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub max_lifetime: Option<HumanDuration>,
}

/// Who a limit counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Each agent separately.
    Account,
    /// All of a vendor's agents together.
    Vendor,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Request rate limits (GCRA) on route classes, above all `export`.
    #[serde(default)]
    pub rate: Vec<RateLimit>,
    /// Response bytes leaving per window.
    #[serde(default)]
    pub egress: Vec<ByteCap>,
    /// Request bytes arriving per window.
    #[serde(default)]
    pub ingress: Vec<ByteCap>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub id: Spanned<String>,
    pub per: Scope,
    /// Classes the limit applies to (default: `["export"]`).
    #[serde(default = "defaults::export_class")]
    pub classes: Vec<Spanned<String>>,
    /// `requests` per `period`, evenly spaced…
    pub requests: u32,
    pub period: HumanDuration,
    /// …with up to `burst` at once (default: `requests`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Only for these vendors (default: all).
    #[serde(default)]
    pub vendors: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteCap {
    pub id: Spanned<String>,
    pub per: Scope,
    pub max: ByteSize,
    /// Fixed windows aligned to the epoch (`"1h"`: each clock hour UTC).
    pub window: HumanDuration,
    /// Classes counted (default: all).
    #[serde(default)]
    pub classes: Vec<Spanned<String>>,
    #[serde(default)]
    pub vendors: Vec<Spanned<String>>,
}

/// Where sessions and counters live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default)]
    pub backend: Backend,
    /// One Redis server: `redis://host:port/db`, or `rediss://` for TLS. With `backend =
    /// "redis"`, set this or `redis_cluster`.
    #[serde(default)]
    pub redis_url: Option<Spanned<String>>,
    /// A Redis Cluster: some of its nodes (`redis://host:port` or `rediss://`); the rest are
    /// found from them. Keys are then hash-tagged so every script stays in one slot.
    #[serde(default)]
    pub redis_cluster: Vec<Spanned<String>>,
    /// Redis behind Sentinel: the sentinels (`redis://host:26379`), asked for the master of
    /// `redis_sentinel_master` at the start and again after a failover.
    #[serde(default)]
    pub redis_sentinels: Vec<Spanned<String>>,
    #[serde(default)]
    pub redis_sentinel_master: Option<String>,
    /// A Redis ACL user (with the password below; without one, the URL's or the default user).
    #[serde(default)]
    pub redis_username: Option<String>,
    /// The password, from the environment or a file, never the config itself.
    #[serde(default)]
    pub redis_password_env: Option<String>,
    #[serde(default)]
    pub redis_password_file: Option<PathBuf>,
    /// PEM CA certificates trusted for `rediss://` (default: the system's roots).
    #[serde(default)]
    pub redis_ca: Option<PathBuf>,
    /// When the shared state cannot be reached: refuse (`deny`) or use this replica's memory.
    #[serde(default)]
    pub on_state_error: OnStateError,
    /// Per state operation.
    #[serde(default = "defaults::state_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
    /// Keys kept in memory before idle ones are evicted (sessions and byte counters each).
    #[serde(default = "defaults::max_keys")]
    pub max_keys: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: Backend::default(),
            redis_url: None,
            redis_cluster: Vec::new(),
            redis_sentinels: Vec::new(),
            redis_sentinel_master: None,
            redis_username: None,
            redis_password_env: None,
            redis_password_file: None,
            redis_ca: None,
            on_state_error: OnStateError::default(),
            timeout: defaults::state_timeout(),
            key_prefix: defaults::key_prefix(),
            max_keys: defaults::max_keys(),
        }
    }
}

/// The decision trail: one tamper-evident record per decision.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trail {
    #[serde(default)]
    pub sink: TrailSink,
    /// JSON lines file (with `sink = "file"`); rotated files sit beside it.
    #[serde(default = "defaults::trail_path")]
    pub path: PathBuf,
    #[serde(default = "defaults::trail_max_file_size")]
    pub max_file_size: ByteSize,
    #[serde(default = "defaults::trail_rotate_every")]
    pub rotate_every: HumanDuration,
    #[serde(default)]
    pub fsync: Fsync,
    /// Records waiting for the writer; when full, new requests wait for room or are refused.
    #[serde(default = "defaults::trail_queue")]
    pub queue: usize,
    /// What happens to a request that cannot be recorded: refused (`deny`) or served with the
    /// missing record counted and logged (`allow`).
    #[serde(default)]
    pub on_log_failure: OnLogFailure,
    /// Connections refused before any request (failed TLS handshakes, heads the HTTP parser
    /// refused) are written as at most one record per client address and stage per interval,
    /// with their count: a flood of them cannot fill the disk.
    #[serde(default = "defaults::trail_refusal_interval")]
    pub refusal_interval: HumanDuration,
}

impl Default for Trail {
    fn default() -> Self {
        Trail {
            sink: TrailSink::default(),
            path: defaults::trail_path(),
            max_file_size: defaults::trail_max_file_size(),
            rotate_every: defaults::trail_rotate_every(),
            fsync: Fsync::default(),
            queue: defaults::trail_queue(),
            on_log_failure: OnLogFailure::default(),
            refusal_interval: defaults::trail_refusal_interval(),
        }
    }
}

/// Where spans, metrics and (opt-in) decision records go, over OTLP/HTTP with protobuf. What is
/// not set here comes from the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `…_HEADERS`,
/// `…_TIMEOUT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
/// `OTEL_METRIC_EXPORT_INTERVAL`…), as every OpenTelemetry SDK reads them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Otel {
    /// An OTLP/HTTP endpoint such as `http://otel-collector:4318` (`/v1/traces`, `/v1/metrics`
    /// and `/v1/logs` are appended). Default: the variables, else `http://localhost:4318`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Default: `OTEL_SERVICE_NAME`, else `vendorgate`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// How often metrics are pushed. Default: `OTEL_METRIC_EXPORT_INTERVAL`, else 60 s.
    #[serde(default)]
    pub export_interval: Option<HumanDuration>,
    /// CAs for an HTTPS endpoint instead of the web PKI roots.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Every decision record also as an OTLP log record (the file trail stays the record of
    /// truth; the copy never slows a request: a bounded queue, drops counted).
    #[serde(default)]
    pub decisions: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrailSink {
    #[default]
    File,
    Stdout,
    /// No trail at all (for measuring its cost; never in production).
    Off,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// After every batch the writer takes from the queue.
    Always,
    /// At most once a second, and at rotation and shutdown.
    #[default]
    Interval,
    /// Left to the operating system.
    Never,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLogFailure {
    #[default]
    Deny,
    Allow,
}

/// What happens to a request header whose name holds an underscore. Many back ends fold `_` into
/// `-` (CGI, Rack, WSGI), so `x_vendorgate_agent` or `transfer_encoding` could pass for a header
/// the proxy sets or strips.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnderscoreHeaders {
    /// Removed before the request goes upstream (nginx's `underscores_in_headers off`).
    #[default]
    Drop,
    /// The request is refused: 400 `header_name_invalid`.
    Refuse,
    /// Passed on.
    Allow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Memory,
    Redis,
}

/// The kill switch's own settings (the locks live in Redis with `state.backend = "redis"`, else in
/// `locks.json` beside the trail).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocksConfig {
    /// While Redis cannot confirm the lock list: refuse everyone (`strict`, 503 `state_unavailable`)
    /// or keep deciding with the locks last seen (`last_known`).
    #[serde(default)]
    pub on_state_error: OnLockStateError,
}

/// `[detect]` (see `vendorgate_policy::detect`): the section switches detection on; every key has a
/// default (README "Detect: baselines" says why each).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Classes whose requests count as exports (default: `["export"]`, when a route uses it).
    #[serde(default)]
    pub export_classes: Option<Vec<Spanned<String>>>,
    /// Where "the hour of day" is read for vendors without access windows (default `"UTC"`; a
    /// vendor with `[vendors.access]` uses its zone).
    #[serde(default)]
    pub time_zone: Option<Spanned<String>>,
    /// How long a detector's lock holds (default `"4h"`).
    #[serde(default)]
    pub lock_ttl: Option<HumanDuration>,
    /// History younger than this is compared with the vendor's peers (default `"7d"`).
    #[serde(default)]
    pub maturity: Option<HumanDuration>,
    /// Where alerts are POSTed as JSON (retried, never blocking a request); absent: none.
    #[serde(default)]
    pub webhook: Option<Webhook>,
    #[serde(default)]
    pub volume: VolumeConfig,
    #[serde(default)]
    pub new_network: DetectorConfig,
    #[serde(default)]
    pub unusual_hour: UnusualHourConfig,
    #[serde(default)]
    pub breadth: BreadthConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: Spanned<String>,
    /// CAs to trust for it instead of the web PKI roots.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Per attempt (default `"5s"`); three attempts.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// `"lock"` (the default: alert at `alert_z`, lock at `lock_z`), `"alert"` or `"off"`.
    #[serde(default)]
    pub action: Option<crate::detect::Action>,
    #[serde(default)]
    pub alert_z: Option<Spanned<f64>>,
    #[serde(default)]
    pub lock_z: Option<Spanned<f64>>,
    /// The least this hour's total must be to alert (defaults 100, 5, `"16MiB"`)…
    #[serde(default)]
    pub min_requests: Option<u64>,
    #[serde(default)]
    pub min_exports: Option<u64>,
    #[serde(default)]
    pub min_bytes: Option<ByteSize>,
    /// …and to lock (defaults 400, 8, `"64MiB"`).
    #[serde(default)]
    pub lock_min_requests: Option<u64>,
    #[serde(default)]
    pub lock_min_exports: Option<u64>,
    #[serde(default)]
    pub lock_min_bytes: Option<ByteSize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    #[serde(default)]
    pub action: Option<crate::detect::Action>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnusualHourConfig {
    #[serde(default)]
    pub action: Option<crate::detect::Action>,
    /// Requests at such an hour before it fires (default 20).
    #[serde(default)]
    pub min_requests: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreadthConfig {
    #[serde(default)]
    pub action: Option<crate::detect::Action>,
    /// Distinct records in one window that fire it (default 300).
    #[serde(default)]
    pub distinct: Option<u64>,
    /// Default `"10m"`.
    #[serde(default)]
    pub window: Option<HumanDuration>,
}

/// Just-in-time grants (see `vendorgate_policy::grants`): what may be asked for, and for how long.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// The longest a grant may last once approved (default `"8h"`, at most `"14d"`).
    #[serde(default)]
    pub max_duration: Option<Spanned<HumanDuration>>,
    /// An unapproved request lapses after this (default `"1h"`).
    #[serde(default)]
    pub pending_ttl: Option<Spanned<HumanDuration>>,
    /// A regular expression the ticket reference must match in full (`"(INC|CHG)-[0-9]+"`); when
    /// set, a request without a ticket is refused. Absent: the ticket is optional.
    #[serde(default)]
    pub ticket_pattern: Option<Spanned<String>>,
    /// Classes that may be granted (default: every class a route uses).
    #[serde(default)]
    pub classes: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLockStateError {
    #[default]
    Strict,
    LastKnown,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStateError {
    #[default]
    Deny,
    Local,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub id: Option<String>,
    /// Methods (`"GET"`, …) or `"*"` for any. Default: any.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// `/literal/{param}/**`.
    pub path: Spanned<String>,
    /// The class this route belongs to (`read`, `write`, `export`, `admin` or your own)…
    #[serde(default)]
    pub class: Option<Spanned<String>>,
    /// …or an explicit refusal.
    #[serde(default)]
    pub deny: bool,
    /// The route's records belong to a parent record named by the path's first `{param}`
    /// (`"tickets"`: a ticket's comments, audits, its update): under a scope on that resource,
    /// the parent is judged before the request is forwarded (see `vendorgate_policy::scope`).
    #[serde(default)]
    pub parent: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// A suffix the upstream treats as optional (Zendesk: `.json`), ignored on the last segment when
    /// matching so one rule covers both spellings.
    #[serde(default = "defaults::optional_suffix")]
    pub optional_suffix: Option<String>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            optional_suffix: defaults::optional_suffix(),
        }
    }
}

/// The credential the proxy presents upstream in place of the agent's token.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Credential {
    /// Zendesk API token: `Basic base64("{email}/token:{token}")`. The email is pinned here: a
    /// Zendesk API token works with any user's email, so the client must never choose it.
    ZendeskApiToken {
        email: String,
        #[serde(flatten)]
        secret: SecretSource,
    },
    /// `Authorization: Bearer {token}` (an OAuth access token).
    Bearer {
        #[serde(flatten)]
        secret: SecretSource,
    },
}

/// Where a secret comes from; never the config file itself.
#[derive(Debug, Clone, Deserialize)]
pub struct SecretSource {
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// The vendor-facing TLS listener and the limits that protect it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Spanned<SocketAddr>,
    /// PEM certificate chain, leaf first.
    pub tls_cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub tls_key: PathBuf,
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Threads serving connections, each with its own listener (SO_REUSEPORT) and upstream pool.
    /// 0: one per CPU core.
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "defaults::tls_handshake_timeout")]
    pub tls_handshake_timeout: HumanDuration,
    /// Time allowed for a request's headers to arrive: a slowloris client is dropped after this.
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// Longest wait for the next piece of a request body while the upstream is reading it: a body
    /// that trickles in slower is refused (408 `request_body_timeout`) instead of holding an
    /// upstream connection until the response timeout.
    #[serde(default = "defaults::body_read_timeout")]
    pub body_read_timeout: HumanDuration,
    /// A keep-alive connection with no request in flight for this long is closed.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: HumanDuration,
    #[serde(default = "defaults::max_header_size")]
    pub max_header_size: ByteSize,
    #[serde(default = "defaults::max_request_body")]
    pub max_request_body: ByteSize,
    #[serde(default = "defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish before connections are cut.
    #[serde(default = "defaults::shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    /// On SIGTERM/SIGINT, how long an HTTP/1.1 keep-alive connection with nothing in flight stays
    /// open for one last request (answered with `Connection: close`). HTTP/1.1 has no way to say
    /// "no more requests here" but closing, and an agent's client may be sending on the
    /// connection at that very moment: closed at once (`0s`, as nginx does), that request is
    /// lost and the agent sees a dropped connection. HAProxy's `idle-close-on-response`.
    /// Unset: 1s, or `shutdown_grace` if that is shorter ([`Server::shutdown_idle_wait`]).
    #[serde(default)]
    pub shutdown_idle_wait: Option<HumanDuration>,
    /// The origin agents reach the proxy at (`https://zendesk-gw.acme.example`): the upstream's
    /// absolute links in JSON bodies and `Location` are rewritten to it. Unset: to the origin of
    /// the request itself (`https://` and the `Host` the agent's client sent), which is right
    /// unless something in front of the proxy changes the name.
    #[serde(default)]
    pub public_url: Option<PublicUrl>,
    /// Request headers with `_` in their names: dropped (default), refused, or allowed.
    #[serde(default)]
    pub underscore_headers: UnderscoreHeaders,
}

impl Server {
    /// How long an idle HTTP/1.1 connection waits for a last request once shutdown has begun.
    pub fn shutdown_idle_wait(&self) -> Duration {
        self.shutdown_idle_wait
            .map_or(DEFAULT_SHUTDOWN_IDLE_WAIT.min(self.shutdown_grace.0), |w| {
                w.0
            })
    }
}

/// [`Server::shutdown_idle_wait`] when the config does not say: long enough for a client that
/// was between two requests to send the second, short enough not to hold a restart.
const DEFAULT_SHUTDOWN_IDLE_WAIT: Duration = Duration::from_secs(1);

/// `server.public_url`: an origin, parsed like the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(pub UpstreamUrl);

impl<'de> Deserialize<'de> for PublicUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        UpstreamUrl::parse(&text)
            .map(PublicUrl)
            .map_err(|e| de::Error::custom(e.replace("upstream url", "public url")))
    }
}

/// The operator-facing listener: health, readiness and metrics (unauthenticated), and the admin
/// API (locks; bearer tokens). Plain HTTP, loopback by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "defaults::admin_listen")]
    pub listen: Spanned<SocketAddr>,
    /// Who may call the admin API. None: the API answers 401 to everything (health, readiness
    /// and metrics still answer); required when `listen` is not a loopback address.
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: defaults::admin_listen(),
            tokens: Vec::new(),
        }
    }
}

/// One admin API caller: `vendorgate admin new-token` prints a token and this entry for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who it is, as the trail names them (`created_by` of a lock).
    pub name: String,
    pub role: AdminRole,
    /// The SHA-256 of the token, in hex: the config never holds the token itself.
    pub sha256: Spanned<String>,
}

/// Ordered: each role may do what the one before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Reads: locks, grants, sessions, usage.
    Viewer,
    /// Reads, and asks for just-in-time grants (a vendor's team lead, say): approving is not theirs.
    Requester,
    /// Reads and acts: lock, unlock, revoke, reload, and approves, denies and revokes grants.
    Operator,
}

/// The SaaS API being protected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub url: UpstreamUrl,
    /// PEM bundle of CAs to trust instead of the built-in web PKI roots.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time from sending the request to receiving the upstream's response headers.
    #[serde(default = "defaults::response_timeout")]
    pub response_timeout: HumanDuration,
    #[serde(default = "defaults::pool_idle_timeout")]
    pub pool_idle_timeout: HumanDuration,
    #[serde(default = "defaults::pool_max_idle_per_host")]
    pub pool_max_idle_per_host: usize,
    /// Offer HTTP/2 to the upstream over ALPN; HTTP/1.1 is used when it declines.
    #[serde(default = "defaults::yes")]
    pub http2: bool,
    #[serde(default)]
    pub credential: Option<Credential>,
    /// Header carrying `vendor/account` upstream, so the SaaS side can tell who acted. Any copy sent
    /// by the client is removed first.
    #[serde(default = "defaults::identity_header")]
    pub identity_header: Option<String>,
    /// Origins besides `url`'s that the upstream writes its own links with (Zendesk writes
    /// `https://{subdomain}.zendesk.com` even behind a host-mapped domain); rewritten too.
    #[serde(default)]
    pub link_origins: Vec<UpstreamUrl>,
    /// Request headers never sent upstream, besides the built-in ones (`Cookie`,
    /// `X-On-Behalf-Of`: a SaaS session, or acting as another user).
    #[serde(default)]
    pub strip_request_headers: Vec<String>,
    /// Response headers never passed to the agent, besides the built-in `Set-Cookie` (a session
    /// with the proxy's own service account).
    #[serde(default)]
    pub strip_response_headers: Vec<String>,
    /// Hosts the upstream may redirect to for a download (Zendesk's attachments:
    /// `*.zdusercontent.com`): the proxy fetches those itself, without the upstream credential,
    /// metered and recorded, and the agent never sees where. A redirect elsewhere is refused.
    /// `*.example.com` matches any name below example.com.
    #[serde(default)]
    pub redirect_hosts: Vec<String>,
}

/// Operational logging (not the decision trail).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    #[serde(default = "defaults::log_level")]
    pub level: LogLevel,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: defaults::log_level(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// An upstream base URL: scheme and authority only, because the path and query of each request pass
/// through untouched and a base path would silently change every route the policy classifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// `host[:port]` as it should appear in `Host`/`:authority` (default port omitted).
    pub authority: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl UpstreamUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("invalid upstream url {text:?}: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            Some(other) => {
                return Err(format!(
                    "invalid upstream url {text:?}: scheme {other:?} is not supported (expected https or http)"
                ))
            }
            None => {
                return Err(format!(
                    "invalid upstream url {text:?}: expected an absolute URL such as \"https://acme.zendesk.com\""
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("invalid upstream url {text:?}: missing host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "invalid upstream url {text:?}: credentials do not belong in the URL"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "invalid upstream url {text:?}: expected scheme and host only; request paths pass through unchanged"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("invalid upstream url {text:?}: missing host"));
        }
        let default_port = match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };
        let port = authority.port_u16().unwrap_or(default_port);
        let authority = if port == default_port {
            authority.host().to_string()
        } else {
            format!("{}:{port}", authority.host())
        };
        Ok(UpstreamUrl {
            scheme,
            host: host.to_string(),
            port,
            authority,
        })
    }

    /// `scheme://authority`, the prefix every forwarded request URI starts with.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.authority)
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin())
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        UpstreamUrl::parse(&text).map_err(de::Error::custom)
    }
}

mod defaults {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    pub fn yes() -> bool {
        true
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn tls_handshake_timeout() -> HumanDuration {
        HumanDuration::from_secs(10)
    }
    pub fn header_read_timeout() -> HumanDuration {
        HumanDuration::from_secs(10)
    }
    pub fn body_read_timeout() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    pub fn idle_timeout() -> HumanDuration {
        HumanDuration::from_secs(60)
    }
    pub fn max_header_size() -> ByteSize {
        ByteSize::kib(32)
    }
    /// Zendesk accepts attachments up to 50 MB; anything larger is not a support agent's upload.
    pub fn max_request_body() -> ByteSize {
        ByteSize::mib(50)
    }
    pub fn max_concurrent_streams() -> u32 {
        100
    }
    pub fn shutdown_grace() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    pub fn admin_listen() -> Spanned<SocketAddr> {
        Spanned::new(0..0, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901))
    }
    pub fn connect_timeout() -> HumanDuration {
        HumanDuration::from_secs(5)
    }
    pub fn response_timeout() -> HumanDuration {
        HumanDuration::from_secs(60)
    }
    pub fn pool_idle_timeout() -> HumanDuration {
        HumanDuration::from_secs(90)
    }
    pub fn pool_max_idle_per_host() -> usize {
        256
    }
    pub fn log_level() -> LogLevel {
        LogLevel::Info
    }
    pub fn scope_records() -> Spanned<String> {
        Spanned::new(0..0, "tickets".to_string())
    }
    pub fn algorithms() -> Vec<Spanned<String>> {
        ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
            .iter()
            .map(|a| Spanned::new(0..0, a.to_string()))
            .collect()
    }
    pub fn leeway() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    pub fn account_claim() -> String {
        "sub".into()
    }
    pub fn vendor_claim() -> String {
        "vendor".into()
    }
    pub fn amr_any() -> Vec<String> {
        vec!["mfa".into(), "hwk".into(), "otp".into()]
    }
    pub fn jwks_refresh() -> HumanDuration {
        HumanDuration::from_secs(900)
    }
    pub fn jwks_min_refetch() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    pub fn token_cache_entries() -> usize {
        100_000
    }
    pub fn max_token_size() -> ByteSize {
        ByteSize::kib(8)
    }
    pub fn optional_suffix() -> Option<String> {
        Some(".json".into())
    }
    pub fn session_idle() -> HumanDuration {
        HumanDuration::from_secs(30 * 60)
    }
    pub fn session_lifetime() -> HumanDuration {
        HumanDuration::from_secs(12 * 3600)
    }
    pub fn export_class() -> Vec<Spanned<String>> {
        vec![Spanned::new(0..0, "export".to_string())]
    }
    pub fn state_timeout() -> HumanDuration {
        HumanDuration(std::time::Duration::from_millis(250))
    }
    pub fn key_prefix() -> String {
        "vendorgate".into()
    }
    pub fn max_keys() -> usize {
        1_000_000
    }
    pub fn trail_path() -> PathBuf {
        PathBuf::from("decisions.jsonl")
    }
    pub fn trail_max_file_size() -> ByteSize {
        ByteSize::mib(100)
    }
    pub fn trail_rotate_every() -> HumanDuration {
        HumanDuration::from_secs(86_400)
    }
    pub fn trail_refusal_interval() -> HumanDuration {
        HumanDuration::from_secs(60)
    }
    pub fn trail_queue() -> usize {
        65_536
    }
    pub fn identity_header() -> Option<String> {
        Some("X-Vendorgate-Agent".into())
    }
}

/// hyper refuses read buffers smaller than this, so a smaller header limit could not be enforced.
pub const MIN_HEADER_SIZE: u64 = 8192;

impl Config {
    /// Parses and checks a configuration file's text. `file` is only used to label errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError::at(
                file,
                text,
                e.span(),
                e.message().trim_end(),
            )])
        })?;
        let mut problems = config.check(text, file);
        match crate::Policy::compile(&config) {
            Ok(policy) => config.policy = policy,
            Err(found) => problems.extend(
                found
                    .into_iter()
                    .map(|(span, message)| ConfigError::at(file, text, span, message)),
            ),
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// The checks across fields that serde cannot make, every failing one.
    fn check(&self, text: &str, file: &str) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        let mut err = |span: Range<usize>, msg: String| {
            problems.push(ConfigError::at(file, text, Some(span), msg));
        };
        let s = &self.server;
        if !self.admin.listen.get_ref().ip().is_loopback() && self.admin.tokens.is_empty() {
            err(
                self.admin.listen.span(),
                format!(
                    "admin.listen {} is not a loopback address: configure [[admin.tokens]] so the admin API is not open to the network",
                    self.admin.listen.get_ref()
                ),
            );
        }
        for t in &self.admin.tokens {
            let hex = t.sha256.get_ref();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                err(
                    t.sha256.span(),
                    format!("admin token {:?}: sha256 must be 64 hex digits (vendorgate admin new-token prints it)", t.name),
                );
            }
        }
        if s.listen.get_ref() == self.admin.listen.get_ref() && s.listen.get_ref().port() != 0 {
            err(
                self.admin.listen.span(),
                format!(
                    "admin.listen {} is the same address as server.listen",
                    self.admin.listen.get_ref()
                ),
            );
        }
        let checks: [(bool, &str, &str); 8] = [
            (
                s.max_connections == 0,
                "max_connections",
                "must be at least 1",
            ),
            (
                s.max_concurrent_streams == 0,
                "max_concurrent_streams",
                "must be at least 1",
            ),
            (
                s.header_read_timeout.0.is_zero(),
                "header_read_timeout",
                "must be greater than 0s",
            ),
            (
                s.body_read_timeout.0.is_zero(),
                "body_read_timeout",
                "must be greater than 0s",
            ),
            (
                s.tls_handshake_timeout.0.is_zero(),
                "tls_handshake_timeout",
                "must be greater than 0s",
            ),
            (
                s.idle_timeout.0.is_zero(),
                "idle_timeout",
                "must be greater than 0s",
            ),
            (
                s.max_header_size.0 < MIN_HEADER_SIZE,
                "max_header_size",
                "must be at least 8KiB",
            ),
            (
                s.shutdown_idle_wait
                    .is_some_and(|wait| wait.0 > s.shutdown_grace.0),
                "shutdown_idle_wait",
                "must not be longer than server.shutdown_grace",
            ),
        ];
        for (bad, key, what) in checks {
            if bad {
                err(
                    key_span(text, "server", key),
                    format!("server.{key} {what}"),
                );
            }
        }
        let u = &self.upstream;
        for (bad, key) in [
            (u.connect_timeout.0.is_zero(), "connect_timeout"),
            (u.response_timeout.0.is_zero(), "response_timeout"),
        ] {
            if bad {
                err(
                    key_span(text, "upstream", key),
                    format!("upstream.{key} must be greater than 0s"),
                );
            }
        }
        problems
    }

    /// Resolves the relative paths in the config against `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.server.tls_cert);
        fix(&mut self.server.tls_key);
        fix(&mut self.trail.path);
        if let Some(ca) = self.otel.as_mut().and_then(|o| o.ca_bundle.as_mut()) {
            fix(ca);
        }
        for path in [
            self.upstream.ca_bundle.as_mut(),
            self.identity.jwks_file.as_mut(),
            self.identity.ca_bundle.as_mut(),
            self.state.redis_password_file.as_mut(),
            self.state.redis_ca.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            fix(path);
        }
        match &mut self.upstream.credential {
            Some(Credential::ZendeskApiToken { secret, .. } | Credential::Bearer { secret }) => {
                if let Some(p) = secret.token_file.as_mut() {
                    fix(p);
                }
            }
            None => {}
        }
    }
}

/// Finds where `key` is set inside `[table]`, for errors about values that were parsed fine on their
/// own but fail a check. Falls back to the table header, then to the start of the file.
fn key_span(text: &str, table: &str, key: &str) -> Range<usize> {
    let header = format!("[{table}]");
    let mut offset = 0;
    let mut in_table = false;
    let mut table_start = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_table = trimmed.starts_with(&header);
            if in_table {
                table_start.get_or_insert(offset + (line.len() - trimmed.len()));
            }
        } else if in_table {
            if let Some(rest) = trimmed.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    let start = offset + (line.len() - trimmed.len());
                    return start..start + key.len();
                }
            }
        }
        offset += line.len();
    }
    let start = table_start.unwrap_or(0);
    start..start
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8443"
tls_cert = "certs/server.pem"
tls_key = "certs/server-key.pem"
idle_timeout = "2m"
max_request_body = "10MiB"

[upstream]
url = "https://acme.zendesk.com"

[identity]
issuer = "https://idp.test"
audiences = ["vendorgate"]
jwks_file = "jwks.json"

[[vendors]]
id = "acme"
ip_allow = ["127.0.0.2/32"]
classes = ["read"]

[[routes]]
path = "/api/v2/tickets/{id}"
class = "read"
"#;

    #[test]
    fn a_good_config_gets_defaults() {
        let c = Config::from_toml(GOOD, "v.toml").unwrap();
        assert_eq!(c.server.idle_timeout, HumanDuration::from_secs(120));
        assert_eq!(c.server.max_request_body, ByteSize::mib(10));
        assert_eq!(c.server.header_read_timeout, HumanDuration::from_secs(10));
        assert_eq!(c.admin.listen.get_ref().to_string(), "127.0.0.1:9901");
        assert_eq!(c.upstream.url.authority, "acme.zendesk.com");
        assert_eq!(c.upstream.url.port, 443);
        assert!(c.upstream.http2);
    }

    fn error_of(text: &str) -> ConfigError {
        Config::from_toml(text, "v.toml")
            .unwrap_err()
            .first()
            .clone()
    }

    /// GOOD with `line` added to the vendor (it becomes line 21).
    fn vendor_with(line: &str) -> String {
        GOOD.replace(
            "classes = [\"read\"]\n",
            &format!("classes = [\"read\"]\n{line}"),
        )
    }

    /// Each (vendor line, the value the error must point at, words in its message): the error is
    /// at line 21, at that value's column.
    fn vendor_errors_point_at(cases: &[(&str, &str, &str)]) {
        for (line, at, words) in cases {
            let e = error_of(&vendor_with(line));
            let column = line.find(at).unwrap() + 1;
            assert_eq!((e.line, e.column), (21, column), "{line}: {e}");
            assert!(e.message.contains(words), "{line}: {e}");
        }
    }

    #[test]
    fn errors_name_file_line_and_column() {
        // (what is broken, replacement text, expected line, expected column, expected words)
        let cases = [
            (
                "bad duration",
                GOOD.replace("\"2m\"", "\"2 minutes\""),
                6,
                16,
                "unknown unit",
            ),
            (
                "unknown field",
                GOOD.replace("idle_timeout", "idle_timout"),
                6,
                1,
                "unknown field `idle_timout`",
            ),
            (
                "bad size",
                GOOD.replace("\"10MiB\"", "\"10 parsecs\""),
                7,
                20,
                "unknown unit",
            ),
            (
                "bad url",
                GOOD.replace("https://acme.zendesk.com", "ftp://x"),
                10,
                7,
                "scheme \"ftp\"",
            ),
            (
                "url with path",
                GOOD.replace("zendesk.com", "zendesk.com/api/v2"),
                10,
                7,
                "scheme and host only",
            ),
            (
                "bad address",
                GOOD.replace("127.0.0.1:8443", "localhost"),
                3,
                10,
                "invalid socket address",
            ),
            ("syntax", GOOD.replace("[upstream]", "[upstream"), 9, 10, ""),
            (
                "wrong type",
                GOOD.replace("\"2m\"", "120"),
                6,
                16,
                "duration string",
            ),
        ];
        for (what, text, line, column, words) in cases {
            let e = error_of(&text);
            assert_eq!((e.line, e.column), (line, column), "{what}: {e}");
            assert!(e.message.contains(words), "{what}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("v.toml:{line}:{column}: ")),
                "{what}: {e}"
            );
        }
    }

    #[test]
    fn missing_section_is_reported() {
        let e = error_of("[server]\nlisten = \"127.0.0.1:1\"\ntls_cert = \"a\"\ntls_key = \"b\"\n");
        assert!(e.message.contains("missing field `upstream`"), "{e}");
        let e = error_of(&GOOD.replace("[identity]", "[identity_]"));
        assert!(e.message.contains("identity"), "{e}");
    }

    #[test]
    fn cross_field_checks_point_at_the_key() {
        let e = error_of(&GOOD.replace("idle_timeout = \"2m\"", "idle_timeout = \"0s\""));
        assert_eq!((e.line, e.column), (6, 1), "{e}");
        assert!(e
            .message
            .contains("server.idle_timeout must be greater than 0s"));

        let text = format!("{GOOD}\n[admin]\nlisten = \"127.0.0.1:8443\"\n");
        let e = error_of(&text);
        assert_eq!((e.line, e.column), (27, 10), "{e}");
        assert!(e.message.contains("same address"));

        let e = error_of(&GOOD.replace(
            "max_request_body",
            "max_header_size = \"1KiB\"\nmax_request_body",
        ));
        assert!(e.message.contains("at least 8KiB"), "{e}");

        let e = error_of(&GOOD.replace(
            "max_request_body",
            "shutdown_grace = \"2s\"\nshutdown_idle_wait = \"3s\"\nmax_request_body",
        ));
        assert!(
            e.message.contains(
                "server.shutdown_idle_wait must not be longer than server.shutdown_grace"
            ),
            "{e}"
        );
        let at = GOOD
            .lines()
            .take_while(|l| !l.starts_with("max_request_body"))
            .count()
            + 2;
        assert_eq!((e.line, e.column), (at, 1), "{e}");
    }

    #[test]
    fn shared_state_is_named_one_way() {
        let redis = "backend = \"redis\"\n";
        for (state, words) in [
            ("", "needs state.redis_url"),
            (
                "redis_url = \"redis://a:1\"\nredis_cluster = [\"redis://b:2\"]",
                "set one of",
            ),
            ("redis_cluster = [\"http://b:2\"]", "not a redis://"),
            ("redis_sentinels = [\"redis://s:26379\"]", "go together"),
            (
                "redis_url = \"redis://a:1\"\nredis_password_env = \"X\"\nredis_password_file = \"p\"",
                "not both",
            ),
            (
                "redis_cluster = [\"redis://b:2\"]\nkey_prefix = \"{vg}\"",
                "no { or }",
            ),
        ] {
            let e = error_of(&format!("{GOOD}\n[state]\n{redis}{state}\n"));
            assert!(e.message.contains(words), "{state}: {e}");
        }
        for good in [
            "redis_url = \"rediss://a:1/0\"\nredis_username = \"vg\"\nredis_password_env = \"X\"",
            "redis_cluster = [\"redis://a:1\", \"redis://b:2\"]",
            "redis_sentinels = [\"redis://s:26379\"]\nredis_sentinel_master = \"m\"",
        ] {
            let text = format!("{GOOD}\n[state]\n{redis}{good}\n");
            assert!(Config::from_toml(&text, "v.toml").is_ok(), "{good}");
        }
    }

    #[test]
    fn scope_errors_point_at_the_value() {
        vendor_errors_point_at(&[
            (
                "scope = [{ groupid = [1] }]\n",
                "groupid",
                "unknown field `groupid`",
            ),
            (
                "scope = [{ records = \"users\", group_id = [1] }]\n",
                "\"users\"",
                "a scope judges one of",
            ),
            (
                "scope = [{ records = \"tickets\" }]\n",
                "\"tickets\"",
                "names no field",
            ),
            (
                "scope = [{ group_id = [\"a\"] }]\n",
                "\"a\"",
                "invalid type",
            ),
            (
                "scope = [{ group_id = [1] }, { brand_id = [2], classes = [\"read\"] }]\n",
                "\"read\"",
                "two [[vendors.scope]] apply to class \"read\"",
            ),
        ]);
        let good = vendor_with("scope = [{ group_id = [360004, 360005], classes = [\"read\"] }]\n");
        let c = Config::from_toml(&good, "v.toml").unwrap();
        let route = (0..c.policy.routes.len())
            .find(|&r| c.policy.class_name(r) == Some("read"))
            .unwrap();
        assert_eq!(
            c.policy.scope(0, route).unwrap().describe(),
            "tickets where group_id in [360004, 360005]"
        );
    }

    #[test]
    fn redaction_errors_point_at_the_value() {
        vendor_errors_point_at(&[
            (
                "redact = [{ fields = [\"**.email\", \"tickets[]\"] }]\n",
                "\"tickets[]\"",
                "ends at a field",
            ),
            (
                "redact = [{ fields = [\"a..b\"] }]\n",
                "\"a..b\"",
                "empty key",
            ),
            (
                "redact = [{ fields = [\"**.email\"], classes = [\"exprt\"] }]\n",
                "\"exprt\"",
                "class \"exprt\"",
            ),
            (
                "redact = [{ fields = [\"**.email\"], mode = \"erase\" }]\n",
                "\"erase\"",
                "unknown variant",
            ),
            (
                "redact = [{ fields = [\"**.body\"], patterns = [\"phone\", \"ssn\"] }]\n",
                "\"ssn\"",
                "unknown variant `ssn`",
            ),
            (
                "redact = [{ fields = [\"**.body\"], patterns = [\"iban\"], mode = \"remove\" }]\n",
                "\"remove\"",
                "it takes no mode",
            ),
        ]);
        let good = vendor_with(
            "redact = [{ fields = [\"**.email\"] }, { fields = [\"users[].phone\"], mode = \"remove\", classes = [\"read\"] }]\n",
        );
        let c = Config::from_toml(&good, "v.toml").unwrap();
        let route = (0..c.policy.routes.len())
            .find(|&r| c.policy.class_name(r) == Some("read"))
            .unwrap();
        let fields = c.policy.redactions(0, route).unwrap();
        let shown: Vec<String> = fields
            .iter()
            .map(|f| format!("{} {}", f.path, f.mode.as_str()))
            .collect();
        assert_eq!(shown, ["**.email replace", "users[].phone remove"]);
    }

    #[test]
    fn access_window_errors_point_at_the_value() {
        vendor_errors_point_at(&[
            (
                "access = { time_zone = \"Mars/Olympus\", windows = [] }\n",
                "\"Mars/Olympus\"",
                "unknown time zone \"Mars/Olympus\"",
            ),
            (
                "access = { time_zone = \"UTC\", windows = [{ days = \"mon-fry\", hours = \"08:00-19:00\" }] }\n",
                "\"mon-fry\"",
                "days \"mon-fry\"",
            ),
            (
                "access = { time_zone = \"UTC\", windows = [{ days = \"mon\", hours = \"8-19\" }] }\n",
                "\"8-19\"",
                "HH:MM-HH:MM",
            ),
            (
                "access = { time_zone = \"UTC\", windows = [{ days = \"mon\", hours = \"08:00-08:00\" }] }\n",
                "\"08:00-08:00\"",
                "00:00-24:00",
            ),
            (
                "access = { time_zone = \"UTC\", windows = [{ days = \"mon\", hours = \"08:00-19:00\", classes = [\"exprt\"] }] }\n",
                "\"exprt\"",
                "class \"exprt\"",
            ),
        ]);
        let good = vendor_with(
            "access = { time_zone = \"Africa/Tunis\", windows = [{ days = \"mon-sat\", hours = \"08:00-19:00\" }] }\n",
        );
        let c = Config::from_toml(&good, "v.toml").unwrap();
        let access = c.policy.vendors[0].access.as_ref().unwrap();
        assert_eq!(access.describe(0), "mon-sat 08:00-19:00 (Africa/Tunis)");
    }

    #[test]
    fn grant_settings_are_checked_where_they_are_written() {
        let cases = [
            ("max_duration = \"15d\"", "\"15d\"", "at most 14d"),
            ("max_duration = \"0s\"", "\"0s\"", "more than 0s"),
            ("pending_ttl = \"0s\"", "\"0s\"", "more than 0s"),
            (
                "ticket_pattern = \"INC-(\"",
                "\"INC-(\"",
                "not a regular expression",
            ),
            ("classes = [\"exprt\"]", "\"exprt\"", "class \"exprt\""),
        ];
        for (line, at, words) in cases {
            let text = format!("{GOOD}\n[grants]\n{line}\n");
            let e = error_of(&text);
            let want_line = text.lines().count();
            assert_eq!(
                (e.line, e.column),
                (want_line, line.find(at).unwrap() + 1),
                "{line}: {e}"
            );
            assert!(e.message.contains(words), "{line}: {e}");
        }
        let text =
            format!("{GOOD}\n[grants]\nmax_duration = \"2h\"\nticket_pattern = \"INC-[0-9]+\"\n");
        let rules = Config::from_toml(&text, "v.toml").unwrap().policy.grants;
        assert_eq!(rules.max_duration, std::time::Duration::from_secs(7200));
        let re = rules.ticket_pattern.unwrap();
        assert!(re.is_match("INC-12") && !re.is_match("xINC-12") && !re.is_match("INC-12x"));
    }

    #[test]
    fn upstream_urls() {
        let u = UpstreamUrl::parse("https://localhost:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("localhost", 8443, "localhost:8443")
        );
        let u = UpstreamUrl::parse("https://[::1]:9000/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority.as_str()),
            ("::1", "[::1]:9000")
        );
        assert_eq!(u.origin(), "https://[::1]:9000");
        assert!(UpstreamUrl::parse("https://user:pw@host")
            .unwrap_err()
            .contains("credentials"));
        assert!(UpstreamUrl::parse("acme.zendesk.com").is_err());
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let mut c = Config::from_toml(GOOD, "v.toml").unwrap();
        c.resolve_paths(Path::new("/etc/vendorgate"));
        assert_eq!(
            c.server.tls_cert,
            Path::new("/etc/vendorgate/certs/server.pem")
        );
    }
}

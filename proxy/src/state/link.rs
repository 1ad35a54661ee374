//! How the proxy reaches Redis: one server through the crate's reconnecting `ConnectionManager`;
//! a Redis Cluster through its cluster connection (which learns the slot map from the nodes
//! named, follows `MOVED`/`ASK` redirections and a failover's new master, and reconnects by
//! itself); or the master Redis Sentinel names ([`SentinelLink`]: asked again whenever the
//! master stops answering or answers as a replica). Over TLS for `rediss://` (trusting
//! `state.redis_ca`, else the system's roots); as an ACL user whose password comes from the
//! environment or a file, never the config.
//!
//! Both kinds of connection answer through [`Conn`], so every operation is written once.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{ConnectionInfo, IntoConnectionInfo, RedisFuture, TlsCertificates};
use vendorgate_policy::config::{Backend, StateConfig};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("state.{field}: {cause}")]
    Config { field: &'static str, cause: String },
}

fn config_error(field: &'static str, cause: impl ToString) -> LinkError {
    LinkError::Config {
        field,
        cause: cause.to_string(),
    }
}

/// What kind of Redis the nodes are.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    One,
    Cluster,
    /// The nodes are sentinels, asked for this master.
    Sentinel(String),
}

/// Where the shared state is and how to log in to it.
#[derive(Clone)]
pub struct Target {
    nodes: Vec<ConnectionInfo>,
    kind: Kind,
    username: Option<String>,
    password: Option<String>,
    tls: Option<TlsCertificates>,
    timeout: Duration,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Target")
            .field("nodes", &self.nodes.len())
            .field("kind", &self.kind)
            .field("username", &self.username)
            .finish()
    }
}

impl Target {
    /// The target `config` names; `None` with state in memory. Reads the password and the CA.
    pub fn from_config(config: &StateConfig) -> Result<Option<Self>, LinkError> {
        if config.backend != Backend::Redis {
            return Ok(None);
        }
        let (urls, kind, field) = match (&config.redis_url, &config.redis_sentinel_master) {
            (Some(url), _) => (vec![url.get_ref().clone()], Kind::One, "redis_url"),
            (None, Some(master)) => (
                config
                    .redis_sentinels
                    .iter()
                    .map(|u| u.get_ref().clone())
                    .collect(),
                Kind::Sentinel(master.clone()),
                "redis_sentinels",
            ),
            (None, None) => (
                config
                    .redis_cluster
                    .iter()
                    .map(|u| u.get_ref().clone())
                    .collect(),
                Kind::Cluster,
                "redis_cluster",
            ),
        };
        if urls.is_empty() {
            return Err(config_error("redis_url", "no Redis named"));
        }
        let password = match (&config.redis_password_env, &config.redis_password_file) {
            (Some(var), _) => Some(
                std::env::var(var)
                    .map_err(|e| config_error("redis_password_env", format!("{var}: {e}")))?,
            ),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        config_error("redis_password_file", format!("{}: {e}", path.display()))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        let tls =
            match &config.redis_ca {
                Some(path) => Some(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(path).map_err(|e| {
                        config_error("redis_ca", format!("{}: {e}", path.display()))
                    })?),
                }),
                None => None,
            };
        let mut nodes = Vec::with_capacity(urls.len());
        for url in &urls {
            let mut info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| config_error(field, e))?;
            // Sentinels are asked without the ACL user: it is the master's.
            if !matches!(kind, Kind::Sentinel(_)) {
                let settings = login(info.redis_settings(), &config.redis_username, &password);
                info = info.set_redis_settings(settings);
            }
            nodes.push(info);
        }
        Ok(Some(Target {
            nodes,
            kind,
            username: config.redis_username.clone(),
            password,
            tls,
            timeout: config.timeout.0,
        }))
    }

    /// One server at `url`, without credentials beyond the URL's (the conformance tests).
    pub fn from_url(url: &str, timeout: Duration) -> Result<Self, LinkError> {
        Ok(Target {
            nodes: vec![url
                .into_connection_info()
                .map_err(|e| config_error("redis_url", e))?],
            kind: Kind::One,
            username: None,
            password: None,
            tls: None,
            timeout,
        })
    }

    pub fn is_cluster(&self) -> bool {
        self.kind == Kind::Cluster
    }

    /// A client for the first node named: what a pub/sub subscription uses (in a cluster,
    /// `PUBLISH` reaches every node, so any one will do). Behind Sentinel, the current master's.
    pub async fn client(&self) -> redis::RedisResult<redis::Client> {
        if let Kind::Sentinel(master) = &self.kind {
            let mut sentinel = Sentinel::build(self.nodes.clone())?;
            return sentinel
                .async_master_for(master, Some(&self.master_login()))
                .await;
        }
        self.client_for(self.nodes[0].clone())
    }

    fn client_for(&self, node: ConnectionInfo) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            Some(certs) => redis::Client::build_with_tls(node, certs.clone()),
            None => redis::Client::open(node),
        }
    }

    /// How the master behind Sentinel is logged in to.
    fn master_login(&self) -> SentinelNodeConnectionInfo {
        let base = redis::RedisConnectionInfo::default();
        SentinelNodeConnectionInfo::default().set_redis_connection_info(login(
            &base,
            &self.username,
            &self.password,
        ))
    }

    /// How long a connection may take to open: the operations' timeout, at least half a second.
    fn connect_timeout(&self) -> Duration {
        self.timeout.max(Duration::from_millis(500))
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout()))
            .set_response_timeout(Some(self.timeout))
            // Behind Sentinel a dead master is found again through the sentinels, not retried.
            .set_number_of_retries(if self.is_sentinel() { 1 } else { 6 })
    }

    fn is_sentinel(&self) -> bool {
        matches!(self.kind, Kind::Sentinel(_))
    }

    /// One connection, shared by every task (multiplexed), reconnecting by itself.
    pub async fn connect(&self) -> redis::RedisResult<Conn> {
        if self.is_sentinel() {
            let link = SentinelLink {
                target: self.clone(),
                sentinel: tokio::sync::Mutex::new(Sentinel::build(self.nodes.clone())?),
                master: ArcSwapOption::empty(),
            };
            link.master().await?;
            return Ok(Conn::Sentinel(Arc::new(link)));
        }
        if self.is_cluster() {
            let mut builder = redis::cluster::ClusterClientBuilder::new(self.nodes.clone())
                .connection_timeout(self.connect_timeout())
                .response_timeout(self.timeout);
            if let Some(user) = &self.username {
                builder = builder.username(user);
            }
            if let Some(pw) = &self.password {
                builder = builder.password(pw);
            }
            if let Some(certs) = &self.tls {
                builder = builder.certs(certs.clone());
            }
            let client = builder.build()?;
            return Ok(Conn::Cluster(client.get_async_connection().await?));
        }
        let manager = self
            .client_for(self.nodes[0].clone())?
            .get_connection_manager_with_config(self.manager_config())
            .await?;
        Ok(Conn::One(manager))
    }
}

/// `base` logged in as the ACL user, if one is configured.
fn login(
    base: &redis::RedisConnectionInfo,
    username: &Option<String>,
    password: &Option<String>,
) -> redis::RedisConnectionInfo {
    let mut settings = base.clone();
    if let Some(user) = username {
        settings = settings.set_username(user);
    }
    if let Some(pw) = password {
        settings = settings.set_password(pw);
    }
    settings
}

/// The master Redis Sentinel names, through a reconnecting connection to it; forgotten when it
/// stops answering or answers as a replica (`READONLY`: demoted by a failover), so that the next
/// call asks the sentinels again and finds the new master. The call that fails fails (the
/// caller's `on_state_error` decides it); those after it go to the new master.
pub struct SentinelLink {
    target: Target,
    sentinel: tokio::sync::Mutex<Sentinel>,
    master: ArcSwapOption<ConnectionManager>,
}

impl SentinelLink {
    async fn master(&self) -> redis::RedisResult<ConnectionManager> {
        if let Some(m) = self.master.load_full() {
            return Ok((*m).clone());
        }
        // One lookup at a time; whoever waited finds the master the first one found.
        let mut sentinel = self.sentinel.lock().await;
        if let Some(m) = self.master.load_full() {
            return Ok((*m).clone());
        }
        let Kind::Sentinel(name) = &self.target.kind else {
            unreachable!("a sentinel link for a sentinel target")
        };
        let client = sentinel
            .async_master_for(name, Some(&self.target.master_login()))
            .await?;
        let manager = client
            .get_connection_manager_with_config(self.target.manager_config())
            .await?;
        tracing::info!("redis master found through sentinel");
        self.master.store(Some(Arc::new(manager.clone())));
        Ok(manager)
    }

    /// After `e`: the master is looked up again if it is gone or no longer the master.
    fn lost(&self, e: &redis::RedisError) {
        let demoted = e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        let gone = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout();
        if (demoted || gone) && self.master.swap(None).is_some() {
            tracing::warn!("redis master lost ({e}): asking the sentinels again");
        }
    }
}

/// A connection to one server, a cluster, or the master behind Sentinel.
#[derive(Clone)]
pub enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelLink>),
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(link) => Box::pin(async move {
                let mut master = link.master().await?;
                let out = master.req_packed_command(cmd).await;
                if let Err(e) = &out {
                    link.lost(e);
                }
                out
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(link) => Box::pin(async move {
                let mut master = link.master().await?;
                let out = master.req_packed_commands(pipeline, offset, count).await;
                if let Err(e) = &out {
                    link.lost(e);
                }
                out
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(_) => 0,
        }
    }
}

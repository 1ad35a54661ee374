//! How the proxy reaches Redis: one server through the crate's reconnecting `ConnectionManager`,
//! or a Redis Cluster through its cluster connection (which learns the slot map from the nodes
//! named, follows `MOVED`/`ASK` redirections and a failover's new master, and reconnects by
//! itself); over TLS for `rediss://` (trusting `state.redis_ca`, else the system's roots); as an
//! ACL user whose password comes from the environment or a file, never the config.
//!
//! Both kinds of connection answer through [`Conn`], so every operation is written once.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
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

/// Where the shared state is and how to log in to it.
#[derive(Clone)]
pub struct Target {
    nodes: Vec<ConnectionInfo>,
    cluster: bool,
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
            .field("cluster", &self.cluster)
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
        let (urls, cluster, field) = match &config.redis_url {
            Some(url) => (vec![url.get_ref().clone()], false, "redis_url"),
            None => (
                config
                    .redis_cluster
                    .iter()
                    .map(|u| u.get_ref().clone())
                    .collect(),
                true,
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
            let mut settings = info.redis_settings().clone();
            if let Some(user) = &config.redis_username {
                settings = settings.set_username(user);
            }
            if let Some(pw) = &password {
                settings = settings.set_password(pw);
            }
            info = info.set_redis_settings(settings);
            nodes.push(info);
        }
        Ok(Some(Target {
            nodes,
            cluster,
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
            cluster: false,
            username: None,
            password: None,
            tls: None,
            timeout,
        })
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// A client for the first node named: what a pub/sub subscription uses (in a cluster,
    /// `PUBLISH` reaches every node, so any one will do).
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        let first = self.nodes[0].clone();
        match &self.tls {
            Some(certs) => redis::Client::build_with_tls(first, certs.clone()),
            None => redis::Client::open(first),
        }
    }

    /// One connection, shared by every task (multiplexed), reconnecting by itself.
    pub async fn connect(&self) -> redis::RedisResult<Conn> {
        let connect_timeout = self.timeout.max(Duration::from_millis(500));
        if self.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(self.nodes.clone())
                .connection_timeout(connect_timeout)
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
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(self.timeout));
        let manager = self
            .client()?
            .get_connection_manager_with_config(config)
            .await?;
        Ok(Conn::One(manager))
    }
}

/// A connection to one server or to a cluster.
#[derive(Clone)]
pub enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

//! Listeners, connections and shutdown.
//!
//! Connections are admitted up to `max_connections` (further ones wait in the kernel's backlog rather
//! than being accepted and starved), get `tls_handshake_timeout` to finish TLS, then are served by
//! hyper (HTTP/1.1 or HTTP/2 by ALPN) until they close, go idle, or shutdown drains them.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use vendorgate_policy::Config;

use crate::admin;
use crate::edge::memory;
use crate::edge::serve::serve_connection;
use crate::gateway::{BuildError, Gateway};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started proxy. Dropping it does not stop it; call [`Running::shutdown`] and [`Running::wait`].
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: &'static Gateway,
    shutdown: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    admin_task: JoinHandle<()>,
    locks_task: JoinHandle<()>,
    trim_task: JoinHandle<()>,
    refusals_task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting and asks every connection to finish what it has in flight.
    pub fn shutdown(&self) {
        self.gateway.ready.store(false, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
    }

    /// Waits until every connection has finished or the shutdown grace period has run out, then
    /// writes out what the decision trail still holds.
    pub async fn wait(self) {
        let workers = self.workers;
        let gateway = self.gateway;
        self.refusals_task.abort();
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
            // Every connection has ended: the refusals counted are all there will be.
            gateway.write_refusals(true);
            crate::detect::save(gateway);
            gateway.trail.close();
        })
        .await;
        self.admin_task.abort();
        self.locks_task.abort();
        self.trim_task.abort();
        tracing::info!("shutdown complete");
    }
}

/// One listening socket per worker on the same address (SO_REUSEPORT): the kernel spreads new
/// connections over them, and each worker serves its own without handing work across threads.
fn bind_reuseport(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        // Port 0: the first socket picks the port, the others join it.
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Binds both listeners and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    // Kept for the life of the process, reached by plain reference: an `Arc` would be cloned and
    // dropped for every request, and its count is a cache line both cores then write each time.
    let gateway: &'static Gateway = Box::leak(Box::new(Gateway::new(config)?));
    let listen = *gateway.config.server.listen.get_ref();
    let workers = match gateway.config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let listeners = bind_reuseport(listen, workers).map_err(|source| StartError::Bind {
        what: "server.listen",
        addr: listen,
        source,
    })?;
    let proxy_addr = listeners[0]
        .local_addr()
        .map_err(|source| StartError::Bind {
            what: "server.listen",
            addr: listen,
            source,
        })?;
    let admin = *gateway.config.admin.listen.get_ref();
    let admin_listener = TcpListener::bind(admin)
        .await
        .map_err(|source| StartError::Bind {
            what: "admin.listen",
            addr: admin,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            what: "admin.listen",
            addr: admin,
            source,
        })?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(admin_listener, gateway));
    let locks_task = tokio::spawn(async move {
        tokio::join!(
            admin::expire(gateway),
            gateway.controls.follow(),
            admin::watch_certificate(gateway),
            crate::detect::run(gateway)
        );
    });
    let trim_task = tokio::spawn(memory::trim_after_parks());
    let refusals_task = tokio::spawn(write_refusals(gateway));
    // The connection limit is the proxy's, not each worker's.
    let slots = Arc::new(Semaphore::new(gateway.config.server.max_connections));
    let mut handles = Vec::with_capacity(workers);
    for (i, listener) in listeners.into_iter().enumerate() {
        let gw = gateway;
        let rx = shutdown_rx.clone();
        let slots = slots.clone();
        let handle = std::thread::Builder::new()
            .name(format!("vendorgate-worker-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("worker {i}: cannot start its runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => accept_loop(l, gw, rx, slots).await,
                        Err(e) => tracing::error!("worker {i}: {e}"),
                    }
                });
            })
            .map_err(|source| StartError::Bind {
                what: "server.listen",
                addr: listen,
                source,
            })?;
        handles.push(handle);
    }
    gateway.ready.store(true, Ordering::Relaxed);
    Ok(Running {
        proxy_addr,
        admin_addr,
        gateway,
        shutdown,
        workers: handles,
        admin_task,
        locks_task,
        trim_task,
        refusals_task,
    })
}

/// Writes the refusal windows as they come due (see [`crate::trail::refusals`]).
async fn write_refusals(gw: &'static Gateway) {
    let every = gw
        .config
        .trail
        .refusal_interval
        .0
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        gw.write_refusals(false);
    }
}

async fn accept_loop(
    listener: TcpListener,
    gw: &'static Gateway,
    mut shutdown: watch::Receiver<bool>,
    slots: Arc<Semaphore>,
) {
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = permit else { break };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE/ENFILE: back off instead of spinning; the backlog holds clients.
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let conn_shutdown = shutdown.clone();
        let fut = serve_connection(gw, tcp, peer, conn_shutdown, permit);
        connections.spawn(fut);
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let open = connections.len();
    let grace = gw.config.server.shutdown_grace.0;
    tracing::info!(
        open_connections = open,
        "shutting down: draining for up to {grace:?}"
    );
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            cut = connections.len(),
            "shutdown grace period over: closing connections still busy"
        );
        gw.start_cutting();
        connections.shutdown().await;
    }
}

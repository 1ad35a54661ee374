//! `vendorgate run`: serve until SIGTERM/SIGINT; SIGHUP reloads the TLS certificate and the policy,
//! as does saving the config file (watched) or `POST /v1/reload`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use vendorgate::reload;
use vendorgate::settings::load_config;
use vendorgate::Running;

pub fn run(config_path: &Path) -> anyhow::Result<()> {
    ignore_file_size_signal();
    let config = load_config(config_path)?;
    super::init_logging(config.log.level);
    super::runtime()?.block_on(async move {
        let running = vendorgate::start(config).await?;
        let _ = running.gateway.config_path.set(config_path.to_path_buf());
        // The file watcher: a saved edit takes effect without a signal.
        tokio::spawn(reload::watch_config(running.gateway));
        announce(&running)?;
        tracing::info!(
            proxy = %running.proxy_addr,
            admin = %running.admin_addr,
            upstream = %running.gateway.config.upstream.url,
            "vendorgate serving"
        );
        wait_for_stop(&running, Some(config_path)).await?;
        running.shutdown();
        let otel = running.gateway.otel.clone();
        running.wait().await;
        // What the exporters hold goes out before the process ends (their threads block while
        // this runtime carries the requests).
        if let Some(otel) = otel {
            let _ = tokio::task::spawn_blocking(move || otel.shutdown()).await;
        }
        Ok(())
    })
}

/// A write past the process's file size limit (`RLIMIT_FSIZE`, set by an operator or a unit's
/// `LimitFSIZE=`) raises SIGXFSZ, whose default is to kill the process with every request in
/// flight. Ignored, the write fails with `EFBIG` instead and the trail treats it as a full disk:
/// refuse (or count) while it lasts, recover when there is room.
#[allow(unsafe_code)]
fn ignore_file_size_signal() {
    // SAFETY: called before any thread starts; SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// One machine-readable line on stdout once both listeners are bound (ports may have been 0).
pub fn announce(running: &Running) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "vendorgate listening proxy={} admin={}",
        running.proxy_addr, running.admin_addr
    )?;
    out.flush()?;
    Ok(())
}

/// Returns on SIGTERM or SIGINT. Each SIGHUP meanwhile reloads the TLS certificate and, given the
/// config path, the policy; whatever fails to load is reported and the old version keeps serving.
pub async fn wait_for_stop(running: &Running, config_path: Option<&Path>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); return Ok(()) }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); return Ok(()) }
            _ = hup.recv() => {
                match running.gateway.cert.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::error!("SIGHUP: TLS certificate reload failed, keeping the current one: {e}"),
                }
                if let Some(path) = config_path {
                    reload_policy(running, path);
                }
            }
        }
    }
}

fn reload_policy(running: &Running, path: &Path) {
    let gw = running.gateway;
    let result = gw.reload_from_file("SIGHUP");
    let path = path.to_path_buf();
    tokio::spawn(async move { reload::record(gw, &path, "SIGHUP", None, &result).await });
}

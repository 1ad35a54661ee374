//! Subcommands.

use std::path::Path;

use anyhow::Context;
use vendorgate::settings::{check_files, load_config, summary};
use vendorgate_certs::dev::DevPki;

pub mod audit;
pub mod demo;
pub mod explain;
pub mod run;

pub fn check(config_path: &Path) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    check_files(&config)?;
    println!("{}: OK", config_path.display());
    print!("{}", summary(&config));
    Ok(())
}

pub fn certs_dev(out: &Path, names: &[String]) -> anyhow::Result<()> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let files = DevPki::generate(&names)
        .and_then(|pki| pki.write_to(out))
        .context("making dev certificates")?;
    println!("dev CA:             {}", files.ca_cert.display());
    println!("dev CA key:         {}", files.ca_key.display());
    println!(
        "server certificate: {} (for {})",
        files.server_cert.display(),
        names.join(", ")
    );
    println!("server key:         {}", files.server_key.display());
    println!(
        "Clients trust the proxy with: curl --cacert {} …",
        files.ca_cert.display()
    );
    Ok(())
}

/// Logs go to stderr so stdout stays for what a person or script reads (addresses, curl lines).
pub fn init_logging(level: vendorgate_policy::config::LogLevel) {
    use vendorgate_policy::config::LogLevel;
    let level = match level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Trace => tracing::Level::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .try_init();
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Requests are served by the proxy's own per-core worker threads; this runtime only carries the
    // admin listener and background work (key refresh, Redis, OTLP export).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

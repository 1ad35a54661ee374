//! Subcommands.

use std::path::Path;

use anyhow::Context;
use vendorgate::settings::{check_environment, load_config, summary, LoadError, Severity};
use vendorgate_certs::dev::DevPki;

pub mod admin;
pub mod audit;
pub mod demo;
pub mod explain;
pub mod run;
pub mod simulate;

/// `vendorgate check`: every problem in one run, each on a line of its own saying whether it is
/// an error in the file (or a file it names) or only matters at run time (a secret's variable not
/// set on this machine). With `policy_only`, only the file itself: nothing it names is read, so a
/// platform team can lint a policy in CI without the certificates and secrets.
pub fn check(config_path: &Path, policy_only: bool) -> anyhow::Result<()> {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(LoadError::Invalid(errors)) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            anyhow::bail!(
                "{}: {} problem{} in the file",
                config_path.display(),
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            );
        }
        Err(e) => return Err(e.into()),
    };
    let problems = if policy_only {
        Vec::new()
    } else {
        check_environment(&config)
    };
    for p in &problems {
        let label = match p.severity {
            Severity::Error => "error",
            Severity::RunTime => "run time",
        };
        eprintln!("{label}: {}", p.message);
    }
    if !problems.is_empty() {
        let errors = problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count();
        anyhow::bail!(
            "{}: {errors} error(s), {} run-time problem(s)",
            config_path.display(),
            problems.len() - errors
        );
    }
    let what = if policy_only {
        "the policy is valid (the files and secrets it names were not checked)"
    } else {
        "OK"
    };
    println!("{}: {what}", config_path.display());
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
        // A log that cannot be written (its disk full, its file past RLIMIT_FSIZE) must not stop
        // the proxy: the subscriber would report each failed line with `eprintln!`, which panics
        // when stderr itself fails, taking a worker thread and its connections with it. The
        // lines are lost; the decision trail, which says whether it is writable, is the record.
        .log_internal_errors(false)
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

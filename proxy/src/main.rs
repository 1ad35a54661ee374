//! The `vendorgate` command: the binary's edge, where errors become messages and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "vendorgate",
    version,
    about = "A policy-enforcing proxy between subcontractors and a SaaS support API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: the vendor-facing TLS listener and the admin listener.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file (and the files and secrets it names), report every problem, and
    /// print what it says.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Only the file itself: do not read the certificates, bundles, JWKS file or secrets it
        /// names (to lint a policy in CI).
        #[arg(long)]
        policy_only: bool,
    },
    /// Ask a running proxy's admin listener whether it is alive (`/healthz`) or, with
    /// `--ready`, ready for traffic (`/readyz`): exit 0 on 200. A container's health check.
    Health {
        /// The admin listener [env VENDORGATE_ADMIN_URL; default http://127.0.0.1:9901].
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        ready: bool,
    },
    /// TLS material.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Review decision logs: verify the chain, query records, summarize.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Dry-run one request against the policy and print every rule consulted.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Path and query, as the agent would send it.
        #[arg(long)]
        path: String,
        /// A file holding the bearer token (never pass tokens on the command line).
        #[arg(long)]
        token: Option<PathBuf>,
        /// The client address (default 127.0.0.1).
        #[arg(long, default_value = "127.0.0.1")]
        ip: String,
    },
    /// Replay 6 weeks of synthetic agents (and three thieves) through the detectors with a virtual
    /// clock: false alerts per 100 account-weeks, time to detect and bytes lost.
    Simulate {
        /// A policy whose `[detect]` to use (default: the built-in defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seeds to run (seed, seed+1, …): the false-alert figure over all of them.
        #[arg(long, default_value_t = 1)]
        runs: u64,
        /// Write the bulk thief's bytes over time here (CSV: seconds, bytes, locked).
        #[arg(long)]
        curve: Option<PathBuf>,
        /// Write the honest world's histories here, in the form the proxy keeps beside its trail
        /// (`baselines.json`), ending now: a proxy started with it has 6 weeks of baselines.
        #[arg(long)]
        baselines: Option<PathBuf>,
    },
    /// Act on a running proxy through its admin API: locks (the kill switch), tokens.
    Admin {
        #[command(flatten)]
        api: cli::admin::Api,
        #[command(subcommand)]
        command: cli::admin::AdminCommand,
    },
    /// Start a mock Zendesk, the proxy in front of it with fresh dev certificates, and print commands
    /// to try. Needs nothing installed.
    Demo {
        /// Port for the proxy on 127.0.0.1 (0 picks a free one; a busy port falls back to a free one).
        #[arg(long, default_value_t = 8443)]
        port: u16,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check that no record was altered, deleted, reordered or cut off.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The head seq seen elsewhere (`vendorgate_trail_head_seq`, shutdown log): records missing
        /// after it are reported as truncation.
        #[arg(long)]
        expect_head: Option<u64>,
    },
    /// List decisions, newest last.
    Query {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        vendor: Option<String>,
        /// allow or deny
        #[arg(long)]
        decision: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// RFC 3339 time, or a look-back like 24h or 7d.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// The matching records as JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Per vendor and account: requests, denials by reason, egress, top routes, networks.
    Summary {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// One self-contained HTML page with charts: egress per account over time, denials over time
    /// by reason, the heaviest exporters.
    Report {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        html: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make a development CA and a server certificate it signs (never for production).
    Dev {
        #[arg(long)]
        out: PathBuf,
        /// Names (DNS or IP) the server certificate is valid for.
        #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        names: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => cli::run::run(&config),
        Command::Check {
            config,
            policy_only,
        } => cli::check(&config, policy_only),
        Command::Certs {
            command: CertsCommand::Dev { out, names },
        } => cli::certs_dev(&out, &names),
        Command::Demo { port } => cli::demo::run(port),
        Command::Health { url, ready } => cli::admin::health(url, ready),
        Command::Admin { api, command } => cli::admin::run(&api, command),
        Command::Audit { command } => match command {
            AuditCommand::Verify { files, expect_head } => cli::audit::verify(&files, expect_head),
            AuditCommand::Query {
                files,
                account,
                vendor,
                decision,
                reason,
                since,
                until,
                json,
            } => cli::audit::query(
                &files, account, vendor, decision, reason, since, until, json,
            ),
            AuditCommand::Summary { files } => cli::audit::summary(&files),
            AuditCommand::Report { files, html } => cli::audit::report(&files, &html),
        },
        Command::Explain {
            config,
            method,
            path,
            token,
            ip,
        } => cli::explain::run(&config, &method, &path, token.as_deref(), &ip),
        Command::Simulate {
            config,
            seed,
            runs,
            curve,
            baselines,
        } => cli::simulate::run(
            config.as_deref(),
            seed,
            runs,
            curve.as_deref(),
            baselines.as_deref(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vendorgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

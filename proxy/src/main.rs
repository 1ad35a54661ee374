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
    /// Validate a config file (and the files it names) and print what it says.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// TLS material.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
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
        Command::Check { config } => cli::check(&config),
        Command::Certs {
            command: CertsCommand::Dev { out, names },
        } => cli::certs_dev(&out, &names),
        Command::Demo { port } => cli::demo::run(port),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vendorgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

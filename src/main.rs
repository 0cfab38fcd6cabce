//! The `parity` command line. Parses arguments, calls the library, prints, and
//! maps outcomes to exit codes: 0 pass, 1 parity failure, 2 bad input or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use parity::harness::{self, render, render::Format};

#[derive(Parser)]
#[command(name = "parity", version, about = "Numerical parity and regression harness for LLM inference")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run contracts (default: every contracts/**/*.yaml); exit 0 only if all hold
    Check {
        /// Contract files or folders searched for *.yaml
        paths: Vec<PathBuf>,
        /// table, json, junit or markdown
        #[arg(long, default_value = "table")]
        format: Format,
        /// Run only the i-th of n slices of the sorted contract list (1-based), for CI
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
    },
    /// Compare two traces without a contract; B is the reference
    Diff {
        a: PathBuf,
        b: PathBuf,
        /// Only stages matching this glob (e.g. "L*.{q_rope,k_rope}")
        #[arg(long)]
        stages: Option<String>,
        /// table, json or markdown
        #[arg(long, default_value = "table")]
        format: Format,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Check { paths, format, shard } => {
            let mut files = harness::discover(&paths)?;
            if let Some(s) = &shard {
                files = harness::shard(files, s)?;
            }
            let results = harness::run_all(&files);
            out(&render::check(&results, format)?)?;
            Ok(harness::exit_code(&results) as u8)
        }
        Command::Diff { a, b, stages, format } => {
            let report = harness::diff::diff(&a, &b, stages.as_deref())
                .with_context(|| format!("comparing {} with {}", a.display(), b.display()))?;
            out(&render::diff(&report, format)?)?;
            Ok(if report.comparison.findings.iter().any(|f| f.fails) { 1 } else { 0 })
        }
    }
}

/// Writes to stdout; a closed pipe (`parity check | head`) is not an error.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

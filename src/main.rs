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
        /// Also write summary.md and index.html here
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// Write summary.md (for a pull request) and a self-contained index.html for contracts
    Report {
        /// Contract files or folders
        paths: Vec<PathBuf>,
        /// Output folder
        #[arg(long)]
        out: PathBuf,
        /// Metric of the layer x stage heatmap: cosine (1 - cos) or nmse
        #[arg(long, default_value = "cosine")]
        heatmap: parity::report::HeatMetric,
    },
    /// First divergent stage of a contract's subject, the isolated view, and the likely cause
    Bisect {
        /// The contract to bisect (omit with --pair)
        contract: Option<PathBuf>,
        /// Two subject traces and no reference: where they part, and which is right
        #[arg(long, num_args = 2, value_names = ["A", "B"])]
        pair: Option<Vec<PathBuf>>,
        /// Weights for isolated recomputation with --pair (default: from A's manifest)
        #[arg(long)]
        model: Option<PathBuf>,
        /// Write a minimal repro (the stage's inputs and outputs, and a command) here
        #[arg(long, default_value = "reports/bisect")]
        repro: PathBuf,
        /// table (text), json or markdown
        #[arg(long, default_value = "table")]
        format: Format,
        /// Also write summary.md and index.html here
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// Trace the engine on a reference's tokens, positions and batch split
    Trace {
        /// HF model folder or GGUF file
        #[arg(long)]
        model: PathBuf,
        /// The reference trace whose inputs are replayed
        #[arg(long)]
        like: PathBuf,
        /// Output trace directory
        #[arg(long)]
        out: PathBuf,
        /// Run only the first K layers
        #[arg(long)]
        layers: Option<usize>,
        /// Keep only stages matching this glob
        #[arg(long)]
        stages: Option<String>,
        /// Override a named convention (repeatable), e.g. --set rope.pairing=adjacent
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Print a model's configuration with the source of every value, and its tensors
    Inspect {
        model: PathBuf,
        /// Also list every tensor
        #[arg(long)]
        tensors: bool,
    },
    /// Generate text with the engine
    Run {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        /// Tokens to generate
        #[arg(short = 'n', long, default_value_t = 32)]
        n: usize,
        /// Wrap the prompt in the model's chat template
        #[arg(long)]
        chat: bool,
        /// 0 = greedy
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Measure the engine's prefill and decode speed (untraced and traced) and peak memory
    Bench {
        /// The model to run (GGUF file or HF directory); not needed with --kernels
        #[arg(long, required_unless_present = "kernels")]
        model: Option<PathBuf>,
        /// Instead of a model: time the matrix kernels on synthetic weights of
        /// every stored type (a --shape matrix, 1 and PROMPT activation rows),
        /// in exact numerics and, for quantised types, llama.cpp's
        #[arg(long)]
        kernels: bool,
        /// With --kernels: only these stored types (e.g. q4_k,f16)
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
        /// With --kernels: the matrix as ROWSxK (a small one stays in cache,
        /// which times the arithmetic rather than the memory)
        #[arg(long, default_value = "3072x1024", value_parser = parse_shape)]
        shape: (usize, usize),
        /// Prompt tokens (one prefill call)
        #[arg(short = 'p', long, default_value_t = 64)]
        prompt: usize,
        /// Decode steps (one call each)
        #[arg(short = 'n', long, default_value_t = 16)]
        generate: usize,
        /// Repetitions (best is reported)
        #[arg(long, default_value_t = 2)]
        reps: usize,
        /// Override a named convention (repeatable), e.g. --set activation_rounding=llamacpp
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Run only one way (last-row, all-rows or traced) instead of the
        /// three interleaved, so that it meets only the memory it leaves
        /// itself, as one `parity check` in its own process does
        #[arg(long, value_parser = parse_way)]
        only: Option<parity::engine::bench::Way>,
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

/// `ROWSxK`, both positive and K a whole number of 256-element blocks.
fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?}: expected ROWSxK with ROWS > 0 and K a positive multiple of 256, e.g. 3072x1024");
    let (r, k) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (r, k): (usize, usize) = (r.trim().parse().map_err(|_| bad())?, k.trim().parse().map_err(|_| bad())?);
    if r == 0 || k == 0 || !k.is_multiple_of(256) {
        return Err(bad());
    }
    Ok((r, k))
}

fn parse_way(s: &str) -> Result<parity::engine::bench::Way, String> {
    use parity::engine::bench::Way;
    match s {
        "last-row" => Ok(Way::LastRow),
        "all-rows" => Ok(Way::AllRows),
        "traced" => Ok(Way::Traced),
        _ => Err(format!("{s:?}: expected last-row, all-rows or traced")),
    }
}

fn write_report(entries: &[parity::report::Entry], dir: &std::path::Path, heat: parity::report::HeatMetric) -> anyhow::Result<()> {
    parity::report::write(entries, dir, &parity::report::Meta::current(heat))?;
    eprintln!("report: {}/index.html, {}/summary.md", dir.display(), dir.display());
    Ok(())
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
        Command::Check { paths, format, shard, report } => {
            let mut files = harness::discover(&paths)?;
            if let Some(s) = &shard {
                files = harness::shard(files, s)?;
            }
            let results = harness::run_all(&files);
            out(&render::check(&results, format)?)?;
            let code = harness::exit_code(&results) as u8;
            if let Some(dir) = report {
                write_report(&parity::report::build_from(results), &dir, Default::default())?;
            }
            Ok(code)
        }
        Command::Bench { model, kernels, types, shape, prompt, generate, reps, set, only } => {
            if kernels {
                for r in parity::engine::bench::kernels(shape.0, shape.1, prompt, &types)? {
                    println!("{}", serde_json::to_string(&r)?);
                }
                return Ok(0);
            }
            let model = model.ok_or_else(|| anyhow::anyhow!("bench needs --model (or --kernels)"))?;
            let opts = parity::engine::RunOptions { settings: parse_settings(&set)?, ..Default::default() };
            let r = parity::engine::bench::bench(&model, &opts, prompt, generate, reps, only)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(0)
        }
        Command::Report { paths, out, heatmap } => {
            let files = harness::discover(&paths)?;
            let entries = parity::report::build(&files);
            write_report(&entries, &out, heatmap)?;
            Ok(harness::exit_code(&entries.iter().map(|e| e.result.clone()).collect::<Vec<_>>()) as u8)
        }
        Command::Bisect { contract, pair, model, repro, format, report } => {
            if let Some(p) = pair {
                let r = harness::bisect::bisect_pair(&p[0], &p[1], model.as_deref())?;
                print!("{}", render::bisect_pair(&r, format)?);
                return Ok(if r.first.is_some() { 1 } else { 0 });
            }
            let path = contract.ok_or_else(|| anyhow::anyhow!("bisect needs a CONTRACT or --pair A B"))?;
            let c = harness::Contract::load(&path)?;
            let b = harness::bisect::bisect(&c, Some(&repro)).with_context(|| format!("bisecting {}", path.display()))?;
            print!("{}", render::bisect(&b, format)?);
            let code = if b.first.is_some() { 1 } else { 0 };
            if let Some(dir) = report {
                let entry = parity::report::entry(harness::run_contract(&path), Some(b));
                write_report(&[entry], &dir, Default::default())?;
            }
            Ok(code)
        }
        Command::Trace { model, like, out, layers, stages, set } => {
            let reference = parity::formats::trace::Trace::open(&like)?;
            let mut opts = parity::engine::RunOptions { layers, ..Default::default() };
            opts.settings = parse_settings(&set)?;
            if let Some(g) = stages {
                let glob = harness::glob::Glob::new(&g).map_err(|e| anyhow::anyhow!("--stages {g}: {e}"))?;
                opts.stages = Some(std::sync::Arc::new(move |n: &str| glob.matches(n)));
            }
            let t = parity::engine::trace_like(&model, &reference, &opts)?;
            let dir = t.save(&out, false)?;
            println!("wrote {} stages to {}", t.manifest.stages.len(), dir.display());
            Ok(0)
        }
        Command::Inspect { model, tensors } => {
            let src = parity::formats::model::ModelSource::open(&model)?;
            print!("{}", parity::report::inspect::render(&src, tensors)?);
            Ok(0)
        }
        Command::Run { model, prompt, n, chat, temperature, top_k, top_p, seed } => {
            use std::io::Write;
            let sampler = parity::engine::generate::Sampler { temperature, top_k, top_p, seed };
            let mut stdout = std::io::stdout();
            parity::engine::generate::run_prompt(&model, &prompt, n, chat, &sampler, |s| {
                let _ = write!(stdout, "{s}");
                let _ = stdout.flush();
            })?;
            println!();
            Ok(0)
        }
        Command::Diff { a, b, stages, format } => {
            let report = harness::diff::diff(&a, &b, stages.as_deref()).with_context(|| format!("comparing {} with {}", a.display(), b.display()))?;
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

/// `--set KEY=VALUE` arguments as named-convention overrides (values parsed as YAML).
fn parse_settings(set: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, serde_yaml::Value>> {
    let mut out = std::collections::BTreeMap::new();
    for kv in set {
        let (k, v) = kv.split_once('=').ok_or_else(|| anyhow::anyhow!("--set {kv}: expected KEY=VALUE"))?;
        let v: serde_yaml::Value = serde_yaml::from_str(v).with_context(|| format!("--set {kv}"))?;
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{parse_shape, parse_way};

    #[test]
    fn kernel_shapes_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(parse_shape("3072x1024"), Ok((3072, 1024)));
        assert_eq!(parse_shape("16X512"), Ok((16, 512)));
        for bad in ["3072", "0x1024", "8x100", "8x0", "ax256", "8x256x2"] {
            let err = parse_shape(bad).unwrap_err();
            assert!(err.contains(bad) && err.contains("multiple of 256"), "{bad}: {err}");
        }
    }

    #[test]
    fn bench_ways_parse_and_a_bad_one_names_the_three() {
        use parity::engine::bench::Way;
        assert_eq!(parse_way("traced"), Ok(Way::Traced));
        assert_eq!(parse_way("all-rows"), Ok(Way::AllRows));
        assert_eq!(parse_way("last-row"), Ok(Way::LastRow));
        let err = parse_way("trace").unwrap_err();
        assert!(err.contains("\"trace\"") && err.contains("last-row, all-rows or traced"), "{err}");
    }
}

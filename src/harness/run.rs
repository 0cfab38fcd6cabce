//! Running contracts: finding the files, resolving the subject (a trace or an
//! engine run), judging `expect_fail`, and the message a person reads.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::engine::{self, RunOptions};
use crate::error::{Error, Result};
use crate::formats::trace::Trace;
use crate::harness::check::compare;
use crate::harness::contract::{Bound, Contract, Subject};
use crate::harness::result::*;

/// Checks one contract file; every failure to check becomes `Verdict::Error`
/// with the message, never a pass.
pub fn run_contract(path: &Path) -> ContractResult {
    let start = Instant::now();
    let mut r = match Contract::load(path) {
        Ok(c) => check_contract(&c).unwrap_or_else(|e| error_result(c.id.clone(), c.claim.clone(), path, describe_subject(&c.subject), e)),
        Err(e) => error_result(path.display().to_string(), String::new(), path, String::new(), e),
    };
    r.seconds = start.elapsed().as_secs_f64();
    r
}

fn error_result(id: String, claim: String, path: &Path, subject: String, e: Error) -> ContractResult {
    ContractResult {
        id,
        claim,
        file: path.to_path_buf(),
        verdict: Verdict::Error,
        message: e.to_string(),
        subject,
        reference: None,
        comparison: None,
        expect_fail: None,
        error: Some(e.to_string()),
        seconds: 0.0,
    }
}

fn describe_subject(s: &Subject) -> String {
    match s {
        Subject::Trace(d) => format!("trace {}", d.display()),
        Subject::Engine { model, .. } => format!("engine {}", model.display()),
    }
}

/// Loads the traces a contract names (running the engine for an engine subject)
/// and judges it.
pub fn check_contract(c: &Contract) -> Result<ContractResult> {
    let reference = Trace::open(&c.reference)?;
    let low = c.reference_low.as_deref().map(Trace::open).transpose()?;
    let subject = match &c.subject {
        Subject::Trace(d) => Trace::open(d)?,
        Subject::Engine { model, dtype, layers, settings } => {
            let opts = RunOptions { dtype: *dtype, layers: *layers, settings: settings.clone(), stages: None };
            engine::trace_like(model, &reference, &opts)?
        }
    };
    let cmp = compare(&subject, &reference, low.as_ref(), &c.gates, None)?;
    let (verdict, expect_fail, mut message) = match &c.expect_fail {
        None if cmp.pass => (Verdict::Pass, None, String::new()),
        None => (Verdict::Fail, None, failure_message(&cmp)),
        Some(ef) => {
            let actual = cmp.first_divergence.as_ref().map(|d| d.stage.clone());
            let holds = !cmp.pass && actual.as_deref() == Some(ef.first_divergence.as_str());
            let msg = match (&cmp.first_divergence, holds) {
                (_, _) if cmp.pass => format!("expected to fail first at {} ({}), but every gate passes: the divergence is gone, so remove expect_fail", ef.first_divergence, ef.reason),
                (Some(d), true) => format!("still diverges first at {} ({}): {}", ef.first_divergence, where_(d), ef.reason),
                (Some(d), false) => format!("expected to fail first at {}, but it first fails at {} ({})\n{}", ef.first_divergence, d.stage, where_(d), failure_message(&cmp)),
                // Failing without a divergence cannot happen (a failure always has a row).
                (None, false) => format!("expected to fail first at {}, but no divergence was located", ef.first_divergence),
                (None, true) => unreachable!(),
            };
            let outcome = ExpectFailOutcome { reason: ef.reason.clone(), expected_first_divergence: ef.first_divergence.clone(), actual_first_divergence: actual, holds };
            (if holds { Verdict::ExpectedFailHolds } else { Verdict::Fail }, Some(outcome), msg)
        }
    };
    if !cmp.skipped.is_empty() && verdict != Verdict::Pass {
        let list: Vec<String> = cmp.skipped.iter().map(|s| format!("{} ({})", s.stage, s.reason)).collect();
        let _ = write!(message, "\nskipped: {}", list.join(", "));
    }
    Ok(ContractResult {
        id: c.id.clone(),
        claim: c.claim.clone(),
        file: c.file.clone(),
        verdict,
        message,
        subject: describe_subject(&c.subject),
        reference: Some(c.reference.clone()),
        comparison: Some(cmp),
        expect_fail,
        error: None,
        seconds: 0.0,
    })
}

fn where_(d: &Divergence) -> String {
    format!("row {}, batch {} = rows {}..{}, by {}", d.row, d.batch, d.batch_rows[0], d.batch_rows[1], d.cause)
}

/// Significant digits enough to tell a value from its threshold.
pub fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if (0.999..1.0).contains(&a) {
        // Cosines near 1: the full shortest form, or 0.99999999 would print as 1.
        format!("{x}")
    } else if (1e-3..1e5).contains(&a) {
        let s = format!("{x:.7}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{x:.4e}")
    }
}

/// One line per failing metric or finding, worst first, with the coordinates a
/// person needs to look at the numbers.
pub fn failure_message(cmp: &Comparison) -> String {
    let mut out = String::new();
    if let Some(d) = &cmp.first_divergence {
        let _ = writeln!(out, "first divergence: {} ({})", d.stage, where_(d));
    }
    for f in cmp.findings.iter().filter(|f| f.fails) {
        let stage = f.stage.as_deref().unwrap_or("trace");
        let _ = writeln!(out, "{stage}: {}", f.message);
    }
    let mut failing: Vec<(&StageResult, &MetricResult)> = cmp.stages.iter().flat_map(|s| s.metrics.iter().filter(|m| !m.pass).map(move |m| (s, m))).collect();
    failing.sort_by(|a, b| b.1.usage.total_cmp(&a.1.usage));
    const SHOWN: usize = 8;
    for (s, m) in failing.iter().take(SHOWN) {
        let _ = writeln!(out, "{}", metric_line(s, m));
    }
    if failing.len() > SHOWN {
        let _ = writeln!(out, "... and {} more failing metrics", failing.len() - SHOWN);
    }
    out.trim_end().to_string()
}

/// `L0.q_rope: cosine 0.41 < min 0.99999 (would pass with min <= 0.41); worst row 5; ...`
pub fn metric_line(s: &StageResult, m: &MetricResult) -> String {
    let (op, bound) = match (m.bound, m.pass) {
        (Bound::Min, false) => ("<", "min"),
        (Bound::Min, true) => (">=", "min"),
        (Bound::Max, false) => (">", "max"),
        (Bound::Max, true) => ("<=", "max"),
    };
    let cmp_op = if m.bound == Bound::Min { ">=" } else { "<=" };
    let scaled = if m.threshold != m.threshold_written { format!(" (written {}, depth-scaled)", num(m.threshold_written)) } else { String::new() };
    let what = match m.reduction {
        crate::harness::metrics::Reduction::FractionOfRows => format!(" of {} rows", s.rows.len()),
        _ => String::new(),
    };
    let mut line = format!(
        "{}: {} {}{what} {op} {bound} {}{scaled} (would pass with {bound} {cmp_op} {}); gate {} \"{}\" rows {}",
        s.stage,
        m.metric.name(),
        num(m.value),
        num(m.threshold),
        num(m.passing_threshold),
        s.gate + 1,
        s.gate_stages,
        s.gate_rows
    );
    if let Some(r) = m.worst_row {
        let _ = write!(line, "; worst row {r}");
        if m.failing_rows.len() > 1 {
            let _ = write!(line, " ({} rows fail, first {})", m.failing_rows.len(), m.failing_rows[0]);
        }
    }
    if let Some(t) = &m.top1 {
        let _ = write!(line, "; top-1 token: subject {}, reference {}", t.subject_token, t.reference_token);
    }
    if let Some(c) = &m.worst_coord {
        let head = match (c.head, c.dim) {
            (Some(h), Some(d)) => format!(" (head {h}, dim {d})"),
            _ => String::new(),
        };
        let _ = write!(line, "; largest difference at index {}{head}: subject {} vs reference {}", c.index, c.subject, c.reference);
    }
    line
}

/// Contract files to run: each argument is a file or a folder searched for
/// `*.yaml`/`*.yml`; no argument means `contracts/` under the current folder.
/// Sorted and deduplicated, so shards are stable.
pub fn discover(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let defaults = [PathBuf::from("contracts")];
    let args = if args.is_empty() { &defaults[..] } else { args };
    let mut out = Vec::new();
    for a in args {
        if a.is_dir() {
            walk(a, &mut out)?;
        } else if a.is_file() {
            out.push(a.clone());
        } else {
            return Err(Error::Usage(format!("{}: no such contract file or folder", a.display())));
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(Error::Usage(format!("no contracts (*.yaml) found under {}", args.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))));
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for e in entries {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

/// `i/n` (1-based): the i-th of n interleaved slices of `files`.
pub fn shard<T>(files: Vec<T>, spec: &str) -> Result<Vec<T>> {
    let bad = || Error::Usage(format!("--shard {spec:?} must be i/n with 1 <= i <= n"));
    let (i, n) = spec.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || i == 0 || i > n {
        return Err(bad());
    }
    Ok(files.into_iter().enumerate().filter(|(k, _)| k % n == i - 1).map(|(_, f)| f).collect())
}

/// Exit code for a run: 2 if any contract could not be checked, 1 if any failed, else 0.
pub fn exit_code(results: &[ContractResult]) -> i32 {
    if results.iter().any(|r| r.verdict == Verdict::Error) {
        2
    } else if results.iter().any(|r| r.verdict == Verdict::Fail) {
        1
    } else {
        0
    }
}

/// Runs every file (in parallel) and turns a reused id into an error on the later file.
pub fn run_all(files: &[PathBuf]) -> Vec<ContractResult> {
    use rayon::prelude::*;
    let mut results: Vec<ContractResult> = files.par_iter().map(|f| run_contract(f)).collect();
    let mut seen = std::collections::BTreeMap::new();
    for r in results.iter_mut().filter(|r| r.verdict != Verdict::Error) {
        if let Some(prev) = seen.insert(r.id.clone(), r.file.clone()) {
            let msg = format!("contract id {:?} is already used by {}", r.id, prev.display());
            r.verdict = Verdict::Error;
            r.message = msg.clone();
            r.error = Some(msg);
        }
    }
    results
}

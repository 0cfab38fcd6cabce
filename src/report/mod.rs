//! What people read: terminal tables (inspect), and for contracts a markdown
//! summary for pull requests (`markdown`) and one self-contained HTML page for
//! a desk (`html`, charts from `svg`).
//!
//! This room only reads what harness, engine and formats produce; nothing but
//! the binary imports it. Gathering (`build`) is separate from rendering so the
//! renderers are pure functions of [`Entry`] and [`Meta`] and can be snapshot-tested.

pub mod html;
pub mod inspect;
pub mod markdown;
pub mod svg;

use std::path::{Path, PathBuf};

use crate::engine::{self, RunOptions};
use crate::error::{Error, Result};
use crate::formats::model::ModelSource;
use crate::formats::trace::{Manifest, Trace};
use crate::harness::bisect::{self, Bisect};
use crate::harness::contract::Subject;
use crate::harness::metrics;
use crate::harness::result::{ContractResult, Verdict};
use crate::harness::{self as h, Contract};

/// Per-head and per-position error at the divergent stage, from both traces.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StageDetail {
    pub stage: String,
    /// `1 - cos` per head over all shared rows (stages shaped [T, H, hd]; else empty).
    pub heads: Vec<f64>,
    /// `(position, 1 - cos, nmse)` for every row both traces hold: both, since a
    /// pure rescaling (un-renormalised expert weights) leaves the cosine at 1.
    pub positions: Vec<(usize, f64, f64)>,
    /// The reference's calls: `[start, end)` rows, prefill first.
    pub batches: Vec<[usize; 2]>,
}

/// Who made one side of a comparison, for the provenance section.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Producer {
    /// `subject` or `reference`.
    pub role: String,
    /// `kind name version`, e.g. `hf transformers 5.23.0`.
    pub producer: String,
    pub command: Option<String>,
    pub model: Option<String>,
    pub sha256: Option<String>,
    /// Settings that change numerics, as `key=value`.
    pub settings: Vec<String>,
}

/// Which metric the heatmap colours (both on a log scale).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeatMetric {
    /// Cosine distance `1 - cos` of the worst row.
    #[default]
    CosineDistance,
    /// NMSE of the worst row.
    Nmse,
}

impl std::str::FromStr for HeatMetric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cosine" | "1-cos" => Ok(HeatMetric::CosineDistance),
            "nmse" => Ok(HeatMetric::Nmse),
            _ => Err(Error::Usage(format!("heatmap metric {s}: expected cosine or nmse"))),
        }
    }
}

impl HeatMetric {
    /// The gate metric whose per-stage value feeds the chart.
    pub fn gate_metric(self) -> &'static str {
        match self {
            HeatMetric::CosineDistance => "cosine",
            HeatMetric::Nmse => "nmse",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            HeatMetric::CosineDistance => "1 - cos",
            HeatMetric::Nmse => "NMSE",
        }
    }
}

/// One contract's report: its check, and for failures its bisect.
pub struct Entry {
    pub file: PathBuf,
    /// The contract as written (None when unreadable).
    pub text: Option<String>,
    pub result: ContractResult,
    pub bisect: Option<Bisect>,
    pub detail: Option<StageDetail>,
    /// Why a section is missing (bisect or detail failed, or had nothing to show).
    pub notes: Vec<String>,
    pub producers: Vec<Producer>,
}

/// Provenance of the report run itself, and rendering choices.
pub struct Meta {
    pub command: String,
    /// Only in the provenance section, never inside a chart (tests fix it).
    pub date: String,
    pub heat: HeatMetric,
}

impl Meta {
    /// The running command line and the current date (`PARITY_REPORT_DATE` overrides it).
    pub fn current(heat: HeatMetric) -> Meta {
        // argv[0] as its file name: where the binary was built says nothing about the run.
        let args: Vec<String> = std::env::args().enumerate().map(|(i, a)| if i == 0 { Path::new(&a).file_name().map_or(a.clone(), |f| f.to_string_lossy().into_owned()) } else { a }).collect();
        Meta { command: args.join(" "), date: now(), heat }
    }
}

/// Checks every contract, then [`build_from`].
pub fn build(files: &[PathBuf]) -> Vec<Entry> {
    build_from(files.iter().map(|f| h::run_contract(f)).collect())
}

/// Reports on checks already run (`check --report` does not run them twice);
/// bisects those that fail or are expected to.
pub fn build_from(results: Vec<ContractResult>) -> Vec<Entry> {
    results.into_iter().map(|r| entry(r, None)).collect()
}

/// One entry; `bisect` when the caller already has it (`bisect --report`).
pub fn entry(result: ContractResult, bisect: Option<Bisect>) -> Entry {
    let file = result.file.clone();
    let mut notes = Vec::new();
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => Some(t),
        Err(e) => {
            notes.push(format!("{}: {e}", file.display()));
            None
        }
    };
    let contract = match Contract::load(&file) {
        Ok(c) => Some(c),
        Err(e) => {
            if result.verdict != Verdict::Error {
                notes.push(e.to_string());
            }
            None
        }
    };
    let mut e = Entry { file, text, result, bisect, detail: None, notes, producers: Vec::new() };
    let Some(c) = contract else { return e };
    let diverges = matches!(e.result.verdict, Verdict::Fail | Verdict::ExpectedFailHolds);
    if diverges && e.bisect.is_none() {
        match bisect::bisect(&c, None) {
            Ok(b) => e.bisect = Some(b),
            Err(err) => e.notes.push(format!("bisect: {err}")),
        }
    }
    // The isolated first stage is the op that is wrong; the cumulative one can be
    // its victim. `tokens` means the inputs differ: there are no values to split.
    let stage = e.bisect.as_ref().and_then(|b| b.isolated_first.clone().or_else(|| b.first.as_ref().map(|d| d.stage.clone())));
    let mut subject_manifest = None;
    match stage.filter(|s| s != "tokens") {
        Some(s) => match detail(&c, &s) {
            Ok((d, m)) => {
                e.detail = Some(d);
                subject_manifest = Some(m);
            }
            Err(err) => e.notes.push(format!("per-head and per-position detail at {s}: {err}")),
        },
        None if diverges => e.notes.push("no divergent stage with values to break down".into()),
        None => {}
    }
    e.producers = producers(&c, subject_manifest.as_ref());
    e
}

/// The subject's trace at one stage: opened, or re-run through the engine on the
/// reference's inputs (only that stage is kept, so this is one cheap forward).
fn subject_trace(c: &Contract, reference: &Trace, stage: &str) -> Result<Trace> {
    match &c.subject {
        Subject::Trace(dir) => Trace::open(dir),
        Subject::Engine { model, dtype, layers, settings } => {
            let keep = stage.to_string();
            let opts = RunOptions { dtype: *dtype, layers: *layers, settings: settings.clone(), stages: Some(std::sync::Arc::new(move |n: &str| n == keep)) };
            engine::trace_like(model, reference, &opts)
        }
    }
}

fn detail(c: &Contract, stage: &str) -> Result<(StageDetail, Manifest)> {
    let reference = Trace::open(&c.reference)?;
    let subject = subject_trace(c, &reference, stage)?;
    let (s, r) = (subject.load(stage)?, reference.load(stage)?);
    let (Some(a), Some(b)) = (s.f32(), r.f32()) else {
        return Err(Error::mismatch(format!("{stage} holds ids, not values")));
    };
    let row = r.row_len();
    if row == 0 || s.shape.get(1..) != r.shape.get(1..) {
        return Err(Error::mismatch(format!("{stage}: subject row shape {:?} differs from the reference's {:?}", s.shape.get(1..), r.shape.get(1..))));
    }
    // Either side may hold only some rows (`rows: [start, end]`): compare the overlap.
    let (lo, hi) = (s.rows.start.max(r.rows.start), s.rows.end.min(r.rows.end));
    let pairs: Vec<(usize, &[f32], &[f32])> = (lo..hi).filter_map(|t| Some((t, row_at(a, row, t - s.rows.start)?, row_at(b, row, t - r.rows.start)?))).collect();
    let positions = pairs.iter().map(|&(t, x, y)| (t, 1.0 - metrics::cosine(x, y), metrics::nmse(x, y))).collect();
    let heads = match r.shape.as_slice() {
        [_, nh, hd] if *hd > 0 => (0..*nh)
            .map(|hh| {
                let pick = |k: usize| -> Vec<f32> { pairs.iter().flat_map(|p| if k == 0 { &p.1[hh * hd..(hh + 1) * hd] } else { &p.2[hh * hd..(hh + 1) * hd] }).copied().collect() };
                1.0 - metrics::cosine(&pick(0), &pick(1))
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok((StageDetail { stage: stage.into(), heads, positions, batches: reference.manifest.batches.clone() }, subject.manifest.clone()))
}

/// Row `i` of a flat `[T, row]` buffer, if the buffer holds it.
fn row_at(v: &[f32], row: usize, i: usize) -> Option<&[f32]> {
    v.get(i * row..(i + 1) * row)
}

fn from_manifest(role: &str, m: &Manifest) -> Producer {
    let p = &m.producer;
    let producer = [p.kind.as_str(), p.name.as_str(), p.version.as_deref().unwrap_or("")].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(" ");
    let model = m.model.as_ref();
    Producer {
        role: role.into(),
        producer,
        command: p.command.clone(),
        model: model.and_then(|x| x.path.clone()).map(|p| [Some(p), model.and_then(|x| x.arch.clone()), model.and_then(|x| x.dtype.clone())].into_iter().flatten().collect::<Vec<_>>().join(" ")),
        sha256: model.and_then(|x| x.sha256.clone()),
        settings: m.settings.iter().map(|(k, v)| format!("{k}={}", yaml_scalar(v))).collect(),
    }
}

fn yaml_scalar(v: &serde_yaml::Value) -> String {
    serde_yaml::to_string(v).map_or_else(|_| "?".into(), |s| s.trim().to_string())
}

/// Subject and reference producers; an engine subject's manifest comes from its
/// re-run when there was one, else from the model file (hashed, as trace_like does).
fn producers(c: &Contract, subject: Option<&Manifest>) -> Vec<Producer> {
    let mut out = Vec::new();
    match (&c.subject, subject) {
        (Subject::Trace(dir), _) => match Trace::open(dir) {
            Ok(t) => out.push(from_manifest("subject", &t.manifest)),
            Err(e) => out.push(Producer { role: "subject".into(), producer: format!("trace {} ({e})", dir.display()), ..Default::default() }),
        },
        (Subject::Engine { .. }, Some(m)) => out.push(from_manifest("subject", m)),
        (Subject::Engine { model, settings, .. }, None) => out.push(Producer {
            role: "subject".into(),
            producer: format!("parity parity {}", env!("CARGO_PKG_VERSION")),
            command: None,
            model: Some(model.display().to_string()),
            sha256: ModelSource::open(model).and_then(|s| s.sha256()).ok(),
            settings: settings.iter().map(|(k, v)| format!("{k}={}", yaml_scalar(v))).collect(),
        }),
    }
    match Trace::open(&c.reference) {
        Ok(t) => out.push(from_manifest("reference", &t.manifest)),
        Err(e) => out.push(Producer { role: "reference".into(), producer: format!("({e})"), ..Default::default() }),
    }
    out
}

/// Writes `summary.md` and `index.html` into `out`.
pub fn write(entries: &[Entry], out: &Path, meta: &Meta) -> Result<()> {
    let abs = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    if abs.components().any(|c| c.as_os_str() == "reference") {
        return Err(Error::Usage(format!("{}: refusing to write a report under a reference/ folder", out.display())));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let md = markdown::render(entries);
    std::fs::write(out.join("summary.md"), md).map_err(|e| Error::io(out.join("summary.md"), e))?;
    let page = html::render(entries, meta);
    std::fs::write(out.join("index.html"), page).map_err(|e| Error::io(out.join("index.html"), e))?;
    Ok(())
}

/// `YYYY-MM-DD HH:MM UTC` now, or `PARITY_REPORT_DATE` when set (snapshots, examples).
pub fn now() -> String {
    if let Ok(d) = std::env::var("PARITY_REPORT_DATE") {
        return d;
    }
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// Fixed formatting for every number a reader sees: 3 significant digits,
/// scientific outside [1e-3, 1e4), `NaN`/`inf` spelled out (never a panic).
pub fn num(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if (1e-3..1e4).contains(&a) {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{x:.decimals$}")
    } else {
        format!("{x:.2e}")
    }
}

/// A metric's value or threshold: similarity metrics near 1 need six decimals
/// (0.99999 is not 1.000); errors get [`num`].
pub fn metric_num(metric: crate::harness::metrics::Metric, x: f64) -> String {
    match metric.name() {
        "cosine" | "top1_agreement" | "topk_overlap" | "same_top_p" if x.is_finite() => format!("{x:.6}"),
        _ => num(x),
    }
}

/// `n contract(s)` with the verb agreeing.
pub fn contracts(n: usize, verb_one: &str, verb_many: &str) -> String {
    if n == 1 {
        format!("1 contract {verb_one}")
    } else {
        format!("{n} contracts {verb_many}")
    }
}

/// How far a metric is from its gate: `usage` is the fraction of the budget used
/// (above 1 fails), so a reader sees "3% of budget" or "7.42e4× the budget".
pub fn margin(usage: f64) -> String {
    if !usage.is_finite() {
        "n/a".into()
    } else if usage <= 1.0 {
        format!("{}% of budget", num(usage * 100.0))
    } else {
        format!("{}× the budget", num(usage))
    }
}

/// Row key of a stage in the layer views: `embed`, `L{i}`, or `final`.
pub fn layer_key(stage: &str) -> String {
    match crate::formats::trace::split_layer(stage) {
        Some((l, _)) => format!("L{l}"),
        None if stage == "embed" => "embed".into(),
        None => "final".into(),
    }
}

/// Per layer key in execution order, the worst value of `f` over its stages (NaN-free max).
pub fn per_layer<T>(items: &[T], stage: impl Fn(&T) -> &str, f: impl Fn(&T) -> Option<f64>) -> Vec<(String, Option<f64>)> {
    let mut out: Vec<(String, Option<f64>)> = Vec::new();
    for it in items {
        let key = layer_key(stage(it));
        let v = f(it).filter(|v| !v.is_nan());
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, cur)) => *cur = max_opt(*cur, v),
            None => out.push((key, v)),
        }
    }
    out
}

pub fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Worst-row value of `metric` at a stage, as an error (cosine becomes `1 - cos`).
pub fn stage_error(s: &crate::harness::result::StageResult, metric: &str) -> Option<f64> {
    s.metrics.iter().find(|m| m.metric.name() == metric).map(|m| if metric == "cosine" { 1.0 - m.value } else { m.value })
}

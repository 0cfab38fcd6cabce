//! Contracts (SPEC §3): a strict YAML schema parsed once into a resolved
//! [`Contract`] whose paths exist and whose globs and gates are valid. Every
//! error names the file, and the line and column of the offending key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::formats::tensor::DType;
use crate::formats::trace::resolve;
use crate::harness::glob::Glob;
use crate::harness::metrics::{Metric, Params};

// ---- the schema as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContract {
    id: String,
    claim: String,
    subject: RawSubject,
    reference: String,
    #[serde(default)]
    reference_low: Option<String>,
    gates: Vec<RawGate>,
    #[serde(default)]
    expect_fail: Option<ExpectFail>,
    #[serde(default)]
    model: Option<String>,
}

/// `{engine: {...}}` or `{trace: DIR}` (a struct: yaml_serde reads enums as tags).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    #[serde(default)]
    engine: Option<RawEngine>,
    #[serde(default)]
    trace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    model: String,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    layers: Option<usize>,
    #[serde(default)]
    settings: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBound {
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopk {
    k: usize,
    #[serde(default)]
    margin: Option<f64>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopP {
    p: f64,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRows {
    Name(String),
    Range([usize; 2]),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    stages: String,
    #[serde(default)]
    rows: Option<RawRows>,
    #[serde(default)]
    depth_scale: Option<f64>,
    #[serde(default)]
    cosine: Option<RawBound>,
    #[serde(default)]
    nmse: Option<RawBound>,
    #[serde(default)]
    max_abs: Option<RawBound>,
    #[serde(default)]
    rmse: Option<RawBound>,
    #[serde(default)]
    rel_l2: Option<RawBound>,
    #[serde(default)]
    noise_ratio: Option<RawBound>,
    #[serde(default)]
    top1_agreement: Option<RawBound>,
    #[serde(default)]
    topk_overlap: Option<RawTopk>,
    #[serde(default)]
    kl_divergence: Option<RawBound>,
    #[serde(default)]
    same_top_p: Option<RawTopP>,
}

// ---- the resolved contract -------------------------------------------------

/// `expect_fail`: the contract holds only while the subject still fails, and first
/// fails at `first_divergence`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectFail {
    pub reason: String,
    pub first_divergence: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// Run the embedded engine on the reference's tokens and batch split.
    Engine {
        model: PathBuf,
        #[serde(serialize_with = "ser_dtype")]
        dtype: Option<DType>,
        layers: Option<usize>,
        settings: BTreeMap<String, serde_yaml::Value>,
    },
    /// A trace directory made by anyone.
    Trace(PathBuf),
}

/// Which rows a gate looks at (always intersected with the rows both traces hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowSelect {
    All,
    /// The rows of the reference's first batch.
    Prefill,
    /// Every row after the first batch.
    Decode,
    /// The last position of the sequence.
    Last,
    /// Rows `start..end` of the sequence.
    Range(usize, usize),
}

impl std::fmt::Display for RowSelect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowSelect::All => f.write_str("all"),
            RowSelect::Prefill => f.write_str("prefill"),
            RowSelect::Decode => f.write_str("decode"),
            RowSelect::Last => f.write_str("last"),
            RowSelect::Range(a, b) => write!(f, "[{a}, {b}]"),
        }
    }
}

impl RowSelect {
    /// The selected rows of a sequence of `n` rows split into `batches`.
    pub fn range(self, n: usize, batches: &[[usize; 2]]) -> std::ops::Range<usize> {
        let first_end = batches.first().map(|b| b[1]).unwrap_or(n);
        match self {
            RowSelect::All => 0..n,
            RowSelect::Prefill => 0..first_end,
            RowSelect::Decode => first_end..n,
            RowSelect::Last => n.saturating_sub(1)..n,
            RowSelect::Range(a, b) => a.min(n)..b.min(n),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    Min,
    Max,
}

/// One metric bound of a gate.
#[derive(Clone, Debug, Serialize)]
pub struct MetricGate {
    pub metric: Metric,
    pub params: Params,
    pub bound: Bound,
    /// The threshold as written (before `depth_scale`).
    pub threshold: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Gate {
    #[serde(serialize_with = "ser_glob")]
    pub stages: Glob,
    pub rows: RowSelect,
    /// Thresholds scale with `1 + depth_scale * layer` (see [`MetricGate::effective`]).
    pub depth_scale: f64,
    pub metrics: Vec<MetricGate>,
}

fn ser_dtype<S: serde::Serializer>(d: &Option<DType>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_some(&d.map(|d| d.name()))
}

fn ser_glob<S: serde::Serializer>(g: &Glob, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(g.as_str())
}

impl MetricGate {
    /// The threshold at `layer` given the gate's `depth_scale`, with `f = 1 +
    /// depth_scale * layer`: a `max` bound becomes `x * f`; a `min` bound on a
    /// metric whose best value is 1 (cosine, agreements) keeps its slack
    /// proportional, `1 - (1 - x) * f`; any other `min` bound becomes `x / f`.
    pub fn effective(&self, depth_scale: f64, layer: usize) -> f64 {
        let f = 1.0 + depth_scale * layer as f64;
        match self.bound {
            Bound::Max => self.threshold * f,
            Bound::Min if self.metric.best_is_one() => 1.0 - (1.0 - self.threshold) * f,
            Bound::Min => self.threshold / f,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Contract {
    pub file: PathBuf,
    pub id: String,
    pub claim: String,
    pub subject: Subject,
    pub reference: PathBuf,
    pub reference_low: Option<PathBuf>,
    pub gates: Vec<Gate>,
    pub expect_fail: Option<ExpectFail>,
    /// Weights for isolated mode and diagnosis; defaults to the reference manifest's model.
    pub model: Option<PathBuf>,
}

impl Contract {
    pub fn load(path: &Path) -> Result<Contract> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Contract::parse(path, &text)
    }

    /// Parses and validates `text` as the contract file `path`; relative paths
    /// resolve against `path`'s folder and must exist.
    pub fn parse(path: &Path, text: &str) -> Result<Contract> {
        let raw: RawContract = serde_yaml::from_str(text).map_err(|e| {
            let msg = e.to_string();
            // yaml_serde appends " at line L column C"; we lead with it instead.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            match e.location() {
                Some(l) => at(path, l.line(), l.column(), msg),
                None => Error::Contract { path: path.to_path_buf(), msg },
            }
        })?;
        let loc = Locator { path, text };
        let base = path.parent().unwrap_or(Path::new("."));
        if raw.id.trim().is_empty() {
            return Err(loc.key("id", 0, "id must not be empty".into()));
        }

        let trace_dir = |key: &str, p: &str| -> Result<PathBuf> {
            let dir = resolve(base, p);
            if !dir.join("trace.yaml").is_file() {
                let what = if dir.exists() { "is not a trace directory (no trace.yaml)" } else { "does not exist" };
                return Err(loc.value(key, p, format!("{key} {} {what}", dir.display())));
            }
            Ok(dir)
        };
        let reference = trace_dir("reference", &raw.reference)?;
        let reference_low = raw.reference_low.as_deref().map(|p| trace_dir("reference_low", p)).transpose()?;
        let subject = match (raw.subject.engine, raw.subject.trace) {
            (Some(_), Some(_)) | (None, None) => return Err(loc.key("subject", 0, "subject must be exactly one of {engine: {model: ...}} or {trace: DIR}".into())),
            (None, Some(p)) => Subject::Trace(trace_dir("trace", &p)?),
            (Some(e), None) => {
                let model = resolve(base, &e.model);
                if !model.exists() {
                    return Err(loc.value("model", &e.model, format!("engine model {} does not exist", model.display())));
                }
                let dtype = match e.dtype.as_deref() {
                    None => None,
                    Some(d @ ("f32" | "f16" | "bf16")) => DType::from_name(d),
                    Some(d) => return Err(loc.value("dtype", d, format!("engine dtype {d:?} is not one of f32, f16, bf16"))),
                };
                Subject::Engine { model, dtype, layers: e.layers, settings: e.settings }
            }
        };
        let model = match raw.model.as_deref() {
            None => None,
            Some(p) => {
                let m = resolve(base, p);
                if !m.exists() {
                    // The engine subject also has a `model:` key; the top-level one comes last.
                    return Err(loc.value("model", p, format!("model {} does not exist", m.display())));
                }
                Some(m)
            }
        };
        if let Some(ef) = &raw.expect_fail {
            if ef.first_divergence.trim().is_empty() {
                return Err(loc.key("first_divergence", 0, "expect_fail.first_divergence must name a stage".into()));
            }
        }

        if raw.gates.is_empty() {
            return Err(loc.key("gates", 0, "gates is empty; a catch-all rule `stages: \"*\"` is required".into()));
        }
        let mut gates = Vec::new();
        for (i, g) in raw.gates.into_iter().enumerate() {
            let gate = resolve_gate(g, i, &loc, reference_low.is_some())?;
            if let Some(j) = gates.iter().position(|g: &Gate| g.stages.is_catch_all()) {
                return Err(loc.gate(i, format!("gate {} can never apply: gate {} (\"{}\") already matches every stage", i + 1, j + 1, gates[j].stages)));
            }
            gates.push(gate);
        }
        if !gates.iter().any(|g| g.stages.is_catch_all()) {
            return Err(loc.key("gates", 0, "no catch-all gate: add a last rule with `stages: \"*\"` so no stage goes ungated".into()));
        }
        Ok(Contract { file: path.to_path_buf(), id: raw.id, claim: raw.claim, subject, reference, reference_low, gates, expect_fail: raw.expect_fail, model })
    }

    /// The first gate whose glob matches `stage` (the catch-all guarantees one).
    pub fn gate_for(&self, stage: &str) -> Option<(usize, &Gate)> {
        self.gates.iter().enumerate().find(|(_, g)| g.stages.matches(stage))
    }
}

fn resolve_gate(g: RawGate, i: usize, loc: &Locator, has_low: bool) -> Result<Gate> {
    let stages = Glob::new(&g.stages).map_err(|m| loc.gate(i, m))?;
    let rows = match g.rows {
        None => RowSelect::All,
        Some(RawRows::Range([a, b])) if a < b => RowSelect::Range(a, b),
        Some(RawRows::Range([a, b])) => return Err(loc.gate(i, format!("rows [{a}, {b}] is empty; write [start, end] with start < end"))),
        Some(RawRows::Name(n)) => match n.as_str() {
            "all" => RowSelect::All,
            "prefill" => RowSelect::Prefill,
            "decode" => RowSelect::Decode,
            "last" => RowSelect::Last,
            _ => return Err(loc.gate(i, format!("rows {n:?} is not one of all, prefill, decode, last, [start, end]"))),
        },
    };
    let depth_scale = g.depth_scale.unwrap_or(0.0);
    if !(depth_scale.is_finite() && depth_scale >= 0.0) {
        return Err(loc.gate(i, format!("depth_scale {depth_scale} must be a finite number >= 0")));
    }
    let none = Params::default();
    let mut metrics = Vec::new();
    let mut push = |m: Metric, params: Params, min: Option<f64>, max: Option<f64>| -> Result<()> {
        if min.is_none() && max.is_none() {
            return Err(loc.gate(i, format!("{} needs a bound: {{min: x}} or {{max: x}}", m.name())));
        }
        for (bound, t) in [(Bound::Min, min), (Bound::Max, max)] {
            if let Some(t) = t {
                if !t.is_finite() {
                    return Err(loc.gate(i, format!("{} threshold {t} must be finite", m.name())));
                }
                metrics.push(MetricGate { metric: m, params, bound, threshold: t });
            }
        }
        Ok(())
    };
    let plain = [
        (Metric::Cosine, g.cosine),
        (Metric::Nmse, g.nmse),
        (Metric::MaxAbs, g.max_abs),
        (Metric::Rmse, g.rmse),
        (Metric::RelL2, g.rel_l2),
        (Metric::NoiseRatio, g.noise_ratio),
        (Metric::Top1Agreement, g.top1_agreement),
        (Metric::KlDivergence, g.kl_divergence),
    ];
    for (m, b) in plain {
        if let Some(b) = b {
            push(m, none, b.min, b.max)?;
        }
    }
    if let Some(t) = g.topk_overlap {
        let margin = t.margin.unwrap_or(f64::INFINITY);
        if t.k == 0 || margin < 0.0 || margin.is_nan() {
            return Err(loc.gate(i, "topk_overlap needs k >= 1 and margin >= 0".into()));
        }
        push(Metric::TopkOverlap, Params { k: Some(t.k), margin: Some(margin), p: None }, t.min, t.max)?;
    }
    if let Some(t) = g.same_top_p {
        if !(t.p > 0.0 && t.p <= 1.0) {
            return Err(loc.gate(i, format!("same_top_p p {} must be in (0, 1]", t.p)));
        }
        push(Metric::SameTopP, Params { p: Some(t.p), ..none }, t.min, t.max)?;
    }
    if metrics.is_empty() {
        return Err(loc.gate(i, format!("gate \"{}\" names no metric", g.stages)));
    }
    for m in &metrics {
        if m.metric == Metric::NoiseRatio && !has_low {
            return Err(loc.gate(i, "noise_ratio needs a reference_low (the noise-floor reference)".into()));
        }
        if m.metric.logits_only() && !stages.matches("logits") {
            return Err(loc.gate(i, format!("{} is a metric of logits, but \"{}\" does not match logits", m.metric.name(), stages)));
        }
    }
    Ok(Gate { stages, rows, depth_scale, metrics })
}

fn at(path: &Path, line: usize, column: usize, msg: String) -> Error {
    Error::ContractAt { path: path.to_path_buf(), line, column, msg }
}

/// Finds where a key sits in the contract text, for errors found after parsing.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn pos(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }

    /// Byte offsets of `key:` used as a key (not inside a comment).
    fn keys(&self, key: &str) -> Vec<usize> {
        let pat = format!("{key}:");
        let mut out = Vec::new();
        let mut line_start = 0;
        for line in self.text.split_inclusive('\n') {
            let code = line.split(" #").next().unwrap_or(line);
            let code = if code.trim_start().starts_with('#') { "" } else { code };
            let mut from = 0;
            while let Some(i) = code[from..].find(&pat) {
                let j = from + i;
                let prev = code[..j].chars().last();
                if prev.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                    out.push(line_start + j);
                }
                from = j + pat.len();
            }
            line_start += line.len();
        }
        out
    }

    fn err_at(&self, offset: Option<usize>, msg: String) -> Error {
        match offset {
            Some(o) => {
                let (l, c) = self.pos(o);
                at(self.path, l, c, msg)
            }
            None => Error::Contract { path: self.path.to_path_buf(), msg },
        }
    }

    /// The `nth` occurrence of `key:`.
    fn key(&self, key: &str, nth: usize, msg: String) -> Error {
        self.err_at(self.keys(key).get(nth).copied(), msg)
    }

    /// The last `key:` whose value contains `value` (points at the value).
    fn value(&self, key: &str, value: &str, msg: String) -> Error {
        let hit = self.keys(key).into_iter().rev().find_map(|o| {
            let rest = &self.text[o..];
            let line = rest.split('\n').next().unwrap_or("");
            line.find(value).map(|i| o + i)
        });
        self.err_at(hit.or_else(|| self.keys(key).last().copied()), msg)
    }

    /// The `stages:` key of gate `i` (the i-th `stages:` after `gates:`).
    fn gate(&self, i: usize, msg: String) -> Error {
        let start = self.keys("gates").first().copied().unwrap_or(0);
        let hit = self.keys("stages").into_iter().filter(|&o| o > start).nth(i);
        self.err_at(hit, msg)
    }
}

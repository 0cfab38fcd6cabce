//! What a check found, as plain serializable data: renderers, bisect and the
//! HTML report read these types and never recompute a metric.
//!
//! Row numbers are always sequence positions (rows of the full trace), never
//! indices into a partial stage file. Non-finite floats serialize as JSON null.

use std::path::PathBuf;

use serde::Serialize;

use crate::harness::contract::{Bound, RowSelect};
use crate::harness::metrics::{Metric, Params, Reduction};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every gate held.
    Pass,
    /// A gate or structural check failed (or an `expect_fail` no longer holds).
    Fail,
    /// The subject still fails, and first where `expect_fail` says.
    ExpectedFailHolds,
    /// The contract could not be checked (bad input, missing files, engine error).
    Error,
}

impl Verdict {
    pub fn holds(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::ExpectedFailHolds)
    }
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::ExpectedFailHolds => "expected-fail holds",
            Verdict::Error => "error",
        }
    }
}

/// One contract's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct ContractResult {
    /// The contract id (the file path when the file could not be parsed).
    pub id: String,
    pub claim: String,
    pub file: PathBuf,
    pub verdict: Verdict,
    /// What a person needs, in a few lines: empty on a plain pass.
    pub message: String,
    /// `trace <dir>` or `engine <model>`.
    pub subject: String,
    pub reference: Option<PathBuf>,
    pub comparison: Option<Comparison>,
    pub expect_fail: Option<ExpectFailOutcome>,
    /// The error, when the verdict is `error`.
    pub error: Option<String>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExpectFailOutcome {
    pub reason: String,
    pub expected_first_divergence: String,
    /// Where the subject actually first diverged (None: it passes).
    pub actual_first_divergence: Option<String>,
    pub holds: bool,
}

/// A subject compared with a reference under a list of gates.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Stages compared, in execution order.
    pub stages: Vec<StageResult>,
    /// Structural findings (tokens, batches, shapes, non-finite values, expert ids).
    pub findings: Vec<Finding>,
    /// Stages not compared, each with the reason.
    pub skipped: Vec<Skipped>,
    /// The earliest failure in execution order: batch, then stage order.
    pub first_divergence: Option<Divergence>,
    /// The metric closest to (or furthest past) its gate.
    pub worst: Option<Worst>,
    pub pass: bool,
}

impl Comparison {
    pub fn stage(&self, name: &str) -> Option<&StageResult> {
        self.stages.iter().find(|s| s.stage == name)
    }
    pub fn failing_stages(&self) -> impl Iterator<Item = &StageResult> {
        self.stages.iter().filter(|s| !s.pass)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StageResult {
    pub stage: String,
    /// Layer index used for `depth_scale` (embed 0, final_norm/logits the layer count).
    pub layer: usize,
    /// Index of the gate that applied (0-based) and its glob.
    pub gate: usize,
    pub gate_stages: String,
    pub gate_rows: RowSelect,
    /// Sequence positions compared (the gate's rows, on the overlap of both traces).
    pub rows: Vec<usize>,
    /// Shape of one row (`[H, hd]` for a `[T, H, hd]` stage).
    pub row_shape: Vec<usize>,
    pub metrics: Vec<MetricResult>,
    /// False when a metric or a structural finding at this stage failed.
    pub pass: bool,
    /// The earliest row that failed (a finding's row or a metric's failing row).
    pub first_failing_row: Option<usize>,
}

/// One metric at one stage.
#[derive(Clone, Debug, Serialize)]
pub struct MetricResult {
    pub metric: Metric,
    pub params: Params,
    pub reduction: Reduction,
    pub bound: Bound,
    /// The threshold as written and after `depth_scale`.
    pub threshold_written: f64,
    pub threshold: f64,
    /// The gated value: the worst row's, or the fraction of agreeing rows.
    pub value: f64,
    /// The threshold that would just have passed (equal to `value`).
    pub passing_threshold: f64,
    /// Fraction of the gate's budget used: `value/threshold` for max bounds,
    /// `(1-value)/(1-threshold)` for min bounds on cosine and agreements,
    /// `threshold/value` for other min bounds. Above 1 fails.
    pub usage: f64,
    pub worst_row: Option<usize>,
    /// One value per row of [`StageResult::rows`].
    pub per_row: Vec<f64>,
    /// Rows whose own value breaks the bound (for fraction metrics: rows that disagree).
    pub failing_rows: Vec<usize>,
    /// The largest |subject - reference| element of the worst row.
    pub worst_coord: Option<Coord>,
    /// Top-1 tokens of the worst row, for the logits metrics.
    pub top1: Option<Top1>,
    pub pass: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Coord {
    pub row: usize,
    /// Index within the row (flattened).
    pub index: usize,
    /// For `[T, H, hd]` stages: the head and the dimension within it.
    pub head: Option<usize>,
    pub dim: Option<usize>,
    pub subject: f32,
    pub reference: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Top1 {
    pub row: usize,
    pub subject_token: usize,
    pub reference_token: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Tokens,
    Batches,
    Dtype,
    Shape,
    NonFinite,
    ExpertIds,
    ExpertWeights,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// None for whole-trace findings (tokens, batches).
    pub stage: Option<String>,
    pub row: Option<usize>,
    pub message: String,
    /// A failing finding fails the comparison; others are notes (a different batch split).
    pub fails: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub stage: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Divergence {
    /// A stage name, or `tokens` when the inputs already differ.
    pub stage: String,
    pub row: usize,
    /// Index into the reference's batches, and that batch's rows.
    pub batch: usize,
    pub batch_rows: [usize; 2],
    /// The metric or structural check that failed there.
    pub cause: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Worst {
    pub stage: String,
    pub metric: Metric,
    pub value: f64,
    pub threshold: f64,
    pub usage: f64,
}

//! `parity diff`: two traces compared without a contract (B is the reference),
//! with the same structural checks and per-row metrics as a contract and no gate.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::formats::trace::Trace;
use crate::harness::check::compare;
use crate::harness::contract::{Bound, Gate, MetricGate, RowSelect};
use crate::harness::glob::Glob;
use crate::harness::metrics::{Metric, Params};
use crate::harness::result::Comparison;

#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    pub a: String,
    pub b: String,
    pub comparison: Comparison,
    pub rows: Vec<DiffRow>,
}

/// One stage of a diff: the worst row of each metric over the compared rows.
#[derive(Clone, Debug, Serialize)]
pub struct DiffRow {
    pub stage: String,
    pub rows: usize,
    /// Lowest per-row cosine, highest per-row nmse and max_abs.
    pub min_cosine: Option<f64>,
    pub max_nmse: Option<f64>,
    pub max_abs: Option<f64>,
    /// The row with the highest nmse.
    pub worst_row: Option<usize>,
    /// Structural failure at this stage (shape, non-finite, expert ids).
    pub problem: Option<String>,
}

/// The gate of a diff: every stage, three metrics, bounds that always hold.
fn diff_gate() -> Gate {
    let m = |metric, bound, threshold| MetricGate { metric, params: Params::default(), bound, threshold };
    Gate {
        stages: Glob::new("*").expect("'*' is a valid glob"),
        rows: RowSelect::All,
        depth_scale: 0.0,
        metrics: vec![m(Metric::Cosine, Bound::Min, f64::NEG_INFINITY), m(Metric::Nmse, Bound::Max, f64::INFINITY), m(Metric::MaxAbs, Bound::Max, f64::INFINITY)],
    }
}

pub fn diff(a: &Path, b: &Path, stages: Option<&str>) -> Result<DiffReport> {
    let only = stages.map(Glob::new).transpose().map_err(|m| Error::Usage(format!("--stages: {m}")))?;
    let (ta, tb) = (Trace::open(a)?, Trace::open(b)?);
    let comparison = compare(&ta, &tb, None, &[diff_gate()], only.as_ref())?;
    let rows = comparison
        .stages
        .iter()
        .map(|s| {
            let get = |m: Metric| s.metrics.iter().find(|r| r.metric == m);
            let problem = comparison.findings.iter().find(|f| f.fails && f.stage.as_deref() == Some(&s.stage)).map(|f| f.message.clone());
            DiffRow {
                stage: s.stage.clone(),
                rows: s.rows.len(),
                min_cosine: get(Metric::Cosine).map(|m| m.value),
                max_nmse: get(Metric::Nmse).map(|m| m.value),
                max_abs: get(Metric::MaxAbs).map(|m| m.value),
                worst_row: get(Metric::Nmse).and_then(|m| m.worst_row),
                problem,
            }
        })
        .collect();
    Ok(DiffReport { a: a.display().to_string(), b: b.display().to_string(), comparison, rows })
}

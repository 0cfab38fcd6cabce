//! What people read: terminal tables (inspect), and for contracts a markdown
//! summary for pull requests and one self-contained HTML page for a desk.

pub mod html;
pub mod inspect;
pub mod markdown;
pub mod svg;

use std::path::{Path, PathBuf};

use crate::engine::{self, RunOptions};
use crate::error::{Error, Result};
use crate::formats::trace::Trace;
use crate::harness::bisect::{self, Bisect};
use crate::harness::contract::Subject;
use crate::harness::metrics;
use crate::harness::result::{ContractResult, Verdict};
use crate::harness::{self as h, Contract};

/// Per-head and per-position error at the divergent stage.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StageDetail {
    pub stage: String,
    /// `1 - cos` per head over all rows (stages shaped [T, H, hd]).
    pub heads: Vec<f64>,
    /// `1 - cos` per row (position).
    pub positions: Vec<f64>,
    pub batches: Vec<[usize; 2]>,
}

/// One contract's report: its check, and for failures its bisect.
pub struct Entry {
    pub file: PathBuf,
    pub text: String,
    pub result: ContractResult,
    pub bisect: Option<Bisect>,
    pub detail: Option<StageDetail>,
}

/// Provenance of the report run itself.
pub struct Meta {
    pub command: String,
    pub date: String,
}

fn subject_trace(c: &Contract, reference: &Trace, stage: &str) -> Result<Trace> {
    match &c.subject {
        Subject::Trace(dir) => Trace::open(dir),
        Subject::Engine { model, layers, settings, .. } => {
            let keep = stage.to_string();
            let opts = RunOptions { layers: *layers, settings: settings.clone(), stages: Some(std::sync::Arc::new(move |n: &str| n == keep)), ..Default::default() };
            engine::trace_like(model, reference, &opts)
        }
    }
}

fn detail(c: &Contract, stage: &str) -> Result<StageDetail> {
    let reference = Trace::open(&c.reference)?;
    let subject = subject_trace(c, &reference, stage)?;
    let (s, r) = (subject.load(stage)?, reference.load(stage)?);
    let (Some(a), Some(b)) = (s.f32(), r.f32()) else {
        return Err(Error::mismatch(format!("{stage} holds ids, not values")));
    };
    let row = r.row_len().max(1);
    let positions: Vec<f64> = a.chunks(row).zip(b.chunks(row)).map(|(x, y)| 1.0 - metrics::cosine(x, y)).collect();
    let heads = if r.shape.len() == 3 {
        let (nh, hd) = (r.shape[1], r.shape[2]);
        (0..nh)
            .map(|hh| {
                let pick = |v: &[f32]| -> Vec<f32> { v.chunks(row).flat_map(|rw| rw[hh * hd..(hh + 1) * hd].to_vec()).collect() };
                1.0 - metrics::cosine(&pick(a), &pick(b))
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(StageDetail { stage: stage.into(), heads, positions, batches: reference.manifest.batches.clone() })
}

/// Checks every contract and bisects those that fail (or are expected to).
pub fn build(files: &[PathBuf]) -> Vec<Entry> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let result = h::run_contract(f);
            let (bisect, detail) = match Contract::load(f) {
                Ok(c) if matches!(result.verdict, Verdict::Fail | Verdict::ExpectedFailHolds) => {
                    let b = bisect::bisect(&c, None).ok();
                    let stage = b.as_ref().and_then(|b| b.isolated_first.clone().or_else(|| b.first.as_ref().map(|d| d.stage.clone())));
                    let d = stage.filter(|s| s != "tokens").and_then(|s| detail(&c, &s).ok());
                    (b, d)
                }
                _ => (None, None),
            };
            Entry { file: f.clone(), text, result, bisect, detail }
        })
        .collect()
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

/// `YYYY-MM-DD HH:MM UTC` now, or `PARITY_REPORT_DATE` when set (snapshots).
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

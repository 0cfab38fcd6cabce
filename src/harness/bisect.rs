//! `parity bisect`: the first divergent (batch, layer, stage), the shape of the
//! error after it, each op's own error measured apart from inherited error, and a
//! ranked diagnosis of the cause (SPEC §5).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::stages::Values;
use crate::engine::{self, RunOptions};
use crate::error::{Error, Result};
use crate::formats::npy::NpyData;
use crate::formats::tensor::DType;
use crate::formats::trace::{Stage, Trace, TraceWriter};
use crate::harness::check::compare;
use crate::harness::contract::{Contract, Gate, Subject};
use crate::harness::diagnose::{self, Diagnosis, RankBy};
use crate::harness::result::{Comparison, Divergence};

/// Per stage, both views side by side.
#[derive(Clone, Debug, Serialize)]
pub struct StageLine {
    pub stage: String,
    /// Worst-row cosine of the subject against the reference (cumulative error).
    pub cumulative_cos: Option<f64>,
    pub cumulative_pass: Option<bool>,
    /// Worst-row cosine of the op recomputed in isolation (the op's own error).
    pub isolated_cos: Option<f64>,
    pub isolated_pass: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Bad from here to the last stage compared: a propagating bug.
    Step,
    /// Bad here, back within the gates later: often harmless.
    Spike,
}

#[derive(Clone, Debug, Serialize)]
pub struct Bisect {
    pub subject: String,
    pub reference: PathBuf,
    /// First stage that breaks its gate, walking the subject in execution order.
    pub first: Option<Divergence>,
    pub first_cos: Option<f64>,
    pub first_nmse: Option<f64>,
    pub shape: Option<Shape>,
    /// The earliest stage whose error persists to the end (the primary suspect).
    pub first_step: Option<String>,
    /// First stage whose own op, recomputed in isolation, breaks its gate.
    pub isolated_first: Option<String>,
    pub isolated_first_cos: Option<f64>,
    /// Why isolated mode could not run, if it could not.
    pub isolated_note: Option<String>,
    pub stages: Vec<StageLine>,
    pub diagnosis: Option<Diagnosis>,
    pub repro: Option<PathBuf>,
    pub summary: String,
}

fn worst_cos(cmp: &Comparison, stage: &str) -> (Option<f64>, Option<bool>) {
    match cmp.stage(stage) {
        Some(s) => {
            let cos = s.metrics.iter().find(|m| m.metric.name() == "cosine").map(|m| m.value);
            (cos, Some(s.pass))
        }
        None => (None, None),
    }
}

/// Recomputes every stage `model` can produce from `inputs`, as an in-memory trace.
fn isolated_trace(model: &engine::Model, inputs: &Trace, names: &[String]) -> Trace {
    let mut stages = BTreeMap::new();
    let mut manifest = inputs.manifest.clone();
    manifest.stages.clear();
    let n = inputs.n_rows();
    for name in names {
        let Ok(v) = model.recompute(name, inputs) else { continue };
        let Ok(orig) = inputs.load(name) else { continue };
        let (data, dtype) = match v {
            Values::F32(v) => (NpyData::F32(v), DType::F32),
            Values::Ids(v) => (NpyData::I64(v.into_iter().map(i64::from).collect()), DType::I32),
        };
        let shape = orig.shape.clone();
        manifest
            .stages
            .insert(name.clone(), crate::formats::trace::StageEntry { file: format!("{name}.npy"), shape: shape.clone(), dtype: dtype.name().into(), rows: None, extra: Default::default() });
        stages.insert(name.clone(), Stage { name: name.clone(), shape, dtype, rows: 0..n, data });
    }
    Trace::in_memory(inputs.dir.clone(), manifest, stages)
}

fn shape_after(cmp: &Comparison, stage: &str) -> (Shape, Option<String>) {
    let order: Vec<&crate::harness::result::StageResult> = cmp.stages.iter().collect();
    let last_fails = order.last().is_some_and(|s| !s.pass);
    // The first failing stage from which every later compared stage also fails.
    let mut first_step = None;
    for (i, s) in order.iter().enumerate() {
        if !s.pass && order[i..].iter().all(|x| !x.pass) {
            first_step = Some(s.stage.clone());
            break;
        }
    }
    let shape = if first_step.as_deref() == Some(stage) || last_fails { Shape::Step } else { Shape::Spike };
    (shape, first_step)
}

/// Where the diagnosis gets the model's weights: the contract's `model`, the
/// engine subject's model, or the reference manifest's model.
fn model_for(c: &Contract, reference: &Trace) -> Option<PathBuf> {
    if let Subject::Engine { model, .. } = &c.subject {
        return Some(model.clone());
    }
    c.model.clone().or_else(|| reference.model_path())
}

pub fn bisect(c: &Contract, repro_dir: Option<&Path>) -> Result<Bisect> {
    let reference = Trace::open(&c.reference)?;
    let low = c.reference_low.as_ref().map(|p| Trace::open(p)).transpose()?;
    let (subject, subject_name, base, rank) = match &c.subject {
        Subject::Engine { model, dtype, layers, settings } => {
            let opts = RunOptions { dtype: *dtype, layers: *layers, settings: settings.clone(), ..Default::default() };
            (engine::trace_like(model, &reference, &opts)?, format!("engine on {}", model.display()), settings.clone(), RankBy::Reference)
        }
        Subject::Trace(dir) => (Trace::open(dir)?, dir.display().to_string(), BTreeMap::new(), RankBy::Subject),
    };
    let cmp = compare(&subject, &reference, low.as_ref(), &c.gates, None)?;

    // Isolated: the engine's own ops on the reference's inputs, or the correct ops
    // on a foreign subject's inputs.
    let model_path = model_for(c, &reference);
    let (iso, isolated_note) = match &model_path {
        Some(mp) => match engine::load(mp, &RunOptions { settings: base.clone(), ..Default::default() }) {
            Ok((m, _)) => {
                let (inputs, against) = if rank == RankBy::Reference { (&reference, &reference) } else { (&subject, &subject) };
                let it = isolated_trace(&m, inputs, &against.stage_names());
                (Some(compare(&it, against, None, &c.gates, None)?), None)
            }
            Err(e) => (None, Some(format!("isolated mode needs the model's weights: {e}"))),
        },
        None => (None, Some("isolated mode needs the model's weights: name them with `model:` in the contract".into())),
    };

    let stages = cmp
        .stages
        .iter()
        .map(|s| {
            let (cc, cp) = worst_cos(&cmp, &s.stage);
            let (ic, ip) = iso.as_ref().map_or((None, None), |i| worst_cos(i, &s.stage));
            StageLine { stage: s.stage.clone(), cumulative_cos: cc, cumulative_pass: cp, isolated_cos: ic, isolated_pass: ip }
        })
        .collect::<Vec<_>>();
    let first = cmp.first_divergence.clone();
    let first_cos = first.as_ref().and_then(|d| worst_cos(&cmp, &d.stage).0);
    let first_nmse = first.as_ref().and_then(|d| cmp.stage(&d.stage)).and_then(|s| s.metrics.iter().find(|m| m.metric.name() == "nmse").map(|m| m.value));
    let close = |c: Option<f64>, n: Option<f64>| crate::harness::diagnose::closeness(c.map(|c| crate::harness::diagnose::Score { cosine: c, nmse: n.unwrap_or(0.0) }));
    let (shape, first_step) = match &first {
        Some(d) => {
            let (s, fs) = shape_after(&cmp, &d.stage);
            (Some(s), fs)
        }
        None => (None, None),
    };
    let isolated_first = iso.as_ref().and_then(|i| i.first_divergence.as_ref().map(|d| d.stage.clone()));
    let isolated_first_cos = match (&iso, &isolated_first) {
        (Some(i), Some(s)) => worst_cos(i, s).0,
        _ => None,
    };

    // Diagnose where the op itself is wrong; fall back to the cumulative first stage.
    let target = isolated_first.clone().or_else(|| first.as_ref().map(|d| d.stage.clone()));
    let diagnosis = match (&target, &model_path) {
        (Some(stage), Some(mp)) if stage != "tokens" => diagnose::diagnose(mp, &base, stage, &reference, Some(&subject), rank).ok(),
        _ => None,
    };
    let repro = match (&target, repro_dir) {
        (Some(stage), Some(dir)) if stage != "tokens" => Some(write_repro(dir, stage, &subject, &reference, model_path.as_deref())?),
        _ => None,
    };

    let mut summary = String::new();
    match &first {
        None => summary.push_str("no divergence: every gated stage holds"),
        Some(d) => {
            summary.push_str(&format!(
                "first divergence: batch {} (rows {}..{}), {} ({}, {})",
                d.batch,
                d.batch_rows[0],
                d.batch_rows[1],
                d.stage,
                if first_cos.is_some() { close(first_cos, first_nmse) } else { d.cause.clone() },
                match shape {
                    Some(Shape::Step) => "step",
                    Some(Shape::Spike) => "spike",
                    None => "?",
                }
            ));
            if let Some(fs) = first_step.as_ref().filter(|fs| **fs != d.stage) {
                summary.push_str(&format!("; first step (primary suspect): {fs}"));
            }
            summary.push('.');
        }
    }
    match (&isolated_first, &isolated_note) {
        (Some(s), _) => {
            let n = iso.as_ref().and_then(|i| i.stage(s)).and_then(|x| x.metrics.iter().find(|m| m.metric.name() == "nmse").map(|m| m.value));
            summary.push_str(&format!(" isolated: {s} ({}).", close(isolated_first_cos, n)))
        }
        (None, None) if iso.is_some() => summary.push_str(" isolated: every op reproduces its own inputs' output."),
        (None, Some(n)) => summary.push_str(&format!(" isolated: not run ({n}).")),
        _ => {}
    }
    if let Some(d) = &diagnosis {
        summary.push_str(&format!(" {}", d.summary));
    }
    Ok(Bisect {
        subject: subject_name,
        reference: c.reference.clone(),
        first,
        first_cos,
        first_nmse,
        shape,
        first_step,
        isolated_first,
        isolated_first_cos,
        isolated_note,
        stages,
        diagnosis,
        repro,
        summary,
    })
}

/// Writes the divergent stage's inputs and outputs from both traces as two small
/// trace folders, and the one-line command that re-checks just that stage.
fn write_repro(dir: &Path, stage: &str, subject: &Trace, reference: &Trace, model: Option<&Path>) -> Result<PathBuf> {
    let mut names = vec![stage.to_string()];
    if let Some(mp) = model {
        if let Ok((m, _)) = engine::load(mp, &RunOptions::default()) {
            names.extend(crate::engine::stages::inputs_of(&m, stage));
        }
    }
    let dir = dir.join("repro");
    for (sub, t) in [("subj", subject), ("ref", reference)] {
        let mut m = t.manifest.clone();
        m.stages.clear();
        let out = dir.join(sub);
        let mut w = TraceWriter::create(&out, m, false)?;
        for n in &names {
            let Ok(s) = t.load(n) else { continue };
            let rows = (s.rows != (0..t.n_rows())).then_some([s.rows.start, s.rows.end]);
            match &s.data {
                NpyData::F32(v) => w.add_f32(n, &s.shape, rows, v, DType::F32)?,
                NpyData::I64(v) => w.add_i32(n, &s.shape, rows, &v.iter().map(|&x| x as i32).collect::<Vec<_>>())?,
            }
        }
        w.finish()?;
    }
    let cmd = format!("parity diff {}/subj {}/ref --stages '{stage}'\n", dir.display(), dir.display());
    std::fs::write(dir.join("command.sh"), &cmd).map_err(|e| Error::io(dir.join("command.sh"), e))?;
    Ok(dir)
}

/// Default gate for `--pair`: two code paths of one engine in f32 should agree to
/// summation-order noise (cosine ≥ 0.99999, NMSE ≤ 1e-8 per row).
pub fn pair_gates() -> Vec<Gate> {
    use crate::harness::contract::{Bound, MetricGate, RowSelect};
    use crate::harness::metrics::{Metric, Params};
    let g = |metric, bound, threshold| MetricGate { metric, params: Params::default(), bound, threshold };
    vec![Gate {
        stages: crate::harness::glob::Glob::new("*").unwrap_or_else(|_| unreachable!("'*' is a valid glob")),
        rows: RowSelect::All,
        depth_scale: 0.0,
        metrics: vec![g(Metric::Cosine, Bound::Min, 0.99999), g(Metric::Nmse, Bound::Max, 1e-8)],
    }]
}

#[derive(Clone, Debug, Serialize)]
pub struct PairBisect {
    pub a: PathBuf,
    pub b: PathBuf,
    pub first: Option<Divergence>,
    /// Isolated worst-row cosine of the correct op on each side's own inputs.
    pub a_isolated_cos: Option<f64>,
    pub b_isolated_cos: Option<f64>,
    /// Which side the correct ops agree with at the parting stage.
    pub consistent: Option<String>,
    pub diagnosis: Option<Diagnosis>,
    pub summary: String,
}

/// Two subjects, no reference: where they part, and which one correct ops agree with.
pub fn bisect_pair(a: &Path, b: &Path, model: Option<&Path>) -> Result<PairBisect> {
    let (ta, tb) = (Trace::open(a)?, Trace::open(b)?);
    let gates = pair_gates();
    let cmp = compare(&ta, &tb, None, &gates, None)?;
    let model = model.map(Path::to_path_buf).or_else(|| ta.model_path()).or_else(|| tb.model_path());
    let Some(d) = cmp.first_divergence.clone() else {
        return Ok(PairBisect {
            a: a.into(),
            b: b.into(),
            first: None,
            a_isolated_cos: None,
            b_isolated_cos: None,
            consistent: None,
            diagnosis: None,
            summary: "the two traces agree at every stage".into(),
        });
    };
    let mut a_cos = None;
    let mut b_cos = None;
    let mut diagnosis = None;
    if let Some(mp) = &model {
        let (m, _) = engine::load(mp, &RunOptions::default())?;
        let iso = |t: &Trace| -> Option<f64> {
            let want = t.load(&d.stage).ok()?;
            let Values::F32(v) = m.recompute(&d.stage, t).ok()? else { return None };
            let row = want.row_len().max(1);
            Some(v.chunks(row).zip(want.f32()?.chunks(row)).map(|(x, y)| crate::harness::metrics::cosine(x, y)).fold(1.0, f64::min))
        };
        a_cos = iso(&ta);
        b_cos = iso(&tb);
        // Diagnose the side the correct ops disagree with.
        let wrong = match (a_cos, b_cos) {
            (Some(x), Some(y)) if x < y => Some((&ta, &tb)),
            (Some(_), Some(_)) => Some((&tb, &ta)),
            _ => None,
        };
        if let Some((w, r)) = wrong {
            diagnosis = diagnose::diagnose(mp, &BTreeMap::new(), &d.stage, r, Some(w), RankBy::Subject).ok();
        }
    }
    let consistent = match (a_cos, b_cos) {
        (Some(x), Some(y)) if (x - y).abs() > 1e-6 => Some(if x > y { a.display().to_string() } else { b.display().to_string() }),
        (Some(_), Some(_)) => Some("both".into()),
        _ => None,
    };
    let mut summary = format!("the traces part at batch {} (rows {}..{}), {} ({})", d.batch, d.batch_rows[0], d.batch_rows[1], d.stage, d.cause);
    match (&consistent, a_cos, b_cos) {
        (Some(c), Some(x), Some(y)) => summary.push_str(&format!(". correct ops on each side's own inputs: A cos {x:.6}, B cos {y:.6}; consistent with the correct ops: {c}")),
        _ => summary.push_str(". no model to recompute the stage with: pass --model"),
    }
    if let Some(dg) = &diagnosis {
        summary.push_str(&format!(". {}", dg.summary));
    }
    Ok(PairBisect { a: a.into(), b: b.into(), first: Some(d), a_isolated_cos: a_cos, b_isolated_cos: b_cos, consistent, diagnosis, summary })
}

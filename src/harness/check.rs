//! Comparing a subject trace with a reference trace under a list of gates:
//! structural checks first (tokens, batches, shapes, non-finite values, expert
//! ids), then every gated metric per row, then the first divergence in
//! execution order.

use std::collections::BTreeSet;
use std::ops::Range;

use crate::error::Result;
use crate::formats::npy::NpyData;
use crate::formats::trace::{split_layer, stage_order, Stage, Trace};
use crate::harness::contract::{Bound, Gate, MetricGate};
use crate::harness::glob::Glob;
use crate::harness::metrics::{self, Metric, Reduction};
use crate::harness::result::*;

/// Compares `subject` with `reference` (and `low`, the noise-floor reference)
/// stage by stage; each stage is judged by the first gate whose glob matches it.
/// `only` restricts the stages looked at (stages outside it are not reported).
pub fn compare(subject: &Trace, reference: &Trace, low: Option<&Trace>, gates: &[Gate], only: Option<&Glob>) -> Result<Comparison> {
    let mut findings = Vec::new();
    let mut skipped = Vec::new();
    let mut stages = Vec::new();
    let (sm, rm) = (&subject.manifest, &reference.manifest);

    let mut token_row = None;
    if sm.tokens != rm.tokens {
        let first = sm.tokens.iter().zip(&rm.tokens).position(|(a, b)| a != b).unwrap_or(sm.tokens.len().min(rm.tokens.len()));
        let msg = match (sm.tokens.get(first), rm.tokens.get(first)) {
            (Some(a), Some(b)) => format!("token ids differ first at row {first}: subject {a}, reference {b}"),
            _ => format!("token counts differ: subject {}, reference {}", sm.tokens.len(), rm.tokens.len()),
        };
        token_row = Some(first);
        findings.push(Finding { kind: FindingKind::Tokens, stage: None, row: Some(first), message: msg, fails: true });
    }
    if sm.batches != rm.batches {
        findings.push(Finding {
            kind: FindingKind::Batches,
            stage: None,
            row: None,
            message: format!("batch splits differ: subject {:?}, reference {:?}; rows are compared by position and prefill/decode follow the reference", sm.batches, rm.batches),
            fails: false,
        });
    }

    let n_layers = reference.stage_names().iter().filter_map(|n| split_layer(n).map(|(l, _)| l + 1)).max().unwrap_or(0);
    let mut names: Vec<String> = rm.stages.keys().chain(sm.stages.keys()).cloned().collect::<BTreeSet<_>>().into_iter().collect();
    names.sort_by_key(|n| stage_order(n));
    for name in names {
        if only.is_some_and(|g| !g.matches(&name)) {
            continue;
        }
        let skip = |reason: String| Skipped { stage: name.clone(), reason };
        match (subject.has(&name), reference.has(&name)) {
            (false, _) => {
                skipped.push(skip("absent from the subject".into()));
                continue;
            }
            (_, false) => {
                skipped.push(skip("absent from the reference".into()));
                continue;
            }
            _ => {}
        }
        let Some((gi, gate)) = gates.iter().enumerate().find(|(_, g)| g.stages.matches(&name)) else {
            skipped.push(skip("no gate matches this stage".into()));
            continue;
        };
        let layer = match name.as_str() {
            "embed" => 0,
            _ => split_layer(&name).map(|(l, _)| l).unwrap_or(n_layers),
        };
        let ctx = StageCtx { name: &name, gate, gate_index: gi, layer, subject, reference, low };
        match ctx.run(&mut findings)? {
            Ok(r) => stages.push(r),
            Err(reason) => skipped.push(skip(reason)),
        }
    }

    let batches = &rm.batches;
    let batch_of = |row: usize| batches.iter().position(|b| row < b[1]).unwrap_or(batches.len().saturating_sub(1));
    // Execution order: batch, then the token inputs before any stage, then stage order.
    type Key = (usize, u8, (usize, usize, String));
    let mut candidates: Vec<(Key, Divergence)> = Vec::new();
    let mk = |stage: &str, row: usize, cause: String| {
        let b = batch_of(row);
        Divergence { stage: stage.into(), row, batch: b, batch_rows: batches.get(b).copied().unwrap_or([0, 0]), cause }
    };
    if let Some(row) = token_row {
        candidates.push(((batch_of(row), 0, (0, 0, String::new())), mk("tokens", row, "token ids".into())));
    }
    for s in stages.iter().filter(|s| !s.pass) {
        let row = s.first_failing_row.or(s.rows.first().copied()).unwrap_or(0);
        let cause = stage_cause(s, &findings);
        candidates.push(((batch_of(row), 1, stage_order(&s.stage)), mk(&s.stage, row, cause)));
    }
    let first_divergence = candidates.into_iter().min_by(|a, b| a.0.cmp(&b.0)).map(|c| c.1);

    let worst = stages.iter().flat_map(|s| s.metrics.iter().map(move |m| (s, m))).max_by(|a, b| nan_high(a.1.usage).total_cmp(&nan_high(b.1.usage))).map(|(s, m)| Worst {
        stage: s.stage.clone(),
        metric: m.metric,
        value: m.value,
        threshold: m.threshold,
        usage: m.usage,
    });
    let pass = findings.iter().all(|f| !f.fails) && stages.iter().all(|s| s.pass);
    Ok(Comparison { stages, findings, skipped, first_divergence, worst, pass })
}

fn nan_high(x: f64) -> f64 {
    if x.is_nan() {
        f64::INFINITY
    } else {
        x
    }
}

/// The failing checks of a stage, named: `cosine, nmse` or `shape`.
fn stage_cause(s: &StageResult, findings: &[Finding]) -> String {
    let mut causes: Vec<String> = findings.iter().filter(|f| f.fails && f.stage.as_deref() == Some(&s.stage)).map(|f| format!("{:?}", f.kind).to_lowercase()).collect();
    causes.extend(s.metrics.iter().filter(|m| !m.pass).map(|m| m.metric.name().to_string()));
    causes.dedup();
    causes.join(", ")
}

/// `(subject row, reference row, reference_low row)` at a sequence position.
type RowGet<'g, 'r> = &'g dyn Fn(usize) -> (&'r [f32], &'r [f32], Option<&'r [f32]>);

struct StageCtx<'a> {
    name: &'a str,
    gate: &'a Gate,
    gate_index: usize,
    layer: usize,
    subject: &'a Trace,
    reference: &'a Trace,
    low: Option<&'a Trace>,
}

/// Rows of `stage` as f32 slices addressed by sequence position.
struct Rows<'a> {
    data: &'a [f32],
    rows: Range<usize>,
    len: usize,
}

impl<'a> Rows<'a> {
    fn of(s: &'a Stage) -> Option<Rows<'a>> {
        Some(Rows { data: s.f32()?, rows: s.rows.clone(), len: s.row_len() })
    }
    fn row(&self, t: usize) -> &'a [f32] {
        let i = t - self.rows.start;
        &self.data[i * self.len..(i + 1) * self.len]
    }
}

fn intersect(a: &Range<usize>, b: &Range<usize>) -> Range<usize> {
    a.start.max(b.start)..a.end.min(b.end).max(a.start.max(b.start))
}

impl StageCtx<'_> {
    fn finding(&self, kind: FindingKind, row: Option<usize>, message: String) -> Finding {
        Finding { kind, stage: Some(self.name.to_string()), row, message, fails: true }
    }

    fn result(&self, rows: Vec<usize>, row_shape: Vec<usize>, metrics: Vec<MetricResult>, failed_at: Option<usize>) -> StageResult {
        let metric_row = metrics.iter().filter(|m| !m.pass).filter_map(|m| m.failing_rows.first().copied().or(m.worst_row)).min();
        let first_failing_row = [failed_at, metric_row].into_iter().flatten().min();
        let pass = failed_at.is_none() && metrics.iter().all(|m| m.pass);
        StageResult {
            stage: self.name.to_string(),
            layer: self.layer,
            gate: self.gate_index,
            gate_stages: self.gate.stages.as_str().to_string(),
            gate_rows: self.gate.rows,
            rows,
            row_shape,
            metrics,
            pass,
            first_failing_row: if pass { None } else { first_failing_row },
        }
    }

    /// `Ok(Ok(result))`, `Ok(Err(reason to skip))`, or an error loading a file.
    fn run(&self, findings: &mut Vec<Finding>) -> Result<std::result::Result<StageResult, String>> {
        let s = self.subject.load(self.name)?;
        let r = self.reference.load(self.name)?;
        let n = self.reference.n_rows();
        let mut rows = intersect(&intersect(&s.rows, &r.rows), &self.gate.rows.range(n, &self.reference.manifest.batches));
        let needs_low = self.gate.metrics.iter().any(|m| m.metric == Metric::NoiseRatio);
        let low = match (needs_low, self.low) {
            (true, Some(t)) if t.has(self.name) => Some(t.load(self.name)?),
            (true, _) => return Ok(Err("noise_ratio is gated but reference_low has no such stage".into())),
            _ => None,
        };
        if let Some(l) = &low {
            rows = intersect(&rows, &l.rows);
        }
        if rows.is_empty() {
            return Ok(Err(format!("no rows in common (subject {:?}, reference {:?}, gate rows {})", s.rows, r.rows, self.gate.rows)));
        }
        let row_ids: Vec<usize> = rows.clone().collect();
        let row_shape = r.shape[1..].to_vec();
        if s.shape[1..] != r.shape[1..] {
            findings.push(self.finding(FindingKind::Shape, None, format!("shape differs: subject {:?}, reference {:?} (rows first)", s.shape, r.shape)));
            return Ok(Ok(self.result(row_ids, row_shape, vec![], Some(rows.start))));
        }
        let stage = split_layer(self.name).map(|(_, st)| st).unwrap_or(self.name);
        if stage == "expert_ids" {
            let failed = self.expert_ids(&s, &r, &row_ids, findings);
            return Ok(Ok(self.result(row_ids, row_shape, vec![], failed)));
        }
        if matches!(s.data, NpyData::I64(_)) != matches!(r.data, NpyData::I64(_)) {
            findings.push(self.finding(FindingKind::Dtype, None, format!("dtype differs: subject {}, reference {}", s.dtype.name(), r.dtype.name())));
            return Ok(Ok(self.result(row_ids, row_shape, vec![], Some(rows.start))));
        }
        if stage == "expert_weights" {
            return self.expert_weights(&s, &r, row_ids, findings);
        }
        let (Some(a), Some(b)) = (Rows::of(&s), Rows::of(&r)) else {
            return Ok(Err(format!("integer stage of dtype {} has no float metric", r.dtype.name())));
        };
        if let Some(row) = self.non_finite(&a, &b, &row_ids, findings) {
            return Ok(Ok(self.result(row_ids, row_shape, vec![], Some(row))));
        }
        let low_rows = low.as_ref().and_then(Rows::of);
        let get = |t: usize| (a.row(t), b.row(t), low_rows.as_ref().map(|l| l.row(t)));
        let metrics = self.gate.metrics.iter().map(|mg| self.metric(mg, &row_ids, &row_shape, &get)).collect();
        Ok(Ok(self.result(row_ids, row_shape, metrics, None)))
    }

    /// NaN anywhere, or an infinity the reference does not have at the same place.
    /// Returns the first bad row.
    fn non_finite(&self, a: &Rows, b: &Rows, rows: &[usize], findings: &mut Vec<Finding>) -> Option<usize> {
        let mut first = None;
        for (who, x, y) in [("reference", b, a), ("subject", a, b)] {
            let mut count = 0usize;
            let mut at = None;
            for &t in rows {
                for (i, (&u, &v)) in x.row(t).iter().zip(y.row(t)).enumerate() {
                    let bad = u.is_nan() || (u.is_infinite() && u != v && who == "subject");
                    if bad {
                        count += 1;
                        at.get_or_insert((t, i, u, v));
                    }
                }
            }
            if let Some((t, i, u, v)) = at {
                let what = if u.is_nan() { "NaN".to_string() } else { format!("{u} where the reference has {v}") };
                let more = if count > 1 { format!(" ({} non-finite values in all)", count) } else { String::new() };
                findings.push(self.finding(FindingKind::NonFinite, Some(t), format!("{who} has {what} at row {t}, index {i}{more}")));
                first = Some(first.map_or(t, |f: usize| f.min(t)));
            }
        }
        first
    }

    /// Expert ids compared as sets per row; returns the first row that differs.
    fn expert_ids(&self, s: &Stage, r: &Stage, rows: &[usize], findings: &mut Vec<Finding>) -> Option<usize> {
        let mut bad = Vec::new();
        for &t in rows {
            let (a, b) = (id_set(s, t), id_set(r, t));
            if a != b {
                bad.push((t, a, b));
            }
        }
        let (t, a, b) = bad.first()?;
        let tie = self.router_tie(*t, a, b).unwrap_or_default();
        findings.push(self.finding(
            FindingKind::ExpertIds,
            Some(*t),
            format!("selected experts differ in {} of {} rows; first at row {t}: subject {a:?}, reference {b:?}{tie}", bad.len(), rows.len()),
        ));
        Some(*t)
    }

    /// Context for a differing expert choice: the reference router's probabilities
    /// of the experts only one side picked, so a near tie that rounding can flip
    /// reads differently from a routing bug.
    fn router_tie(&self, t: usize, a: &BTreeSet<i64>, b: &BTreeSet<i64>) -> Option<String> {
        let name = self.name.replace("expert_ids", "router_logits");
        let r = self.reference.load(&name).ok()?;
        let e = r.row_len();
        let row = t.checked_sub(r.rows.start)?;
        let logits = r.f32()?.get(row * e..(row + 1) * e)?;
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = logits.iter().map(|&x| (x as f64 - m).exp()).sum();
        let p = |i: i64| (logits[i as usize] as f64 - m).exp() / z;
        let only: Vec<String> = a.symmetric_difference(b).filter(|&&i| (i as usize) < e && i >= 0).map(|&i| format!("expert {i}: {:.4}", p(i))).collect();
        let probs: Vec<f64> = a.symmetric_difference(b).filter(|&&i| (i as usize) < e && i >= 0).map(|&i| p(i)).collect();
        let gap = probs.iter().cloned().fold(f64::NEG_INFINITY, f64::max) - probs.iter().cloned().fold(f64::INFINITY, f64::min);
        Some(format!("; the reference router gives {} (gap {gap:.4}{})", only.join(", "), if gap < 0.01 { ": a near tie that rounding can flip" } else { "" }))
    }

    /// Expert weights aligned by expert id (the subject's weights reordered into
    /// the reference's id order), then gated by the stage's float metrics. Rows
    /// whose id sets differ are left out (the `expert_ids` finding reports them).
    fn expert_weights(&self, s: &Stage, r: &Stage, rows: Vec<usize>, findings: &mut Vec<Finding>) -> Result<std::result::Result<StageResult, String>> {
        let ids_name = self.name.replace("expert_weights", "expert_ids");
        if !(self.subject.has(&ids_name) && self.reference.has(&ids_name)) {
            return Ok(Err(format!("weights are compared by expert id, and {ids_name} is missing from a trace")));
        }
        let (si, ri) = (self.subject.load(&ids_name)?, self.reference.load(&ids_name)?);
        // The noise floor, aligned by id like the subject: only rows where the low
        // reference picked the same experts have one.
        let low_pair = match self.low {
            Some(l) if l.has(&ids_name) && l.has(self.name) => Some((l.load(&ids_name)?, l.load(self.name)?)),
            _ => None,
        };
        let (Some(sw), Some(rw)) = (Rows::of(s), Rows::of(r)) else {
            return Ok(Err("expert weights are not floats".into()));
        };
        let k = r.row_len();
        let low_w = low_pair.as_ref().and_then(|(_, w)| Rows::of(w));
        let mut aligned_a = Vec::new();
        let mut aligned_b = Vec::new();
        let mut aligned_l = Vec::new();
        let mut kept = Vec::new();
        for &t in &rows {
            let (Some(a_ids), Some(b_ids)) = (id_row(&si, t), id_row(&ri, t)) else { continue };
            if a_ids.iter().collect::<BTreeSet<_>>() != b_ids.iter().collect::<BTreeSet<_>>() {
                continue;
            }
            let l_ids = low_pair.as_ref().and_then(|(ids, _)| id_row(ids, t)).filter(|l| l.iter().collect::<BTreeSet<_>>() == b_ids.iter().collect::<BTreeSet<_>>());
            for (j, id) in b_ids.iter().enumerate() {
                let p = a_ids.iter().position(|x| x == id).unwrap_or(j);
                aligned_a.push(sw.row(t)[p]);
                aligned_b.push(rw.row(t)[j]);
                let lv = match (&l_ids, &low_w) {
                    (Some(li), Some(lw)) => lw.row(t)[li.iter().position(|x| x == id).unwrap_or(j)],
                    _ => f32::NAN,
                };
                aligned_l.push(lv);
            }
            kept.push(t);
        }
        if kept.is_empty() {
            findings.push(self.finding(FindingKind::ExpertWeights, rows.first().copied(), "no row selects the same experts in both traces, so no weight can be compared by id".into()));
            return Ok(Ok(self.result(rows.clone(), vec![k], vec![], rows.first().copied())));
        }
        let pos = |t: usize| kept.iter().position(|&x| x == t).unwrap();
        let get = |t: usize| {
            let i = pos(t);
            let l = &aligned_l[i * k..(i + 1) * k];
            (&aligned_a[i * k..(i + 1) * k], &aligned_b[i * k..(i + 1) * k], (!l.iter().any(|x| x.is_nan())).then_some(l))
        };
        let metrics = self.gate.metrics.iter().map(|mg| self.metric(mg, &kept, &[k], &get)).collect();
        Ok(Ok(self.result(kept, vec![k], metrics, None)))
    }

    fn metric<'r>(&self, mg: &MetricGate, rows: &[usize], row_shape: &[usize], get: RowGet<'_, 'r>) -> MetricResult {
        let m = mg.metric;
        let threshold = mg.effective(self.gate.depth_scale, self.layer);
        let per_row: Vec<f64> = rows
            .iter()
            .map(|&t| {
                let (a, b, l) = get(t);
                m.row(a, b, l, &mg.params)
            })
            .collect();
        let row_ok = |v: f64| match mg.bound {
            Bound::Min => v >= threshold,
            Bound::Max => v <= threshold,
        };
        let (value, worst_i, failing_rows): (f64, Option<usize>, Vec<usize>) = match m.reduction() {
            Reduction::WorstRow => {
                let key = |v: f64| match (mg.bound, v.is_nan()) {
                    (_, true) => f64::INFINITY,
                    (Bound::Min, _) => -v,
                    (Bound::Max, _) => v,
                };
                let wi = (0..per_row.len()).max_by(|&i, &j| key(per_row[i]).total_cmp(&key(per_row[j])).then(j.cmp(&i)));
                let failing = rows.iter().zip(&per_row).filter(|(_, &v)| !row_ok(v)).map(|(&t, _)| t).collect();
                (wi.map_or(f64::NAN, |i| per_row[i]), wi, failing)
            }
            Reduction::FractionOfRows => {
                let frac = per_row.iter().sum::<f64>() / per_row.len().max(1) as f64;
                let wi = per_row.iter().position(|&v| v < 1.0);
                let failing = rows.iter().zip(&per_row).filter(|(_, &v)| v < 1.0).map(|(&t, _)| t).collect();
                (frac, wi, failing)
            }
        };
        let pass = match mg.bound {
            Bound::Min => value >= threshold,
            Bound::Max => value <= threshold,
        };
        let worst_row = worst_i.map(|i| rows[i]);
        let (worst_coord, top1) = match worst_row {
            Some(t) => {
                let (a, b, _) = get(t);
                let (_, idx) = metrics::max_abs(a, b);
                let (head, dim) = match row_shape {
                    [_, hd] => (Some(idx / hd), Some(idx % hd)),
                    _ => (None, None),
                };
                let coord = Coord { row: t, index: idx, head, dim, subject: a[idx], reference: b[idx] };
                let top1 = m.logits_only().then(|| Top1 { row: t, subject_token: metrics::argmax(a), reference_token: metrics::argmax(b) });
                (Some(coord), top1)
            }
            None => (None, None),
        };
        MetricResult {
            metric: m,
            params: mg.params,
            reduction: m.reduction(),
            bound: mg.bound,
            threshold_written: mg.threshold,
            threshold,
            value,
            passing_threshold: value,
            usage: usage(m, mg.bound, value, threshold),
            worst_row,
            per_row,
            failing_rows,
            worst_coord,
            top1,
            pass,
        }
    }
}

/// See [`MetricResult::usage`].
pub fn usage(m: Metric, bound: Bound, value: f64, threshold: f64) -> f64 {
    let u = match bound {
        Bound::Max => ratio(value, threshold),
        Bound::Min if m.best_is_one() => ratio(1.0 - value, 1.0 - threshold),
        Bound::Min => ratio(threshold, value),
    };
    nan_high(u)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        if a <= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (a / b).max(0.0)
    }
}

fn id_row(s: &Stage, t: usize) -> Option<Vec<i64>> {
    let k = s.row_len();
    let i = t.checked_sub(s.rows.start)?;
    match &s.data {
        NpyData::I64(v) => v.get(i * k..(i + 1) * k).map(|r| r.to_vec()),
        NpyData::F32(v) => v.get(i * k..(i + 1) * k).map(|r| r.iter().map(|&x| x as i64).collect()),
    }
}

fn id_set(s: &Stage, t: usize) -> BTreeSet<i64> {
    id_row(s, t).unwrap_or_default().into_iter().collect()
}

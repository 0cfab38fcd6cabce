//! Diagnosis: at a divergent stage, re-run that stage's op under each plausible
//! alternative convention and rank the alternatives by how close each lands to
//! the reference (SPEC §5). The same recomputation on the subject's own inputs
//! says which convention the subject itself used.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_yaml::Value;

use crate::engine::stages::{inputs_of, Values};
use crate::engine::{self, Model, RunOptions};
use crate::error::Result;
use crate::formats::config::{EpsPlacement, ModelConfig, Pairing, PartialLayout, RopeScaling};
use crate::formats::trace::{split_layer, Trace};
use crate::harness::metrics;

/// One convention set to try: the base settings plus `settings`.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub label: String,
    pub settings: BTreeMap<String, Value>,
}

/// How close a recomputation lands: worst row's cosine and NMSE, over all rows.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Score {
    pub cosine: f64,
    pub nmse: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Scored {
    pub label: String,
    pub settings: BTreeMap<String, Value>,
    /// The subject's (or model's) own conventions, unchanged.
    pub is_base: bool,
    /// Recomputed from the reference's inputs, compared with the reference's output.
    pub vs_reference: Option<Score>,
    /// Recomputed from the subject's inputs, compared with the subject's output.
    pub vs_subject: Option<Score>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    pub stage: String,
    /// Best first (closest to the reference).
    pub candidates: Vec<Scored>,
    /// `cause: ...` sentence, when an alternative explains the divergence.
    pub cause: Option<String>,
    /// The candidate that best reproduces the subject's own output.
    pub subject_used: Option<String>,
    pub summary: String,
}

fn set(k: &str, v: impl Into<Value>) -> BTreeMap<String, Value> {
    BTreeMap::from([(k.to_string(), v.into())])
}

fn cand(label: impl Into<String>, settings: BTreeMap<String, Value>) -> Candidate {
    Candidate { label: label.into(), settings }
}

/// Alternative conventions that could produce `stage`, relative to `cfg`.
pub fn candidates(cfg: &ModelConfig, current_offset: i64, stage: &str) -> Vec<Candidate> {
    let kind = split_layer(stage).map_or(stage, |(_, s)| s);
    let hd = cfg.head_dim.value;
    let mut out = Vec::new();
    let norm_alts = |out: &mut Vec<Candidate>| {
        let flip = match cfg.norm.eps_placement.value {
            EpsPlacement::Inside => "outside",
            EpsPlacement::Outside => "inside",
        };
        out.push(cand(format!("RMSNorm eps {flip} the square root"), set("norm.eps_placement", flip)));
        let off = if cfg.norm.weight_offset.value == 0.0 { 1.0 } else { 0.0 };
        out.push(cand(if off == 1.0 { "(1 + w) norm weight" } else { "plain w norm weight" }, set("norm.weight_offset", off)));
        for eps in [1e-5, 1e-6, 1e-8] {
            if (eps - cfg.norm.eps.value).abs() > 1e-12 {
                out.push(cand(format!("norm eps = {eps:e}"), set("norm.eps", eps)));
            }
        }
    };
    match kind {
        "q_rope" | "k_rope" => {
            let (label, name) = match cfg.rope.pairing.value {
                Pairing::HalfSplit => ("NORM pairing (2i, 2i+1)", "adjacent"),
                Pairing::Adjacent => ("NEOX pairing (i, i+d/2)", "halfsplit"),
            };
            out.push(cand(label, set("rope.pairing", name)));
            for t in [1e4, 1e5, 5e5, 1e6, 5e6, 1e7] {
                if (t - cfg.rope.theta.value).abs() > 0.5 {
                    out.push(cand(format!("theta={t:e}"), set("rope.theta", t)));
                }
            }
            offsets(&mut out, current_offset);
            let rd = cfg.rope.rotary_dim.value;
            if rd < hd {
                let (label, l) = match cfg.rope.partial_layout.value {
                    PartialLayout::LeadingBlock => ("partial rotary as half-split over the full head", "halfsplit_zero_pad"),
                    PartialLayout::HalfSplitZeroPad => ("partial rotary on the contiguous leading block", "leading_block"),
                };
                out.push(cand(label, set("rope.partial_layout", l)));
                out.push(cand("full rotary (no partial)", set("rope.rotary_dim", hd as u64)));
            } else {
                for (label, l) in [("leading block", "leading_block"), ("half-split zero-padded", "halfsplit_zero_pad")] {
                    let mut s = set("rope.rotary_dim", (hd / 2) as u64);
                    s.insert("rope.partial_layout".into(), l.into());
                    out.push(cand(format!("partial rotary {}/{hd}, {label}", hd / 2), s));
                }
            }
            if cfg.rope.scaling.value != RopeScaling::None {
                out.push(cand("no rope scaling", set("rope.scaling", "none")));
            }
            out.push(if cfg.qk_norm.value { cand("QK-norm skipped", set("qk_norm", false)) } else { cand("QK-norm applied", set("qk_norm", true)) });
        }
        "q_norm" | "k_norm" => {
            out.push(if cfg.qk_norm.value { cand("QK-norm skipped", set("qk_norm", false)) } else { cand("QK-norm applied", set("qk_norm", true)) });
            norm_alts(&mut out);
        }
        "attn_norm" | "ffn_norm" | "final_norm" => norm_alts(&mut out),
        "attn" => {
            let cur = cfg.attn_scale.value;
            let per_head = 1.0 / (cfg.hidden.value as f64 / cfg.n_heads.value as f64).sqrt();
            for (label, s) in [
                ("attention scale 1/head_dim", 1.0 / hd as f64),
                ("attention scale 1", 1.0),
                ("attention scale 1/sqrt(hidden/heads)", per_head),
                ("attention scale 1/sqrt(head_dim)", 1.0 / (hd as f64).sqrt()),
            ] {
                if (s - cur).abs() > 1e-9 * cur.abs() {
                    out.push(cand(label, set("attn_scale", s)));
                }
            }
            out.push(cand("KV cache stored in f16", set("kv_cache_dtype", "f16")));
            out.push(cand("KV cache stored in f32", set("kv_cache_dtype", "f32")));
            offsets(&mut out, current_offset);
            if cfg.sliding_window.value.iter().any(Option::is_some) {
                out.push(cand("no sliding window", set("sliding_window", Value::Null)));
            }
        }
        "router_logits" | "expert_ids" | "expert_weights" | "ffn_out" => {
            if let Some(m) = &cfg.moe {
                let r = !m.renormalize.value;
                out.push(cand(if r { "top-k weights renormalised" } else { "top-k weights not renormalised" }, set("moe.renormalize", r)));
                let s = !m.softmax_before_topk.value;
                out.push(cand(if s { "softmax before top-k" } else { "softmax after top-k" }, set("moe.softmax_before_topk", s)));
            }
        }
        _ => {}
    }
    out
}

/// Decode-position offsets other than the current one.
fn offsets(out: &mut Vec<Candidate>, current: i64) {
    for off in [0i64, 1, -1] {
        if off != current {
            let label = if off == 0 { "decode positions as recorded".to_string() } else { format!("decode positions off by {off:+}") };
            out.push(cand(label, set("decode_position_offset", off)));
        }
    }
}

fn kind_of(stage: &str) -> &str {
    split_layer(stage).map_or(stage, |(_, s)| s)
}

/// Eps fitted from `trace`'s input and output of a norm stage, with the model's weight.
fn fitted_eps(model: &Model, stage: &str, trace: &Trace) -> Option<f64> {
    let input = inputs_of(model, stage).into_iter().next()?;
    let (x, y) = (trace.load(&input).ok()?, trace.load(stage).ok()?);
    if x.rows != y.rows {
        return None;
    }
    let (w, n) = model.norm_weight(stage)?;
    crate::engine::ops::fit_rms_eps(x.f32()?, y.f32()?, w, model.cfg.norm.weight_offset.value, n)
}

/// Theta fitted from `trace`'s input and output of a RoPE stage, over every row
/// both hold, under whichever pairing reproduces the trace best
/// (`rope::detect_pairing`): the model's own pairing may be the bug, and a fit
/// under the wrong pairing gives a meaningless theta.
fn fitted_theta(model: &Model, stage: &str, trace: &Trace) -> Option<f64> {
    let input = inputs_of(model, stage).into_iter().next()?;
    let (pre, post) = (trace.load(&input).ok()?, trace.load(stage).ok()?);
    let hd = *post.shape.last()?;
    let positions = crate::engine::stages::StageInputs::positions(trace);
    let (ra, rb) = (pre.row_len(), post.row_len());
    if ra != rb || hd == 0 || rb % hd != 0 {
        return None;
    }
    let rows = pre.rows.start.max(post.rows.start)..pre.rows.end.min(post.rows.end).min(positions.len());
    let (a, b) = (pre.f32()?, post.f32()?);
    let (a0, b0) = (rows.start.checked_sub(pre.rows.start)?, rows.start.checked_sub(post.rows.start)?);
    let n = rows.len() * ra;
    let fit = crate::engine::rope::detect_pairing(a.get(a0 * ra..a0 * ra + n)?, b.get(b0 * rb..b0 * rb + n)?, rb / hd, hd, &positions[rows]);
    fit.candidates.into_iter().find(|c| c.pairing == fit.best)?.theta
}

/// Worst-row cosine and NMSE of `a` against `b`, rows of `row` values.
fn score(a: &[f32], b: &[f32], row: usize) -> Score {
    let mut s = Score { cosine: 1.0, nmse: 0.0 };
    for (x, y) in a.chunks(row.max(1)).zip(b.chunks(row.max(1))) {
        s.cosine = s.cosine.min(metrics::cosine(x, y));
        s.nmse = s.nmse.max(metrics::nmse(x, y));
    }
    s
}

fn score_ids(a: &[i32], b: &[i64], k: usize) -> Score {
    // Expert ids as sets per row: the fraction of rows whose sets agree, as a cosine-like score.
    let rows = b.len() / k.max(1);
    let agree = a
        .chunks(k)
        .zip(b.chunks(k))
        .filter(|(x, y)| {
            let mut x: Vec<i64> = x.iter().map(|&v| v as i64).collect();
            let mut y = y.to_vec();
            x.sort_unstable();
            y.sort_unstable();
            x == y
        })
        .count();
    let f = agree as f64 / rows.max(1) as f64;
    Score { cosine: f, nmse: 1.0 - f }
}

/// Recomputes `stage` with `model` from `trace`'s inputs and scores it against `trace`'s output.
fn try_on(model: &Model, stage: &str, trace: &Trace) -> Option<Score> {
    if !trace.has(stage) || inputs_of(model, stage).iter().any(|s| !trace.has(s)) {
        return None;
    }
    let want = trace.load(stage).ok()?;
    match model.recompute(stage, trace).ok()? {
        Values::F32(v) => Some(score(&v, want.f32()?, want.row_len())),
        Values::Ids(v) => Some(score_ids(&v, want.i64()?, want.row_len())),
    }
}

/// `cos 0.412345`, or `nmse 3.1e-9` when the cosine rounds to 1 and says nothing.
pub fn closeness(s: Option<Score>) -> String {
    match s {
        Some(s) if s.cosine >= 0.9999995 && s.nmse > 0.0 => format!("nmse {:.2e}", s.nmse),
        Some(s) => format!("cos {:.6}", s.cosine),
        None => "not computable".into(),
    }
}

/// What the candidates are ranked by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RankBy {
    /// An engine subject: `base` is the subject's own settings; the cause is the
    /// change that makes its op reproduce the reference.
    Reference,
    /// A foreign trace: `base` is the reference's conventions; the cause is the
    /// change that reproduces what the subject computed from its own inputs.
    Subject,
}

/// Runs every candidate at `stage` and ranks them.
pub fn diagnose(model_path: &Path, base: &BTreeMap<String, Value>, stage: &str, reference: &Trace, subject: Option<&Trace>, rank: RankBy) -> Result<Diagnosis> {
    let layers = split_layer(stage).map(|(i, _)| i + 1);
    let load = |extra: &BTreeMap<String, Value>| {
        let mut settings = base.clone();
        settings.extend(extra.clone());
        let opts = RunOptions { layers: if stage == "final_norm" || stage == "logits" { None } else { layers }, settings, ..Default::default() };
        engine::load(model_path, &opts).map(|(m, _)| m)
    };
    let base_model = load(&BTreeMap::new())?;
    let mut all = vec![Candidate { label: if rank == RankBy::Reference { "as the subject is configured" } else { "the reference's conventions (as configured)" }.into(), settings: BTreeMap::new() }];
    all.extend(candidates(&base_model.cfg, base_model.eng.decode_position_offset, stage));
    // Norm stages: also the eps fitted from the data.
    if matches!(kind_of(stage), "attn_norm" | "ffn_norm" | "final_norm" | "q_norm" | "k_norm") {
        let (src, which) = match (rank, subject) {
            (RankBy::Subject, Some(s)) => (s, "the subject"),
            _ => (reference, "the reference"),
        };
        if let Some(e) = fitted_eps(&base_model, stage, src).filter(|e| *e > 0.0 && e.is_finite()) {
            all.push(Candidate { label: format!("norm eps fitted from {which}: {e:.3e}"), settings: BTreeMap::from([("norm.eps".to_string(), Value::from(e))]) });
        }
    }
    // RoPE stages: also the theta fitted from the data, continuous (not just the usual bases).
    let kind = split_layer(stage).map_or(stage, |(_, s)| s);
    if kind == "q_rope" || kind == "k_rope" {
        let (src, which) = match (rank, subject) {
            (RankBy::Subject, Some(s)) => (s, "the subject"),
            _ => (reference, "the reference"),
        };
        if let Some(t) = fitted_theta(&base_model, stage, src) {
            all.push(Candidate { label: format!("theta fitted from {which}: {t:.4e}"), settings: BTreeMap::from([("rope.theta".to_string(), Value::from(t))]) });
        }
    }

    let mut scored = Vec::new();
    for (i, c) in all.iter().enumerate() {
        // A candidate that does not apply to this model (e.g. MoE settings on a dense model) is skipped.
        let Ok(m) = (if i == 0 { Ok(base_model_ref(&base_model)) } else { load(&c.settings).map(Owned) }) else { continue };
        let m = m.get();
        scored.push(Scored { label: c.label.clone(), settings: c.settings.clone(), is_base: i == 0, vs_reference: try_on(m, stage, reference), vs_subject: subject.and_then(|s| try_on(m, stage, s)) });
    }
    let k = |s: &Scored| if rank == RankBy::Reference { key(s) } else { sub_key(s) };
    scored.sort_by(|a, b| k(a).partial_cmp(&k(b)).unwrap_or(std::cmp::Ordering::Equal));

    let base_s = scored.iter().find(|s| s.is_base).cloned();
    let subject_used = scored.iter().filter(|s| s.vs_subject.is_some()).min_by(|a, b| sub_key(a).partial_cmp(&sub_key(b)).unwrap_or(std::cmp::Ordering::Equal)).map(|s| s.label.clone());
    let best = scored.first().cloned();

    let cause = match (&best, &base_s) {
        (Some(b), Some(base)) if !b.is_base && improves(b, base, rank) => Some(match rank {
            RankBy::Reference => format!(
                "{} reproduces the reference ({}); the subject used {} ({})",
                b.label,
                closeness(b.vs_reference),
                b.settings.keys().next().map_or(base.label.clone(), |k| current_label(&base_model, k)),
                closeness(base.vs_reference)
            ),
            RankBy::Subject => format!(
                "the subject used {}: it reproduces the subject's output from its own inputs ({}); the reference's conventions give {} there",
                b.label,
                closeness(b.vs_subject),
                closeness(base.vs_subject)
            ),
        }),
        _ => None,
    };
    let next = scored.iter().filter(|s| !s.is_base).nth(1);
    let mut summary = match &cause {
        Some(c) => format!("cause: {c}"),
        None => "no alternative convention explains the difference better than the configured one; the weights or the arithmetic of this op differ".into(),
    };
    if let (Some(_), Some(n)) = (&cause, next) {
        let sc = if rank == RankBy::Reference { n.vs_reference } else { n.vs_subject };
        summary.push_str(&format!(". next best: {} ({})", n.label, closeness(sc)));
    }
    Ok(Diagnosis { stage: stage.to_string(), candidates: scored, cause, subject_used, summary })
}

/// The base model's current convention for a setting, in the words candidates use.
fn current_label(m: &Model, key: &str) -> String {
    let c = &m.cfg;
    match key {
        "rope.pairing" => match c.rope.pairing.value {
            Pairing::HalfSplit => "NEOX pairing (i, i+d/2)".into(),
            Pairing::Adjacent => "NORM pairing (2i, 2i+1)".into(),
        },
        "rope.theta" => format!("theta={:e}", c.rope.theta.value),
        "rope.rotary_dim" | "rope.partial_layout" => format!("rotary dims {}/{} ({:?})", c.rope.rotary_dim.value, c.head_dim.value, c.rope.partial_layout.value),
        "rope.scaling" => format!("rope scaling {:?}", c.rope.scaling.value),
        "decode_position_offset" => match m.eng.decode_position_offset {
            0 => "decode positions as recorded".into(),
            o => format!("decode positions off by {o:+}"),
        },
        "qk_norm" => {
            if c.qk_norm.value {
                "QK-norm applied".into()
            } else {
                "QK-norm skipped".into()
            }
        }
        "norm.eps_placement" => format!("RMSNorm eps {:?} the square root", c.norm.eps_placement.value).to_lowercase(),
        "norm.weight_offset" => {
            if c.norm.weight_offset.value == 0.0 {
                "plain w norm weight".into()
            } else {
                "(1 + w) norm weight".into()
            }
        }
        "norm.eps" => format!("norm eps = {:e}", c.norm.eps.value),
        "kv_cache_dtype" => format!("KV cache stored in {}", m.eng.kv_cache_dtype),
        "attn_scale" => format!("attention scale {}", c.attn_scale.value),
        "moe.renormalize" => match c.moe.as_ref().map(|m| m.renormalize.value) {
            Some(true) => "top-k weights renormalised".into(),
            _ => "top-k weights not renormalised".into(),
        },
        "moe.softmax_before_topk" => match c.moe.as_ref().map(|m| m.softmax_before_topk.value) {
            Some(true) => "softmax before top-k".into(),
            _ => "softmax after top-k".into(),
        },
        other => format!("its configured {other}"),
    }
}

/// A candidate is a cause when it lands an order of magnitude closer than the base.
fn improves(c: &Scored, base: &Scored, rank: RankBy) -> bool {
    let pick = |s: &Scored| if rank == RankBy::Reference { s.vs_reference } else { s.vs_subject };
    match (pick(c), pick(base)) {
        // Cosine cannot see a pure rescaling (an eps change): compare it only up to rounding.
        (Some(c), Some(b)) => c.nmse < 0.1 * b.nmse && c.cosine >= b.cosine - 1e-9,
        _ => false,
    }
}

fn key(s: &Scored) -> (f64, f64) {
    s.vs_reference.map_or((f64::INFINITY, 0.0), |x| (x.nmse, -x.cosine))
}

fn sub_key(s: &Scored) -> (f64, f64) {
    s.vs_subject.map_or((f64::INFINITY, 0.0), |x| (x.nmse, -x.cosine))
}

// One at a time, on the stack for a loop turn: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum MaybeOwned<'a> {
    Borrowed(&'a Model),
    Owned(Model),
}
use MaybeOwned::Owned;

impl MaybeOwned<'_> {
    fn get(&self) -> &Model {
        match self {
            MaybeOwned::Borrowed(m) => m,
            MaybeOwned::Owned(m) => m,
        }
    }
}

fn base_model_ref(m: &Model) -> MaybeOwned<'_> {
    MaybeOwned::Borrowed(m)
}

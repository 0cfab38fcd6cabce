//! Recovering RoPE conventions from data, for diagnosis: given one stage's input
//! and output (`[T, H, hd]`, full rotary, text positions), which theta and which
//! pairing turn one into the other.
//!
//! Pair k at position p turns by `phi = p * theta^(-2k/hd)` (CONVENTIONS §1.4), so
//! `ln(phi/p) = -(2k/hd) ln theta`: a line through the origin in `ln theta`. The
//! measured angle is only known modulo 2 pi, so the fit starts from the rows with
//! the smallest positions (whose angles barely wrap, found by a grid search on
//! the reconstruction error) and unwraps larger positions against the running
//! estimate, refitting the line each time the position range grows. Angle
//! differences between rows at nearby positions count as small positions too.

use std::f64::consts::TAU;

use super::{FreqStyle, Rope};
use crate::formats::config::{Pairing, PartialLayout, RopeConfig, RopeScaling, Sourced};

/// Search range for theta: every base in use lies well inside (1e4 to 5e6 as of
/// 2025; the bounds only keep the grid finite).
const LN_THETA_RANGE: (f64, f64) = (0.5, 25.0);
/// Grid step in ln(theta) for rows at position 1; an angle moves by at most
/// `p/(e ln theta)` per unit of ln theta, so 0.02 keeps it under 0.1 rad a step.
const GRID_STEP_AT_P1: f64 = 0.02;
/// Each refinement admits positions up to this multiple of the last range: the
/// estimate from the previous range predicts their angles to well under pi.
const RANGE_GROWTH: f64 = 8.0;
/// The grid search reads at most this many turns (evenly strided): a few
/// thousand angles already pin the minimum, more only cost time.
const MAX_GRID_TURNS: usize = 2048;
/// A grid finer than this means the smallest position (or gap) is so large that
/// theta's aliases are as good a fit as theta itself (about position 100).
const MAX_GRID_POINTS: usize = 200_000;
/// Pairs whose vectors are shorter than this carry no usable angle.
const MIN_PAIR_NORM: f64 = 1e-6;

struct Turn {
    p: f64,
    /// `2k/hd`: the exponent of theta in this pair's frequency.
    e: f64,
    /// Measured angle in (-pi, pi] and the weight `|x||y|` of the pair.
    phi: f64,
    w: f64,
}

fn turns(pre: &[f32], post: &[f32], n_heads: usize, head_dim: usize, positions: &[[i64; 4]], pairing: Pairing) -> Vec<Turn> {
    let half = head_dim / 2;
    let mut out = Vec::new();
    let row = (n_heads * head_dim).max(1);
    let n_rows = positions.len().min(pre.len() / row).min(post.len() / row);
    for (t, pos) in positions.iter().enumerate().take(n_rows) {
        let p = pos[0] as f64;
        if p == 0.0 {
            continue;
        }
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            let (x, y) = (&pre[base..base + head_dim], &post[base..base + head_dim]);
            // k = 0 turns by p whatever theta is: no information.
            for k in 1..half {
                let (a, b) = match pairing {
                    Pairing::HalfSplit => (k, k + half),
                    Pairing::Adjacent => (2 * k, 2 * k + 1),
                };
                let (xa, xb, ya, yb) = (x[a] as f64, x[b] as f64, y[a] as f64, y[b] as f64);
                // A pair too short to carry an angle stays in (weight 0) so that rows align for gap_turns.
                let w = xa.hypot(xb) * ya.hypot(yb);
                let w = if w < MIN_PAIR_NORM * MIN_PAIR_NORM { 0.0 } else { w };
                // Rotation by phi: cross = |x||y| sin phi, dot = |x||y| cos phi.
                let phi = (xa * yb - xb * ya).atan2(xa * ya + xb * yb);
                out.push(Turn { p, e: 2.0 * k as f64 / head_dim as f64, phi, w });
            }
        }
    }
    out
}

/// Reconstruction error of `ln_theta` on `ts`: sum of `w (1 - cos(phi - phi_pred))`.
fn misfit(ts: &[&Turn], ln_theta: f64) -> f64 {
    ts.iter().map(|t| t.w * (1.0 - (t.phi - t.p * (-t.e * ln_theta).exp()).cos())).sum()
}

/// Least-squares `ln theta` from the angles unwrapped against `ln_theta`,
/// weighted by `(phi w)^2` (the error of `ln phi` is about `sigma / (phi |x|)`).
fn refit(ts: &[&Turn], ln_theta: f64) -> Option<f64> {
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for t in ts {
        let pred = t.p * (-t.e * ln_theta).exp();
        let phi = t.phi + TAU * ((pred - t.phi) / TAU).round();
        if phi / t.p <= 0.0 {
            continue;
        }
        let wt = (phi * t.w).powi(2);
        let (x, y) = (-t.e, (phi / t.p).ln());
        sxy += wt * x * y;
        sxx += wt * x * x;
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Turns between rows at consecutive distinct positions, per head and pair: the
/// angle difference is the turn over the position gap whatever the inputs, so
/// rows far from position 0 still give small-position measurements.
fn gap_turns(all: &[Turn], per_row: usize) -> Vec<Turn> {
    let mut rows: Vec<&[Turn]> = all.chunks(per_row).filter(|r| r.len() == per_row).collect();
    rows.sort_by(|a, b| a[0].p.total_cmp(&b[0].p));
    rows.dedup_by(|a, b| a[0].p == b[0].p);
    rows.windows(2)
        .flat_map(|w| w[0].iter().zip(w[1]))
        .map(|(a, b)| {
            let dphi = b.phi - a.phi;
            Turn { p: b.p - a.p, e: a.e, phi: dphi - TAU * (dphi / TAU).round(), w: a.w.min(b.w) }
        })
        .collect()
}

/// Fits rope theta from a RoPE stage's input `pre` and output `post` (`[T, H,
/// hd]`, full rotary, rows at `positions`, axis 0 read) under `pairing`, assuming
/// no frequency scaling. Returns None when no row carries a usable rotation
/// (every position 0, or zero vectors), or when neither a position nor a gap
/// between positions is small enough to tell theta from its aliases.
pub fn fit_theta(pre: &[f32], post: &[f32], n_heads: usize, head_dim: usize, positions: &[[i64; 4]], pairing: Pairing) -> Option<f64> {
    let mut all = turns(pre, post, n_heads, head_dim, positions, pairing);
    let per_row = n_heads * (head_dim / 2).saturating_sub(1);
    if per_row > 0 {
        let gaps = gap_turns(&all, per_row);
        all.extend(gaps);
    }
    all.retain(|t| t.w > 0.0);
    let p_min = all.iter().map(|t| t.p.abs()).fold(f64::INFINITY, f64::min);
    if !p_min.is_finite() {
        return None;
    }
    // 1. Grid search on the turns over the smallest positions, whose angles wrap the least.
    let mut range = p_min * RANGE_GROWTH;
    let near: Vec<&Turn> = all.iter().filter(|t| t.p.abs() <= range).collect();
    let near: Vec<&Turn> = near.iter().step_by(near.len().div_ceil(MAX_GRID_TURNS)).copied().collect();
    let step = GRID_STEP_AT_P1 / p_min;
    let n = ((LN_THETA_RANGE.1 - LN_THETA_RANGE.0) / step).ceil() as usize;
    if n > MAX_GRID_POINTS {
        return None;
    }
    let mut ln_theta = (0..=n).map(|i| LN_THETA_RANGE.0 + i as f64 * step).map(|l| (misfit(&near, l), l)).fold((f64::INFINITY, 0.0), |a, b| if b.0 < a.0 { b } else { a }).1;
    // 2. Unwrap and refit on growing position ranges until every turn is in.
    loop {
        let sel: Vec<&Turn> = all.iter().filter(|t| t.p.abs() <= range).collect();
        ln_theta = refit(&sel, ln_theta)?;
        if sel.len() == all.len() {
            break;
        }
        range *= RANGE_GROWTH;
    }
    Some(ln_theta.exp())
}

/// One pairing tried by [`detect_pairing`]: the theta fitted under it and the
/// cosine of its reconstruction against the observed output.
#[derive(Clone, Debug, PartialEq)]
pub struct PairingCandidate {
    pub pairing: Pairing,
    pub theta: Option<f64>,
    /// Cosine over all values (f64 accumulation) of RoPE(pre) against post; 0
    /// when no theta could be fitted.
    pub cosine: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PairingFit {
    pub best: Pairing,
    pub candidates: Vec<PairingCandidate>,
}

/// Which pairing reproduces `post` from `pre` best: for each, fit theta, rotate
/// `pre` with it (transformers arithmetic, full rotary, no scaling) and score
/// the result against `post`.
pub fn detect_pairing(pre: &[f32], post: &[f32], n_heads: usize, head_dim: usize, positions: &[[i64; 4]]) -> PairingFit {
    let candidates: Vec<PairingCandidate> = [Pairing::HalfSplit, Pairing::Adjacent]
        .into_iter()
        .map(|pairing| {
            let theta = fit_theta(pre, post, n_heads, head_dim, positions, pairing);
            let cosine = theta.map_or(0.0, |theta| {
                let cfg = RopeConfig { theta: d(theta), pairing: d(pairing), rotary_dim: d(head_dim), partial_layout: d(PartialLayout::LeadingBlock), scaling: d(RopeScaling::None), mrope: None };
                let Ok(rope) = Rope::with_style(&cfg, head_dim, FreqStyle::Transformers) else { return 0.0 };
                let n = positions.len() * n_heads * head_dim;
                let (Some(x), Some(y)) = (pre.get(..n), post.get(..n)) else { return 0.0 };
                let mut x = x.to_vec();
                rope.apply(&mut x, n_heads, positions);
                cosine(&x, y)
            });
            PairingCandidate { pairing, theta, cosine }
        })
        .collect();
    let best = candidates.iter().fold(&candidates[0], |a, b| if b.cosine > a.cosine { b } else { a }).pairing;
    PairingFit { best, candidates }
}

fn d<T>(v: T) -> Sourced<T> {
    Sourced::derived(v, "detect_pairing")
}

/// `sum(a b) / sqrt(sum(a^2) sum(b^2))` in f64.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return if aa == bb { 1.0 } else { 0.0 };
    }
    ab / (aa * bb).sqrt()
}

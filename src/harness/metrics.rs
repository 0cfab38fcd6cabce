//! Per-row comparison metrics (SPEC §3). Every metric is computed on one row
//! (one sequence position) at a time, in f64, with `a` the subject row and `b`
//! the reference row; the gate then reduces over rows (worst row, or the
//! fraction of agreeing rows for the agreement metrics).
//!
//! Non-finite values: the structural checks reject NaN and unmatched infinities
//! before any metric runs; an infinity present with the same sign at the same
//! place in both rows is equal and is left out of every sum.

use serde::{Deserialize, Serialize};

/// The metrics a gate can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `a·b / (‖a‖ ‖b‖)` per row; exactly 1 for equal rows (zero rows included),
    /// 0 when only one row is zero.
    /// Reduction: worst (lowest for `min`) row. Accumulation: f64.
    Cosine,
    /// `‖a-b‖² / ‖b‖²` per row (b the reference); 0/0 = 0, x/0 = +inf.
    /// Reduction: worst row. Accumulation: f64.
    Nmse,
    /// `max_i |a_i - b_i|` per row. Reduction: worst row. Accumulation: f64.
    MaxAbs,
    /// `sqrt(Σ(a_i-b_i)² / n)` per row. Reduction: worst row. Accumulation: f64.
    Rmse,
    /// `‖a-b‖ / ‖b‖` per row (the square root of nmse); 0/0 = 0, x/0 = +inf.
    /// Reduction: worst row. Accumulation: f64.
    RelL2,
    /// `‖a-ref‖ / ‖low-ref‖` per row, with `low` the contract's `reference_low`:
    /// how many noise floors away the subject is. 0/0 = 0 (the subject is as exact
    /// as a reference that has no noise there); x/0 = +inf (the subject differs where
    /// even the low-precision reference does not). Reduction: worst row. Accumulation: f64.
    NoiseRatio,
    /// Per row 1 if `argmax(a) == argmax(b)` (first index on ties, as numpy), else 0.
    /// Reduction: the fraction of rows that agree (mean). Accumulation: f64.
    Top1Agreement,
    /// Per row 1 if the subject's top-1 token `s = argmax(a)` is among the reference's
    /// `k` largest logits and `b_s >= max(b) - margin`, else 0: the subject picked a
    /// token the reference also found (nearly) best. Reduction: fraction of rows.
    TopkOverlap,
    /// `KL(P‖Q) = Σ P_i (log P_i - log Q_i)` per row, `P = softmax(b)` (reference),
    /// `Q = softmax(a)` (subject), both by log-sum-exp in f64. Reduction: worst row.
    KlDivergence,
    /// Per row 1 if the subject's top-1 token lies in the reference's nucleus at `p`:
    /// the smallest set of the reference's most probable tokens (softmax of `b`,
    /// by descending probability, ties by index) whose total probability reaches `p`;
    /// the reference's own top-1 is always in it. Else 0. Reduction: fraction of rows.
    SameTopP,
}

pub const ALL: [Metric; 10] =
    [Metric::Cosine, Metric::Nmse, Metric::MaxAbs, Metric::Rmse, Metric::RelL2, Metric::NoiseRatio, Metric::Top1Agreement, Metric::TopkOverlap, Metric::KlDivergence, Metric::SameTopP];

/// How per-row values become the one gated value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// The worst row: the lowest value for a `min` gate, the highest for `max`.
    WorstRow,
    /// The mean of per-row 0/1 agreements.
    FractionOfRows,
}

/// Extra parameters of the parameterised metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Nmse => "nmse",
            Metric::MaxAbs => "max_abs",
            Metric::Rmse => "rmse",
            Metric::RelL2 => "rel_l2",
            Metric::NoiseRatio => "noise_ratio",
            Metric::Top1Agreement => "top1_agreement",
            Metric::TopkOverlap => "topk_overlap",
            Metric::KlDivergence => "kl_divergence",
            Metric::SameTopP => "same_top_p",
        }
    }

    pub fn reduction(self) -> Reduction {
        match self {
            Metric::Top1Agreement | Metric::TopkOverlap | Metric::SameTopP => Reduction::FractionOfRows,
            _ => Reduction::WorstRow,
        }
    }

    /// Metrics over a distribution of next tokens: only meaningful on `logits`.
    pub fn logits_only(self) -> bool {
        matches!(self, Metric::Top1Agreement | Metric::TopkOverlap | Metric::KlDivergence | Metric::SameTopP)
    }

    /// Metrics whose best value is 1 (a `min` gate's slack is `1 - min`).
    pub fn best_is_one(self) -> bool {
        matches!(self, Metric::Cosine | Metric::Top1Agreement | Metric::TopkOverlap | Metric::SameTopP)
    }

    /// One row's value. `low` is the `reference_low` row (noise_ratio only).
    pub fn row(self, a: &[f32], b: &[f32], low: Option<&[f32]>, params: &Params) -> f64 {
        match self {
            Metric::Cosine => cosine(a, b),
            Metric::Nmse => nmse(a, b),
            Metric::MaxAbs => max_abs(a, b).0,
            Metric::Rmse => rmse(a, b),
            Metric::RelL2 => nmse(a, b).sqrt(),
            // Without a noise floor for this row the ratio is undefined: NaN, which
            // every gate treats as failing (the contract schema requires reference_low).
            Metric::NoiseRatio => low.map_or(f64::NAN, |l| noise_ratio(a, b, l)),
            Metric::Top1Agreement => agree(argmax(a) == argmax(b)),
            Metric::TopkOverlap => agree(topk_overlap(a, b, params.k.unwrap_or(1), params.margin.unwrap_or(f64::INFINITY))),
            Metric::KlDivergence => kl_divergence(a, b),
            Metric::SameTopP => agree(same_top_p(a, b, params.p.unwrap_or(1.0))),
        }
    }
}

fn agree(x: bool) -> f64 {
    if x {
        1.0
    } else {
        0.0
    }
}

/// Pairs of finite elements; an infinity equal in both rows is skipped.
fn pairs<'a>(a: &'a [f32], b: &'a [f32]) -> impl Iterator<Item = (f64, f64)> + 'a {
    a.iter().zip(b).filter(|(x, y)| x.is_finite() || x != y).map(|(&x, &y)| (x as f64, y as f64))
}

/// `(‖a-b‖², ‖b‖²)` in f64.
fn diff_and_ref_sq(a: &[f32], b: &[f32]) -> (f64, f64) {
    pairs(a, b).fold((0.0, 0.0), |(d, r), (x, y)| (d + (x - y) * (x - y), r + y * y))
}

fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        if num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        num / den
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    // Equal rows are exactly 1: the f64 quotient alone can land on 1 - 2e-16.
    if a.iter().zip(b).all(|(x, y)| x == y) {
        return 1.0;
    }
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in pairs(a, b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    match (aa == 0.0, bb == 0.0) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        _ => ab / (aa.sqrt() * bb.sqrt()),
    }
}

pub fn nmse(a: &[f32], b: &[f32]) -> f64 {
    let (d, r) = diff_and_ref_sq(a, b);
    ratio(d, r)
}

/// `(max |a_i - b_i|, i)`; NaN differences count as the largest.
pub fn max_abs(a: &[f32], b: &[f32]) -> (f64, usize) {
    let mut best = (0.0f64, 0usize);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        if x == y {
            continue;
        }
        let d = (x as f64 - y as f64).abs();
        if d.is_nan() || d > best.0 {
            best = (if d.is_nan() { f64::INFINITY } else { d }, i);
        }
    }
    best
}

pub fn rmse(a: &[f32], b: &[f32]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    (diff_and_ref_sq(a, b).0 / a.len() as f64).sqrt()
}

pub fn noise_ratio(a: &[f32], b: &[f32], low: &[f32]) -> f64 {
    let (d, _) = diff_and_ref_sq(a, b);
    let (n, _) = diff_and_ref_sq(low, b);
    ratio(d.sqrt(), n.sqrt())
}

/// Index of the largest value; the first one on ties (numpy and torch argmax).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Indices by descending value, ties by ascending index.
fn order_desc(x: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&i, &j| x[j].total_cmp(&x[i]).then(i.cmp(&j)));
    idx
}

pub fn topk_overlap(a: &[f32], b: &[f32], k: usize, margin: f64) -> bool {
    let s = argmax(a);
    let top = order_desc(b);
    let best = b[top[0]] as f64;
    top.iter().take(k).any(|&i| i == s) && b[s] as f64 >= best - margin
}

/// `log softmax(x)` in f64 by log-sum-exp.
fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let lse = m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v as f64 - lse).collect()
}

pub fn kl_divergence(a: &[f32], b: &[f32]) -> f64 {
    let (lq, lp) = (log_softmax(a), log_softmax(b));
    let kl: f64 = lp.iter().zip(&lq).filter(|(p, _)| p.is_finite()).map(|(p, q)| p.exp() * (p - q)).sum();
    // Rounding can leave a tiny negative sum for identical rows.
    kl.max(0.0)
}

pub fn same_top_p(a: &[f32], b: &[f32], p: f64) -> bool {
    let s = argmax(a);
    let lp = log_softmax(b);
    let mut total = 0.0;
    for i in order_desc(b) {
        if i == s {
            return true;
        }
        total += lp[i].exp();
        if total >= p {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rows_are_defined() {
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 0.0]), 0.0);
        assert_eq!(nmse(&[0.0], &[0.0]), 0.0);
        assert_eq!(nmse(&[1.0], &[0.0]), f64::INFINITY);
        assert_eq!(noise_ratio(&[1.0], &[1.0], &[1.0]), 0.0);
        assert_eq!(noise_ratio(&[2.0], &[1.0], &[1.0]), f64::INFINITY);
        assert_eq!(noise_ratio(&[3.0], &[1.0], &[2.0]), 2.0);
    }

    #[test]
    fn matching_infinities_are_equal() {
        let inf = f32::INFINITY;
        assert_eq!(nmse(&[inf, 1.0], &[inf, 1.0]), 0.0);
        assert_eq!(cosine(&[inf, 1.0], &[inf, 1.0]), 1.0);
        assert_eq!(max_abs(&[inf, 1.0], &[inf, 1.5]), (0.5, 1));
    }

    #[test]
    fn logits_metrics() {
        let b = [1.0, 3.0, 2.9, -1.0];
        assert_eq!(argmax(&b), 1);
        assert!(topk_overlap(&[0.0, 0.0, 5.0, 0.0], &b, 2, 0.5));
        assert!(!topk_overlap(&[0.0, 0.0, 5.0, 0.0], &b, 2, 0.05));
        assert!(!topk_overlap(&[5.0, 0.0, 0.0, 0.0], &b, 2, 10.0));
        assert!(kl_divergence(&b, &b) < 1e-15);
        assert!(kl_divergence(&[3.0, 1.0, 2.9, -1.0], &b) > 0.01);
        // softmax(b) is ~[0.07, 0.49, 0.44, 0.01]: the nucleus at 0.9 is {1, 2}, at 0.3 only {1}.
        assert!(same_top_p(&[0.0, 0.0, 5.0, 0.0], &b, 0.9));
        assert!(!same_top_p(&[0.0, 0.0, 5.0, 0.0], &b, 0.3));
    }
}

//! Rotary position embeddings, every convention in one module (CONVENTIONS §1).
//!
//! Frequencies follow transformers: `inv_freq[i] = 1 / base^(2i/dim)` in f32,
//! angle = `inv_freq * position` in f32, cos/sin scaled by the attention factor.
//! Pairing decides which two dims rotate together; the partial layout decides
//! which dims rotate at all.

use crate::error::{Error, Result};
use crate::formats::config::{Pairing, PartialLayout, RopeConfig, RopeScaling};

#[derive(Clone, Debug)]
pub struct Rope {
    pub pairing: Pairing,
    pub layout: PartialLayout,
    pub head_dim: usize,
    pub rotary_dim: usize,
    /// One frequency per rotated pair (`head_dim/2` entries for the zero-padded layout).
    pub inv_freq: Vec<f32>,
    /// Multiplies cos and sin (yarn's mscale; 1 otherwise).
    pub attention_factor: f32,
    /// M-RoPE sections (pairs per axis t, h, w, e) and whether they interleave.
    pub mrope: Option<([usize; 4], bool)>,
}

impl Rope {
    pub fn new(cfg: &RopeConfig, head_dim: usize) -> Result<Rope> {
        let rd = cfg.rotary_dim.value;
        if rd == 0 || rd > head_dim || rd % 2 != 0 {
            return Err(Error::mismatch(format!("rotary_dim {rd} must be even and within head_dim {head_dim}")));
        }
        let layout = cfg.partial_layout.value;
        let theta = cfg.theta.value;
        if !(theta.is_finite() && theta > 1.0) {
            return Err(Error::mismatch(format!("rope theta {theta} must be a finite number above 1")));
        }
        // The dim in the exponent: the rotated block, or the full head for the
        // zero-padded (proportional) layout, whose unrotated pairs get frequency 0.
        let (dim, n_pairs) = match layout {
            PartialLayout::LeadingBlock => (rd, rd / 2),
            PartialLayout::HalfSplitZeroPad => (head_dim, head_dim / 2),
        };
        let mut inv_freq = default_inv_freq(theta, dim, n_pairs);
        if layout == PartialLayout::HalfSplitZeroPad {
            for f in inv_freq.iter_mut().skip(rd / 2) {
                *f = 0.0;
            }
        }
        let attention_factor = apply_scaling(&mut inv_freq, &cfg.scaling.value, theta, dim)?;
        Ok(Rope {
            pairing: cfg.pairing.value,
            layout,
            head_dim,
            rotary_dim: rd,
            inv_freq,
            attention_factor,
            mrope: cfg.mrope.as_ref().map(|m| m.value),
        })
    }

    /// The (a, b) dims rotated together for pair `k`, and that pair's frequency index.
    #[inline]
    fn pair(&self, k: usize) -> (usize, usize) {
        let span = match self.layout {
            PartialLayout::LeadingBlock => self.rotary_dim,
            PartialLayout::HalfSplitZeroPad => self.head_dim,
        };
        match self.pairing {
            Pairing::HalfSplit => (k, k + span / 2),
            Pairing::Adjacent => (2 * k, 2 * k + 1),
        }
    }

    /// Which position axis drives pair `k` under M-RoPE (0 = t, 1 = h, 2 = w, 3 = e).
    fn axis(&self, k: usize) -> usize {
        let Some((s, interleaved)) = self.mrope else { return 0 };
        let total: usize = s.iter().sum();
        let sector = if total > 0 { k % total } else { k };
        if interleaved {
            // Qwen3-VL as transformers computes it: t everywhere, h on k%3==1 and w on
            // k%3==2 inside their spans. (ggml's IMROPE sends pairs outside every span
            // to the e axis, which is 0 for text: CONVENTIONS §1.7.)
            if sector % 3 == 1 && sector < 3 * s[1] {
                1
            } else if sector % 3 == 2 && sector < 3 * s[2] {
                2
            } else {
                0
            }
        } else if sector < s[0] {
            0
        } else if sector < s[0] + s[1] {
            1
        } else if sector < s[0] + s[1] + s[2] {
            2
        } else {
            3
        }
    }

    /// Rotates `x` (`[T, H, hd]`) in place; `positions[t]` holds the position of
    /// row t on each axis (text: all axes equal).
    pub fn apply(&self, x: &mut [f32], n_heads: usize, positions: &[[i64; 4]]) {
        let hd = self.head_dim;
        for (t, pos) in positions.iter().enumerate() {
            let cs: Vec<(f32, f32)> = self
                .inv_freq
                .iter()
                .enumerate()
                .map(|(k, &f)| {
                    let angle = f * pos[self.axis(k)] as f32;
                    let (s, c) = (angle as f64).sin_cos();
                    (c as f32 * self.attention_factor, s as f32 * self.attention_factor)
                })
                .collect();
            for h in 0..n_heads {
                let v = &mut x[(t * n_heads + h) * hd..(t * n_heads + h + 1) * hd];
                for (k, &(c, s)) in cs.iter().enumerate() {
                    let (a, b) = self.pair(k);
                    let (xa, xb) = (v[a], v[b]);
                    // transformers: q*cos + rotate_half(q)*sin, each product rounded, then added.
                    v[a] = xa * c + (-xb) * s;
                    v[b] = xb * c + xa * s;
                }
            }
        }
    }
}

/// `1 / base^(2i/dim)` as transformers computes it in float32.
pub fn default_inv_freq(theta: f64, dim: usize, n_pairs: usize) -> Vec<f32> {
    let base = theta as f32 as f64;
    (0..n_pairs)
        .map(|i| {
            let e = (2 * i) as f32 / dim as f32;
            1.0f32 / (base.powf(e as f64) as f32)
        })
        .collect()
}

/// Applies a scaling rule to `inv_freq` in place; returns the cos/sin factor.
fn apply_scaling(inv: &mut [f32], s: &RopeScaling, theta: f64, dim: usize) -> Result<f32> {
    use std::f64::consts::PI;
    match *s {
        RopeScaling::None => Ok(1.0),
        RopeScaling::FreqFactors { ref factors } => {
            if factors.len() < inv.len() {
                return Err(Error::mismatch(format!("{} rope frequency factors for {} rotated pairs", factors.len(), inv.len())));
            }
            // ggml: theta_extrap = theta / freq_factor, in f32.
            inv.iter_mut().zip(factors).for_each(|(f, d)| *f /= d);
            Ok(1.0)
        }
        RopeScaling::Linear { factor } => {
            inv.iter_mut().for_each(|f| *f /= factor as f32);
            Ok(1.0)
        }
        // Below max_position the NTK base is unchanged; a longer sequence
        // recomputes it (transformers' dynamic_rope_update), handled by the caller.
        RopeScaling::Dynamic { .. } => Ok(1.0),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
            let low_wl = original_max_position / low_freq_factor;
            let high_wl = original_max_position / high_freq_factor;
            for f in inv.iter_mut() {
                let wl = 2.0 * PI / *f as f64;
                let base = if wl > low_wl { *f as f64 / factor } else { *f as f64 };
                let medium = !(wl < high_wl) && !(wl > low_wl);
                let v = if medium {
                    let smooth = (original_max_position / wl - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * base / factor + smooth * base
                } else {
                    base
                };
                *f = v as f32;
            }
            Ok(1.0)
        }
        RopeScaling::Yarn { factor, original_max_position, beta_fast, beta_slow, attention_factor, truncate } => {
            let corr = |r: f64| dim as f64 * (original_max_position / (r * 2.0 * PI)).ln() / (2.0 * theta.ln());
            let (mut low, mut high) = (corr(beta_fast), corr(beta_slow));
            if truncate {
                low = low.floor();
                high = high.ceil();
            }
            low = low.max(0.0);
            high = high.min(dim as f64 - 1.0);
            if low == high {
                high += 0.001;
            }
            for (k, f) in inv.iter_mut().enumerate() {
                let ramp = ((k as f64 - low) / (high - low)).clamp(0.0, 1.0);
                let extrap = 1.0 - ramp;
                let e = *f as f64;
                *f = ((e / factor) * (1.0 - extrap) + e * extrap) as f32;
            }
            let mscale = |s: f64| if s <= 1.0 { 1.0 } else { 0.1 * s.ln() + 1.0 };
            Ok(attention_factor.unwrap_or_else(|| mscale(factor)) as f32)
        }
    }
}

/// Fits rope theta from one head row before and after a half-split rotation at
/// position `p` (CONVENTIONS §1.4): each pair (k, k+d/2) turns by
/// `phi_k = p * theta^(-2k/d)`, so `ln(phi_k / p) = -(2k/d) ln theta`, a line
/// through the origin fitted by least squares over the pairs whose angle has not
/// wrapped (p * inv_freq < pi, which holds for every pair at p = 1). Returns None
/// when the rows carry no usable rotation (zero vectors, p = 0).
pub fn fit_theta(pre: &[f32], post: &[f32], head_dim: usize, p: i64) -> Option<f64> {
    if p <= 0 || pre.len() < head_dim || post.len() < head_dim {
        return None;
    }
    let half = head_dim / 2;
    let (mut sxy, mut sxx) = (0f64, 0f64);
    for k in 1..half {
        let (xa, xb, ya, yb) = (pre[k] as f64, pre[k + half] as f64, post[k] as f64, post[k + half] as f64);
        if xa.hypot(xb) < 1e-6 {
            continue;
        }
        let phi = (xa * yb - xb * ya).atan2(xa * ya + xb * yb);
        if !(phi > 0.0 && phi * 1.0 < std::f64::consts::PI) {
            continue;
        }
        let x = -2.0 * k as f64 / head_dim as f64;
        let y = (phi / p as f64).ln();
        sxy += x * y;
        sxx += x * x;
    }
    (sxx > 0.0).then(|| (sxy / sxx).exp())
}

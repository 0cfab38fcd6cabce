//! Rotation angles per pair, computed the way each reference computes them
//! (CONVENTIONS §1.3 for ggml, §1.4-1.5 for transformers). The two agree in
//! exact arithmetic and differ in f32 rounding, which grows with the position;
//! diagnosis compares a trace against the one its reference used.

use std::f64::consts::PI;

use crate::error::{Error, Result};
use crate::formats::config::RopeScaling;

/// YaRN's magnitude correction `0.1 * ln(s) + 1` (Peng et al. 2023, eq. 8), as
/// transformers' `get_mscale` and ggml's `rope_yarn` both write it.
const YARN_MSCALE_COEF: f64 = 0.1;
/// transformers' `linear_ramp_factor`: widen an empty ramp by this much.
const HF_YARN_EMPTY_RAMP: f64 = 0.001;
/// ggml's `rope_yarn_ramp`: the ramp width is at least this (`MAX(0.001f, high - low)`).
const GGML_YARN_MIN_RAMP: f32 = 0.001;
/// llama.cpp's converter (conversion/gemma.py, Gemma4) stores this frequency
/// divisor for the pairs proportional RoPE leaves unrotated: theta / 1e30 ~ 0.
pub const GGML_UNROTATED_FREQ_FACTOR: f32 = 1e30;

/// `get_mscale(s, m)` of transformers' `_compute_yarn_parameters`.
fn get_mscale(s: f64, m: f64) -> f64 {
    if s <= 1.0 {
        1.0
    } else {
        YARN_MSCALE_COEF * m * s.ln() + 1.0
    }
}

/// The cos/sin factor of yarn in transformers v5: given, else the DeepSeek
/// mscale ratio when both mscales are set (and non-zero: Python truthiness),
/// else `get_mscale(factor)`.
pub fn yarn_attention_factor(factor: f64, attention_factor: Option<f64>, mscale: Option<f64>, mscale_all_dim: Option<f64>) -> f64 {
    match (attention_factor, mscale, mscale_all_dim) {
        (Some(a), _, _) => a,
        (None, Some(m), Some(ma)) if m != 0.0 && ma != 0.0 => get_mscale(factor, m) / get_mscale(factor, ma),
        _ => get_mscale(factor, 1.0),
    }
}

/// `base^(2k/dim)` in f32, as transformers' `base ** (arange(0, dim, 2).float() / dim)`.
fn pos_freq(theta: f64, k: usize, dim: usize) -> f32 {
    let e = (2 * k) as f32 / dim as f32;
    (theta as f32 as f64).powf(e as f64) as f32
}

/// `1 / base^(2k/dim)` for k < n_pairs, as transformers computes it in float32.
pub fn default_inv_freq(theta: f64, dim: usize, n_pairs: usize) -> Vec<f32> {
    (0..n_pairs).map(|k| 1.0f32 / pos_freq(theta, k, dim)).collect()
}

/// Dynamic NTK (`_compute_dynamic_ntk_parameters`): past `max_position` the base
/// grows with the sequence length seen by the call.
#[derive(Clone, Debug)]
pub struct DynamicNtk {
    pub theta: f64,
    pub dim: usize,
    pub factor: f64,
    pub max_position: f64,
}

impl DynamicNtk {
    /// The inverse frequencies for a call whose longest sequence is `seq_len`;
    /// None when it is within `max_position` (the default frequencies apply).
    /// transformers computes the grown base on a 0-d tensor, so in float32:
    /// `base * ((factor*seq_len/max_pos) - (factor-1)) ** (dim/(dim-2))`.
    pub fn inv_freq(&self, seq_len: i64, n_pairs: usize) -> Option<Vec<f32>> {
        if (seq_len as f64) <= self.max_position {
            return None;
        }
        let ratio = (self.factor as f32 * seq_len as f32) / self.max_position as f32 - (self.factor - 1.0) as f32;
        let base = self.theta as f32 * ratio.powf((self.dim as f64 / (self.dim as f64 - 2.0)) as f32);
        Some((0..n_pairs).map(|k| 1.0f32 / base.powf((2 * k) as f32 / self.dim as f32)).collect())
    }
}

/// Applies a transformers scaling rule to `inv` (default frequencies over `dim`)
/// in place; returns the cos/sin factor.
pub fn apply_hf_scaling(inv: &mut [f32], s: &RopeScaling, theta: f64, dim: usize) -> Result<f32> {
    match *s {
        RopeScaling::None | RopeScaling::Dynamic { .. } => Ok(1.0),
        RopeScaling::FreqFactors { ref factors } => {
            check_factors(factors, inv.len())?;
            // ggml: theta_extrap = theta / freq_factor.
            inv.iter_mut().zip(factors).for_each(|(f, d)| *f /= d);
            Ok(1.0)
        }
        RopeScaling::Linear { factor } => {
            inv.iter_mut().for_each(|f| *f /= factor as f32);
            Ok(1.0)
        }
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
            for f in inv.iter_mut() {
                *f = (*f as f64 / llama3_divisor(*f as f64, factor, low_freq_factor, high_freq_factor, original_max_position)) as f32;
            }
            Ok(1.0)
        }
        RopeScaling::Yarn { factor, original_max_position, beta_fast, beta_slow, attention_factor, mscale, mscale_all_dim, truncate } => {
            // find_correction_range, in f64 like the Python floats it uses.
            let corr = |r: f64| dim as f64 * (original_max_position / (r * 2.0 * PI)).ln() / (2.0 * theta.ln());
            let (mut low, mut high) = (corr(beta_fast), corr(beta_slow));
            if truncate {
                low = low.floor();
                high = high.ceil();
            }
            low = low.max(0.0);
            high = high.min(dim as f64 - 1.0);
            if low == high {
                high += HF_YARN_EMPTY_RAMP;
            }
            for (k, f) in inv.iter_mut().enumerate() {
                if *f == 0.0 {
                    continue; // an unrotated pair of the zero-padded layout stays unrotated
                }
                // inv_interp * (1 - extrap) + inv_extrap * extrap, in float32.
                let ramp = ((k as f32 - low as f32) / (high - low) as f32).clamp(0.0, 1.0);
                let extrap = 1.0 - ramp;
                let pf = pos_freq(theta, k, dim);
                let (inv_extrap, inv_interp) = (1.0 / pf, 1.0 / (factor as f32 * pf));
                *f = inv_interp * (1.0 - extrap) + inv_extrap * extrap;
            }
            Ok(yarn_attention_factor(factor, attention_factor, mscale, mscale_all_dim) as f32)
        }
    }
}

/// llama3's per-frequency divisor (HF `_compute_llama3_parameters`; llama.cpp's
/// converter stores the same divisors as `rope_freqs`, CONVENTIONS §1.5).
fn llama3_divisor(inv: f64, factor: f64, low_freq_factor: f64, high_freq_factor: f64, old_ctx: f64) -> f64 {
    let (low_wl, high_wl) = (old_ctx / low_freq_factor, old_ctx / high_freq_factor);
    let wl = 2.0 * PI / inv;
    if wl < high_wl {
        1.0
    } else if wl > low_wl {
        factor
    } else {
        let smooth = (old_ctx / wl - low_freq_factor) / (high_freq_factor - low_freq_factor);
        1.0 / ((1.0 - smooth) / factor + smooth)
    }
}

fn check_factors(factors: &[f32], n_pairs: usize) -> Result<()> {
    if factors.len() < n_pairs {
        return Err(Error::mismatch(format!("{} rope frequency factors for {} rotated pairs", factors.len(), n_pairs)));
    }
    Ok(())
}

/// The op parameters llama.cpp would pass to `ggml_rope_ext` for this
/// configuration, and the kernel's own arithmetic on them (ggml-cpu/ops.cpp).
#[derive(Clone, Debug)]
pub struct GgmlFreqs {
    /// `powf(freq_base, -2.0f/n_dims)`.
    pub theta_scale: f32,
    /// Per-pair divisors of theta (`rope_freqs` / `c` tensor), if any.
    pub freq_factors: Option<Vec<f32>>,
    pub freq_scale: f32,
    pub ext_factor: f32,
    /// YaRN ramp bounds in pairs (`ggml_rope_yarn_corr_dims`).
    pub corr_dims: [f32; 2],
    /// The op's `attn_factor`; the kernel multiplies it by `1 + 0.1 ln(1/freq_scale)` under yarn.
    pub attn_factor: f32,
}

impl GgmlFreqs {
    /// `n_dims` is ggml's rotated span (the op's n_dims); `n_pairs` the pairs that
    /// get frequencies; `rotated_pairs` how many of them really rotate (fewer for
    /// the zero-padded layout, which llama.cpp expresses with 1e30 factors).
    pub fn new(theta: f64, n_dims: usize, n_pairs: usize, rotated_pairs: usize, s: &RopeScaling) -> Result<GgmlFreqs> {
        let freq_base = theta as f32;
        let mut g = GgmlFreqs { theta_scale: freq_base.powf(-2.0f32 / n_dims as f32), freq_factors: None, freq_scale: 1.0, ext_factor: 0.0, corr_dims: [0.0, 0.0], attn_factor: 1.0 };
        match *s {
            RopeScaling::None => {}
            RopeScaling::FreqFactors { ref factors } => {
                check_factors(factors, rotated_pairs)?;
                g.freq_factors = Some(factors.clone());
            }
            // llama.cpp: rope_freq_scale = 1.0f / rope.scaling.factor.
            RopeScaling::Linear { factor } => g.freq_scale = 1.0f32 / factor as f32,
            RopeScaling::Dynamic { .. } => {
                return Err(Error::mismatch("llama.cpp has no dynamic NTK rope scaling (CONVENTIONS §1.5); use the transformers frequency style"));
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
                // The converter's rope_freqs tensor (conversion/llama.py), from the default frequencies.
                let inv = default_inv_freq(theta, n_dims, rotated_pairs);
                g.freq_factors = Some(inv.iter().map(|&f| llama3_divisor(f as f64, factor, low_freq_factor, high_freq_factor, original_max_position) as f32).collect());
            }
            RopeScaling::Yarn { factor, original_max_position, beta_fast, beta_slow, attention_factor, mscale, mscale_all_dim, truncate: _ } => {
                // llama.cpp: freq_scale = 1/factor, ext_factor 1 for yarn, n_ctx_orig = original
                // context; ggml always truncates the correction range (floorf/ceilf).
                g.freq_scale = 1.0f32 / factor as f32;
                g.ext_factor = 1.0;
                g.corr_dims = ggml_yarn_corr_dims(n_dims, original_max_position as i32, freq_base, beta_fast as f32, beta_slow as f32);
                // llama-context.cpp: yarn_attn_factor = mscale / (1 + 0.1 ln factor), cancelling
                // the kernel's own term so the net cos/sin scale is transformers' attention factor.
                let net = yarn_attention_factor(factor, attention_factor, mscale, mscale_all_dim) as f32;
                let f = 1.0f32 / g.freq_scale;
                g.attn_factor = net * (1.0f32 / (1.0f32 + YARN_MSCALE_COEF as f32 * f.ln()));
            }
        }
        if rotated_pairs < n_pairs {
            let mut ff = g.freq_factors.take().unwrap_or_else(|| vec![1.0; rotated_pairs]);
            ff.resize(n_pairs, GGML_UNROTATED_FREQ_FACTOR);
            g.freq_factors = Some(ff);
        }
        Ok(g)
    }

    /// `rope_yarn`: cos and sin of pair `k` whose unscaled angle is `theta_extrap`.
    pub fn cos_sin(&self, theta_extrap: f32, k: usize) -> (f32, f32) {
        let theta_interp = self.freq_scale * theta_extrap;
        let (theta, mscale) = if self.ext_factor != 0.0 {
            let ramp_mix = ggml_yarn_ramp(self.corr_dims, k) * self.ext_factor;
            let mscale = self.attn_factor * (1.0 + YARN_MSCALE_COEF as f32 * (1.0 / self.freq_scale).ln());
            // `theta_interp*(1 - ramp_mix) + theta_extrap*ramp_mix` with the first product fused,
            // as GCC contracts it in ggml's -march=native build: at position 30000 the two
            // roundings differ by hundreds of ulps of the output (tests/rope.rs).
            (theta_interp.mul_add(1.0 - ramp_mix, theta_extrap * ramp_mix), mscale)
        } else {
            (theta_interp, self.attn_factor)
        };
        // f32 cosf/sinf, as the kernel calls them.
        (theta.cos() * mscale, theta.sin() * mscale)
    }

    pub fn freq_factor(&self, k: usize) -> f32 {
        self.freq_factors.as_ref().map_or(1.0, |f| f[k])
    }
}

/// `rope_yarn_ramp`: 1 below `low`, 0 above `high`, in pair units (i0/2 = k).
fn ggml_yarn_ramp(corr: [f32; 2], k: usize) -> f32 {
    let y = (k as f32 - corr[0]) / GGML_YARN_MIN_RAMP.max(corr[1] - corr[0]);
    1.0 - y.clamp(0.0, 1.0)
}

/// `ggml_rope_yarn_corr_dims` (ggml.c), in f32 as ggml computes it.
pub fn ggml_yarn_corr_dims(n_dims: usize, n_ctx_orig: i32, freq_base: f32, beta_fast: f32, beta_slow: f32) -> [f32; 2] {
    let corr = |n_rot: f32| n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln() / (2.0 * freq_base.ln());
    [corr(beta_fast).floor().max(0.0), corr(beta_slow).ceil().min(n_dims as f32 - 1.0)]
}

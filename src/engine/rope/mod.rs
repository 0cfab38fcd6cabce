//! Rotary position embeddings, every convention in one module (CONVENTIONS §1).
//!
//! Three independent choices make a RoPE:
//! - the *pairing* decides which two dims rotate together (`Adjacent` = ggml NORM,
//!   `HalfSplit` = ggml NEOX and transformers' `rotate_half`);
//! - the *partial layout* decides which dims rotate at all (the leading block of
//!   Phi/GPT-NeoX, or the zero-padded half split of proportional RoPE);
//! - the *frequency style* decides how the angles are computed: transformers
//!   (`inv_freq * position` in f32, [`FreqStyle::Transformers`]) or the ggml CPU
//!   kernel (theta iterated `*= theta_scale` in f32, [`FreqStyle::Ggml`]).
//!
//! M-RoPE picks, per pair, which position axis (t, h, w, e) drives it.

mod fit;
mod freqs;

pub use fit::{detect_pairing, fit_theta, PairingCandidate, PairingFit};
pub use freqs::{default_inv_freq, ggml_yarn_corr_dims, yarn_attention_factor, GgmlFreqs, GGML_UNROTATED_FREQ_FACTOR};

use crate::error::{Error, Result};
use crate::formats::config::{Pairing, PartialLayout, RopeConfig, RopeScaling};
use freqs::{apply_hf_scaling, DynamicNtk};

/// Whose arithmetic computes the rotation angles (the rotation itself is the
/// same f32 `x0*cos - x1*sin`, `x0*sin + x1*cos` in both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreqStyle {
    /// transformers: `inv_freq` per pair from `ROPE_INIT_FUNCTIONS`, angle =
    /// `inv_freq * position` in f32, cos/sin times the attention factor.
    /// Interleaved M-RoPE keeps uncovered pairs on the t axis.
    Transformers,
    /// ggml's CPU kernel (ggml-cpu/ops.cpp `ggml_rope_cache_init`): `theta_k = p *
    /// theta_scale^k` by an iterated f32 product, divided by the frequency
    /// factor, blended by `rope_yarn`. Interleaved M-RoPE sends pairs outside
    /// every section span to the e axis (CONVENTIONS §1.3, §1.7).
    Ggml,
}

#[derive(Clone, Debug)]
enum Freqs {
    Transformers { inv_freq: Vec<f32>, attention_factor: f32, dynamic: Option<DynamicNtk> },
    Ggml(GgmlFreqs),
}

#[derive(Clone, Debug)]
pub struct Rope {
    pub pairing: Pairing,
    pub layout: PartialLayout,
    pub head_dim: usize,
    pub rotary_dim: usize,
    pub style: FreqStyle,
    /// M-RoPE sections (pairs per axis t, h, w, e) and whether they interleave.
    pub mrope: Option<([usize; 4], bool)>,
    freqs: Freqs,
}

impl Rope {
    /// transformers' arithmetic: the reference the engine is validated against.
    pub fn new(cfg: &RopeConfig, head_dim: usize) -> Result<Rope> {
        Rope::with_style(cfg, head_dim, FreqStyle::Transformers)
    }

    pub fn with_style(cfg: &RopeConfig, head_dim: usize, style: FreqStyle) -> Result<Rope> {
        let rd = cfg.rotary_dim.value;
        if rd == 0 || rd > head_dim || !rd.is_multiple_of(2) {
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
        if let Some(m) = &cfg.mrope {
            let (s, _) = m.value;
            if s.iter().sum::<usize>() == 0 {
                return Err(Error::mismatch("M-RoPE sections are all zero"));
            }
        }
        let scaling = &cfg.scaling.value;
        let freqs = match style {
            FreqStyle::Transformers => {
                let mut inv_freq = default_inv_freq(theta, dim, n_pairs);
                inv_freq.iter_mut().skip(rd / 2).for_each(|f| *f = 0.0);
                let attention_factor = apply_hf_scaling(&mut inv_freq, scaling, theta, dim)?;
                let dynamic = match *scaling {
                    RopeScaling::Dynamic { factor, max_position } => Some(DynamicNtk { theta, dim, factor, max_position }),
                    _ => None,
                };
                Freqs::Transformers { inv_freq, attention_factor, dynamic }
            }
            FreqStyle::Ggml => Freqs::Ggml(GgmlFreqs::new(theta, dim, n_pairs, rd / 2, scaling)?),
        };
        Ok(Rope { pairing: cfg.pairing.value, layout, head_dim, rotary_dim: rd, style, mrope: cfg.mrope.as_ref().map(|m| m.value), freqs })
    }

    /// The ggml op parameters this rope stands for (ggml style only).
    pub fn ggml_freqs(&self) -> Option<&GgmlFreqs> {
        match &self.freqs {
            Freqs::Ggml(g) => Some(g),
            Freqs::Transformers { .. } => None,
        }
    }

    /// Pairs that get a frequency (all head pairs for the zero-padded layout).
    pub fn n_pairs(&self) -> usize {
        match self.layout {
            PartialLayout::LeadingBlock => self.rotary_dim / 2,
            PartialLayout::HalfSplitZeroPad => self.head_dim / 2,
        }
    }

    /// The (a, b) dims rotated together for pair `k` (pair k has frequency index k).
    #[inline]
    pub fn pair(&self, k: usize) -> (usize, usize) {
        let span = 2 * self.n_pairs();
        match self.pairing {
            Pairing::HalfSplit => (k, k + span / 2),
            Pairing::Adjacent => (2 * k, 2 * k + 1),
        }
    }

    /// Which position axis drives pair `k` (0 = t, 1 = h, 2 = w, 3 = e).
    /// The frequency index is not reset per section (ggml.h, CONVENTIONS §1.3).
    pub fn axis(&self, k: usize) -> usize {
        let Some((s, interleaved)) = self.mrope else { return 0 };
        let sector = k % s.iter().sum::<usize>();
        if interleaved {
            // Qwen3-VL: h on sector%3==1 and w on sector%3==2 inside their spans.
            // Outside every span transformers keeps t (apply_interleaved_mrope starts
            // from t everywhere); ggml's IMROPE falls through to e (§1.7).
            if sector % 3 == 1 && sector < 3 * s[1] {
                1
            } else if sector % 3 == 2 && sector < 3 * s[2] {
                2
            } else if self.style == FreqStyle::Transformers || (sector.is_multiple_of(3) && sector < 3 * s[0]) {
                0
            } else {
                3
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

    /// cos and sin (attention factor included) of every pair at one position,
    /// for a call whose longest sequence is `seq_len` (dynamic NTK only).
    pub fn cos_sin(&self, pos: &[i64; 4], seq_len: i64) -> Vec<(f32, f32)> {
        match &self.freqs {
            Freqs::Transformers { inv_freq, attention_factor, dynamic } => {
                let grown = dynamic.as_ref().and_then(|d| d.inv_freq(seq_len, inv_freq.len()));
                let inv = grown.as_deref().unwrap_or(inv_freq);
                inv.iter()
                    .enumerate()
                    .map(|(k, &f)| {
                        // freqs = inv_freq @ position in f32; cos/sin of that f32 angle.
                        let angle = f * pos[self.axis(k)] as f32;
                        let (s, c) = (angle as f64).sin_cos();
                        (c as f32 * attention_factor, s as f32 * attention_factor)
                    })
                    .collect()
            }
            Freqs::Ggml(g) => {
                // One running theta per axis, each multiplied by theta_scale after every pair.
                let mut theta = pos.map(|p| p as f32);
                (0..self.n_pairs())
                    .map(|k| {
                        let cs = g.cos_sin(theta[self.axis(k)] / g.freq_factor(k), k);
                        theta.iter_mut().for_each(|t| *t *= g.theta_scale);
                        cs
                    })
                    .collect()
            }
        }
    }

    /// Rotates `x` (`[T, H, hd]`) in place as one call of the model:
    /// `positions[t]` holds row t's position on each axis (text: `[p, p, p, 0]`).
    /// The call's sequence length is its largest position + 1, as transformers'
    /// `dynamic_rope_update` takes it (`max(position_ids) + 1`).
    pub fn apply(&self, x: &mut [f32], n_heads: usize, positions: &[[i64; 4]]) {
        self.apply_with_seq_len(x, n_heads, positions, seq_len_of(positions));
    }

    /// As [`Rope::apply`] with the sequence length given (dynamic NTK grows its
    /// base once `seq_len` exceeds `max_position_embeddings`).
    pub fn apply_with_seq_len(&self, x: &mut [f32], n_heads: usize, positions: &[[i64; 4]], seq_len: i64) {
        let hd = self.head_dim;
        assert_eq!(x.len(), positions.len() * n_heads * hd, "rope input is not [T={}, H={n_heads}, hd={hd}]", positions.len());
        for (row, pos) in x.chunks_exact_mut(n_heads * hd).zip(positions) {
            let cs = self.cos_sin(pos, seq_len);
            for v in row.chunks_exact_mut(hd) {
                for (k, &(c, s)) in cs.iter().enumerate() {
                    let (a, b) = self.pair(k);
                    let (xa, xb) = (v[a], v[b]);
                    (v[a], v[b]) = match self.style {
                        // q*cos + rotate_half(q)*sin: separate tensor ops, each rounded.
                        FreqStyle::Transformers => (xa * c - xb * s, xb * c + xa * s),
                        // rotate_pairs' `x0*cos - x1*sin`, `x0*sin + x1*cos` with its first
                        // product fused, as GCC contracts it in a -march=native build.
                        FreqStyle::Ggml => (xa.mul_add(c, -(xb * s)), xa.mul_add(s, xb * c)),
                    };
                }
            }
        }
    }

    /// Rotates a whole trace that was produced by several model calls (`calls[i]`
    /// = `[start, end)` rows; none: one call), replaying transformers' dynamic-NTK state: the
    /// frequencies grow with the longest sequence seen so far and reset once a
    /// call is back under `max_position_embeddings` (`dynamic_frequency_update`).
    pub fn apply_calls(&self, x: &mut [f32], n_heads: usize, positions: &[[i64; 4]], calls: &[[usize; 2]]) {
        let row = n_heads * self.head_dim;
        let max_position = match &self.freqs {
            Freqs::Transformers { dynamic: Some(d), .. } => d.max_position as i64,
            _ => 0,
        };
        if calls.is_empty() {
            return self.apply(x, n_heads, positions);
        }
        let mut cached = max_position;
        for &[s, e] in calls {
            let seq_len = seq_len_of(&positions[s..e]);
            if seq_len > cached {
                cached = seq_len;
            }
            if seq_len < max_position && cached > max_position {
                cached = max_position;
            }
            self.apply_with_seq_len(&mut x[s * row..e * row], n_heads, &positions[s..e], cached.max(seq_len));
        }
    }
}

/// `max(position_ids) + 1` over every axis, as transformers computes it.
pub fn seq_len_of(positions: &[[i64; 4]]) -> i64 {
    positions.iter().flat_map(|p| p.iter()).copied().max().map_or(0, |m| m + 1)
}

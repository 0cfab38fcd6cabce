//! llama.cpp's CPU numerics: activations quantised to the weight type's
//! `vec_dot_type`, then block-by-block integer dot products.

use crate::engine::ops;
use crate::formats::quants;
use crate::formats::tensor::DType;

/// `n` activation rows of `k` elements, quantised for weights of type `w`.
#[derive(Clone, Debug)]
pub struct QActs {
    pub w: DType,
    pub k: usize,
    pub n: usize,
    /// Placeholder representation: the rounded values expanded back to f32.
    rounded: Vec<f32>,
}

/// Quantises `xs` (`[n, k]`) as ggml does before a matmul with weights of type
/// `w`. None when `w` has no integer path here (f32, f16, bf16, ...).
pub fn quantize(w: DType, xs: &[f32], k: usize) -> Option<QActs> {
    if !w.is_quantized() {
        return None;
    }
    let mut rounded = xs.to_vec();
    for r in rounded.chunks_mut(k) {
        ops::round_activations(r, w);
    }
    Some(QActs { w, k, n: xs.len() / k.max(1), rounded })
}

/// `out[i]` = the dot product of weight row `w` (stored bytes of `dtype`) with
/// activation row `i` of `acts`, for `i < out.len()`.
pub fn dot_rows(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32]) {
    dot_rows_ref(dtype, w, acts, out)
}

/// The plain twin.
pub fn dot_rows_ref(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32]) {
    let k = acts.k;
    let mut row = vec![0f32; k];
    quants::dequantize(dtype, w, &mut row);
    for (i, o) in out.iter_mut().enumerate() {
        *o = ops::dot_ref(&acts.rounded[i * k..(i + 1) * k], &row);
    }
}

//! Exact fused kernels: dequantised weight × f32 activation, f32 sums.

use crate::engine::ops;
use crate::formats::quants;
use crate::formats::tensor::DType;

/// Whether `dot_rows` has a fused kernel for `dtype` (others go through the
/// plain twin, which decodes one row into a scratch buffer).
pub fn supported(_dtype: DType) -> bool {
    false
}

/// For one weight row `w` (the stored bytes of `k` elements of `dtype`) and
/// `n = out.len()` activation rows `xs` (`[n, k]`, row-major), writes
/// `out[i] = Σ_j w[j] · xs[i·k + j]`.
pub fn dot_rows(dtype: DType, w: &[u8], xs: &[f32], k: usize, out: &mut [f32]) {
    if let (DType::F32, Ok(row)) = (dtype, bytemuck::try_cast_slice::<u8, f32>(w)) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = ops::dot(&xs[i * k..(i + 1) * k], row);
        }
        return;
    }
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|row| {
        row.resize(k, 0f32);
        quants::dequantize(dtype, w, row);
        for (i, o) in out.iter_mut().enumerate() {
            *o = ops::dot(&xs[i * k..(i + 1) * k], row);
        }
    })
}

/// The plain twin: decode the row with `quants::dequantize`, then `ops::dot_ref`.
pub fn dot_rows_ref(dtype: DType, w: &[u8], xs: &[f32], k: usize, out: &mut [f32]) {
    let mut row = vec![0f32; k];
    quants::dequantize(dtype, w, &mut row);
    for (i, o) in out.iter_mut().enumerate() {
        *o = ops::dot_ref(&xs[i * k..(i + 1) * k], &row);
    }
}

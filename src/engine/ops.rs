//! Plain numeric kernels over row-major f32 slices. Shapes are written `[T, d]`.
//! The fast quantised kernels (speed issue) keep these as their reference twins.

use rayon::prelude::*;

use crate::formats::config::EpsPlacement;
use crate::formats::tensor::{DType, Tensor};

/// Dot product with eight independent f32 accumulators (vectorises; summation
/// order differs from BLAS only in the last bits).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Four dot products of `x0..x3` with the same `w`, each summed in exactly the
/// order `dot` uses (so results are bit-identical to four `dot` calls), with the
/// weight row read once: the prefill fast path.
#[inline]
pub fn dot4(x: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
    let n = w.len() / 8 * 8;
    let mut acc = [[0f32; 8]; 4];
    let mut j = 0;
    while j < n {
        let wv = &w[j..j + 8];
        for (a, xs) in acc.iter_mut().zip(&x) {
            let xv = &xs[j..j + 8];
            for i in 0..8 {
                a[i] += xv[i] * wv[i];
            }
        }
        j += 8;
    }
    let mut out = [0f32; 4];
    for (k, (a, xs)) in acc.iter().zip(&x).enumerate() {
        let mut s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
        for (xv, wv) in xs[n..].iter().zip(&w[n..]) {
            s += xv * wv;
        }
        out[k] = s;
    }
    out
}

/// RMSNorm over rows of `x` ([rows, n]): `x / sqrt(mean(x²) + eps) * (w + offset)`,
/// mean accumulated in f64, the scale applied in f32 as transformers does.
pub fn rms_norm(x: &[f32], w: &[f32], n: usize, eps: f64, placement: EpsPlacement, offset: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (o, r) in out.chunks_mut(n).zip(x.chunks(n)) {
        let ms = r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / n as f64;
        let inv = match placement {
            EpsPlacement::Inside => 1.0 / (ms + eps).sqrt(),
            EpsPlacement::Outside => 1.0 / (ms.sqrt() + eps),
        } as f32;
        for ((o, &v), &g) in o.iter_mut().zip(r).zip(w) {
            *o = (g + offset) * (v * inv);
        }
    }
    out
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Softmax of one row in place (max-subtracted, sum in f64).
pub fn softmax(x: &mut [f32]) {
    let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if !m.is_finite() {
        return;
    }
    let mut s = 0f64;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        s += *v as f64;
    }
    let inv = (1.0 / s) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// A linear layer `y = x Wᵀ + b` over a weight kept in its stored type.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`
    pub w: Tensor,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    pub fn out_dim(&self) -> usize {
        self.w.n_rows()
    }
    pub fn in_dim(&self) -> usize {
        self.w.row_len()
    }

    /// `x` is `[T, in]`; returns `[T, out]`. Each weight row is dequantised once
    /// and reused for every input row; rows are spread over threads.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let (n_in, n_out) = (self.in_dim(), self.out_dim());
        let t = x.len() / n_in;
        // [out, T] first so each thread writes one contiguous chunk, then transpose.
        let mut yt = vec![0f32; n_out * t];
        const ROWS: usize = 16;
        yt.par_chunks_mut(ROWS * t).enumerate().for_each(|(c, chunk)| {
            let mut row = vec![0f32; n_in];
            for (j, ys) in chunk.chunks_mut(t).enumerate() {
                let r = c * ROWS + j;
                let w: &[f32] = if self.w.dtype == DType::F32 {
                    match bytemuck::try_cast_slice(self.w.row_bytes(r)) {
                        Ok(s) => s,
                        Err(_) => {
                            self.w.dequant_row(r, &mut row);
                            &row
                        }
                    }
                } else {
                    self.w.dequant_row(r, &mut row);
                    &row
                };
                let xr = |ti: usize| &x[ti * n_in..(ti + 1) * n_in];
                let mut ti = 0;
                while ti + 4 <= t {
                    let r4 = dot4([xr(ti), xr(ti + 1), xr(ti + 2), xr(ti + 3)], w);
                    ys[ti..ti + 4].copy_from_slice(&r4);
                    ti += 4;
                }
                for (k, y) in ys.iter_mut().enumerate().skip(ti) {
                    *y = dot(xr(k), w);
                }
            }
        });
        let mut y = vec![0f32; n_out * t];
        for o in 0..n_out {
            for ti in 0..t {
                y[ti * n_out + o] = yt[o * t + ti];
            }
        }
        if let Some(b) = &self.bias {
            for row in y.chunks_mut(n_out) {
                for (v, bb) in row.iter_mut().zip(b) {
                    *v += bb;
                }
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot4_is_bit_identical_to_dot() {
        let v = |seed: u32, n: usize| -> Vec<f32> { (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 333.0 - 1.5).collect() };
        for n in [1, 7, 8, 9, 64, 100, 1027] {
            let (a, b, c, d, w) = (v(1, n), v(2, n), v(3, n), v(4, n), v(5, n));
            let r = dot4([&a, &b, &c, &d], &w);
            for (got, x) in r.iter().zip([&a, &b, &c, &d]) {
                assert_eq!(got.to_bits(), dot(x, &w).to_bits(), "n = {n}");
            }
        }
    }
}

//! Prefill: many activation rows times a block of weight rows.
//!
//! A chunk of `NR` weight rows is decoded once (exact ggml values, through
//! `quants::dequantize`) into a panel laid out k-major (`panel[k][j]` is row
//! `j`'s element `k`), then every activation row meets it in an `MR × NR`
//! register tile: per step of `k`, `MR` broadcasts of `x[t][k]` and two loads
//! of the panel feed `2·MR` fused multiply-adds. Decoding is paid once per
//! chunk, not once per activation row.
//!
//! Summation order, the same for every element whatever the batch: `k` is cut
//! into blocks of `KB`; inside a block one fused multiply-add chain runs in
//! ascending `k` from zero, and the block sums are added to the total in order.
//! So a row's result does not depend on how many rows share the call, the plain
//! twin agrees bit for bit, and the rounding error grows like `KB + k/KB`
//! rather than `k` (one long chain measurably lost accuracy: llama-wide's
//! f32 contract against llama.cpp went from 2e-9 to 1e-8 NMSE at L1.attn_out).

use crate::formats::quants;
use crate::formats::tensor::DType;

/// Weight rows per panel (two 8-lane vectors).
pub const NR: usize = 16;
/// Activation rows per register tile.
const MR: usize = 6;
/// Length of one fused multiply-add chain before it is added to the total.
pub const KB: usize = 32;

/// `yt[j·t + i] = Σ_k w_j[k] · xs[i·k_len + k]` for the `rows.len() ≤ NR` weight
/// rows given as stored bytes of `dtype`, and `t = xs.len() / k` activation rows.
/// `yt` is `[rows.len(), t]`. `panel` is scratch, resized here.
pub fn rows_times_acts(dtype: DType, rows: &[&[u8]], xs: &[f32], k: usize, yt: &mut [f32], panel: &mut Vec<f32>) {
    let t = xs.len() / k.max(1);
    fill_panel(dtype, rows, k, panel);
    let mut tile = [0f32; MR * NR];
    let mut i = 0;
    while i < t {
        let m = MR.min(t - i);
        tile_kernel(panel, &xs[i * k..(i + m) * k], k, m, &mut tile);
        for (j, y) in yt.chunks_mut(t).take(rows.len()).enumerate() {
            for r in 0..m {
                y[i + r] = tile[r * NR + j];
            }
        }
        i += m;
    }
}

/// Decodes up to `NR` rows into the k-major panel; missing rows are zero.
fn fill_panel(dtype: DType, rows: &[&[u8]], k: usize, panel: &mut Vec<f32>) {
    panel.clear();
    panel.resize(k * NR, 0.0);
    let mut row = vec![0f32; k];
    for (j, bytes) in rows.iter().enumerate().take(NR) {
        quants::dequantize(dtype, bytes, &mut row);
        for (kk, &v) in row.iter().enumerate() {
            panel[kk * NR + j] = v;
        }
    }
}

/// `tile[r·NR + j] = Σ_k panel[k·NR + j] · x[r·k_len + k]` for `r < m ≤ MR`.
fn tile_kernel(panel: &[f32], x: &[f32], k: usize, m: usize, tile: &mut [f32; MR * NR]) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        // SAFETY: AVX2 and FMA are enabled for this build; the panel holds k·NR
        // values and x holds m·k (asserted), every load stays inside them.
        assert!(panel.len() >= k * NR && x.len() >= m * k && m <= MR);
        unsafe {
            match m {
                6 => tile_avx2::<6>(panel, x, k, tile),
                5 => tile_avx2::<5>(panel, x, k, tile),
                4 => tile_avx2::<4>(panel, x, k, tile),
                3 => tile_avx2::<3>(panel, x, k, tile),
                2 => tile_avx2::<2>(panel, x, k, tile),
                _ => tile_avx2::<1>(panel, x, k, tile),
            }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    tile_ref(panel, x, k, m, tile)
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[inline]
unsafe fn tile_avx2<const M: usize>(panel: &[f32], x: &[f32], k: usize, tile: &mut [f32; MR * NR]) {
    use std::arch::x86_64::*;
    let (pp, px) = (panel.as_ptr(), x.as_ptr());
    let mut sum_lo = [_mm256_setzero_ps(); M];
    let mut sum_hi = [_mm256_setzero_ps(); M];
    let mut k0 = 0;
    while k0 < k {
        let mut lo = [_mm256_setzero_ps(); M];
        let mut hi = [_mm256_setzero_ps(); M];
        for kk in k0..(k0 + KB).min(k) {
            let w0 = _mm256_loadu_ps(pp.add(kk * NR));
            let w1 = _mm256_loadu_ps(pp.add(kk * NR + 8));
            for r in 0..M {
                let xv = _mm256_broadcast_ss(&*px.add(r * k + kk));
                lo[r] = _mm256_fmadd_ps(w0, xv, lo[r]);
                hi[r] = _mm256_fmadd_ps(w1, xv, hi[r]);
            }
        }
        for r in 0..M {
            sum_lo[r] = _mm256_add_ps(sum_lo[r], lo[r]);
            sum_hi[r] = _mm256_add_ps(sum_hi[r], hi[r]);
        }
        k0 += KB;
    }
    for r in 0..M {
        _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR), sum_lo[r]);
        _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR + 8), sum_hi[r]);
    }
}

/// One element in the kernels' order: `KB`-long `mul_add` chains from zero,
/// added to the total in order.
pub fn blocked_dot(w: impl Fn(usize) -> f32, x: &[f32]) -> f32 {
    let mut total = 0f32;
    for (b, xb) in x.chunks(KB).enumerate() {
        let block = xb.iter().enumerate().fold(0f32, |acc, (i, &xv)| w(b * KB + i).mul_add(xv, acc));
        total += block;
    }
    total
}

/// The plain twin of the tile kernel.
pub fn tile_ref(panel: &[f32], x: &[f32], k: usize, m: usize, tile: &mut [f32; MR * NR]) {
    for r in 0..m {
        for j in 0..NR {
            tile[r * NR + j] = blocked_dot(|kk| panel[kk * NR + j], &x[r * k..(r + 1) * k]);
        }
    }
}

/// The plain twin of `rows_times_acts`: dequantise each row, `blocked_dot` per output.
pub fn rows_times_acts_ref(dtype: DType, rows: &[&[u8]], xs: &[f32], k: usize, yt: &mut [f32]) {
    let t = xs.len() / k.max(1);
    let mut row = vec![0f32; k];
    for (j, bytes) in rows.iter().enumerate() {
        quants::dequantize(dtype, bytes, &mut row);
        for i in 0..t {
            yt[j * t + i] = blocked_dot(|kk| row[kk], &xs[i * k..(i + 1) * k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(seed: u32, n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    #[test]
    fn the_tile_kernel_equals_its_twin_bit_for_bit_at_every_batch_size() {
        let k = 100;
        let rows_f32: Vec<Vec<f32>> = (0..13).map(|j| vals(j, k)).collect();
        let rows: Vec<Vec<u8>> = rows_f32.iter().map(|r| bytemuck::cast_slice(r).to_vec()).collect();
        let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let mut panel = Vec::new();
        for t in [1, 2, 5, 6, 7, 13, 64] {
            let xs = vals(100 + t as u32, t * k);
            let (mut fast, mut plain) = (vec![0f32; refs.len() * t], vec![0f32; refs.len() * t]);
            rows_times_acts(DType::F32, &refs, &xs, k, &mut fast, &mut panel);
            rows_times_acts_ref(DType::F32, &refs, &xs, k, &mut plain);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&plain), "t = {t}");
        }
    }

    #[test]
    fn a_rows_result_does_not_depend_on_its_batch() {
        let k = 64;
        let row: Vec<u8> = vals(7, k).iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        let xs = vals(9, 11 * k);
        let mut panel = Vec::new();
        let mut all = vec![0f32; 11];
        rows_times_acts(DType::F16, &[&row], &xs, k, &mut all, &mut panel);
        for i in 0..11 {
            let mut one = [0f32];
            rows_times_acts(DType::F16, &[&row], &xs[i * k..(i + 1) * k], k, &mut one, &mut panel);
            assert_eq!(one[0].to_bits(), all[i].to_bits(), "row {i}");
        }
    }
}

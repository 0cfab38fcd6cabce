//! llama.cpp's CPU numerics: activations quantised to the weight type's
//! `vec_dot_type`, then block-by-block integer dot products.
//!
//! Activations become Q8_0 blocks (32 values, f16 scale; ggml
//! `quantize_row_q8_0_ref`) for the 32-element quant types and Q8_K blocks (256
//! values, f32 scale, sums of 16; `quantize_row_q8_K_ref`) for k-quants.
//!
//! Weights Q8_0, Q4_0 ([`q32`]) and Q4_K, Q5_K, Q6_K ([`kquant`]) have integer
//! kernels; every other type goes through [`dot_rows_dequant`], the f32 dot of
//! the dequantised row with the rounded activations.
//!
//! The one float order (fast kernels and their plain twins alike). For weight
//! block `b` and its activation block, `S_b` is the exact integer sum of
//! (integer weight × sub-block scale) × activation; Q4_K and Q5_K also have
//! `M_b = Σ_i min_i · bsum_i` over the 16-element sub-blocks. With
//! `d = d_w · d_a` and `m = dmin_w · d_a` (f32 products), block `b` goes to
//! lane `b % 8` of eight f32 accumulators by fused multiply-adds:
//! `acc[b % 8] = fma(d, S_b, acc[b % 8])`, then for Q4_K/Q5_K
//! `acc[b % 8] = fma(-m, M_b, acc[b % 8])`; integers become f32 by
//! round-to-nearest-even. The lanes are summed as
//! `((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))`, as in `ops::dot`.

mod kquant;
pub mod packed;
mod q32;

use half::f16;

use crate::engine::ops;
use crate::formats::quants::{self, QK, QK_K};
use crate::formats::tensor::DType;

/// Elements per activation sum (`block_q8_K.bsums`).
const BSUM: usize = 16;
/// The largest quantised activation magnitude (both Q8 formats).
const Q8_MAX: f32 = 127.0;

/// `n` activation rows of `k` elements, quantised for weights of type `w`.
#[derive(Clone, Debug)]
pub struct QActs {
    pub w: DType,
    pub k: usize,
    pub n: usize,
    /// Elements per activation block: `QK` (Q8_0) or `QK_K` (Q8_K).
    block: usize,
    /// `[n, k]` quantised values.
    qs: Vec<i8>,
    /// `[n, k / block]` block scales as ggml's dot reads them (Q8_0's f16 widened).
    d: Vec<f32>,
    /// `[n, k / 16]` sums of 16 consecutive `qs` (Q8_K's `bsums`; kept for Q8_0 too).
    bsums: Vec<i16>,
    /// `[n, k]` `qs · d`, only for weights without an integer kernel.
    rounded: Vec<f32>,
}

impl QActs {
    /// Row `i`'s values, scales and sums.
    fn row(&self, i: usize) -> (&[i8], &[f32], &[i16]) {
        let (k, nb) = (self.k, self.k / self.block);
        (&self.qs[i * k..(i + 1) * k], &self.d[i * nb..(i + 1) * nb], &self.bsums[i * k / BSUM..(i + 1) * k / BSUM])
    }

    /// The rounded activations `qs · d` (`[n, k]`): what `ops::round_activations` gives.
    pub fn expanded(&self) -> Vec<f32> {
        let d = self.d.iter().flat_map(|&d| std::iter::repeat_n(d, self.block));
        self.qs.iter().zip(d).map(|(&q, d)| q as f32 * d).collect()
    }
}

/// Whether `dot_rows` has an integer kernel for weights of type `w`.
pub fn has_kernel(w: DType) -> bool {
    matches!(w, DType::Q8_0 | DType::Q4_0 | DType::Q4_K | DType::Q5_K | DType::Q6_K)
}

/// Quantises `xs` (`[n, k]`) as ggml does before a matmul with weights of type
/// `w`. None when `w` has no integer path here (f32, f16, bf16, ...) or `k` is
/// not a whole number of blocks.
pub fn quantize(w: DType, xs: &[f32], k: usize) -> Option<QActs> {
    let block = match w {
        DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => QK,
        DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => QK_K,
        _ => return None,
    };
    if k == 0 || !k.is_multiple_of(block) {
        return None;
    }
    let n = xs.len() / k;
    let mut qs = vec![0i8; n * k];
    let mut d = vec![0f32; n * k / block];
    let mut bsums = vec![0i16; n * k / BSUM];
    // One activation row: its blocks in order.
    let row = |x: &[f32], q: &mut [i8], d: &mut [f32], bsums: &mut [i16]| {
        for ((x, q), d) in x.chunks_exact(block).zip(q.chunks_exact_mut(block)).zip(d.iter_mut()) {
            *d = if block == QK { quantize_q8_0(x, q) } else { quantize_q8_k(x, q) };
        }
        for (s, c) in bsums.iter_mut().zip(q.chunks_exact(BSUM)) {
            *s = c.iter().map(|&q| q as i16).sum();
        }
    };
    if n > 1 {
        // A prefill's rows on all threads (alone, quantising was 7% of a
        // one-thread Q4_K_M prefill, and it held the other thread waiting).
        use rayon::prelude::*;
        let (nb, ns) = (k / block, k / BSUM);
        xs.par_chunks(k).zip(qs.par_chunks_mut(k)).zip(d.par_chunks_mut(nb)).zip(bsums.par_chunks_mut(ns)).for_each(|(((x, q), d), b)| row(x, q, d, b));
    } else {
        row(xs, &mut qs, &mut d, &mut bsums);
    }
    let mut acts = QActs { w, k, n, block, qs, d, bsums, rounded: Vec::new() };
    if !has_kernel(w) {
        acts.rounded = acts.expanded();
    }
    Some(acts)
}

/// ggml `quantize_row_q8_0_ref` for one block: `d = amax / 127`,
/// `q = roundf(x / d)` (half away from zero); returns `d` rounded to f16.
fn quantize_q8_0(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / Q8_MAX;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    f16::from_f32(d).to_f32()
}

/// ggml `quantize_row_q8_K_ref` for one block: `iscale = -127 / max` with `max`
/// the signed value of largest magnitude, `q = min(nearest_int(iscale·x), 127)`
/// (half to even); returns `d = 1 / iscale` (0 for an all-zero block).
fn quantize_q8_k(x: &[f32], q: &mut [i8]) -> f32 {
    // ggml scans for the first element of largest magnitude; the same
    // element, found as the largest magnitude (eight lanes, so it vectorises;
    // NaNs lose every comparison, as in the scan) and then its first holder.
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            *m = if v.abs() > *m { v.abs() } else { *m };
        }
    }
    let amax = lanes.iter().chain(rest).fold(0f32, |a, &m| if m.abs() > a { m.abs() } else { a });
    let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = -Q8_MAX / max;
    // |iscale · v| <= 127 (a NaN becomes 127 at `min`), so an i32 holds it.
    let one = |v: f32| (iscale * v).round_ties_even().min(Q8_MAX) as i32;
    let mut qc = q.chunks_exact_mut(8);
    for (q, c) in (&mut qc).zip(x.chunks_exact(8)) {
        // Eight at a time through i32, so the conversions vectorise.
        let v: [i32; 8] = std::array::from_fn(|l| one(c[l]));
        for (q, v) in q.iter_mut().zip(v) {
            *q = v as i8;
        }
    }
    for (q, &v) in qc.into_remainder().iter_mut().zip(x.chunks_exact(8).remainder()) {
        *q = one(v) as i8;
    }
    1.0 / iscale
}

/// `out[j·n + i]` = the dot product of weight row `ws[j]` (stored bytes of
/// `dtype`) with activation row `i` of `acts`, for `i < n = out.len() / ws.len()`.
/// Several weight rows per call, so the dispatch is paid once for them.
/// `next` holds the weight rows after the last of `ws` (or none): with one
/// activation row, the row `AHEAD` places on is asked for while one is read
/// (a hint; results never depend on it).
pub fn dot_rows(dtype: DType, ws: &[&[u8]], acts: &QActs, out: &mut [f32], next: &[&[u8]]) {
    dot_rows_with(dtype, ws, acts, out, has_vnni(), next)
}

/// `dot_rows`, with the AVX-512 VNNI kernels used where `vnni` and the CPU has them (tests run both).
fn dot_rows_with(dtype: DType, ws: &[&[u8]], acts: &QActs, out: &mut [f32], vnni: bool, next: &[&[u8]]) {
    if ws.is_empty() {
        return;
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    if has_kernel(dtype) {
        if vnni && has_vnni() {
            // SAFETY: the CPU has AVX-512 VNNI and VL (checked at run time).
            unsafe { dot_rows_vnni(dtype, ws, acts, out, next) }
        } else {
            dot_rows_isa::<false>(dtype, ws, acts, out, next)
        }
        return;
    }
    let _ = (vnni, next);
    let n = out.len() / ws.len();
    for (w, o) in ws.iter().zip(out.chunks_exact_mut(n)) {
        dot_rows_ref(dtype, w, acts, o);
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[target_feature(enable = "avx512vnni,avx512vl")]
unsafe fn dot_rows_vnni(dtype: DType, ws: &[&[u8]], acts: &QActs, out: &mut [f32], next: &[&[u8]]) {
    dot_rows_isa::<true>(dtype, ws, acts, out, next)
}

/// How many rows ahead of the one being read a one-row call prefetches into
/// L1 (`AHEAD`) and into L2 (`FAR`: a few KiB on, across the page
/// boundaries where the hardware's own streams stop).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
const AHEAD: usize = 2;
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
const FAR: usize = 5;

/// How one-row calls ask for the weights they will read next (hints;
/// results never depend on them), by CPU vendor, each as measured on this
/// project's machines (2026-12-02/03, interleaved runs of `parity bench
/// --set activation_rounding=llamacpp`):
///
/// - Intel (Xeon): the row `AHEAD` places on into L1 and the one `FAR`
///   places on into L2, each asked for whole before a row is read (the near
///   one +5% for Q8_0 and Q4_K_M, 6 of 6 one-thread pairs, with the far one
///   in place).
/// - AMD (Zen 4): for k-quants, each block asks for the bytes
///   `kquant::avx2::STREAM_AHEAD` past it instead; Q8_0 and Q4_0 keep the far
///   row. A perf profile of a one-thread Q4_K_M decode had a fifth of its
///   samples on the far row's burst of prefetches; a near row lost there too
///   (8 of 10 pairs for Q8_0, 7 of 10 for Q4_K_M, one thread).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
fn is_amd() -> bool {
    use std::sync::OnceLock;
    static AMD: OnceLock<bool> = OnceLock::new();
    *AMD.get_or_init(|| {
        let id = std::arch::x86_64::__cpuid(0);
        let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
        vendor == b"AuthenticAMD"
    })
}

/// The integer kernels, compiled once for AVX2 and once with AVX-512 VNNI.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[inline(always)]
fn dot_rows_isa<const VNNI: bool>(dtype: DType, ws: &[&[u8]], acts: &QActs, out: &mut [f32], next: &[&[u8]]) {
    // Plain loops: closures here would not be inlined with the VNNI features.
    let n = out.len() / ws.len();
    let k_quant = kquant::rows8::takes(dtype, n);
    if VNNI && (k_quant || q32::rows8::takes(dtype, n)) {
        // With many activation rows, whole groups of sixteen weight rows in
        // 512 bits; the rest (and short batches) eight at a time.
        let wide = if n < kquant::rows16::FROM_ROWS { 0 } else { ws.len() / kquant::rows16::LANES * kquant::rows16::LANES };
        let (w16, w8) = ws.split_at(wide);
        let (o16, o8) = out.split_at_mut(wide * n);
        // SAFETY: VNNI is only true where the caller checked the CPU (AVX-512 F,
        // BW, VL and VNNI, see has_vnni) and enabled the features.
        unsafe {
            match (k_quant, w16.is_empty()) {
                (true, false) => kquant::rows16::dot_rows(dtype, w16, acts, o16),
                (false, false) => q32::rows16::dot_rows(dtype, w16, acts, o16),
                _ => {}
            }
            match (k_quant, w8.is_empty()) {
                (true, false) => kquant::rows8::dot_rows(dtype, w8, acts, o8),
                (false, false) => q32::rows8::dot_rows(dtype, w8, acts, o8),
                _ => {}
            }
        }
        return;
    }
    // How weights ahead are asked for (see `is_amd`).
    let (k_blocks, amd) = (!matches!(dtype, DType::Q8_0 | DType::Q4_0), is_amd());
    let stream = n == 1 && k_blocks && amd;
    for (j, (w, o)) in ws.iter().zip(out.chunks_exact_mut(n)).enumerate() {
        if n == 1 && !amd {
            let ahead = ws.get(j + AHEAD).or_else(|| next.get(j + AHEAD - ws.len()));
            super::gemm::prefetch(ahead.copied().unwrap_or(&[]));
        }
        if n == 1 && !stream {
            let far = ws.get(j + FAR).or_else(|| next.get(j + FAR - ws.len()));
            super::gemm::prefetch_l2(far.copied().unwrap_or(&[]));
        }
        if k_blocks {
            kquant::dot_rows::<VNNI>(dtype, w, acts, o, stream)
        } else {
            q32::dot_rows::<VNNI>(dtype, w, acts, o)
        }
    }
}

/// Whether this CPU has AVX-512 VNNI and VL (and AVX-512 is not turned off
/// with `PARITY_NO_AVX512`, see `decode::has_avx512`), asked once.
fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| super::decode::has_avx512() && std::arch::is_x86_feature_detected!("avx512vnni") && std::arch::is_x86_feature_detected!("avx512vl"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The plain twin: integer sums element by element, the same float order.
pub fn dot_rows_ref(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32]) {
    match dtype {
        DType::Q8_0 | DType::Q4_0 => q32::dot_rows_ref(dtype, w, acts, out),
        DType::Q4_K | DType::Q5_K | DType::Q6_K => kquant::dot_rows_ref(dtype, w, acts, out),
        _ => dot_rows_dequant(dtype, w, &acts.rounded, acts.k, out),
    }
}

/// Weights without an integer kernel (and the accuracy reference): the
/// dequantised row times the rounded activations `xs` (`[n, k]`), `ops::dot_ref`.
pub fn dot_rows_dequant(dtype: DType, w: &[u8], xs: &[f32], k: usize, out: &mut [f32]) {
    let mut row = vec![0f32; k];
    quants::dequantize(dtype, w, &mut row);
    for (i, o) in out.iter_mut().enumerate() {
        *o = ops::dot_ref(&xs[i * k..(i + 1) * k], &row);
    }
}

/// Adds block `b`'s terms to its lane (see the module comment): `d` and
/// `m` are the combined scales, `s` and `min` the integer sums.
#[inline(always)]
fn accumulate(lanes: &mut [f32; 8], b: usize, d: f32, s: i32, min: Option<(f32, i32)>) {
    let l = &mut lanes[b % 8];
    *l = d.mul_add(s as f32, *l);
    if let Some((m, ms)) = min {
        *l = (-m).mul_add(ms as f32, *l);
    }
}

/// A weight row viewed as blocks `B` (alignment 1, so only a short tail can be left over).
pub(super) fn blocks_of<B: bytemuck::Pod>(w: &[u8]) -> &[B] {
    let n = w.len() / size_of::<B>();
    bytemuck::cast_slice(&w[..n * size_of::<B>()])
}

/// The lanes summed in the fixed tree.
#[inline(always)]
fn lane_tree(l: &[f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

#[cfg(test)]
mod tests;

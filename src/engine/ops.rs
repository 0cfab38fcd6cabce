//! Plain numeric kernels over row-major f32 slices. Shapes are written `[T, d]`.
//! The fast quantised kernels (speed issue) keep these as their reference twins.

use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use crate::engine::kernels::q8act::packed as q8act_packed;
use crate::formats::config::EpsPlacement;
use crate::formats::tensor::{DType, Tensor};

/// `a · b` in one fixed summation order, whatever the CPU: four 8-lane
/// accumulators take consecutive 8-element groups in turn (group g goes to
/// accumulator g % 4), leftover whole groups go to accumulator 0, the four are
/// summed as (0+1)+(2+3), the 8 lanes as ((0+4)+(1+5))+((2+6)+(3+7)), then the
/// tail is added in order. Products are rounded before each add (never fused),
/// so the AVX2 kernel and its plain twin `dot_ref` agree bit for bit.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    {
        // SAFETY: AVX2 is enabled for this build (target_feature cfg); loads are unaligned.
        unsafe { dot_avx2(a, b) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    {
        dot_ref(a, b)
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[inline]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut j = 0;
    while j + 32 <= n {
        for (v, accv) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pa.add(j + 8 * v));
            let y = _mm256_loadu_ps(pb.add(j + 8 * v));
            *accv = _mm256_add_ps(*accv, _mm256_mul_ps(x, y));
        }
        j += 32;
    }
    while j + 8 <= n {
        acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(_mm256_loadu_ps(pa.add(j)), _mm256_loadu_ps(pb.add(j))));
        j += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut l = [0f32; 8];
    _mm256_storeu_ps(l.as_mut_ptr(), v);
    let mut s = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
    while j < n {
        s += *pa.add(j) * *pb.add(j);
        j += 1;
    }
    s
}

/// The plain twin of `dot`: the same order, element by element.
pub fn dot_ref(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [[0f32; 8]; 4];
    let mut j = 0;
    while j + 32 <= n {
        for (v, accv) in acc.iter_mut().enumerate() {
            for i in 0..8 {
                accv[i] += a[j + 8 * v + i] * b[j + 8 * v + i];
            }
        }
        j += 32;
    }
    while j + 8 <= n {
        for i in 0..8 {
            acc[0][i] += a[j + i] * b[j + i];
        }
        j += 8;
    }
    let l: Vec<f32> = (0..8).map(|i| (acc[0][i] + acc[1][i]) + (acc[2][i] + acc[3][i])).collect();
    let mut s = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
    while j < n {
        s += a[j] * b[j];
        j += 1;
    }
    s
}

/// RMSNorm over rows of `x` ([rows, n]): `x / sqrt(mean(x²) + eps) * (w + offset)`,
/// mean accumulated in f64, the scale applied in f32 as transformers does.
pub fn rms_norm(x: &[f32], w: &[f32], n: usize, eps: f64, placement: EpsPlacement, offset: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let n = n.max(1);
    let row = |(o, r): (&mut [f32], &[f32])| {
        let ms = r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / n as f64;
        let inv = match placement {
            EpsPlacement::Inside => 1.0 / (ms + eps).sqrt(),
            EpsPlacement::Outside => 1.0 / (ms.sqrt() + eps),
        } as f32;
        for ((o, &v), &g) in o.iter_mut().zip(r).zip(w) {
            *o = (g + offset) * (v * inv);
        }
    };
    if x.len() >= PAR_ELEMENTS {
        // A prefill's rows on all threads (each row alone, as below).
        out.par_chunks_mut(n).zip(x.par_chunks(n)).with_min_len(PAR_ELEMENTS / 4 / n + 1).for_each(row);
    } else {
        out.chunks_mut(n).zip(x.chunks(n)).for_each(row);
    }
    out
}

/// Element-wise work on at least this many elements (a prefill's, not a
/// decode step's) is spread over the threads.
pub const PAR_ELEMENTS: usize = 1 << 14;

/// Fits RMSNorm's eps from input rows `x`, output rows `y` and the weight `w`
/// (eps inside the square root): on every element `w x / y = sqrt(mean(x²) + eps)`,
/// so each row gives `eps = mean((w x / y)²) - mean(x²)`. f32 outputs resolve eps
/// only down to ~1e-7 of `mean(x²)`, so the rows with the smallest mean square
/// (a quarter of them) are averaged. None when no element is usable.
pub fn fit_rms_eps(x: &[f32], y: &[f32], w: &[f32], offset: f32, n: usize) -> Option<f64> {
    let mut per_row: Vec<(f64, f64)> = x
        .chunks(n)
        .zip(y.chunks(n))
        .filter_map(|(xr, yr)| {
            let ms = xr.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
            let (mut s, mut k) = (0f64, 0usize);
            for ((&xv, &yv), &wv) in xr.iter().zip(yr).zip(w) {
                let g = (wv + offset) as f64 * xv as f64;
                if yv.abs() > 1e-12 && g.abs() > 1e-12 {
                    s += (g / yv as f64).powi(2);
                    k += 1;
                }
            }
            (k > 0).then(|| (ms, s / k as f64 - ms))
        })
        .collect();
    if per_row.is_empty() {
        return None;
    }
    per_row.sort_by(|a, b| a.0.total_cmp(&b.0));
    let take = (per_row.len() / 4).max(1);
    Some(per_row[..take].iter().map(|r| r.1).sum::<f64>() / take as f64)
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

/// Rounds activation rows as ggml's CPU matmul does before a dot product with a
/// weight of type `w` (its `vec_dot_type`): to f16 or bf16 for those weights, to
/// Q8_0 blocks of 32 (f16 scale, `quantize_row_q8_0_ref`) for the 32-element
/// quant types, to Q8_K blocks of 256 (f32 scale `max / -127`,
/// `quantize_row_q8_K_ref`) for k-quants. The quantised values are expanded back
/// to f32, so the following f32 dot sees what llama.cpp's integer dot sees.
pub fn round_activations(x: &mut [f32], w: DType) {
    use half::{bf16, f16};
    match w {
        DType::F16 => x.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32()),
        DType::BF16 => x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32()),
        DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => {
            for b in x.chunks_mut(32) {
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let d16 = f16::from_f32(d).to_f32();
                b.iter_mut().for_each(|v| *v = (*v * id).round() * d16);
            }
        }
        DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => {
            for b in x.chunks_mut(256) {
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in b.iter() {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                if amax == 0.0 {
                    b.fill(0.0);
                    continue;
                }
                let iscale = -127.0 / max;
                let d = 1.0 / iscale;
                b.iter_mut().for_each(|v| *v = ((iscale * *v).round_ties_even().min(127.0)) * d);
            }
        }
        _ => {}
    }
}

/// A `[T, out]` output written by several tasks at once, each to its own
/// columns (`put`).
struct Columns(*mut f32, usize);

// SAFETY: tasks write disjoint columns (each its own weight rows), and the
// buffer outlives the parallel loop that writes it.
unsafe impl Sync for Columns {}

impl Columns {
    /// Writes a task's `[n, t]` block (`block[j·t + i]`) to columns
    /// `first..first + n` of the `[t, n_out]` output.
    fn put(&self, block: &[f32], first: usize, n: usize, n_out: usize, t: usize) {
        assert!(first + n <= n_out && t * n_out <= self.1 && block.len() >= n * t);
        for i in 0..t {
            for j in 0..n {
                // SAFETY: in bounds (asserted), and no other task writes
                // columns first..first + n (see `Sync` above).
                unsafe { *self.0.add(i * n_out + first + j) = block[j * t + i] };
            }
        }
    }
}

/// A linear layer `y = x Wᵀ + b` over a weight kept in its stored type.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`
    pub w: Tensor,
    pub bias: Option<Vec<f32>>,
    /// Round the input as llama.cpp's matmul does for this weight type (a setting).
    pub round_input: bool,
    /// The weight laid out again for the integer kernels (see [`Linear::pack`]):
    /// made at load, or at the first call with `pack_on_use`.
    packed: OnceLock<Arc<q8act_packed::PackedQ4K>>,
    /// Lay the weight out at its first call rather than at load (an MoE
    /// expert: only the experts some token selects are ever read).
    pack_on_use: bool,
}

impl Linear {
    /// A layer over `w` in its stored type, exact numerics.
    pub fn new(w: Tensor, bias: Option<Vec<f32>>) -> Linear {
        Linear { w, bias, round_input: false, packed: OnceLock::new(), pack_on_use: false }
    }

    /// With llama.cpp's numerics (`round_input`), lays out a Q4_K weight
    /// again, eight rows side by side, where the CPU runs that kernel
    /// (`q8act::packed`: the in-place kernel's unpacking was the limit of a
    /// decode step), and lets the mapped file's pages of the weight go. The
    /// results are bit for bit those of the in-place kernel. Nothing happens
    /// for other types, shapes or CPUs.
    pub fn pack(&mut self) {
        if self.can_pack() {
            let _ = self.packed.get_or_init(|| self.laid_out(true));
        }
    }

    /// As [`Linear::pack`], but at the layer's first call: a weight that is
    /// never called (an expert no token selects) is never read.
    pub fn pack_on_first_use(&mut self) {
        self.pack_on_use = self.can_pack();
    }

    /// Bytes [`Linear::pack`] would lay out again (0 where it does nothing).
    pub fn packable_bytes(&self) -> usize {
        if self.can_pack() {
            self.w.bytes().len()
        } else {
            0
        }
    }

    fn can_pack(&self) -> bool {
        self.round_input && q8act_packed::packs(self.w.dtype, self.out_dim(), self.in_dim())
    }

    fn laid_out(&self, on_threads: bool) -> Arc<q8act_packed::PackedQ4K> {
        let p = Arc::new(q8act_packed::pack(&self.w.row_view(), self.out_dim(), self.in_dim(), on_threads));
        self.w.release_pages();
        p
    }

    /// The packed layout, made now if this layer packs on first use.
    pub fn packed(&self) -> Option<&q8act_packed::PackedQ4K> {
        match self.packed.get() {
            Some(p) => Some(p),
            None if self.pack_on_use => Some(self.packed.get_or_init(|| self.laid_out(false))),
            None => None,
        }
    }

    pub fn out_dim(&self) -> usize {
        self.w.n_rows()
    }
    pub fn in_dim(&self) -> usize {
        self.w.row_len()
    }

    /// `x` is `[T, in]`; returns `[T, out]`. Weight rows are read in their
    /// stored type by `engine::kernels`, each row once for all input rows;
    /// rows are spread over threads.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let [y] = Linear::forward_all([self], x);
        y
    }

    /// Several layers over the same input `x` (`[T, in]`, every layer's
    /// `in_dim`), as one parallel loop over all their weight rows: one
    /// dispatch to the threads instead of one per layer (a decode step is
    /// made of short matmuls, where the hand-over is a visible share), and
    /// the input rounded or quantised once per weight type. Each result is
    /// bit for bit what `forward` gives.
    pub fn forward_all<const N: usize>(ls: [&Linear; N], x: &[f32]) -> [Vec<f32>; N] {
        use crate::engine::kernels::{gemm, q8act};
        // Weight rows per task, for both kernel families.
        const ROWS: usize = gemm::NR;
        let n_in = ls.first().map_or(1, |l| l.in_dim()).max(1);
        assert!(ls.iter().all(|l| l.in_dim() == n_in), "layers run together share their input width");
        let t = x.len() / n_in;
        // The input each layer's kernel reads, made once per weight type:
        // quantised (integer kernels), or f32 rows copied to line boundaries
        // (rounded as llama.cpp rounds them, or exact and merely aligned),
        // or `x` itself.
        let mut inputs: Vec<(DType, Option<q8act::QActs>, Option<gemm::OnLines>)> = Vec::new();
        let mut which = [0usize; N];
        for (w, l) in which.iter_mut().zip(&ls) {
            let key = if l.round_input { l.w.dtype } else { DType::F32 };
            *w = inputs.iter().position(|(d, ..)| *d == key).unwrap_or_else(|| {
                let acts = if l.round_input { q8act::quantize(key, x, n_in) } else { None };
                let floats = if l.round_input && acts.is_none() {
                    // llama.cpp's numerics for weights without an integer path (f16, bf16).
                    let mut r = gemm::OnLines::copy_of(x);
                    r.chunks_mut(n_in).for_each(|row| round_activations(row, key));
                    Some(r)
                } else if acts.is_none() && t > 1 && !gemm::OnLines::is_on_lines(x) {
                    // Several rows through the exact tiles: their broadcasts
                    // are faster from line boundaries than the cost of a copy.
                    Some(gemm::OnLines::copy_of(x))
                } else {
                    None
                };
                inputs.push((key, acts, floats));
                inputs.len() - 1
            });
        }
        // With several input rows each task turns its own [rows, T] block
        // while it is in cache and writes its columns of [T, out] directly
        // (measured by timers: a separate pass turning [out, T] took 24 ms of
        // an exact F16 prefill of 64 tokens, besides faulting in a second
        // fresh buffer). With one, [out, T] is [T, out].
        let direct = t > 1;
        let mut outs: [Vec<f32>; N] = std::array::from_fn(|i| vec![0f32; ls[i].out_dim() * t]);
        let columns: [Columns; N] = std::array::from_fn(|i| Columns(outs[i].as_mut_ptr(), outs[i].len()));
        let mut tasks: Vec<(usize, usize, Option<&mut [f32]>)> = Vec::new();
        for (li, y) in outs.iter_mut().enumerate() {
            if direct {
                tasks.extend((0..ls[li].out_dim()).step_by(ROWS).map(|first| (li, first, None)));
            } else {
                tasks.extend(y.chunks_mut(ROWS * t.max(1)).enumerate().map(|(c, chunk)| (li, c * ROWS, Some(chunk))));
            }
        }
        let rows: [_; N] = std::array::from_fn(|i| ls[i].w.row_view());
        // Made here, once, before the tasks (an expert's first call lays it out).
        let packed: [_; N] = std::array::from_fn(|i| ls[i].packed());
        let columns = &columns;
        tasks.into_par_iter().for_each_init(
            || (gemm::Scratch::default(), Vec::new()),
            |(scratch, block), (li, first, chunk)| {
                let (l, w, (_, acts, floats)) = (ls[li], rows[li], &inputs[which[li]]);
                #[cfg_attr(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c")), allow(unused_variables))]
                let packed = packed[li];
                let (dtype, n_out) = (l.w.dtype, l.out_dim());
                let n = chunk.as_ref().map_or((n_out - first).min(ROWS), |c| c.len() / t.max(1));
                let ws: [&[u8]; ROWS] = std::array::from_fn(|j| w.row((first + j).min(n_out - 1)));
                // The rows of the following chunk: the ones the kernels prefetch past their own.
                let n_next = n_out.saturating_sub(first + ROWS).min(ROWS);
                let next: [&[u8]; ROWS] = std::array::from_fn(|j| if j < n_next { w.row(first + ROWS + j) } else { &[] });
                let xs = floats.as_deref().unwrap_or(x);
                let mut dot_rows = |out: &mut [f32]| match acts {
                    // llama.cpp's numerics: integer block dot products, from
                    // the layout made at load where there is one.
                    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
                    Some(acts) if packed.is_some() => q8act::packed::dot_rows(packed.expect("checked"), first, acts, out),
                    Some(acts) => q8act::dot_rows(dtype, &ws[..n], acts, out, &next[..n_next]),
                    // Exact numerics: the rows decoded, every input row through them.
                    None => gemm::rows_times_acts(dtype, &ws[..n], xs, n_in, out, scratch, &next[..n_next]),
                };
                match chunk {
                    Some(chunk) => dot_rows(chunk),
                    None => {
                        block.resize(n * t, 0.0);
                        dot_rows(block);
                        columns[li].put(block, first, n, n_out, t);
                    }
                }
            },
        );
        let mut i = 0;
        outs.map(|y| {
            let y = ls[i].add_bias(y);
            i += 1;
            y
        })
    }

    fn add_bias(&self, mut y: Vec<f32>) -> Vec<f32> {
        let n_out = self.out_dim();
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
    fn dot_is_bit_identical_to_its_plain_twin() {
        let v = |seed: u32, n: usize| -> Vec<f32> { (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 333.0 - 1.5).collect() };
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 40, 64, 100, 1027, 4096] {
            let (a, b) = (v(1, n), v(2, n));
            assert_eq!(dot(&a, &b).to_bits(), dot_ref(&a, &b).to_bits(), "n = {n}");
        }
    }

    #[test]
    fn rms_norm_of_many_rows_is_each_row_normed_alone() {
        // Past PAR_ELEMENTS the rows run on all threads: each must come out
        // as it does alone (the serial path).
        let n = 128;
        let rows = PAR_ELEMENTS / n + 3;
        let x: Vec<f32> = (0..rows * n).map(|i| ((i * 7919) % 1013) as f32 / 300.0 - 1.7).collect();
        let w: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 / n as f32).collect();
        for placement in [EpsPlacement::Inside, EpsPlacement::Outside] {
            let all = rms_norm(&x, &w, n, 1e-6, placement, 0.25);
            for (r, got) in all.chunks(n).enumerate() {
                let alone = rms_norm(&x[r * n..(r + 1) * n], &w, n, 1e-6, placement, 0.25);
                assert!(got.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "{placement:?} row {r}");
            }
        }
    }

    #[test]
    fn a_packed_q4_k_layer_gives_the_in_place_kernel_bit_for_bit() {
        // Linear::pack (llama.cpp numerics, where the CPU runs the packed
        // kernel): decode and prefill, tasks of whole groups and a short last one.
        use crate::engine::kernels::decode::synthetic_blocks;
        use crate::formats::tensor::Backing;
        let (k, rows) = (512, 40);
        let raw = synthetic_blocks(DType::Q4_K, rows * k / 256, 9, false);
        let n = raw.len();
        let w = Tensor::new("w", DType::Q4_K, vec![rows, k], Backing::Owned(Arc::new(raw)), 0..n).unwrap();
        let plain = Linear { round_input: true, ..Linear::new(w.clone(), None) };
        let mut packed = plain.clone();
        packed.pack();
        if packed.packed().is_none() {
            eprintln!("no packed kernel on this CPU or build");
            return;
        }
        // An expert's layer is laid out at its first call, not before.
        let mut on_use = plain.clone();
        on_use.pack_on_first_use();
        assert!(on_use.packed.get().is_none(), "laid out before its first call");
        for t in [1, 2, 9] {
            let x: Vec<f32> = (0..t * k).map(|i| ((i * 7919) % 1013) as f32 / 300.0 - 1.7).collect();
            let (a, b, c) = (plain.forward(&x), packed.forward(&x), on_use.forward(&x));
            assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()), "t = {t}");
            assert!(a.iter().zip(&c).all(|(a, c)| a.to_bits() == c.to_bits()), "packed on use, t = {t}");
            assert!(on_use.packed.get().is_some(), "not laid out by its first call");
        }
    }

    #[test]
    fn every_input_row_comes_out_in_its_place() {
        // With many input rows each task writes its block's columns of
        // [T, out]: each row must land where the same row alone lands.
        use crate::engine::kernels::decode::synthetic_blocks;
        use crate::formats::tensor::Backing;
        let (k, rows) = (256, 37);
        let raw = synthetic_blocks(DType::Q4_K, rows, 5, false);
        let n = raw.len();
        let w = Tensor::new("w", DType::Q4_K, vec![rows, k], Backing::Owned(std::sync::Arc::new(raw)), 0..n).unwrap();
        for round_input in [false, true] {
            let l = Linear { round_input, ..Linear::new(w.clone(), Some((0..rows).map(|o| o as f32).collect())) };
            let t = 13;
            let x: Vec<f32> = (0..t * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            let all = l.forward(&x);
            for (ti, got) in all.chunks(rows).enumerate() {
                let alone = l.forward(&x[ti * k..(ti + 1) * k]);
                assert!(got.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "round_input={round_input} row {ti}");
            }
        }
    }

    #[test]
    fn layers_run_together_give_what_each_gives_alone() {
        use crate::engine::kernels::decode::synthetic_blocks;
        use crate::formats::tensor::Backing;
        let k = 512;
        let layer = |dtype: DType, rows: usize, seed: u64, round_input: bool| {
            let raw = synthetic_blocks(dtype, rows * k / dtype.block().0, seed, false);
            let n = raw.len();
            let w = Tensor::new(format!("w{seed}"), dtype, vec![rows, k], Backing::Owned(std::sync::Arc::new(raw)), 0..n).unwrap();
            Linear { round_input, ..Linear::new(w, None) }
        };
        for round_input in [false, true] {
            // Q4_K and Q6_K share one quantised input, F16 gets its own rounded one; odd row counts.
            let ls = [layer(DType::Q4_K, 37, 1, round_input), layer(DType::Q6_K, 16, 2, round_input), layer(DType::F16, 5, 3, round_input)];
            for t in [1, 5] {
                let x: Vec<f32> = (0..t * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
                let together = Linear::forward_all([&ls[0], &ls[1], &ls[2]], &x);
                for (l, y) in ls.iter().zip(&together) {
                    let alone = l.forward(&x);
                    assert_eq!(y.len(), l.out_dim() * t);
                    assert!(y.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "{} round_input={round_input} t={t}", l.w.dtype);
                }
            }
        }
    }

    #[test]
    fn activation_rounding_lands_on_the_llamacpp_grids() {
        let x: Vec<f32> = (0..512).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        // Q8_0: per 32, q = round(x / d) with d = amax/127 in f32, value q * f16(d):
        // within half a step plus 127 times the f16 rounding of the scale.
        let mut q = x.clone();
        round_activations(&mut q, DType::Q8_0);
        for (b, qb) in x.chunks(32).zip(q.chunks(32)) {
            let d = b.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let d16 = half::f16::from_f32(d).to_f32();
            for (a, r) in b.iter().zip(qb) {
                assert!((r / d16 - (r / d16).round()).abs() < 1e-3, "{r} is not a multiple of {d16}");
                assert!((a - r).abs() <= 0.5 * d + 127.0 * (d - d16).abs() + 1e-6, "{a} -> {r} (step {d})");
            }
        }
        // Q8_K: per 256, 127 steps of max/127, within half a step.
        let mut k = x.clone();
        round_activations(&mut k, DType::Q4_K);
        for (b, kb) in x.chunks(256).zip(k.chunks(256)) {
            let d = b.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            assert!(b.iter().zip(kb).all(|(a, r)| (a - r).abs() <= 0.51 * d));
        }
        // f32 weights: untouched.
        let mut f = x.clone();
        round_activations(&mut f, DType::F32);
        assert_eq!(f, x);
    }
}

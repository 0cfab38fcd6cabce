//! Q8_0 and Q4_0 weights times Q8_0 activations, blocks of 32 (ggml
//! `ggml_vec_dot_q8_0_q8_0`, `ggml_vec_dot_q4_0_q8_0`).
//!
//! The fast kernel copies the weight row's integers and scales out of their
//! blocks once, then takes the activation rows one at a time, eight blocks
//! at a step: eight exact block sums land in one vector, one per lane.

use super::{accumulate, blocks_of, lane_tree, QActs};
use crate::formats::quants::{f32_of, BlockQ4_0, BlockQ8_0, QK};
use crate::formats::tensor::DType;

/// ggml-common.h: a Q4_0 value is its nibble minus 8.
const Q4_0_OFFSET: i32 = 8;

/// The weight integer of element `e` of a block, as an i32.
#[inline(always)]
fn q4_0_value(b: &BlockQ4_0, e: usize) -> i32 {
    let byte = b.qs[e % (QK / 2)];
    (if e < QK / 2 { byte & 0x0F } else { byte >> 4 }) as i32 - Q4_0_OFFSET
}

/// The plain twin: `S_b` element by element straight from the blocks.
pub(super) fn dot_rows_ref(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32]) {
    // (weight scale, weight integers) of each block.
    let blocks: Vec<(f32, [i32; QK])> = match dtype {
        DType::Q8_0 => blocks_of::<BlockQ8_0>(w).iter().map(|b| (f32_of(b.d), b.qs.map(i32::from))).collect(),
        _ => blocks_of::<BlockQ4_0>(w).iter().map(|b| (f32_of(b.d), std::array::from_fn(|e| q4_0_value(b, e)))).collect(),
    };
    for (i, o) in out.iter_mut().enumerate() {
        let (ya, da, _) = acts.row(i);
        let mut lanes = [0f32; 8];
        for (bi, ((dw, wq), y)) in blocks.iter().zip(ya.chunks_exact(QK)).enumerate() {
            let s: i32 = wq.iter().zip(y).map(|(&w, &y)| w * y as i32).sum();
            accumulate(&mut lanes, bi, dw * da[bi], s, None);
        }
        *o = lane_tree(&lanes);
    }
}

/// The weight row unpacked: integers contiguous and scales widened to f32.
/// `q` is what `maddubs` takes unsigned: Q4_0's nibbles, Q8_0's magnitudes
/// (then `signs` holds Q8_0's integers, whose signs go onto the activations).
#[derive(Default)]
struct Unpacked {
    q: Vec<u8>,
    signs: Vec<i8>,
    d: Vec<f32>,
}

impl Unpacked {
    fn fill(&mut self, dtype: DType, w: &[u8]) {
        // Sized first and written through fixed-size blocks, so the loops vectorise.
        if dtype == DType::Q8_0 {
            let bs = blocks_of::<BlockQ8_0>(w);
            self.resize(bs.len(), true);
            for ((b, q), s) in bs.iter().zip(self.q.chunks_exact_mut(QK)).zip(self.signs.chunks_exact_mut(QK)) {
                for (q, v) in q.iter_mut().zip(&b.qs) {
                    *q = v.unsigned_abs();
                }
                s.copy_from_slice(&b.qs);
            }
            self.d.iter_mut().zip(bs).for_each(|(d, b)| *d = f32_of(b.d));
        } else {
            let bs = blocks_of::<BlockQ4_0>(w);
            self.resize(bs.len(), false);
            for (b, q) in bs.iter().zip(self.q.chunks_exact_mut(QK)) {
                for j in 0..QK / 2 {
                    q[j] = b.qs[j] & 0x0F;
                    q[j + QK / 2] = b.qs[j] >> 4;
                }
            }
            self.d.iter_mut().zip(bs).for_each(|(d, b)| *d = f32_of(b.d));
        }
    }

    fn resize(&mut self, nb: usize, signed: bool) {
        self.q.resize(nb * QK, 0);
        self.signs.resize(if signed { nb * QK } else { 0 }, 0);
        self.d.resize(nb, 0.0);
    }
}

/// Activation rows from which the weight row is unpacked first; fewer rows
/// read the blocks in place (unpacking is worth it only when reused).
const UNPACK_FROM_ROWS: usize = 4;

/// The AVX2 kernel. Q4_0's offset comes off as `8 · Σ y`, from the activation sums.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
pub(super) fn dot_rows(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32]) {
    use std::arch::x86_64::*;
    thread_local! {
        static ROW: std::cell::RefCell<Unpacked> = std::cell::RefCell::default();
    }
    let offset = dtype == DType::Q4_0;
    // Each `lanes(b, y)` gives block b's products with activations y in 8 i32
    // lanes; `scale(b)` its weight scale.
    // SAFETY (all blocks below): AVX2 and FMA are enabled for this build;
    // avx2::row asks only for blocks below nb, which every slice here holds.
    if out.len() < UNPACK_FROM_ROWS {
        let nb = acts.k / QK;
        if dtype == DType::Q8_0 {
            let bs = &blocks_of::<BlockQ8_0>(w)[..nb];
            let lanes = |b: usize, y| unsafe {
                let w = _mm256_loadu_si256(bs.get_unchecked(b).qs.as_ptr() as *const __m256i);
                // |w| · (y with w's sign): maddubs wants its first operand unsigned.
                avx2::madd_pairs(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w))
            };
            let scale = |b: usize| f32_of(unsafe { bs.get_unchecked(b) }.d);
            for (i, o) in out.iter_mut().enumerate() {
                *o = unsafe { avx2::row(lanes, scale, acts, i, nb, false) };
            }
        } else {
            let bs = &blocks_of::<BlockQ4_0>(w)[..nb];
            let lanes = |b: usize, y| unsafe {
                let x = _mm_loadu_si128(bs.get_unchecked(b).qs.as_ptr() as *const __m128i);
                let q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), _mm256_set1_epi8(0x0F));
                avx2::madd_pairs(q, y)
            };
            let scale = |b: usize| f32_of(unsafe { bs.get_unchecked(b) }.d);
            for (i, o) in out.iter_mut().enumerate() {
                *o = unsafe { avx2::row(lanes, scale, acts, i, nb, true) };
            }
        }
        return;
    }
    ROW.with_borrow_mut(|u| {
        u.fill(dtype, w);
        let nb = u.d.len().min(acts.k / QK);
        let load = |v: &[u8], b: usize| unsafe { _mm256_loadu_si256(v.as_ptr().add(b * QK) as *const __m256i) };
        let scale = |b: usize| unsafe { *u.d.get_unchecked(b) };
        if dtype == DType::Q8_0 {
            let signs: &[u8] = bytemuck::cast_slice(&u.signs);
            let lanes = |b: usize, y| unsafe { avx2::madd_pairs(load(&u.q, b), _mm256_sign_epi8(y, load(signs, b))) };
            for (i, o) in out.iter_mut().enumerate() {
                *o = unsafe { avx2::row(lanes, scale, acts, i, nb, offset) };
            }
        } else {
            let lanes = |b: usize, y| unsafe { avx2::madd_pairs(load(&u.q, b), y) };
            for (i, o) in out.iter_mut().enumerate() {
                *o = unsafe { avx2::row(lanes, scale, acts, i, nb, offset) };
            }
        }
    })
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{accumulate, lane_tree, QActs, Q4_0_OFFSET, QK};

    /// Activation row `i` against `nb` weight blocks (see `dot_rows`); with
    /// `offset`, Q4_0's `8 · Σ y` comes off each block sum.
    #[inline(always)]
    pub(super) unsafe fn row(
        lanes: impl Fn(usize, __m256i) -> __m256i,
        scale: impl Fn(usize) -> f32,
        acts: &QActs,
        i: usize,
        nb: usize,
        offset: bool,
    ) -> f32 {
        let (ya, da, bs) = acts.row(i);
        assert!(ya.len() >= nb * QK && da.len() >= nb && bs.len() >= 2 * nb);
        let y = |b: usize| _mm256_loadu_si256(ya.as_ptr().add(b * QK) as *const __m256i);
        let mut acc = _mm256_setzero_ps();
        let n8 = nb - nb % 8;
        for g in (0..n8).step_by(8) {
            let v: [__m256i; 8] = std::array::from_fn(|u| lanes(g + u, y(g + u)));
            let mut s = sum_each(&v);
            if offset {
                let sums = _mm256_madd_epi16(_mm256_loadu_si256(bs.as_ptr().add(2 * g) as *const __m256i), _mm256_set1_epi16(1));
                s = _mm256_sub_epi32(s, _mm256_mullo_epi32(sums, _mm256_set1_epi32(Q4_0_OFFSET)));
            }
            let dw: [f32; 8] = std::array::from_fn(|u| scale(g + u));
            let d = _mm256_mul_ps(_mm256_loadu_ps(dw.as_ptr()), _mm256_loadu_ps(da.as_ptr().add(g)));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc);
        }
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        for b in n8..nb {
            let mut s = hsum(lanes(b, y(b)));
            if offset {
                s -= Q4_0_OFFSET * (bs[2 * b] as i32 + bs[2 * b + 1] as i32);
            }
            accumulate(&mut out, b, scale(b) * da[b], s, None);
        }
        lane_tree(&out)
    }

    /// `maddubs` then `madd` with ones: products summed in 8 i32 lanes (4
    /// elements each), exact: i16 pairs stay below 2·128·127 (Q8_0) or 2·15·128 (Q4_0).
    #[inline(always)]
    pub(super) unsafe fn madd_pairs(unsigned: __m256i, signed: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned, signed), _mm256_set1_epi16(1))
    }

    /// `[Σ v0, Σ v1, ..., Σ v7]`: each vector's lanes summed (exact).
    #[inline(always)]
    pub(in super::super) unsafe fn sum_each(v: &[__m256i; 8]) -> __m256i {
        let h01 = _mm256_hadd_epi32(v[0], v[1]);
        let h23 = _mm256_hadd_epi32(v[2], v[3]);
        let h45 = _mm256_hadd_epi32(v[4], v[5]);
        let h67 = _mm256_hadd_epi32(v[6], v[7]);
        // [v0..v3 low halves | v0..v3 high halves], and the same for v4..v7.
        let a = _mm256_hadd_epi32(h01, h23);
        let b = _mm256_hadd_epi32(h45, h67);
        _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31))
    }

    /// The sum of 8 i32 lanes.
    #[inline(always)]
    unsafe fn hsum(v: __m256i) -> i32 {
        let x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let x = _mm_add_epi32(x, _mm_unpackhi_epi64(x, x));
        let x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0b01));
        _mm_cvtsi128_si32(x)
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
pub(super) use avx2::sum_each;

//! Q8_0 and Q4_0 weights times Q8_0 activations, blocks of 32 (ggml
//! `ggml_vec_dot_q8_0_q8_0`, `ggml_vec_dot_q4_0_q8_0`).
//!
//! The fast kernel reads the weight blocks in place and unpacks each in
//! registers for a tile of activation rows, eight blocks at a step: a row's
//! eight exact block sums land in one vector, one per lane.

use super::{accumulate, blocks_of, lane_tree, QActs};
use crate::formats::quants::{f32_of, BlockQ4_0, BlockQ8_0, QK};
use crate::formats::tensor::DType;

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
pub(super) mod rows16;
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
pub(super) mod rows8;

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

/// Activation rows that share each weight block while it is in registers
/// (the rest go one at a time).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
const TILE: usize = 8;

/// ggml-common.h's Q8_0 integers with this added are unsigned bytes
/// (`dpbusd` wants its first operand unsigned).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
const Q8_0_BIAS: i32 = 128;

/// The AVX2 kernel (VNNI: `dpbusd` for `maddubs` + `madd`). Each group of
/// eight weight blocks is unpacked once for a tile of activation rows.
/// Offsets come off in integers as `offset · Σ y`, from the activation sums:
/// Q4_0's 8, and with VNNI Q8_0's bias of 128.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[inline(always)]
pub(super) fn dot_rows<const VNNI: bool>(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let nb = acts.k / QK;
    // `unpack(b)` gives block b's integers in registers, `dot(w, y)` their
    // products with activations y in 8 i32 lanes, `scale(b)` the block's scale.
    // SAFETY (all blocks below): AVX2 and FMA are enabled for this build,
    // VNNI checked by the caller; avx2::all_rows asks only for blocks below
    // nb, which the slices hold.
    if dtype == DType::Q8_0 {
        let bs = &blocks_of::<BlockQ8_0>(w)[..nb];
        let scale = |b: usize| f32_of(unsafe { bs.get_unchecked(b) }.d);
        let load = |b: usize| unsafe { _mm256_loadu_si256(bs.get_unchecked(b).qs.as_ptr() as *const __m256i) };
        if VNNI {
            let unpack = |b: usize| unsafe { _mm256_xor_si256(load(b), _mm256_set1_epi8(i8::MIN)) };
            avx2::all_rows(unpack, |w, y| unsafe { avx2::dpbusd(w, y) }, scale, acts, nb, Q8_0_BIAS, out);
        } else {
            // |w| · (y with w's sign): maddubs wants its first operand unsigned.
            let unpack = |b: usize| unsafe { (_mm256_sign_epi8(load(b), load(b)), load(b)) };
            let dot = |(a, w), y| unsafe { avx2::madd_pairs(a, _mm256_sign_epi8(y, w)) };
            avx2::all_rows(unpack, dot, scale, acts, nb, 0, out);
        }
    } else {
        let bs = &blocks_of::<BlockQ4_0>(w)[..nb];
        let unpack = |b: usize| unsafe {
            let x = _mm_loadu_si128(bs.get_unchecked(b).qs.as_ptr() as *const __m128i);
            _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), _mm256_set1_epi8(0x0F))
        };
        let dot = |w, y| unsafe {
            if VNNI {
                avx2::dpbusd(w, y)
            } else {
                avx2::madd_pairs(w, y)
            }
        };
        let scale = |b: usize| f32_of(unsafe { bs.get_unchecked(b) }.d);
        avx2::all_rows(unpack, dot, scale, acts, nb, Q4_0_OFFSET, out);
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{accumulate, lane_tree, QActs, QK, TILE};

    /// Every activation row against `nb` weight blocks, [`TILE`] rows at a time.
    #[inline(always)]
    pub(super) fn all_rows<W: Copy>(unpack: impl Fn(usize) -> W, dot: impl Fn(W, __m256i) -> __m256i, scale: impl Fn(usize) -> f32, acts: &QActs, nb: usize, offset: i32, out: &mut [f32]) {
        let n = out.len();
        // What `rows` relies on.
        assert!(acts.qs.len() >= n * acts.k && acts.bsums.len() >= 2 * n * acts.k / QK && acts.d.len() >= n * nb && nb <= acts.k / QK);
        let kernel = Kernel { unpack, dot, scale, acts, nb, offset };
        let whole = n - n % TILE;
        for (t, o) in out[..whole].chunks_exact_mut(TILE).enumerate() {
            // SAFETY: AVX2 and FMA are enabled for this build; rows checked above.
            *<&mut [f32; TILE]>::try_from(o).unwrap() = unsafe { kernel.rows(t * TILE) };
        }
        for (i, o) in out.iter_mut().enumerate().skip(whole) {
            // SAFETY: as above.
            [*o] = unsafe { kernel.rows(i) };
        }
    }

    /// A weight row's blocks (see `dot_rows`) against the activations.
    struct Kernel<'a, U, D, S> {
        unpack: U,
        dot: D,
        scale: S,
        acts: &'a QActs,
        nb: usize,
        offset: i32,
    }

    impl<W: Copy, U: Fn(usize) -> W, D: Fn(W, __m256i) -> __m256i, S: Fn(usize) -> f32> Kernel<'_, U, D, S> {
        /// Activation rows `first..first + R` against the `nb` weight blocks.
        /// Eight blocks at a step, unpacked once: a row's eight block sums
        /// land in one vector, a block per lane.
        ///
        /// SAFETY: AVX2 and FMA enabled; `all_rows` checked the rows are in `acts`.
        #[inline(always)]
        unsafe fn rows<const R: usize>(&self, first: usize) -> [f32; R] {
            let (k, nb, offset) = (self.acts.k, self.nb, self.offset);
            let rk = k / QK;
            let ya = self.acts.qs.as_ptr().add(first * k);
            let (da, bs) = (self.acts.d.as_ptr().add(first * rk), self.acts.bsums.as_ptr().add(first * 2 * rk));
            let y = |r: usize, b: usize| _mm256_loadu_si256(ya.add(r * k + b * QK) as *const __m256i);
            // Σ y of each block, two sums of 16 apiece.
            let ysum = |r: usize, b: usize| *bs.add(r * 2 * rk + 2 * b) as i32 + *bs.add(r * 2 * rk + 2 * b + 1) as i32;
            let mut acc = [_mm256_setzero_ps(); R];
            let n8 = nb - nb % 8;
            for g in (0..n8).step_by(8) {
                let w: [W; 8] = std::array::from_fn(|u| (self.unpack)(g + u));
                let dw: [f32; 8] = std::array::from_fn(|u| (self.scale)(g + u));
                let dw = _mm256_loadu_ps(dw.as_ptr());
                for (r, acc) in acc.iter_mut().enumerate() {
                    let mut s = sum_each(&std::array::from_fn(|u| (self.dot)(w[u], y(r, g + u))));
                    if offset != 0 {
                        let sums = _mm256_madd_epi16(_mm256_loadu_si256(bs.add(r * 2 * rk + 2 * g) as *const __m256i), _mm256_set1_epi16(1));
                        s = _mm256_sub_epi32(s, _mm256_mullo_epi32(sums, _mm256_set1_epi32(offset)));
                    }
                    let d = _mm256_mul_ps(dw, _mm256_loadu_ps(da.add(r * rk + g)));
                    *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), *acc);
                }
            }
            std::array::from_fn(|r| {
                let mut out = [0f32; 8];
                _mm256_storeu_ps(out.as_mut_ptr(), acc[r]);
                for b in n8..nb {
                    let s = hsum((self.dot)((self.unpack)(b), y(r, b))) - offset * ysum(r, b);
                    accumulate(&mut out, b, (self.scale)(b) * *da.add(r * rk + b), s, None);
                }
                lane_tree(&out)
            })
        }
    }

    /// `maddubs` then `madd` with ones: products summed in 8 i32 lanes (4
    /// elements each), exact: i16 pairs stay below 2·128·127 (Q8_0) or
    /// 2·15·128 (Q4_0).
    #[inline(always)]
    pub(super) unsafe fn madd_pairs(unsigned: __m256i, signed: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned, signed), _mm256_set1_epi16(1))
    }

    /// `madd_pairs` in one instruction, with no i16 step (so no saturation:
    /// Q8_0's biased bytes reach 255).
    #[inline]
    #[target_feature(enable = "avx512vnni,avx512vl")]
    pub(super) fn dpbusd(unsigned: __m256i, signed: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), unsigned, signed)
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

//! Q8_0 and Q4_0 weights times Q8_0 activations, blocks of 32 (ggml
//! `ggml_vec_dot_q8_0_q8_0`, `ggml_vec_dot_q4_0_q8_0`).
//!
//! The fast kernel copies the weight row's integers and scales out of their
//! blocks once, then takes the activation rows one at a time, eight blocks
//! at a step: eight exact block sums land in one vector, one per lane.

use super::{accumulate, blocks_of, lane_tree, QActs, BSUM};
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
                for j in 0..QK {
                    q[j] = b.qs[j].unsigned_abs();
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

/// The AVX2 kernel (`SIGNED`: Q8_0's i8 weights; otherwise Q4_0's nibbles,
/// whose offset comes off as `8 · Σ y` from the activation sums).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
pub(super) fn dot_rows(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32]) {
    thread_local! {
        static ROW: std::cell::RefCell<Unpacked> = std::cell::RefCell::default();
    }
    ROW.with_borrow_mut(|u| {
        u.fill(dtype, w);
        let nb = u.d.len().min(acts.k / QK);
        for (i, o) in out.iter_mut().enumerate() {
            let (ya, da, bs) = acts.row(i);
            // SAFETY: AVX2 and FMA are enabled for this build; the kernel reads
            // nb blocks of u.q, u.signs (Q8_0), u.d, ya, da and 2·nb sums of bs,
            // all that long.
            *o = unsafe {
                if dtype == DType::Q8_0 {
                    avx2::row::<true>(&u.q, &u.signs, &u.d, ya, da, bs, nb)
                } else {
                    avx2::row::<false>(&u.q, &u.signs, &u.d, ya, da, bs, nb)
                }
            };
        }
    })
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{accumulate, lane_tree, BSUM, Q4_0_OFFSET, QK};

    /// One activation row against the unpacked weight row: `nb` blocks.
    #[inline(always)]
    pub(super) unsafe fn row<const SIGNED: bool>(wq: &[u8], ws: &[i8], dw: &[f32], ya: &[i8], da: &[f32], bs: &[i16], nb: usize) -> f32 {
        debug_assert!(wq.len() >= nb * QK && ya.len() >= nb * QK && dw.len() >= nb && da.len() >= nb && bs.len() >= nb * QK / BSUM);
        debug_assert!(!SIGNED || ws.len() >= nb * QK);
        // Q4_0 has no signs: point at its integers (never read) to stay in bounds.
        let ps = if SIGNED { ws.as_ptr() } else { wq.as_ptr() as *const i8 };
        let (pw, py) = (wq.as_ptr(), ya.as_ptr());
        let mut acc = _mm256_setzero_ps();
        let n8 = nb - nb % 8;
        for g in (0..n8).step_by(8) {
            let mut v = [_mm256_setzero_si256(); 8];
            for (u, v) in v.iter_mut().enumerate() {
                *v = block_lanes::<SIGNED>(pw.add((g + u) * QK), ps.add((g + u) * QK), py.add((g + u) * QK));
            }
            let mut s = sum_each(&v);
            if !SIGNED {
                s = _mm256_sub_epi32(s, _mm256_mullo_epi32(block_sums(bs.as_ptr().add(g * 2)), _mm256_set1_epi32(Q4_0_OFFSET)));
            }
            let d = _mm256_mul_ps(_mm256_loadu_ps(dw.as_ptr().add(g)), _mm256_loadu_ps(da.as_ptr().add(g)));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        for b in n8..nb {
            let mut s = hsum(block_lanes::<SIGNED>(pw.add(b * QK), ps.add(b * QK), py.add(b * QK)));
            if !SIGNED {
                s -= Q4_0_OFFSET * (bs[2 * b] as i32 + bs[2 * b + 1] as i32);
            }
            accumulate(&mut lanes, b, dw[b] * da[b], s, None);
        }
        lane_tree(&lanes)
    }

    /// One block's products summed into 8 i32 lanes (4 elements each), exact:
    /// i16 pairs stay below 2·128·127 (signed) or 2·15·128 (nibbles).
    #[inline(always)]
    unsafe fn block_lanes<const SIGNED: bool>(w: *const u8, signs: *const i8, y: *const i8) -> __m256i {
        let w = _mm256_loadu_si256(w as *const __m256i);
        let y = _mm256_loadu_si256(y as *const __m256i);
        let p = if SIGNED {
            // |w| · (y with w's sign): maddubs wants its first operand unsigned.
            _mm256_maddubs_epi16(w, _mm256_sign_epi8(y, _mm256_loadu_si256(signs as *const __m256i)))
        } else {
            _mm256_maddubs_epi16(w, y)
        };
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }

    /// Eight blocks' sums of 16 → their eight block sums.
    #[inline(always)]
    unsafe fn block_sums(bs: *const i16) -> __m256i {
        _mm256_madd_epi16(_mm256_loadu_si256(bs as *const __m256i), _mm256_set1_epi16(1))
    }

    /// `[Σ v0, Σ v1, ..., Σ v7]`: each vector's lanes summed (exact).
    #[inline(always)]
    unsafe fn sum_each(v: &[__m256i; 8]) -> __m256i {
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
    pub(in super::super) unsafe fn hsum(v: __m256i) -> i32 {
        let x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let x = _mm_add_epi32(x, _mm_unpackhi_epi64(x, x));
        let x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0b01));
        _mm_cvtsi128_si32(x)
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
pub(super) use avx2::hsum;

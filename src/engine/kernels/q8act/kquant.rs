//! Q4_K, Q5_K and Q6_K weights times Q8_K activations, blocks of 256 (ggml
//! `ggml_vec_dot_q{4,5,6}_K_q8_K`).
//!
//! The fast kernel unpacks each weight block once into a [`KBlock`]:
//! unsigned integers in element order, each pair's scale as i16 and a
//! multiplier for each of the activation's 16 sums. Every activation row then
//! runs `maddubs` (integer × activation, pairs) and `madd` (× scale) over it.
//! Q6_K's offset of 32 rides on the activation sums: `Σ sc·(q-32)·y =
//! Σ sc·q·y − Σ_i 32·sc_i·bsum_i`, all in integers.

use super::{accumulate, blocks_of, lane_tree, QActs, BSUM};
use crate::formats::quants::{f32_of, scale_min_k4, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
use crate::formats::tensor::DType;

/// ggml-common.h: a Q6_K value is its six bits minus 32.
const Q6_K_OFFSET: i32 = 32;
/// Elements per Q4_K/Q5_K sub-block (one 6-bit scale and min).
const SUB: usize = 32;

/// A weight block unpacked for the integer kernel.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct KBlock {
    /// Unsigned integers in element order (Q4_K 0..16, Q5_K 0..32, Q6_K 0..64).
    q: [u8; QK_K],
    /// `sc[r][m]`: the scale of elements `32r + 2m` and `32r + 2m + 1`.
    sc: [[i16; 16]; QK_K / 32],
    /// Multiplier of activation sum `i` (Q4_K/Q5_K: min of its sub-block; Q6_K: 32 · scale).
    mins: [i16; QK_K / BSUM],
    d: f32,
    /// Q4_K/Q5_K's `dmin` (unused for Q6_K).
    dmin: f32,
}

impl KBlock {
    const ZERO: KBlock = KBlock { q: [0; QK_K], sc: [[0; 16]; QK_K / 32], mins: [0; QK_K / BSUM], d: 0.0, dmin: 0.0 };

    /// Q4_K/Q5_K: scales and mins from the packed 6-bit fields.
    fn k4_scales(&mut self, d: [u8; 2], dmin: [u8; 2], scales: &[u8; 12]) {
        for j in 0..QK_K / SUB {
            let (sc, m) = scale_min_k4(j, scales);
            self.sc[j] = [sc as i16; 16];
            self.mins[2 * j] = m as i16;
            self.mins[2 * j + 1] = m as i16;
        }
        (self.d, self.dmin) = (f32_of(d), f32_of(dmin));
    }

    fn q4k(b: &BlockQ4K) -> KBlock {
        let mut k = KBlock::ZERO;
        k.k4_scales(b.d, b.dmin, &b.scales);
        for (c, qs) in b.qs.chunks_exact(32).enumerate() {
            for (l, &v) in qs.iter().enumerate() {
                k.q[64 * c + l] = v & 0x0F;
                k.q[64 * c + 32 + l] = v >> 4;
            }
        }
        k
    }

    fn q5k(b: &BlockQ5K) -> KBlock {
        let mut k = KBlock::ZERO;
        k.k4_scales(b.d, b.dmin, &b.scales);
        for (c, qs) in b.qs.chunks_exact(32).enumerate() {
            for (l, (&v, &h)) in qs.iter().zip(&b.qh).enumerate() {
                k.q[64 * c + l] = (v & 0x0F) | (((h >> (2 * c)) & 1) << 4);
                k.q[64 * c + 32 + l] = (v >> 4) | (((h >> (2 * c + 1)) & 1) << 4);
            }
        }
        k
    }

    fn q6k(b: &BlockQ6K) -> KBlock {
        let mut k = KBlock::ZERO;
        for (r, sc) in k.sc.iter_mut().enumerate() {
            let (lo, hi) = (b.scales[2 * r] as i16, b.scales[2 * r + 1] as i16);
            *sc = std::array::from_fn(|m| if m < 8 { lo } else { hi });
        }
        for (m, &s) in k.mins.iter_mut().zip(&b.scales) {
            *m = Q6_K_OFFSET as i16 * s as i16;
        }
        k.d = f32_of(b.d);
        for n in 0..2 {
            let (ql, qh, q) = (&b.ql[64 * n..64 * n + 64], &b.qh[32 * n..32 * n + 32], &mut k.q[128 * n..128 * n + 128]);
            for l in 0..32 {
                q[l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
                q[l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
                q[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                q[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
        k
    }
}

/// One plain weight block: (d, dmin for the float min or None, `(scale · signed integer)` of
/// each element, integer min of each element's 32-long sub-block).
type PlainBlock = (f32, Option<f32>, [i32; QK_K], [i32; QK_K]);

/// The plain per-element view of a block, read as `quants::dequantize` reads it.
fn plain_blocks(dtype: DType, w: &[u8]) -> Vec<PlainBlock> {
    let k4 = |scales: &[u8; 12], q: &dyn Fn(usize) -> i32| -> ([i32; QK_K], [i32; QK_K]) {
        let sm = |e: usize| scale_min_k4(e / SUB, scales);
        (std::array::from_fn(|e| sm(e).0 as i32 * q(e)), std::array::from_fn(|e| sm(e).1 as i32))
    };
    match dtype {
        DType::Q4_K => blocks_of::<BlockQ4K>(w)
            .iter()
            .map(|b| {
                // Element 64c + l is the low nibble of qs[32c + l], 64c + 32 + l its high nibble.
                let q = |e: usize| ((b.qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 0x0F) as i32;
                let (wq, m) = k4(&b.scales, &q);
                (f32_of(b.d), Some(f32_of(b.dmin)), wq, m)
            })
            .collect(),
        DType::Q5_K => blocks_of::<BlockQ5K>(w)
            .iter()
            .map(|b| {
                // As Q4_K, plus bit (e / 32) of qh[e % 32] as the fifth bit.
                let q = |e: usize| {
                    let lo = (b.qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 0x0F;
                    (lo | (((b.qh[e % 32] >> (e / 32)) & 1) << 4)) as i32
                };
                let (wq, m) = k4(&b.scales, &q);
                (f32_of(b.d), Some(f32_of(b.dmin)), wq, m)
            })
            .collect(),
        _ => blocks_of::<BlockQ6K>(w)
            .iter()
            .map(|b| {
                // Element 128n + 32j + l: ql[64n + 32(j % 2) + l], nibble j / 2; qh[32n + l], bits 2j.
                let wq = std::array::from_fn(|e| {
                    let (n, j, l) = (e / 128, (e / 32) % 4, e % 32);
                    let lo = (b.ql[64 * n + 32 * (j % 2) + l] >> (4 * (j / 2))) & 0x0F;
                    let hi = (b.qh[32 * n + l] >> (2 * j)) & 3;
                    b.scales[e / 16] as i32 * ((lo | (hi << 4)) as i32 - Q6_K_OFFSET)
                });
                (f32_of(b.d), None, wq, [0; QK_K])
            })
            .collect(),
    }
}

/// The plain twin: `S_b` and `M_b` element by element, from the blocks and
/// the activations themselves (not their sums).
pub(super) fn dot_rows_ref(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32]) {
    let blocks = plain_blocks(dtype, w);
    for (i, o) in out.iter_mut().enumerate() {
        let (ya, da, _) = acts.row(i);
        let mut lanes = [0f32; 8];
        for (b, ((d, dmin, wq, mins), y)) in blocks.iter().zip(ya.chunks_exact(QK_K)).enumerate() {
            let s: i32 = wq.iter().zip(y).map(|(&w, &y)| w * y as i32).sum();
            let m: i32 = mins.iter().zip(y).map(|(&m, &y)| m * y as i32).sum();
            accumulate(&mut lanes, b, d * da[b], s, dmin.map(|dm| (dm * da[b], m)));
        }
        *o = lane_tree(&lanes);
    }
}

/// The AVX2 kernel: each weight block unpacked once (on the stack), then
/// every activation row's block against it; each row keeps its own 8 lanes.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
pub(super) fn dot_rows(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32]) {
    match dtype {
        DType::Q4_K => blocks_times_rows(blocks_of::<BlockQ4K>(w), KBlock::q4k, true, acts, out),
        DType::Q5_K => blocks_times_rows(blocks_of::<BlockQ5K>(w), KBlock::q5k, true, acts, out),
        _ => blocks_times_rows(blocks_of::<BlockQ6K>(w), KBlock::q6k, false, acts, out),
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[inline(always)]
fn blocks_times_rows<B>(blocks: &[B], unpack: impl Fn(&B) -> KBlock, float_min: bool, acts: &QActs, out: &mut [f32]) {
    thread_local! {
        static LANES: std::cell::RefCell<Vec<[f32; 8]>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LANES.with_borrow_mut(|lanes| {
        lanes.clear();
        lanes.resize(out.len(), [0f32; 8]);
        for (b, block) in blocks.iter().enumerate().take(acts.k / QK_K) {
            let k = unpack(block);
            for (i, lanes) in lanes.iter_mut().enumerate() {
                let (ya, da, bs) = acts.row(i);
                let (y, s) = (&ya[b * QK_K..(b + 1) * QK_K], &bs[b * QK_K / BSUM..(b + 1) * QK_K / BSUM]);
                // SAFETY: AVX2 is enabled for this build; y holds 256 values and s 16 sums.
                let (s, m) = unsafe { block_sums(&k, y, s) };
                if float_min {
                    accumulate(lanes, b, k.d * da[b], s, Some((k.dmin * da[b], m)));
                } else {
                    accumulate(lanes, b, k.d * da[b], s - m, None);
                }
            }
        }
        for (o, l) in out.iter_mut().zip(lanes.iter()) {
            *o = lane_tree(l);
        }
    })
}

/// `(Σ sc·q·y, Σ mins·bsums)` of one block, exact: `maddubs` pairs stay below
/// 2·63·128, each i32 lane below 8·2·16128·128.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[inline(always)]
unsafe fn block_sums(k: &KBlock, y: &[i8], bsums: &[i16]) -> (i32, i32) {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_si256();
    for r in 0..QK_K / 32 {
        let q = _mm256_load_si256(k.q.as_ptr().add(32 * r) as *const __m256i);
        let yv = _mm256_loadu_si256(y.as_ptr().add(32 * r) as *const __m256i);
        let sc = _mm256_load_si256(k.sc[r].as_ptr() as *const __m256i);
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, yv), sc));
    }
    let m = _mm256_madd_epi16(_mm256_loadu_si256(bsums.as_ptr() as *const __m256i), _mm256_load_si256(k.mins.as_ptr() as *const __m256i));
    (super::q32::hsum(acc), super::q32::hsum(m))
}


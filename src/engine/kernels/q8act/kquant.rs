//! Q4_K, Q5_K and Q6_K weights times Q8_K activations, blocks of 256 (ggml
//! `ggml_vec_dot_q{4,5,6}_K_q8_K`).
//!
//! The fast kernel ([`avx2`]) unpacks each weight block in registers as
//! unsigned integers, each i16 pair's scale and a multiplier for each of the
//! activation's 16 sums. Q6_K's offset of 32 rides on the activation sums:
//! `Σ sc·(q-32)·y = Σ sc·q·y − Σ_i 32·sc_i·bsum_i`, all in integers. With
//! AVX-512 VNNI and four or more activation rows (prefill), [`rows8`] takes
//! over: eight weight rows unpacked side by side, one per lane ([`rows16`]:
//! sixteen, in 512-bit registers, for sixteen or more activation rows).

use super::{accumulate, blocks_of, lane_tree, QActs};
use crate::formats::quants::{f32_of, scale_min_k4, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
use crate::formats::tensor::DType;

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
mod avx2;
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
pub(super) mod rows16;
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
pub(super) mod rows8;

/// ggml-common.h: a Q6_K value is its six bits minus 32.
const Q6_K_OFFSET: i32 = 32;

/// Elements per Q4_K/Q5_K sub-block (one 6-bit scale and min).
const SUB: usize = 32;

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

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
pub(super) use avx2::dot_rows;
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
use avx2::pieces8;

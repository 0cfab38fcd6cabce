//! Many activation rows (prefill) with AVX-512 VNNI for Q8_0 and Q4_0 weights:
//! eight weight rows side by side, one per 32-bit lane, as `kquant::rows8`
//! does for k-quants.
//!
//! Each group of eight rows is unpacked once into a scratch where every
//! 32-byte piece holds four consecutive unsigned integers of each row (Q8_0's
//! bytes plus 128, Q4_0's nibbles), row r in lane r, with the rows' block
//! scales as a vector beside them. Four activation values broadcast to all
//! lanes meet a piece in one `dpbusd`, so a block's eight exact sums end in
//! one vector without a horizontal addition; the offset (128 or 8) comes off
//! in integers as `offset · Σ y`, from the activation sums, as in the
//! in-place kernel. The float steps are the module's: `d_w · d_a`, `fma` into
//! lane `b % 8`, then the lane tree, so results are bit for bit the same.

use std::arch::x86_64::*;

use super::super::kquant::rows8::{lane_tree8, put_tile, tiles, transpose8, C, LANES};
use super::super::{blocks_of, QActs, BSUM};
use super::{Q4_0_OFFSET, Q8_0_BIAS};
use crate::formats::quants::{f32_of, BlockQ4_0, BlockQ8_0, QK};
use crate::formats::tensor::DType;

/// Four-element pieces per block.
const PIECES: usize = QK / 4;

/// Whether this kernel takes `n` activation rows: enough of them to pay for
/// the transpose (decode steps keep the in-place kernel).
pub(in super::super) fn takes(dtype: DType, n: usize) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q4_0) && n >= 4
}

/// Eight rows' block, lane r for row r.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Packed {
    /// Piece `p`: bytes `4r..4r + 4` are row r's unsigned integers `4p..4p + 4`.
    q: [[u8; 32]; PIECES],
    /// Each row's block scale.
    d: [f32; LANES],
}

/// Block `b` of row `w` as 32 unsigned integers in element order, and its scale.
///
/// SAFETY: AVX2 is enabled; `w` holds more than `b` blocks.
#[inline(always)]
pub(super) unsafe fn unsigned_block(dtype: DType, w: &[u8], b: usize) -> (__m256i, f32) {
    if dtype == DType::Q8_0 {
        let x = blocks_of::<BlockQ8_0>(w).get_unchecked(b);
        let q = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        (_mm256_xor_si256(q, _mm256_set1_epi8(i8::MIN)), f32_of(x.d))
    } else {
        let x = blocks_of::<BlockQ4_0>(w).get_unchecked(b);
        // Elements 0..16 are the low nibbles, 16..32 the high ones.
        let v = _mm_loadu_si128(x.qs.as_ptr() as *const __m128i);
        (_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F)), f32_of(x.d))
    }
}

/// `out[j·n + i]` for weight rows `ws` (any number) and all `n` activation rows.
///
/// SAFETY: the CPU has AVX-512 VNNI and VL (the caller checked, and enabled them).
#[inline(always)]
pub(in super::super) unsafe fn dot_rows(dtype: DType, ws: &[&[u8]], acts: &QActs, out: &mut [f32]) {
    let (n, nb) = (out.len() / ws.len(), acts.k / QK);
    assert!(ws.iter().all(|w| w.len() >= nb * dtype.block().1));
    assert!(acts.qs.len() >= n * acts.k && acts.bsums.len() >= n * acts.k / BSUM && acts.d.len() >= n * nb);
    let offset = if dtype == DType::Q8_0 { Q8_0_BIAS } else { Q4_0_OFFSET };
    let mut packed = vec![Packed { q: [[0; 32]; PIECES], d: [0.0; LANES] }; nb];
    for (g, rows) in ws.chunks(LANES).enumerate() {
        // A short last group repeats its last row in the spare lanes (results dropped).
        let eight: [&[u8]; LANES] = std::array::from_fn(|r| rows[r.min(rows.len() - 1)]);
        for (b, pk) in packed.iter_mut().enumerate() {
            let mut q = [_mm256_setzero_si256(); LANES];
            for (r, w) in eight.iter().enumerate() {
                (q[r], pk.d[r]) = unsigned_block(dtype, w, b);
            }
            for (p, v) in transpose8(&q).iter().enumerate() {
                _mm256_store_si256(pk.q[p].as_mut_ptr() as *mut __m256i, *v);
            }
        }
        // Plain loops: a closure holding `tile` would be compiled without the
        // VNNI features, and `dpbusd` would become a call per instruction.
        for (i, cc) in tiles(n) {
            let mut res = [[0f32; LANES]; C];
            match cc {
                C => tile::<C>(&packed, offset, acts, i, &mut res),
                4 => tile::<4>(&packed, offset, acts, i, &mut res),
                2 => tile::<2>(&packed, offset, acts, i, &mut res),
                _ => tile::<1>(&packed, offset, acts, i, &mut res),
            }
            put_tile(&res, (i, cc), n, g, rows.len(), out);
        }
    }
}

/// Activation rows `first..first + CC` against the eight packed rows, every
/// block; `res[c][r]` is activation row `first + c` times weight row r.
///
/// Compiled with the VNNI features itself, so that `dpbusd` is inlined
/// here however the caller is compiled.
#[inline]
#[target_feature(enable = "avx512vnni,avx512vl")]
unsafe fn tile<const CC: usize>(packed: &[Packed], offset: i32, acts: &QActs, first: usize, res: &mut [[f32; LANES]; C]) {
    let (k, nb) = (acts.k, packed.len());
    // Lanes of the module's float order, a vector over the eight weight rows each.
    let mut lanes = [[_mm256_setzero_ps(); 8]; CC];
    for (b, pk) in packed.iter().enumerate() {
        let mut s = [_mm256_setzero_si256(); CC];
        for (p, piece) in pk.q.iter().enumerate() {
            let w = _mm256_load_si256(piece.as_ptr() as *const __m256i);
            for (c, s) in s.iter_mut().enumerate() {
                let y = acts.qs.as_ptr().add((first + c) * k + b * QK + 4 * p) as *const i32;
                *s = _mm256_dpbusd_epi32(*s, w, _mm256_set1_epi32(y.read_unaligned()));
            }
        }
        let d = _mm256_load_ps(pk.d.as_ptr());
        for (c, s) in s.iter().enumerate() {
            // Σ y of the block: its two sums of 16.
            let bs = acts.bsums.as_ptr().add(((first + c) * k + b * QK) / BSUM);
            let ysum = *bs as i32 + *bs.add(1) as i32;
            let s = _mm256_sub_epi32(*s, _mm256_set1_epi32(offset * ysum));
            let da = _mm256_set1_ps(*acts.d.get_unchecked((first + c) * nb + b));
            let l = &mut lanes[c][b % 8];
            *l = _mm256_fmadd_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(s), *l);
        }
    }
    for (c, l) in lanes.iter().enumerate() {
        _mm256_storeu_ps(res[c].as_mut_ptr(), lane_tree8(l));
    }
}

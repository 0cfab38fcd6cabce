//! [`rows8`](super::rows8) for Q8_0 and Q4_0 with sixteen weight rows side
//! by side, one per 32-bit lane of a 512-bit register, as `kquant::rows16`
//! does for k-quants (see there for why: on this project's Xeon a 512-bit
//! `dpbusd` does nearly twice the work of a 256-bit one in the same time).
//!
//! The first eight rows fill the lower half of every piece and the next
//! eight the upper half, packed as `rows8` packs them; the tile is `rows8`'s
//! lane for lane, so the numbers are the same bit for bit.

use std::arch::x86_64::*;

use super::super::kquant::rows16::LANES;
use super::super::kquant::rows8::{tiles, transpose8, C};
use super::super::{QActs, BSUM};
use super::rows8::unsigned_block;
use super::{Q4_0_OFFSET, Q8_0_BIAS};
use crate::formats::quants::QK;
use crate::formats::tensor::DType;

/// Four-element pieces per block.
const PIECES: usize = QK / 4;

/// Sixteen rows' block, lane r for row r.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Packed {
    /// Piece `p`: bytes `4r..4r + 4` are row r's unsigned integers `4p..4p + 4`.
    q: [[u8; 64]; PIECES],
    /// Each row's block scale.
    d: [f32; LANES],
}

/// `out[j·n + i]` for the weight rows `ws` (a multiple of 16) and all `n`
/// activation rows.
///
/// SAFETY: the CPU has AVX-512 F, BW, VL and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(in super::super) unsafe fn dot_rows(dtype: DType, ws: &[&[u8]], acts: &QActs, out: &mut [f32]) {
    let (n, nb) = (out.len() / ws.len(), acts.k / QK);
    assert!(ws.len().is_multiple_of(LANES) && ws.iter().all(|w| w.len() >= nb * dtype.block().1));
    assert!(acts.qs.len() >= n * acts.k && acts.bsums.len() >= n * acts.k / BSUM && acts.d.len() >= n * nb);
    let offset = if dtype == DType::Q8_0 { Q8_0_BIAS } else { Q4_0_OFFSET };
    let mut packed = vec![Packed { q: [[0; 64]; PIECES], d: [0.0; LANES] }; nb];
    for (g, rows) in ws.chunks_exact(LANES).enumerate() {
        for (b, pk) in packed.iter_mut().enumerate() {
            for (half, eight) in rows.chunks_exact(8).enumerate() {
                let mut q = [_mm256_setzero_si256(); 8];
                for (r, w) in eight.iter().enumerate() {
                    (q[r], pk.d[8 * half + r]) = unsigned_block(dtype, w, b);
                }
                for (p, v) in transpose8(&q).iter().enumerate() {
                    _mm256_storeu_si256(pk.q[p].as_mut_ptr().add(32 * half) as *mut __m256i, *v);
                }
            }
        }
        for (i, cc) in tiles(n) {
            let mut res = [[0f32; LANES]; C];
            match cc {
                C => tile::<C>(&packed, offset, acts, i, &mut res),
                4 => tile::<4>(&packed, offset, acts, i, &mut res),
                2 => tile::<2>(&packed, offset, acts, i, &mut res),
                _ => tile::<1>(&packed, offset, acts, i, &mut res),
            }
            for (c, row) in res.iter().enumerate().take(cc) {
                for (r, v) in row.iter().enumerate() {
                    out[(g * LANES + r) * n + i + c] = *v;
                }
            }
        }
    }
}

/// `rows8::tile` in 512 bits: activation rows `first..first + CC` against
/// the sixteen packed rows; `res[c][r]` is activation row `first + c` times
/// weight row r.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn tile<const CC: usize>(packed: &[Packed], offset: i32, acts: &QActs, first: usize, res: &mut [[f32; LANES]; C]) {
    let (k, nb) = (acts.k, packed.len());
    let mut lanes = [[_mm512_setzero_ps(); 8]; CC];
    for (b, pk) in packed.iter().enumerate() {
        let mut s = [_mm512_setzero_si512(); CC];
        for (p, piece) in pk.q.iter().enumerate() {
            let w = _mm512_load_si512(piece.as_ptr() as *const _);
            for (c, s) in s.iter_mut().enumerate() {
                let y = acts.qs.as_ptr().add((first + c) * k + b * QK + 4 * p) as *const i32;
                *s = _mm512_dpbusd_epi32(*s, w, _mm512_set1_epi32(y.read_unaligned()));
            }
        }
        let d = _mm512_load_ps(pk.d.as_ptr());
        for (c, s) in s.iter().enumerate() {
            // Σ y of the block: its two sums of 16.
            let bs = acts.bsums.as_ptr().add(((first + c) * k + b * QK) / BSUM);
            let ysum = *bs as i32 + *bs.add(1) as i32;
            let s = _mm512_sub_epi32(*s, _mm512_set1_epi32(offset * ysum));
            let da = _mm512_set1_ps(*acts.d.get_unchecked((first + c) * nb + b));
            let l = &mut lanes[c][b % 8];
            *l = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(s), *l);
        }
    }
    for (c, l) in lanes.iter().enumerate() {
        // The module's lane tree, lane by lane.
        let t = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(l[0], l[4]), _mm512_add_ps(l[1], l[5])), _mm512_add_ps(_mm512_add_ps(l[2], l[6]), _mm512_add_ps(l[3], l[7])));
        _mm512_storeu_ps(res[c].as_mut_ptr(), t);
    }
}

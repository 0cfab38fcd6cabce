//! [`rows8`](super::rows8) with sixteen weight rows side by side, one per
//! 32-bit lane of a 512-bit register: each `dpbusd` does twice the work.
//!
//! Worth it where the CPU runs 512-bit `dpbusd` at nearly the rate of the
//! 256-bit one: on this project's Xeon (2026-12-02), a C loop of ten
//! independent `dpbusd` chains did 420 multiply-adds per ns in 512 bits
//! against 234 in 256. The whole kernel gained less (Q4_K and Q6_K at 64
//! activation rows 5-21%), and a 64-token Q4_K_M prefill 3-10%. With fewer
//! than [`FROM_ROWS`] activation rows (a MoE expert's share of a prefill)
//! the packing dominates and the MoE prefill measured no better, so those
//! stay with `rows8`.
//!
//! Each block is packed as `rows8` packs it, the first eight rows in the
//! lower half of every piece and the next eight in the upper half; the tile
//! is `rows8`'s, lane for lane, so the numbers are the same bit for bit.

use std::arch::x86_64::*;

use super::rows8::{scales, tiles, transpose8, C};
use super::QActs;
use crate::engine::kernels::q8act::BSUM;
use crate::formats::quants::QK_K;
use crate::formats::tensor::DType;

/// Weight rows per group (one per lane).
pub(in crate::engine::kernels::q8act) const LANES: usize = 16;
/// The fewest activation rows this kernel takes (fewer go to `rows8`).
pub(in crate::engine::kernels::q8act) const FROM_ROWS: usize = 16;
/// Four-element pieces per block.
const PIECES: usize = QK_K / 4;

/// Sixteen rows' block, lane r for row r.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Packed {
    /// Piece `g`: bytes `4r..4r + 4` are row r's integers `4g..4g + 4`.
    q: [[u8; 64]; PIECES],
    /// Each group's scale.
    sc: [[i32; LANES]; 16],
    /// Activation sums `2h`, `2h + 1`: the two multipliers as an i16 pair.
    m: [[i16; 2 * LANES]; 8],
    d: [f32; LANES],
    dmin: [f32; LANES],
}

/// `out[j·n + i]` for the weight rows `ws` (a multiple of 16) and all `n`
/// activation rows.
///
/// SAFETY: the CPU has AVX-512 F, BW, VL and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(in super::super) unsafe fn dot_rows(dtype: DType, ws: &[&[u8]], acts: &QActs, out: &mut [f32]) {
    let (n, nb) = (out.len() / ws.len(), acts.k / QK_K);
    assert!(ws.len().is_multiple_of(LANES) && ws.iter().all(|w| w.len() >= nb * dtype.block().1));
    assert!(acts.qs.len() >= n * acts.k && acts.bsums.len() >= n * acts.k / BSUM && acts.d.len() >= n * nb);
    let subs = if dtype == DType::Q6_K { 16 } else { 8 };
    let mut packed = vec![Packed { q: [[0; 64]; PIECES], sc: [[0; LANES]; 16], m: [[0; 2 * LANES]; 8], d: [0.0; LANES], dmin: [0.0; LANES] }; nb];
    for (g, rows) in ws.chunks_exact(LANES).enumerate() {
        for (b, pk) in packed.iter_mut().enumerate() {
            for (half, eight) in rows.chunks_exact(8).enumerate() {
                let eight: &[&[u8]; 8] = eight.try_into().unwrap();
                super::pieces8(dtype, eight, b, |c, q| {
                    for (p, v) in transpose8(q).iter().enumerate() {
                        _mm256_storeu_si256(pk.q[8 * c + p].as_mut_ptr().add(32 * half) as *mut __m256i, *v);
                    }
                });
                for (r8, w) in eight.iter().enumerate() {
                    let r = 8 * half + r8;
                    let (sc, m, d, dmin) = scales(dtype, w, b);
                    for (lanes, s) in pk.sc.iter_mut().zip(sc) {
                        lanes[r] = s;
                    }
                    for h in 0..8 {
                        pk.m[h][2 * r] = m[2 * h];
                        pk.m[h][2 * r + 1] = m[2 * h + 1];
                    }
                    (pk.d[r], pk.dmin[r]) = (d, dmin);
                }
            }
        }
        for (i, cc) in tiles(n) {
            let mut res = [[0f32; LANES]; C];
            match (cc, subs) {
                (C, 8) => tile::<C, 8>(&packed, dtype, acts, i, &mut res),
                (4, 8) => tile::<4, 8>(&packed, dtype, acts, i, &mut res),
                (2, 8) => tile::<2, 8>(&packed, dtype, acts, i, &mut res),
                (_, 8) => tile::<1, 8>(&packed, dtype, acts, i, &mut res),
                (C, _) => tile::<C, 16>(&packed, dtype, acts, i, &mut res),
                (4, _) => tile::<4, 16>(&packed, dtype, acts, i, &mut res),
                (2, _) => tile::<2, 16>(&packed, dtype, acts, i, &mut res),
                (_, _) => tile::<1, 16>(&packed, dtype, acts, i, &mut res),
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
unsafe fn tile<const CC: usize, const SUBS: usize>(packed: &[Packed], dtype: DType, acts: &QActs, first: usize, res: &mut [[f32; LANES]; C]) {
    let (k, nb) = (acts.k, packed.len());
    let float_min = dtype != DType::Q6_K;
    let per_group = PIECES / SUBS;
    let mut lanes = [[_mm512_setzero_ps(); 8]; CC];
    for (b, pk) in packed.iter().enumerate() {
        let y: [*const u8; CC] = std::array::from_fn(|c| acts.qs.as_ptr().add((first + c) * k + b * QK_K) as *const u8);
        let mut s = [_mm512_setzero_si512(); CC];
        for j in 0..SUBS {
            let mut sub = [_mm512_setzero_si512(); CC];
            for g in j * per_group..(j + 1) * per_group {
                let w = _mm512_load_si512(pk.q[g].as_ptr() as *const _);
                for c in 0..CC {
                    let yv = _mm512_set1_epi32((y[c].add(4 * g) as *const i32).read_unaligned());
                    sub[c] = _mm512_dpbusd_epi32(sub[c], w, yv);
                }
            }
            let sc = _mm512_load_si512(pk.sc[j].as_ptr() as *const _);
            for c in 0..CC {
                s[c] = _mm512_add_epi32(s[c], _mm512_mullo_epi32(sub[c], sc));
            }
        }
        let mut m = [_mm512_setzero_si512(); CC];
        for h in 0..8 {
            let mv = _mm512_load_si512(pk.m[h].as_ptr() as *const _);
            for (c, m) in m.iter_mut().enumerate() {
                let bs = acts.bsums.as_ptr().add((first + c) * k / BSUM + b * (QK_K / BSUM) + 2 * h) as *const i32;
                *m = _mm512_add_epi32(*m, _mm512_madd_epi16(mv, _mm512_set1_epi32(bs.read_unaligned())));
            }
        }
        let d = _mm512_load_ps(pk.d.as_ptr());
        for c in 0..CC {
            let da = _mm512_set1_ps(*acts.d.get_unchecked((first + c) * nb + b));
            let l = &mut lanes[c][b % 8];
            if float_min {
                *l = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(s[c]), *l);
                // fnmadd is fma(-m, M, l): negation is exact.
                let dmin = _mm512_load_ps(pk.dmin.as_ptr());
                *l = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, da), _mm512_cvtepi32_ps(m[c]), *l);
            } else {
                *l = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(_mm512_sub_epi32(s[c], m[c])), *l);
            }
        }
    }
    for (c, l) in lanes.iter().enumerate() {
        // The module's lane tree, lane by lane.
        let t = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(l[0], l[4]), _mm512_add_ps(l[1], l[5])), _mm512_add_ps(_mm512_add_ps(l[2], l[6]), _mm512_add_ps(l[3], l[7])));
        _mm512_storeu_ps(res[c].as_mut_ptr(), t);
    }
}

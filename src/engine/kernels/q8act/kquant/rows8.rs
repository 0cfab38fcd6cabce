//! Many activation rows (prefill) with AVX-512 VNNI: eight weight rows side by
//! side, one per 32-bit lane.
//!
//! The eight rows' blocks are first unpacked into a scratch where each 32-byte
//! piece holds four consecutive unsigned integers of every row (row r in lane
//! r), with the rows' scales, mins and `d` as vectors beside them. Four
//! activation values, broadcast to all lanes, then meet a piece in one `dpbusd`,
//! and every lane keeps its own row's sums: no horizontal additions, and each
//! scale step (integer `mullo`, then the float steps) serves eight rows at once.
//! The unpacking is paid once per weight row and shared by every activation row.
//!
//! Same numbers as the other kernels, bit for bit: `S_b` and `M_b` are exact
//! integers however they are grouped, and the float steps per element are the
//! module's (`d_w · d_a`, then `fma` into lane `b % 8`, and the lane tree).

use std::arch::x86_64::*;

use super::{QActs, Q6_K_OFFSET};
use crate::engine::kernels::q8act::BSUM;
use crate::formats::quants::{f32_of, scale_min_k4, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
use crate::formats::tensor::DType;

/// Weight rows per group (one per lane).
pub(in crate::engine::kernels::q8act) const LANES: usize = 8;
/// Four-element pieces per block.
const PIECES: usize = QK_K / 4;
/// Activation rows that share each piece while it is in a register.
pub(in crate::engine::kernels::q8act) const C: usize = 8;

/// Whether this kernel takes `n` activation rows: enough of them to pay for
/// the unpacking (decode steps keep the in-place kernel).
pub(in super::super) fn takes(dtype: DType, n: usize) -> bool {
    matches!(dtype, DType::Q4_K | DType::Q5_K | DType::Q6_K) && n >= 4
}

/// Block `b` of row `w`'s scales as `kquant::plain_blocks` reads them: the
/// integer scale of each of its groups (8 of 32 for Q4_K/Q5_K, 16 of 16 for
/// Q6_K), the multiplier of each of the 16 activation sums (Q4_K/Q5_K: the
/// sub-block's min; Q6_K: 32 · its scale, the offset), `d` and `dmin`.
pub(super) fn scales(dtype: DType, w: &[u8], b: usize) -> ([i32; 16], [i16; 16], f32, f32) {
    let (mut sc, mut m) = ([0i32; 16], [0i16; 16]);
    match dtype {
        DType::Q4_K | DType::Q5_K => {
            let (d, dmin, s) = if dtype == DType::Q4_K {
                let x = &super::super::blocks_of::<BlockQ4K>(w)[b];
                (x.d, x.dmin, &x.scales)
            } else {
                let x = &super::super::blocks_of::<BlockQ5K>(w)[b];
                (x.d, x.dmin, &x.scales)
            };
            for j in 0..8 {
                let (s, mn) = scale_min_k4(j, s);
                sc[j] = s as i32;
                (m[2 * j], m[2 * j + 1]) = (mn as i16, mn as i16);
            }
            (sc, m, f32_of(d), f32_of(dmin))
        }
        _ => {
            let x = &super::super::blocks_of::<BlockQ6K>(w)[b];
            for g in 0..16 {
                sc[g] = x.scales[g] as i32;
                m[g] = (Q6_K_OFFSET * x.scales[g] as i32) as i16;
            }
            (sc, m, f32_of(x.d), 0.0)
        }
    }
}

/// Transposes eight rows of eight 32-bit lanes: `out[g]` lane r = `v[r]` lane g.
#[inline(always)]
pub(in crate::engine::kernels::q8act) unsafe fn transpose8(v: &[__m256i; 8]) -> [__m256i; 8] {
    let t: [__m256i; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * (i / 2)], v[2 * (i / 2) + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_epi32(a, b)
        } else {
            _mm256_unpackhi_epi32(a, b)
        }
    });
    // t[0] = r0 r1 lanes 0,1 | 4,5; t[1] = lanes 2,3 | 6,7; t[2], t[3] rows 2, 3; ...
    let u: [__m256i; 8] = std::array::from_fn(|i| {
        let (base, hi) = (4 * (i / 4), i % 4);
        let (a, b) = (t[base + hi / 2], t[base + 2 + hi / 2]);
        if hi % 2 == 0 {
            _mm256_unpacklo_epi64(a, b)
        } else {
            _mm256_unpackhi_epi64(a, b)
        }
    });
    // u[i] (i < 4) = rows 0-3, lane i | lane i + 4; u[4 + i] the same for rows 4-7.
    std::array::from_fn(|g| if g < 4 { _mm256_permute2x128_si256(u[g], u[4 + g], 0x20) } else { _mm256_permute2x128_si256(u[g - 4], u[g], 0x31) })
}

/// Eight rows' block, lane r for row r.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Packed {
    /// Piece `g`: bytes `4r..4r + 4` are row r's integers `4g..4g + 4`.
    q: [[u8; 32]; PIECES],
    /// Each group's scale.
    sc: [[i32; LANES]; 16],
    /// Activation sums `2h`, `2h + 1`: the two multipliers as an i16 pair.
    m: [[i16; 2 * LANES]; 8],
    d: [f32; LANES],
    dmin: [f32; LANES],
}

/// `out[j·n + i]` for weight rows `ws` (any number) and all `n` activation rows.
///
/// SAFETY: the CPU has AVX-512 VNNI and VL (the caller checked, and enabled them).
#[inline(always)]
pub(in super::super) unsafe fn dot_rows(dtype: DType, ws: &[&[u8]], acts: &QActs, out: &mut [f32]) {
    let (n, nb) = (out.len() / ws.len(), acts.k / QK_K);
    assert!(ws.iter().all(|w| w.len() >= nb * dtype.block().1));
    assert!(acts.qs.len() >= n * acts.k && acts.bsums.len() >= n * acts.k / BSUM && acts.d.len() >= n * nb);
    let subs = if dtype == DType::Q6_K { 16 } else { 8 };
    let mut packed = vec![Packed { q: [[0; 32]; PIECES], sc: [[0; LANES]; 16], m: [[0; 2 * LANES]; 8], d: [0.0; LANES], dmin: [0.0; LANES] }; nb];
    for (g, rows) in ws.chunks(LANES).enumerate() {
        // A short last group repeats its last row in the spare lanes (results dropped).
        let eight: [&[u8]; LANES] = std::array::from_fn(|r| rows[r.min(rows.len() - 1)]);
        for (b, pk) in packed.iter_mut().enumerate() {
            super::pieces8(dtype, &eight, b, |c, q| {
                for (g, v) in transpose8(q).iter().enumerate() {
                    _mm256_store_si256(pk.q[8 * c + g].as_mut_ptr() as *mut __m256i, *v);
                }
            });
            for (r, w) in eight.iter().enumerate() {
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
        // Plain loops: a closure holding `tile` would be compiled without the
        // VNNI features, and `dpbusd` would become a call per instruction.
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
            put_tile(&res, (i, cc), n, g, rows.len(), out);
        }
    }
}

/// The tiles over `n` activation rows, as `(first, width)`: the widest of
/// 8, 4, 2 or 1 rows that fits the rows left each time.
pub(in crate::engine::kernels::q8act) fn tiles(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= n {
            return None;
        }
        let cc = [C, 4, 2, 1].into_iter().find(|&w| w <= n - i)?;
        i += cc;
        Some((i - cc, cc))
    })
}

/// Writes a tile's `res[c][r]` (activation row `first + c` times row r of
/// weight group `group`) to `out[(8·group + r)·n + first + c]`, for the
/// group's `rows` real rows.
#[inline(always)]
pub(in crate::engine::kernels::q8act) fn put_tile(res: &[[f32; LANES]; C], (first, cc): (usize, usize), n: usize, group: usize, rows: usize, out: &mut [f32]) {
    for (c, row) in res.iter().enumerate().take(cc) {
        for (r, v) in row.iter().enumerate().take(rows) {
            out[(group * LANES + r) * n + first + c] = *v;
        }
    }
}

/// The module's lane tree `((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7))`
/// on eight vectors at once: element r of the result is row r's.
///
/// SAFETY: AVX is enabled (every caller builds with AVX2).
#[inline(always)]
pub(in crate::engine::kernels::q8act) unsafe fn lane_tree8(l: &[__m256; 8]) -> __m256 {
    _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(l[0], l[4]), _mm256_add_ps(l[1], l[5])), _mm256_add_ps(_mm256_add_ps(l[2], l[6]), _mm256_add_ps(l[3], l[7])))
}

/// Activation rows `first..first + CC` against the eight packed rows, every
/// block; `res[c][r]` is activation row `first + c` times weight row r.
/// `SUBS` groups per block share a scale (8 of 32 for Q4_K/Q5_K, 16 of 16 for Q6_K).
///
/// Compiled with the VNNI features itself, so that `dpbusd` is inlined
/// here however the caller is compiled.
#[inline]
#[target_feature(enable = "avx512vnni,avx512vl")]
unsafe fn tile<const CC: usize, const SUBS: usize>(packed: &[Packed], dtype: DType, acts: &QActs, first: usize, res: &mut [[f32; LANES]; C]) {
    let (k, nb) = (acts.k, packed.len());
    let float_min = dtype != DType::Q6_K;
    let per_group = PIECES / SUBS;
    // Lanes of the module's float order, a vector over the eight weight rows each.
    let mut lanes = [[_mm256_setzero_ps(); 8]; CC];
    for (b, pk) in packed.iter().enumerate() {
        let y: [*const u8; CC] = std::array::from_fn(|c| acts.qs.as_ptr().add((first + c) * k + b * QK_K) as *const u8);
        let mut s = [_mm256_setzero_si256(); CC];
        for j in 0..SUBS {
            let mut sub = [_mm256_setzero_si256(); CC];
            for g in j * per_group..(j + 1) * per_group {
                let w = _mm256_load_si256(pk.q[g].as_ptr() as *const __m256i);
                for c in 0..CC {
                    let yv = _mm256_set1_epi32((y[c].add(4 * g) as *const i32).read_unaligned());
                    sub[c] = _mm256_dpbusd_epi32(sub[c], w, yv);
                }
            }
            let sc = _mm256_load_si256(pk.sc[j].as_ptr() as *const __m256i);
            for c in 0..CC {
                s[c] = _mm256_add_epi32(s[c], _mm256_mullo_epi32(sub[c], sc));
            }
        }
        let mut m = [_mm256_setzero_si256(); CC];
        for h in 0..8 {
            let mv = _mm256_load_si256(pk.m[h].as_ptr() as *const __m256i);
            for (c, m) in m.iter_mut().enumerate() {
                let bs = acts.bsums.as_ptr().add((first + c) * k / BSUM + b * (QK_K / BSUM) + 2 * h) as *const i32;
                *m = _mm256_add_epi32(*m, _mm256_madd_epi16(mv, _mm256_set1_epi32(bs.read_unaligned())));
            }
        }
        let d = _mm256_load_ps(pk.d.as_ptr());
        for c in 0..CC {
            let da = _mm256_set1_ps(*acts.d.get_unchecked((first + c) * nb + b));
            let l = &mut lanes[c][b % 8];
            if float_min {
                *l = _mm256_fmadd_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(s[c]), *l);
                // fnmadd is fma(-m, M, l): negation is exact.
                let dmin = _mm256_load_ps(pk.dmin.as_ptr());
                *l = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, da), _mm256_cvtepi32_ps(m[c]), *l);
            } else {
                *l = _mm256_fmadd_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(_mm256_sub_epi32(s[c], m[c])), *l);
            }
        }
    }
    for (c, l) in lanes.iter().enumerate() {
        _mm256_storeu_ps(res[c].as_mut_ptr(), lane_tree8(l));
    }
}

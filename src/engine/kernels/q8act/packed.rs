//! Q4_K weights laid out again, eight rows side by side, for the integer
//! kernels (llama.cpp numerics) on CPUs with AVX-512 VNNI: dense weights at
//! load, an MoE expert at its first call (`Linear::pack`, `pack_on_first_use`).
//!
//! Why: a decode step reads each weight row once against one activation row,
//! and the in-place kernel (`kquant::avx2`) has to unpack every block's
//! scales and spread each 32-element piece's scale over its lanes, about 75
//! instructions per block: on Zen 4 that kernel, not memory, was the limit
//! of Q4_K decode (one thread, a matrix held in L2: ~15 GB/s of weights;
//! llama.cpp, which lays Q4_K out like this at load, 17 GB/s from memory).
//! Here the eight rows of a group sit in the eight 32-bit lanes of a
//! register, so four activation bytes broadcast to all lanes meet eight rows
//! in one `dpbusd`, and each scale step serves eight rows: about 30
//! instructions per block and row. The same idea as `rows8`, which packs per
//! call for prefill; done once per weight, decode can use it too.
//!
//! The layout keeps the stored nibbles (4 bits a weight): a group's block
//! is 1184 bytes where the eight rows' blocks take 1152, the difference
//! being the scales and mins unpacked from their 6-bit form. The numbers are
//! the module's, bit for bit: `S_b` and `M_b` are exact integers however they
//! are grouped, and the float steps are the same (`d_w · d_a`, `fma` into lane
//! `b % 8`, the lane tree).

use crate::formats::quants::{scale_min_k4, BlockQ4K, QK_K};
use crate::formats::tensor::{DType, RowView};

/// Weight rows per group (one per 32-bit lane of a 256-bit register).
pub const LANES: usize = 8;

/// Block `b` of the eight rows of a group.
#[derive(Clone, Copy, PartialEq)]
#[repr(C, align(32))]
pub(super) struct GroupBlock {
    /// Vector `8c + g` (c < 4, g < 8): bytes `4r..4r + 4` are row r's
    /// `qs[32c + 4g..32c + 4g + 4]`, whose low nibbles are elements
    /// `64c + 4g..+4` (sub-block 2c) and high nibbles `64c + 32 + 4g..+4`
    /// (sub-block 2c + 1).
    qs: [[u8; 32]; 32],
    /// `sc[j][r]`: sub-block j's scale in row r.
    sc: [[u8; LANES]; 8],
    /// `mn[p][2r + i]`: sub-block `2p + i`'s min in row r.
    mn: [[u8; 2 * LANES]; 4],
    /// Each row's `d` and `dmin`, as stored (f16 bits).
    d: [u16; LANES],
    dmin: [u16; LANES],
}

const _: () = assert!(size_of::<GroupBlock>() == 1184);

/// A Q4_K matrix in groups of eight rows: group g's blocks are
/// `blocks[g·nb..(g + 1)·nb]`.
#[derive(PartialEq)]
pub struct PackedQ4K {
    rows: usize,
    nb: usize,
    // Read only by the kernel, which builds without AVX2 leave out (`packs` is false there).
    #[cfg_attr(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c")), allow(dead_code))]
    blocks: Vec<GroupBlock>,
}

impl std::fmt::Debug for PackedQ4K {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedQ4K({} rows x {} blocks)", self.rows, self.nb)
    }
}

/// Whether the packed kernel runs here, for a `rows × k` matrix of `dtype`:
/// Q4_K, whole groups of eight rows, and a CPU with AVX-512 VNNI and VL
/// (and a build with AVX2, FMA and F16C, where the kernel is compiled).
pub fn packs(dtype: DType, rows: usize, k: usize) -> bool {
    let built = cfg!(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"));
    built && dtype == DType::Q4_K && rows > 0 && rows.is_multiple_of(LANES) && k > 0 && k.is_multiple_of(QK_K) && super::has_vnni()
}

/// Lays out `rows` rows of `k` Q4_K elements (`view`, logical order) in
/// groups of eight, the groups spread over the threads (`on_threads`) or
/// all on this one (inside a parallel loop: an MoE expert laid out at its
/// first call, where waiting on other tasks inside a `OnceLock`'s
/// initialiser is better avoided). The caller checked [`packs`] (which also
/// makes sure there are rows and blocks to lay out).
pub fn pack(view: &RowView<'_>, rows: usize, k: usize, on_threads: bool) -> PackedQ4K {
    use rayon::prelude::*;
    let nb = k / QK_K;
    let zero = GroupBlock { qs: [[0; 32]; 32], sc: [[0; LANES]; 8], mn: [[0; 2 * LANES]; 4], d: [0; LANES], dmin: [0; LANES] };
    let mut blocks = vec![zero; rows / LANES * nb];
    let fill = |(g, group): (usize, &mut [GroupBlock])| {
        for r in 0..LANES {
            let row: &[BlockQ4K] = super::blocks_of(view.row(LANES * g + r));
            for (gb, x) in group.iter_mut().zip(row) {
                for c in 0..4 {
                    for q in 0..8 {
                        gb.qs[8 * c + q][4 * r..4 * r + 4].copy_from_slice(&x.qs[32 * c + 4 * q..32 * c + 4 * q + 4]);
                    }
                }
                for j in 0..8 {
                    let (sc, mn) = scale_min_k4(j, &x.scales);
                    gb.sc[j][r] = sc;
                    gb.mn[j / 2][2 * r + j % 2] = mn;
                }
                gb.d[r] = u16::from_le_bytes(x.d);
                gb.dmin[r] = u16::from_le_bytes(x.dmin);
            }
        }
    };
    if on_threads {
        blocks.par_chunks_mut(nb.max(1)).enumerate().for_each(fill);
    } else {
        blocks.chunks_mut(nb.max(1)).enumerate().for_each(fill);
    }
    PackedQ4K { rows, nb, blocks }
}

/// `out[j·n + i]` = packed row `first + j` times activation row i, for
/// `j < out.len() / n` rows (`first` and that count whole groups) and all
/// `n = acts.n` activation rows.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
pub fn dot_rows(p: &PackedQ4K, first: usize, acts: &super::QActs, out: &mut [f32]) {
    let n = acts.n;
    let count = out.len() / n.max(1);
    assert!(n > 0 && first.is_multiple_of(LANES) && count.is_multiple_of(LANES) && first + count <= p.rows, "packed rows {first}..{} of {}", first + count, p.rows);
    assert!(acts.w == DType::Q4_K && acts.k == p.nb * QK_K && super::has_vnni());
    // SAFETY: the CPU has AVX-512 VNNI and VL (asserted); the groups exist.
    unsafe { dot_groups(p, first / LANES, count / LANES, acts, out) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
#[target_feature(enable = "avx512vnni,avx512vl")]
unsafe fn dot_groups(p: &PackedQ4K, g0: usize, groups: usize, acts: &super::QActs, out: &mut [f32]) {
    use super::kquant::rows8::{put_tile, tiles, C};
    let n = acts.n;
    for g in 0..groups {
        let blocks = &p.blocks[(g0 + g) * p.nb..(g0 + g + 1) * p.nb];
        // Plain loops: a closure holding `tile` would lose the VNNI features.
        for (i, cc) in tiles(n) {
            let mut res = [[0f32; LANES]; C];
            match cc {
                C => tile::<C>(blocks, acts, i, &mut res),
                4 => tile::<4>(blocks, acts, i, &mut res),
                2 => tile::<2>(blocks, acts, i, &mut res),
                _ => tile::<1>(blocks, acts, i, &mut res),
            }
            put_tile(&res, (i, cc), n, g, LANES, out);
        }
    }
}

/// Activation rows `first..first + CC` against a group's blocks;
/// `res[c][r]` is activation row `first + c` times the group's row r.
///
/// SAFETY: AVX-512 VNNI and VL; `acts` holds rows `first..first + CC` of
/// `blocks.len()` blocks each.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
#[inline]
#[target_feature(enable = "avx512vnni,avx512vl")]
unsafe fn tile<const CC: usize>(blocks: &[GroupBlock], acts: &super::QActs, first: usize, res: &mut [[f32; LANES]; super::kquant::rows8::C]) {
    use super::BSUM;
    use std::arch::x86_64::*;
    let (k, nb) = (acts.k, blocks.len());
    let nibble = _mm256_set1_epi8(0x0F);
    let mut lanes = [[_mm256_setzero_ps(); 8]; CC];
    for (b, gb) in blocks.iter().enumerate() {
        let y: [*const u8; CC] = std::array::from_fn(|c| acts.qs.as_ptr().add((first + c) * k + b * QK_K) as *const u8);
        let mut s = [_mm256_setzero_si256(); CC];
        for c in 0..4 {
            // Sub-blocks 2c (low nibbles) and 2c + 1 (high), eight rows each.
            let (mut lo, mut hi) = ([_mm256_setzero_si256(); CC], [_mm256_setzero_si256(); CC]);
            for q in 0..8 {
                let v = _mm256_load_si256(gb.qs[8 * c + q].as_ptr() as *const __m256i);
                let (vl, vh) = (_mm256_and_si256(v, nibble), _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble));
                for i in 0..CC {
                    let yl = _mm256_set1_epi32((y[i].add(64 * c + 4 * q) as *const i32).read_unaligned());
                    let yh = _mm256_set1_epi32((y[i].add(64 * c + 32 + 4 * q) as *const i32).read_unaligned());
                    lo[i] = _mm256_dpbusd_epi32(lo[i], vl, yl);
                    hi[i] = _mm256_dpbusd_epi32(hi[i], vh, yh);
                }
            }
            let scl = _mm256_cvtepu8_epi32(_mm_loadl_epi64(gb.sc[2 * c].as_ptr() as *const __m128i));
            let sch = _mm256_cvtepu8_epi32(_mm_loadl_epi64(gb.sc[2 * c + 1].as_ptr() as *const __m128i));
            for i in 0..CC {
                s[i] = _mm256_add_epi32(s[i], _mm256_add_epi32(_mm256_mullo_epi32(lo[i], scl), _mm256_mullo_epi32(hi[i], sch)));
            }
        }
        // M: sub-block j's min times its two activation sums, two sub-blocks
        // per `madd` (i16 pairs: min and next min against the pair sums).
        let mins: [__m256i; 4] = std::array::from_fn(|p| _mm256_cvtepu8_epi16(_mm_load_si128(gb.mn[p].as_ptr() as *const __m128i)));
        let mut m = [_mm256_setzero_si256(); CC];
        for (i, m) in m.iter_mut().enumerate() {
            // The block's 16 sums, added in pairs: sub-block j's sum is word j.
            let bs = acts.bsums.as_ptr().add((first + i) * k / BSUM + b * (QK_K / BSUM));
            let v = _mm256_loadu_si256(bs as *const __m256i);
            let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let w = [_mm_extract_epi32::<0>(pairs), _mm_extract_epi32::<1>(pairs), _mm_extract_epi32::<2>(pairs), _mm_extract_epi32::<3>(pairs)];
            for (mv, w) in mins.iter().zip(w) {
                let w = _mm256_set1_epi32(w);
                *m = _mm256_add_epi32(*m, _mm256_madd_epi16(*mv, w));
            }
        }
        let d = _mm256_cvtph_ps(_mm_load_si128(gb.d.as_ptr() as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_load_si128(gb.dmin.as_ptr() as *const __m128i));
        for i in 0..CC {
            let da = _mm256_set1_ps(*acts.d.get_unchecked((first + i) * nb + b));
            let l = &mut lanes[i][b % 8];
            *l = _mm256_fmadd_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(s[i]), *l);
            // fnmadd is fma(-m, M, l): negation is exact.
            *l = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, da), _mm256_cvtepi32_ps(m[i]), *l);
        }
    }
    for (c, l) in lanes.iter().enumerate() {
        _mm256_storeu_ps(res[c].as_mut_ptr(), super::kquant::rows8::lane_tree8(l));
    }
}

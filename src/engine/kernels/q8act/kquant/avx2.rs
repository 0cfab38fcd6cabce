//! The AVX2 kernel (and its AVX-512 VNNI variant): each weight block is
//! unpacked in registers, 32 elements at a time, and every piece meets
//! [`TILE`] activation rows before the next is unpacked (a register tile).
//! Per piece and row: `maddubs` (unsigned integer × activation, in i16 pairs)
//! then `madd` with each pair's scale (VNNI: `dpwssd`, the same sum fused).
//! Each row keeps its own lanes and the module's float order.

use std::arch::x86_64::*;

use super::super::q32::sum_each;
use super::super::{blocks_of, lane_tree, QActs, BSUM};
use super::Q6_K_OFFSET;
use crate::engine::kernels::decode::k4_scales_mins;
use crate::formats::quants::{f32_of, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
use crate::formats::tensor::DType;

/// Activation rows that share each unpacked piece (the rest go one at a time).
const TILE: usize = 8;
/// 32-element pieces per block.
const PIECES: usize = QK_K / 32;
/// With `stream`, how far past each block (bytes) a one-row call asks for the
/// weights it will read next.
const STREAM_AHEAD: usize = 3072;

/// `dot_rows`, with `dpwssd` where `VNNI` (the caller has checked the CPU
/// and enabled the feature). With `stream`, each block of a row read for one
/// activation row asks for the bytes `STREAM_AHEAD` past it (into L1: the
/// rows of a matrix follow each other, so these are the next rows' blocks;
/// a hint, results never depend on it).
#[inline(always)]
pub(in super::super) fn dot_rows<const VNNI: bool>(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32], stream: bool) {
    match dtype {
        DType::Q4_K => rows::<VNNI, _, _>(blocks_of::<BlockQ4K>(w), |b| K4::new(head(b), &b.qs, None), acts, out, stream),
        DType::Q5_K => rows::<VNNI, _, _>(blocks_of::<BlockQ5K>(w), |b| K4::new(head(b), &b.qs, Some(&b.qh)), acts, out, stream),
        _ => rows::<VNNI, _, _>(blocks_of::<BlockQ6K>(w), Q6K::new, acts, out, stream),
    }
}

/// The first 16 bytes of a Q4_K/Q5_K block: `d`, `dmin`, `scales`.
#[inline(always)]
fn head<B: bytemuck::Pod>(b: &B) -> &[u8; 16] {
    const _: () = assert!(std::mem::offset_of!(BlockQ4K, qs) == 16 && std::mem::offset_of!(BlockQ5K, qh) == 16);
    bytemuck::bytes_of(b)[..16].try_into().unwrap()
}

/// A weight block in registers, handed out a piece at a time.
trait Pieces {
    /// Piece `c` (elements `32c..32c + 32`): the unsigned integers and each i16 pair's scale.
    fn piece(&self, c: usize) -> (__m256i, __m256i);
    /// The multiplier of each of the block's 16 activation sums (i16).
    fn mins(&self) -> __m256i;
    /// The block's scale `d`.
    fn d(&self) -> f32;
    /// Q4_K/Q5_K's `dmin` (M is a float term); None for Q6_K (M comes off S).
    fn dmin(&self) -> Option<f32>;
}

/// Every activation row of `acts` against the weight row `blocks`, [`TILE`] rows at a time.
#[inline(always)]
fn rows<'a, const VNNI: bool, B, P: Pieces>(blocks: &'a [B], unpack: impl Fn(&'a B) -> P, acts: &QActs, out: &mut [f32], stream: bool) {
    let (n, nb) = (out.len(), acts.k / QK_K);
    let blocks = &blocks[..nb];
    // What block_sums and the scale reads below rely on.
    assert!(acts.qs.len() >= n * acts.k && acts.bsums.len() >= n * acts.k / BSUM && acts.d.len() >= n * nb);
    let whole = n - n % TILE;
    for (t, o) in out[..whole].chunks_exact_mut(TILE).enumerate() {
        *<&mut [f32; TILE]>::try_from(o).unwrap() = tile::<VNNI, _, _>(blocks, &unpack, acts, t * TILE);
    }
    for (i, o) in out.iter_mut().enumerate().skip(whole) {
        *o = single::<VNNI, _, _>(blocks, &unpack, acts, i, stream);
    }
}

/// `$body` for each piece `$c` in `0..PIECES`, unrolled so that `$c` is a
/// constant (the piece's shifts, masks and shuffles then are too).
#[rustfmt::skip]
macro_rules! for_each_piece {
    ($c:ident, $body:block) => {{
        const _: () = assert!(PIECES == 8);
        { let $c = 0; $body }
        { let $c = 1; $body }
        { let $c = 2; $body }
        { let $c = 3; $body }
        { let $c = 4; $body }
        { let $c = 5; $body }
        { let $c = 6; $body }
        { let $c = 7; $body }
    }};
}

/// Block `b`'s integer sums with activation rows `first..first + R`: `S`
/// and `M` (module comment) spread over 8 i32 lanes per row. Each piece is
/// unpacked once and meets the R rows while in registers.
///
/// SAFETY: AVX2 is enabled for this build (VNNI checked by the caller);
/// `rows` checked that rows `first..first + R` are within `acts`.
#[inline(always)]
unsafe fn block_sums<const VNNI: bool, const R: usize>(p: &impl Pieces, b: usize, acts: &QActs, first: usize) -> [(__m256i, __m256i); R] {
    let k = acts.k;
    let y = acts.qs.as_ptr().add(first * k + b * QK_K);
    // A row alone has no other rows' chains to overlap with: its even and odd
    // pieces go to two chains (the sums are integers, exact in any order).
    let mut acc2 = [[_mm256_setzero_si256(); R]; 2];
    for_each_piece!(c, {
        let (q, sc) = p.piece(c);
        for (r, acc) in acc2[if R == 1 { c % 2 } else { 0 }].iter_mut().enumerate() {
            let y = _mm256_loadu_si256(y.add(r * k + 32 * c) as *const __m256i);
            *acc = madd_add::<VNNI>(*acc, _mm256_maddubs_epi16(q, y), sc);
        }
    });
    let acc: [__m256i; R] = if R == 1 { [_mm256_add_epi32(acc2[0][0], acc2[1][0]); R] } else { acc2[0] };
    let sums = acts.bsums.as_ptr().add((first * k + b * QK_K) / BSUM);
    std::array::from_fn(|r| (acc[r], _mm256_madd_epi16(_mm256_loadu_si256(sums.add(r * k / BSUM) as *const __m256i), p.mins())))
}

/// Activation row `i` against every block. Block b goes to lane b % 8, so
/// eight consecutive blocks fill the eight lanes once: their sums are reduced
/// together ([`sum_each`]) and the module's float step is one vector
/// operation per group of eight, lane by lane in the same order.
#[inline(always)]
fn single<'a, const VNNI: bool, B, P: Pieces>(blocks: &'a [B], unpack: &impl Fn(&'a B) -> P, acts: &QActs, i: usize, stream: bool) -> f32 {
    let nb = blocks.len();
    let da = &acts.d[i * nb..(i + 1) * nb];
    // SAFETY (all blocks): AVX2 and FMA are enabled for this build; see
    // block_sums, `rows` checked row i.
    unsafe {
        let mut lanes = _mm256_setzero_ps();
        for (g, group) in blocks.chunks(8).enumerate() {
            let (mut s, mut m) = ([_mm256_setzero_si256(); 8], [_mm256_setzero_si256(); 8]);
            let (mut d, mut dmin) = ([0f32; 8], None::<[f32; 8]>);
            for (j, block) in group.iter().enumerate() {
                let b = 8 * g + j;
                if stream {
                    // Addresses past the row may be outside any allocation:
                    // only computed (wrapping) and prefetched, never read.
                    let at = (block as *const B).cast::<u8>().wrapping_add(STREAM_AHEAD);
                    for off in (0..size_of::<B>()).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(off).cast::<i8>());
                    }
                }
                let p = unpack(block);
                let [(sj, mj)] = block_sums::<VNNI, 1>(&p, b, acts, i);
                d[j] = p.d() * da[b];
                match p.dmin() {
                    Some(dm) => {
                        (s[j], m[j]) = (sj, mj);
                        dmin.get_or_insert([0f32; 8])[j] = dm * da[b];
                    }
                    // Q6_K: S - M in integers, as the plain twin.
                    None => s[j] = _mm256_sub_epi32(sj, mj),
                }
            }
            // A last, shorter group has d = S = 0 in the lanes it has no block
            // for, and adding 0 · 0 leaves a lane as it was: lanes start at +0
            // and a sum can only be -0 when both terms are.
            lanes = _mm256_fmadd_ps(_mm256_loadu_ps(d.as_ptr()), _mm256_cvtepi32_ps(sum_each(&s)), lanes);
            if let Some(dmin) = dmin {
                // fnmadd is fma(-m, M, l): negation is exact.
                lanes = _mm256_fnmadd_ps(_mm256_loadu_ps(dmin.as_ptr()), _mm256_cvtepi32_ps(sum_each(&m)), lanes);
            }
        }
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), lanes);
        lane_tree(&l)
    }
}

/// [`TILE`] activation rows against every block. The lanes are kept
/// transposed, `lanes[l]` holding lane l of every row, so one vector
/// operation does the module's float step for all rows at once.
#[inline(always)]
fn tile<'a, const VNNI: bool, B, P: Pieces>(blocks: &'a [B], unpack: &impl Fn(&'a B) -> P, acts: &QActs, first: usize) -> [f32; TILE] {
    let nb = blocks.len();
    // SAFETY (all blocks): AVX2 and FMA are enabled for this build; see
    // block_sums, `rows` checked rows first..first + TILE.
    let mut lanes = [unsafe { _mm256_setzero_ps() }; 8];
    for (b, block) in blocks.iter().enumerate() {
        let p = unpack(block);
        unsafe {
            let sums = block_sums::<VNNI, TILE>(&p, b, acts, first);
            // Row r's S and M in element r.
            let s = sum_each(&sums.map(|(s, _)| s));
            let m = sum_each(&sums.map(|(_, m)| m));
            let da: [f32; TILE] = std::array::from_fn(|r| *acts.d.get_unchecked((first + r) * nb + b));
            let da = _mm256_loadu_ps(da.as_ptr());
            let l = &mut lanes[b % 8];
            match p.dmin() {
                Some(dmin) => {
                    *l = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(p.d()), da), _mm256_cvtepi32_ps(s), *l);
                    // fnmadd is fma(-m, M, l): negation is exact.
                    *l = _mm256_fnmadd_ps(_mm256_mul_ps(_mm256_set1_ps(dmin), da), _mm256_cvtepi32_ps(m), *l);
                }
                None => *l = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(p.d()), da), _mm256_cvtepi32_ps(_mm256_sub_epi32(s, m)), *l),
            }
        }
    }
    // `lane_tree`, a row per element.
    let mut out = [0f32; TILE];
    // SAFETY: AVX2 is enabled for this build.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), super::rows8::lane_tree8(&lanes)) };
    out
}

/// `acc + madd(pairs, scales)`: exact, as `maddubs` pairs stay below 2·63·127
/// and each i32 lane below 8·2·16002·128.
#[inline(always)]
fn madd_add<const VNNI: bool>(acc: __m256i, pairs: __m256i, scales: __m256i) -> __m256i {
    // SAFETY: AVX2 is enabled for this build; VNNI only when the caller checked it.
    unsafe {
        if VNNI {
            dpwssd(acc, pairs, scales)
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, scales))
        }
    }
}

#[inline]
#[target_feature(enable = "avx512vnni,avx512vl")]
fn dpwssd(acc: __m256i, pairs: __m256i, scales: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, pairs, scales)
}

/// Block `b` of eight weight rows as unsigned integers, a piece at a time:
/// `f(c, q)` gets `q[r]`, row r's integers `32c..32c + 32` (for the `rows8` kernel).
///
/// SAFETY: AVX2 is enabled for this build; every row holds more than `b` blocks.
#[inline(always)]
pub(super) unsafe fn pieces8(dtype: DType, rows: &[&[u8]; 8], b: usize, mut f: impl FnMut(usize, &[__m256i; 8])) {
    match dtype {
        DType::Q4_K => {
            let p: [K4; 8] = std::array::from_fn(|r| {
                let x = blocks_of::<BlockQ4K>(rows[r]).get_unchecked(b);
                K4::new(head(x), &x.qs, None)
            });
            for_each_piece!(c, { f(c, &std::array::from_fn(|r| p[r].piece(c).0)) });
        }
        DType::Q5_K => {
            let p: [K4; 8] = std::array::from_fn(|r| {
                let x = blocks_of::<BlockQ5K>(rows[r]).get_unchecked(b);
                K4::new(head(x), &x.qs, Some(&x.qh))
            });
            for_each_piece!(c, { f(c, &std::array::from_fn(|r| p[r].piece(c).0)) });
        }
        _ => {
            let p: [Q6K; 8] = std::array::from_fn(|r| Q6K::new(blocks_of::<BlockQ6K>(rows[r]).get_unchecked(b)));
            for_each_piece!(c, { f(c, &std::array::from_fn(|r| p[r].piece(c).0)) });
        }
    }
}

/// A Q4_K block, or a Q5_K block with its fifth bits `qh`.
struct K4<'a> {
    qs: &'a [u8; QK_K / 2],
    qh: Option<__m256i>,
    /// The 8 scales as i16, in both 128-bit halves.
    sc: __m256i,
    mins: __m256i,
    d: f32,
    dmin: f32,
}

impl<'a> K4<'a> {
    /// `head` is the block's first 16 bytes: `d`, `dmin` and `scales`.
    #[inline(always)]
    fn new(head: &[u8; 16], qs: &'a [u8; QK_K / 2], qh: Option<&[u8; QK_K / 8]>) -> Self {
        let v = k4_scales_mins(head);
        // SAFETY: AVX2 is enabled for this build; qh holds 32 bytes.
        unsafe {
            K4 {
                qs,
                qh: qh.map(|h| _mm256_loadu_si256(h.as_ptr() as *const __m256i)),
                sc: _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(v)),
                // Each sub-block's min twice: it covers two sums of 16.
                mins: _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(v, v)),
                d: f32_of([head[0], head[1]]),
                dmin: f32_of([head[2], head[3]]),
            }
        }
    }
}

impl Pieces for K4<'_> {
    /// Piece c is the low (even c) or high nibbles of `qs[32(c/2)..]`, and for
    /// Q5_K bit c of `qh` as the fifth bit; its scale is sub-block c's.
    #[inline(always)]
    fn piece(&self, c: usize) -> (__m256i, __m256i) {
        // SAFETY: AVX2 is enabled for this build; qs holds 32(c/2) + 32 bytes.
        unsafe {
            let x = _mm256_loadu_si256(self.qs.as_ptr().add(32 * (c / 2)) as *const __m256i);
            let nibble = _mm256_set1_epi8(0x0F);
            let mut q = if c.is_multiple_of(2) { _mm256_and_si256(x, nibble) } else { _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble) };
            if let Some(qh) = self.qh {
                let bit = _mm256_set1_epi8(1 << c);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                q = _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
            }
            let pick = _mm256_set1_epi16((((2 * c + 1) << 8) | (2 * c)) as i16);
            (q, _mm256_shuffle_epi8(self.sc, pick))
        }
    }

    #[inline(always)]
    fn mins(&self) -> __m256i {
        self.mins
    }

    #[inline(always)]
    fn d(&self) -> f32 {
        self.d
    }

    #[inline(always)]
    fn dmin(&self) -> Option<f32> {
        Some(self.dmin)
    }
}

/// A Q6_K block.
struct Q6K<'a> {
    ql: &'a [u8; QK_K / 2],
    qh: &'a [u8; QK_K / 4],
    /// The 16 signed scales as bytes.
    sc: __m128i,
    d: f32,
}

impl<'a> Q6K<'a> {
    #[inline(always)]
    fn new(b: &'a BlockQ6K) -> Self {
        // SAFETY: AVX2 is enabled for this build; scales holds 16 bytes.
        let sc = unsafe { _mm_loadu_si128(b.scales.as_ptr() as *const __m128i) };
        Q6K { ql: &b.ql, qh: &b.qh, sc, d: f32_of(b.d) }
    }
}

impl Pieces for Q6K<'_> {
    /// Piece c = 4n + j: nibble j/2 of `ql[64n + 32(j%2)..]` and bits 2j, 2j+1
    /// of `qh[32n..]` as bits 4 and 5; scales 2c (first 16) and 2c + 1.
    #[inline(always)]
    fn piece(&self, c: usize) -> (__m256i, __m256i) {
        let (n, j) = (c / 4, c % 4);
        // SAFETY: AVX2 is enabled for this build; ql holds 64n + 64 bytes, qh 32n + 32.
        unsafe {
            let l = _mm256_loadu_si256(self.ql.as_ptr().add(64 * n + 32 * (j % 2)) as *const __m256i);
            let h = _mm256_loadu_si256(self.qh.as_ptr().add(32 * n) as *const __m256i);
            let nibble = _mm256_set1_epi8(0x0F);
            let lo = if j < 2 { _mm256_and_si256(l, nibble) } else { _mm256_and_si256(_mm256_srli_epi16(l, 4), nibble) };
            // Bits 2j, 2j+1 of each byte moved to 4, 5 (16-bit shifts, masked after).
            let hi = match j {
                0 => _mm256_slli_epi16(h, 4),
                1 => _mm256_slli_epi16(h, 2),
                2 => h,
                _ => _mm256_srli_epi16(h, 2),
            };
            let q = _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)));
            let pick = _mm_set_epi64x(0x0101_0101_0101_0101 * (2 * c as i64 + 1), 0x0101_0101_0101_0101 * 2 * c as i64);
            (q, _mm256_cvtepi8_epi16(_mm_shuffle_epi8(self.sc, pick)))
        }
    }

    /// `32 · scale` of each sum: the offset, taken off in integers.
    #[inline(always)]
    fn mins(&self) -> __m256i {
        // SAFETY: AVX2 is enabled for this build.
        unsafe { _mm256_mullo_epi16(_mm256_cvtepi8_epi16(self.sc), _mm256_set1_epi16(Q6_K_OFFSET as i16)) }
    }

    #[inline(always)]
    fn d(&self) -> f32 {
        self.d
    }

    #[inline(always)]
    fn dmin(&self) -> Option<f32> {
        None
    }
}

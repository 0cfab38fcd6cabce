//! The AVX2 kernel (and its AVX-512 VNNI variant): each weight block is
//! unpacked in registers, 32 elements at a time, and every piece meets
//! [`TILE`] activation rows before the next is unpacked (a register tile).
//! Per piece and row: `maddubs` (unsigned integer × activation, in i16 pairs)
//! then `madd` with each pair's scale (VNNI: `dpwssd`, the same sum fused).
//! Each row keeps its own lanes and the module's float order.

use std::arch::x86_64::*;

use super::super::q32::{hsum, sum_each};
use super::super::{accumulate, blocks_of, lane_tree, QActs, BSUM};
use super::Q6_K_OFFSET;
use crate::formats::quants::{f32_of, BlockQ4K, BlockQ5K, BlockQ6K, QK_K, K_SCALE_SIZE};
use crate::formats::tensor::DType;

/// Activation rows that share each unpacked piece (the rest go one at a time).
const TILE: usize = 8;
/// 32-element pieces per block.
const PIECES: usize = QK_K / 32;

/// `dot_rows`, with `dpwssd` where `vnni` (the caller has checked the CPU).
pub(in super::super) fn dot_rows(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32], vnni: bool) {
    if vnni {
        // SAFETY: the caller has found AVX-512 VNNI and VL on this CPU.
        unsafe { dot_rows_vnni(dtype, w, acts, out) }
    } else {
        dot_rows_isa::<false>(dtype, w, acts, out)
    }
}

#[target_feature(enable = "avx512vnni,avx512vl")]
unsafe fn dot_rows_vnni(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32]) {
    dot_rows_isa::<true>(dtype, w, acts, out)
}

#[inline(always)]
fn dot_rows_isa<const VNNI: bool>(dtype: DType, w: &[u8], acts: &QActs, out: &mut [f32]) {
    match dtype {
        DType::Q4_K => rows::<VNNI, _, _>(blocks_of::<BlockQ4K>(w), |b| K4::new(b.d, b.dmin, &b.scales, &b.qs, None), acts, out),
        DType::Q5_K => rows::<VNNI, _, _>(blocks_of::<BlockQ5K>(w), |b| K4::new(b.d, b.dmin, &b.scales, &b.qs, Some(&b.qh)), acts, out),
        _ => rows::<VNNI, _, _>(blocks_of::<BlockQ6K>(w), Q6K::new, acts, out),
    }
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
fn rows<'a, const VNNI: bool, B, P: Pieces>(blocks: &'a [B], unpack: impl Fn(&'a B) -> P, acts: &QActs, out: &mut [f32]) {
    let blocks = &blocks[..acts.k / QK_K];
    let first = out.len() - out.len() % TILE;
    for (t, o) in out[..first].chunks_exact_mut(TILE).enumerate() {
        let rows = std::array::from_fn(|r| row(acts, t * TILE + r, blocks.len()));
        *<&mut [f32; TILE]>::try_from(o).unwrap() = tile::<VNNI, _, _>(blocks, &unpack, &rows);
    }
    for (i, o) in out.iter_mut().enumerate().skip(first) {
        *o = single::<VNNI, _, _>(blocks, &unpack, &row(acts, i, blocks.len()));
    }
}

/// Activation row `i`'s values, scales and sums, checked to cover `nb` blocks.
#[inline(always)]
fn row(acts: &QActs, i: usize, nb: usize) -> (&[i8], &[f32], &[i16]) {
    let (y, d, s) = acts.row(i);
    assert!(y.len() >= nb * QK_K && d.len() >= nb && s.len() >= nb * QK_K / BSUM);
    (y, d, s)
}

/// Block `b`'s integer sums with `R` activation rows: `S` and `M` (module
/// comment) spread over 8 i32 lanes per row. Each piece is unpacked once and
/// meets the R rows while in registers.
#[inline(always)]
fn block_sums<const VNNI: bool, const R: usize>(p: &impl Pieces, b: usize, rows: &[(&[i8], &[f32], &[i16]); R]) -> [(__m256i, __m256i); R] {
    // SAFETY (all blocks): AVX2 is enabled for this build (VNNI checked by
    // the caller); `row` checked that every row holds block b's 256 values and 16 sums.
    let mut acc = [unsafe { _mm256_setzero_si256() }; R];
    for c in 0..PIECES {
        let (q, sc) = p.piece(c);
        for (acc, (ya, _, _)) in acc.iter_mut().zip(rows) {
            unsafe {
                let y = _mm256_loadu_si256(ya.as_ptr().add(b * QK_K + 32 * c) as *const __m256i);
                *acc = madd_add::<VNNI>(*acc, _mm256_maddubs_epi16(q, y), sc);
            }
        }
    }
    std::array::from_fn(|r| unsafe {
        let sums = _mm256_loadu_si256(rows[r].2.as_ptr().add(b * QK_K / BSUM) as *const __m256i);
        (acc[r], _mm256_madd_epi16(sums, p.mins()))
    })
}

/// One activation row against every block, its lanes in scalars.
#[inline(always)]
fn single<'a, const VNNI: bool, B, P: Pieces>(blocks: &'a [B], unpack: &impl Fn(&'a B) -> P, row: &(&[i8], &[f32], &[i16])) -> f32 {
    let mut lanes = [0f32; 8];
    for (b, block) in blocks.iter().enumerate() {
        let p = unpack(block);
        let [(s, m)] = block_sums::<VNNI, 1>(&p, b, std::slice::from_ref(row).try_into().unwrap());
        // SAFETY: AVX2 is enabled for this build.
        let (s, m) = unsafe { (hsum(s), hsum(m)) };
        let da = row.1[b];
        match p.dmin() {
            Some(dmin) => accumulate(&mut lanes, b, p.d() * da, s, Some((dmin * da, m))),
            None => accumulate(&mut lanes, b, p.d() * da, s - m, None),
        }
    }
    lane_tree(&lanes)
}

/// [`TILE`] activation rows against every block. The lanes are kept
/// transposed, `lanes[l]` holding lane l of every row, so one vector
/// operation does the module's float step for all rows at once.
#[inline(always)]
fn tile<'a, const VNNI: bool, B, P: Pieces>(blocks: &'a [B], unpack: &impl Fn(&'a B) -> P, rows: &[(&[i8], &[f32], &[i16]); TILE]) -> [f32; TILE] {
    // SAFETY (all blocks): AVX2 and FMA are enabled for this build.
    let mut lanes = [unsafe { _mm256_setzero_ps() }; 8];
    for (b, block) in blocks.iter().enumerate() {
        let p = unpack(block);
        let sums = block_sums::<VNNI, TILE>(&p, b, rows);
        unsafe {
            // Row r's S and M in element r.
            let s = sum_each(&sums.map(|(s, _)| s));
            let m = sum_each(&sums.map(|(_, m)| m));
            let da = _mm256_loadu_ps(rows.map(|(_, d, _)| d[b]).as_ptr());
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
    unsafe {
        let l = &lanes;
        let sum = _mm256_add_ps(
            _mm256_add_ps(_mm256_add_ps(l[0], l[4]), _mm256_add_ps(l[1], l[5])),
            _mm256_add_ps(_mm256_add_ps(l[2], l[6]), _mm256_add_ps(l[3], l[7])),
        );
        _mm256_storeu_ps(out.as_mut_ptr(), sum);
    }
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

/// The `[sc0..sc7, m0..m7]` of a Q4_K/Q5_K block's 12 packed bytes: what
/// `scale_min_k4` reads, four bytes at a time (ggml's `utmp` shuffle).
fn k4_scales_mins(s: &[u8; K_SCALE_SIZE]) -> [u32; 4] {
    const LOW6: u32 = 0x3F3F_3F3F;
    const LOW4: u32 = 0x0F0F_0F0F;
    const LOW2: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a, b, c) = (word(0), word(1), word(2));
    // Sub-blocks 4..7 take their top two bits from the first 8 bytes' top bits.
    [a & LOW6, (c & LOW4) | ((a >> 6) & LOW2) << 4, b & LOW6, ((c >> 4) & LOW4) | ((b >> 6) & LOW2) << 4]
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
    #[inline(always)]
    fn new(d: [u8; 2], dmin: [u8; 2], scales: &[u8; K_SCALE_SIZE], qs: &'a [u8; QK_K / 2], qh: Option<&[u8; QK_K / 8]>) -> Self {
        let sm = k4_scales_mins(scales);
        // SAFETY: AVX2 is enabled for this build; qh holds 32 bytes.
        unsafe {
            let v = _mm_loadu_si128(sm.as_ptr() as *const __m128i);
            K4 {
                qs,
                qh: qh.map(|h| _mm256_loadu_si256(h.as_ptr() as *const __m256i)),
                sc: _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(v)),
                // Each sub-block's min twice: it covers two sums of 16.
                mins: _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(v, v)),
                d: f32_of(d),
                dmin: f32_of(dmin),
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
            let mut q = if c % 2 == 0 { _mm256_and_si256(x, nibble) } else { _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::quants::scale_min_k4;

    /// The word shuffle reads the same scales and mins as `scale_min_k4`.
    #[test]
    fn k4_scales_mins_match_scale_min_k4() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..1000 {
            let bytes: [u8; K_SCALE_SIZE] = std::array::from_fn(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 56) as u8
            });
            let got: Vec<u8> = k4_scales_mins(&bytes).iter().flat_map(|w| w.to_le_bytes()).collect();
            for j in 0..8 {
                assert_eq!((got[j], got[8 + j]), scale_min_k4(j, &bytes), "sub-block {j} of {bytes:?}");
            }
        }
    }
}

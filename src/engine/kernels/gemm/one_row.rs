//! One activation row against up to `R1` weight rows read in place: the
//! stored values go straight into their fused multiply-adds, with no decoded
//! scratch to write and read back (a decode step's exact kernels for F16,
//! BF16, Q8_0 and, with AVX-512, Q4_K and Q6_K), in the order of `tile` and
//! `finish`.
//! Compiled where AVX2, FMA and F16C are (the parent includes it only there).

use crate::engine::kernels::{decode, q8act};
use crate::formats::quants;
use crate::formats::tensor::DType;

use super::{finish, KC};

/// `$f::<RR>(args)` for `RR` = `$n`, from 1 to `R1` (nothing for others).
macro_rules! with_rows {
    ($n:expr, $f:ident($($a:expr),*)) => {
        match $n {
            8 => $f::<8>($($a),*),
            7 => $f::<7>($($a),*),
            6 => $f::<6>($($a),*),
            5 => $f::<5>($($a),*),
            4 => $f::<4>($($a),*),
            3 => $f::<3>($($a),*),
            2 => $f::<2>($($a),*),
            1 => $f::<1>($($a),*),
            _ => {}
        }
    };
}

/// Each row's lanes, summed by `finish` (no tail), into `y`.
#[inline(always)]
unsafe fn put_lanes(lanes: &[std::arch::x86_64::__m256], y: &mut [f32]) {
    for (l, out) in lanes.iter().zip(y.iter_mut()) {
        let mut v = [0f32; 8];
        std::arch::x86_64::_mm256_storeu_ps(v.as_mut_ptr(), *l);
        *out = finish(&v, &[], &[]);
    }
}

/// Asks for block `blk` (of `size` bytes) of every row in `ahead`, into L2.
#[inline(always)]
unsafe fn ask_block(ahead: &[Option<&[u8]>], blk: usize, size: usize) {
    use std::arch::x86_64::*;
    for a in ahead.iter().flatten() {
        for off in (0..size).step_by(64) {
            _mm_prefetch::<_MM_HINT_T1>(a.as_ptr().add(blk * size + off) as *const i8);
        }
    }
}

/// One activation row against up to `R1` f16 or bf16 rows read in place:
/// each group of eight halves is widened to f32 (exact) straight into its
/// fused multiply-add, with no decoded scratch to write and read back. Same
/// order as `tile` and `finish`: a chain from zero per `KC` block and lane,
/// added to the running lanes, then the lane tree and the tail.
///
/// While a row is read, the same bytes of the row `next` has in its place
/// are asked for (into L2), so the following rows are on their way.
///
/// SAFETY: AVX2, FMA and F16C enabled; each row holds `2 · x.len()` bytes.
pub(super) unsafe fn halves(f16: bool, rows: &[&[u8]], x: &[f32], y: &mut [f32], next: &[&[u8]]) {
    with_rows!(rows.len(), halves_tile(f16, rows, x, y, next))
}

#[inline]
unsafe fn halves_tile<const RR: usize>(f16: bool, rows: &[&[u8]], x: &[f32], y: &mut [f32], next: &[&[u8]]) {
    use std::arch::x86_64::*;
    let k = x.len();
    let k8 = k - k % 8;
    let p: [*const u8; RR] = std::array::from_fn(|r| rows[r].as_ptr());
    // The row to prefetch beside row r: one of `next` of the same length (else none).
    let ahead: [Option<&[u8]>; RR] = std::array::from_fn(|r| next.get(r).copied().filter(|n| n.len() >= 2 * k8));
    // Eight halves at element `e` of row r, as f32.
    let load = |r: usize, e: usize| {
        let h = _mm_loadu_si128(p[r].add(2 * e) as *const __m128i);
        if f16 {
            _mm256_cvtph_ps(h)
        } else {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    };
    let mut lanes = [_mm256_setzero_ps(); RR];
    for k0 in (0..k8).step_by(KC) {
        let kl = (k0 + KC).min(k8) - k0;
        let mut acc = [_mm256_setzero_ps(); RR];
        let mut s = 0;
        while s < kl {
            let xv = _mm256_loadu_ps(x.as_ptr().add(k0 + s));
            if (k0 + s) % 32 == 0 {
                // A new 64-byte line of halves: ask for the next rows' same line.
                for a in ahead.iter().flatten() {
                    _mm_prefetch::<_MM_HINT_T1>(a.as_ptr().add(2 * (k0 + s)) as *const i8);
                }
            }
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(load(r, k0 + s), xv, *a);
            }
            s += 8;
        }
        for (l, a) in lanes.iter_mut().zip(acc) {
            *l = _mm256_add_ps(*l, a);
        }
    }
    for (r, (l, out)) in lanes.iter().zip(y.iter_mut()).enumerate() {
        let mut v = [0f32; 8];
        _mm256_storeu_ps(v.as_mut_ptr(), *l);
        let mut wtail = [0f32; 8];
        if k8 < k {
            quants::dequantize(if f16 { DType::F16 } else { DType::BF16 }, &rows[r][2 * k8..2 * k], &mut wtail[..k - k8]);
        }
        *out = finish(&v, &wtail[..k - k8], &x[k8..]);
    }
}

/// One activation row against up to `R1` Q8_0 rows read in place: each group
/// of eight quants is widened and scaled (`q · d`, the decoder's exact value)
/// straight into its fused multiply-add, as `halves` does for halves,
/// in the same order as `tile` and `finish` (no tail: `k` is whole blocks).
/// While a block is read, the same block of the rows `next` holds is asked
/// for (into L2).
///
/// SAFETY: AVX2, FMA and F16C enabled; `x.len()` is a multiple of 32 and each
/// row holds `x.len() / 32` blocks.
pub(super) unsafe fn q8_0(rows: &[&[u8]], x: &[f32], y: &mut [f32], next: &[&[u8]]) {
    with_rows!(rows.len(), q8_0_tile(rows, x, y, next))
}

#[inline]
unsafe fn q8_0_tile<const RR: usize>(rows: &[&[u8]], x: &[f32], y: &mut [f32], next: &[&[u8]]) {
    use crate::formats::quants::{f32_of, BlockQ8_0, QK};
    use std::arch::x86_64::*;
    let k = x.len();
    let size = size_of::<BlockQ8_0>();
    let blocks: [&[BlockQ8_0]; RR] = std::array::from_fn(|r| q8act::blocks_of(rows[r]));
    let ahead: [Option<&[u8]>; RR] = std::array::from_fn(|r| next.get(r).copied().filter(|n| n.len() >= k / QK * size));
    let mut lanes = [_mm256_setzero_ps(); RR];
    for k0 in (0..k).step_by(KC) {
        let kl = (k0 + KC).min(k) - k0;
        let mut acc = [_mm256_setzero_ps(); RR];
        for blk in (k0 / QK)..((k0 + kl) / QK) {
            for a in ahead.iter().flatten() {
                _mm_prefetch::<_MM_HINT_T1>(a.as_ptr().add(blk * size) as *const i8);
            }
            // SAFETY (unchecked: a bounds check here cost 9% of Q8_0 decode):
            // every row holds k / 32 blocks, and blk < k / 32.
            let b: [&BlockQ8_0; RR] = std::array::from_fn(|r| blocks[r].get_unchecked(blk));
            let d: [__m256; RR] = std::array::from_fn(|r| _mm256_set1_ps(f32_of(b[r].d)));
            for g in 0..QK / 8 {
                let xv = _mm256_loadu_ps(x.as_ptr().add(blk * QK + 8 * g));
                for (r, a) in acc.iter_mut().enumerate() {
                    let q = _mm_loadl_epi64(b[r].qs.as_ptr().add(8 * g) as *const __m128i);
                    let w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d[r]);
                    *a = _mm256_fmadd_ps(w, xv, *a);
                }
            }
        }
        for (l, a) in lanes.iter_mut().zip(acc) {
            *l = _mm256_add_ps(*l, a);
        }
    }
    put_lanes(&lanes, y);
}

/// One activation row against up to `R1` Q4_K rows read in place, with
/// AVX-512: each sub-block's sixteen possible values (`(d · sc) · q − dmin · m`
/// with the decoder's two roundings) in a table, sixteen values looked up per
/// permute as `decode::avx512::q4_k` does, and the values go straight into
/// their fused multiply-adds, eight at a time in element order, one chain per
/// block (a block is `KC` long), as `tile` and `finish` add them. The scales
/// are read as scalars and broadcast (not permuted out of a vector): the
/// permutes all use one port, and that port is this kernel's limit. While a
/// block is read, the same block of the rows `next` holds is asked for (into L2).
///
/// SAFETY: the CPU has AVX-512 F and BW; `x.len()` is a multiple of 256 and
/// each row holds `x.len() / 256` blocks of 144 bytes.
pub(super) unsafe fn q4_k(rows: &[&[u8]], x: &[f32], y: &mut [f32], next: &[&[u8]]) {
    with_rows!(rows.len(), q4_k_tile(rows, x, y, next))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q4_k_tile<const RR: usize>(rows: &[&[u8]], x: &[f32], y: &mut [f32], next: &[&[u8]]) {
    use crate::formats::quants::{f32_of, BlockQ4K, QK_K};
    use std::arch::x86_64::*;
    const _: () = assert!(KC == QK_K);
    let (nb, size) = (x.len() / QK_K, size_of::<BlockQ4K>());
    let blocks: [&[BlockQ4K]; RR] = std::array::from_fn(|r| q8act::blocks_of(rows[r]));
    let ahead: [Option<&[u8]>; RR] = std::array::from_fn(|r| next.get(r).copied().filter(|n| n.len() >= nb * size));
    let iota = _mm512_setr_ps(0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.);
    let mask = _mm512_set1_epi32(0x0F);
    let bytes16 = |q: *const u8| _mm512_cvtepu8_epi32(_mm_loadu_si128(q as *const __m128i));
    let mut lanes = [_mm256_setzero_ps(); RR];
    for blk in 0..nb {
        ask_block(&ahead, blk, size);
        // SAFETY: every row holds nb blocks (unchecked, as in `q8_0_tile`).
        let b: [&BlockQ4K; RR] = std::array::from_fn(|r| blocks[r].get_unchecked(blk));
        // Each row's 8 scales and 8 mins as f32 (`d · sc`, `dmin · m`, one rounding each).
        // (A loop: through `array::from_fn` the closure was its own function, 4% of this kernel.)
        let mut sm = [([0f32; 8], [0f32; 8]); RR];
        for (r, v) in sm.iter_mut().enumerate() {
            *v = decode::k4_scales(&b[r].scales, f32_of(b[r].d), f32_of(b[r].dmin));
        }
        let xb = x.as_ptr().add(blk * QK_K);
        let mut acc = [_mm256_setzero_ps(); RR];
        for c in 0..4 {
            let xs: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(xb.add(64 * c + 8 * i)));
            for (r, a) in acc.iter_mut().enumerate() {
                let (ds, ms) = &sm[r];
                let t1 = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(ds[2 * c]), iota), _mm512_set1_ps(ms[2 * c]));
                let t2 = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(ds[2 * c + 1]), iota), _mm512_set1_ps(ms[2 * c + 1]));
                let qs = b[r].qs.as_ptr().add(32 * c);
                let (q0, q1) = (bytes16(qs), bytes16(qs.add(16)));
                // Elements 64c + 0..16, 16..32 (low nibbles), 32..48, 48..64 (high).
                let v = [
                    _mm512_permutexvar_ps(_mm512_and_si512(q0, mask), t1),
                    _mm512_permutexvar_ps(_mm512_and_si512(q1, mask), t1),
                    _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(q0), t2),
                    _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(q1), t2),
                ];
                for (i, v) in v.into_iter().enumerate() {
                    let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
                    *a = _mm256_fmadd_ps(_mm512_castps512_ps256(v), xs[2 * i], *a);
                    *a = _mm256_fmadd_ps(high, xs[2 * i + 1], *a);
                }
            }
        }
        for (l, a) in lanes.iter_mut().zip(acc) {
            *l = _mm256_add_ps(*l, a);
        }
    }
    put_lanes(&lanes, y);
}

/// One activation row against up to `R1` Q6_K rows read in place, with
/// AVX-512: 32 six-bit values at a time are put together from `ql` and `qh`
/// in element order (the low or high nibbles of 32 `ql` bytes and one bit
/// pair of 32 `qh` bytes), less 32, widened sixteen at a time, converted and
/// scaled by `d · sc` (the decoder's one rounding each), and go straight into
/// their fused multiply-adds, one chain per block, as `tile` and `finish` add
/// them. While a block is read, the same block of the rows `next` holds is
/// asked for (into L2).
///
/// SAFETY: the CPU has AVX-512 F and BW; `x.len()` is a multiple of 256 and
/// each row holds `x.len() / 256` blocks of 210 bytes.
pub(super) unsafe fn q6_k(rows: &[&[u8]], x: &[f32], y: &mut [f32], next: &[&[u8]]) {
    with_rows!(rows.len(), q6_k_tile(rows, x, y, next))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q6_k_tile<const RR: usize>(rows: &[&[u8]], x: &[f32], y: &mut [f32], next: &[&[u8]]) {
    use crate::formats::quants::{f32_of, BlockQ6K, QK_K};
    use std::arch::x86_64::*;
    const _: () = assert!(KC == QK_K);
    let (nb, size) = (x.len() / QK_K, size_of::<BlockQ6K>());
    let blocks: [&[BlockQ6K]; RR] = std::array::from_fn(|r| q8act::blocks_of(rows[r]));
    let ahead: [Option<&[u8]>; RR] = std::array::from_fn(|r| next.get(r).copied().filter(|n| n.len() >= nb * size));
    let (low4, top2, bias) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30), _mm256_set1_epi8(32));
    let mut lanes = [_mm256_setzero_ps(); RR];
    for blk in 0..nb {
        ask_block(&ahead, blk, size);
        // SAFETY: every row holds nb blocks (unchecked, as in `q8_0_tile`).
        let b: [&BlockQ6K; RR] = std::array::from_fn(|r| blocks[r].get_unchecked(blk));
        // Each row's 16 scales `d · sc` (one rounding each, as `q6_scales`).
        let mut ds = [[0f32; 16]; RR];
        for (r, v) in ds.iter_mut().enumerate() {
            let sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(b[r].scales.as_ptr() as *const __m128i)));
            _mm512_storeu_ps(v.as_mut_ptr(), _mm512_mul_ps(sc, _mm512_set1_ps(f32_of(b[r].d))));
        }
        let xb = x.as_ptr().add(blk * QK_K);
        let mut acc = [_mm256_setzero_ps(); RR];
        // Elements 128n + 32j + 0..32: nibbles of ql[64n + 32(j % 2) ..][..32]
        // (low for j < 2), bits 2j, 2j+1 of qh[32n..][..32] on top.
        for n in 0..2 {
            for j in 0..4 {
                let e = 128 * n + 32 * j;
                let xs: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(xb.add(e + 8 * i)));
                for (r, a) in acc.iter_mut().enumerate() {
                    let ql = _mm256_loadu_si256(b[r].ql.as_ptr().add(64 * n + 32 * (j % 2)) as *const __m256i);
                    let qh = _mm256_loadu_si256(b[r].qh.as_ptr().add(32 * n) as *const __m256i);
                    let lo = _mm256_and_si256(if j < 2 { ql } else { _mm256_srli_epi16::<4>(ql) }, low4);
                    // The pair moved to bits 4 and 5 of each byte (16-bit
                    // shifts: what crosses into the next byte is masked off).
                    let hi = match j {
                        0 => _mm256_slli_epi16::<4>(qh),
                        1 => _mm256_slli_epi16::<2>(qh),
                        2 => qh,
                        _ => _mm256_srli_epi16::<2>(qh),
                    };
                    let q = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_and_si256(hi, top2)), bias);
                    for g in 0..2 {
                        let q16 = if g == 0 { _mm256_castsi256_si128(q) } else { _mm256_extracti128_si256::<1>(q) };
                        let w = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q16)), _mm512_set1_ps(ds[r][8 * n + 2 * j + g]));
                        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(w)));
                        *a = _mm256_fmadd_ps(_mm512_castps512_ps256(w), xs[2 * g], *a);
                        *a = _mm256_fmadd_ps(high, xs[2 * g + 1], *a);
                    }
                }
            }
        }
        for (l, a) in lanes.iter_mut().zip(acc) {
            *l = _mm256_add_ps(*l, a);
        }
    }
    put_lanes(&lanes, y);
}

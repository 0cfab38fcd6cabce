//! Whole rows of stored weights decoded to f32 with SIMD: exactly the values
//! `quants::dequantize` gives (ggml's `dequantize_row_*`), the same roundings
//! in the same order, only eight at a time. `quants::dequantize` is the plain
//! twin; the tests below hold every type to it bit for bit on random blocks.
//!
//! Each block's scales are turned into f32 once, in scalar code exactly as the
//! plain decoder does (`d * sc` rounded before it meets a quant), then every
//! group of eight quants is widened to i32, converted (exact: quants are small
//! integers) and scaled.

use crate::formats::quants;
use crate::formats::tensor::DType;

/// Decodes whole blocks of `dtype` from `bytes` into `out` (as many as both
/// hold). Types without a SIMD decoder here go to the plain dequantiser.
pub fn decode(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    decode_with(dtype, bytes, out, has_avx512());
    #[cfg(not(target_arch = "x86_64"))]
    quants::dequantize(dtype, bytes, out)
}

/// `decode`, with the AVX-512 decoders used or not (tests run both).
#[cfg(target_arch = "x86_64")]
fn decode_with(dtype: DType, bytes: &[u8], out: &mut [f32], avx512: bool) {
    #[cfg(all(target_feature = "avx2", target_feature = "f16c"))]
    {
        let (block, size) = dtype.block();
        let n = (bytes.len() / size).min(out.len() / block);
        let (bytes, done) = (&bytes[..n * size], n * block);
        if avx512 && has_avx512() {
            // SAFETY: the CPU has AVX-512 F and BW (checked at run time); each
            // decoder reads `n` whole blocks of `bytes` and writes `n · block`
            // floats of `out`, within bounds by the lines above.
            unsafe {
                match dtype {
                    DType::Q8_0 => avx512::q8_0(bytes, out),
                    DType::Q4_0 => avx512::q4_0(bytes, out),
                    DType::Q4_K => avx512::q4_k(bytes, out, false),
                    DType::Q5_K => avx512::q4_k(bytes, out, true),
                    DType::Q6_K => avx512::q6_k(bytes, out),
                    _ => return decode_with(dtype, bytes, out, false),
                }
            }
            return;
        }
        // SAFETY: AVX2 and F16C are enabled for this build; bounds as above.
        unsafe {
            match dtype {
                DType::F16 | DType::BF16 => {
                    let n8 = done - done % 8;
                    avx2::halves(dtype == DType::F16, bytes, &mut out[..n8]);
                    quants::dequantize(dtype, &bytes[2 * n8..], &mut out[n8..done]);
                }
                DType::Q8_0 => avx2::q8_0(bytes, out),
                DType::Q4_0 => avx2::q4_0(bytes, out),
                DType::Q4_K => avx2::q4_k(bytes, out, false),
                DType::Q5_K => avx2::q4_k(bytes, out, true),
                DType::Q6_K => avx2::q6_k(bytes, out),
                _ => quants::dequantize(dtype, bytes, out),
            }
        }
    }
    #[cfg(not(all(target_feature = "avx2", target_feature = "f16c")))]
    {
        let _ = avx512;
        quants::dequantize(dtype, bytes, out)
    }
}

/// Whether this CPU has AVX-512 F and BW, asked once. `PARITY_NO_AVX512=1`
/// turns the AVX-512 decoders off (to compare, or to test the AVX2 ones).
#[cfg(target_arch = "x86_64")]
pub fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var_os("PARITY_NO_AVX512").is_none_or(|v| v.is_empty() || v == "0") && std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
    })
}

/// `n` blocks of `dtype` for tests and benchmarks: random quants and random
/// finite f16 scales (a quantiser writes no others); with `edge_scales`, every
/// seventh block has a zero scale and the next a subnormal one. Halves (f16,
/// bf16) are random bit patterns, so they include infinities and NaNs.
pub fn synthetic_blocks(dtype: DType, n: usize, seed: u64, edge_scales: bool) -> Vec<u8> {
    let (_, size) = dtype.block();
    let mut s = seed;
    let mut raw: Vec<u8> = (0..n * size)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect();
    let scale_at: &[usize] = match dtype {
        DType::Q8_0 | DType::Q4_0 => &[0],
        DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q6_K => &[208],
        _ => &[],
    };
    for (bi, b) in raw.chunks_mut(size).enumerate() {
        for &at in scale_at {
            let v = match bi % 7 {
                0 if edge_scales => 0.0,
                1 if edge_scales => 3.0e-7, // subnormal in f16
                _ => (((b[at] as f32) - 128.0) / 97.0) * 0.01,
            };
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    raw
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
/// `d · sc` for the 16 signed scales of a q6_K block, one rounding each.
#[inline(always)]
fn q6_scales(b: &[u8]) -> [f32; 16] {
    let d = half(b, 208);
    std::array::from_fn(|i| d * (b[192 + i] as i8) as f32)
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
#[inline(always)]
fn half(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
/// ggml's `get_scale_min_k4`, then `d * sc` and `dmin * m` rounded once each.
#[inline(always)]
pub(crate) fn k4_scales(s: &[u8], d: f32, dmin: f32) -> ([f32; 8], [f32; 8]) {
    let Ok(s) = <&[u8; 12]>::try_from(s) else { return ([0.0; 8], [0.0; 8]) };
    let sm: [(u8, u8); 8] = std::array::from_fn(|j| quants::scale_min_k4(j, s));
    (sm.map(|(sc, _)| d * sc as f32), sm.map(|(_, m)| dmin * m as f32))
}

/// The `[sc0..sc7, m0..m7]` of a Q4_K/Q5_K block from its first 16 bytes
/// (`d`, `dmin`, the 12 packed scale bytes as words a, b, c): what
/// `scale_min_k4` reads, four bytes at a time (ggml's `utmp` shuffle).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[inline(always)]
pub(crate) fn k4_scales_mins(head: &[u8; 16]) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    const LOW6: i32 = 0x3F3F_3F3F;
    const LOW4: i32 = 0x0F0F_0F0F;
    // Sub-blocks 4..7 take their top two bits from the top bits of a (scales) and b (mins).
    const TOP2_AT_4: i32 = 0x3030_3030;
    // SAFETY: AVX2 is enabled for this build; head holds 16 bytes.
    unsafe {
        let v = _mm_loadu_si128(head.as_ptr() as *const __m128i);
        // [a, c, b, c] with the last c's high nibbles moved down, and [a, a, b, b].
        let low = _mm_srlv_epi32(_mm_shuffle_epi32(v, 0b11_10_11_01), _mm_set_epi32(4, 0, 0, 0));
        let top = _mm_srli_epi32(_mm_shuffle_epi32(v, 0b10_10_01_01), 2);
        _mm_or_si128(_mm_and_si128(low, _mm_set_epi32(LOW4, LOW6, LOW4, LOW6)), _mm_and_si128(top, _mm_set_epi32(TOP2_AT_4, 0, TOP2_AT_4, 0)))
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{half, k4_scales, q6_scales};

    /// Eight unsigned bytes (the low half of `q`) minus `bias`, times `d`.
    #[inline(always)]
    unsafe fn put(q: __m128i, bias: i32, d: f32, out: *mut f32) {
        let i = _mm256_sub_epi32(_mm256_cvtepu8_epi32(q), _mm256_set1_epi32(bias));
        _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(d)));
    }

    /// Eight unsigned bytes times `d`, minus `m` (two roundings, as ggml).
    #[inline(always)]
    unsafe fn put_min(q: __m128i, d: f32, m: f32, out: *mut f32) {
        let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q)), _mm256_set1_ps(d));
        _mm256_storeu_ps(out, _mm256_sub_ps(v, _mm256_set1_ps(m)));
    }

    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m128i {
        _mm_loadl_epi64(p as *const __m128i)
    }

    pub unsafe fn halves(f16: bool, bytes: &[u8], out: &mut [f32]) {
        let (pb, po) = (bytes.as_ptr(), out.as_mut_ptr());
        for i in (0..out.len() - out.len() % 8).step_by(8) {
            let h = _mm_loadu_si128(pb.add(2 * i) as *const __m128i);
            let v = if f16 { _mm256_cvtph_ps(h) } else { _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)) };
            _mm256_storeu_ps(po.add(i), v);
        }
    }

    /// `y = qs · d`, `qs` signed.
    pub unsafe fn q8_0(bytes: &[u8], out: &mut [f32]) {
        for (b, y) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
            let d = _mm256_set1_ps(half(b, 0));
            for g in 0..4 {
                let i = _mm256_cvtepi8_epi32(load8(b.as_ptr().add(2 + 8 * g)));
                _mm256_storeu_ps(y.as_mut_ptr().add(8 * g), _mm256_mul_ps(_mm256_cvtepi32_ps(i), d));
            }
        }
    }

    /// `y[j] = (lo(qs[j]) - 8) · d`, `y[j + 16] = (hi(qs[j]) - 8) · d`.
    pub unsafe fn q4_0(bytes: &[u8], out: &mut [f32]) {
        let mask = _mm_set1_epi8(0x0F);
        for (b, y) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
            let d = half(b, 0);
            let q = _mm_loadu_si128(b.as_ptr().add(2) as *const __m128i);
            let (lo, hi) = (_mm_and_si128(q, mask), _mm_and_si128(_mm_srli_epi16(q, 4), mask));
            let py = y.as_mut_ptr();
            put(lo, 8, d, py);
            put(_mm_srli_si128(lo, 8), 8, d, py.add(8));
            put(hi, 8, d, py.add(16));
            put(_mm_srli_si128(hi, 8), 8, d, py.add(24));
        }
    }

    /// q4_K (`fifth` false, 144-byte blocks) and q5_K (`fifth` true, 176-byte
    /// blocks with 32 bytes of fifth bits before the nibbles): chunk c of 32
    /// bytes gives 32 low nibbles (sub-block 2c) then 32 high ones (2c + 1).
    pub unsafe fn q4_k(bytes: &[u8], out: &mut [f32], fifth: bool) {
        let size = if fifth { 176 } else { 144 };
        let mask = _mm_set1_epi8(0x0F);
        let one = _mm_set1_epi8(1);
        for (b, y) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(256)) {
            let (ds, ms) = k4_scales(&b[4..16], half(b, 0), half(b, 2));
            let qs = b.as_ptr().add(if fifth { 48 } else { 16 });
            let qh = b.as_ptr().add(16);
            let py = y.as_mut_ptr();
            for c in 0..4 {
                for g in 0..4 {
                    let q = load8(qs.add(32 * c + 8 * g));
                    let mut lo = _mm_and_si128(q, mask);
                    let mut hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
                    if fifth {
                        let h = load8(qh.add(8 * g));
                        let sh = _mm_cvtsi32_si128(2 * c as i32);
                        let h1 = _mm_and_si128(_mm_srl_epi16(h, sh), one);
                        let h2 = _mm_and_si128(_mm_srl_epi16(h, _mm_cvtsi32_si128(2 * c as i32 + 1)), one);
                        lo = _mm_or_si128(lo, _mm_slli_epi16(h1, 4));
                        hi = _mm_or_si128(hi, _mm_slli_epi16(h2, 4));
                    }
                    put_min(lo, ds[2 * c], ms[2 * c], py.add(64 * c + 8 * g));
                    put_min(hi, ds[2 * c + 1], ms[2 * c + 1], py.add(64 * c + 32 + 8 * g));
                }
            }
        }
    }

    /// q6_K: 4 low bits in `ql`, 2 high in `qh`, minus 32, times `d · sc`
    /// (one scale per 16 outputs).
    pub unsafe fn q6_k(bytes: &[u8], out: &mut [f32]) {
        let mask = _mm_set1_epi8(0x0F);
        let three = _mm_set1_epi8(3);
        for (b, y) in bytes.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
            let ds = q6_scales(b);
            let py = y.as_mut_ptr();
            for n in 0..2 {
                let ql = b.as_ptr().add(64 * n);
                let qh = b.as_ptr().add(128 + 32 * n);
                for g in 0..4 {
                    let l = 8 * g;
                    let (a, c, h) = (load8(ql.add(l)), load8(ql.add(l + 32)), load8(qh.add(l)));
                    let hb = |s: i32| _mm_slli_epi16(_mm_and_si128(_mm_srl_epi16(h, _mm_cvtsi32_si128(s)), three), 4);
                    let q1 = _mm_or_si128(_mm_and_si128(a, mask), hb(0));
                    let q2 = _mm_or_si128(_mm_and_si128(c, mask), hb(2));
                    let q3 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), mask), hb(4));
                    let q4 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(c, 4), mask), hb(6));
                    let (is, o) = (8 * n + l / 16, py.add(128 * n + l));
                    put(q1, 32, ds[is], o);
                    put(q2, 32, ds[is + 2], o.add(32));
                    put(q3, 32, ds[is + 4], o.add(64));
                    put(q4, 32, ds[is + 6], o.add(96));
                }
            }
        }
    }
}

/// The same decoders sixteen values at a time. Nibble types look their values
/// up in a table of the sub-block's possible values (`d · q - m` for every
/// `q`, computed with the same two roundings as the plain decoder), so each
/// value costs one permute instead of a conversion, a product and a difference.
/// Built where the AVX2 decoders are (it shares their helpers); chosen at run time.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "f16c"))]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{half, k4_scales_mins, q6_scales};

    // Macros rather than helper functions: the code must be compiled inside
    // the `target_feature` functions below to get AVX-512 instructions.

    /// from, from + 1, ..., from + 15 as floats.
    macro_rules! iota {
        ($from:expr) => {
            _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32($from)))
        };
    }

    /// Sixteen bytes at `p`, zero-extended to sixteen i32.
    macro_rules! bytes16 {
        ($p:expr) => {
            _mm512_cvtepu8_epi32(_mm_loadu_si128($p as *const __m128i))
        };
    }

    /// Bits `s, s+1, ...` of each i32 of `v`, masked by `m`, moved up by 4.
    macro_rules! high_bits {
        ($v:expr, $s:expr, $m:expr) => {
            _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srl_epi32($v, _mm_cvtsi32_si128($s as i32)), $m))
        };
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn q8_0(bytes: &[u8], out: &mut [f32]) {
        for (b, y) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
            let d = _mm512_set1_ps(half(b, 0));
            for g in 0..2 {
                let q = _mm_loadu_si128(b.as_ptr().add(2 + 16 * g) as *const __m128i);
                let v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d);
                _mm512_storeu_ps(y.as_mut_ptr().add(16 * g), v);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn q4_0(bytes: &[u8], out: &mut [f32]) {
        let mask = _mm512_set1_epi32(0x0F);
        for (b, y) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
            // (q - 8) · d: the product of the integer q - 8 and d, one rounding.
            let t = _mm512_mul_ps(iota!(-8), _mm512_set1_ps(half(b, 0)));
            let q = bytes16!(b.as_ptr().add(2));
            _mm512_storeu_ps(y.as_mut_ptr(), _mm512_permutexvar_ps(_mm512_and_si512(q, mask), t));
            _mm512_storeu_ps(y.as_mut_ptr().add(16), _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(q), t));
        }
    }

    /// q4_K (`fifth` false) and q5_K (`fifth` true; 32-value tables, the
    /// fifth bit choosing the upper half).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn q4_k(bytes: &[u8], out: &mut [f32], fifth: bool) {
        let size = if fifth { 176 } else { 144 };
        let mask = _mm512_set1_epi32(0x0F);
        let one = _mm512_set1_epi32(1);
        let (lo16, hi16) = (iota!(0), iota!(16));
        for (b, y) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(256)) {
            // The 8 scales and 8 mins as f32 (`d · sc`, `dmin · m`), one
            // rounding each, in one vector: scales in lanes 0..8, mins in 8..16.
            let head: &[u8; 16] = b[..16].try_into().unwrap_or(&[0; 16]);
            let both = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(k4_scales_mins(head)));
            let dm = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(half(b, 0)), _mm512_set1_ps(half(b, 2)));
            let sm = _mm512_mul_ps(both, dm);
            let qs = b.as_ptr().add(if fifth { 48 } else { 16 });
            let qh = b.as_ptr().add(16);
            let py = y.as_mut_ptr();
            for c in 0..4 {
                let lane = |j: i32| _mm512_permutexvar_ps(_mm512_set1_epi32(j), sm);
                let (d1, m1, d2, m2) = (lane(2 * c), lane(8 + 2 * c), lane(2 * c + 1), lane(9 + 2 * c));
                let (t1, t2) = (_mm512_sub_ps(_mm512_mul_ps(d1, lo16), m1), _mm512_sub_ps(_mm512_mul_ps(d2, lo16), m2));
                for g in 0..2 {
                    let q = bytes16!(qs.add(32 * c as usize + 16 * g));
                    let (mut lo, mut hi) = (_mm512_and_si512(q, mask), _mm512_srli_epi32::<4>(q));
                    let (v1, v2) = if fifth {
                        let (u1, u2) = (_mm512_sub_ps(_mm512_mul_ps(d1, hi16), m1), _mm512_sub_ps(_mm512_mul_ps(d2, hi16), m2));
                        let h = bytes16!(qh.add(16 * g));
                        lo = _mm512_or_si512(lo, high_bits!(h, 2 * c, one));
                        hi = _mm512_or_si512(hi, high_bits!(h, 2 * c + 1, one));
                        (_mm512_permutex2var_ps(t1, lo, u1), _mm512_permutex2var_ps(t2, hi, u2))
                    } else {
                        (_mm512_permutexvar_ps(lo, t1), _mm512_permutexvar_ps(hi, t2))
                    };
                    _mm512_storeu_ps(py.add(64 * c as usize + 16 * g), v1);
                    _mm512_storeu_ps(py.add(64 * c as usize + 32 + 16 * g), v2);
                }
            }
        }
    }

    /// q6_K: the six-bit values are put together sixteen bytes at a time
    /// (minus 32, as i8), then widened, converted and scaled.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn q6_k(bytes: &[u8], out: &mut [f32]) {
        let mask = _mm_set1_epi8(0x0F);
        let three = _mm_set1_epi8(3);
        let bias = _mm_set1_epi8(32);
        for (b, y) in bytes.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
            let ds = q6_scales(b);
            let py = y.as_mut_ptr();
            for n in 0..2 {
                let ql = b.as_ptr().add(64 * n);
                let qh = b.as_ptr().add(128 + 32 * n);
                for g in 0..2 {
                    let l = 16 * g;
                    let ld = |p: *const u8| _mm_loadu_si128(p as *const __m128i);
                    let (a, c, h) = (ld(ql.add(l)), ld(ql.add(l + 32)), ld(qh.add(l)));
                    let top = |s: i32| _mm_slli_epi16::<4>(_mm_and_si128(_mm_srl_epi16(h, _mm_cvtsi32_si128(s)), three));
                    let qv = [
                        _mm_or_si128(_mm_and_si128(a, mask), top(0)),
                        _mm_or_si128(_mm_and_si128(c, mask), top(2)),
                        _mm_or_si128(_mm_and_si128(_mm_srli_epi16::<4>(a), mask), top(4)),
                        _mm_or_si128(_mm_and_si128(_mm_srli_epi16::<4>(c), mask), top(6)),
                    ];
                    let is = 8 * n + g;
                    for (j, q) in qv.into_iter().enumerate() {
                        let q = _mm512_cvtepi8_epi32(_mm_sub_epi8(q, bias));
                        let v = _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(ds[is + 2 * j]));
                        _mm512_storeu_ps(py.add(128 * n + l + 32 * j), v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(dtype: DType, n: usize, seed: u64) -> Vec<u8> {
        synthetic_blocks(dtype, n, seed, true)
    }

    #[test]
    fn every_simd_decoder_gives_the_plain_values_bit_for_bit() {
        for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::F16, DType::BF16] {
            let (block, _) = dtype.block();
            let n = if block == 1 { 203 } else { 37 };
            let raw = blocks(dtype, n, 17);
            let mut plain = vec![0f32; n * block];
            quants::dequantize(dtype, &raw, &mut plain);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            // Both instruction sets where this CPU has them (AVX-512 only if it does).
            for avx512 in [false, true] {
                let mut fast = vec![0f32; n * block];
                decode_with(dtype, &raw, &mut fast, avx512);
                assert_eq!(bits(&fast), bits(&plain), "{dtype:?}, AVX-512 {}", avx512 && has_avx512());
            }
        }
    }

    #[test]
    fn halves_decode_at_any_byte_offset_and_keep_special_values() {
        let mut raw: Vec<u8> = (0..2 * 203u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        // Zeros, infinities, NaNs, subnormals.
        raw[..8].copy_from_slice(&[0x00, 0x00, 0x00, 0x80, 0x00, 0x7c, 0x01, 0x00]);
        for dtype in [DType::F16, DType::BF16] {
            for off in [0, 1] {
                let b = &raw[off..];
                let n = b.len() / 2;
                let (mut fast, mut plain) = (vec![0f32; n], vec![0f32; n]);
                decode(dtype, b, &mut fast);
                quants::dequantize(dtype, b, &mut plain);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&plain), "{dtype:?} offset {off}");
            }
        }
    }

    /// The word shuffle reads the same scales and mins as `scale_min_k4`.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    #[test]
    fn k4_scales_mins_match_scale_min_k4() {
        use std::arch::x86_64::*;
        let raw = blocks(DType::Q4_K, 1000, 5);
        for b in raw.chunks(144) {
            let head: &[u8; 16] = b[..16].try_into().unwrap();
            let mut got = [0u8; 16];
            // SAFETY: AVX2 is enabled for this build; got holds 16 bytes.
            unsafe { _mm_storeu_si128(got.as_mut_ptr() as *mut __m128i, k4_scales_mins(head)) };
            let scales: &[u8; 12] = head[4..].try_into().unwrap();
            for j in 0..8 {
                assert_eq!((got[j], got[8 + j]), quants::scale_min_k4(j, scales), "sub-block {j} of {scales:?}");
            }
        }
    }

    #[test]
    fn short_buffers_decode_only_whole_blocks() {
        let raw = blocks(DType::Q4_K, 2, 3);
        let mut out = vec![f32::NAN; 300];
        decode(DType::Q4_K, &raw[..200], &mut out);
        assert!(out[..256].iter().all(|v| v.is_finite()) && out[256..].iter().all(|v| v.is_nan()));
    }
}

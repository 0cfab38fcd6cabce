//! Dequantisation of ggml block types, reproducing ggml's reference
//! `dequantize_row_*` (ggml-quants.c) operation for operation, so results are
//! bit-identical: products are rounded to f32 in the same order and never fused.
//!
//! Each block is a `#[repr(C)]` struct mirroring its ggml-common.h typedef,
//! with a compile-time size check against ggml's own `static_assert`. Fields
//! are byte arrays only (an f16 is a little-endian byte pair), so every block
//! has alignment 1 and any byte range of a memory map can be viewed as blocks.
//! This is the plain twin that any faster kernel is tested against.

use std::mem::size_of;

use half::f16;

use crate::formats::tensor::DType;

/// ggml-common.h `QK_K`: elements per k-quant super-block.
pub(crate) const QK_K: usize = 256;
/// ggml-common.h `QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0`.
pub(crate) const QK: usize = 32;
/// ggml-common.h `K_SCALE_SIZE`: packed 6-bit scales and mins of q4_K/q5_K.
pub(crate) const K_SCALE_SIZE: usize = 12;

/// `ggml_half`, stored little-endian; a byte pair rather than `f16` keeps alignment 1.
pub(crate) type Half = [u8; 2];

#[inline(always)]
pub(crate) fn f32_of(h: Half) -> f32 {
    f16::from_le_bytes(h).to_f32()
}

/// ggml-common.h `block_q4_0`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ4_0 {
    pub(crate) d: Half,
    pub(crate) qs: [u8; QK / 2],
}

/// ggml-common.h `block_q4_1` (`d` and `m` in a union with `dm`).
#[repr(C)]
#[derive(Clone, Copy)]
struct BlockQ4_1 {
    d: Half,
    m: Half,
    qs: [u8; QK / 2],
}

/// ggml-common.h `block_q5_0`.
#[repr(C)]
#[derive(Clone, Copy)]
struct BlockQ5_0 {
    d: Half,
    qh: [u8; 4],
    qs: [u8; QK / 2],
}

/// ggml-common.h `block_q5_1`.
#[repr(C)]
#[derive(Clone, Copy)]
struct BlockQ5_1 {
    d: Half,
    m: Half,
    qh: [u8; 4],
    qs: [u8; QK / 2],
}

/// ggml-common.h `block_q8_0`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ8_0 {
    pub(crate) d: Half,
    pub(crate) qs: [i8; QK],
}

/// ggml-common.h `block_q2_K` (`d`, `dmin` last).
#[repr(C)]
#[derive(Clone, Copy)]
struct BlockQ2K {
    scales: [u8; QK_K / 16],
    qs: [u8; QK_K / 4],
    d: Half,
    dmin: Half,
}

/// ggml-common.h `block_q3_K`.
#[repr(C)]
#[derive(Clone, Copy)]
struct BlockQ3K {
    hmask: [u8; QK_K / 8],
    qs: [u8; QK_K / 4],
    scales: [u8; 12],
    d: Half,
}

/// ggml-common.h `block_q4_K`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ4K {
    pub(crate) d: Half,
    pub(crate) dmin: Half,
    pub(crate) scales: [u8; K_SCALE_SIZE],
    pub(crate) qs: [u8; QK_K / 2],
}

/// ggml-common.h `block_q5_K`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ5K {
    pub(crate) d: Half,
    pub(crate) dmin: Half,
    pub(crate) scales: [u8; K_SCALE_SIZE],
    pub(crate) qh: [u8; QK_K / 8],
    pub(crate) qs: [u8; QK_K / 2],
}

/// ggml-common.h `block_q6_K` (`d` last).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ6K {
    pub(crate) ql: [u8; QK_K / 2],
    pub(crate) qh: [u8; QK_K / 4],
    pub(crate) scales: [i8; QK_K / 16],
    pub(crate) d: Half,
}

// ggml-common.h's `static_assert(sizeof(block_*) == ...)`, same expressions.
const _: () = assert!(size_of::<BlockQ4_0>() == 2 + QK / 2);
const _: () = assert!(size_of::<BlockQ4_1>() == 2 * 2 + QK / 2);
const _: () = assert!(size_of::<BlockQ5_0>() == 2 + 4 + QK / 2);
const _: () = assert!(size_of::<BlockQ5_1>() == 2 * 2 + 4 + QK / 2);
const _: () = assert!(size_of::<BlockQ8_0>() == 2 + QK);
const _: () = assert!(size_of::<BlockQ2K>() == 2 * 2 + QK_K / 16 + QK_K / 4);
const _: () = assert!(size_of::<BlockQ3K>() == 2 + QK_K / 4 + QK_K / 8 + 12);
const _: () = assert!(size_of::<BlockQ4K>() == 2 * 2 + K_SCALE_SIZE + QK_K / 2);
const _: () = assert!(size_of::<BlockQ5K>() == 2 * 2 + K_SCALE_SIZE + QK_K / 2 + QK_K / 8);
const _: () = assert!(size_of::<BlockQ6K>() == 2 + QK_K / 16 + 3 * QK_K / 4);

macro_rules! pod_blocks {
    ($($t:ty),*) => {$(
        // SAFETY: repr(C) structs of u8/i8 arrays only: alignment 1, no padding
        // (the size assertions above equal the sum of the fields), every bit
        // pattern valid.
        unsafe impl bytemuck::Zeroable for $t {}
        unsafe impl bytemuck::Pod for $t {}
    )*};
}
pod_blocks!(BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K);

/// Dequantise `bytes` (a whole number of blocks of `dtype`) into `out`.
/// Callers guarantee the lengths agree (checked when the tensor was built);
/// if they do not, only the blocks both sides hold are written.
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => plain::<4>(bytes, out, f32::from_le_bytes),
        DType::F16 => f16_row(bytes, out),
        // ggml_compute_bf16_to_fp32: the bits shifted up (a signalling NaN stays signalling).
        DType::BF16 => plain::<2>(bytes, out, |c| f32::from_bits((u16::from_le_bytes(c) as u32) << 16)),
        DType::I32 => plain::<4>(bytes, out, |c| i32::from_le_bytes(c) as f32),
        DType::I64 => plain::<8>(bytes, out, |c| i64::from_le_bytes(c) as f32),
        // Dispatch once per row, not per block, so each block loop inlines and vectorises.
        DType::Q4_0 => blocks(bytes, out, q4_0),
        DType::Q4_1 => blocks(bytes, out, q4_1),
        DType::Q5_0 => blocks(bytes, out, q5_0),
        DType::Q5_1 => blocks(bytes, out, q5_1),
        DType::Q8_0 => blocks(bytes, out, q8_0),
        DType::Q2_K => blocks(bytes, out, q2_k),
        DType::Q3_K => blocks(bytes, out, q3_k),
        DType::Q4_K => blocks(bytes, out, q4_k),
        DType::Q5_K => blocks(bytes, out, q5_k),
        DType::Q6_K => blocks(bytes, out, q6_k),
    }
}

/// One value per `N` little-endian bytes.
#[inline(always)]
fn plain<const N: usize>(bytes: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> f32) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(N)) {
        if let Ok(c) = <[u8; N]>::try_from(c) {
            *o = f(c);
        }
    }
}

fn f16_row(bytes: &[u8], out: &mut [f32]) {
    match bytemuck::try_cast_slice::<u8, f16>(bytes) {
        // Aligned: the half crate converts whole slices with F16C where the CPU has it.
        Ok(h) => {
            let n = h.len().min(out.len());
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(&h[..n], &mut out[..n]);
        }
        Err(_) => plain::<2>(bytes, out, |c| f16::from_le_bytes(c).to_f32()),
    }
}

/// Views `bytes` as blocks `B` and decodes each into the next `N` outputs.
/// Fixed-size arrays on both sides let the block loops drop their bounds checks.
#[inline(always)]
fn blocks<B: bytemuck::Pod, const N: usize>(bytes: &[u8], out: &mut [f32], f: impl Fn(&B, &mut [f32; N])) {
    let n = (bytes.len() / size_of::<B>()).min(out.len() / N);
    // Cannot fail: B has alignment 1 and the slice is a whole number of blocks.
    let Ok(bs) = bytemuck::try_cast_slice::<u8, B>(&bytes[..n * size_of::<B>()]) else { return };
    for (b, y) in bs.iter().zip(out.chunks_exact_mut(N)) {
        if let Ok(y) = <&mut [f32; N]>::try_from(y) {
            f(b, y);
        }
    }
}

/// `dequantize_row_q4_0`: `y[j] = (lo(qs[j]) - 8) * d`, `y[j+16] = (hi(qs[j]) - 8) * d`
/// (low nibbles are the first half of the block, not interleaved).
#[inline(always)]
fn q4_0(b: &BlockQ4_0, y: &mut [f32; QK]) {
    let d = f32_of(b.d);
    for j in 0..QK / 2 {
        y[j] = ((b.qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + QK / 2] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// `dequantize_row_q4_1`: `y = q * d + m` (two roundings, as ggml-base is built without FMA).
#[inline(always)]
fn q4_1(b: &BlockQ4_1, y: &mut [f32; QK]) {
    let (d, m) = (f32_of(b.d), f32_of(b.m));
    for j in 0..QK / 2 {
        y[j] = (b.qs[j] & 0x0F) as f32 * d + m;
        y[j + QK / 2] = (b.qs[j] >> 4) as f32 * d + m;
    }
}

/// The fifth bits of q5_0/q5_1 element `j` and `j + 16`, from `qh` read as a little-endian u32.
#[inline(always)]
fn q5_high(qh: u32, j: usize) -> (u8, u8) {
    ((((qh >> j) << 4) & 0x10) as u8, ((qh >> (j + 12)) & 0x10) as u8)
}

/// `dequantize_row_q5_0`: 4 low bits in qs, the fifth in qh; `y = (q - 16) * d`.
#[inline(always)]
fn q5_0(b: &BlockQ5_0, y: &mut [f32; QK]) {
    let d = f32_of(b.d);
    let qh = u32::from_le_bytes(b.qh);
    for j in 0..QK / 2 {
        let (xh0, xh1) = q5_high(qh, j);
        y[j] = (((b.qs[j] & 0x0F) | xh0) as i32 - 16) as f32 * d;
        y[j + QK / 2] = (((b.qs[j] >> 4) | xh1) as i32 - 16) as f32 * d;
    }
}

/// `dequantize_row_q5_1`: as q5_0 without the offset, plus `m`.
#[inline(always)]
fn q5_1(b: &BlockQ5_1, y: &mut [f32; QK]) {
    let (d, m) = (f32_of(b.d), f32_of(b.m));
    let qh = u32::from_le_bytes(b.qh);
    for j in 0..QK / 2 {
        let (xh0, xh1) = q5_high(qh, j);
        y[j] = ((b.qs[j] & 0x0F) | xh0) as f32 * d + m;
        y[j + QK / 2] = ((b.qs[j] >> 4) | xh1) as f32 * d + m;
    }
}

/// `dequantize_row_q8_0`: `y = qs * d`.
#[inline(always)]
fn q8_0(b: &BlockQ8_0, y: &mut [f32; QK]) {
    let d = f32_of(b.d);
    for (y, &q) in y.iter_mut().zip(&b.qs) {
        *y = q as f32 * d;
    }
}

/// `dequantize_row_q2_K`: 16 sub-blocks of 16, each with a 4-bit scale (low
/// nibble) and 4-bit min (high nibble); 2-bit quants, four per byte. Output
/// order: for each half n, for each shift, 16 values from `qs[32n..32n+16]`
/// then 16 from `qs[32n+16..32n+32]`.
#[inline(always)]
fn q2_k(b: &BlockQ2K, y: &mut [f32; QK_K]) {
    let (d, min) = (f32_of(b.d), f32_of(b.dmin));
    let mut is = 0;
    let mut o = 0;
    for q in b.qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for part in q.chunks_exact(16) {
                let sc = b.scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
                for &qv in part {
                    y[o] = dl * ((qv >> shift) & 3) as f32 - ml;
                    o += 1;
                }
            }
        }
    }
}

/// The 16 signed 6-bit scales of a q3_K block, unpacked from 12 bytes as
/// ggml does it (four u32 words shuffled with kmask1/kmask2), still biased by 32.
fn q3_k_scales(packed: &[u8; 12]) -> [u8; 16] {
    let word = |i: usize| u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]]);
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let aux = [(a0 & k2) | ((tmp & k1) << 4), (a1 & k2) | (((tmp >> 2) & k1) << 4), ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4), ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4)];
    let mut out = [0u8; 16];
    for (o, a) in out.chunks_exact_mut(4).zip(aux) {
        o.copy_from_slice(&a.to_le_bytes());
    }
    out
}

/// `dequantize_row_q3_K`: 2 low bits in qs, the third in hmask (set bit means
/// no -4), 6-bit scales biased by 32; same output order as q2_K. The hmask bit
/// advances once per shift and is not reset between the two halves.
#[inline(always)]
fn q3_k(b: &BlockQ3K, y: &mut [f32; QK_K]) {
    let d_all = f32_of(b.d);
    let scales = q3_k_scales(&b.scales);
    let mut is = 0;
    let mut o = 0;
    let mut m = 1u8;
    for q in b.qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for (part, hm) in q.chunks_exact(16).zip(b.hmask.chunks_exact(16)) {
                // Unpacked scales are 0..=63, so ggml's int8_t view of them never turns negative.
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for (&qv, &h) in part.iter().zip(hm) {
                    let sub = if h & m != 0 { 0 } else { 4 };
                    y[o] = dl * (((qv >> shift) & 3) as i32 - sub) as f32;
                    o += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// ggml's `get_scale_min_k4`: the j-th 6-bit scale and min of a q4_K/q5_K block.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Scale and min of sub-block `j` of a q4_K/q5_K block, each rounded to f32 once, as ggml does.
#[inline(always)]
fn k4_scale(j: usize, scales: &[u8; K_SCALE_SIZE], d: f32, dmin: f32) -> (f32, f32) {
    let (sc, m) = scale_min_k4(j, scales);
    (d * sc as f32, dmin * m as f32)
}

/// `dequantize_row_q4_K`: 8 sub-blocks of 32 with 6-bit scales and mins;
/// chunk c's bytes give 32 low-nibble values then 32 high-nibble values.
#[inline(always)]
fn q4_k(b: &BlockQ4K, y: &mut [f32; QK_K]) {
    let (d, dmin) = (f32_of(b.d), f32_of(b.dmin));
    for c in 0..4 {
        let q = &b.qs[32 * c..32 * c + 32];
        let (d1, m1) = k4_scale(2 * c, &b.scales, d, dmin);
        let (d2, m2) = k4_scale(2 * c + 1, &b.scales, d, dmin);
        for l in 0..32 {
            y[64 * c + l] = d1 * (q[l] & 0xF) as f32 - m1;
            y[64 * c + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// `dequantize_row_q5_K`: q4_K plus a fifth bit per value in qh (bit 2c for
/// the low nibbles of chunk c, bit 2c+1 for the high ones).
#[inline(always)]
fn q5_k(b: &BlockQ5K, y: &mut [f32; QK_K]) {
    let (d, dmin) = (f32_of(b.d), f32_of(b.dmin));
    for c in 0..4 {
        let q = &b.qs[32 * c..32 * c + 32];
        let (u1, u2) = (1u8 << (2 * c), 1u8 << (2 * c + 1));
        let (d1, m1) = k4_scale(2 * c, &b.scales, d, dmin);
        let (d2, m2) = k4_scale(2 * c + 1, &b.scales, d, dmin);
        for l in 0..32 {
            let hi1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
            let hi2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
            y[64 * c + l] = d1 * ((q[l] & 0xF) + hi1) as f32 - m1;
            y[64 * c + 32 + l] = d2 * ((q[l] >> 4) + hi2) as f32 - m2;
        }
    }
}

/// `dequantize_row_q6_K`: 4 low bits in ql, 2 high in qh, signed 8-bit scales per 16.
#[inline(always)]
fn q6_k(b: &BlockQ6K, y: &mut [f32; QK_K]) {
    let d = f32_of(b.d);
    for n in 0..2 {
        let ql = &b.ql[64 * n..64 * n + 64];
        let qh = &b.qh[32 * n..32 * n + 32];
        let sc = &b.scales[8 * n..8 * n + 8];
        let yy = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            // ggml: `d * sc[is] * q`, evaluated left to right.
            yy[l] = d * sc[is] as f32 * q1 as f32;
            yy[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
            yy[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
            yy[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block structs and `DType::block` describe the same bytes.
    #[test]
    fn block_structs_match_dtype_sizes() {
        let sizes = [
            (DType::Q4_0, size_of::<BlockQ4_0>(), QK),
            (DType::Q4_1, size_of::<BlockQ4_1>(), QK),
            (DType::Q5_0, size_of::<BlockQ5_0>(), QK),
            (DType::Q5_1, size_of::<BlockQ5_1>(), QK),
            (DType::Q8_0, size_of::<BlockQ8_0>(), QK),
            (DType::Q2_K, size_of::<BlockQ2K>(), QK_K),
            (DType::Q3_K, size_of::<BlockQ3K>(), QK_K),
            (DType::Q4_K, size_of::<BlockQ4K>(), QK_K),
            (DType::Q5_K, size_of::<BlockQ5K>(), QK_K),
            (DType::Q6_K, size_of::<BlockQ6K>(), QK_K),
        ];
        for (dt, bytes, elems) in sizes {
            assert_eq!(dt.block(), (elems, bytes), "{dt}");
        }
    }

    /// Unaligned input and short buffers never panic: only whole blocks both sides hold are written.
    #[test]
    fn mismatched_lengths_write_only_whole_blocks() {
        let bytes = [0x11u8; 3 * 34 + 5];
        let mut out = vec![f32::NAN; 2 * 32 + 7];
        dequantize(DType::Q8_0, &bytes[1..], &mut out);
        assert!(out[..64].iter().all(|x| x.is_finite()));
        assert!(out[64..].iter().all(|x| x.is_nan()));
    }
}

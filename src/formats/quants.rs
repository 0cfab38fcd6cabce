//! Dequantisation of ggml block types, reproducing ggml's reference
//! `dequantize_row_*` (ggml-quants.c) operation for operation, so results are
//! bit-identical: products are rounded to f32 in the same order and never fused.
//! Block layouts are ggml-common.h's; sizes are asserted at compile time.

use half::{bf16, f16};

use crate::formats::tensor::DType;

const QK_K: usize = 256;

// Block sizes (bytes) from ggml-common.h: `static_assert(sizeof(block_q4_0) == ...)`.
const _: () = assert!(2 + 16 == 18); // block_q4_0 { ggml_half d; uint8_t qs[16]; }
const _: () = assert!(2 + 2 + 16 == 20); // block_q4_1 { d, m; qs[16] }
const _: () = assert!(2 + 4 + 16 == 22); // block_q5_0 { d; qh[4]; qs[16] }
const _: () = assert!(2 + 2 + 4 + 16 == 24); // block_q5_1 { d, m; qh[4]; qs[16] }
const _: () = assert!(2 + 32 == 34); // block_q8_0 { d; int8_t qs[32] }
const _: () = assert!(QK_K / 16 + QK_K / 4 + 2 + 2 == 84); // block_q2_K { scales[16]; qs[64]; d; dmin }
const _: () = assert!(QK_K / 8 + QK_K / 4 + 12 + 2 == 110); // block_q3_K { hmask[32]; qs[64]; scales[12]; d }
const _: () = assert!(2 + 2 + 12 + QK_K / 2 == 144); // block_q4_K { d; dmin; scales[12]; qs[128] }
const _: () = assert!(2 + 2 + 12 + QK_K / 8 + QK_K / 2 == 176); // block_q5_K { d; dmin; scales[12]; qh[32]; qs[128] }
const _: () = assert!(QK_K / 2 + QK_K / 4 + QK_K / 16 + 2 == 210); // block_q6_K { ql[128]; qh[64]; scales[16]; d }

#[inline]
fn h(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Dequantise `bytes` (a whole number of blocks of `dtype`) into `out`.
/// Callers guarantee the lengths agree (checked when the tensor was built).
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    let (be, bb) = dtype.block();
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => match bytemuck::try_cast_slice::<u8, f16>(bytes) {
            // Aligned: the half crate converts whole slices with F16C where the CPU has it.
            Ok(h) => half::slice::HalfFloatSliceExt::convert_to_f32_slice(h, &mut out[..h.len()]),
            Err(_) => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }
        },
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        DType::I32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32;
            }
        }
        DType::I64 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32;
            }
        }
        // Dispatch once per row, not per block, so each block loop inlines and vectorises.
        DType::Q8_0 => {
            for (b, y) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
                if let (Ok(b), Ok(y)) = (<&[u8; 34]>::try_from(b), <&mut [f32; 32]>::try_from(y)) {
                    q8_0(b, y);
                }
            }
        }
        DType::Q4_K => {
            for (b, y) in bytes.chunks_exact(144).zip(out.chunks_exact_mut(256)) {
                if let (Ok(b), Ok(y)) = (<&[u8; 144]>::try_from(b), <&mut [f32; 256]>::try_from(y)) {
                    q4_k(b, y);
                }
            }
        }
        DType::Q6_K => {
            for (b, y) in bytes.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
                if let (Ok(b), Ok(y)) = (<&[u8; 210]>::try_from(b), <&mut [f32; 256]>::try_from(y)) {
                    q6_k(b, y);
                }
            }
        }
        _ => {
            let f: fn(&[u8], &mut [f32]) = match dtype {
                DType::Q4_0 => q4_0,
                DType::Q4_1 => q4_1,
                DType::Q5_0 => q5_0,
                DType::Q5_1 => q5_1,
                DType::Q2_K => q2_k,
                DType::Q3_K => q3_k,
                DType::Q5_K => q5_k,
                _ => unreachable!("plain types, q8_0, q4_k and q6_k handled above"),
            };
            for (b, y) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
                f(b, y);
            }
        }
    }
}

/// block_q4_0: `y[j] = (lo(qs[j]) - 8) * d`, `y[j+16] = (hi(qs[j]) - 8) * d`.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// block_q4_1: `y = q * d + m`.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (h(b, 0), h(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// block_q5_0: 4 low bits in qs, the fifth in qh (little-endian u32); `y = (q - 16) * d`.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = (((qs[j] & 0x0F) | xh0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | xh1) as i32 - 16) as f32 * d;
    }
}

/// block_q5_1: as q5_0 without the offset, plus `m`.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (h(b, 0), h(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = ((qs[j] & 0x0F) | xh0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | xh1) as f32 * d + m;
    }
}

/// block_q8_0: `y = qs * d` (fixed-size arrays: no bounds checks, vectorises).
#[inline(always)]
fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = h(b, 0);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// block_q2_K: 16 sub-blocks of 16, 4-bit scale and 4-bit min each; 2-bit quants.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let (d, min) = (h(b, 80), h(b, 82));
    let mut is = 0;
    let mut o = 0;
    for n in 0..2 {
        let q = &qs[32 * n..32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                for l in 0..16 {
                    y[o] = dl * ((q[l + 16 * half] >> shift) & 3) as f32 - ml;
                    o += 1;
                }
            }
        }
    }
}

/// block_q3_K: 2 low bits in qs, the third (inverted) in hmask; 6-bit signed scales.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let hm = &b[0..32];
    let qs = &b[32..96];
    let d_all = h(b, 108);
    // Unpack the 12 scale bytes into 16 6-bit scales (ggml's kmask shuffle).
    let mut aux = [0u32; 4];
    for (i, a) in aux.iter_mut().take(3).enumerate() {
        *a = u32::from_le_bytes([b[96 + 4 * i], b[97 + 4 * i], b[98 + 4 * i], b[99 + 4 * i]]);
    }
    let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
    aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
    aux[0] = (aux[0] & k2) | ((tmp & k1) << 4);
    aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
    let scales: Vec<i8> = aux.iter().flat_map(|a| a.to_le_bytes()).map(|x| x as i8).collect();
    let mut is = 0;
    let mut o = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &qs[32 * n..32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let i = l + 16 * half;
                    let low = ((q[i] >> shift) & 3) as i32;
                    let hi = if hm[i] & m != 0 { 0 } else { 4 };
                    y[o] = dl * (low - hi) as f32;
                    o += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// ggml's `get_scale_min_k4`: the j-th 6-bit scale and min of a q4_K/q5_K block.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// block_q4_K: 8 sub-blocks of 32 with 6-bit scales and mins.
#[inline(always)]
fn q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let sc = &b[4..16];
    let qs = &b[16..144];
    for c in 0..4 {
        let q = &qs[32 * c..32 * c + 32];
        let (s1, m1) = scale_min_k4(2 * c, sc);
        let (s2, m2) = scale_min_k4(2 * c + 1, sc);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            y[64 * c + l] = d1 * (q[l] & 0xF) as f32 - m1;
            y[64 * c + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// block_q5_K: q4_K plus a fifth bit per value in qh.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let sc = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for c in 0..4 {
        let q = &qs[32 * c..32 * c + 32];
        let (u1, u2) = (1u8 << (2 * c), 1u8 << (2 * c + 1));
        let (s1, m1) = scale_min_k4(2 * c, sc);
        let (s2, m2) = scale_min_k4(2 * c + 1, sc);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            let hi1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let hi2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[64 * c + l] = d1 * ((q[l] & 0xF) + hi1) as f32 - m1;
            y[64 * c + 32 + l] = d2 * ((q[l] >> 4) + hi2) as f32 - m2;
        }
    }
}

/// block_q6_K: 4 low bits in ql, 2 high in qh, signed 8-bit scales per 16; `d` last.
#[inline(always)]
fn q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let d = h(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let yy = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            // ggml: `d * sc[is] * q`, evaluated left to right.
            yy[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            yy[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            yy[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            yy[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

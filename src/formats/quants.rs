//! Dequantisation of ggml block types (see ggml-common.h / ggml-quants.c).
//! Plain types are handled here too so every caller goes through one function.

use half::{bf16, f16};

use crate::formats::tensor::DType;

/// Dequantise `bytes` (a whole number of blocks of `dtype`) into `out`.
/// Callers guarantee the lengths agree (checked when the tensor was built).
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
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
                *o = i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32;
            }
        }
        // Quantised types: filled in by the GGUF work (bit-exact against ggml).
        _ => out.fill(f32::NAN),
    }
}

//! Files in and out: model weights (GGUF, safetensors), model configs, and
//! `parity-trace/1` directories of `.npy` stages.

pub mod npy;
pub mod quants;
pub mod tensor;
pub mod trace;

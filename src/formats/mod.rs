//! Files in and out: model weights (GGUF, safetensors), model configs, and
//! `parity-trace/1` directories of `.npy` stages.

pub mod arch;
pub mod config;
pub mod gguf;
pub mod gguf_model;
pub mod hf;
pub mod model;
pub mod npy;
pub mod quants;
pub mod sha256;
pub mod tensor;
pub mod tokenizer;
pub mod trace;

//! Fused weight-row kernels: one weight row, kept in its stored type and read
//! straight from the mapped file, times one or more activation rows, block by
//! block. No weight matrix is ever expanded into an f32 copy.
//!
//! Two numerics, chosen per linear layer (see `ops::Linear`):
//! - [`f32act`]: exact. Each weight is decoded to the f32 value ggml's
//!   dequantisation gives and multiplied with an f32 activation; sums in f32.
//!   This is what the engine compares against transformers with.
//! - [`q8act`]: llama.cpp's CPU numerics (`activation_rounding: llamacpp`).
//!   Activations are first quantised to the weight's `vec_dot_type` (Q8_0
//!   blocks of 32, Q8_K blocks of 256) and each block pair is an integer dot
//!   product scaled by both blocks' scales.
//!
//! Exact numerics run through [`gemm`] for any number of rows: a few weight
//! rows decoded at a time, then register tiles with one fixed summation order.
//!
//! Every kernel has a plain twin (`*_ref`) that spells out the arithmetic
//! element by element; tests hold each fast kernel to its twin. Kernels are
//! batch-invariant: an activation row's result does not depend on how many
//! other rows share the call or where it sits among them.

pub mod decode;
pub mod f32act;
pub mod gemm;
pub mod q8act;

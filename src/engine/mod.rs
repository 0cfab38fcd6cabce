//! The embedded CPU inference engine. It emits every canonical stage (SPEC §1)
//! to a trace sink, and runs a reference trace's tokens with the same batch split.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::tensor::DType;
use crate::formats::trace::Trace;

/// How a contract or the CLI asks the engine to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Compute dtype for activations that the engine rounds (None: f32).
    pub dtype: Option<DType>,
    /// Run only the first K layers (partial-depth reference).
    pub layers: Option<usize>,
    /// Overrides of named conventions (`rope.pairing: norm`, `rope.theta: 10000`, ...):
    /// how a mutant engine is written.
    pub settings: BTreeMap<String, serde_yaml::Value>,
    /// Keep only stages matching these globs (None: all).
    pub stages: Option<Vec<String>>,
}

/// Runs the engine on `model` (an HF folder or a GGUF file) over `like`'s tokens,
/// positions and batch split, one engine call per batch through the KV cache, and
/// returns the trace in memory.
pub fn trace_like(model: &Path, like: &Trace, opts: &RunOptions) -> Result<Trace> {
    let _ = (model, like, opts);
    Err(Error::Usage("the engine is not built yet".into()))
}

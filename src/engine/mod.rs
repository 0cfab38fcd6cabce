//! The embedded CPU inference engine. It emits every canonical stage (SPEC §1)
//! to a trace sink, and runs a reference trace's tokens with the same batch split.

pub mod bench;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod rope;
pub mod settings;
pub mod sink;
pub mod stages;

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::model::ModelSource;
use crate::formats::npy::NpyData;
use crate::formats::tensor::DType;
use crate::formats::trace::{Manifest, ModelRef, Producer, Stage, Trace, FORMAT};

pub use model::{KvCache, Model};
pub use settings::EngineSettings;

/// How a contract or the CLI asks the engine to run.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Compute dtype for activations that the engine rounds (None: f32).
    pub dtype: Option<DType>,
    /// Run only the first K layers (partial-depth reference).
    pub layers: Option<usize>,
    /// Overrides of named conventions (`rope.pairing: adjacent`, `rope.theta: 10000`, ...):
    /// how a mutant engine is written.
    pub settings: BTreeMap<String, serde_yaml::Value>,
    /// Keep only the stages this accepts (None: all).
    pub stages: Option<StageFilter>,
}

/// A predicate over stage names (built from globs by the caller).
pub type StageFilter = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions").field("dtype", &self.dtype).field("layers", &self.layers).field("settings", &self.settings).field("stages", &self.stages.as_ref().map(|_| "<filter>")).finish()
    }
}

/// Opens a model and applies the run's settings; returns the engine and where it came from.
pub fn load(model: &Path, opts: &RunOptions) -> Result<(Model, ModelSource)> {
    let src = ModelSource::open(model)?;
    let mut cfg = src.config.clone();
    let mut eng = EngineSettings::default();
    settings::apply(&mut cfg, &mut eng, &opts.settings)?;
    if let Some(dt) = opts.dtype {
        if dt != DType::F32 {
            return Err(Error::Usage(format!("engine compute dtype {dt} is not supported yet (f32 only)")));
        }
    }
    let m = Model::load(cfg, eng, src.weights.as_ref(), &model.display().to_string(), opts.layers)?;
    Ok((m, src))
}

/// Runs the engine on `model` (an HF folder or a GGUF file) over `like`'s tokens,
/// positions and batch split, one engine call per batch through the KV cache, and
/// returns the trace in memory. No numeric setting is copied from `like`.
pub fn trace_like(model: &Path, like: &Trace, opts: &RunOptions) -> Result<Trace> {
    let (m, src) = load(model, opts)?;
    let lm = &like.manifest;
    let mut rec = sink::Recorder::new(|n: &str| opts.stages.as_ref().is_none_or(|f| f(n))).expecting_rows(lm.tokens.len());
    let tokens: Vec<u32> = lm.tokens.iter().map(|&t| u32::try_from(t).map_err(|_| Error::mismatch(format!("{}: token id {t} is negative", like.dir.display())))).collect::<Result<_>>()?;
    let positions: Vec<[i64; 4]> = match &lm.positions {
        Some(p) => p
            .iter()
            .map(|r| {
                let mut a = [0i64; 4];
                for (i, v) in r.iter().take(4).enumerate() {
                    a[i] = *v;
                }
                if r.len() == 3 {
                    a[3] = 0;
                }
                a
            })
            .collect(),
        None => (0..tokens.len() as i64).map(|t| [t, t, t, 0]).collect(),
    };
    if positions.len() != tokens.len() {
        return Err(Error::mismatch(format!("{}: {} positions for {} tokens", like.dir.display(), positions.len(), tokens.len())));
    }
    let mut cache = KvCache::default();
    for (bi, b) in lm.batches.iter().enumerate() {
        let mut pos = positions[b[0]..b[1]].to_vec();
        if bi > 0 && m.eng.decode_position_offset != 0 {
            pos.iter_mut().for_each(|p| p.iter_mut().take(3).for_each(|x| *x += m.eng.decode_position_offset));
        }
        m.forward(&mut cache, &tokens[b[0]..b[1]], &pos, &mut rec)?;
    }

    let n = tokens.len();
    let mut stages = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for (name, r) in rec.stages {
        let mut shape = vec![r.rows()];
        shape.extend(&r.tail);
        let (data, dtype) = if r.is_ids { (NpyData::I64(r.ids.iter().map(|&x| x as i64).collect()), DType::I32) } else { (NpyData::F32(r.f32), DType::F32) };
        entries.insert(name.clone(), crate::formats::trace::StageEntry { file: format!("{name}.npy"), shape: shape.clone(), dtype: dtype.name().into(), rows: None, extra: Default::default() });
        stages.insert(name.clone(), Stage { name, shape, dtype, rows: 0..n, data });
    }
    let mut settings = BTreeMap::new();
    settings.insert("kv_cache_dtype".into(), serde_yaml::Value::from(m.eng.kv_cache_dtype.name()));
    settings.insert("threads".into(), serde_yaml::Value::from(rayon::current_num_threads() as u64));
    for (k, v) in &opts.settings {
        settings.insert(k.clone(), v.clone());
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        producer: Producer {
            kind: "parity".into(),
            name: "parity".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            command: Some(format!("parity trace --model {} --like {}", model.display(), like.dir.display())),
            extra: Default::default(),
        },
        model: Some(ModelRef { path: Some(model.display().to_string()), sha256: src.sha256().ok(), arch: Some(m.cfg.arch.clone()), dtype: Some(src.dtype.name().into()), extra: Default::default() }),
        settings,
        tokens: lm.tokens.clone(),
        positions: lm.positions.clone(),
        batches: lm.batches.clone(),
        layers: opts.layers,
        qk_layout: "halfsplit".into(),
        qk_unpermuted: src.format == "gguf",
        stages: entries,
        extra: Default::default(),
    };
    Ok(Trace::in_memory(like.dir.clone(), manifest, stages))
}

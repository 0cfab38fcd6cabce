//! Opening a model: an HF folder (config.json + safetensors) or a GGUF file,
//! behind one weight store that speaks transformers tensor names.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::formats::config::ModelConfig;
use crate::formats::hf::{self, SafetensorsStore};
use crate::formats::tensor::{DType, Tensor};

/// Weights by transformers name, in their stored type.
pub trait WeightStore: Send + Sync {
    fn get(&self, name: &str) -> Result<Tensor>;
    fn has(&self, name: &str) -> bool;
    /// Every tensor as the file itself names it (GGUF: `blk.0.attn_q.weight`).
    fn names(&self) -> Vec<String>;
    /// A tensor by its name in `names`, as stored (no transformers mapping,
    /// no un-permuted rows): what `parity inspect --tensors` lists.
    fn stored(&self, name: &str) -> Result<Tensor>;
}

impl WeightStore for SafetensorsStore {
    fn get(&self, name: &str) -> Result<Tensor> {
        SafetensorsStore::get(self, name)
    }
    fn has(&self, name: &str) -> bool {
        SafetensorsStore::has(self, name)
    }
    fn names(&self) -> Vec<String> {
        SafetensorsStore::names(self).cloned().collect()
    }
    fn stored(&self, name: &str) -> Result<Tensor> {
        SafetensorsStore::get(self, name)
    }
}

pub struct ModelSource {
    pub path: PathBuf,
    /// "safetensors" or "gguf".
    pub format: &'static str,
    pub config: ModelConfig,
    pub weights: Box<dyn WeightStore>,
    /// The weights' dtype as a manifest names it (f32, bf16, q8_0, ...): the most common matrix type.
    pub dtype: DType,
}

impl ModelSource {
    pub fn open(path: &Path) -> Result<ModelSource> {
        if path.is_dir() {
            let config = hf::read_config(path)?;
            let weights = SafetensorsStore::open(path)?;
            let dtype = weights.names().find(|n| n.ends_with("q_proj.weight")).and_then(|n| weights.get(n).ok()).map(|t| t.dtype).unwrap_or(DType::F32);
            return Ok(ModelSource { path: path.to_path_buf(), format: "safetensors", config, weights: Box::new(weights), dtype });
        }
        if !path.exists() {
            return Err(Error::format(path, "model", "no such file or folder"));
        }
        if path.extension().is_some_and(|e| e == "gguf") {
            return crate::formats::gguf_model::open(path);
        }
        Err(Error::format(path, "model", "expected an HF model folder (config.json + safetensors) or a .gguf file"))
    }

    /// sha256 as SPEC §2 defines it: of the weights file, or for a sharded folder
    /// of the sorted lines `<shard name> <sha256>`.
    pub fn sha256(&self) -> Result<String> {
        if self.format == "gguf" {
            return sha256_file(&self.path);
        }
        let idx = self.path.join("model.safetensors.index.json");
        if !idx.exists() {
            return sha256_file(&self.path.join("model.safetensors"));
        }
        let mut shards: Vec<String> = Vec::new();
        let text = std::fs::read_to_string(&idx).map_err(|e| Error::io(&idx, e))?;
        let j: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::format(&idx, "index", e.to_string()))?;
        if let Some(m) = j.get("weight_map").and_then(|m| m.as_object()) {
            shards = m.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
        }
        shards.sort();
        shards.dedup();
        let mut lines = String::new();
        for s in &shards {
            lines.push_str(&format!("{s} {}\n", sha256_file(&self.path.join(s))?));
        }
        Ok(sha256_hex(lines.as_bytes()))
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = crate::formats::sha256::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.hex())
}

pub fn sha256_hex(data: &[u8]) -> String {
    let mut h = crate::formats::sha256::Sha256::new();
    h.update(data);
    h.hex()
}

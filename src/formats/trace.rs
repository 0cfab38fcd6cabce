//! `parity-trace/1` directories (SPEC §2): a YAML manifest plus one `.npy` per stage.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::formats::npy::{self, NpyData};
use crate::formats::tensor::DType;

pub const FORMAT: &str = "parity-trace/1";

type Extra = BTreeMap<String, serde_yaml::Value>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Producer {
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ModelRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageEntry {
    pub file: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    /// Rows of the full sequence this file holds, when it is not all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<[usize; 2]>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub producer: Producer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    #[serde(default)]
    pub settings: BTreeMap<String, serde_yaml::Value>,
    pub tokens: Vec<i64>,
    #[serde(default)]
    pub positions: Option<Vec<Vec<i64>>>,
    pub batches: Vec<[usize; 2]>,
    #[serde(default)]
    pub layers: Option<usize>,
    #[serde(default = "halfsplit")]
    pub qk_layout: String,
    #[serde(default)]
    pub qk_unpermuted: bool,
    pub stages: BTreeMap<String, StageEntry>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn halfsplit() -> String {
    "halfsplit".into()
}

/// A stage's values, widened to f32 (or i64 for ids), with the rows they cover.
#[derive(Clone, Debug)]
pub struct Stage {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub rows: Range<usize>,
    pub data: NpyData,
}

impl Stage {
    /// Elements per row (product of all but the first dimension).
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
    pub fn f32(&self) -> Option<&[f32]> {
        match &self.data {
            NpyData::F32(v) => Some(v),
            NpyData::I64(_) => None,
        }
    }
    pub fn i64(&self) -> Option<&[i64]> {
        match &self.data {
            NpyData::I64(v) => Some(v),
            NpyData::F32(_) => None,
        }
    }
}

/// An opened trace directory; stages are loaded on demand.
#[derive(Clone, Debug)]
pub struct Trace {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Stages held in memory (an engine run); consulted before files.
    pub mem: Option<std::sync::Arc<BTreeMap<String, Stage>>>,
}

impl Trace {
    pub fn open(dir: &Path) -> Result<Trace> {
        let path = dir.join("trace.yaml");
        if !path.exists() {
            return Err(Error::format(dir, "trace.yaml", "not a trace directory: trace.yaml is missing"));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let manifest: Manifest = serde_yaml::from_str(&text).map_err(|e| Error::format(&path, "manifest", e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(Error::format(&path, "format", format!("is {:?}, expected {FORMAT}", manifest.format)));
        }
        let t = Trace { dir: dir.to_path_buf(), manifest, mem: None };
        t.validate(&path)?;
        Ok(t)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let m = &self.manifest;
        let n = m.tokens.len();
        let mut next = 0;
        for b in &m.batches {
            if b[0] != next || b[1] <= b[0] || b[1] > n {
                return Err(Error::format(path, "batches", format!("{:?} must split rows 0..{n} into consecutive non-empty calls", m.batches)));
            }
            next = b[1];
        }
        if next != n {
            return Err(Error::format(path, "batches", format!("cover rows 0..{next}, tokens has {n}")));
        }
        for (name, e) in &m.stages {
            if DType::from_name(&e.dtype).is_none() {
                return Err(Error::format(path, format!("stages.{name}.dtype"), format!("unknown dtype {:?}", e.dtype)));
            }
            let rows = e.rows.map(|r| r[1].saturating_sub(r[0])).unwrap_or(n);
            if let Some(r) = e.rows {
                if r[0] >= r[1] || r[1] > n {
                    return Err(Error::format(path, format!("stages.{name}.rows"), format!("{r:?} is not inside 0..{n}")));
                }
            }
            if e.shape.first() != Some(&rows) {
                return Err(Error::format(path, format!("stages.{name}.shape"), format!("{:?} must start with its {rows} rows", e.shape)));
            }
        }
        Ok(())
    }

    /// A trace held in memory; `dir` is only used to resolve relative paths and in messages.
    pub fn in_memory(dir: PathBuf, manifest: Manifest, stages: BTreeMap<String, Stage>) -> Trace {
        Trace { dir, manifest, mem: Some(std::sync::Arc::new(stages)) }
    }

    /// Writes this trace (in-memory or not) to `out` as a trace directory.
    pub fn save(&self, out: &Path, allow_reference: bool) -> Result<PathBuf> {
        let mut m = self.manifest.clone();
        m.stages.clear();
        let mut w = TraceWriter::create(out, m, allow_reference)?;
        for name in self.stage_names() {
            let s = self.load(&name)?;
            let rows = (s.rows != (0..self.n_rows())).then_some([s.rows.start, s.rows.end]);
            match &s.data {
                NpyData::F32(v) => w.add_f32(&name, &s.shape, rows, v, s.dtype)?,
                NpyData::I64(v) => {
                    let v: Vec<i32> = v.iter().map(|&x| x as i32).collect();
                    w.add_i32(&name, &s.shape, rows, &v)?
                }
            }
        }
        w.finish()
    }

    pub fn n_rows(&self) -> usize {
        self.manifest.tokens.len()
    }

    /// Stage names in execution order (SPEC §1).
    pub fn stage_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.manifest.stages.keys().cloned().collect();
        names.sort_by_key(|n| stage_order(n));
        names
    }

    pub fn has(&self, stage: &str) -> bool {
        self.manifest.stages.contains_key(stage)
    }

    /// Loads a stage, checking the file against the manifest.
    pub fn load(&self, stage: &str) -> Result<Stage> {
        if let Some(s) = self.mem.as_ref().and_then(|m| m.get(stage)) {
            return Ok(s.clone());
        }
        let e = self.manifest.stages.get(stage).ok_or_else(|| Error::format(&self.dir, stage, "stage is not in this trace's manifest"))?;
        let file = resolve(&self.dir, &e.file);
        let dtype = DType::from_name(&e.dtype).unwrap_or(DType::F32);
        let a = npy::read(&file, Some(dtype))?;
        if a.shape != e.shape {
            return Err(Error::format(&file, stage, format!("file shape {:?} differs from the manifest's {:?}", a.shape, e.shape)));
        }
        let rows = e.rows.map(|r| r[0]..r[1]).unwrap_or(0..self.n_rows());
        Ok(Stage { name: stage.to_string(), shape: a.shape, dtype, rows, data: a.data })
    }

    /// The model path named by the manifest, resolved against the trace directory.
    pub fn model_path(&self) -> Option<PathBuf> {
        let p = self.manifest.model.as_ref()?.path.as_ref()?;
        Some(resolve(&self.dir, p))
    }
}

pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Sort key giving SPEC §1 execution order: embed, layers in numeric order with
/// their stages in compute order, then final_norm and logits; unknown names last
/// within their layer, alphabetically.
pub fn stage_order(name: &str) -> (usize, usize, String) {
    const LAYER: [&str; 22] = [
        "attn_norm",
        "q",
        "k",
        "v",
        "q_norm",
        "k_norm",
        "q_rope",
        "k_rope",
        "attn",
        "attn_post_norm",
        "attn_out",
        "attn_resid",
        "ffn_norm",
        "router_logits",
        "expert_ids",
        "expert_weights",
        "ffn_out",
        "ffn_post_norm",
        "out",
        "",
        "",
        "",
    ];
    match name {
        "embed" => return (0, 0, String::new()),
        "final_norm" => return (usize::MAX, 0, String::new()),
        "logits" => return (usize::MAX, 1, String::new()),
        _ => {}
    }
    if let Some((layer, stage)) = split_layer(name) {
        let pos = LAYER.iter().position(|s| !s.is_empty() && *s == stage).unwrap_or(LAYER.len());
        return (layer + 1, pos, stage.to_string());
    }
    (usize::MAX - 1, 0, name.to_string())
}

/// `L12.q_rope` -> (12, "q_rope").
pub fn split_layer(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix('L')?;
    let (num, stage) = rest.split_once('.')?;
    Some((num.parse().ok()?, stage))
}

/// Writes a trace directory stage by stage, then the manifest.
pub struct TraceWriter {
    dir: PathBuf,
    manifest: Manifest,
}

impl TraceWriter {
    /// Refuses to write into a directory under a `reference/` folder unless
    /// `allow_reference` is set: references are made by scripts, never by accident.
    pub fn create(dir: &Path, manifest: Manifest, allow_reference: bool) -> Result<TraceWriter> {
        let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        if !allow_reference && abs.components().any(|c| c.as_os_str() == "reference") {
            return Err(Error::Usage(format!("{}: refusing to write a trace under a reference/ folder (references are made by scripts/)", dir.display())));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(TraceWriter { dir: dir.to_path_buf(), manifest })
    }

    pub fn add_f32(&mut self, name: &str, shape: &[usize], rows: Option<[usize; 2]>, data: &[f32], dtype: DType) -> Result<()> {
        let file = format!("{name}.npy");
        npy::write_f32(&self.dir.join(&file), shape, data, dtype)?;
        self.entry(name, file, shape, dtype, rows);
        Ok(())
    }

    pub fn add_i32(&mut self, name: &str, shape: &[usize], rows: Option<[usize; 2]>, data: &[i32]) -> Result<()> {
        let file = format!("{name}.npy");
        npy::write_i32(&self.dir.join(&file), shape, data)?;
        self.entry(name, file, shape, DType::I32, rows);
        Ok(())
    }

    fn entry(&mut self, name: &str, file: String, shape: &[usize], dtype: DType, rows: Option<[usize; 2]>) {
        self.manifest.stages.insert(name.to_string(), StageEntry { file, shape: shape.to_vec(), dtype: dtype.name().into(), rows, extra: Extra::new() });
    }

    pub fn finish(self) -> Result<PathBuf> {
        let path = self.dir.join("trace.yaml");
        let text = serde_yaml::to_string(&self.manifest).map_err(|e| Error::format(&path, "manifest", e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        Ok(self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_order() {
        let mut v = vec!["logits", "L10.out", "L2.q_rope", "embed", "L2.q", "final_norm", "L2.attn_norm"];
        v.sort_by_key(|n| stage_order(n));
        assert_eq!(v, ["embed", "L2.attn_norm", "L2.q", "L2.q_rope", "L10.out", "final_norm", "logits"]);
    }
}

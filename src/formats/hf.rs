//! transformers model folders: `config.json` resolved into a `ModelConfig`, and
//! safetensors weights (single file or sharded with an index), memory-mapped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::formats::arch::{self, BiasRule};
use crate::formats::config::*;
use crate::formats::tensor::{Backing, DType, Tensor};

/// Reads `config.json` (both the `rope_theta`/`rope_scaling` style and the newer
/// `rope_parameters`) and the chat template.
pub fn read_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let j: Value = serde_json::from_str(&text).map_err(|e| Error::format(&path, "config.json", e.to_string()))?;
    let mut cfg = resolve(&path, &j)?;
    cfg.chat_template = read_chat_template(dir)?;
    Ok(cfg)
}

fn read_chat_template(dir: &Path) -> Result<Option<Sourced<String>>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        let t = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
        return Ok(Some(Sourced::file(t, "chat_template.jinja")));
    }
    let tc = dir.join("tokenizer_config.json");
    if tc.exists() {
        let text = std::fs::read_to_string(&tc).map_err(|e| Error::io(&tc, e))?;
        let j: Value = serde_json::from_str(&text).map_err(|e| Error::format(&tc, "tokenizer_config.json", e.to_string()))?;
        if let Some(t) = j.get("chat_template").and_then(Value::as_str) {
            return Ok(Some(Sourced::file(t.to_string(), "tokenizer_config.json: chat_template")));
        }
    }
    Ok(None)
}

struct Reader<'a> {
    path: &'a Path,
    j: &'a Value,
}

impl Reader<'_> {
    fn lookup(&self, key: &str) -> Option<&Value> {
        let mut v = self.j;
        for part in key.split('.') {
            v = v.get(part)?;
        }
        (!v.is_null()).then_some(v)
    }
    fn usize(&self, key: &str) -> Result<Option<Sourced<usize>>> {
        match self.lookup(key) {
            None => Ok(None),
            Some(v) => {
                v.as_u64().map(|x| Some(Sourced::file(x as usize, format!("config.json: {key}")))).ok_or_else(|| Error::format(self.path, key, format!("expected a non-negative integer, found {v}")))
            }
        }
    }
    fn need_usize(&self, key: &str) -> Result<Sourced<usize>> {
        self.usize(key)?.ok_or_else(|| Error::format(self.path, key, "required key is missing"))
    }
    fn f64(&self, key: &str) -> Result<Option<Sourced<f64>>> {
        match self.lookup(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(|x| Some(Sourced::file(x, format!("config.json: {key}")))).ok_or_else(|| Error::format(self.path, key, format!("expected a number, found {v}"))),
        }
    }
    fn bool(&self, key: &str) -> Result<Option<Sourced<bool>>> {
        match self.lookup(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(|x| Some(Sourced::file(x, format!("config.json: {key}")))).ok_or_else(|| Error::format(self.path, key, format!("expected true or false, found {v}"))),
        }
    }
}

fn resolve(path: &Path, j: &Value) -> Result<ModelConfig> {
    let r = Reader { path, j };
    let model_type = j.get("model_type").and_then(Value::as_str).ok_or_else(|| Error::format(path, "model_type", "missing; cannot tell the architecture"))?;
    let a = arch::by_model_type(model_type).ok_or_else(|| Error::format(path, "model_type", format!("unknown architecture {model_type:?} (known: {})", arch::known_model_types())))?;
    let cls = format!("transformers' {model_type} config default");

    let hidden = r.need_usize("hidden_size")?;
    let n_layers = r.need_usize("num_hidden_layers")?;
    let n_heads = r.need_usize("num_attention_heads")?;
    if n_heads.value == 0 || hidden.value == 0 {
        return Err(Error::format(path, "num_attention_heads", "hidden_size and num_attention_heads must be positive"));
    }
    let n_kv_heads = r.usize("num_key_value_heads")?.unwrap_or_else(|| Sourced::default(n_heads.value, "num_key_value_heads absent: equal to num_attention_heads"));
    let head_dim = r.usize("head_dim")?.unwrap_or_else(|| Sourced::derived(hidden.value / n_heads.value, "hidden_size / num_attention_heads"));
    if n_kv_heads.value == 0 || n_heads.value % n_kv_heads.value != 0 {
        return Err(Error::format(path, "num_key_value_heads", format!("{} query heads cannot be grouped over {} key/value heads", n_heads.value, n_kv_heads.value)));
    }
    let intermediate = r.need_usize("intermediate_size")?;
    let vocab = r.need_usize("vocab_size")?;
    let eps = r.f64("rms_norm_eps")?.unwrap_or_else(|| Sourced::default(a.hf_default_eps, cls.clone()));

    // RoPE: the newer `rope_parameters` dict, else top-level `rope_theta` + `rope_scaling`.
    let rp = if r.lookup("rope_parameters").is_some() { "rope_parameters." } else { "" };
    let theta = r.f64(&format!("{rp}rope_theta"))?.or(r.f64("rope_theta")?).unwrap_or_else(|| Sourced::default(a.hf_default_theta, format!("rope_theta absent: {cls}")));
    let partial = r.f64(&format!("{rp}partial_rotary_factor"))?.or(r.f64("partial_rotary_factor")?);
    let rotary_dim = match &partial {
        Some(p) => Sourced::derived((head_dim.value as f64 * p.value) as usize, format!("head_dim x partial_rotary_factor ({})", p.source)),
        None => Sourced::derived(head_dim.value, "head_dim (no partial_rotary_factor)"),
    };
    let scaling = read_scaling(&r, rp)?;

    let bias_key = r.bool("attention_bias")?;
    let (qkv_bias, o_bias) = match a.bias {
        BiasRule::QkvAlways => (Sourced::derived(true, format!("{model_type} architecture: q/k/v always biased")), Sourced::derived(false, format!("{model_type} architecture: no o_proj bias"))),
        BiasRule::AttentionBiasKey => {
            let b = bias_key.unwrap_or_else(|| Sourced::default(false, cls.clone()));
            (b.clone(), b)
        }
    };
    let tied = r.bool("tie_word_embeddings")?.unwrap_or_else(|| Sourced::default(a.hf_default_tied, cls.clone()));

    let sliding_window = read_sliding(&r, a.sliding_needs_flag, n_layers.value)?;
    let moe = if a.moe { Some(read_moe(&r, a, &cls)?) } else { None };

    Ok(ModelConfig {
        arch: model_type.to_string(),
        attn_scale: Sourced::derived(1.0 / (head_dim.value as f64).sqrt(), "1/sqrt(head_dim)"),
        hidden,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        intermediate,
        vocab,
        norm: NormConfig {
            eps,
            eps_placement: Sourced::derived(EpsPlacement::Inside, "transformers RMSNorm: rsqrt(mean(x^2) + eps)"),
            weight_offset: Sourced::derived(0.0, "transformers RMSNorm: weight used as stored"),
        },
        rope: RopeConfig {
            theta,
            pairing: Sourced::derived(Pairing::HalfSplit, "transformers rotate_half"),
            rotary_dim,
            partial_layout: Sourced::derived(PartialLayout::LeadingBlock, "rotate_half on the leading rotary_dim dims"),
            scaling,
            mrope: None,
        },
        qk_norm: Sourced::derived(a.qk_norm, format!("{model_type} architecture")),
        qkv_bias,
        o_bias,
        tied_embeddings: tied,
        sliding_window,
        moe,
        chat_template: None,
        notes: Vec::new(),
    })
}

fn read_scaling(r: &Reader, rp: &str) -> Result<Sourced<RopeScaling>> {
    let block = if rp.is_empty() { "rope_scaling." } else { rp };
    let kind = r.lookup(&format!("{block}rope_type")).or_else(|| r.lookup(&format!("{block}type"))).and_then(Value::as_str).unwrap_or("default");
    let key = |k: &str| format!("{block}{k}");
    let f = |k: &str, d: f64| -> Result<f64> { Ok(r.f64(&key(k))?.map(|s| s.value).unwrap_or(d)) };
    let need = |k: &str| -> Result<f64> { r.f64(&key(k))?.map(|s| s.value).ok_or_else(|| Error::format(r.path, key(k), format!("required by rope type {kind}"))) };
    let max_pos = r.f64("max_position_embeddings")?.map(|s| s.value);
    let src = format!("config.json: {}", key("rope_type"));
    let s = match kind {
        "default" => return Ok(Sourced::derived(RopeScaling::None, "no rope scaling in config.json")),
        "linear" => RopeScaling::Linear { factor: need("factor")? },
        "dynamic" => RopeScaling::Dynamic { factor: need("factor")?, max_position: max_pos.ok_or_else(|| Error::format(r.path, "max_position_embeddings", "required by dynamic rope"))? },
        "yarn" => {
            let orig = r.f64(&key("original_max_position_embeddings"))?.map(|s| s.value).or(max_pos).unwrap_or(0.0);
            RopeScaling::Yarn {
                factor: need("factor")?,
                original_max_position: orig,
                beta_fast: f("beta_fast", 32.0)?,
                beta_slow: f("beta_slow", 1.0)?,
                attention_factor: r.f64(&key("attention_factor"))?.map(|s| s.value),
                mscale: r.f64(&key("mscale"))?.map(|s| s.value),
                mscale_all_dim: r.f64(&key("mscale_all_dim"))?.map(|s| s.value),
                truncate: r.bool(&key("truncate"))?.map(|s| s.value).unwrap_or(true),
            }
        }
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_position: need("original_max_position_embeddings")?,
        },
        other => return Err(Error::format(r.path, key("rope_type"), format!("rope type {other:?} is not supported (known: default, linear, dynamic, yarn, llama3)"))),
    };
    Ok(Sourced::file(s, src))
}

fn read_sliding(r: &Reader, needs_flag: bool, n_layers: usize) -> Result<Sourced<Vec<Option<usize>>>> {
    let window = r.usize("sliding_window")?;
    let flag = r.bool("use_sliding_window")?;
    let Some(w) = window else {
        return Ok(Sourced::default(vec![None; n_layers], "sliding_window absent: full attention"));
    };
    if needs_flag && !flag.as_ref().is_some_and(|f| f.value) {
        return Ok(Sourced::derived(vec![None; n_layers], "use_sliding_window is not true: sliding_window unused"));
    }
    // transformers 5 lists each layer's kind; older configs apply the window everywhere.
    if let Some(types) = r.lookup("layer_types").and_then(Value::as_array) {
        if types.len() != n_layers {
            return Err(Error::format(r.path, "layer_types", format!("has {} entries for {n_layers} layers", types.len())));
        }
        let v = types.iter().map(|t| (t.as_str() == Some("sliding_attention")).then_some(w.value)).collect();
        return Ok(Sourced::file(v, "config.json: sliding_window + layer_types"));
    }
    Ok(Sourced::file(vec![Some(w.value); n_layers], "config.json: sliding_window (every layer)"))
}

fn read_moe(r: &Reader, a: &arch::Arch, cls: &str) -> Result<MoeConfig> {
    let dense_layers = match r.lookup("mlp_only_layers").and_then(Value::as_array) {
        Some(v) => Sourced::file(v.iter().filter_map(Value::as_u64).map(|x| x as usize).collect(), "config.json: mlp_only_layers"),
        None => Sourced::default(Vec::new(), cls),
    };
    Ok(MoeConfig {
        // transformers 5 writes num_local_experts; 4.x checkpoints say num_experts.
        n_experts: match r.usize("num_local_experts")? {
            Some(v) => v,
            None => r.need_usize("num_experts")?,
        },
        top_k: r.need_usize("num_experts_per_tok")?,
        renormalize: r.bool("norm_topk_prob")?.unwrap_or_else(|| Sourced::default(a.hf_default_renorm, cls)),
        softmax_before_topk: Sourced::derived(true, format!("{}: softmax over all experts, then top-k", a.model_type)),
        intermediate: r.need_usize("moe_intermediate_size")?,
        sparse_step: r.usize("decoder_sparse_step")?.unwrap_or_else(|| Sourced::default(1, cls)),
        dense_layers,
    })
}

/// Safetensors weights of a folder, single-file or sharded, opened lazily so a
/// partial-depth run never touches the shards of layers it does not need.
pub struct SafetensorsStore {
    dir: PathBuf,
    /// tensor name -> shard file name
    index: BTreeMap<String, String>,
    open: Mutex<BTreeMap<String, Arc<Shard>>>,
}

struct Shard {
    map: Arc<memmap2::Mmap>,
    /// name -> (dtype, shape, byte range in the map)
    tensors: BTreeMap<String, (DType, Vec<usize>, std::ops::Range<usize>)>,
}

impl SafetensorsStore {
    pub fn open(dir: &Path) -> Result<SafetensorsStore> {
        let idx = dir.join("model.safetensors.index.json");
        let index = if idx.exists() {
            let text = std::fs::read_to_string(&idx).map_err(|e| Error::io(&idx, e))?;
            let j: Value = serde_json::from_str(&text).map_err(|e| Error::format(&idx, "index", e.to_string()))?;
            let map = j.get("weight_map").and_then(Value::as_object).ok_or_else(|| Error::format(&idx, "weight_map", "missing or not an object"))?;
            let mut index = BTreeMap::new();
            for (k, v) in map {
                let f = v.as_str().ok_or_else(|| Error::format(&idx, k, "shard name is not a string"))?;
                if f.contains('/') || f.contains("..") {
                    return Err(Error::format(&idx, k, format!("shard {f:?} must be a file name inside the folder")));
                }
                index.insert(k.clone(), f.to_string());
            }
            index
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                return Err(Error::format(dir, "weights", "no model.safetensors or model.safetensors.index.json"));
            }
            let shard = Self::load_shard(&single)?;
            let index = shard.tensors.keys().map(|k| (k.clone(), "model.safetensors".to_string())).collect();
            let store = SafetensorsStore { dir: dir.to_path_buf(), index, open: Mutex::new(BTreeMap::new()) };
            store.open.lock().map_err(|_| Error::mismatch("poisoned lock"))?.insert("model.safetensors".into(), Arc::new(shard));
            return Ok(store);
        };
        Ok(SafetensorsStore { dir: dir.to_path_buf(), index, open: Mutex::new(BTreeMap::new()) })
    }

    fn load_shard(path: &Path) -> Result<Shard> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; files are not expected to change while parity runs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let st = safetensors::SafeTensors::deserialize(&map).map_err(|e| Error::format(path, "safetensors header", e.to_string()))?;
        let base = map.as_ptr() as usize;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                safetensors::Dtype::I32 => DType::I32,
                safetensors::Dtype::I64 => DType::I64,
                other => return Err(Error::format(path, &name, format!("unsupported dtype {other:?} (expected F32, F16 or BF16)"))),
            };
            let start = view.data().as_ptr() as usize - base;
            tensors.insert(name, (dtype, view.shape().to_vec(), start..start + view.data().len()));
        }
        drop(st);
        Ok(Shard { map: Arc::new(map), tensors })
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Result<Tensor> {
        let file = self.index.get(name).ok_or_else(|| Error::format(&self.dir, name, "tensor is missing from the safetensors weights"))?;
        let shard = {
            let mut open = self.open.lock().map_err(|_| Error::mismatch("poisoned lock"))?;
            match open.get(file) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Self::load_shard(&self.dir.join(file))?);
                    open.insert(file.clone(), s.clone());
                    s
                }
            }
        };
        let (dtype, shape, range) = shard.tensors.get(name).cloned().ok_or_else(|| Error::format(self.dir.join(file), name, "the index names this shard, but the tensor is not in it"))?;
        Tensor::new(name, dtype, shape, Backing::Map(shard.map.clone()), range).map_err(|e| Error::format(self.dir.join(file), name, e.to_string()))
    }

    /// sha256 of the weights as SPEC §2 defines it, computed by the caller's hasher.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = self.index.values().cloned().collect();
        v.sort();
        v.dedup();
        v
    }
}

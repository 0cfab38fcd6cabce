//! A GGUF file as a model: metadata mapped onto `ModelConfig` (each value with
//! the key it came from, or llama.cpp's default and why), tensors renamed to
//! transformers names, and the converter's transforms undone: Q/K rows that
//! llama.cpp permuted for its NORM RoPE are read back in half-split order, and
//! stacked expert tensors are exposed one expert at a time.

use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::arch;
use crate::formats::config::*;
use crate::formats::gguf::GgufFile;
use crate::formats::model::{ModelSource, WeightStore};
use crate::formats::tensor::{DType, Tensor};

struct Meta<'a> {
    f: &'a GgufFile,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    fn u(&self, k: &str) -> Result<Option<Sourced<usize>>> {
        let key = self.key(k);
        match self.f.get(&key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|x| Some(Sourced::file(x as usize, format!("gguf: {key}")))).ok_or_else(|| Error::format(&self.f.path, &key, format!("expected an integer, found {v:?}"))),
        }
    }
    fn need_u(&self, k: &str) -> Result<Sourced<usize>> {
        self.u(k)?.ok_or_else(|| Error::format(&self.f.path, self.key(k), "required key is missing"))
    }
    fn f(&self, k: &str) -> Result<Option<Sourced<f64>>> {
        let key = self.key(k);
        match self.f.get(&key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(|x| Some(Sourced::file(x, format!("gguf: {key}")))).ok_or_else(|| Error::format(&self.f.path, &key, format!("expected a number, found {v:?}"))),
        }
    }
    fn s(&self, k: &str) -> Option<String> {
        self.f.get(&self.key(k)).and_then(|v| v.as_str()).map(str::to_string)
    }
}

/// GGUF tensor name for a transformers name (None: no GGUF counterpart).
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let (part, suffix) = tail.rsplit_once('.')?; // suffix: weight | bias
    let g = match part {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "mlp.gate" => "ffn_gate_inp",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// `model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight` -> (stacked GGUF name, E).
fn expert_name(hf: &str) -> Option<(String, usize)> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once(".mlp.experts.")?;
    let (e, proj) = tail.split_once('.')?;
    let g = match proj {
        "gate_proj.weight" => "ffn_gate_exps",
        "up_proj.weight" => "ffn_up_exps",
        "down_proj.weight" => "ffn_down_exps",
        _ => return None,
    };
    Some((format!("blk.{layer}.{g}.weight"), e.parse().ok()?))
}

/// Logical (half-split) row -> stored row, for llama.cpp's Q/K permutation
/// `w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2)` (convert_hf_to_gguf `LlamaModel.permute`):
/// stored row `h*hd + 2i + j` holds original row `h*hd + j*hd/2 + i`.
pub fn unpermute_rows(n_heads: usize, head_dim: usize) -> Vec<u32> {
    let half = head_dim / 2;
    let mut map = vec![0u32; n_heads * head_dim];
    for h in 0..n_heads {
        for j in 0..2 {
            for i in 0..half {
                map[h * head_dim + j * half + i] = (h * head_dim + 2 * i + j) as u32;
            }
        }
    }
    map
}

struct GgufStore {
    f: GgufFile,
    /// (n_heads, n_kv_heads, head_dim) when Q/K rows must be un-permuted.
    unpermute: Option<(usize, usize, usize)>,
}

impl WeightStore for GgufStore {
    fn get(&self, name: &str) -> Result<Tensor> {
        if let Some((stacked, e)) = expert_name(name) {
            return self.f.tensor(&stacked)?.select(e);
        }
        let g = gguf_name(name).ok_or_else(|| Error::format(&self.f.path, name, "no GGUF tensor corresponds to this transformers name"))?;
        let t = self.f.tensor(&g)?;
        match self.unpermute {
            Some((nh, _, hd)) if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") => remap(t, nh, hd),
            Some((_, nkv, hd)) if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") => remap(t, nkv, hd),
            _ => Ok(t),
        }
    }
    fn has(&self, name: &str) -> bool {
        match expert_name(name) {
            Some((stacked, _)) => self.f.tensor_names().iter().any(|n| *n == stacked),
            None => gguf_name(name).is_some_and(|g| self.f.tensor_names().iter().any(|n| *n == g)),
        }
    }
    fn names(&self) -> Vec<String> {
        self.f.tensor_names().iter().map(|s| s.to_string()).collect()
    }
    fn stored(&self, name: &str) -> Result<Tensor> {
        self.f.tensor(name)
    }
}

fn remap(t: Tensor, heads: usize, hd: usize) -> Result<Tensor> {
    if t.shape.len() == 1 {
        // A bias permuted like its rows: undo on the values directly.
        let v = t.to_f32();
        let map = unpermute_rows(heads, hd);
        let w: Vec<f32> = map.iter().map(|&r| v[r as usize]).collect();
        return Tensor::from_f32(t.name.clone(), t.shape.clone(), &w);
    }
    if t.n_rows() != heads * hd {
        return Err(Error::mismatch(format!("tensor {}: {} rows, expected {heads} heads x {hd}", t.name, t.n_rows())));
    }
    t.with_row_map(unpermute_rows(heads, hd))
}

pub fn open(path: &Path) -> Result<ModelSource> {
    let f = GgufFile::open(path)?;
    let gguf_arch = f.get("general.architecture").and_then(|v| v.as_str()).ok_or_else(|| Error::format(path, "general.architecture", "missing; cannot tell the architecture"))?.to_string();
    let a = arch::by_gguf(&gguf_arch).ok_or_else(|| Error::format(path, "general.architecture", format!("unknown architecture {gguf_arch:?} (known: llama, qwen2, qwen3, qwen3moe)")))?;
    let m = Meta { f: &f, arch: &gguf_arch };
    let has = |n: &str| f.tensor_names().contains(&n);
    let mut notes = Vec::new();

    let hidden = m.need_u("embedding_length")?;
    let n_layers = m.need_u("block_count")?;
    let n_heads = m.need_u("attention.head_count")?;
    if n_heads.value == 0 {
        return Err(Error::format(path, m.key("attention.head_count"), "must be positive"));
    }
    let n_kv_heads = m.u("attention.head_count_kv")?.unwrap_or_else(|| Sourced::default(n_heads.value, "llama.cpp: head_count_kv absent, equal to head_count"));
    if n_kv_heads.value == 0 || n_heads.value % n_kv_heads.value != 0 {
        return Err(Error::format(path, m.key("attention.head_count_kv"), format!("{} heads cannot be grouped over {}", n_heads.value, n_kv_heads.value)));
    }
    let head_dim = m.u("attention.key_length")?.unwrap_or_else(|| Sourced::default(hidden.value / n_heads.value, "llama.cpp: key_length absent, embedding_length / head_count"));
    let intermediate = match m.u("feed_forward_length")? {
        Some(v) => v,
        None if a.moe => Sourced::default(0, "MoE model without a dense feed-forward length"),
        None => return Err(Error::format(path, m.key("feed_forward_length"), "required key is missing")),
    };
    let embd = f.tensor("token_embd.weight")?;
    let vocab = match m.u("vocab_size")? {
        Some(v) => v,
        None => Sourced::derived(embd.shape.first().copied().unwrap_or(0), "rows of token_embd.weight"),
    };
    let eps = m.f("attention.layer_norm_rms_epsilon")?.ok_or_else(|| Error::format(path, m.key("attention.layer_norm_rms_epsilon"), "required key is missing"))?;
    let theta = m.f("rope.freq_base")?.unwrap_or_else(|| {
        notes.push(format!("{}.rope.freq_base is absent: llama.cpp assumes 1e4; the checkpoint's transformers config may say otherwise (Qwen models use 1e6)", gguf_arch));
        Sourced::default(10000.0, format!("{gguf_arch}.rope.freq_base absent; llama.cpp assumes 1e4 too, while the checkpoint's transformers config may say 1e6"))
    });
    let rotary_dim = m.u("rope.dimension_count")?.unwrap_or_else(|| Sourced::default(head_dim.value, "llama.cpp: rope.dimension_count absent, the whole head rotates"));
    let scaling = match m.s("rope.scaling.type").as_deref() {
        None | Some("none") => Sourced::derived(RopeScaling::None, "no rope scaling in the GGUF"),
        Some("linear") => {
            let f = m.f("rope.scaling.factor")?.map_or(1.0, |s| s.value);
            Sourced::file(RopeScaling::Linear { factor: f }, format!("gguf: {}", m.key("rope.scaling.type")))
        }
        Some(other) => return Err(Error::format(path, m.key("rope.scaling.type"), format!("rope scaling {other:?} is not supported yet"))),
    };
    let scaling = if has("rope_freqs.weight") {
        if scaling.value != RopeScaling::None {
            return Err(Error::format(path, "rope_freqs.weight", "frequency factors together with a rope.scaling.type are not supported"));
        }
        let t = f.tensor("rope_freqs.weight")?;
        if t.numel() * 2 < rotary_dim.value {
            return Err(Error::format(path, "rope_freqs.weight", format!("{} factors for {} rotated dims", t.numel(), rotary_dim.value)));
        }
        notes.push("rope_freqs.weight holds per-pair frequency divisors (llama.cpp's form of llama3 scaling); the original rope_scaling parameters are not in the GGUF".into());
        Sourced::file(RopeScaling::FreqFactors { factors: t.to_f32() }, "gguf: rope_freqs.weight")
    } else {
        scaling
    };
    let unpermute = a.gguf_permutes_qk.then_some((n_heads.value, n_kv_heads.value, head_dim.value));
    let pairing = if a.gguf_permutes_qk {
        Sourced::derived(Pairing::HalfSplit, "llama.cpp's converter permuted Q/K rows for NORM RoPE; parity reads them back in half-split order, so NEOX pairing applies")
    } else {
        Sourced::derived(Pairing::HalfSplit, format!("llama.cpp rope type NEOX for {gguf_arch}"))
    };
    let qkv_bias = Sourced::derived(has("blk.0.attn_q.bias"), "blk.0.attn_q.bias present");
    let o_bias = Sourced::derived(has("blk.0.attn_output.bias"), "blk.0.attn_output.bias present");
    let qk_norm = Sourced::derived(has("blk.0.attn_q_norm.weight"), "blk.0.attn_q_norm.weight present");
    let tied = Sourced::derived(!has("output.weight"), "output.weight absent: the embedding is reused");
    let window = m.u("attention.sliding_window")?;
    let sliding_window = match window {
        Some(w) => Sourced { value: vec![Some(w.value); n_layers.value], source: w.source },
        None => Sourced::default(vec![None; n_layers.value], "no sliding window in the GGUF"),
    };
    let moe = if a.moe {
        let renorm = match f.get(&m.key("expert_weights_norm")).and_then(|v| v.as_bool()) {
            Some(b) => Sourced::file(b, format!("gguf: {}", m.key("expert_weights_norm"))),
            None => {
                notes.push("the GGUF does not record norm_topk_prob: llama.cpp's qwen3moe always renormalises the top-k weights, and so does parity here".into());
                Sourced::default(true, "llama.cpp qwen3moe renormalises top-k weights; the GGUF does not record norm_topk_prob")
            }
        };
        Some(MoeConfig {
            n_experts: m.need_u("expert_count")?,
            top_k: m.need_u("expert_used_count")?,
            renormalize: renorm,
            softmax_before_topk: Sourced::derived(true, "llama.cpp gating softmax, then top-k"),
            intermediate: m.need_u("expert_feed_forward_length")?,
            sparse_step: Sourced::default(1, "every layer is MoE in llama.cpp's qwen3moe"),
            dense_layers: Sourced::default(Vec::new(), "every layer is MoE in llama.cpp's qwen3moe"),
        })
    } else {
        None
    };
    if a.model_type == "llama" {
        notes.push("GGUF arch `llama` is also how Mistral converts; a Mistral sliding window is kept only if attention.sliding_window is set".into());
    }
    let chat_template = f.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(|t| Sourced::file(t.to_string(), "gguf: tokenizer.chat_template"));
    let config = ModelConfig {
        arch: a.model_type.to_string(),
        attn_scale: Sourced::derived(1.0 / (head_dim.value as f64).sqrt(), "1/sqrt(head_dim)"),
        hidden,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        intermediate,
        vocab,
        norm: NormConfig { eps, eps_placement: Sourced::derived(EpsPlacement::Inside, "ggml rms_norm: x / sqrt(mean(x^2) + eps)"), weight_offset: Sourced::derived(0.0, "weights used as stored") },
        rope: RopeConfig { theta, pairing, rotary_dim, partial_layout: Sourced::derived(PartialLayout::LeadingBlock, "ggml NEOX rotates the leading n_rot dims"), scaling, mrope: None },
        qk_norm,
        qkv_bias,
        o_bias,
        tied_embeddings: tied,
        sliding_window,
        moe,
        chat_template,
        notes,
    };
    let dtype = f.tensor("blk.0.attn_q.weight").map(|t| t.dtype).unwrap_or(DType::F32);
    Ok(ModelSource { path: path.to_path_buf(), format: "gguf", config, weights: Box::new(GgufStore { f, unpermute }), dtype })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_the_converter_permutation() {
        // The converter: new[h*hd + 2i + j] = old[h*hd + j*hd/2 + i].
        let (nh, hd) = (3, 8);
        let old: Vec<usize> = (0..nh * hd).collect();
        let mut new = vec![0; nh * hd];
        for h in 0..nh {
            for i in 0..hd / 2 {
                for j in 0..2 {
                    new[h * hd + 2 * i + j] = old[h * hd + j * hd / 2 + i];
                }
            }
        }
        let map = unpermute_rows(nh, hd);
        let back: Vec<usize> = map.iter().map(|&r| new[r as usize]).collect();
        assert_eq!(back, old);
    }

    #[test]
    fn names_map_both_ways_for_every_layer_tensor() {
        assert_eq!(gguf_name("model.layers.3.self_attn.q_proj.bias").as_deref(), Some("blk.3.attn_q.bias"));
        assert_eq!(gguf_name("model.layers.0.post_attention_layernorm.weight").as_deref(), Some("blk.0.ffn_norm.weight"));
        assert_eq!(expert_name("model.layers.1.mlp.experts.7.down_proj.weight"), Some(("blk.1.ffn_down_exps.weight".into(), 7)));
        assert_eq!(gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq"), None);
    }
}

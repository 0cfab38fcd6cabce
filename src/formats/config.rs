//! One model configuration, filled from a transformers `config.json` or from GGUF
//! metadata. Every value records where it came from: a silently defaulted
//! hyper-parameter is one of the bugs this tool exists to catch.

use std::fmt;

use serde::Serialize;

/// Where a configuration value came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Source {
    /// Read from the file under this key (`config.json: rope_parameters.rope_theta`).
    File(String),
    /// Absent from the file; the value is a default, and the text says whose and why.
    Default(String),
    /// Computed from other values (`hidden_size / num_attention_heads`).
    Derived(String),
    /// Set by a contract or command-line setting (a mutant engine).
    Override(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(k) => write!(f, "{k}"),
            Source::Default(why) => write!(f, "default: {why}"),
            Source::Derived(how) => write!(f, "derived: {how}"),
            Source::Override(s) => write!(f, "override: {s}"),
        }
    }
}

/// A value with its provenance.
#[derive(Clone, Debug, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Sourced<T> {
    pub fn file(value: T, key: impl Into<String>) -> Self {
        Sourced { value, source: Source::File(key.into()) }
    }
    pub fn default(value: T, why: impl Into<String>) -> Self {
        Sourced { value, source: Source::Default(why.into()) }
    }
    pub fn derived(value: T, how: impl Into<String>) -> Self {
        Sourced { value, source: Source::Derived(how.into()) }
    }
    pub fn is_default(&self) -> bool {
        matches!(self.source, Source::Default(_))
    }
}

impl<T: Copy> Sourced<T> {
    pub fn get(&self) -> T {
        self.value
    }
}

/// How RoPE pairs the dimensions of a head (CONVENTIONS §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Pairing {
    /// Pairs (i, i + d/2): transformers' rotate_half, ggml NEOX.
    HalfSplit,
    /// Pairs (2i, 2i + 1): ggml NORM, Meta's original layout.
    Adjacent,
}

/// Which dimensions a partial rotary embedding rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PartialLayout {
    /// The leading `rotary_dim` dims, paired within that block (Phi, GPT-NeoX, ggml NEOX n_dims < hd).
    LeadingBlock,
    /// Half-split over the full head with zero frequencies past `rotary_dim/2`
    /// (transformers' proportional RoPE, Gemma 4 full-attention layers).
    HalfSplitZeroPad,
}

/// RoPE frequency scaling rules (transformers `ROPE_INIT_FUNCTIONS`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Dynamic {
        factor: f64,
        max_position: f64,
    },
    /// transformers v5 `_compute_yarn_parameters`: `attention_factor` when given, else
    /// `get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)` when both are
    /// set (DeepSeek), else `get_mscale(factor)`.
    Yarn {
        factor: f64,
        original_max_position: f64,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: Option<f64>,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
        truncate: bool,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: f64,
    },
    /// Per-pair divisors of the frequency, as ggml applies a `rope_freqs` tensor
    /// (how llama.cpp's converter stores llama3 scaling).
    FreqFactors {
        factors: Vec<f32>,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct RopeConfig {
    pub theta: Sourced<f64>,
    pub pairing: Sourced<Pairing>,
    /// Rotated dims per head (= head_dim unless partial).
    pub rotary_dim: Sourced<usize>,
    pub partial_layout: Sourced<PartialLayout>,
    pub scaling: Sourced<RopeScaling>,
    /// M-RoPE sections (pairs per t/h/w/e axis) and whether they interleave (Qwen3-VL).
    pub mrope: Option<Sourced<([usize; 4], bool)>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EpsPlacement {
    /// x / sqrt(mean(x²) + eps): transformers and ggml.
    Inside,
    /// x / (sqrt(mean(x²)) + eps).
    Outside,
}

#[derive(Clone, Debug, Serialize)]
pub struct NormConfig {
    pub eps: Sourced<f64>,
    pub eps_placement: Sourced<EpsPlacement>,
    /// Added to the stored weight: 0 for `w·x̂`, 1 for Gemma's `(1 + w)·x̂`.
    pub weight_offset: Sourced<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MoeConfig {
    pub n_experts: Sourced<usize>,
    pub top_k: Sourced<usize>,
    pub renormalize: Sourced<bool>,
    /// true: softmax over all experts, then top-k; false: top-k logits, then softmax over them.
    pub softmax_before_topk: Sourced<bool>,
    pub intermediate: Sourced<usize>,
    /// Layer `i` is MoE when `(i + 1) % step == 0` and it is not listed dense.
    pub sparse_step: Sourced<usize>,
    pub dense_layers: Sourced<Vec<usize>>,
}

/// The resolved model configuration: no `Option` left for the engine to guess.
#[derive(Clone, Debug, Serialize)]
pub struct ModelConfig {
    /// transformers `model_type` (qwen3_moe, not qwen3moe).
    pub arch: String,
    pub hidden: Sourced<usize>,
    pub n_layers: Sourced<usize>,
    pub n_heads: Sourced<usize>,
    pub n_kv_heads: Sourced<usize>,
    pub head_dim: Sourced<usize>,
    pub intermediate: Sourced<usize>,
    pub vocab: Sourced<usize>,
    pub norm: NormConfig,
    pub rope: RopeConfig,
    pub qk_norm: Sourced<bool>,
    pub qkv_bias: Sourced<bool>,
    pub o_bias: Sourced<bool>,
    pub tied_embeddings: Sourced<bool>,
    /// Sliding window per layer (None: full attention).
    pub sliding_window: Sourced<Vec<Option<usize>>>,
    pub attn_scale: Sourced<f64>,
    pub moe: Option<MoeConfig>,
    pub chat_template: Option<Sourced<String>>,
    /// Things the source format cannot express and what the engine assumes instead.
    pub notes: Vec<String>,
}

impl ModelConfig {
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        match &self.moe {
            Some(m) => {
                let step = m.sparse_step.value.max(1);
                !m.dense_layers.value.contains(&layer) && (layer + 1).is_multiple_of(step)
            }
            None => false,
        }
    }

    /// Lines `name = value (source)` for `parity inspect`.
    pub fn describe(&self) -> Vec<(String, String, String)> {
        let mut rows = Vec::new();
        fn row<T: fmt::Debug>(rows: &mut Vec<(String, String, String)>, k: &str, s: &Sourced<T>) {
            rows.push((k.to_string(), format!("{:?}", s.value), s.source.to_string()));
        }
        row(&mut rows, "hidden_size", &self.hidden);
        row(&mut rows, "num_hidden_layers", &self.n_layers);
        row(&mut rows, "num_attention_heads", &self.n_heads);
        row(&mut rows, "num_key_value_heads", &self.n_kv_heads);
        row(&mut rows, "head_dim", &self.head_dim);
        row(&mut rows, "intermediate_size", &self.intermediate);
        row(&mut rows, "vocab_size", &self.vocab);
        row(&mut rows, "norm.eps", &self.norm.eps);
        row(&mut rows, "norm.eps_placement", &self.norm.eps_placement);
        row(&mut rows, "norm.weight_offset", &self.norm.weight_offset);
        row(&mut rows, "rope.theta", &self.rope.theta);
        row(&mut rows, "rope.pairing", &self.rope.pairing);
        row(&mut rows, "rope.rotary_dim", &self.rope.rotary_dim);
        row(&mut rows, "rope.partial_layout", &self.rope.partial_layout);
        row(&mut rows, "rope.scaling", &self.rope.scaling);
        if let Some(m) = &self.rope.mrope {
            row(&mut rows, "rope.mrope", m);
        }
        row(&mut rows, "qk_norm", &self.qk_norm);
        row(&mut rows, "qkv_bias", &self.qkv_bias);
        row(&mut rows, "o_bias", &self.o_bias);
        row(&mut rows, "tie_word_embeddings", &self.tied_embeddings);
        row(&mut rows, "sliding_window", &self.sliding_window);
        row(&mut rows, "attn_scale", &self.attn_scale);
        if let Some(m) = &self.moe {
            row(&mut rows, "moe.num_experts", &m.n_experts);
            row(&mut rows, "moe.top_k", &m.top_k);
            row(&mut rows, "moe.renormalize", &m.renormalize);
            row(&mut rows, "moe.softmax_before_topk", &m.softmax_before_topk);
            row(&mut rows, "moe.intermediate_size", &m.intermediate);
            row(&mut rows, "moe.sparse_step", &m.sparse_step);
            row(&mut rows, "moe.dense_layers", &m.dense_layers);
        }
        rows
    }
}

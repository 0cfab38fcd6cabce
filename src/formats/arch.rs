//! The architectures the engine knows, declared once. Each row is data: how the
//! architecture differs from a plain Llama, and the defaults transformers' config
//! class and llama.cpp's loader fill in when a file is silent.

/// How q/k/v/o biases are decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasRule {
    /// q, k, v always carry a bias, o never (Qwen2).
    QkvAlways,
    /// All four follow `attention_bias` (Llama, Qwen3).
    AttentionBiasKey,
}

#[derive(Clone, Copy, Debug)]
pub struct Arch {
    /// transformers `model_type`.
    pub model_type: &'static str,
    /// GGUF `general.architecture`.
    pub gguf: &'static str,
    pub qk_norm: bool,
    pub bias: BiasRule,
    pub moe: bool,
    /// llama.cpp's converter permutes q/k rows for this arch (NORM rope in llama.cpp).
    pub gguf_permutes_qk: bool,
    /// The config reads `sliding_window` only when `use_sliding_window` is true (Qwen2 family).
    pub sliding_needs_flag: bool,
    /// transformers config-class defaults when `config.json` is silent.
    pub hf_default_theta: f64,
    pub hf_default_eps: f64,
    pub hf_default_tied: bool,
    /// transformers' default `norm_topk_prob` (MoE).
    pub hf_default_renorm: bool,
}

const fn dense(model_type: &'static str, gguf: &'static str) -> Arch {
    Arch {
        model_type,
        gguf,
        qk_norm: false,
        bias: BiasRule::AttentionBiasKey,
        moe: false,
        gguf_permutes_qk: false,
        sliding_needs_flag: false,
        hf_default_theta: 10000.0,
        hf_default_eps: 1e-6,
        hf_default_tied: false,
        hf_default_renorm: false,
    }
}

pub const ARCHS: &[Arch] = &[
    Arch { gguf_permutes_qk: true, ..dense("llama", "llama") },
    // llama.cpp converts Mistral checkpoints as `llama`.
    Arch { gguf_permutes_qk: true, ..dense("mistral", "llama") },
    Arch { bias: BiasRule::QkvAlways, sliding_needs_flag: true, ..dense("qwen2", "qwen2") },
    Arch { qk_norm: true, sliding_needs_flag: true, ..dense("qwen3", "qwen3") },
    Arch { qk_norm: true, moe: true, sliding_needs_flag: true, ..dense("qwen3_moe", "qwen3moe") },
];

pub fn by_model_type(t: &str) -> Option<&'static Arch> {
    ARCHS.iter().find(|a| a.model_type == t)
}

/// GGUF arch names are shared (Mistral converts as `llama`): the first row wins.
pub fn by_gguf(name: &str) -> Option<&'static Arch> {
    ARCHS.iter().find(|a| a.gguf == name)
}

pub fn known_model_types() -> String {
    ARCHS.iter().map(|a| a.model_type).collect::<Vec<_>>().join(", ")
}

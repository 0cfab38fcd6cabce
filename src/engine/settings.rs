//! Named convention overrides: how a contract writes a mutant engine
//! (`settings: {rope.pairing: adjacent}`) and how diagnosis tries alternatives.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::error::{Error, Result};
use crate::formats::config::*;
use crate::formats::tensor::DType;

/// Engine-level knobs that are not part of the model's configuration.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Storage type of the KV cache: values are rounded to it when written.
    pub kv_cache_dtype: DType,
    /// Added to the positions of decode rows (every call after the first): the
    /// off-by-one a cache bug produces.
    pub decode_position_offset: i64,
    /// Round each matmul's input as llama.cpp's CPU backend does for the weight
    /// type (f16/bf16 rounding, Q8_0 or Q8_K activation quantisation).
    pub activation_rounding: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings { kv_cache_dtype: DType::F32, decode_position_offset: 0, activation_rounding: false }
    }
}

pub const KNOWN: &[&str] = &[
    "rope.pairing",
    "rope.theta",
    "rope.scaling",
    "rope.rotary_dim",
    "rope.partial_layout",
    "qk_norm",
    "norm.eps",
    "norm.eps_placement",
    "norm.weight_offset",
    "moe.renormalize",
    "moe.softmax_before_topk",
    "attn_scale",
    "sliding_window",
    "kv_cache_dtype",
    "decode_position_offset",
    "activation_rounding",
];

fn ov<T>(v: T, key: &str, val: &Value) -> Sourced<T> {
    Sourced { value: v, source: Source::Override(format!("{key} = {}", show(val))) }
}

fn show(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap_or_default().trim().to_string()
}

/// Applies `settings` to a resolved config and engine settings.
pub fn apply(cfg: &mut ModelConfig, eng: &mut EngineSettings, settings: &BTreeMap<String, Value>) -> Result<()> {
    for (key, val) in settings {
        let bad = |want: &str| Error::Usage(format!("setting {key}: expected {want}, found {}", show(val)));
        let f = || val.as_f64().ok_or_else(|| bad("a number"));
        let b = || val.as_bool().ok_or_else(|| bad("true or false"));
        let u = || val.as_u64().map(|x| x as usize).ok_or_else(|| bad("a non-negative integer"));
        let s = || val.as_str().map(str::to_ascii_lowercase).ok_or_else(|| bad("a name"));
        match key.as_str() {
            "rope.pairing" => {
                let p = match s()?.as_str() {
                    "halfsplit" | "neox" => Pairing::HalfSplit,
                    "adjacent" | "norm" | "interleaved" => Pairing::Adjacent,
                    _ => return Err(bad("halfsplit (neox) or adjacent (norm)")),
                };
                cfg.rope.pairing = ov(p, key, val);
            }
            "rope.theta" => cfg.rope.theta = ov(f()?, key, val),
            "rope.scaling" => match s()?.as_str() {
                "none" => cfg.rope.scaling = ov(RopeScaling::None, key, val),
                _ => return Err(bad("none (other rules are set in the model's config)")),
            },
            "rope.rotary_dim" => cfg.rope.rotary_dim = ov(u()?, key, val),
            "rope.partial_layout" => {
                let l = match s()?.as_str() {
                    "leading_block" | "contiguous" => PartialLayout::LeadingBlock,
                    "halfsplit_zero_pad" | "proportional" => PartialLayout::HalfSplitZeroPad,
                    _ => return Err(bad("leading_block or halfsplit_zero_pad")),
                };
                cfg.rope.partial_layout = ov(l, key, val);
            }
            "qk_norm" => cfg.qk_norm = ov(b()?, key, val),
            "norm.eps" => cfg.norm.eps = ov(f()?, key, val),
            "norm.eps_placement" => {
                let p = match s()?.as_str() {
                    "inside" => EpsPlacement::Inside,
                    "outside" => EpsPlacement::Outside,
                    _ => return Err(bad("inside or outside")),
                };
                cfg.norm.eps_placement = ov(p, key, val);
            }
            "norm.weight_offset" => cfg.norm.weight_offset = ov(f()? as f32, key, val),
            "moe.renormalize" | "moe.softmax_before_topk" => {
                let m = cfg.moe.as_mut().ok_or_else(|| Error::Usage(format!("setting {key}: the model has no MoE layers")))?;
                if key == "moe.renormalize" {
                    m.renormalize = ov(b()?, key, val);
                } else {
                    m.softmax_before_topk = ov(b()?, key, val);
                }
            }
            "attn_scale" => cfg.attn_scale = ov(f()?, key, val),
            "sliding_window" => {
                let w = if val.is_null() { None } else { Some(u()?) };
                cfg.sliding_window = ov(vec![w; cfg.n_layers.value], key, val);
            }
            "kv_cache_dtype" => {
                eng.kv_cache_dtype = match s()?.as_str() {
                    "f32" => DType::F32,
                    "f16" => DType::F16,
                    "bf16" => DType::BF16,
                    _ => return Err(bad("f32, f16 or bf16")),
                }
            }
            "activation_rounding" => {
                eng.activation_rounding = match s()?.as_str() {
                    "none" => false,
                    "llamacpp" => true,
                    _ => return Err(bad("none or llamacpp")),
                }
            }
            "decode_position_offset" => {
                eng.decode_position_offset = val.as_i64().ok_or_else(|| bad("an integer"))?;
            }
            _ => {
                return Err(Error::Usage(format!("unknown engine setting {key} (known: {})", KNOWN.join(", "))));
            }
        }
    }
    Ok(())
}

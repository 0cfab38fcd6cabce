//! Isolated recomputation: one stage's op applied to inputs taken from a trace
//! (the reference's, or a foreign subject's own). This is what separates an op's
//! own error from error that flowed in from upstream, and what diagnosis re-runs
//! under alternative conventions.

use crate::engine::model::{attention, moe_forward, round_to, Ffn, Model};
use crate::engine::ops;
use crate::engine::sink::{Recorder, Sink};
use crate::error::{Error, Result};
use crate::formats::trace::split_layer;

/// A recomputed stage's values.
#[derive(Clone, Debug)]
pub enum Values {
    F32(Vec<f32>),
    Ids(Vec<i32>),
}

/// Where the op's inputs come from: every row of a named stage, as f32.
pub trait StageInputs {
    fn rows(&self, stage: &str) -> Result<Vec<f32>>;
    /// Token ids of every row.
    fn tokens(&self) -> &[i64];
    /// Positions of every row (per axis), as the trace records them.
    fn positions(&self) -> Vec<[i64; 4]>;
    /// Row ranges of the engine calls (prefill, then decode steps).
    fn batches(&self) -> &[[usize; 2]];
}

/// The stages an op reads to produce `stage` under this model's conventions.
pub fn inputs_of(model: &Model, stage: &str) -> Vec<String> {
    let prev_out = |i: usize| if i == 0 { "embed".to_string() } else { format!("L{}.out", i - 1) };
    if stage == "final_norm" {
        return vec![format!("L{}.out", model.layers.len().saturating_sub(1))];
    }
    if stage == "logits" {
        return vec!["final_norm".into()];
    }
    let Some((i, s)) = split_layer(stage) else { return Vec::new() };
    let l = |x: &str| format!("L{i}.{x}");
    let qk_norm = model.layers.get(i).is_some_and(|l| l.q_norm.is_some());
    match s {
        "attn_norm" => vec![prev_out(i)],
        "q" | "k" | "v" => vec![l("attn_norm")],
        "q_norm" => vec![l("q")],
        "k_norm" => vec![l("k")],
        "q_rope" => vec![if qk_norm { l("q_norm") } else { l("q") }],
        "k_rope" => vec![if qk_norm { l("k_norm") } else { l("k") }],
        "attn" => vec![l("q_rope"), l("k_rope"), l("v")],
        "attn_out" => vec![l("attn")],
        "attn_resid" => vec![prev_out(i), l("attn_out")],
        "ffn_norm" => vec![l("attn_resid")],
        "router_logits" | "expert_ids" | "expert_weights" | "ffn_out" => vec![l("ffn_norm")],
        "out" => vec![l("attn_resid"), l("ffn_out")],
        _ => Vec::new(),
    }
}

impl Model {
    /// The weight and row length of a norm stage (`L{i}.attn_norm`, `q_norm`, ..., `final_norm`).
    pub fn norm_weight(&self, stage: &str) -> Option<(&[f32], usize)> {
        let hd = self.cfg.head_dim.value;
        if stage == "final_norm" {
            return Some((&self.final_norm, self.cfg.hidden.value));
        }
        let (i, s) = split_layer(stage)?;
        let l = self.layers.get(i)?;
        match s {
            "attn_norm" => Some((&l.attn_norm, self.cfg.hidden.value)),
            "ffn_norm" => Some((&l.ffn_norm, self.cfg.hidden.value)),
            "q_norm" => l.q_norm.as_deref().map(|w| (w, hd)),
            "k_norm" => l.k_norm.as_deref().map(|w| (w, hd)),
            _ => None,
        }
    }

    /// Positions the engine would use for each row (decode rows shifted by the
    /// `decode_position_offset` setting).
    fn positions_for(&self, inp: &dyn StageInputs) -> Vec<[i64; 4]> {
        let mut pos = inp.positions();
        let off = self.eng.decode_position_offset;
        if off != 0 {
            if let Some(first) = inp.batches().first() {
                for p in pos.iter_mut().skip(first[1]) {
                    p.iter_mut().take(3).for_each(|x| *x += off);
                }
            }
        }
        pos
    }

    /// Applies the op that produces `stage` to `inp`'s values of its inputs.
    pub fn recompute(&self, stage: &str, inp: &dyn StageInputs) -> Result<Values> {
        let c = &self.cfg;
        let (d, nh, nkv, hd) = (c.hidden.value, c.n_heads.value, c.n_kv_heads.value, c.head_dim.value);
        let (eps, place, off) = (c.norm.eps.value, c.norm.eps_placement.value, c.norm.weight_offset.value);
        let need = |s: &str| inp.rows(s);
        let unsupported = || Error::Usage(format!("stage {stage} cannot be recomputed in isolation"));
        match stage {
            "embed" => {
                let mut x = vec![0f32; inp.tokens().len() * d];
                for (row, &t) in x.chunks_mut(d).zip(inp.tokens()) {
                    if t < 0 || t as usize >= c.vocab.value {
                        return Err(Error::mismatch(format!("token id {t} is outside the vocabulary")));
                    }
                    self.embed.dequant_row(t as usize, row);
                }
                return Ok(Values::F32(x));
            }
            "final_norm" => {
                let x = need(&inputs_of(self, stage)[0])?;
                return Ok(Values::F32(ops::rms_norm(&x, &self.final_norm, d, eps, place, off)));
            }
            "logits" => return Ok(Values::F32(self.lm_head.forward(&need("final_norm")?))),
            _ => {}
        }
        let (i, s) = split_layer(stage).ok_or_else(unsupported)?;
        let l = self.layers.get(i).ok_or_else(|| Error::Usage(format!("stage {stage}: the model has {} layers", self.layers.len())))?;
        let ins = inputs_of(self, stage);
        let f = |v: Vec<f32>| Ok(Values::F32(v));
        match s {
            "attn_norm" => f(ops::rms_norm(&need(&ins[0])?, &l.attn_norm, d, eps, place, off)),
            "q" => f(l.q.forward(&need(&ins[0])?)),
            "k" => f(l.k.forward(&need(&ins[0])?)),
            "v" => f(l.v.forward(&need(&ins[0])?)),
            "q_norm" | "k_norm" => {
                let w = if s == "q_norm" { &l.q_norm } else { &l.k_norm };
                let x = need(&ins[0])?;
                // With QK-norm off the stage is the identity: what a model without it would emit.
                f(match w {
                    Some(w) => ops::rms_norm(&x, w, hd, eps, place, off),
                    None => x,
                })
            }
            "q_rope" | "k_rope" => {
                let mut x = need(&ins[0])?;
                let heads = if s == "q_rope" { nh } else { nkv };
                // Call by call: dynamic NTK's frequencies depend on each call's sequence length.
                self.rope.apply_calls(&mut x, heads, &self.positions_for(inp), inp.batches());
                f(x)
            }
            "attn" => {
                let (q, k, v) = (need(&ins[0])?, need(&ins[1])?, need(&ins[2])?);
                let pos = self.positions_for(inp);
                let kpos: Vec<i64> = pos.iter().map(|p| p[0]).collect();
                let (qr, kr) = (nh * hd, nkv * hd);
                // Replay the calls: each sees earlier rows through the cache dtype, its own fresh.
                let mut out = Vec::with_capacity(q.len());
                for b in inp.batches() {
                    let kc: Vec<f32> = round_to(&k[..b[0] * kr], self.eng.kv_cache_dtype).into_iter().chain(k[b[0] * kr..b[1] * kr].iter().copied()).collect();
                    let vc: Vec<f32> = round_to(&v[..b[0] * kr], self.eng.kv_cache_dtype).into_iter().chain(v[b[0] * kr..b[1] * kr].iter().copied()).collect();
                    out.extend(attention(&q[b[0] * qr..b[1] * qr], &kc, &vc, &kpos[..b[1]], &pos[b[0]..b[1]], nh, nkv, hd, c.attn_scale.value as f32, l.window));
                }
                f(out)
            }
            "attn_out" => f(l.o.forward(&need(&ins[0])?)),
            "attn_resid" | "out" => {
                let (mut a, b) = (need(&ins[0])?, need(&ins[1])?);
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                f(a)
            }
            "ffn_norm" => f(ops::rms_norm(&need(&ins[0])?, &l.ffn_norm, d, eps, place, off)),
            "ffn_out" | "router_logits" | "expert_ids" | "expert_weights" => {
                let x = need(&ins[0])?;
                match &l.ffn {
                    Ffn::Dense(m) if s == "ffn_out" => f(m.forward(&x)),
                    Ffn::Dense(_) => Err(Error::Usage(format!("stage {stage}: layer {i} is not an MoE layer"))),
                    Ffn::Moe(m) => {
                        let mut rec = Recorder::new(|_: &str| true);
                        let out = moe_forward(m, &x, d, i, &mut rec as &mut dyn Sink);
                        if s == "ffn_out" {
                            return f(out);
                        }
                        let r = rec.stages.remove(stage).ok_or_else(unsupported)?;
                        Ok(if r.is_ids { Values::Ids(r.ids) } else { Values::F32(r.f32) })
                    }
                }
            }
            _ => Err(unsupported()),
        }
    }
}

impl StageInputs for crate::formats::trace::Trace {
    fn rows(&self, stage: &str) -> Result<Vec<f32>> {
        let s = self.load(stage)?;
        if s.rows != (0..self.n_rows()) {
            return Err(Error::mismatch(format!("{}: stage {stage} holds rows {:?} only; isolated recomputation needs every row", self.dir.display(), s.rows)));
        }
        match s.data {
            crate::formats::npy::NpyData::F32(v) => Ok(v),
            crate::formats::npy::NpyData::I64(_) => Err(Error::mismatch(format!("stage {stage} holds ids, not values"))),
        }
    }
    fn tokens(&self) -> &[i64] {
        &self.manifest.tokens
    }
    fn positions(&self) -> Vec<[i64; 4]> {
        match &self.manifest.positions {
            Some(p) => p
                .iter()
                .map(|r| {
                    let mut a = [0i64; 4];
                    r.iter().take(4).enumerate().for_each(|(i, v)| a[i] = *v);
                    a
                })
                .collect(),
            None => (0..self.n_rows() as i64).map(|t| [t, t, t, 0]).collect(),
        }
    }
    fn batches(&self) -> &[[usize; 2]] {
        &self.manifest.batches
    }
}

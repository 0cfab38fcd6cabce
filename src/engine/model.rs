//! Model assembly and the forward pass. One decoder-layer implementation serves
//! every architecture; what differs is read from `ModelConfig` (named conventions),
//! never from the architecture's name.

use rayon::prelude::*;

use crate::engine::ops::{self, Linear};
use crate::engine::rope::Rope;
use crate::engine::settings::EngineSettings;
use crate::engine::sink::Sink;
use crate::error::{Error, Result};
use crate::formats::config::ModelConfig;
use crate::formats::model::WeightStore;
use crate::formats::tensor::{DType, Tensor};

pub(crate) struct Mlp {
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
}

impl Mlp {
    /// SwiGLU: `down(silu(gate(x)) * up(x))`, x `[T, d]`.
    pub(crate) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let [mut g, u] = Linear::forward_all([&self.gate, &self.up], x);
        let gated = |(g, &u): (&mut f32, &f32)| *g = ops::silu(*g) * u;
        if g.len() >= ops::PAR_ELEMENTS {
            g.par_iter_mut().zip(&u).with_min_len(ops::PAR_ELEMENTS / 4).for_each(gated);
        } else {
            g.iter_mut().zip(&u).for_each(gated);
        }
        self.down.forward(&g)
    }
}

pub(crate) struct Moe {
    pub(crate) router: Linear,
    pub(crate) experts: Vec<Mlp>,
    pub(crate) top_k: usize,
    pub(crate) renormalize: bool,
    pub(crate) softmax_before_topk: bool,
}

// One per layer, built once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

pub(crate) struct Layer {
    pub(crate) attn_norm: Vec<f32>,
    pub(crate) q: Linear,
    pub(crate) k: Linear,
    pub(crate) v: Linear,
    pub(crate) o: Linear,
    pub(crate) q_norm: Option<Vec<f32>>,
    pub(crate) k_norm: Option<Vec<f32>>,
    pub(crate) ffn_norm: Vec<f32>,
    pub(crate) ffn: Ffn,
    pub(crate) window: Option<usize>,
}

/// Per-layer cache of post-RoPE keys and values (`[n, H_kv, hd]`) and their positions.
#[derive(Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    pos: Vec<Vec<i64>>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.pos.first().map_or(0, Vec::len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Model {
    pub cfg: ModelConfig,
    pub eng: EngineSettings,
    pub(crate) embed: Tensor,
    pub(crate) layers: Vec<Layer>,
    pub(crate) final_norm: Vec<f32>,
    pub(crate) lm_head: Linear,
    pub(crate) rope: Rope,
    /// Run only the first K layers and stop before the final norm (partial depth).
    pub(crate) partial: bool,
}

fn vec_f32(w: &dyn WeightStore, name: &str, len: usize, model: &str) -> Result<Vec<f32>> {
    let t = w.get(name)?;
    t.expect_shape(model, &[len])?;
    Ok(t.to_f32())
}

fn linear(w: &dyn WeightStore, prefix: &str, out: usize, inp: usize, bias: bool, model: &str) -> Result<Linear> {
    let t = w.get(&format!("{prefix}.weight"))?;
    t.expect_shape(model, &[out, inp])?;
    let bias = if bias { Some(vec_f32(w, &format!("{prefix}.bias"), out, model)?) } else { None };
    Ok(Linear::new(t, bias))
}

impl Model {
    /// Binds the weights of the first `layers` layers (all when None).
    pub fn load(cfg: ModelConfig, eng: EngineSettings, w: &dyn WeightStore, name: &str, layers: Option<usize>) -> Result<Model> {
        let c = &cfg;
        let (d, h, kv, hd) = (c.hidden.value, c.n_heads.value, c.n_kv_heads.value, c.head_dim.value);
        let n_layers = match layers {
            Some(k) if k > c.n_layers.value => return Err(Error::model(name, format!("--layers {k} exceeds the model's {} layers", c.n_layers.value))),
            Some(k) => k,
            None => c.n_layers.value,
        };
        let embed = w.get("model.embed_tokens.weight")?;
        embed.expect_shape(name, &[c.vocab.value, d])?;
        let mut out = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let qk_norm = c.qk_norm.value && w.has(&format!("{a}.q_norm.weight"));
            if c.qk_norm.value && !qk_norm {
                return Err(Error::model(name, format!("{a}.q_norm.weight is missing but the config has QK-norm")));
            }
            let ffn = if c.is_moe_layer(i) {
                Ffn::Moe(load_moe(w, c, &format!("{p}.mlp"), name)?)
            } else {
                let m = format!("{p}.mlp");
                Ffn::Dense(Mlp {
                    gate: linear(w, &format!("{m}.gate_proj"), c.intermediate.value, d, false, name)?,
                    up: linear(w, &format!("{m}.up_proj"), c.intermediate.value, d, false, name)?,
                    down: linear(w, &format!("{m}.down_proj"), d, c.intermediate.value, false, name)?,
                })
            };
            out.push(Layer {
                attn_norm: vec_f32(w, &format!("{p}.input_layernorm.weight"), d, name)?,
                q: linear(w, &format!("{a}.q_proj"), h * hd, d, c.qkv_bias.value, name)?,
                k: linear(w, &format!("{a}.k_proj"), kv * hd, d, c.qkv_bias.value, name)?,
                v: linear(w, &format!("{a}.v_proj"), kv * hd, d, c.qkv_bias.value, name)?,
                o: linear(w, &format!("{a}.o_proj"), d, h * hd, c.o_bias.value, name)?,
                q_norm: if c.qk_norm.value { Some(vec_f32(w, &format!("{a}.q_norm.weight"), hd, name)?) } else { None },
                k_norm: if c.qk_norm.value { Some(vec_f32(w, &format!("{a}.k_norm.weight"), hd, name)?) } else { None },
                ffn_norm: vec_f32(w, &format!("{p}.post_attention_layernorm.weight"), d, name)?,
                ffn,
                window: c.sliding_window.value.get(i).copied().flatten(),
            });
        }
        let partial = n_layers < c.n_layers.value;
        let final_norm = if partial { Vec::new() } else { vec_f32(w, "model.norm.weight", d, name)? };
        let lm_head = if c.tied_embeddings.value || partial { Linear::new(embed.clone(), None) } else { linear(w, "lm_head", c.vocab.value, d, false, name)? };
        let rope = Rope::new(&c.rope, hd).map_err(|e| Error::model(name, e.to_string()))?;
        let mut m = Model { embed, layers: out, final_norm, lm_head, rope, partial, eng, cfg };
        if m.eng.activation_rounding {
            // llama.cpp's numerics: every weight's input is rounded, and Q4_K
            // weights are laid out again for the integer kernels
            // (`Linear::pack`): the dense ones now, the experts at their first
            // call (only the experts some token selects are read). Those copies
            // are process memory where the mapped file's pages could be dropped
            // and read again, so they are made only when all of them together
            // would take at most half the memory available at load; past that,
            // every weight stays in the mapped file (same results, the in-place
            // kernel), which is what a model near the size of memory needs.
            let mut all = m.linears_mut();
            all.iter_mut().for_each(|(l, _)| l.round_input = true);
            let packable: usize = all.iter().map(|(l, _)| l.packable_bytes()).sum();
            if fits_twice(packable, available_memory()) {
                for (l, expert) in all {
                    if expert {
                        l.pack_on_first_use();
                    } else {
                        l.pack();
                    }
                }
            }
        }
        Ok(m)
    }

    /// Every linear layer, each with whether it is an MoE expert.
    fn linears_mut(&mut self) -> Vec<(&mut Linear, bool)> {
        let mut all = vec![(&mut self.lm_head, false)];
        for l in &mut self.layers {
            all.extend([&mut l.q, &mut l.k, &mut l.v, &mut l.o].map(|x| (x, false)));
            match &mut l.ffn {
                Ffn::Dense(d) => all.extend([&mut d.gate, &mut d.up, &mut d.down].map(|x| (x, false))),
                Ffn::Moe(moe) => {
                    all.push((&mut moe.router, false));
                    for e in &mut moe.experts {
                        all.extend([&mut e.gate, &mut e.up, &mut e.down].map(|x| (x, true)));
                    }
                }
            }
        }
        all
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Stored weight bytes one decode step reads: every matrix once, MoE
    /// experts weighted by the share selected per token (`top_k / n_experts`),
    /// one embedding row. What decode bandwidth is measured against.
    pub fn weight_bytes_per_token(&self) -> f64 {
        let lin = |l: &Linear| l.w.bytes().len() as f64;
        let mlp = |m: &Mlp| lin(&m.gate) + lin(&m.up) + lin(&m.down);
        let layers: f64 = self
            .layers
            .iter()
            .map(|l| {
                let ffn = match &l.ffn {
                    Ffn::Dense(m) => mlp(m),
                    Ffn::Moe(m) => lin(&m.router) + m.experts.iter().map(mlp).sum::<f64>() * m.top_k as f64 / m.experts.len().max(1) as f64,
                };
                lin(&l.q) + lin(&l.k) + lin(&l.v) + lin(&l.o) + ffn
            })
            .sum();
        layers + lin(&self.lm_head) + self.embed.bytes().len() as f64 / self.embed.n_rows().max(1) as f64
    }

    /// One engine call: `tokens` at `positions` through the cache. Returns logits
    /// `[T, vocab]` (empty for a partial-depth model).
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32], positions: &[[i64; 4]], sink: &mut dyn Sink) -> Result<Vec<f32>> {
        self.forward_rows(cache, tokens, positions, sink, LogitRows::All)
    }

    /// As `forward`, choosing which rows get logits. With `LogitRows::Last` only
    /// the last row goes through the head (what generation needs, and what
    /// llama.cpp computes for a prompt by default) unless the sink records
    /// `final_norm` or `logits`, which are then computed for every row and
    /// recorded; the last row is returned either way.
    ///
    /// The call runs on one of rayon's worker threads (the caller waits for
    /// it once), so that each of its parallel loops is shared between the
    /// worker running it and the others. Started from outside the pool,
    /// every loop would be handed over to the workers while the caller
    /// sleeps until they are done: a wake-up per loop (a decode step has
    /// about a hundred) and three threads taking turns on two cores.
    pub fn forward_rows(&self, cache: &mut KvCache, tokens: &[u32], positions: &[[i64; 4]], sink: &mut dyn Sink, rows: LogitRows) -> Result<Vec<f32>> {
        // `scope` runs its body on a worker: this one if the caller is one,
        // else one of the global pool's (nothing is spawned in it).
        rayon::scope(|_| self.forward_here(cache, tokens, positions, sink, rows))
    }

    /// `forward_rows` on the current thread.
    fn forward_here(&self, cache: &mut KvCache, tokens: &[u32], positions: &[[i64; 4]], sink: &mut dyn Sink, rows: LogitRows) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let (d, nh, nkv, hd) = (c.hidden.value, c.n_heads.value, c.n_kv_heads.value, c.head_dim.value);
        let t = tokens.len();
        let (eps, place, off) = (c.norm.eps.value, c.norm.eps_placement.value, c.norm.weight_offset.value);
        if cache.k.len() != self.layers.len() {
            cache.k = vec![Vec::new(); self.layers.len()];
            cache.v = vec![Vec::new(); self.layers.len()];
            cache.pos = vec![Vec::new(); self.layers.len()];
        }
        let emit = |sink: &mut dyn Sink, name: &str, tail: &[usize], data: &[f32]| {
            if sink.wants(name) {
                sink.record(name, tail, data);
            }
        };

        // 1. Embedding lookup: [T, d]
        let mut x = vec![0f32; t * d];
        for (row, &tok) in x.chunks_mut(d).zip(tokens) {
            if tok as usize >= c.vocab.value {
                return Err(Error::mismatch(format!("token id {tok} is outside the vocabulary of {}", c.vocab.value)));
            }
            self.embed.dequant_row(tok as usize, row);
        }
        emit(sink, "embed", &[d], &x);

        for (i, l) in self.layers.iter().enumerate() {
            // Stage names are built only for a sink that may want them.
            let active = sink.active();
            let name = |s: &str| if active { format!("L{i}.{s}") } else { String::new() };
            // 2. Attention block.
            let h = ops::rms_norm(&x, &l.attn_norm, d, eps, place, off);
            emit(sink, &name("attn_norm"), &[d], &h);
            // q [T, H, hd], k and v [T, H_kv, hd]
            let [mut q, mut k, v] = Linear::forward_all([&l.q, &l.k, &l.v], &h);
            emit(sink, &name("q"), &[nh, hd], &q);
            emit(sink, &name("k"), &[nkv, hd], &k);
            emit(sink, &name("v"), &[nkv, hd], &v);
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                q = ops::rms_norm(&q, qn, hd, eps, place, off);
                k = ops::rms_norm(&k, kn, hd, eps, place, off);
                emit(sink, &name("q_norm"), &[nh, hd], &q);
                emit(sink, &name("k_norm"), &[nkv, hd], &k);
            }
            self.rope.apply(&mut q, nh, positions);
            self.rope.apply(&mut k, nkv, positions);
            emit(sink, &name("q_rope"), &[nh, hd], &q);
            emit(sink, &name("k_rope"), &[nkv, hd], &k);

            // Earlier calls' keys/values come from the cache (stored in the cache dtype);
            // this call's own are used as computed, as transformers does.
            // An f32 cache rounds nothing, so this call's rows are appended first and
            // attention reads the cache in place (no copy of the whole cache per call).
            let scale = c.attn_scale.value as f32;
            let ctx = if matches!(self.eng.kv_cache_dtype, DType::F32) {
                cache.k[i].extend_from_slice(&k);
                cache.v[i].extend_from_slice(&v);
                cache.pos[i].extend(positions.iter().map(|p| p[0]));
                attention(&q, &cache.k[i], &cache.v[i], &cache.pos[i], positions, nh, nkv, hd, scale, l.window)
            } else {
                let kpos: Vec<i64> = cache.pos[i].iter().copied().chain(positions.iter().map(|p| p[0])).collect();
                let kc: Vec<f32> = cache.k[i].iter().chain(&k).copied().collect();
                let vc: Vec<f32> = cache.v[i].iter().chain(&v).copied().collect();
                let ctx = attention(&q, &kc, &vc, &kpos, positions, nh, nkv, hd, scale, l.window);
                cache.k[i].extend(round_to(&k, self.eng.kv_cache_dtype));
                cache.v[i].extend(round_to(&v, self.eng.kv_cache_dtype));
                cache.pos[i].extend(positions.iter().map(|p| p[0]));
                ctx
            };
            emit(sink, &name("attn"), &[nh * hd], &ctx);
            let o = l.o.forward(&ctx);
            emit(sink, &name("attn_out"), &[d], &o);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            emit(sink, &name("attn_resid"), &[d], &x);

            // 3. Feed-forward block.
            let h2 = ops::rms_norm(&x, &l.ffn_norm, d, eps, place, off);
            emit(sink, &name("ffn_norm"), &[d], &h2);
            let f = match &l.ffn {
                Ffn::Dense(m) => m.forward(&h2),
                Ffn::Moe(m) => moe_forward(m, &h2, d, i, sink),
            };
            emit(sink, &name("ffn_out"), &[d], &f);
            x.iter_mut().zip(&f).for_each(|(a, b)| *a += b);
            emit(sink, &name("out"), &[d], &x);
        }
        if self.partial {
            return Ok(Vec::new());
        }
        // 4. Final norm and logits: [T, vocab]
        let traced = sink.wants("final_norm") || sink.wants("logits");
        if rows == LogitRows::Last && !traced {
            let last = &x[x.len().saturating_sub(d)..];
            return Ok(self.lm_head.forward(&ops::rms_norm(last, &self.final_norm, d, eps, place, off)));
        }
        let h = ops::rms_norm(&x, &self.final_norm, d, eps, place, off);
        emit(sink, "final_norm", &[d], &h);
        let logits = self.lm_head.forward(&h);
        emit(sink, "logits", &[c.vocab.value], &logits);
        match rows {
            LogitRows::All => Ok(logits),
            LogitRows::Last => Ok(logits[logits.len().saturating_sub(c.vocab.value)..].to_vec()),
        }
    }
}

/// Which rows of a call get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitRows {
    All,
    Last,
}

pub(crate) fn round_to(v: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        DType::BF16 => v.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect(),
        _ => v.to_vec(),
    }
}

/// Causal (optionally sliding-window) attention with grouped KV heads.
/// q `[T, H, hd]`, cache `[n, H_kv, hd]` → context `[T, H*hd]`. A key at position p
/// is visible from query position q when `p <= q` and, with a window W, `q - p < W`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(q: &[f32], kc: &[f32], vc: &[f32], kpos: &[i64], qpos: &[[i64; 4]], nh: usize, nkv: usize, hd: usize, scale: f32, window: Option<usize>) -> Vec<f32> {
    let group = nh / nkv;
    let n = kpos.len();
    let mut out = vec![0f32; q.len()];
    out.par_chunks_mut(hd).enumerate().for_each(|(th, o)| {
        let (t, h) = (th / nh, th % nh);
        let kh = h / group;
        let qv = &q[th * hd..(th + 1) * hd];
        let p = qpos[t][0];
        let visible = |j: usize| kpos[j] <= p && window.is_none_or(|w| p - kpos[j] < w as i64);
        let mut s: Vec<f32> = (0..n).map(|j| if visible(j) { ops::dot(qv, &kc[(j * nkv + kh) * hd..(j * nkv + kh + 1) * hd]) * scale } else { f32::NEG_INFINITY }).collect();
        ops::softmax(&mut s);
        // `out` may be fresh zero pages: write before the first `+=` reads, or
        // the read maps the shared zero page and the write after it replaces
        // that mapping with a TLB flush on every CPU (measured: a tenth of a
        // traced prefill on the Xeon VM).
        o.fill(0.0);
        for (j, &pj) in s.iter().enumerate() {
            if pj > 0.0 {
                let vv = &vc[(j * nkv + kh) * hd..(j * nkv + kh + 1) * hd];
                o.iter_mut().zip(vv).for_each(|(a, b)| *a += pj * b);
            }
        }
    });
    out
}

fn load_moe(w: &dyn WeightStore, c: &ModelConfig, m: &str, name: &str) -> Result<Moe> {
    let mc = c.moe.as_ref().ok_or_else(|| Error::model(name, "MoE layer without MoE config"))?;
    let (d, e, inter) = (c.hidden.value, mc.n_experts.value, mc.intermediate.value);
    let router = linear(w, &format!("{m}.gate"), e, d, false, name)?;
    let mut experts = Vec::with_capacity(e);
    // Two checkpoint layouts: one tensor per expert, or transformers 5's fused 3-D stacks.
    let fused = format!("{m}.experts.gate_up_proj");
    if w.has(&fused) {
        let gu = w.get(&fused)?;
        gu.expect_shape(name, &[e, 2 * inter, d])?;
        let dn = w.get(&format!("{m}.experts.down_proj"))?;
        dn.expect_shape(name, &[e, d, inter])?;
        for x in 0..e {
            let g = gu.select(x)?;
            experts.push(Mlp { gate: Linear::new(g.rows(0, inter)?, None), up: Linear::new(g.rows(inter, inter)?, None), down: Linear::new(dn.select(x)?, None) });
        }
    } else {
        for x in 0..e {
            let p = format!("{m}.experts.{x}");
            experts.push(Mlp {
                gate: linear(w, &format!("{p}.gate_proj"), inter, d, false, name)?,
                up: linear(w, &format!("{p}.up_proj"), inter, d, false, name)?,
                down: linear(w, &format!("{p}.down_proj"), d, inter, false, name)?,
            });
        }
    }
    if mc.top_k.value == 0 || mc.top_k.value > e {
        return Err(Error::model(name, format!("top-k {} must be within 1..={e} experts", mc.top_k.value)));
    }
    Ok(Moe { router, experts, top_k: mc.top_k.value, renormalize: mc.renormalize.value, softmax_before_topk: mc.softmax_before_topk.value })
}

/// Router → top-k → (renormalised) weights → weighted sum of SwiGLU experts.
/// Contributions are added in ascending expert order, as transformers' loop does.
pub(crate) fn moe_forward(m: &Moe, x: &[f32], d: usize, layer: usize, sink: &mut dyn Sink) -> Vec<f32> {
    let t = x.len() / d;
    let e = m.experts.len();
    let logits = m.router.forward(x); // [T, E]
    let mut ids = vec![0i32; t * m.top_k];
    let mut wts = vec![0f32; t * m.top_k];
    for r in 0..t {
        let row = &logits[r * e..(r + 1) * e];
        let mut p = row.to_vec();
        if m.softmax_before_topk {
            ops::softmax(&mut p);
        }
        let mut order: Vec<usize> = (0..e).collect();
        // Descending by value; ties keep the lower expert id first.
        order.sort_by(|&a, &b| p[b].partial_cmp(&p[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
        let mut top: Vec<f32> = order[..m.top_k].iter().map(|&i| p[i]).collect();
        if !m.softmax_before_topk {
            ops::softmax(&mut top);
        } else if m.renormalize {
            let s: f32 = top.iter().sum();
            top.iter_mut().for_each(|w| *w /= s);
        }
        for k in 0..m.top_k {
            ids[r * m.top_k + k] = order[k] as i32;
            wts[r * m.top_k + k] = top[k];
        }
    }
    let active = sink.active();
    let name = |s: &str| if active { format!("L{layer}.{s}") } else { String::new() };
    if sink.wants(&name("router_logits")) {
        sink.record(&name("router_logits"), &[e], &logits);
    }
    if sink.wants(&name("expert_ids")) {
        sink.record_ids(&name("expert_ids"), &[m.top_k], &ids);
    }
    if sink.wants(&name("expert_weights")) {
        sink.record(&name("expert_weights"), &[m.top_k], &wts);
    }
    // Only the experts some row selected run (their weights are the only ones read),
    // in parallel; their outputs are then added in ascending expert order.
    let routed: Vec<(usize, Vec<(usize, f32)>)> = (0..e)
        .map(|ex| {
            let rows = (0..t).filter_map(|r| (0..m.top_k).find(|&k| ids[r * m.top_k + k] == ex as i32).map(|k| (r, wts[r * m.top_k + k]))).collect::<Vec<_>>();
            (ex, rows)
        })
        .filter(|(_, rows)| !rows.is_empty())
        .collect();
    let ys: Vec<Vec<f32>> = routed
        .par_iter()
        .map(|(ex, rows)| {
            let xs: Vec<f32> = rows.iter().flat_map(|&(r, _)| x[r * d..(r + 1) * d].iter().copied()).collect();
            m.experts[*ex].forward(&xs)
        })
        .collect();
    // Zeros written, not `vec!` (calloc): see `attention` on reading fresh
    // zero pages. Not `vec!` and then `fill` either, as attention does per
    // head: after calloc the compiler may drop a fill of zeros as redundant.
    let mut out = Vec::with_capacity(t * d);
    out.resize(t * d, 0f32);
    for ((_, rows), y) in routed.iter().zip(&ys) {
        for (j, &(r, w)) in rows.iter().enumerate() {
            out[r * d..(r + 1) * d].iter_mut().zip(&y[j * d..(j + 1) * d]).for_each(|(o, v)| *o += v * w);
        }
    }
    out
}

/// Whether `bytes` take at most half of `available` (unknown: assumed so).
fn fits_twice(bytes: usize, available: Option<u64>) -> bool {
    available.is_none_or(|avail| (bytes as u64).saturating_mul(2) <= avail)
}

/// The memory the kernel says is available to new allocations without
/// swapping (`MemAvailable`), in bytes; None where it cannot say.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn weights_are_laid_out_again_only_within_half_the_available_memory() {
        assert!(super::fits_twice(100, Some(200)));
        assert!(!super::fits_twice(101, Some(200)));
        assert!(!super::fits_twice(usize::MAX, Some(1 << 40)));
        // Where the kernel does not say, as before: laid out.
        assert!(super::fits_twice(usize::MAX, None));
    }
}

//! Token generation: prefill once, then one decode call per token through the
//! KV cache; greedy or seeded top-k / top-p sampling.

use crate::engine::model::{KvCache, LogitRows, Model};
use crate::engine::ops;
use crate::engine::sink::NoSink;
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct Sampler {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

/// A small deterministic generator (splitmix64): sampling is reproducible per seed.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

impl Sampler {
    fn pick(&self, logits: &[f32], rng: &mut Rng) -> u32 {
        let argmax = || logits.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32;
        if self.temperature <= 0.0 {
            return argmax();
        }
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap_or(std::cmp::Ordering::Equal));
        if self.top_k > 0 {
            idx.truncate(self.top_k);
        }
        let mut p: Vec<f32> = idx.iter().map(|&i| logits[i] / self.temperature).collect();
        ops::softmax(&mut p);
        // Nucleus: keep the smallest prefix whose mass reaches top_p.
        let mut mass = 0.0;
        let keep = p
            .iter()
            .position(|&x| {
                mass += x;
                mass >= self.top_p
            })
            .map_or(p.len(), |i| i + 1);
        let total: f32 = p[..keep].iter().sum();
        let mut u = rng.next_f32() * total;
        for (j, &x) in p[..keep].iter().enumerate() {
            if u < x {
                return idx[j] as u32;
            }
            u -= x;
        }
        idx[keep - 1] as u32
    }
}

/// Generates up to `n` tokens after `prompt`, stopping at any of `stop`.
/// `on_token` sees each new token as it is chosen.
pub fn generate(model: &Model, prompt: &[u32], n: usize, sampler: &Sampler, stop: &[u32], mut on_token: impl FnMut(u32)) -> Result<Vec<u32>> {
    let vocab = model.cfg.vocab.value;
    let mut cache = KvCache::default();
    let mut rng = Rng(sampler.seed);
    let pos: Vec<[i64; 4]> = (0..prompt.len() as i64).map(|p| [p, p, p, 0]).collect();
    let logits = model.forward_rows(&mut cache, prompt, &pos, &mut NoSink, LogitRows::Last)?;
    let mut last = logits[logits.len() - vocab..].to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let tok = sampler.pick(&last, &mut rng);
        out.push(tok);
        on_token(tok);
        if stop.contains(&tok) {
            break;
        }
        let p = (prompt.len() + out.len() - 1) as i64;
        last = model.forward_rows(&mut cache, &[tok], &[[p, p, p, 0]], &mut NoSink, LogitRows::Last)?;
    }
    Ok(out)
}

/// `parity run`: tokenises `prompt` (through the chat template with `chat`),
/// generates, and hands decoded text pieces to `out` as they come.
pub fn run_prompt(model_path: &std::path::Path, prompt: &str, n: usize, chat: bool, sampler: &Sampler, mut out: impl FnMut(&str)) -> Result<Vec<u32>> {
    use crate::error::Error;
    use crate::formats::tokenizer::{render_chat, Tokenizer};
    let (model, src) = crate::engine::load(model_path, &crate::engine::RunOptions::default())?;
    // A GGUF's own vocabulary first; else a tokenizer.json beside it or one folder up.
    let gguf_tok = if model_path.is_dir() { None } else { crate::formats::gguf::GgufFile::open(model_path).ok().and_then(|f| Tokenizer::from_gguf(&f).ok()) };
    let tok = match gguf_tok {
        Some(t) => t,
        None => {
            let dir = if model_path.is_dir() {
                model_path.to_path_buf()
            } else {
                let here = model_path.parent().unwrap_or(model_path).to_path_buf();
                match here.parent() {
                    Some(up) if !here.join("tokenizer.json").exists() && up.join("tokenizer.json").exists() => up.to_path_buf(),
                    _ => here,
                }
            };
            Tokenizer::from_dir(&dir)?
        }
    };
    let text = if chat {
        let t = src.config.chat_template.as_ref().ok_or_else(|| Error::format(model_path, "chat_template", "--chat needs a chat template (tokenizer_config.json or chat_template.jinja)"))?;
        render_chat(&t.value, prompt)?
    } else {
        prompt.to_string()
    };
    let ids = tok.encode(&text)?;
    if ids.is_empty() {
        return Err(Error::Usage("the prompt tokenises to nothing".into()));
    }
    let stop: Vec<u32> = ["<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>"].iter().filter_map(|t| tok.token_id(t)).collect();
    let mut done: Vec<u32> = Vec::new();
    let mut shown = 0usize;
    generate(&model, &ids, n, sampler, &stop, |t| {
        done.push(t);
        // Decode the whole continuation each time so multi-byte pieces print whole.
        if let Ok(s) = tok.decode(&done) {
            if s.len() > shown && s.is_char_boundary(shown) {
                out(&s[shown..]);
                shown = s.len();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_and_sampling_is_seeded() {
        let logits = [0.1, 3.0, 2.9, -1.0];
        let g = Sampler::default();
        assert_eq!(g.pick(&logits, &mut Rng(1)), 1);
        let s = Sampler { temperature: 1.0, top_k: 2, top_p: 1.0, seed: 7 };
        let a: Vec<u32> = {
            let mut r = Rng(7);
            (0..20).map(|_| s.pick(&logits, &mut r)).collect()
        };
        let b: Vec<u32> = {
            let mut r = Rng(7);
            (0..20).map(|_| s.pick(&logits, &mut r)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|&t| t == 1 || t == 2), "top-k 2 keeps only the two best");
        let nucleus = Sampler { temperature: 1.0, top_k: 0, top_p: 0.01, seed: 3 };
        assert_eq!(nucleus.pick(&logits, &mut Rng(3)), 1, "a tiny top-p keeps only the best token");
    }
}

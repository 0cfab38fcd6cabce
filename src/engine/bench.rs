//! `parity bench`: prefill and decode throughput of the engine, untraced and
//! traced, and peak memory. Measured here; compared with llama-bench in
//! BENCHMARKS.md. No timing is asserted anywhere.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::engine::model::{KvCache, LogitRows};
use crate::engine::sink::{NoSink, Recorder, Sink};
use crate::engine::{self, RunOptions};
use crate::error::Result;

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub model: String,
    pub threads: usize,
    pub load_s: f64,
    pub prompt: usize,
    pub generate: usize,
    pub pp_tok_s: f64,
    pub tg_tok_s: f64,
    pub pp_traced_tok_s: f64,
    pub tg_traced_tok_s: f64,
    pub peak_rss_mib: f64,
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Best of `reps` runs of: prefill `prompt` tokens, then `generate` single-token decode calls.
pub fn bench(model: &Path, prompt: usize, generate: usize, reps: usize) -> Result<BenchResult> {
    let t0 = Instant::now();
    let (m, _) = engine::load(model, &RunOptions::default())?;
    let load_s = t0.elapsed().as_secs_f64();
    let vocab = m.cfg.vocab.value as u32;
    let tokens: Vec<u32> = (0..prompt as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let run = |sink: &mut dyn Sink| -> Result<(f64, f64)> {
        let mut cache = KvCache::default();
        let pos: Vec<[i64; 4]> = (0..prompt as i64).map(|p| [p, p, p, 0]).collect();
        let t = Instant::now();
        m.forward_rows(&mut cache, &tokens, &pos, sink, LogitRows::Last)?;
        let pp = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..generate {
            let p = (prompt + i) as i64;
            m.forward_rows(&mut cache, &[tokens[i % prompt.max(1)]], &[[p, p, p, 0]], sink, LogitRows::Last)?;
        }
        Ok((pp, t.elapsed().as_secs_f64()))
    };
    let best = |traced: bool| -> Result<(f64, f64)> {
        let mut b = (f64::INFINITY, f64::INFINITY);
        for _ in 0..reps.max(1) {
            let (pp, tg) = if traced { run(&mut Recorder::new(|_: &str| true))? } else { run(&mut NoSink)? };
            b = (b.0.min(pp), b.1.min(tg));
        }
        Ok(b)
    };
    let (pp, tg) = best(false)?;
    let (ppt, tgt) = best(true)?;
    Ok(BenchResult {
        model: model.display().to_string(),
        threads: rayon::current_num_threads(),
        load_s,
        prompt,
        generate,
        pp_tok_s: prompt as f64 / pp,
        tg_tok_s: generate as f64 / tg,
        pp_traced_tok_s: prompt as f64 / ppt,
        tg_traced_tok_s: generate as f64 / tgt,
        peak_rss_mib: peak_rss_mib(),
    })
}

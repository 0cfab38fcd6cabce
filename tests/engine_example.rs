//! The engine's trace of the shared one-layer Qwen3 matches what transformers
//! computed, at every stage and every row (prefill and decode).

use std::path::{Path, PathBuf};

use parity::engine::{self, RunOptions};
use parity::formats::trace::Trace;

fn shared(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/examples").join(p)
}

/// Per-row (cosine, nmse) of subject vs reference, accumulated in f64.
fn row_metrics(a: &[f32], b: &[f32], row: usize) -> Vec<(f64, f64)> {
    a.chunks(row)
        .zip(b.chunks(row))
        .map(|(x, y)| {
            let (mut xy, mut xx, mut yy, mut dd) = (0f64, 0f64, 0f64, 0f64);
            for (&p, &q) in x.iter().zip(y) {
                let (p, q) = (p as f64, q as f64);
                xy += p * q;
                xx += p * p;
                yy += q * q;
                dd += (p - q) * (p - q);
            }
            (xy / (xx.sqrt() * yy.sqrt()).max(1e-300), dd / yy.max(1e-300))
        })
        .collect()
}

#[test]
fn engine_matches_transformers_on_the_shared_example() {
    let reference = Trace::open(&shared("qwen3-1layer-hf-f32")).unwrap();
    let subject = engine::trace_like(&shared("qwen3-1layer"), &reference, &RunOptions::default()).unwrap();
    let names = reference.stage_names();
    assert_eq!(names.len(), 17);
    for name in names {
        let r = reference.load(&name).unwrap();
        let s = subject.load(&name).unwrap_or_else(|e| panic!("engine did not emit {name}: {e}"));
        assert_eq!(s.shape, r.shape, "{name}");
        for (row, (cos, nmse)) in row_metrics(s.f32().unwrap(), r.f32().unwrap(), r.row_len()).into_iter().enumerate() {
            assert!(cos >= 0.99999 && nmse <= 1e-10, "{name} row {row}: cos {cos} nmse {nmse:e}");
        }
    }
}

#[test]
fn tracing_does_not_change_the_numbers() {
    use parity::engine::sink::NoSink;
    let reference = Trace::open(&shared("qwen3-1layer-hf-f32")).unwrap();
    let traced = engine::trace_like(&shared("qwen3-1layer"), &reference, &RunOptions::default()).unwrap();
    let (m, _) = engine::load(&shared("qwen3-1layer"), &RunOptions::default()).unwrap();
    let mut cache = engine::KvCache::default();
    let toks: Vec<u32> = reference.manifest.tokens.iter().map(|&t| t as u32).collect();
    let mut untraced = Vec::new();
    for b in &reference.manifest.batches {
        let pos: Vec<[i64; 4]> = (b[0]..b[1]).map(|t| [t as i64, t as i64, t as i64, 0]).collect();
        untraced.extend(m.forward(&mut cache, &toks[b[0]..b[1]], &pos, &mut NoSink).unwrap());
    }
    let traced = traced.load("logits").unwrap();
    let a: Vec<u32> = traced.f32().unwrap().iter().map(|x| x.to_bits()).collect();
    let b: Vec<u32> = untraced.iter().map(|x| x.to_bits()).collect();
    assert_eq!(a, b, "logits with tracing on and off must be bit-identical");
}

fn cos_min(a: &[f32], b: &[f32], row: usize) -> f64 {
    row_metrics(a, b, row).into_iter().map(|m| m.0).fold(1.0, f64::min)
}

#[test]
fn isolated_recomputation_reproduces_every_stage_from_reference_inputs() {
    use parity::engine::stages::Values;
    let reference = Trace::open(&shared("qwen3-1layer-hf-f32")).unwrap();
    let (m, _) = engine::load(&shared("qwen3-1layer"), &RunOptions::default()).unwrap();
    for name in reference.stage_names() {
        let r = reference.load(&name).unwrap();
        let Values::F32(v) = m.recompute(&name, &reference).unwrap() else { panic!("{name}") };
        let c = cos_min(&v, r.f32().unwrap(), r.row_len());
        assert!(c >= 0.999999, "{name}: isolated cos {c}");
    }
}

#[test]
fn a_wrong_pairing_breaks_only_the_rope_stages_in_isolation() {
    use parity::engine::stages::Values;
    let reference = Trace::open(&shared("qwen3-1layer-hf-f32")).unwrap();
    let mut opts = RunOptions::default();
    opts.settings.insert("rope.pairing".into(), "adjacent".into());
    let (m, _) = engine::load(&shared("qwen3-1layer"), &opts).unwrap();
    for name in reference.stage_names() {
        let r = reference.load(&name).unwrap();
        let Values::F32(v) = m.recompute(&name, &reference).unwrap() else { panic!("{name}") };
        let c = cos_min(&v, r.f32().unwrap(), r.row_len());
        let rope = name.ends_with("_rope");
        assert_eq!(c < 0.999, rope, "{name}: isolated cos {c}");
    }
}

#[test]
fn a_gguf_vocabulary_tokenises_like_the_checkpoints_tokenizer_json() {
    use parity::formats::gguf::GgufFile;
    use parity::formats::tokenizer::Tokenizer;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let from_json = Tokenizer::from_dir(&root.join("fixtures/qwen3-tiny")).unwrap();
    let gguf = GgufFile::open(&root.join("fixtures/qwen3-tiny/gguf/qwen3-tiny.q8_0.gguf")).unwrap();
    let from_gguf = Tokenizer::from_gguf(&gguf).unwrap();
    for text in ["Return a new list containing all items.", "<|im_start|>user\nWhat does heapq do?<|im_end|>\n", "  spaces,\ttabs and ünïcödé 123"] {
        let (a, b) = (from_json.encode(text).unwrap(), from_gguf.encode(text).unwrap());
        assert_eq!(a, b, "{text:?}");
        assert_eq!(from_gguf.decode(&b).unwrap(), text);
    }
}

#[test]
fn last_row_logits_equal_the_last_row_of_all_logits() {
    use parity::engine::model::LogitRows;
    use parity::engine::sink::NoSink;
    let reference = Trace::open(&shared("qwen3-1layer-hf-f32")).unwrap();
    let (m, _) = engine::load(&shared("qwen3-1layer"), &RunOptions::default()).unwrap();
    let toks: Vec<u32> = reference.manifest.tokens.iter().map(|&t| t as u32).collect();
    let pos: Vec<[i64; 4]> = (0..toks.len() as i64).map(|t| [t, t, t, 0]).collect();
    let all = m.forward(&mut engine::KvCache::default(), &toks, &pos, &mut NoSink).unwrap();
    let last = m.forward_rows(&mut engine::KvCache::default(), &toks, &pos, &mut NoSink, LogitRows::Last).unwrap();
    assert_eq!(last.len(), m.cfg.vocab.value);
    let tail: Vec<u32> = all[all.len() - last.len()..].iter().map(|x| x.to_bits()).collect();
    assert_eq!(last.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), tail, "the head is batch-invariant");
}

#[test]
fn decode_weight_bytes_count_every_matrix_once_and_experts_by_their_share() {
    // Expected from the checkpoint itself: every 2-D layer weight, the experts
    // scaled by top_k / n_experts (2 of 8 here), the head, one embedding row.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/qwen3moe-tiny");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (mut dense, mut experts, mut head, mut embed_row) = (0f64, 0f64, 0f64, 0f64);
    for (name, t) in st.tensors() {
        let n = t.data().len() as f64;
        if name.contains(".mlp.experts.") {
            experts += n;
        } else if name.starts_with("model.layers.") && t.shape().len() == 2 {
            dense += n;
        } else if name == "lm_head.weight" {
            head = n;
        } else if name == "model.embed_tokens.weight" {
            embed_row = n / t.shape()[0] as f64;
        }
    }
    let (m, _) = engine::load(&dir, &RunOptions::default()).unwrap();
    let want = dense + experts * 2.0 / 8.0 + head + embed_row;
    assert_eq!(m.weight_bytes_per_token(), want);
}

/// Records on which rayon worker (if any) each stage arrived.
struct Threads(Vec<Option<usize>>);

impl parity::engine::sink::Sink for Threads {
    fn wants(&self, _: &str) -> bool {
        true
    }
    fn record(&mut self, _: &str, _: &[usize], _: &[f32]) {
        self.0.push(rayon::current_thread_index());
    }
    fn record_ids(&mut self, _: &str, _: &[usize], _: &[i32]) {
        self.0.push(rayon::current_thread_index());
    }
}

#[test]
fn an_engine_call_from_outside_the_pool_runs_on_a_worker() {
    // A test's thread is not one of rayon's workers; the call moves onto one
    // (Model::forward_rows: its parallel loops are then shared, not handed over).
    assert_eq!(rayon::current_thread_index(), None);
    let (m, _) = engine::load(&shared("qwen3-1layer"), &RunOptions::default()).unwrap();
    let mut sink = Threads(Vec::new());
    m.forward(&mut engine::KvCache::default(), &[1, 2, 3], &[[0, 0, 0, 0], [1, 1, 1, 0], [2, 2, 2, 0]], &mut sink).unwrap();
    assert!(!sink.0.is_empty());
    assert!(sink.0.iter().all(Option::is_some), "stages recorded off the worker threads: {:?}", sink.0);
}

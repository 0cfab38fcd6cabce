//! Every gate must be able to fail, and fail for the right reason at the right
//! stage: mutants of the shared example trace (15 rows: a 12-token prefill and
//! 3 decode steps), built in memory or in a temp folder, never in /work/shared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use parity::formats::npy::NpyData;
use parity::formats::tensor::DType;
use parity::formats::trace::{Manifest, Stage, Trace};
use parity::harness::contract::{Contract, Gate};
use parity::harness::metrics::Metric;
use parity::harness::result::{Comparison, FindingKind, Verdict};
use parity::harness::{compare, run_contract};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/examples/qwen3-1layer-hf-f32")
}

fn example() -> Trace {
    Trace::open(&example_dir()).unwrap()
}

/// A fresh scratch folder for one test.
/// Removed when the returned guard drops.
fn scratch(name: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("parity-harness-{name}-")).tempdir().expect("a scratch folder under the system temporary directory")
}

/// The example with every stage in memory, after `f` edits them.
fn mutant(f: impl FnOnce(&mut Manifest, &mut BTreeMap<String, Stage>)) -> Trace {
    let t = example();
    let mut stages: BTreeMap<String, Stage> = t.stage_names().iter().map(|n| (n.clone(), t.load(n).unwrap())).collect();
    let mut m = t.manifest.clone();
    f(&mut m, &mut stages);
    Trace::in_memory(t.dir.clone(), m, stages)
}

fn data(s: &mut Stage) -> &mut Vec<f32> {
    match &mut s.data {
        NpyData::F32(v) => v,
        NpyData::I64(_) => panic!("float stage expected"),
    }
}

/// Gates parsed from YAML, through the real contract parser.
fn gates(yaml: &str) -> Vec<Gate> {
    let dir = example_dir();
    let text = format!("id: t\nclaim: c\nsubject: {{trace: {d}}}\nreference: {d}\ngates:\n{yaml}", d = dir.display());
    Contract::parse(Path::new("/tmp/inline.yaml"), &text).unwrap().gates
}

const STRICT: &str = r#"
  - stages: "*"
    cosine: {min: 0.9999}
    nmse: {max: 1.0e-8}
"#;

fn check(subject: &Trace, g: &str) -> Comparison {
    compare(subject, &example(), None, &gates(g), None).unwrap()
}

fn failing(c: &Comparison) -> Vec<(String, Metric)> {
    c.stages.iter().flat_map(|s| s.metrics.iter().filter(|m| !m.pass).map(|m| (s.stage.clone(), m.metric))).collect()
}

/// Deterministic noise in [-1, 1] (a 64-bit LCG).
fn noise(seed: u64) -> impl FnMut() -> f32 {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    move || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

// ---- RoPE pairing ------------------------------------------------------------

/// Rotary embedding of a `[T, H, hd]` stage at positions 0..T with theta 1e6
/// (the example's config), pairing `(i, i + hd/2)` (NEOX, rotate-half) or
/// `(2i, 2i+1)` (NORM, interleaved).
fn rope(x: &[f32], heads: usize, hd: usize, neox: bool) -> Vec<f32> {
    let theta = 1.0e6f64;
    let mut out = x.to_vec();
    for (r, row) in x.chunks(heads * hd).enumerate() {
        for h in 0..heads {
            for i in 0..hd / 2 {
                let ang = r as f64 * theta.powf(-2.0 * i as f64 / hd as f64);
                let (s, c) = ang.sin_cos();
                let (p, q) = if neox { (i, i + hd / 2) } else { (2 * i, 2 * i + 1) };
                let (a, b) = (row[h * hd + p] as f64, row[h * hd + q] as f64);
                out[r * heads * hd + h * hd + p] = (a * c - b * s) as f32;
                out[r * heads * hd + h * hd + q] = (b * c + a * s) as f32;
            }
        }
    }
    out
}

fn norm_rope_mutant() -> Trace {
    mutant(|_, st| {
        for (src, dst) in [("L0.q_norm", "L0.q_rope"), ("L0.k_norm", "L0.k_rope")] {
            let x = st[src].f32().unwrap().to_vec();
            let heads = st[src].shape[1];
            *data(st.get_mut(dst).unwrap()) = rope(&x, heads, 16, false);
        }
    })
}

#[test]
fn neox_recomputation_reproduces_the_reference() {
    // Holds the mutant to the data: our NEOX rope on q_norm is the reference q_rope.
    let t = example();
    let x = t.load("L0.q_norm").unwrap();
    let want = t.load("L0.q_rope").unwrap();
    let got = rope(x.f32().unwrap(), 2, 16, true);
    let worst = got.iter().zip(want.f32().unwrap()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst < 1e-4, "NEOX recomputation differs by {worst}");
}

#[test]
fn norm_pairing_fails_at_q_rope_in_the_prefill() {
    let c = check(&norm_rope_mutant(), STRICT);
    assert!(!c.pass);
    let d = c.first_divergence.as_ref().unwrap();
    assert_eq!((d.stage.as_str(), d.batch), ("L0.q_rope", 0));
    // Position 0 rotates by zero, so row 0 agrees and row 1 is the first to fail.
    assert_eq!(d.row, 1);
    let q = c.stage("L0.q_rope").unwrap();
    let cos = q.metrics.iter().find(|m| m.metric == Metric::Cosine).unwrap();
    assert!(!cos.pass && cos.value < 0.99);
    assert_eq!(cos.per_row[0], 1.0);
    let coord = cos.worst_coord.as_ref().unwrap();
    assert!(coord.head.is_some() && coord.dim.is_some());
    assert!(c.stage("L0.q_norm").unwrap().pass);
}

// ---- scaled stage, decode-only noise -----------------------------------------

#[test]
fn a_scaled_stage_fails_nmse_not_cosine() {
    let t = mutant(|_, st| data(st.get_mut("L0.attn_out").unwrap()).iter_mut().for_each(|x| *x *= 1.01));
    let c = check(&t, STRICT);
    assert_eq!(failing(&c), vec![("L0.attn_out".to_string(), Metric::Nmse)]);
    let m = &c.stage("L0.attn_out").unwrap().metrics[1];
    // (0.01)^2 = 1e-4 on every row.
    assert!((m.value - 1e-4).abs() < 1e-6, "{}", m.value);
    assert_eq!(m.passing_threshold, m.value);
    assert!(m.usage > 1.0);
}

fn decode_noise() -> Trace {
    mutant(|_, st| {
        let mut n = noise(7);
        let out = data(st.get_mut("L0.out").unwrap());
        for x in &mut out[12 * 32..] {
            *x += 0.05 * n();
        }
    })
}

#[test]
fn decode_only_noise_is_caught_by_a_decode_gate_not_a_prefill_gate() {
    let decode = check(&decode_noise(), "  - stages: L0.out\n    rows: decode\n    nmse: {max: 1.0e-8}\n  - stages: \"*\"\n    nmse: {max: 1.0e-8}\n");
    assert_eq!(failing(&decode), vec![("L0.out".to_string(), Metric::Nmse)]);
    let s = decode.stage("L0.out").unwrap();
    assert_eq!(s.rows, vec![12, 13, 14]);
    let d = decode.first_divergence.unwrap();
    assert_eq!((d.stage.as_str(), d.batch, d.row), ("L0.out", 1, 12));

    let prefill = check(&decode_noise(), "  - stages: L0.out\n    rows: prefill\n    nmse: {max: 1.0e-8}\n  - stages: \"*\"\n    nmse: {max: 1.0e-8}\n");
    assert!(prefill.pass, "{:?}", failing(&prefill));
    assert_eq!(prefill.stage("L0.out").unwrap().rows, (0..12).collect::<Vec<_>>());
}

#[test]
fn depth_scale_loosens_deeper_layers() {
    let t = mutant(|_, st| data(st.get_mut("L0.attn_out").unwrap()).iter_mut().for_each(|x| *x *= 1.01));
    // Layer 0 is not scaled: still fails. final_norm (layer count 1) gets x(1+1e4).
    let c = check(&t, "  - stages: \"*\"\n    depth_scale: 10000\n    nmse: {max: 1.0e-8}\n");
    let s = c.stage("L0.attn_out").unwrap();
    assert!(!s.pass && s.metrics[0].threshold == 1e-8);
    assert!((c.stage("logits").unwrap().metrics[0].threshold - 1.0001e-4).abs() < 1e-12);
}

// ---- structural checks -----------------------------------------------------------

#[test]
fn nan_in_one_stage_is_a_structural_failure_there() {
    let t = mutant(|_, st| data(st.get_mut("L0.v").unwrap())[13 * 16 + 3] = f32::NAN);
    let c = check(&t, STRICT);
    let f = c.findings.iter().find(|f| f.kind == FindingKind::NonFinite).unwrap();
    assert_eq!((f.stage.as_deref(), f.row), (Some("L0.v"), Some(13)));
    assert!(f.message.contains("NaN"), "{}", f.message);
    let d = c.first_divergence.unwrap();
    assert_eq!((d.stage.as_str(), d.batch, d.cause.as_str()), ("L0.v", 2, "nonfinite"));
}

#[test]
fn matching_infinities_pass_and_lone_ones_fail() {
    let both = mutant(|_, st| data(st.get_mut("L0.v").unwrap())[5] = f32::INFINITY);
    let reference = both.clone();
    let c = compare(&both, &reference, None, &gates(STRICT), None).unwrap();
    assert!(c.pass, "{:?}", c.findings);
    let c = compare(&example(), &reference, None, &gates(STRICT), None).unwrap();
    assert!(!c.pass);
    let c = compare(&both, &example(), None, &gates(STRICT), None).unwrap();
    assert!(c.findings.iter().any(|f| f.kind == FindingKind::NonFinite && f.message.contains("inf")), "{:?}", c.findings);
}

#[test]
fn a_different_token_id_is_reported_first() {
    let t = mutant(|m, _| m.tokens[4] = 78);
    let c = check(&t, STRICT);
    let f = c.findings.iter().find(|f| f.kind == FindingKind::Tokens).unwrap();
    assert_eq!(f.row, Some(4));
    assert!(f.message.contains("subject 78, reference 233"), "{}", f.message);
    assert_eq!(c.first_divergence.unwrap().stage, "tokens");
}

#[test]
fn a_different_batch_split_is_said_not_failed() {
    let t = mutant(|m, _| m.batches = vec![[0, 15]]);
    let c = check(&t, STRICT);
    assert!(c.pass);
    assert!(c.findings.iter().any(|f| f.kind == FindingKind::Batches && !f.fails));
}

#[test]
fn a_shape_mismatch_fails_without_metrics() {
    let t = mutant(|m, st| {
        st.get_mut("L0.k").unwrap().shape = vec![15, 2, 8];
        m.stages.get_mut("L0.k").unwrap().shape = vec![15, 2, 8];
    });
    let c = check(&t, STRICT);
    let f = c.findings.iter().find(|f| f.kind == FindingKind::Shape).unwrap();
    assert_eq!(f.stage.as_deref(), Some("L0.k"));
    assert!(c.stage("L0.k").unwrap().metrics.is_empty());
    assert_eq!(c.first_divergence.unwrap().stage, "L0.k");
}

#[test]
fn missing_stages_are_skipped_and_said_on_both_sides() {
    let t = mutant(|m, st| {
        m.stages.remove("L0.ffn_out");
        st.remove("L0.ffn_out");
        let extra = st["L0.out"].clone();
        m.stages.insert("L0.extra".into(), m.stages["L0.out"].clone());
        st.insert("L0.extra".into(), Stage { name: "L0.extra".into(), ..extra });
    });
    let c = check(&t, STRICT);
    assert!(c.pass);
    let why = |s: &str| c.skipped.iter().find(|k| k.stage == s).map(|k| k.reason.clone());
    assert_eq!(why("L0.ffn_out").as_deref(), Some("absent from the subject"));
    assert_eq!(why("L0.extra").as_deref(), Some("absent from the reference"));
}

#[test]
fn partial_rows_are_compared_on_the_overlap_only() {
    // Like llama.cpp's last layer: the subject holds only rows 12..15 of L0.out.
    let t = mutant(|m, st| {
        let s = st.get_mut("L0.out").unwrap();
        let tail = s.f32().unwrap()[12 * 32..].to_vec();
        *s = Stage { rows: 12..15, shape: vec![3, 32], data: NpyData::F32(tail), ..s.clone() };
        let e = m.stages.get_mut("L0.out").unwrap();
        e.rows = Some([12, 15]);
        e.shape = vec![3, 32];
    });
    let c = check(&t, STRICT);
    assert!(c.pass);
    assert_eq!(c.stage("L0.out").unwrap().rows, vec![12, 13, 14]);
    // The prefill gate has no rows in common with it: skipped, and said.
    let c = check(&t, "  - stages: L0.out\n    rows: prefill\n    cosine: {min: 0.9}\n  - stages: \"*\"\n    cosine: {min: 0.9}\n");
    assert!(c.skipped.iter().any(|k| k.stage == "L0.out" && k.reason.contains("no rows in common")));
}

// ---- logits ---------------------------------------------------------------------------

#[test]
fn permuted_logits_fail_top1_and_cosine() {
    let t = mutant(|_, st| {
        for row in data(st.get_mut("logits").unwrap()).chunks_mut(300) {
            row.reverse();
        }
    });
    let g = "  - stages: logits\n    top1_agreement: {min: 1.0}\n    cosine: {min: 0.999}\n    kl_divergence: {max: 1.0e-6}\n    topk_overlap: {k: 5, margin: 0.5, min: 1.0}\n    same_top_p: {p: 0.9, min: 1.0}\n  - stages: \"*\"\n    cosine: {min: 0.999}\n";
    let c = check(&t, g);
    let f = failing(&c);
    for m in [Metric::Top1Agreement, Metric::Cosine, Metric::KlDivergence, Metric::TopkOverlap, Metric::SameTopP] {
        assert!(f.contains(&("logits".to_string(), m)), "{m:?} should fail: {f:?}");
    }
    assert!(f.iter().all(|(s, _)| s == "logits"));
    let top1 = c.stage("logits").unwrap().metrics.iter().find(|m| m.metric == Metric::Top1Agreement).unwrap();
    let t1 = top1.top1.as_ref().unwrap();
    assert_eq!(t1.subject_token, 299 - t1.reference_token);
    assert_eq!(c.first_divergence.unwrap().stage, "logits");
}

#[test]
fn a_small_logit_change_passes_topk_but_not_top1() {
    // In row 14 lift the reference's second-best token just above its best.
    let r = example().load("logits").unwrap();
    let row = &r.f32().unwrap()[14 * 300..15 * 300];
    let mut idx: Vec<usize> = (0..300).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    let (best, second) = (idx[0], idx[1]);
    let gap = row[best] - row[second];
    let t = mutant(|_, st| data(st.get_mut("logits").unwrap())[14 * 300 + second] += gap + 1e-3);
    let g = format!("  - stages: logits\n    top1_agreement: {{min: 1.0}}\n    topk_overlap: {{k: 2, margin: {}, min: 1.0}}\n  - stages: \"*\"\n    cosine: {{min: 0.9}}\n", gap + 0.01);
    let c = check(&t, &g);
    assert_eq!(failing(&c), vec![("logits".to_string(), Metric::Top1Agreement)]);
    let m = &c.stage("logits").unwrap().metrics[0];
    assert!((m.value - 14.0 / 15.0).abs() < 1e-12);
    assert_eq!(m.worst_row, Some(14));
}

// ---- MoE ids -----------------------------------------------------------------------------

fn moe(ids: &[i64], weights: &[f32]) -> Trace {
    let text = "format: parity-trace/1\nproducer: {kind: external, name: test}\ntokens: [1, 2, 3, 4]\nbatches: [[0, 3], [3, 4]]\nstages:\n  L0.expert_ids: {file: a.npy, shape: [4, 2], dtype: i32}\n  L0.expert_weights: {file: b.npy, shape: [4, 2], dtype: f32}\n";
    let m: Manifest = serde_yaml::from_str(text).unwrap();
    let st = |name: &str, dtype, data| Stage { name: name.into(), shape: vec![4, 2], dtype, rows: 0..4, data };
    let stages = BTreeMap::from([
        ("L0.expert_ids".into(), st("L0.expert_ids", DType::I32, NpyData::I64(ids.to_vec()))),
        ("L0.expert_weights".into(), st("L0.expert_weights", DType::F32, NpyData::F32(weights.to_vec()))),
    ]);
    Trace::in_memory(std::env::temp_dir(), m, stages)
}

const MOE_GATES: &str = "  - stages: \"*\"\n    max_abs: {max: 1.0e-6}\n";

fn moe_compare(s: &Trace, r: &Trace) -> Comparison {
    let dir = example_dir();
    let text = format!("id: t\nclaim: c\nsubject: {{trace: {d}}}\nreference: {d}\ngates:\n{MOE_GATES}", d = dir.display());
    let g = Contract::parse(Path::new("/tmp/inline.yaml"), &text).unwrap().gates;
    compare(s, r, None, &g, None).unwrap()
}

#[test]
fn expert_ids_are_sets_and_weights_go_by_id() {
    let reference = moe(&[3, 1, 0, 2, 5, 4, 7, 6], &[0.6, 0.4, 0.7, 0.3, 0.5, 0.5, 0.9, 0.1]);
    // Row 2 lists the same experts in the other order (a tie), with its weights: equal.
    let same = moe(&[3, 1, 0, 2, 4, 5, 7, 6], &[0.6, 0.4, 0.7, 0.3, 0.5, 0.5, 0.9, 0.1]);
    let c = moe_compare(&same, &reference);
    assert!(c.pass, "{:?} {:?}", c.findings, failing(&c));

    let other = moe(&[3, 1, 0, 2, 5, 9, 7, 6], &[0.6, 0.4, 0.7, 0.3, 0.5, 0.5, 0.9, 0.1]);
    let c = moe_compare(&other, &reference);
    let f = c.findings.iter().find(|f| f.kind == FindingKind::ExpertIds).unwrap();
    assert_eq!((f.stage.as_deref(), f.row), (Some("L0.expert_ids"), Some(2)));
    let d = c.first_divergence.clone().unwrap();
    assert_eq!((d.stage.as_str(), d.row), ("L0.expert_ids", 2));
    // The differing row is left out of the weights; the others still agree.
    assert_eq!(c.stage("L0.expert_weights").unwrap().rows, vec![0, 1, 3]);

    let reweighted = moe(&[3, 1, 0, 2, 5, 4, 7, 6], &[0.6, 0.4, 0.7, 0.3, 0.5, 0.5, 0.8, 0.2]);
    let c = moe_compare(&reweighted, &reference);
    assert_eq!(failing(&c), vec![("L0.expert_weights".to_string(), Metric::MaxAbs)]);
    assert_eq!(c.first_divergence.unwrap().row, 3);
}

// ---- noise ratio -------------------------------------------------------------------------

#[test]
fn noise_ratio_is_measured_against_reference_low() {
    let add = |scale: f32, seed| {
        mutant(move |_, st| {
            let mut n = noise(seed);
            data(st.get_mut("L0.attn").unwrap()).iter_mut().for_each(|x| *x += scale * n());
        })
    };
    let low = add(1e-3, 1);
    let g = "  - stages: L0.attn\n    noise_ratio: {max: 2.0}\n  - stages: \"*\"\n    cosine: {min: 0.99}\n";
    let dir = example_dir();
    let text = format!("id: t\nclaim: c\nsubject: {{trace: {d}}}\nreference: {d}\nreference_low: {d}\ngates:\n{g}", d = dir.display());
    let gates = Contract::parse(Path::new("/tmp/inline.yaml"), &text).unwrap().gates;
    let quiet = compare(&add(0.5e-3, 2), &example(), Some(&low), &gates, None).unwrap();
    assert!(quiet.pass, "{:?}", failing(&quiet));
    let loud = compare(&add(5e-3, 3), &example(), Some(&low), &gates, None).unwrap();
    assert_eq!(failing(&loud), vec![("L0.attn".to_string(), Metric::NoiseRatio)]);
    let v = loud.stage("L0.attn").unwrap().metrics[0].value;
    assert!(v > 3.0 && v < 10.0, "{v}");
    // Stages the gate does not name are not asked for a noise floor.
    assert!(loud.skipped.is_empty());
}

// ---- contracts on disk: expect_fail, committed mutant ------------------------------------

fn write_contract(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn expect_fail_contract(dir: &Path, subject: &Path, first: &str) -> PathBuf {
    let body = format!(
        "id: t/{first}\nclaim: c\nsubject: {{trace: {}}}\nreference: {}\ngates:\n{STRICT}expect_fail: {{reason: NORM pairing, first_divergence: {first}}}\n",
        subject.display(),
        example_dir().display()
    );
    write_contract(dir, &format!("{}.yaml", first.replace('.', "_")), &body)
}

#[test]
fn expect_fail_holds_only_at_the_stated_stage() {
    let dir_tmp = scratch("expect-fail");
    let dir = dir_tmp.path();
    let subject = norm_rope_mutant().save(&dir.join("norm-rope"), false).unwrap();
    let r = run_contract(&expect_fail_contract(dir, &subject, "L0.q_rope"));
    assert_eq!(r.verdict, Verdict::ExpectedFailHolds, "{}", r.message);

    let r = run_contract(&expect_fail_contract(dir, &subject, "L0.attn"));
    assert_eq!(r.verdict, Verdict::Fail);
    assert!(r.message.contains("expected to fail first at L0.attn, but it first fails at L0.q_rope"), "{}", r.message);

    let r = run_contract(&expect_fail_contract(dir, &example_dir(), "L0.q_rope"));
    assert_eq!(r.verdict, Verdict::Fail);
    assert!(r.message.contains("every gate passes"), "{}", r.message);
}

#[test]
fn failure_message_names_stage_value_gate_and_coordinate() {
    let dir_tmp = scratch("message");
    let dir = dir_tmp.path();
    let subject = norm_rope_mutant().save(&dir.join("norm-rope"), false).unwrap();
    let body = format!("id: m\nclaim: c\nsubject: {{trace: {}}}\nreference: {}\ngates:\n{STRICT}", subject.display(), example_dir().display());
    let r = run_contract(&write_contract(dir, "m.yaml", &body));
    assert_eq!(r.verdict, Verdict::Fail);
    for part in ["first divergence: L0.q_rope", "cosine", "< min 0.9999", "would pass with min >=", "worst row", "head", "subject", "reference"] {
        assert!(r.message.contains(part), "{part:?} missing from:\n{}", r.message);
    }
    // The result serializes for bisect and reports.
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"first_divergence\"") && json.contains("\"per_row\""));
}

/// `tests/data/qwen3-1layer-norm-rope`: the NORM mutant's stages up to k_rope,
/// committed for the shipped expect_fail contract. Regenerate with PARITY_BLESS=1.
#[test]
fn committed_norm_rope_mutant_is_current() {
    let keep = ["embed", "L0.attn_norm", "L0.q", "L0.k", "L0.v", "L0.q_norm", "L0.k_norm", "L0.q_rope", "L0.k_rope"];
    let full = norm_rope_mutant();
    let mut m = full.manifest.clone();
    m.producer.kind = "external".into();
    m.producer.name = "parity tests".into();
    m.producer.version = None;
    m.producer.command = Some("cargo test --test harness committed_norm_rope_mutant_is_current (PARITY_BLESS=1)".into());
    m.producer.extra.clear();
    m.producer.extra.insert("note".into(), "the example trace with q_rope/k_rope recomputed with NORM (2i, 2i+1) pairing".into());
    m.model = None;
    m.stages.retain(|k, _| keep.contains(&k.as_str()));
    let stages = keep.iter().map(|k| (k.to_string(), full.load(k).unwrap())).collect();
    let t = Trace::in_memory(full.dir.clone(), m, stages);
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qwen3-1layer-norm-rope");
    if std::env::var_os("PARITY_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&committed);
        t.save(&committed, false).unwrap();
    }
    let fresh_tmp = scratch("bless");
    let fresh = t.save(&fresh_tmp.path().join("t"), false).unwrap();
    for k in keep.iter().map(|k| format!("{k}.npy")).chain(["trace.yaml".to_string()]) {
        let a = std::fs::read(fresh.join(&k)).unwrap();
        let b = std::fs::read(committed.join(&k)).unwrap_or_default();
        assert!(a == b, "tests/data/qwen3-1layer-norm-rope/{k} is stale: rerun with PARITY_BLESS=1");
    }
}

// ---- schema errors -----------------------------------------------------------------------

fn parse_err(body: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir_tmp = scratch(&format!("schema-{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let dir = dir_tmp.path();
    let path = write_contract(dir, "bad.yaml", body);
    let e = Contract::load(&path).unwrap_err().to_string();
    assert!(e.starts_with(&path.display().to_string()), "error does not name the file: {e}");
    e
}

fn contract_with(gates: &str) -> String {
    format!("id: t\nclaim: c\nsubject: {{trace: {d}}}\nreference: {d}\ngates:\n{gates}", d = example_dir().display())
}

#[test]
fn unknown_key_names_line_and_column() {
    let e = parse_err(&format!("{}colour: red\n", contract_with(STRICT)));
    assert!(e.contains("bad.yaml:10:1:") && e.contains("unknown field `colour`"), "{e}");
}

#[test]
fn unknown_metric_names_line_and_column() {
    let e = parse_err(&contract_with("  - stages: \"*\"\n    cosin: {min: 0.9}\n"));
    assert!(e.contains("bad.yaml:7:5:") && e.contains("unknown field `cosin`"), "{e}");
}

#[test]
fn bad_glob_names_the_gate_line() {
    let e = parse_err(&contract_with("  - stages: \"L{0..3.*\"\n    cosine: {min: 0.9}\n  - stages: \"*\"\n    cosine: {min: 0.9}\n"));
    assert!(e.contains("bad.yaml:6:5:") && e.contains("unclosed"), "{e}");
}

#[test]
fn missing_catch_all_is_an_error() {
    let e = parse_err(&contract_with("  - stages: \"L*\"\n    cosine: {min: 0.9}\n"));
    assert!(e.contains("bad.yaml:5:1:") && e.contains("catch-all"), "{e}");
    let e = parse_err(&contract_with("  - stages: \"*\"\n    cosine: {min: 0.9}\n  - stages: logits\n    cosine: {min: 0.9}\n"));
    assert!(e.contains("bad.yaml:8:5:") && e.contains("can never apply"), "{e}");
}

#[test]
fn missing_reference_is_an_error_not_a_pass() {
    let body = format!("id: t\nclaim: c\nsubject: {{trace: {}}}\nreference: ../no/such/trace\ngates:\n{STRICT}", example_dir().display());
    let e = parse_err(&body);
    assert!(e.contains("bad.yaml:4:12:") && e.contains("does not exist"), "{e}");
    let dir_tmp = scratch("missing-ref");
    let dir = dir_tmp.path();
    let r = run_contract(&write_contract(dir, "c.yaml", &body));
    assert_eq!(r.verdict, Verdict::Error);
}

#[test]
fn other_schema_errors() {
    let e = parse_err(&contract_with("  - stages: \"*\"\n    noise_ratio: {max: 2}\n"));
    assert!(e.contains("reference_low"), "{e}");
    let e = parse_err(&contract_with("  - stages: \"*\"\n    cosine: {}\n"));
    assert!(e.contains("needs a bound"), "{e}");
    let e = parse_err(&contract_with("  - stages: \"L*\"\n    top1_agreement: {min: 1}\n  - stages: \"*\"\n    cosine: {min: 0.9}\n"));
    assert!(e.contains("does not match logits"), "{e}");
    let e = parse_err(&contract_with("  - stages: \"*\"\n    rows: middle\n    cosine: {min: 0.9}\n"));
    assert!(e.contains("rows \"middle\""), "{e}");
}

#[test]
fn engine_subject_reports_the_engine_error() {
    // Until the engine lands, trace_like errors: the contract is an error, never a pass.
    let dir_tmp = scratch("engine");
    let dir = dir_tmp.path();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/examples/qwen3-1layer");
    let body = format!("id: e\nclaim: c\nsubject: {{engine: {{model: {}, dtype: f32, settings: {{rope.pairing: norm}}}}}}\nreference: {}\ngates:\n{STRICT}", model.display(), example_dir().display());
    let r = run_contract(&write_contract(dir, "e.yaml", &body));
    assert!(matches!(r.verdict, Verdict::Error | Verdict::Fail | Verdict::Pass));
    if r.verdict == Verdict::Error {
        assert!(r.error.is_some());
    }
}

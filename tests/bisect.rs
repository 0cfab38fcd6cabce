//! Bisect names the right first stage for every mutant and ranks the true
//! cause first; isolated mode separates the op's own error from inherited error.

use std::path::Path;

use tempfile::TempDir;

use parity::harness::bisect::{bisect, bisect_pair, Shape};
use parity::harness::Contract;

fn contract(p: &str) -> Contract {
    Contract::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts").join(p)).unwrap()
}

/// A temp folder, removed when the guard drops.
fn tmp(name: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("parity-bisect-{name}-")).tempdir().expect("a scratch folder under the system temporary directory")
}

/// (mutant contract, first divergent stage, first batch, first stage whose own op
/// is wrong, label of the true cause)
const MUTANTS: &[(&str, &str, usize, &str, &str)] = &[
    ("examples/mutants/norm-rope.yaml", "L0.q_rope", 0, "L0.q_rope", "NEOX pairing"),
    ("examples/mutants/theta-1e4.yaml", "L0.q_rope", 0, "L0.q_rope", "theta=1e6"),
    // The subject emits no q_norm, so the cumulative walk first sees q_rope; in
    // isolation the q_norm op itself (an identity) is already wrong.
    ("examples/mutants/qk-norm-skipped.yaml", "L0.q_rope", 0, "L0.q_norm", "QK-norm applied"),
    ("examples/mutants/eps-outside.yaml", "L0.attn_norm", 0, "L0.attn_norm", "eps inside"),
    ("examples/mutants/kv-cache-f16.yaml", "L0.attn", 1, "L0.attn", "KV cache stored in f32"),
    ("examples/mutants/decode-position-off-by-one.yaml", "L0.q_rope", 1, "L0.q_rope", "decode positions as recorded"),
];

#[test]
fn every_engine_mutant_is_located_and_its_cause_ranked_first() {
    for &(file, stage, batch, isolated, cause) in MUTANTS {
        let b = bisect(&contract(file), None).unwrap();
        let first = b.first.as_ref().unwrap_or_else(|| panic!("{file}: no divergence found"));
        assert_eq!(first.stage, stage, "{file}: {}", b.summary);
        assert_eq!(first.batch, batch, "{file}: {}", b.summary);
        assert_eq!(b.shape, Some(Shape::Step), "{file}: {}", b.summary);
        assert_eq!(b.isolated_first.as_deref(), Some(isolated), "{file}: the op itself is wrong there: {}", b.summary);
        let d = b.diagnosis.as_ref().unwrap();
        assert!(d.candidates[0].label.contains(cause), "{file}: ranked first: {} ({})", d.candidates[0].label, b.summary);
        assert!(d.cause.is_some(), "{file}: {}", b.summary);
    }
}

#[test]
fn the_correct_engine_has_no_divergence() {
    let b = bisect(&contract("examples/qwen3-1layer-engine-f32.yaml"), None).unwrap();
    assert!(b.first.is_none(), "{}", b.summary);
    assert!(b.isolated_first.is_none(), "{}", b.summary);
    assert!(b.stages.iter().all(|s| s.isolated_pass == Some(true)));
}

#[test]
fn a_foreign_trace_is_diagnosed_from_its_own_inputs() {
    // A committed trace made with NORM pairing: no engine re-run; the correct ops
    // are applied to the subject's own inputs, and the convention that
    // reproduces the subject's output is named.
    let repro_tmp = tmp("foreign");
    let b = bisect(&contract("examples/qwen3-1layer-norm-rope.yaml"), Some(repro_tmp.path())).unwrap();
    assert_eq!(b.first.as_ref().unwrap().stage, "L0.q_rope");
    assert_eq!(b.isolated_first.as_deref(), Some("L0.q_rope"));
    let d = b.diagnosis.as_ref().unwrap();
    assert!(d.cause.as_deref().unwrap_or("").contains("the subject used NORM pairing"), "{}", b.summary);
    // The repro carries the stage and its inputs for both sides, and the command.
    let r = b.repro.as_ref().unwrap();
    for f in ["subj/L0.q_rope.npy", "subj/L0.q_norm.npy", "ref/L0.q_rope.npy", "ref/L0.q_norm.npy", "command.sh"] {
        assert!(r.join(f).exists(), "repro lacks {f}");
    }
}

#[test]
fn pair_mode_says_where_two_paths_part_and_which_is_right() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let good = root.join("../shared/examples/qwen3-1layer-hf-f32");
    let bad = root.join("tests/data/qwen3-1layer-norm-rope");
    let model = root.join("../shared/examples/qwen3-1layer");
    let p = bisect_pair(&bad, &good, Some(&model)).unwrap();
    assert_eq!(p.first.as_ref().unwrap().stage, "L0.q_rope", "{}", p.summary);
    assert_eq!(p.consistent.as_deref(), Some(good.display().to_string().as_str()), "{}", p.summary);
    assert!(p.summary.contains("NORM pairing"), "{}", p.summary);
}

/// Bugs planted inside transformers itself (scripts/dump_hf.py --mutate): foreign
/// traces, diagnosed from the subject's own inputs.
const HF_MUTANTS: &[(&str, &str, &str)] = &[
    ("mutants/qwen3-tiny-norm_rope.yaml", "L0.q_rope", "NORM pairing"),
    ("mutants/qwen3-tiny-theta_1e4.yaml", "L0.q_rope", "theta=1e4"),
    ("mutants/qwen3-tiny-eps_outside.yaml", "L0.attn_norm", "eps outside"),
    ("mutants/qwen3moe-tiny-no_qk_norm.yaml", "L0.q_norm", "QK-norm skipped"),
    ("mutants/qwen3moe-tiny-no_renorm.yaml", "L0.expert_weights", "not renormalised"),
];

#[test]
fn every_transformers_mutant_is_located_and_its_cause_ranked_first() {
    for &(file, stage, cause) in HF_MUTANTS {
        let b = bisect(&contract(file), None).unwrap();
        assert_eq!(b.first.as_ref().map(|d| d.stage.as_str()), Some(stage), "{file}: {}", b.summary);
        assert_eq!(b.isolated_first.as_deref(), Some(stage), "{file}: {}", b.summary);
        let d = b.diagnosis.as_ref().unwrap();
        assert!(d.candidates[0].label.contains(cause), "{file}: ranked first {} ({})", d.candidates[0].label, b.summary);
        assert!(d.cause.as_deref().unwrap_or("").starts_with("the subject used"), "{file}: {}", b.summary);
    }
}

#[test]
fn an_unusual_theta_is_fitted_from_the_subjects_own_data() {
    use parity::engine::{self, RunOptions};
    use parity::formats::trace::Trace;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = root.join("../shared/examples/qwen3-1layer-hf-f32");
    let model = root.join("../shared/examples/qwen3-1layer");
    let dir_tmp = tmp("theta");
    let dir = dir_tmp.path();
    // A foreign engine that used theta 314159: its trace, written as a plain trace folder.
    let mut opts = RunOptions::default();
    opts.settings.insert("rope.theta".into(), 314159.0.into());
    let t = engine::trace_like(&model, &Trace::open(&reference).unwrap(), &opts).unwrap();
    t.save(&dir.join("subject"), false).unwrap();
    let text = format!(
        "id: theta-fit\nclaim: fit\nsubject: {{trace: {}}}\nreference: {}\nmodel: {}\ngates:\n  - stages: \"*\"\n    cosine: {{min: 0.99999}}  # f32 vs f32\n",
        dir.join("subject").display(),
        reference.display(),
        model.display()
    );
    let c = Contract::parse(&dir.join("c.yaml"), &text).unwrap();
    let b = bisect(&c, None).unwrap();
    let d = b.diagnosis.as_ref().unwrap();
    let best = &d.candidates[0];
    assert!(best.label.starts_with("theta fitted from the subject"), "{}", b.summary);
    let fitted = best.settings["rope.theta"].as_f64().unwrap();
    assert!((fitted / 314159.0 - 1.0).abs() < 0.01, "fitted {fitted}");
}

#[test]
fn a_wrong_norm_eps_is_fitted_from_the_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir_tmp = tmp("eps");
    let dir = dir_tmp.path();
    let text = format!(
        "id: eps\nclaim: eps\nsubject: {{engine: {{model: {}, settings: {{norm.eps: 0.0003}}}}}}\nreference: {}\ngates:\n  - stages: \"*\"\n    cosine: {{min: 0.99999}}  # f32\n    nmse: {{max: 1.0e-10}}  # f32\n",
        root.join("../shared/examples/qwen3-1layer").display(),
        root.join("../shared/examples/qwen3-1layer-hf-f32").display()
    );
    let b = bisect(&Contract::parse(&dir.join("c.yaml"), &text).unwrap(), None).unwrap();
    assert_eq!(b.first.as_ref().unwrap().stage, "L0.attn_norm");
    let d = b.diagnosis.as_ref().unwrap();
    let fitted = d.candidates.iter().find(|c| c.label.starts_with("norm eps fitted")).expect("an eps fitted from the data");
    let eps = fitted.settings["norm.eps"].as_f64().unwrap();
    assert!((eps / 1e-6 - 1.0).abs() < 0.05, "fitted eps {eps}");
    assert!(d.cause.as_deref().unwrap_or("").contains("eps"), "{}", b.summary);
}

#[test]
fn theta_is_fitted_under_the_pairing_the_data_shows_not_the_subjects() {
    // The NORM-pairing mutant: its own (wrong) pairing must not be used to fit
    // theta from the NEOX reference, or the fitted value is meaningless (~1).
    let b = bisect(&contract("examples/mutants/norm-rope.yaml"), None).unwrap();
    let d = b.diagnosis.as_ref().unwrap();
    let fitted = d.candidates.iter().find(|c| c.label.starts_with("theta fitted from the reference")).expect("a fitted theta");
    let theta = fitted.settings["rope.theta"].as_f64().unwrap();
    assert!((theta / 1e6 - 1.0).abs() < 0.01, "fitted {theta}: {}", b.summary);
}

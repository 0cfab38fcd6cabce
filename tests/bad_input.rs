//! Hostile or broken inputs give an error that names the file and the item, and
//! never a panic. Each class of damage has its own case.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use parity::engine::{self, RunOptions};
use parity::formats::model::ModelSource;
use parity::formats::trace::Trace;

fn shared(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/examples").join(p)
}

/// A copy of the shared example model in a temp folder, to damage.
/// Removed when the returned guard drops.
fn model_copy(tag: &str) -> TempDir {
    let t = scratch(tag);
    let d = t.path();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(shared("qwen3-1layer").join(f), d.join(f)).unwrap();
        let mut p = std::fs::metadata(d.join(f)).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        p.set_readonly(false);
        std::fs::set_permissions(d.join(f), p).unwrap();
    }
    t
}

/// An empty temp folder, removed when the guard drops.
fn scratch(tag: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("parity-bad-{tag}-")).tempdir().expect("a scratch folder under the system temporary directory")
}

fn load_err(dir: &Path) -> String {
    match engine::load(dir, &RunOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut j);
    std::fs::write(&p, serde_json::to_string(&j).unwrap()).unwrap();
}

#[test]
fn truncated_safetensors() {
    let d_tmp = model_copy("trunc");
    let d = d_tmp.path();
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_err(d);
    assert!(e.contains("model.safetensors") && e.contains("safetensors header"), "{e}");
}

#[test]
fn safetensors_header_larger_than_the_file() {
    let d_tmp = model_copy("hdr");
    let d = d_tmp.path();
    let p = d.join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let e = load_err(d);
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn garbage_instead_of_safetensors() {
    let d_tmp = model_copy("garbage");
    let d = d_tmp.path();
    std::fs::write(d.join("model.safetensors"), b"not a safetensors file at all").unwrap();
    assert!(load_err(d).contains("model.safetensors"));
}

#[test]
fn unknown_architecture() {
    let d_tmp = model_copy("arch");
    let d = d_tmp.path();
    edit_config(d, |j| j["model_type"] = "frobnicator".into());
    let e = load_err(d);
    assert!(e.contains("config.json") && e.contains("frobnicator") && e.contains("known:"), "{e}");
}

#[test]
fn shape_that_disagrees_with_the_config() {
    let d_tmp = model_copy("shape");
    let d = d_tmp.path();
    edit_config(d, |j| j["intermediate_size"] = 65.into());
    let e = load_err(d);
    assert!(e.contains("mlp.gate_proj.weight") && e.contains("[64, 32]") && e.contains("[65, 32]"), "{e}");
}

#[test]
fn missing_tensor() {
    let d_tmp = model_copy("missing");
    let d = d_tmp.path();
    edit_config(d, |j| j["num_hidden_layers"] = 2.into());
    let e = load_err(d);
    assert!(e.contains("model.layers.1.") && e.contains("missing"), "{e}");
}

#[test]
fn absurd_and_wrongly_typed_config_values() {
    let d_tmp = model_copy("cfg");
    let d = d_tmp.path();
    edit_config(d, |j| j["num_key_value_heads"] = 3.into());
    assert!(load_err(d).contains("num_key_value_heads"));
    edit_config(d, |j| j["num_key_value_heads"] = "one".into());
    let e = load_err(d);
    assert!(e.contains("num_key_value_heads") && e.contains("integer"), "{e}");
    edit_config(d, |j| j.as_object_mut().unwrap().remove("hidden_size").map(|_| ()).unwrap());
    assert!(load_err(d).contains("hidden_size"));
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    assert!(load_err(d).contains("config.json"));
}

#[test]
fn not_a_model_at_all() {
    let e = ModelSource::open(Path::new("/nonexistent/model")).err().unwrap().to_string();
    assert!(e.contains("/nonexistent/model"), "{e}");
    let d = scratch("empty");
    assert!(ModelSource::open(d.path()).is_err());
}

#[test]
fn token_outside_the_vocabulary() {
    let reference = Trace::open(&shared("qwen3-1layer-hf-f32")).unwrap();
    let mut bad = reference.clone();
    bad.manifest.tokens[3] = 100_000;
    let e = engine::trace_like(&shared("qwen3-1layer"), &bad, &RunOptions::default()).err().unwrap().to_string();
    assert!(e.contains("100000") && e.contains("vocabulary"), "{e}");
}

#[test]
fn broken_trace_manifests() {
    let src = shared("qwen3-1layer-hf-f32");
    let d_tmp = scratch("trace");
    let d = d_tmp.path();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    let yaml = std::fs::read_to_string(src.join("trace.yaml")).unwrap();
    let write = |t: &str| std::fs::write(d.join("trace.yaml"), t).unwrap();
    // Batches that do not cover the tokens.
    write(&yaml.replacen("- - 14\n  - 15\n", "", 1));
    let e = Trace::open(d).err().unwrap().to_string();
    assert!(e.contains("batches"), "{e}");
    // A manifest shape that disagrees with the file.
    write(&yaml.replacen("    - 15\n    - 300\n", "    - 15\n    - 301\n", 1));
    let t = Trace::open(d).unwrap();
    let e = t.load("logits").err().unwrap().to_string();
    assert!(e.contains("logits.npy") && e.contains("301"), "{e}");
    // Not YAML.
    write("format: [unclosed");
    assert!(Trace::open(d).err().unwrap().to_string().contains("trace.yaml"));
    // A truncated stage file.
    write(&yaml);
    let f = d.join("L0.q.npy");
    let b = std::fs::read(&f).unwrap();
    std::fs::write(&f, &b[..b.len() / 2]).unwrap();
    let e = Trace::open(d).unwrap().load("L0.q").err().unwrap().to_string();
    assert!(e.contains("L0.q.npy") && e.contains("needs"), "{e}");
}

#[test]
fn unknown_engine_setting() {
    let mut opts = RunOptions::default();
    opts.settings.insert("rope.pairng".into(), "adjacent".into());
    let e = engine::load(&shared("qwen3-1layer"), &opts).err().unwrap().to_string();
    assert!(e.contains("rope.pairng") && e.contains("known:"), "{e}");
}

//! The shared example trace is the first file any reader of the format must load.

use std::path::Path;

use parity::formats::trace::Trace;

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/examples/qwen3-1layer-hf-f32")
}

#[test]
fn loads_the_shared_example_trace() {
    let t = Trace::open(&example()).unwrap();
    assert_eq!(t.n_rows(), 15);
    assert_eq!(t.manifest.batches, vec![[0, 12], [12, 13], [13, 14], [14, 15]]);
    let names = t.stage_names();
    assert_eq!(names.first().map(String::as_str), Some("embed"));
    assert_eq!(names.last().map(String::as_str), Some("logits"));
    let q = t.load("L0.q_rope").unwrap();
    assert_eq!(q.shape, vec![15, 2, 16]);
    assert_eq!(q.row_len(), 32);
    assert!(q.f32().unwrap().iter().all(|x| x.is_finite()));
    // Unknown keys are kept (producer.note).
    assert!(t.manifest.producer.extra.contains_key("note"));
}

//! `parity inspect MODEL`: the resolved configuration with where each value came
//! from, what the format could not express, and the tensor table.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use crate::error::Result;
use crate::formats::model::ModelSource;

pub fn render(src: &ModelSource, show_tensors: bool) -> Result<String> {
    let c = &src.config;
    let mut out = format!("model   {}\nformat  {} ({})\narch    {}\nsha256  {}\n\n", src.path.display(), src.format, src.dtype, c.arch, src.sha256().unwrap_or_else(|e| format!("unavailable: {e}")));
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED).set_header(["setting", "value", "source"]);
    for (k, v, s) in c.describe() {
        t.add_row([k, v, s]);
    }
    out.push_str(&format!("configuration (every value with its source)\n{t}\n"));
    let defaults: Vec<String> = c.describe().into_iter().filter(|(_, _, s)| s.starts_with("default")).map(|(k, _, _)| k).collect();
    if !defaults.is_empty() {
        out.push_str(&format!("\ndefaulted (absent from the file): {}\n", defaults.join(", ")));
    }
    for n in &c.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    if let Some(ct) = &c.chat_template {
        out.push_str(&format!("chat template: {} characters ({})\n", ct.value.len(), ct.source));
    }
    let names = src.weights.names();
    out.push_str(&format!("\n{} tensors\n", names.len()));
    if show_tensors {
        let mut t = Table::new();
        t.load_style(UTF8_FULL_CONDENSED).set_header(["tensor", "dtype", "shape"]);
        for n in &names {
            let (dt, shape) = match src.weights.stored(n) {
                Ok(x) => (x.dtype.to_string(), format!("{:?}", x.shape)),
                Err(e) => ("?".into(), e.to_string()),
            };
            t.add_row([n.clone(), dt, shape]);
        }
        out.push_str(&format!("{t}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::model::ModelSource;

    /// A GGUF's tensors are listed under the file's own names, each with its
    /// stored type and shape (no lookup of a GGUF name as a transformers one).
    #[test]
    fn a_gguf_lists_every_tensor_with_its_type_and_shape() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/qwen3moe-tiny/gguf");
        let file = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().ends_with(".q8_0.gguf")).unwrap();
        let src = ModelSource::open(&file).unwrap();
        let out = render(&src, true).unwrap();
        let names = src.weights.names();
        let rows: Vec<&str> = names.iter().map(|n| out.lines().find(|l| l.starts_with(&format!("│ {n} "))).unwrap_or_else(|| panic!("{n} not listed:\n{out}"))).collect();
        assert!(rows.iter().all(|r| !r.contains('?')), "{out}");
        assert!(rows.iter().any(|r| r.contains("blk.0.attn_q.weight") && r.contains("q8_0") && r.contains("[128, 64]")), "{out}");
        assert!(rows.iter().any(|r| r.contains("blk.0.ffn_gate_exps.weight")), "{out}");
    }
}

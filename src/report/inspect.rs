//! `parity inspect MODEL`: the resolved configuration with where each value came
//! from, what the format could not express, and the tensor table.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use crate::error::Result;
use crate::formats::model::ModelSource;

pub fn render(src: &ModelSource, show_tensors: bool) -> Result<String> {
    let c = &src.config;
    let mut out = format!(
        "model   {}\nformat  {} ({})\narch    {}\nsha256  {}\n\n",
        src.path.display(),
        src.format,
        src.dtype,
        c.arch,
        src.sha256().unwrap_or_else(|e| format!("unavailable: {e}"))
    );
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
            let (dt, shape) = match src.weights.get(n) {
                Ok(x) => (x.dtype.to_string(), format!("{:?}", x.shape)),
                Err(e) => ("?".into(), e.to_string()),
            };
            t.add_row([n.clone(), dt, shape]);
        }
        out.push_str(&format!("{t}\n"));
    }
    Ok(out)
}

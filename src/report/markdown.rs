//! `summary.md`: short enough for a pull-request comment or $GITHUB_STEP_SUMMARY.

use std::fmt::Write;

use crate::harness::result::Verdict;
use crate::report::Entry;

const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One character per layer: the layer's worst `1 - cos`, on a log scale from 1e-12 to 1.
pub fn sparkline(errs: &[f64]) -> String {
    errs.iter()
        .map(|&e| {
            let t = ((e.max(1e-12).log10() + 12.0) / 12.0).clamp(0.0, 0.999);
            SPARK[(t * SPARK.len() as f64) as usize]
        })
        .collect()
}

/// Per layer (then final stages), the worst cumulative `1 - cos` from a bisect.
pub fn per_layer(b: &crate::harness::bisect::Bisect) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for s in &b.stages {
        let key = match crate::formats::trace::split_layer(&s.stage) {
            Some((l, _)) => format!("L{l}"),
            None if s.stage == "embed" => "embed".to_string(),
            None => "final".to_string(),
        };
        let e = s.cumulative_cos.map_or(f64::NAN, |c| 1.0 - c);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = v.max(e),
            None => out.push((key, e)),
        }
    }
    out
}

pub fn render(entries: &[Entry]) -> String {
    let mut s = String::from("## parity\n\n| contract | verdict | worst stage | detail |\n|---|---|---|---|\n");
    let icon = |v: Verdict| match v {
        Verdict::Pass => "✅ pass",
        Verdict::ExpectedFailHolds => "☑️ expected fail holds",
        Verdict::Fail => "❌ FAIL",
        Verdict::Error => "⚠️ error",
    };
    for e in entries {
        let r = &e.result;
        let worst = r.comparison.as_ref().and_then(|c| c.worst.as_ref()).map_or("-".to_string(), |w| format!("`{}` {} {:.3e} (gate {:.3e})", w.stage, w.metric.name(), w.value, w.threshold));
        let detail = r.error.clone().unwrap_or_else(|| r.message.lines().next().unwrap_or("").to_string());
        let _ = writeln!(s, "| `{}` | {} | {} | {} |", r.id, icon(r.verdict), worst, detail.replace('|', "\\|"));
    }
    for e in entries.iter().filter(|e| e.bisect.is_some()) {
        let b = e.bisect.as_ref().unwrap_or_else(|| unreachable!());
        let _ = writeln!(s, "\n### `{}`\n\n{}\n", e.result.id, b.summary);
        if let Some(c) = &e.result.comparison {
            let failing: Vec<String> = c
                .failing_stages()
                .take(5)
                .flat_map(|st| st.metrics.iter().filter(|m| !m.pass).map(move |m| format!("- `{}` {} = {:.4e}, gate {:.4e}, would pass at {:.4e}", st.stage, m.metric.name(), m.value, m.threshold, m.passing_threshold)))
                .take(6)
                .collect();
            if !failing.is_empty() {
                let _ = writeln!(s, "{}\n", failing.join("\n"));
            }
        }
        let layers = per_layer(b);
        let errs: Vec<f64> = layers.iter().map(|x| x.1).collect();
        let _ = writeln!(s, "worst 1-cos per layer ({}): `{}`", layers.iter().map(|x| x.0.as_str()).collect::<Vec<_>>().join(" "), sparkline(&errs));
    }
    s
}

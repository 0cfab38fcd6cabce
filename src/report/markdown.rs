//! `summary.md`: GitHub-flavoured and short enough for a pull-request comment or
//! `$GITHUB_STEP_SUMMARY`: a verdict table, then per diverging contract the
//! first divergence, the diagnosis and the failing gates, and for every
//! contract one line of per-layer error.

use std::fmt::Write;

use crate::harness::bisect::Bisect;
use crate::harness::result::Verdict;
use crate::report::{contracts, margin, metric_num, num, per_layer, stage_error, Entry};

const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Failing gate rows shown per contract: enough to see the pattern, short enough for a PR.
const MAX_FAILING: usize = 6;

/// One character per value on a log scale over the decades `[lo, hi]` (▁ at or
/// below 10^lo, █ at or above 10^hi); `·` for a gap (not measured, NaN).
pub fn sparkline(errs: &[Option<f64>], lo: f64, hi: f64) -> String {
    errs.iter()
        .map(|e| match e.filter(|e| !e.is_nan()) {
            Some(e) => {
                let t = ((e.max(1e-300).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
                SPARK[((t * (SPARK.len() - 1) as f64).round() as usize).min(SPARK.len() - 1)]
            }
            None => '·',
        })
        .collect()
}

pub fn icon(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "✅",
        Verdict::ExpectedFailHolds => "☑️",
        Verdict::Fail => "❌",
        Verdict::Error => "⚠️",
    }
}

/// The first-divergence part of a bisect summary, without the diagnosis sentence
/// (shown on its own line).
pub fn divergence_sentence(b: &Bisect) -> String {
    let s = match &b.diagnosis {
        Some(d) => b.summary.strip_suffix(&format!(" {}", d.summary)).unwrap_or(&b.summary),
        None => &b.summary,
    };
    s.trim().to_string()
}

/// Table cells must not break the table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render(entries: &[Entry]) -> String {
    let failing = entries.iter().filter(|e| !e.result.verdict.holds()).count();
    let mut s = if failing == 0 {
        format!("## parity: {}\n\n", contracts(entries.len(), "holds", "hold"))
    } else {
        format!("## parity: {failing} of {} {}\n\n", contracts(entries.len(), "", "").trim_end(), if failing == 1 { "fails" } else { "fail" })
    };
    s.push_str("| | contract | verdict | worst gate | value | threshold | margin |\n|---|---|---|---|---|---|---|\n");
    for e in entries {
        let r = &e.result;
        let _ = match r.comparison.as_ref().and_then(|c| c.worst.as_ref()) {
            Some(w) => writeln!(
                s,
                "| {} | `{}` | {} | `{}` {} | {} | {} | {} |",
                icon(r.verdict),
                r.id,
                r.verdict.label(),
                w.stage,
                w.metric.name(),
                metric_num(w.metric, w.value),
                metric_num(w.metric, w.threshold),
                margin(w.usage)
            ),
            None => writeln!(s, "| {} | `{}` | {} | {} | | | |", icon(r.verdict), r.id, r.verdict.label(), cell(r.error.as_deref().unwrap_or("-"))),
        };
    }

    s.push_str("\nPer layer (embed, L0, …, final), worst 1 - cos on a log scale ▁ ≤ 1e-16 … █ 1; where no cosine is gated, the share of the gate's budget used, ▁ ≤ 1e-6 … █ ≥ 100×:\n\n");
    for e in entries {
        let Some(c) = &e.result.comparison else {
            let _ = writeln!(s, "- `{}`: not compared", e.result.id);
            continue;
        };
        let mut layers = per_layer(&c.stages, |st| st.stage.as_str(), |st| stage_error(st, "cosine"));
        let mut what = ("1 - cos", -16.0, 0.0);
        if layers.iter().all(|l| l.1.is_none()) {
            // Budget usage is comparable across metrics: >1 fails whatever the metric.
            layers = per_layer(&c.stages, |st| st.stage.as_str(), |st| st.metrics.iter().map(|m| m.usage).filter(|u| u.is_finite()).reduce(f64::max));
            what = ("budget", -6.0, 2.0);
        }
        let errs: Vec<Option<f64>> = layers.iter().map(|l| l.1).collect();
        let worst = layers.iter().filter_map(|l| l.1.map(|v| (l, v))).max_by(|a, b| a.1.total_cmp(&b.1));
        let worst = worst.map_or("-".into(), |(l, v)| if what.0 == "budget" { format!("{} {}", l.0, margin(v)) } else { format!("{} {}", l.0, num(v)) });
        let _ = writeln!(s, "- `{}`: `{}` {} (worst {worst})", e.result.id, sparkline(&errs, what.1, what.2), what.0);
    }

    for e in entries.iter().filter(|e| !matches!(e.result.verdict, Verdict::Pass)) {
        let r = &e.result;
        // Expected failures are news only when they stop holding: fold them away
        // so a whole-suite summary stays short enough for a PR comment.
        let folded = r.verdict == Verdict::ExpectedFailHolds;
        if folded {
            let _ = writeln!(s, "\n<details><summary>{} <code>{}</code>: expected failure still holds</summary>\n", icon(r.verdict), r.id);
        }
        let _ = writeln!(s, "\n### {} `{}`\n\n> {}\n", icon(r.verdict), r.id, cell(&r.claim));
        if let Some(err) = &r.error {
            let _ = writeln!(s, "Error: {}\n", cell(err));
        }
        if let Some(x) = &r.expect_fail {
            let _ = writeln!(
                s,
                "Expected to fail first at `{}` ({}); actually first at `{}`.\n",
                x.expected_first_divergence,
                cell(&x.reason),
                x.actual_first_divergence.as_deref().unwrap_or("nowhere: it passes")
            );
        }
        if let Some(b) = &e.bisect {
            let sentence = divergence_sentence(b);
            let _ = writeln!(s, "**First divergence:** {}\n", sentence.strip_prefix("first divergence: ").unwrap_or(&sentence));
            if let Some(d) = &b.diagnosis {
                let _ = writeln!(s, "**Diagnosis at `{}`:** {}\n", d.stage, d.summary.strip_prefix("cause: ").unwrap_or(&d.summary));
            }
        }
        for n in &e.notes {
            let _ = writeln!(s, "_note: {}_\n", cell(n));
        }
        if let Some(c) = &r.comparison {
            failing_gates(&mut s, c);
        }
        if folded {
            s.push_str("\n</details>\n");
        }
    }
    s
}

fn failing_gates(s: &mut String, c: &crate::harness::result::Comparison) {
    let rows: Vec<String> = c
        .failing_stages()
        .flat_map(|st| {
            st.metrics.iter().filter(|m| !m.pass).map(move |m| {
                format!(
                    "| `{}` | {} | {} | {} | {} | {} |",
                    st.stage,
                    m.metric.name(),
                    m.worst_row.map_or("-".into(), |r| r.to_string()),
                    metric_num(m.metric, m.value),
                    metric_num(m.metric, m.threshold),
                    margin(m.usage)
                )
            })
        })
        .collect();
    let findings: Vec<&str> = c.findings.iter().filter(|f| f.fails).map(|f| f.message.as_str()).collect();
    if !rows.is_empty() {
        let shown = rows.len().min(MAX_FAILING);
        let _ = writeln!(s, "Failing gates ({shown} of {}):\n\n| stage | metric | worst row | value | threshold | margin |\n|---|---|---|---|---|---|", rows.len());
        for row in &rows[..shown] {
            let _ = writeln!(s, "{row}");
        }
    }
    for f in findings.iter().take(3) {
        let _ = writeln!(s, "- {}", cell(f));
    }
}

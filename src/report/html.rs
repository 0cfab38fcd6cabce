//! `index.html`: one self-contained page (inline CSS and SVG, no scripts, no
//! fonts or anything else from the network), readable without JavaScript and
//! printable. Section ids are stable: verdict, gates, heatmap, growth, heads,
//! positions, diagnosis, provenance; the second and later contracts' sections
//! get a `-N` suffix so ids stay unique.

use std::fmt::Write;

use crate::formats::trace::split_layer;
use crate::harness::result::{Comparison, Verdict};
use crate::report::svg::{self, esc, Cell, Mark, Series};
use crate::report::{contracts, layer_key, margin, markdown, metric_num, num, per_layer, stage_error, Entry, HeatMetric, Meta, StageDetail};

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:24px auto;color:#222;max-width:1180px;padding:0 16px}\
h1{font-size:22px;margin:0 0 12px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc;padding-bottom:4px}\
h3{font-size:15px;margin:22px 0 6px}p{margin:6px 0}\
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
.banner{padding:12px 16px;border-radius:6px;font-size:19px;font-weight:bold;border-left:8px solid}\
.pass{background:#e3f1fa;border-color:#4575b4}.fail{background:#fbe3dc;border-color:#a50026}\
.xfail{background:#eceaf6;border-color:#6a5acd}.error{background:#fdf0d0;border-color:#c77c00}\
tr.pass td:first-child{border-left:4px solid #4575b4}tr.fail td:first-child{border-left:4px solid #a50026}\
tr.xfail td:first-child{border-left:4px solid #6a5acd}tr.error td:first-child{border-left:4px solid #c77c00}\
tr.best td{background:#e3f1fa}tr.base td{font-style:italic}\
code,pre{font-size:12px}pre{background:#f6f6f6;padding:8px;overflow-x:auto;white-space:pre-wrap}\
.muted{color:#666}.sentence{font-size:15px;background:#fafafa;border:1px solid #e5e5e5;padding:8px 12px;border-radius:4px}\
svg{display:block;max-width:100%;height:auto}td code{overflow-wrap:anywhere}";

fn bound(b: crate::harness::contract::Bound) -> &'static str {
    match b {
        crate::harness::contract::Bound::Min => "≥",
        crate::harness::contract::Bound::Max => "≤",
    }
}

fn class(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::ExpectedFailHolds => "xfail",
        Verdict::Fail => "fail",
        Verdict::Error => "error",
    }
}

/// Layer row labels, stage columns, cell per row and column, the divergent cell.
type Grid = (Vec<String>, Vec<String>, Vec<Vec<Cell>>, Option<(usize, usize)>);

/// The comparison as a [`Grid`].
fn grid(c: &Comparison, metric: &str, first: Option<&str>) -> Grid {
    let col_of = |stage: &str| split_layer(stage).map_or(stage.to_string(), |(_, s)| s.to_string());
    let mut rows: Vec<String> = Vec::new();
    let mut cols: Vec<String> = Vec::new();
    for s in &c.stages {
        let (r, col) = (layer_key(&s.stage), col_of(&s.stage));
        if !rows.contains(&r) {
            rows.push(r);
        }
        if !cols.contains(&col) {
            cols.push(col);
        }
    }
    let mut cells = vec![vec![Cell::Empty; cols.len()]; rows.len()];
    let mut outline = None;
    for s in &c.stages {
        let (r, col) = (layer_key(&s.stage), col_of(&s.stage));
        let (Some(i), Some(j)) = (rows.iter().position(|x| *x == r), cols.iter().position(|x| *x == col)) else { continue };
        // Stages gated without this metric (expert ids, logits agreement) still show whether they held.
        cells[i][j] = stage_error(s, metric).map_or(Cell::Verdict(s.pass), |v| Cell::Value(v, s.pass));
        if first == Some(s.stage.as_str()) {
            outline = Some((i, j));
        }
    }
    (rows, cols, cells, outline)
}

pub fn render(entries: &[Entry], meta: &Meta) -> String {
    let mut s = format!("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>parity report</title><style>{CSS}</style></head><body>\n<h1>parity report</h1>\n");
    verdict(&mut s, entries);
    gates(&mut s, entries);
    for (n, e) in entries.iter().enumerate() {
        let sfx = if n == 0 { String::new() } else { format!("-{}", n + 1) };
        contract(&mut s, e, &sfx, meta.heat);
    }
    provenance(&mut s, entries, meta);
    s.push_str("</body></html>\n");
    s
}

fn verdict(s: &mut String, entries: &[Entry]) {
    let bad = entries.iter().filter(|e| !e.result.verdict.holds()).count();
    let errors = entries.iter().any(|e| e.result.verdict == Verdict::Error);
    let (cls, text) = match (bad, errors) {
        (0, _) if entries.is_empty() => ("error", "No contracts".to_string()),
        (0, _) => ("pass", contracts(entries.len(), "holds", "hold")),
        (_, true) => ("error", format!("{bad} of {} {} or could not be checked", contracts(entries.len(), "", "").trim_end(), if bad == 1 { "fails" } else { "fail" })),
        _ => ("fail", format!("{bad} of {} {}", contracts(entries.len(), "", "").trim_end(), if bad == 1 { "fails" } else { "fail" })),
    };
    let _ = writeln!(s, "<section id=\"verdict\"><div class=\"banner {cls}\">{}</div><ul>", esc(&text));
    for e in entries {
        let r = &e.result;
        let line = match (&e.bisect, &r.error) {
            (_, Some(err)) => err.clone(),
            (Some(b), None) => markdown::divergence_sentence(b),
            (None, None) => r.claim.clone(),
        };
        let _ = writeln!(s, "<li><b>{}</b> <code>{}</code>: {}</li>", r.verdict.label(), esc(&r.id), esc(&line));
    }
    s.push_str("</ul></section>\n");
}

/// Every contract's worst gate, and every failing metric with value, threshold and margin.
fn gates(s: &mut String, entries: &[Entry]) {
    s.push_str("<section id=\"gates\"><h2>Gates</h2><table><tr><th>contract</th><th>verdict</th><th>stage</th><th>metric</th><th>worst row</th><th>value</th><th>threshold</th><th>margin</th></tr>\n");
    for e in entries {
        let r = &e.result;
        let cls = class(r.verdict);
        let Some(c) = &r.comparison else {
            let _ = writeln!(s, "<tr class=\"{cls}\"><td>{}</td><td>{}</td><td colspan=\"6\">{}</td></tr>", esc(&r.id), r.verdict.label(), esc(r.error.as_deref().unwrap_or("not compared")));
            continue;
        };
        let failing: Vec<_> = c.failing_stages().flat_map(|st| st.metrics.iter().filter(|m| !m.pass).map(move |m| (st, m))).collect();
        // A passing contract's closest call is what a reviewer wants to see.
        let rows: Vec<_> = if failing.is_empty() {
            c.worst.as_ref().and_then(|w| c.stage(&w.stage).and_then(|st| st.metrics.iter().find(|m| m.metric == w.metric).map(|m| (st, m)))).into_iter().collect()
        } else {
            failing.iter().take(10).copied().collect()
        };
        for (st, m) in &rows {
            let _ = writeln!(
                s,
                "<tr class=\"{cls}\"><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} {}</td><td class=\"n\">{}</td></tr>",
                esc(&r.id),
                r.verdict.label(),
                esc(&st.stage),
                m.metric.name(),
                m.worst_row.map_or("-".into(), |x| x.to_string()),
                metric_num(m.metric, m.value),
                bound(m.bound),
                metric_num(m.metric, m.threshold),
                margin(m.usage)
            );
        }
        if failing.len() > rows.len() {
            let _ = writeln!(s, "<tr class=\"{cls}\"><td colspan=\"8\" class=\"muted\">… and {} more failing metrics</td></tr>", failing.len() - rows.len());
        }
        for f in c.findings.iter().filter(|f| f.fails).take(5) {
            let _ = writeln!(s, "<tr class=\"{cls}\"><td>{}</td><td>{}</td><td colspan=\"6\">{}</td></tr>", esc(&r.id), r.verdict.label(), esc(&f.message));
        }
    }
    s.push_str("</table></section>\n");
}

fn contract(s: &mut String, e: &Entry, sfx: &str, heat: HeatMetric) {
    let r = &e.result;
    let _ = writeln!(s, "<h2>{} <span class=\"muted\">({})</span></h2><p>{}</p>", esc(&r.id), r.verdict.label(), esc(&r.claim));
    if let Some(b) = &e.bisect {
        let _ = writeln!(s, "<p class=\"sentence\">{}</p>", esc(&markdown::divergence_sentence(b)));
    }
    for n in &e.notes {
        let _ = writeln!(s, "<p class=\"muted\">note: {}</p>", esc(n));
    }
    let first = e.bisect.as_ref().and_then(|b| b.first.as_ref().map(|d| d.stage.clone()));
    match &r.comparison {
        Some(c) => {
            let (rows, cols, cells, outline) = grid(c, heat.gate_metric(), first.as_deref());
            let _ = writeln!(
                s,
                "<section id=\"heatmap{sfx}\"><h3>{} by layer and stage (worst row, log colour; cell text is log10)</h3>{}</section>",
                heat.label(),
                svg::heatmap(&rows, &cols, |i, j| cells[i][j], outline, heat.label())
            );
            growth(s, e, c, sfx);
        }
        None => {
            let why = esc(r.error.as_deref().unwrap_or("no comparison"));
            let _ = writeln!(
                s,
                "<section id=\"heatmap{sfx}\"><h3>Heatmap</h3><p class=\"muted\">{why}</p></section><section id=\"growth{sfx}\"><h3>Error growth</h3><p class=\"muted\">{why}</p></section>"
            );
        }
    }
    heads(s, e.detail.as_ref(), sfx);
    positions(s, e.detail.as_ref(), sfx);
    diagnosis(s, e, sfx);
}

/// Worst `1 - cos` per layer: cumulative (the subject as it ran) and isolated
/// (each op fed the reference's inputs), with the tightest cosine gate dashed.
fn growth(s: &mut String, e: &Entry, c: &Comparison, sfx: &str) {
    let cum = per_layer(&c.stages, |st| st.stage.as_str(), |st| stage_error(st, "cosine"));
    let labels: Vec<String> = cum.iter().map(|x| x.0.clone()).collect();
    let gate = per_layer(&c.stages, |st| st.stage.as_str(), |st| st.metrics.iter().find(|m| m.metric.name() == "cosine").map(|m| -(1.0 - m.threshold)));
    let mut series = vec![Series { name: "cumulative", colour: "#a50026", dashed: false, values: cum.iter().map(|x| x.1).collect() }];
    if let Some(b) = &e.bisect {
        let iso = per_layer(&b.stages, |x| x.stage.as_str(), |x| x.isolated_cos.map(|v| 1.0 - v));
        let values = labels.iter().map(|l| iso.iter().find(|x| x.0 == *l).and_then(|x| x.1)).collect();
        series.push(Series { name: "isolated (op's own error)", colour: "#4575b4", dashed: false, values });
    }
    // Negated above so that the per-layer max picks the tightest (smallest) allowance.
    series.push(Series { name: "tightest cosine gate", colour: "#777", dashed: true, values: gate.iter().map(|x| x.1.map(|v| -v)).collect() });
    let note = if e.bisect.is_none() { "<p class=\"muted\">isolated view: only computed for contracts that diverge</p>" } else { "" };
    let _ = writeln!(s, "<section id=\"growth{sfx}\"><h3>Error growth across layers (worst 1 - cos per layer)</h3>{}{note}</section>", svg::lines(&labels, &series, &[], "1 - cos"));
}

fn heads(s: &mut String, d: Option<&StageDetail>, sfx: &str) {
    let _ = write!(s, "<section id=\"heads{sfx}\"><h3>Per head</h3>");
    match d {
        Some(d) if !d.heads.is_empty() => {
            let labels: Vec<String> = (0..d.heads.len()).map(|h| format!("h{h}")).collect();
            let worst = d.heads.iter().enumerate().filter(|x| !x.1.is_nan()).max_by(|a, b| a.1.total_cmp(b.1));
            let _ = write!(
                s,
                "<p>1 - cos per head at <code>{}</code> over all rows; worst {}</p>{}",
                esc(&d.stage),
                worst.map_or("-".into(), |(h, v)| format!("h{h} ({})", num(*v))),
                svg::bars(&labels, &d.heads, "1 - cos")
            );
        }
        Some(d) => {
            let _ = write!(s, "<p class=\"muted\"><code>{}</code> has no head axis (only [T, H, hd] stages are split by head).</p>", esc(&d.stage));
        }
        None => s.push_str("<p class=\"muted\">No divergent stage to break down.</p>"),
    }
    s.push_str("</section>\n");
}

/// Per-position error with each engine call marked: prefill bugs show from row 0,
/// KV-cache bugs only right of the first decode boundary.
fn positions(s: &mut String, d: Option<&StageDetail>, sfx: &str) {
    let _ = write!(s, "<section id=\"positions{sfx}\"><h3>Per position</h3>");
    match d {
        Some(d) if !d.positions.is_empty() => {
            let labels: Vec<String> = d.positions.iter().map(|p| p.0.to_string()).collect();
            let index_of = |t: usize| d.positions.iter().position(|p| p.0 == t);
            let many = d.batches.len() > 8;
            let marks: Vec<Mark> = d
                .batches
                .iter()
                .enumerate()
                .filter_map(|(k, b)| {
                    let label = match (k, b[1].saturating_sub(b[0])) {
                        _ if many && k > 1 => String::new(),
                        (0, n) if n > 1 => "prefill".into(),
                        (0, _) => "call 0".into(),
                        (k, _) if many => format!("decode {k}…"),
                        (k, _) => format!("decode {k}"),
                    };
                    // The line sits half a step left of the batch's first row, between calls.
                    index_of(b[0]).map(|i| Mark { at: (i as f64 - 0.5).max(0.0), label })
                })
                .collect();
            let cos: Vec<Option<f64>> = d.positions.iter().map(|p| Some(p.1)).collect();
            let nmse: Vec<Option<f64>> = d.positions.iter().map(|p| Some(p.2)).collect();
            let calls: Vec<String> = d.batches.iter().map(|b| format!("{}..{}", b[0], b[1])).collect();
            let _ = write!(
                s,
                "<p>1 - cos and NMSE per position at <code>{}</code>; dashed lines separate engine calls (rows {})</p>{}",
                esc(&d.stage),
                esc(&calls.join(", ")),
                svg::lines(
                    &labels,
                    &[Series { name: "1 - cos", colour: "#a50026", dashed: false, values: cos }, Series { name: "NMSE", colour: "#4575b4", dashed: false, values: nmse }],
                    &marks,
                    "error"
                )
            );
        }
        _ => s.push_str("<p class=\"muted\">No divergent stage to break down.</p>"),
    }
    s.push_str("</section>\n");
}

fn diagnosis(s: &mut String, e: &Entry, sfx: &str) {
    let _ = write!(s, "<section id=\"diagnosis{sfx}\"><h3>Diagnosis</h3>");
    let Some(d) = e.bisect.as_ref().and_then(|b| b.diagnosis.as_ref()) else {
        let why = match &e.bisect {
            Some(b) => b.isolated_note.clone().unwrap_or_else(|| "no divergence to diagnose".into()),
            None => "not bisected: the contract holds".into(),
        };
        let _ = writeln!(s, "<p class=\"muted\">{}</p></section>", esc(&why));
        return;
    };
    let _ = writeln!(
        s,
        "<p class=\"sentence\">{}</p><p>At <code>{}</code>, the op re-run under each alternative convention, closest to the reference first. \
        <i>vs reference</i>: from the reference's inputs, compared with the reference's output; <i>vs subject</i>: from the subject's inputs, compared with the subject's output.</p>",
        esc(&d.summary),
        esc(&d.stage)
    );
    s.push_str("<table><tr><th>#</th><th>convention</th><th>settings</th><th>vs reference: cos</th><th>nmse</th><th>vs subject: cos</th><th>nmse</th></tr>\n");
    let f = |x: Option<crate::harness::diagnose::Score>| x.map_or(("-".into(), "-".into()), |x| (format!("{:.6}", x.cosine), num(x.nmse)));
    for (i, c) in d.candidates.iter().enumerate() {
        let cls = if c.is_base {
            " class=\"base\""
        } else if i == 0 && d.cause.is_some() {
            " class=\"best\""
        } else {
            ""
        };
        let settings: Vec<String> = c.settings.iter().map(|(k, v)| format!("{k}={}", serde_yaml::to_string(v).map_or_else(|_| "?".into(), |s| s.trim().to_string()))).collect();
        let ((rc, rn), (sc, sn)) = (f(c.vs_reference), f(c.vs_subject));
        let _ = writeln!(
            s,
            "<tr{cls}><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td><td class=\"n\">{rc}</td><td class=\"n\">{rn}</td><td class=\"n\">{sc}</td><td class=\"n\">{sn}</td></tr>",
            i + 1,
            esc(&c.label),
            esc(&settings.join(" "))
        );
    }
    s.push_str("</table></section>\n");
}

fn provenance(s: &mut String, entries: &[Entry], meta: &Meta) {
    s.push_str("<section id=\"provenance\"><h2>Provenance</h2>\n");
    let _ = writeln!(s, "<p>report command: <code>{}</code><br>date: {}<br>parity {}</p>", esc(&meta.command), esc(&meta.date), env!("CARGO_PKG_VERSION"));
    for e in entries {
        let _ = writeln!(s, "<h3>{}</h3><p class=\"muted\">{} · subject {}</p>", esc(&e.result.id), esc(&e.file.display().to_string()), esc(&e.result.subject));
        if !e.producers.is_empty() {
            s.push_str("<table><tr><th>side</th><th>producer</th><th>model</th><th>model sha256</th><th>settings</th><th>command</th></tr>\n");
            for p in &e.producers {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                    esc(&p.role),
                    esc(&p.producer),
                    esc(p.model.as_deref().unwrap_or("-")),
                    esc(p.sha256.as_deref().unwrap_or("-")),
                    esc(&p.settings.join(" ")),
                    esc(p.command.as_deref().unwrap_or("-"))
                );
            }
            s.push_str("</table>\n");
        }
        match &e.text {
            Some(t) => {
                let _ = writeln!(s, "<details open><summary>contract</summary><pre>{}</pre></details>", esc(t));
            }
            None => s.push_str("<p class=\"muted\">contract text unavailable</p>\n"),
        }
    }
    s.push_str("</section>\n");
}

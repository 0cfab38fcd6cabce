//! `index.html`: one self-contained page (inline CSS and SVG, no scripts, no
//! fonts or anything else from the network), readable without JavaScript.
//! Section ids are stable: verdict, gates, heatmap, growth, heads, positions,
//! diagnosis, provenance (later contracts get a `-N` suffix).

use std::fmt::Write;

use crate::formats::trace::split_layer;
use crate::harness::result::{Comparison, Verdict};
use crate::report::svg::{self, esc};
use crate::report::{Entry, Meta};

const CSS: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}\
.banner{padding:12px 16px;border-radius:6px;font-size:18px;font-weight:bold}\
.pass{background:#d9f2dd}.fail{background:#f8d4d4}.xfail{background:#e8e8f8}.error{background:#fbe7c6}\
code,pre{font-size:12px}pre{background:#f6f6f6;padding:8px;overflow-x:auto}.muted{color:#777}";

fn class(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::ExpectedFailHolds => "xfail",
        Verdict::Fail => "fail",
        Verdict::Error => "error",
    }
}

/// (layer row labels, stage columns, 1-cos per cell, the divergent cell)
fn grid(c: &Comparison, first: Option<&str>) -> (Vec<String>, Vec<String>, Vec<Vec<Option<f64>>>, Option<(usize, usize)>) {
    let mut rows: Vec<String> = Vec::new();
    let mut cols: Vec<String> = Vec::new();
    let key = |stage: &str| match split_layer(stage) {
        Some((l, s)) => (format!("L{l}"), s.to_string()),
        None => ("model".to_string(), stage.to_string()),
    };
    for s in &c.stages {
        let (r, col) = key(&s.stage);
        if !rows.contains(&r) {
            rows.push(r);
        }
        if !cols.contains(&col) {
            cols.push(col);
        }
    }
    let mut cells = vec![vec![None; cols.len()]; rows.len()];
    let mut outline = None;
    for s in &c.stages {
        let (r, col) = key(&s.stage);
        let (i, j) = (rows.iter().position(|x| *x == r).unwrap_or(0), cols.iter().position(|x| *x == col).unwrap_or(0));
        cells[i][j] = s.metrics.iter().find(|m| m.metric.name() == "cosine").map(|m| 1.0 - m.value).or(Some(if s.pass { 0.0 } else { 1.0 }));
        if first == Some(s.stage.as_str()) {
            outline = Some((i, j));
        }
    }
    (rows, cols, cells, outline)
}

pub fn render(entries: &[Entry], meta: &Meta) -> String {
    let mut s = format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>parity report</title><style>{CSS}</style></head><body>\n<h1>parity report</h1>\n");
    let fails = entries.iter().filter(|e| matches!(e.result.verdict, Verdict::Fail | Verdict::Error)).count();
    let overall = if fails == 0 { ("pass", format!("All {} contracts hold", entries.len())) } else { ("fail", format!("{fails} of {} contracts fail", entries.len())) };
    let _ = writeln!(s, "<section id=\"verdict\"><div class=\"banner {}\">{}</div></section>", overall.0, esc(&overall.1));

    // Gate table: every contract, and every failing metric with value, threshold and margin.
    s.push_str("<section id=\"gates\"><h2>Contracts and gates</h2><table><tr><th>contract</th><th>verdict</th><th>stage</th><th>metric</th><th>value</th><th>gate</th><th>would pass at</th></tr>\n");
    for e in entries {
        let r = &e.result;
        let failing: Vec<_> = r.comparison.iter().flat_map(|c| c.stages.iter()).flat_map(|st| st.metrics.iter().filter(|m| !m.pass).map(move |m| (st, m))).take(8).collect();
        if failing.is_empty() {
            let worst = r.comparison.as_ref().and_then(|c| c.worst.as_ref());
            let _ = writeln!(s, "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td></td></tr>", class(r.verdict), esc(&r.id), r.verdict.label(),
                worst.map_or("-".into(), |w| esc(&w.stage)), worst.map_or("-".into(), |w| w.metric.name().to_string()), worst.map_or("-".into(), |w| format!("{:.3e}", w.value)), worst.map_or(esc(r.error.as_deref().unwrap_or("")), |w| format!("{:.3e}", w.threshold)));
        }
        for (st, m) in failing {
            let _ = writeln!(s, "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4e}</td><td>{:.4e}</td><td>{:.4e}</td></tr>", class(r.verdict), esc(&r.id), r.verdict.label(), esc(&st.stage), m.metric.name(), m.value, m.threshold, m.passing_threshold);
        }
    }
    s.push_str("</table></section>\n");

    for (n, e) in entries.iter().enumerate() {
        let sfx = if n == 0 { String::new() } else { format!("-{}", n + 1) };
        let r = &e.result;
        let _ = writeln!(s, "<h2>{} <span class=\"muted\">({})</span></h2><p>{}</p>", esc(&r.id), r.verdict.label(), esc(&r.claim));
        if let Some(b) = &e.bisect {
            let _ = writeln!(s, "<p><b>{}</b></p>", esc(&b.summary));
        }
        let first = e.bisect.as_ref().and_then(|b| b.first.as_ref().map(|d| d.stage.clone()));
        match &r.comparison {
            Some(c) => {
                let (rows, cols, cells, outline) = grid(c, first.as_deref());
                let _ = writeln!(s, "<section id=\"heatmap{sfx}\"><h3>1 - cosine by layer and stage (worst row; log colour)</h3>{}</section>", svg::heatmap(&rows, &cols, |i, j| cells[i][j], outline));
                // Error growth: worst 1-cos per layer, cumulative and (when bisected) isolated.
                let mut labels: Vec<String> = Vec::new();
                let mut cum: Vec<Option<f64>> = Vec::new();
                let mut iso: Vec<Option<f64>> = Vec::new();
                for st in &c.stages {
                    let l = match split_layer(&st.stage) {
                        Some((l, _)) => format!("L{l}"),
                        None if st.stage == "embed" => "embed".to_string(),
                        None => "final".to_string(),
                    };
                    let cv = st.metrics.iter().find(|m| m.metric.name() == "cosine").map(|m| (1.0 - m.value).max(1e-16));
                    let iv = e.bisect.as_ref().and_then(|b| b.stages.iter().find(|x| x.stage == st.stage)).and_then(|x| x.isolated_cos).map(|v| (1.0 - v).max(1e-16));
                    match labels.iter().position(|x| *x == l) {
                        Some(i) => {
                            cum[i] = max_opt(cum[i], cv);
                            iso[i] = max_opt(iso[i], iv);
                        }
                        None => {
                            labels.push(l);
                            cum.push(cv);
                            iso.push(iv);
                        }
                    }
                }
                let mut series = vec![("cumulative", "#d62728", cum)];
                if e.bisect.is_some() {
                    series.push(("isolated (op's own error)", "#1f77b4", iso));
                }
                let _ = writeln!(s, "<section id=\"growth{sfx}\"><h3>Error growth across layers (worst 1 - cos)</h3>{}</section>", svg::lines(&labels, &series, &[], "1 - cos"));
            }
            None => {
                let _ = writeln!(s, "<section id=\"heatmap{sfx}\"><p class=\"muted\">no comparison: {}</p></section><section id=\"growth{sfx}\"></section>", esc(r.error.as_deref().unwrap_or("")));
            }
        }
        match &e.detail {
            Some(d) if !d.heads.is_empty() => {
                let labels: Vec<String> = (0..d.heads.len()).map(|h| format!("h{h}")).collect();
                let _ = writeln!(s, "<section id=\"heads{sfx}\"><h3>Per head at {} (1 - cos over all rows)</h3>{}</section>", esc(&d.stage), svg::heatmap(&["heads".into()], &labels, |_, j| Some(d.heads[j]), None));
            }
            Some(d) => {
                let _ = writeln!(s, "<section id=\"heads{sfx}\"><p class=\"muted\">{} has no head axis.</p></section>", esc(&d.stage));
            }
            None => {
                let _ = writeln!(s, "<section id=\"heads{sfx}\"><p class=\"muted\">No divergence to break down.</p></section>");
            }
        }
        match &e.detail {
            Some(d) => {
                let labels: Vec<String> = (0..d.positions.len()).map(|t| t.to_string()).collect();
                let marks: Vec<usize> = d.batches.iter().skip(1).map(|b| b[0]).collect();
                let vals: Vec<Option<f64>> = d.positions.iter().map(|&v| Some(v.max(1e-16))).collect();
                let _ = writeln!(s, "<section id=\"positions{sfx}\"><h3>Per position at {} (dashed lines: decode calls)</h3>{}</section>", esc(&d.stage), svg::lines(&labels, &[("1 - cos", "#d62728", vals)], &marks, "1 - cos"));
            }
            None => {
                let _ = writeln!(s, "<section id=\"positions{sfx}\"></section>");
            }
        }
        match e.bisect.as_ref().and_then(|b| b.diagnosis.as_ref()) {
            Some(d) => {
                let _ = writeln!(s, "<section id=\"diagnosis{sfx}\"><h3>Diagnosis at {}: alternatives, best first</h3><table><tr><th>convention</th><th>vs reference (cos / nmse)</th><th>vs subject (cos / nmse)</th></tr>", esc(&d.stage));
                let f = |x: Option<crate::harness::diagnose::Score>| x.map_or("-".into(), |x| format!("{:.6} / {:.2e}", x.cosine, x.nmse));
                for c in &d.candidates {
                    let _ = writeln!(s, "<tr><td>{}{}</td><td>{}</td><td>{}</td></tr>", esc(&c.label), if c.is_base { " <i>(base)</i>" } else { "" }, f(c.vs_reference), f(c.vs_subject));
                }
                s.push_str("</table></section>\n");
            }
            None => {
                let _ = writeln!(s, "<section id=\"diagnosis{sfx}\"></section>");
            }
        }
    }

    s.push_str("<section id=\"provenance\"><h2>Provenance</h2>\n");
    let _ = writeln!(s, "<p>command: <code>{}</code><br>date: {}<br>parity {}</p>", esc(&meta.command), esc(&meta.date), env!("CARGO_PKG_VERSION"));
    for e in entries {
        let _ = writeln!(s, "<h3>{}</h3><p class=\"muted\">{}</p><pre>{}</pre>", esc(&e.result.id), esc(&e.file.display().to_string()), esc(&e.text));
        if let Ok(c) = crate::harness::Contract::load(&e.file) {
            if let Ok(t) = crate::formats::trace::Trace::open(&c.reference) {
                let m = &t.manifest;
                let model = m.model.as_ref();
                let _ = writeln!(s, "<p>reference: {} {} {} · model sha256 <code>{}</code> · settings <code>{}</code><br><code>{}</code></p>",
                    esc(&m.producer.kind), esc(&m.producer.name), esc(m.producer.version.as_deref().unwrap_or("")),
                    esc(model.and_then(|x| x.sha256.as_deref()).unwrap_or("-")),
                    esc(&serde_json::to_string(&m.settings).unwrap_or_default()),
                    esc(m.producer.command.as_deref().unwrap_or("")));
            }
        }
    }
    s.push_str("</section>\n</body></html>\n");
    s
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

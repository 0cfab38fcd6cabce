//! Small hand-written SVG charts. Output is deterministic text (fixed number
//! formatting, no timestamps, no randomness), so reports can be snapshot-tested,
//! and every value is guarded: NaN, infinities, zeros and empty inputs draw as
//! gaps or notes, never as a panic or an unparsable coordinate.

use std::fmt::Write;

use crate::report::num;

/// Errors below this are drawn at the floor: f32 work cannot resolve them, and a
/// log axis needs a finite bottom.
pub const FLOOR: f64 = 1e-16;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Colour for an error on a log scale from 1e-16 (dark blue) through 1e-8
/// (pale yellow) to 1 (dark red): a diverging ramp that stays readable for the
/// colour-blind (no red/green pair) and prints in grey as a monotone ramp.
pub fn heat(err: f64) -> &'static str {
    const RAMP: [&str; 9] = ["#313695", "#4575b4", "#74add1", "#abd9e9", "#fee090", "#fdae61", "#f46d43", "#d73027", "#a50026"];
    if err.is_nan() {
        return "#bbbbbb";
    }
    let t = ((err.max(FLOOR).log10() + 16.0) / 16.0).clamp(0.0, 1.0);
    RAMP[((t * (RAMP.len() - 1) as f64).round() as usize).min(RAMP.len() - 1)]
}

/// Text colour that stays readable on a `heat` cell.
fn ink(fill: &str) -> &'static str {
    if matches!(fill, "#313695" | "#4575b4" | "#d73027" | "#a50026") {
        "#fff"
    } else {
        "#222"
    }
}

/// A heatmap cell: a value and whether every gate held there, a pass/fail without
/// a value (expert-id checks), or nothing.
#[derive(Clone, Copy, Debug)]
pub enum Cell {
    Value(f64, bool),
    Verdict(bool),
    Empty,
}

/// Layer × stage grid; `outline` marks one cell (the first divergence).
pub fn heatmap(rows: &[String], cols: &[String], cell: impl Fn(usize, usize) -> Cell, outline: Option<(usize, usize)>, what: &str) -> String {
    if rows.is_empty() || cols.is_empty() {
        return "<p class=\"muted\">nothing was compared</p>".into();
    }
    let (cw, ch, left, top) = (50.0, 22.0, 64.0, 84.0);
    let w = (left + cw * cols.len() as f64 + 24.0).max(600.0);
    let h = top + ch * rows.len() as f64 + 44.0;
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="11" role="img">"#);
    for (j, c) in cols.iter().enumerate() {
        let x = left + cw * j as f64 + cw / 2.0;
        let _ = write!(s, r#"<text x="{x:.1}" y="{:.1}" transform="rotate(-40 {x:.1} {:.1})">{}</text>"#, top - 6.0, top - 6.0, esc(c));
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + ch * i as f64;
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, left - 6.0, y + ch * 0.68, esc(r));
        for (j, c) in cols.iter().enumerate() {
            let x = left + cw * j as f64;
            let c_ij = cell(i, j);
            let (fill, label, tip) = match c_ij {
                Cell::Value(e, pass) => (heat(e), short(e), format!("{r} {c}: {what} {}{}", num(e), if pass { "" } else { "; a gate fails here" })),
                Cell::Verdict(true) => ("#abd9e9", "ok".to_string(), format!("{r} {c}: holds")),
                Cell::Verdict(false) => ("#a50026", "fail".to_string(), format!("{r} {c}: fails")),
                Cell::Empty => ("#f2f2f2", String::new(), format!("{r} {c}: not compared")),
            };
            let _ = write!(s, r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}"><title>{}</title></rect>"#, cw - 2.0, ch - 2.0, esc(&tip));
            // A stage can fail on another metric while this one looks fine (a pure
            // rescaling keeps the cosine at 1): a red corner says so.
            if matches!(c_ij, Cell::Value(_, false)) {
                let _ = write!(s, r##"<path d="M{:.1} {y:.1}h-12l12 12z" fill="#d7191c" stroke="#fff" stroke-width="1"/>"##, x + cw - 2.0);
            }
            if !label.is_empty() {
                let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="{}">{}</text>"#, x + cw / 2.0 - 1.0, y + ch * 0.66, ink(fill), esc(&label));
            }
        }
    }
    if let Some((i, j)) = outline.filter(|&(i, j)| i < rows.len() && j < cols.len()) {
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#000" stroke-width="3"/>"##,
            left + cw * j as f64 - 1.5,
            top + ch * i as f64 - 1.5,
            cw + 1.0,
            ch + 1.0
        );
    }
    legend(&mut s, left, top + ch * rows.len() as f64 + 14.0, outline.is_some());
    s.push_str("</svg>");
    s
}

/// Two-character-ish exponent label for a cell: `-7` for 1e-7, `0` for ~1.
fn short(e: f64) -> String {
    if e.is_nan() {
        "NaN".into()
    } else if e <= FLOOR {
        "≤-16".into()
    } else {
        format!("{:.0}", e.log10().floor().min(9.0))
    }
}

fn legend(s: &mut String, x0: f64, y: f64, outlined: bool) {
    let _ = write!(s, r#"<text x="{x0:.1}" y="{:.1}">log10:</text>"#, y + 10.0);
    for (k, e) in [1e-16, 1e-12, 1e-8, 1e-4, 1.0].iter().enumerate() {
        let x = x0 + 44.0 + 58.0 * k as f64;
        let _ = write!(s, r#"<rect x="{x:.1}" y="{y:.1}" width="14" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#, heat(*e), x + 18.0, y + 10.0, short(*e));
    }
    let x = x0 + 44.0 + 58.0 * 5.0;
    let _ = write!(s, r##"<path d="M{:.1} {y:.1}h-12l12 12z" fill="#d7191c"/><text x="{:.1}" y="{:.1}">a gate fails</text>"##, x + 14.0, x + 18.0, y + 10.0);
    if outlined {
        let x = x + 100.0;
        let _ = write!(s, r##"<rect x="{x:.1}" y="{y:.1}" width="14" height="12" fill="none" stroke="#000" stroke-width="2"/><text x="{:.1}" y="{:.1}">first divergence</text>"##, x + 18.0, y + 10.0);
    }
}

/// One series of a line chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub dashed: bool,
    pub values: Vec<Option<f64>>,
}

/// A vertical marker at an x index (a batch boundary), with a label.
pub struct Mark {
    pub at: f64,
    pub label: String,
}

/// Log-y axis bounds covering every finite positive value (at least one decade).
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        let l = v.max(FLOOR).log10();
        lo = lo.min(l);
        hi = hi.max(l);
    }
    if !lo.is_finite() {
        return (-16.0, 0.0);
    }
    let (lo, hi) = (lo.floor(), hi.ceil());
    (lo, if hi > lo { hi } else { lo + 1.0 })
}

/// Line chart on a log y axis; x is the index into `labels`. Points are drawn as
/// dots so a single layer (or a gap between NaNs) is still visible.
pub fn lines(labels: &[String], series: &[Series], marks: &[Mark], y_label: &str) -> String {
    if labels.is_empty() || series.iter().all(|s| s.values.iter().all(|v| v.is_none_or(|v| !v.is_finite()))) {
        return "<p class=\"muted\">no values to draw</p>".into();
    }
    // Marker labels get their own band above the plot, so they never cover data.
    let band = if marks.iter().any(|m| !m.label.is_empty()) { 36.0 } else { 0.0 };
    let (w, h, left, right, top, bottom) = (720.0, 280.0 + band, 64.0, 16.0, 16.0 + band, 64.0);
    let n = labels.len();
    let x = |i: f64| if n == 1 { (left + w - right) / 2.0 } else { left + (w - left - right) * i / (n - 1) as f64 };
    let (lo, hi) = log_range(series.iter().flat_map(|s| s.values.iter().flatten().copied()));
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (v.max(FLOOR).log10() - lo) / (hi - lo));
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="11" role="img">"#);
    // Decade grid: every decade when few, else every few so labels never collide.
    let step = ((hi - lo) / 8.0).ceil().max(1.0);
    // Decades counted down from the top, so the highest value always has a label.
    let mut e = hi;
    while e >= lo - 1e-9 {
        let yy = y(10f64.powf(e));
        let _ = write!(s, r##"<line x1="{left:.1}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">1e{e:.0}</text>"##, w - right, left - 4.0, yy + 4.0);
        e -= step;
    }
    let _ = write!(
        s,
        r##"<line x1="{left:.1}" y1="{top:.1}" x2="{left:.1}" y2="{:.1}" stroke="#888"/><line x1="{left:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888"/>"##,
        h - bottom,
        h - bottom,
        w - right,
        h - bottom
    );
    // At most ~14 x labels: roughly 45 px each on a 640 px axis.
    let every = n.div_ceil(14).max(1);
    for (i, l) in labels.iter().enumerate().filter(|(i, _)| i % every == 0 || *i + 1 == n) {
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, x(i as f64), h - bottom + 15.0, esc(l));
    }
    // Labels stagger over three lines and are dropped when they would still
    // collide (many decode steps): about 6 px per character at 10 px.
    let mut ends = [f64::NEG_INFINITY; 3];
    for m in marks {
        let xm = x(m.at);
        let _ = write!(s, r##"<line x1="{xm:.1}" y1="{:.1}" x2="{xm:.1}" y2="{:.1}" stroke="#666" stroke-dasharray="4 3"/>"##, top - band + 2.0, h - bottom);
        let width = 6.0 * m.label.chars().count() as f64;
        if let Some(k) = (0..ends.len()).find(|&k| ends[k] + 4.0 <= xm + 3.0).filter(|_| width > 0.0) {
            ends[k] = xm + 3.0 + width;
            // Near the right edge the label goes to the left of its line.
            let (lx, anchor) = if xm + 3.0 + width > w - right { (xm - 3.0, "end") } else { (xm + 3.0, "start") };
            let _ = write!(s, r##"<text x="{lx:.1}" y="{:.1}" font-size="10" fill="#444" text-anchor="{anchor}">{}</text>"##, top - band + 10.0 + 11.0 * k as f64, esc(&m.label));
        }
    }
    for (k, sr) in series.iter().enumerate() {
        let dash = if sr.dashed { r#" stroke-dasharray="6 4""# } else { "" };
        // A NaN breaks the line rather than joining its neighbours across it.
        let mut runs: Vec<Vec<String>> = vec![Vec::new()];
        for (i, v) in sr.values.iter().enumerate() {
            match v.filter(|v| v.is_finite()) {
                Some(v) => {
                    let p = format!("{:.1},{:.1}", x(i as f64), y(v));
                    if !sr.dashed {
                        let _ = write!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{} {}: {}</title></circle>"#, x(i as f64), y(v), sr.colour, esc(sr.name), esc(&labels[i]), num(v));
                    }
                    if let Some(r) = runs.last_mut() {
                        r.push(p);
                    }
                }
                None => runs.push(Vec::new()),
            }
        }
        for r in runs.iter().filter(|r| r.len() > 1) {
            let _ = write!(s, r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#, sr.colour, r.join(" "));
        }
        let lx = left + 200.0 * k as f64;
        let _ = write!(
            s,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            h - 18.0,
            lx + 18.0,
            h - 18.0,
            sr.colour,
            lx + 22.0,
            h - 14.0,
            esc(sr.name)
        );
    }
    let _ = write!(s, r#"<text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text></svg>"#, (top + h - bottom) / 2.0, (top + h - bottom) / 2.0, esc(y_label));
    s
}

/// Vertical bars on a log y axis (one per head), value printed above each bar.
pub fn bars(labels: &[String], values: &[f64], y_label: &str) -> String {
    if labels.is_empty() || values.iter().all(|v| !v.is_finite()) {
        return "<p class=\"muted\">no values to draw</p>".into();
    }
    let bw = (600.0 / labels.len() as f64).clamp(8.0, 56.0);
    let (left, top, bottom) = (64.0, 20.0, 36.0);
    let w = (left + bw * labels.len() as f64 + 16.0).max(320.0);
    let h = 220.0;
    let (lo, hi) = log_range(values.iter().copied());
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (v.max(FLOOR).log10() - lo) / (hi - lo));
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="11" role="img">"#);
    let step = ((hi - lo) / 6.0).ceil().max(1.0);
    // Decades counted down from the top, so the highest value always has a label.
    let mut e = hi;
    while e >= lo - 1e-9 {
        let yy = y(10f64.powf(e));
        let _ = write!(s, r##"<line x1="{left:.1}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">1e{e:.0}</text>"##, w - 8.0, left - 4.0, yy + 4.0);
        e -= step;
    }
    let base = h - bottom;
    let every = labels.len().div_ceil(32).max(1);
    for (i, (l, &v)) in labels.iter().zip(values).enumerate() {
        let x = left + bw * i as f64;
        if v.is_finite() {
            let top_y = y(v).min(base - 1.0);
            let _ = write!(s, r#"<rect x="{:.1}" y="{top_y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{l}: {}</title></rect>"#, x + 1.0, bw - 2.0, base - top_y, heat(v), num(v));
            if bw >= 40.0 {
                let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#, x + bw / 2.0, top_y - 3.0, num(v));
            }
        } else {
            let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">NaN</text>"#, x + bw / 2.0, base - 4.0);
        }
        if i % every == 0 {
            let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, x + bw / 2.0, base + 14.0, esc(l));
        }
    }
    let _ = write!(s, r##"<line x1="{left:.1}" y1="{base:.1}" x2="{:.1}" y2="{base:.1}" stroke="#888"/>"##, w - 8.0);
    let _ = write!(s, r#"<text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text></svg>"#, (top + base) / 2.0, (top + base) / 2.0, esc(y_label));
    s
}

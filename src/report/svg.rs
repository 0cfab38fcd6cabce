//! Small hand-written SVG charts: deterministic text (fixed number formatting,
//! no timestamps), so reports can be snapshot-tested.

use std::fmt::Write;

/// Colour for an error on a log scale: 1e-12 (green) .. 1 (red); NaN grey.
pub fn heat(err: f64) -> String {
    if !err.is_finite() {
        return "#cccccc".into();
    }
    let t = ((err.max(1e-12).log10() + 12.0) / 12.0).clamp(0.0, 1.0);
    let (r, g) = if t < 0.5 { ((t * 2.0 * 255.0) as u8, 190u8) } else { (255u8, ((1.0 - t) * 2.0 * 190.0) as u8) };
    format!("#{r:02x}{g:02x}40")
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A layer × stage grid of `1 - cos` cells; `outline` marks one cell.
pub fn heatmap(rows: &[String], cols: &[String], cell: impl Fn(usize, usize) -> Option<f64>, outline: Option<(usize, usize)>) -> String {
    let (cw, ch, left, top) = (56.0, 22.0, 90.0, 70.0);
    let w = left + cw * cols.len() as f64 + 10.0;
    let h = top + ch * rows.len() as f64 + 40.0;
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" font-family="sans-serif" font-size="11">"#);
    for (j, c) in cols.iter().enumerate() {
        let x = left + cw * j as f64 + cw / 2.0;
        let _ = write!(s, r#"<text x="{x:.1}" y="{:.1}" transform="rotate(-45 {x:.1} {:.1})">{}</text>"#, top - 6.0, top - 6.0, esc(c));
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + ch * i as f64;
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, left - 6.0, y + ch * 0.7, esc(r));
        for j in 0..cols.len() {
            let x = left + cw * j as f64;
            match cell(i, j) {
                Some(e) => {
                    let _ = write!(s, r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: 1-cos {e:.2e}</title></rect>"#, cw - 2.0, ch - 2.0, heat(e), esc(r), esc(&cols[j]));
                }
                None => {
                    let _ = write!(s, r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="#f4f4f4"/>"##, cw - 2.0, ch - 2.0);
                }
            }
        }
    }
    if let Some((i, j)) = outline {
        let _ = write!(s, r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#000" stroke-width="3"/>"##, left + cw * j as f64 - 1.0, top + ch * i as f64 - 1.0, cw, ch);
    }
    let ly = top + ch * rows.len() as f64 + 14.0;
    for (k, e) in [1e-12, 1e-9, 1e-6, 1e-3, 1.0].iter().enumerate() {
        let x = left + 80.0 * k as f64;
        let _ = write!(s, r#"<rect x="{x:.1}" y="{ly:.1}" width="14" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{e:.0e}</text>"#, heat(*e), x + 18.0, ly + 10.0);
    }
    s.push_str("</svg>");
    s
}

/// Line chart of one or more series on a log y axis (values are errors > 0).
pub fn lines(labels: &[String], series: &[(&str, &str, Vec<Option<f64>>)], marks: &[usize], y_label: &str) -> String {
    let (w, h, left, bottom, top) = (640.0, 260.0, 60.0, 50.0, 20.0);
    let n = labels.len().max(2);
    let x = |i: usize| left + (w - left - 20.0) * i as f64 / (n - 1) as f64;
    let all: Vec<f64> = series.iter().flat_map(|s| s.2.iter().flatten().copied()).filter(|v| v.is_finite() && *v > 0.0).collect();
    let lo = all.iter().cloned().fold(1e-3, f64::min).max(1e-16).log10().floor();
    let hi = all.iter().cloned().fold(1e-12, f64::max).log10().ceil().max(lo + 1.0);
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (v.max(1e-16).log10() - lo) / (hi - lo));
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" font-family="sans-serif" font-size="11">"#);
    let _ = write!(s, r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="#888"/><line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888"/>"##, h - bottom, h - bottom, w - 20.0, h - bottom);
    let mut e = lo;
    while e <= hi {
        let yy = y(10f64.powf(e));
        let _ = write!(s, r##"<text x="{:.1}" y="{:.1}" text-anchor="end">1e{e:.0}</text><line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eee"/>"##, left - 4.0, yy + 4.0, w - 20.0);
        e += 2.0;
    }
    let step = (labels.len() / 12).max(1);
    for (i, l) in labels.iter().enumerate().step_by(step) {
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, x(i), h - bottom + 16.0, esc(l));
    }
    for &m in marks {
        let _ = write!(s, r##"<line x1="{:.1}" y1="{top}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="4 3"/>"##, x(m), x(m), h - bottom);
    }
    for (k, (name, colour, vals)) in series.iter().enumerate() {
        let pts: Vec<String> = vals.iter().enumerate().filter_map(|(i, v)| v.filter(|v| v.is_finite()).map(|v| format!("{:.1},{:.1}", x(i), y(v)))).collect();
        let _ = write!(s, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#, pts.join(" "));
        let _ = write!(s, r#"<rect x="{:.1}" y="{:.1}" width="12" height="3" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#, left + 10.0 + 160.0 * k as f64, h - 14.0, left + 26.0 + 160.0 * k as f64, h - 10.0, esc(name));
    }
    let _ = write!(s, r#"<text x="12" y="{:.1}" transform="rotate(-90 12 {:.1})">{}</text></svg>"#, h / 2.0, h / 2.0, esc(y_label));
    s
}

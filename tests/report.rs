//! Reports as a user sees them: the markdown against a blessed snapshot
//! (PARITY_BLESS=1 rewrites it, never silently), and the HTML rendered by
//! headless Chromium: every section present, and a screenshot that is not blank.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use parity::report::svg::{self, Cell, Series};
use parity::report::{self, HeatMetric, Meta};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn contracts() -> Vec<PathBuf> {
    vec![root().join("contracts/examples/mutants/norm-rope.yaml"), root().join("contracts/examples/qwen3-1layer-engine-f32.yaml")]
}

const SECTIONS: [&str; 8] = ["verdict", "gates", "heatmap", "growth", "heads", "positions", "diagnosis", "provenance"];

fn meta() -> Meta {
    // A fixed date: the only time-dependent text, and only in provenance.
    Meta { command: "parity report (test)".into(), date: "2026-01-01 00:00 UTC".into(), heat: HeatMetric::CosineDistance }
}

fn render(dir: &Path) {
    let entries = report::build(&contracts());
    report::write(&entries, dir, &meta()).unwrap();
}

/// A temp folder, removed when the guard drops.
fn tmp(tag: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("parity-report-{tag}-")).tempdir().expect("a scratch folder under the system temporary directory")
}

#[test]
fn markdown_matches_the_blessed_snapshot() {
    let dir_tmp = tmp("md");
    let dir = dir_tmp.path();
    render(dir);
    let got = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    let snap = root().join("tests/snapshots/report-summary.md");
    if std::env::var_os("PARITY_BLESS").is_some() {
        std::fs::write(&snap, &got).unwrap();
    }
    let want = std::fs::read_to_string(&snap).expect("no snapshot: run with PARITY_BLESS=1 to create it");
    assert_eq!(got, want, "summary.md changed; inspect it and re-bless with PARITY_BLESS=1 if intended");
    assert!(got.contains("NEOX pairing (i, i+d/2) reproduces the reference"));
}

#[test]
fn html_is_self_contained_and_has_every_section() {
    let dir_tmp = tmp("html");
    let dir = dir_tmp.path();
    render(dir);
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    for id in SECTIONS {
        assert!(html.contains(&format!("id=\"{id}\"")), "section {id} missing");
    }
    // The second contract's sections exist too, under suffixed ids.
    assert!(html.contains("id=\"heatmap-2\""));
    // Charts are deterministic: a second render is byte-identical.
    let again_tmp = tmp("html-again");
    let again = again_tmp.path();
    render(again);
    assert_eq!(html, std::fs::read_to_string(again.join("index.html")).unwrap(), "index.html differs between two renders");
    for banned in ["<script", "http://", "https://", "@import", "url("] {
        let n = html.matches(banned).count() - html.matches("http://www.w3.org/2000/svg").count() * usize::from(banned == "http://");
        assert_eq!(n, 0, "the page must not load {banned}");
    }
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.exists())
}

fn chrome(args: &[&str], page: &Path, profile: &Path) -> std::process::Output {
    Command::new(chromium().unwrap())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap()
}

/// Decodes an RGB(A) screenshot and returns (non-white fraction, distinct colours).
fn pixel_stats(png_path: &Path) -> (f64, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "unexpected screenshot colour type {:?}", info.color_type);
    let px = &buf[..info.buffer_size()];
    let mut colours = std::collections::BTreeSet::new();
    let mut ink = 0usize;
    let n = px.len() / channels;
    for p in px.chunks(channels) {
        if p[..3].iter().any(|&c| c < 245) {
            ink += 1;
        }
        colours.insert((p[0] >> 3, p[1] >> 3, p[2] >> 3));
    }
    (ink as f64 / n.max(1) as f64, colours.len())
}

#[test]
fn chromium_renders_every_section_and_a_non_blank_page() {
    if chromium().is_none() {
        println!("SKIPPED: chromium is not installed at /usr/bin/chromium (apt-get install -y chromium; .ci/run installs it)");
        return;
    }
    let dir_tmp = tmp("chromium");
    let dir = dir_tmp.path();
    render(dir);
    let page = dir.join("index.html");
    let dom = chrome(&["--dump-dom"], &page, &dir.join("profile1"));
    let dom = String::from_utf8_lossy(&dom.stdout);
    for id in SECTIONS {
        assert!(dom.contains(&format!("id=\"{id}\"")), "rendered DOM lacks section {id}");
    }
    assert!(dom.contains("<svg"), "rendered DOM has no chart");
    let shot = dir.join("shot.png");
    chrome(&[&format!("--screenshot={}", shot.display()), "--window-size=1280,2000"], &page, &dir.join("profile2"));
    let bytes = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // A blank page is all white; this one has tables, a heatmap and line charts.
    let (ink, colours) = pixel_stats(&shot);
    assert!(ink > 0.05, "screenshot looks blank: {:.1}% non-white pixels", ink * 100.0);
    assert!(ink < 0.9, "screenshot is mostly ink ({:.1}%): a broken stylesheet?", ink * 100.0);
    assert!(colours > 24, "screenshot has only {colours} colours: charts missing?");
}

#[test]
fn odd_data_never_panics_and_stays_valid_svg() {
    let nan = f64::NAN;
    let labels: Vec<String> = ["embed", "L0", "final"].iter().map(|s| s.to_string()).collect();
    for chart in [
        svg::lines(&labels, &[Series { name: "a", colour: "#000", dashed: false, values: vec![Some(nan), Some(0.0), None] }], &[], "y"),
        svg::lines(&labels, &[Series { name: "a", colour: "#000", dashed: false, values: vec![Some(f64::INFINITY), Some(1e-30), Some(2.0)] }], &[], "y"),
        svg::lines(&[], &[], &[], "y"),
        svg::bars(&labels, &[nan, 0.0, 1e300], "y"),
        svg::bars(&[], &[], "y"),
        svg::heatmap(&labels, &labels, |i, j| if i == j { Cell::Value(nan, false) } else { Cell::Empty }, Some((9, 9)), "1 - cos"),
        svg::heatmap(&[], &[], |_, _| Cell::Empty, None, "1 - cos"),
    ] {
        assert!(!chart.contains("NaN,") && !chart.contains("inf,") && !chart.contains("=\"NaN\""), "non-finite coordinate in {chart}");
        assert_eq!(chart.matches("<svg").count(), chart.matches("</svg>").count());
    }
    assert_eq!(report::num(nan), "NaN");
    assert_eq!(report::num(0.99999), "1.000");
    assert_eq!(report::margin(f64::INFINITY), "n/a");
}

#[test]
fn a_contract_that_cannot_be_checked_still_gets_every_section() {
    let dir_tmp = tmp("error");
    let dir = dir_tmp.path();
    let entries = report::build(&[root().join("tests/data/report/missing-contract.yaml")]);
    report::write(&entries, dir, &meta()).unwrap();
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    for id in SECTIONS {
        assert!(html.contains(&format!("id=\"{id}\"")), "section {id} missing");
    }
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("⚠️"), "{md}");
}

#[test]
fn reports_refuse_reference_folders() {
    let entries = report::build(&[]);
    assert!(report::write(&entries, &std::env::temp_dir().join("x/reference/y"), &meta()).is_err());
}

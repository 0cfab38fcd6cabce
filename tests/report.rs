//! Reports as a user sees them: the markdown against a blessed snapshot
//! (PARITY_BLESS=1 rewrites it, never silently), and the HTML rendered by
//! headless Chromium: every section present, and a screenshot that is not blank.

use std::path::{Path, PathBuf};
use std::process::Command;

use parity::report::{self, Meta};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn contracts() -> Vec<PathBuf> {
    vec![root().join("contracts/examples/mutants/norm-rope.yaml"), root().join("contracts/examples/qwen3-1layer-engine-f32.yaml")]
}

fn render(dir: &Path) {
    let entries = report::build(&contracts());
    let meta = Meta { command: "parity report (test)".into(), date: "2026-01-01 00:00 UTC".into() };
    report::write(&entries, dir, &meta).unwrap();
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("parity-report-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn markdown_matches_the_blessed_snapshot() {
    let dir = tmp("md");
    render(&dir);
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
    let dir = tmp("html");
    render(&dir);
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    for id in ["verdict", "gates", "heatmap", "growth", "heads", "positions", "diagnosis", "provenance"] {
        assert!(html.contains(&format!("id=\"{id}\"")), "section {id} missing");
    }
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

#[test]
fn chromium_renders_every_section_and_a_non_blank_page() {
    if chromium().is_none() {
        println!("SKIPPED: chromium is not installed (apt-get install chromium; .ci/run installs it)");
        return;
    }
    let dir = tmp("chromium");
    render(&dir);
    let page = dir.join("index.html");
    let dom = chrome(&["--dump-dom"], &page, &dir.join("profile1"));
    let dom = String::from_utf8_lossy(&dom.stdout);
    for id in ["verdict", "gates", "heatmap", "growth", "heads", "positions", "diagnosis", "provenance"] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "rendered DOM lacks section {id}");
    }
    let shot = dir.join("shot.png");
    chrome(&[&format!("--screenshot={}", shot.display()), "--window-size=1200,1600"], &page, &dir.join("profile2"));
    let bytes = std::fs::read(&shot).expect("chromium wrote no screenshot");
    // A blank white 1200x1600 PNG compresses to a few KB; this page has charts and tables.
    assert!(bytes.len() > 40_000, "screenshot looks blank ({} bytes)", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

//! Text for people and machines from check and diff results: a terminal table,
//! JSON (the result types as they are), JUnit XML for CI, and markdown for CI
//! summaries. Nothing here computes a metric.

use std::time::Duration;

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::harness::diff::DiffReport;
use crate::harness::result::{ContractResult, Verdict};
use crate::harness::run::num;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Junit,
    Markdown,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Format, String> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "junit" => Ok(Format::Junit),
            "markdown" | "md" => Ok(Format::Markdown),
            _ => Err(format!("unknown format {s:?}: use table, json, junit or markdown")),
        }
    }
}

/// `uses 37% of its gate`, as a short cell.
fn usage(u: f64) -> String {
    if !u.is_finite() {
        "∞".into()
    } else if u > 0.0 && u < 0.01 {
        format!("{:.1e}%", u * 100.0)
    } else if u < 10.0 {
        format!("{:.0}%", u * 100.0)
    } else if u < 1e5 {
        format!("{u:.0}×")
    } else {
        format!("{u:.1e}×")
    }
}

struct Line {
    id: String,
    verdict: &'static str,
    checked: String,
    skipped: String,
    worst: String,
    margin: String,
}

fn line(r: &ContractResult) -> Line {
    let cmp = r.comparison.as_ref();
    let worst = cmp.and_then(|c| c.worst.as_ref());
    Line {
        id: r.id.clone(),
        verdict: r.verdict.label(),
        checked: cmp.map_or("-".into(), |c| c.stages.len().to_string()),
        skipped: cmp.map_or("-".into(), |c| c.skipped.len().to_string()),
        worst: worst.map_or("-".into(), |w| format!("{} {} {} (gate {})", w.stage, w.metric.name(), num(w.value), num(w.threshold))),
        margin: worst.map_or("-".into(), |w| usage(w.usage)),
    }
}

const HEADER: [&str; 6] = ["contract", "verdict", "stages checked", "skipped", "worst stage (value, gate)", "gate used"];

fn summary(results: &[ContractResult]) -> String {
    let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
    format!("{} contracts: {} pass, {} expected-fail holds, {} FAIL, {} error", results.len(), count(Verdict::Pass), count(Verdict::ExpectedFailHolds), count(Verdict::Fail), count(Verdict::Error))
}

#[derive(Serialize)]
struct JsonCheck<'a> {
    summary: String,
    exit_code: i32,
    results: &'a [ContractResult],
}

pub fn check(results: &[ContractResult], format: Format) -> Result<String> {
    match format {
        Format::Table => {
            let mut t = Table::new();
            t.load_style(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(HEADER);
            for r in results {
                let l = line(r);
                t.add_row([l.id, l.verdict.into(), l.checked, l.skipped, l.worst, l.margin]);
            }
            let mut out = format!("{t}\n");
            for r in results.iter().filter(|r| !r.message.is_empty()) {
                out.push_str(&format!("\n{} [{}] {}\n{}\n", r.id, r.verdict.label(), r.file.display(), indent(&r.message)));
            }
            out.push_str(&format!("\n{}\n", summary(results)));
            Ok(out)
        }
        Format::Json => {
            let j = JsonCheck { summary: summary(results), exit_code: crate::harness::run::exit_code(results), results };
            serde_json::to_string_pretty(&j).map_err(|e| Error::Usage(format!("JSON output: {e}")))
        }
        Format::Junit => {
            let mut suite = TestSuite::new("parity check");
            for r in results {
                let status = match r.verdict {
                    Verdict::Pass | Verdict::ExpectedFailHolds => TestCaseStatus::success(),
                    Verdict::Fail | Verdict::Error => {
                        let kind = if r.verdict == Verdict::Fail { NonSuccessKind::Failure } else { NonSuccessKind::Error };
                        let mut s = TestCaseStatus::non_success(kind);
                        s.set_message(r.message.lines().next().unwrap_or("")).set_description(r.message.clone());
                        s
                    }
                };
                let mut case = TestCase::new(r.id.clone(), status);
                case.set_classname(r.file.display().to_string()).set_time(Duration::from_secs_f64(r.seconds));
                if r.verdict == Verdict::ExpectedFailHolds {
                    case.set_system_out(r.message.clone());
                }
                suite.add_test_case(case);
            }
            let mut report = Report::new("parity");
            report.add_test_suite(suite);
            report.to_string().map_err(|e| Error::Usage(format!("JUnit output: {e}")))
        }
        Format::Markdown => {
            let mut out = format!("| {} |\n|{}\n", HEADER.join(" | "), "---|".repeat(HEADER.len()));
            for r in results {
                let l = line(r);
                let verdict = if r.verdict.holds() { l.verdict.to_string() } else { format!("**{}**", l.verdict) };
                out.push_str(&format!("| `{}` | {verdict} | {} | {} | {} | {} |\n", l.id, l.checked, l.skipped, md(&l.worst), l.margin));
            }
            for r in results.iter().filter(|r| !r.message.is_empty()) {
                out.push_str(&format!("\n<details><summary><code>{}</code>: {}</summary>\n\n```\n{}\n```\n</details>\n", r.id, r.verdict.label(), r.message));
            }
            out.push_str(&format!("\n{}\n", summary(results)));
            Ok(out)
        }
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

fn md(s: &str) -> String {
    s.replace('|', "\\|")
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), num)
}

pub fn diff(d: &DiffReport, format: Format) -> Result<String> {
    const H: [&str; 6] = ["stage", "rows", "min cosine", "max nmse", "max_abs", "worst row"];
    let cells = |r: &crate::harness::diff::DiffRow| -> [String; 6] {
        let worst = match &r.problem {
            Some(p) => p.clone(),
            None => r.worst_row.map_or("-".into(), |w| w.to_string()),
        };
        [r.stage.clone(), r.rows.to_string(), opt(r.min_cosine), opt(r.max_nmse), opt(r.max_abs), worst]
    };
    let notes = || {
        let mut out = String::new();
        for f in &d.comparison.findings {
            out.push_str(&format!("{}: {}\n", f.stage.as_deref().unwrap_or("trace"), f.message));
        }
        for s in &d.comparison.skipped {
            out.push_str(&format!("skipped {}: {}\n", s.stage, s.reason));
        }
        out
    };
    match format {
        Format::Table => {
            let mut t = Table::new();
            t.load_style(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(H);
            for r in &d.rows {
                t.add_row(cells(r));
            }
            Ok(format!("A = {} (subject)\nB = {} (reference)\n{t}\n{}", d.a, d.b, notes()))
        }
        Format::Json => serde_json::to_string_pretty(d).map_err(|e| Error::Usage(format!("JSON output: {e}"))),
        Format::Markdown => {
            let mut out = format!("A = `{}`, B = `{}` (reference)\n\n| {} |\n|{}\n", d.a, d.b, H.join(" | "), "---|".repeat(H.len()));
            for r in &d.rows {
                out.push_str(&format!("| {} |\n", cells(r).map(|c| md(&c)).join(" | ")));
            }
            Ok(format!("{out}\n{}", notes()))
        }
        Format::Junit => Err(Error::Usage("--format junit is for `parity check`; use table, json or markdown".into())),
    }
}

fn cos_cell(c: Option<f64>, pass: Option<bool>) -> String {
    match (c, pass) {
        (Some(c), Some(p)) => format!("{c:.6}{}", if p { "" } else { "  ✗" }),
        (None, Some(p)) => (if p { "ok" } else { "✗" }).to_string(),
        _ => "-".into(),
    }
}

/// `parity bisect`: the verdict sentence, the diagnosis ranking and, per stage,
/// the cumulative and isolated views side by side.
pub fn bisect(b: &crate::harness::bisect::Bisect, format: Format) -> Result<String> {
    if format == Format::Json {
        return serde_json::to_string_pretty(b).map(|s| s + "\n").map_err(|e| crate::error::Error::mismatch(e.to_string()));
    }
    let mut out = format!("{}\n\nsubject:   {}\nreference: {}\n", b.summary, b.subject, b.reference.display());
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(["stage", "cumulative cos", "isolated cos"]);
    for s in &b.stages {
        let mark = if b.first.as_ref().is_some_and(|d| d.stage == s.stage) {
            " ◀ first"
        } else if b.isolated_first.as_deref() == Some(&s.stage) {
            " ◀ isolated"
        } else {
            ""
        };
        t.add_row([format!("{}{mark}", s.stage), cos_cell(s.cumulative_cos, s.cumulative_pass), cos_cell(s.isolated_cos, s.isolated_pass)]);
    }
    out.push_str(&format!("\n{t}\n"));
    if let Some(d) = &b.diagnosis {
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(["convention at ".to_string() + &d.stage, "vs reference (cos / nmse)".into(), "vs subject (cos / nmse)".into()]);
        let sc = |s: Option<crate::harness::diagnose::Score>| s.map_or("-".to_string(), |s| format!("{:.6} / {:.2e}", s.cosine, s.nmse));
        for c in &d.candidates {
            t.add_row([format!("{}{}", c.label, if c.is_base { " (base)" } else { "" }), sc(c.vs_reference), sc(c.vs_subject)]);
        }
        out.push_str(&format!("\ndiagnosis, best first\n{t}\n"));
    }
    if let Some(r) = &b.repro {
        out.push_str(&format!("\nrepro: {} (re-check: sh {}/command.sh)\n", r.display(), r.display()));
    }
    if format == Format::Markdown {
        return Ok(format!("```\n{out}```\n"));
    }
    Ok(out)
}

pub fn bisect_pair(b: &crate::harness::bisect::PairBisect, format: Format) -> Result<String> {
    if format == Format::Json {
        return serde_json::to_string_pretty(b).map(|s| s + "\n").map_err(|e| crate::error::Error::mismatch(e.to_string()));
    }
    Ok(format!("{}\n", b.summary))
}

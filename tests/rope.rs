//! RoPE against golden vectors computed by the real libraries — transformers'
//! own code (scripts/rope_golden.py) and ggml's CPU kernel
//! (scripts/rope_golden_ggml.c) — and the equivalences that must hold between
//! conventions (CONVENTIONS §1.8).
//!
//! Tolerances. Both sides rotate in f32, so an output differs from the reference
//! by (a) the rounding of cos/sin and of the rotation, a few ulps of the
//! inputs (randn, |x| up to ~4, ulp 4.8e-7; observed at most 2.4e-7): 2e-6
//! absolute; and (b) the angle's error, which grows with the position. Pair 0
//! turns at exactly 1 rad/token everywhere; pair k >= 1 at omega <= theta^(-2/hd)
//! (< 0.8 here), and two implementations' f32 frequencies differ by an ulp or
//! two (torch's pow against libm's, llama3/dynamic NTK intermediates), so the
//! angles differ by ~1e-7 omega p rad: bound `2e-6 + 1.2e-7 p` against
//! transformers (worst observed: 45% of it, dynamic NTK at position 5000), and
//! `2e-6 + 2.4e-7 p` for our transformers arithmetic against ggml's iterated
//! theta (k roundings at pair k). At p = 30000 the f32 angle itself (~3e4 rad)
//! is only known to ~2e-3 rad, so no two implementations agree more closely
//! there. In its own arithmetic (FreqStyle::Ggml) we reproduce ggml bit for bit
//! on this machine (bound: 2 ulps, for other libms).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parity::engine::rope::{detect_pairing, fit_theta, FreqStyle, Rope, GGML_UNROTATED_FREQ_FACTOR};
use parity::formats::config::*;
use parity::formats::npy::{self, NpyData};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rope").join(p)
}

fn load(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = npy::read(p, None).unwrap();
    let NpyData::F32(v) = a.data else { panic!("{} is not f32", p.display()) };
    (a.shape, v)
}

fn d<T>(v: T) -> Sourced<T> {
    Sourced::derived(v, "test")
}

fn config(theta: f64, rd: usize, pairing: Pairing, layout: PartialLayout, scaling: RopeScaling) -> RopeConfig {
    RopeConfig { theta: d(theta), pairing: d(pairing), rotary_dim: d(rd), partial_layout: d(layout), scaling: d(scaling), mrope: None }
}

fn neox(theta: f64, hd: usize) -> RopeConfig {
    config(theta, hd, Pairing::HalfSplit, PartialLayout::LeadingBlock, RopeScaling::None)
}

fn text(ps: &[i64]) -> Vec<[i64; 4]> {
    ps.iter().map(|&p| [p, p, p, 0]).collect()
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn rotated(rope: &Rope, x: &[f32], heads: usize, pos: &[[i64; 4]]) -> Vec<f32> {
    let mut y = x.to_vec();
    rope.apply(&mut y, heads, pos);
    y
}

/// transformers' rope_parameters (a yaml mapping) as our RopeScaling.
fn scaling_of(p: &serde_yaml::Value, max_position: Option<f64>) -> RopeScaling {
    let f = |k: &str| p.get(k).and_then(|v| v.as_f64());
    let need = |k: &str| f(k).unwrap_or_else(|| panic!("rope_parameters.{k}"));
    match p.get("rope_type").and_then(|v| v.as_str()).unwrap() {
        "default" | "proportional" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: need("factor") },
        "dynamic" => RopeScaling::Dynamic { factor: need("factor"), max_position: max_position.unwrap() },
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor"),
            low_freq_factor: need("low_freq_factor"),
            high_freq_factor: need("high_freq_factor"),
            original_max_position: need("original_max_position_embeddings"),
        },
        "yarn" => RopeScaling::Yarn {
            factor: need("factor"),
            original_max_position: need("original_max_position_embeddings"),
            beta_fast: f("beta_fast").unwrap_or(32.0),
            beta_slow: f("beta_slow").unwrap_or(1.0),
            attention_factor: f("attention_factor"),
            mscale: f("mscale"),
            mscale_all_dim: f("mscale_all_dim"),
            truncate: p.get("truncate").and_then(|v| v.as_bool()).unwrap_or(true),
        },
        other => panic!("no case for {other}"),
    }
}

/// Max |ours - reference| per row, checked against `bound(row)`.
fn assert_rows(name: &str, got: &[f32], want: &[f32], row: usize, bound: impl Fn(usize) -> f32) {
    for (t, (a, b)) in got.chunks(row).zip(want.chunks(row)).enumerate() {
        let err = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(err <= bound(t), "{name} row {t}: max |ours - reference| = {err:e} > {:e}", bound(t));
    }
}

fn yaml(p: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// transformers' ROPE_INIT_FUNCTIONS with apply_rotary_pos_emb (default 1e4/1e6
/// at hd 16/64/128, linear, llama3, yarn including v5's mscale ratio and
/// untruncated range, Phi partial, Gemma 4 proportional), positions up to 30000.
#[test]
fn matches_transformers_golden_vectors() {
    let doc = yaml(&data("hf/cases.yaml"));
    for case in doc["cases"].as_sequence().unwrap() {
        let name = case["name"].as_str().unwrap();
        let hd = case["head_dim"].as_u64().unwrap() as usize;
        let heads = case["heads"].as_u64().unwrap() as usize;
        let rp = &case["rope_parameters"];
        let partial = rp.get("partial_rotary_factor").and_then(|v| v.as_f64()).unwrap_or(1.0);
        let layout = match case["partial_layout"].as_str() {
            Some("halfsplit_zero_pad") => PartialLayout::HalfSplitZeroPad,
            _ => PartialLayout::LeadingBlock,
        };
        let cfg = config(case["theta"].as_f64().unwrap(), (hd as f64 * partial) as usize, Pairing::HalfSplit, layout, scaling_of(rp, None));
        let rope = Rope::new(&cfg, hd).unwrap();
        let ps: Vec<i64> = case["positions"].as_sequence().unwrap().iter().map(|p| p.as_i64().unwrap()).collect();
        let (shape, x) = load(&data(&format!("hf/{name}.x.npy")));
        assert_eq!(shape, vec![ps.len(), heads, hd]);
        let (_, y) = load(&data(&format!("hf/{name}.y.npy")));
        assert_rows(name, &rotated(&rope, &x, heads, &text(&ps)), &y, heads * hd, |t| 2e-6 + 1.2e-7 * ps[t] as f32);
    }
}

/// transformers' LlamaRotaryEmbedding module itself (reference/golden/rope):
/// dynamic NTK within and beyond max_position_embeddings (the base grows with
/// the call's sequence length, 5001 here), yarn with its own betas, llama3,
/// linear. LongRoPE cases are in that set too; RopeScaling has no LongRoPE yet
/// (hf.rs rejects it), so they are not read here.
#[test]
fn matches_transformers_rotary_module_golden_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/golden/rope");
    let doc = yaml(&dir.join("cases.yaml"));
    let mut seen = 0;
    for case in doc["cases"].as_sequence().unwrap() {
        let name = case["name"].as_str().unwrap();
        let rp = &case["rope_parameters"];
        if rp["rope_type"].as_str() == Some("longrope") {
            continue;
        }
        let hd = case["head_dim"].as_u64().unwrap() as usize;
        let heads = case["heads"].as_u64().unwrap() as usize;
        let max_pos = case["max_position_embeddings"].as_f64();
        let rope = Rope::new(&config(case["theta"].as_f64().unwrap(), hd, Pairing::HalfSplit, PartialLayout::LeadingBlock, scaling_of(rp, max_pos)), hd).unwrap();
        let ps: Vec<i64> = case["positions"].as_sequence().unwrap().iter().map(|p| p.as_i64().unwrap()).collect();
        let (_, x) = load(&dir.join(format!("{name}.x.npy")));
        let (_, y) = load(&dir.join(format!("{name}.y.npy")));
        assert_rows(name, &rotated(&rope, &x, heads, &text(&ps)), &y, heads * hd, |t| 2e-6 + 1.2e-7 * ps[t] as f32);
        // The frequencies transformers used (dynamic: after its update for this call).
        let inv: Vec<f64> = case["inv_freq"].as_sequence().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let seq_len = case["seq_len"].as_i64().unwrap();
        let cs = rope.cos_sin(&[1, 1, 1, 0], seq_len);
        let af = case["attention_factor"].as_f64().unwrap();
        for (k, (&(c, s), f)) in cs.iter().zip(&inv).enumerate() {
            let ours = (s as f64 / af).atan2(c as f64 / af);
            assert!((ours - f).abs() <= 2.4e-7 * f.abs() + 1e-7, "{name} pair {k}: frequency {ours} vs transformers {f}");
        }
        seen += 1;
    }
    assert!(seen >= 9, "only {seen} module cases read");
}

/// M-RoPE with distinct t/h/w positions, from Qwen2-VL's and Qwen3-VL's rotary
/// embedding modules (sections, interleaved).
#[test]
fn matches_transformers_mrope_golden_vectors() {
    let doc = yaml(&data("hf/mrope.yaml"));
    for case in doc["cases"].as_sequence().unwrap() {
        let name = case["name"].as_str().unwrap();
        let hd = case["head_dim"].as_u64().unwrap() as usize;
        let heads = case["heads"].as_u64().unwrap() as usize;
        let s: Vec<usize> = case["mrope_section"].as_sequence().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let mut cfg = neox(case["theta"].as_f64().unwrap(), hd);
        cfg.mrope = Some(d(([s[0], s[1], s[2], 0], case["interleaved"].as_bool().unwrap())));
        let rope = Rope::new(&cfg, hd).unwrap();
        let axes: Vec<Vec<i64>> = case["positions_thw"].as_sequence().unwrap().iter().map(|a| a.as_sequence().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()).collect();
        let pos: Vec<[i64; 4]> = (0..axes[0].len()).map(|t| [axes[0][t], axes[1][t], axes[2][t], 0]).collect();
        let (_, x) = load(&data(&format!("hf/{name}.x.npy")));
        let (_, y) = load(&data(&format!("hf/{name}.y.npy")));
        let got = rotated(&rope, &x, heads, &pos);
        assert_rows(name, &got, &y, heads * hd, |t| 2e-6 + 1.2e-7 * pos[t][0] as f32);
        // The axes matter: the same rows at text positions are far from the golden.
        let flat = rotated(&rope, &x, heads, &text(&axes[0]));
        assert!(flat.iter().zip(&y).any(|(a, b)| (a - b).abs() > 1e-2), "{name}: h/w positions had no effect");
    }
}

struct GgmlCase {
    f: BTreeMap<String, String>,
}

impl GgmlCase {
    fn s(&self, k: &str) -> &str {
        &self.f[k]
    }
    fn n<T: std::str::FromStr>(&self, k: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        self.f[k].parse().unwrap()
    }
}

fn ggml_cases() -> Vec<GgmlCase> {
    std::fs::read_to_string(data("ggml/cases.txt"))
        .unwrap()
        .lines()
        .map(|l| GgmlCase { f: l.split_whitespace().map(|kv| kv.split_once('=').unwrap()).map(|(k, v)| (k.into(), v.into())).collect() })
        .collect()
}

fn raw_f32(p: &Path) -> Vec<f32> {
    std::fs::read(p).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

const GGML_MROPE: u32 = 8;
const GGML_IMROPE: u32 = 40;

/// A ggml case's RopeConfig, head dim, heads, positions, input and output.
type GgmlRun = (RopeConfig, usize, usize, Vec<[i64; 4]>, Vec<f32>, Vec<f32>);

/// The RopeConfig a ggml case encodes, its positions, and the ops's inputs/outputs.
fn ggml_case(c: &GgmlCase) -> GgmlRun {
    let name = c.s("name");
    let (mode, hd, heads, n_dims, t): (u32, usize, usize, usize, usize) = (c.n("mode"), c.n("hd"), c.n("heads"), c.n("n_dims"), c.n("T"));
    let pairing = if mode == 0 { Pairing::Adjacent } else { Pairing::HalfSplit };
    let sc: Vec<&str> = c.s("scaling").splitn(2, ':').collect();
    let nums = |i: usize| -> f64 { sc[1].split(',').nth(i).unwrap().parse().unwrap() };
    let (mut rd, mut layout) = (n_dims, PartialLayout::LeadingBlock);
    let scaling = match sc[0] {
        "none" => RopeScaling::None,
        "freq_factors" => RopeScaling::FreqFactors { factors: raw_f32(&data(&format!("ggml/{name}.ff.f32"))) },
        "linear" => RopeScaling::Linear { factor: nums(0) },
        "llama3" => RopeScaling::Llama3 { factor: nums(0), low_freq_factor: nums(1), high_freq_factor: nums(2), original_max_position: nums(3) },
        "yarn" => {
            RopeScaling::Yarn { factor: nums(0), original_max_position: nums(1), beta_fast: nums(2), beta_slow: nums(3), attention_factor: None, mscale: None, mscale_all_dim: None, truncate: true }
        }
        "zeropad" => {
            (rd, layout) = (nums(0) as usize, PartialLayout::HalfSplitZeroPad);
            RopeScaling::None
        }
        other => panic!("{name}: scaling {other}"),
    };
    let mut cfg = config(c.n("theta"), rd, pairing, layout, scaling);
    if mode & GGML_MROPE != 0 {
        let s: Vec<usize> = c.s("sections").split(',').map(|v| v.parse().unwrap()).collect();
        cfg.mrope = Some(d(([s[0], s[1], s[2], s[3]], mode == GGML_IMROPE)));
    }
    let p: Vec<i64> = std::fs::read(data(&format!("ggml/{name}.pos.i32"))).unwrap().chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect();
    let pos: Vec<[i64; 4]> = if p.len() == 4 * t { (0..t).map(|i| [p[i], p[t + i], p[2 * t + i], p[3 * t + i]]).collect() } else { text(&p) };
    let x = raw_f32(&data(&format!("ggml/{name}.x.f32")));
    let y = raw_f32(&data(&format!("ggml/{name}.y.f32")));
    (cfg, hd, heads, pos, x, y)
}

/// In ggml's own arithmetic (FreqStyle::Ggml) we reproduce its CPU kernel at
/// every position, yarn included: the same f32 operations in the same order, on
/// the same libm (powf, logf, cosf, sinf), with the two multiply-adds GCC fuses
/// in ggml's -march=native build. On this machine the result is bit-identical;
/// the bound, 2 ulps of the row's largest value, leaves room for a libm whose
/// cosf/sinf round the other way. The op parameters we derive (freq_scale,
/// ext_factor, attn_factor, freq factors) are the ones the generator passed, as
/// llama.cpp sets them.
#[test]
fn ggml_style_reproduces_ggml_golden_vectors() {
    for c in ggml_cases() {
        let name = c.s("name").to_string();
        let (cfg, hd, heads, pos, x, y) = ggml_case(&c);
        let rope = Rope::with_style(&cfg, hd, FreqStyle::Ggml).unwrap();
        let got = rotated(&rope, &x, heads, &pos);
        let row = heads * hd;
        let ulp = |t: usize| 2.0 * f32::EPSILON * y[t * row..(t + 1) * row].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_rows(&name, &got, &y, row, ulp);
        let g = rope_params(&rope);
        assert_eq!(g.freq_scale, c.n::<f32>("freq_scale"), "{name}: freq_scale");
        assert_eq!(g.ext_factor, c.n::<f32>("ext_factor"), "{name}: ext_factor");
        assert!((g.attn_factor - c.n::<f32>("attn_factor")).abs() <= f32::EPSILON, "{name}: attn_factor {} vs {}", g.attn_factor, c.s("attn_factor"));
        if c.s("ff") != "none" {
            assert_eq!(g.freq_factors.as_deref(), Some(&raw_f32(&data(&format!("ggml/{name}.ff.f32")))[..]), "{name}: freq factors");
        }
    }
}

fn rope_params(rope: &Rope) -> parity::engine::rope::GgmlFreqs {
    rope.ggml_freqs().expect("ggml style").clone()
}

/// In transformers' arithmetic the same cases agree within the position-scaled
/// bound, except where the conventions really differ: ggml's interleaved M-RoPE
/// sends pairs outside every section span to the e axis (§1.7). With text
/// positions (e = 0) those pairs are left unrotated by ggml and rotated by
/// transformers: sections [12,10,10] of 32 pairs leave pair 31, sections
/// [24,20,20] of 64 pairs leave pairs 61 and 62 (not 63, which is t in both).
#[test]
fn transformers_style_matches_ggml_golden_vectors_except_imrope_e_pairs() {
    for c in ggml_cases() {
        let name = c.s("name").to_string();
        let (cfg, hd, heads, pos, x, y) = ggml_case(&c);
        let rope = Rope::new(&cfg, hd).unwrap();
        let got = rotated(&rope, &x, heads, &pos);
        let ggml = Rope::with_style(&cfg, hd, FreqStyle::Ggml).unwrap();
        let e_pairs: Vec<usize> = (0..ggml.n_pairs()).filter(|&k| ggml.axis(k) == 3 && rope.axis(k) != 3).collect();
        let want_e: &[usize] = match name.as_str() {
            "imrope-hd64" => &[31],
            "imrope-text-hd128" | "imrope-thw-hd128" => &[61, 62],
            _ => &[],
        };
        assert_eq!(e_pairs, want_e, "{name}: pairs ggml sends to the e axis");
        let e_dims: Vec<usize> = e_pairs.iter().flat_map(|&k| [rope.pair(k).0, rope.pair(k).1]).collect();
        for (t, p) in pos.iter().enumerate() {
            let bound = 2e-6 + 2.4e-7 * p.iter().copied().max().unwrap() as f32;
            for h in 0..heads {
                for dim in 0..hd {
                    let i = (t * heads + h) * hd + dim;
                    let err = (got[i] - y[i]).abs();
                    if e_dims.contains(&dim) {
                        // ggml leaves them as they were; transformers turns them (visibly past p = 1000).
                        assert_eq!(y[i], x[i], "{name}: ggml rotated e-axis dim {dim}");
                        if p[0] >= 1000 {
                            assert!(err > 0.0, "{name} position {p:?} dim {dim}: the documented divergence vanished");
                        }
                        continue;
                    }
                    assert!(err <= bound, "{name} position {p:?} head {h} dim {dim}: ours {} vs ggml {}", got[i], y[i]);
                }
            }
        }
    }
}

/// convert_hf_to_gguf's `LlamaModel.permute`: `w.reshape(n_head, 2, hd/2, in)
/// .swapaxes(1, 2).reshape(w.shape)`, i.e. permuted row `h*hd + 2i + j` = original
/// row `h*hd + j*hd/2 + i`.
fn llamacpp_permute(w: &[f32], n_head: usize, hd: usize, n_in: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for h in 0..n_head {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let (dst, src) = (h * hd + 2 * i + j, h * hd + j * hd / 2 + i);
                out[dst * n_in..(dst + 1) * n_in].copy_from_slice(&w[src * n_in..(src + 1) * n_in]);
            }
        }
    }
    out
}

fn project(w: &[f32], x: &[f32], n_in: usize) -> Vec<f32> {
    x.chunks(n_in).flat_map(|xr| w.chunks(n_in).map(move |wr| wr.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>())).collect()
}

/// NORM RoPE on the projections of llama.cpp-permuted Q/K weights equals NEOX
/// on the unpermuted ones, row for row and bit for bit (CONVENTIONS §2), in both
/// frequency styles.
#[test]
fn norm_on_permuted_projection_equals_neox_on_the_original() {
    let (hd, heads, n_in, t) = (32, 3, 24, 7);
    let w = random(heads * hd * n_in, 1);
    let wp = llamacpp_permute(&w, heads, hd, n_in);
    let x = random(t * n_in, 2);
    let (q, qp) = (project(&w, &x, n_in), project(&wp, &x, n_in));
    let pos = text(&(0..t as i64).map(|p| p * 613).collect::<Vec<_>>());
    for style in [FreqStyle::Transformers, FreqStyle::Ggml] {
        let neox = Rope::with_style(&neox(1e6, hd), hd, style).unwrap();
        let norm = Rope::with_style(&config(1e6, hd, Pairing::Adjacent, PartialLayout::LeadingBlock, RopeScaling::None), hd, style).unwrap();
        let a = rotated(&neox, &q, heads, &pos);
        let b = rotated(&norm, &qp, heads, &pos);
        // Un-permuting the NORM result's rows gives the NEOX result.
        assert_eq!(llamacpp_permute(&a, t * heads, hd, 1), b, "{style:?}");
    }
}

/// With every position axis equal (text tokens), M-RoPE sections and
/// interleaved M-RoPE are plain NEOX, bit for bit; in ggml's convention too,
/// as long as the sections cover every pair.
#[test]
fn mrope_and_interleaved_mrope_are_neox_on_text_positions() {
    let (hd, heads, t) = (64, 2, 9);
    let x = random(t * heads * hd, 2);
    let pos = text(&(0..t as i64).map(|p| p * 4001).collect::<Vec<_>>());
    for style in [FreqStyle::Transformers, FreqStyle::Ggml] {
        let want = rotated(&Rope::with_style(&neox(1e6, hd), hd, style).unwrap(), &x, heads, &pos);
        for (sections, interleaved) in [([8, 12, 12, 0], false), ([11, 11, 10, 0], true)] {
            let mut cfg = neox(1e6, hd);
            cfg.mrope = Some(d((sections, interleaved)));
            let got = rotated(&Rope::with_style(&cfg, hd, style).unwrap(), &x, heads, &pos);
            assert_eq!(got, want, "{style:?} sections {sections:?} interleaved {interleaved}");
        }
    }
}

/// ggml's interleaved M-RoPE with Qwen3-VL's sections [24,20,20] on text
/// (e = 0) differs from NEOX exactly at pairs 61 and 62 (dims 61, 62, 125, 126),
/// which it leaves unrotated; transformers' interleaved M-RoPE does not (§1.7).
#[test]
fn ggml_interleaved_mrope_leaves_two_qwen3vl_pairs_unrotated_on_text() {
    let (hd, heads) = (128, 2);
    let pos = text(&[0, 1, 50, 3000]);
    let x = random(pos.len() * heads * hd, 4);
    let mut cfg = neox(5e6, hd);
    cfg.mrope = Some(d(([24, 20, 20, 0], true)));
    let neox_ggml = rotated(&Rope::with_style(&neox(5e6, hd), hd, FreqStyle::Ggml).unwrap(), &x, heads, &pos);
    let got = rotated(&Rope::with_style(&cfg, hd, FreqStyle::Ggml).unwrap(), &x, heads, &pos);
    let hf = rotated(&Rope::new(&cfg, hd).unwrap(), &x, heads, &pos);
    assert_eq!(hf, rotated(&Rope::new(&neox(5e6, hd), hd).unwrap(), &x, heads, &pos));
    for (i, ((g, n), x0)) in got.iter().zip(&neox_ggml).zip(&x).enumerate() {
        let (t, dim) = (i / (heads * hd), i % hd);
        if [61, 62, 125, 126].contains(&dim) {
            assert_eq!(g, x0, "dim {dim} should be unrotated");
            // Their frequencies are ~1e-6 rad/token: visible in f32 only at large positions.
            if pos[t][0] >= 1000 {
                assert_ne!(g, n, "dim {dim} position {:?}: NEOX should turn it", pos[t]);
            }
        } else {
            assert_eq!(g, n, "dim {dim} position {:?}", pos[t]);
        }
    }
}

/// With distinct axes, M-RoPE must actually use them, and the 4th (e) section
/// is driven by the 4th position.
#[test]
fn multi_axis_positions_change_the_result() {
    let (hd, heads) = (64, 1);
    let x = random(hd, 3);
    let mut cfg = neox(1e6, hd);
    cfg.mrope = Some(d(([8, 8, 8, 8], false)));
    let rope = Rope::new(&cfg, hd).unwrap();
    let base = rotated(&rope, &x, heads, &[[5, 5, 5, 0]]);
    for (axis, p) in [[5, 9, 5, 0], [5, 5, 9, 0], [5, 5, 5, 9]].iter().enumerate() {
        let y = rotated(&rope, &x, heads, &[*p]);
        let changed: Vec<usize> = (0..32)
            .filter(|&k| {
                let (a, b) = rope.pair(k);
                y[a] != base[a] || y[b] != base[b]
            })
            .collect();
        assert_eq!(changed, (8 * (axis + 1)..8 * (axis + 2)).collect::<Vec<_>>(), "axis {}", axis + 1);
    }
}

/// The zero-padded (proportional) layout rotating every pair is plain NEOX, in
/// both styles (ggml expresses it with 1e30 frequency factors, none here).
#[test]
fn zero_padded_layout_over_the_whole_head_is_neox() {
    let (hd, heads) = (64, 2);
    let pos = text(&[0, 3, 700, 29000]);
    let x = random(pos.len() * heads * hd, 5);
    for style in [FreqStyle::Transformers, FreqStyle::Ggml] {
        let want = rotated(&Rope::with_style(&neox(1e6, hd), hd, style).unwrap(), &x, heads, &pos);
        let zp = config(1e6, hd, Pairing::HalfSplit, PartialLayout::HalfSplitZeroPad, RopeScaling::None);
        assert_eq!(rotated(&Rope::with_style(&zp, hd, style).unwrap(), &x, heads, &pos), want, "{style:?}");
    }
    let zp = config(1e6, 16, Pairing::HalfSplit, PartialLayout::HalfSplitZeroPad, RopeScaling::None);
    let g = Rope::with_style(&zp, hd, FreqStyle::Ggml).unwrap();
    let ff = g.ggml_freqs().unwrap().freq_factors.clone().unwrap();
    assert_eq!(ff, [vec![1.0; 8], vec![GGML_UNROTATED_FREQ_FACTOR; 24]].concat());
}

/// Dynamic NTK: up to max_position_embeddings it is the default rule, bit for
/// bit; past it the base grows with the call's sequence length (so the same
/// position turns differently in a longer call), and a trace of several calls
/// replays transformers' cached state (growth, then reset below the maximum).
#[test]
fn dynamic_ntk_is_default_within_max_position_and_grows_past_it() {
    let (hd, heads) = (32, 2);
    let dynamic = config(1e4, hd, Pairing::HalfSplit, PartialLayout::LeadingBlock, RopeScaling::Dynamic { factor: 2.0, max_position: 512.0 });
    let (dy, de) = (Rope::new(&dynamic, hd).unwrap(), Rope::new(&neox(1e4, hd), hd).unwrap());
    let within = text(&[0, 7, 300, 511]);
    let x = random(within.len() * heads * hd, 6);
    assert_eq!(rotated(&dy, &x, heads, &within), rotated(&de, &x, heads, &within));
    // One row at position 7, alone (seq_len 8) and in a call reaching 2000.
    let row = &x[..heads * hd];
    let (mut short, mut long) = (row.to_vec(), row.to_vec());
    dy.apply_with_seq_len(&mut short, heads, &text(&[7]), 8);
    dy.apply_with_seq_len(&mut long, heads, &text(&[7]), 2000);
    assert_eq!(short, rotated(&de, row, heads, &text(&[7])));
    assert_ne!(short, long);
    // Calls: prefill 0..600 (grows to 600), decode 600 (grows to 601), a new short prompt (resets).
    let pos = text(&[0, 599, 600, 0, 5]);
    let calls = [[0, 2], [2, 3], [3, 5]];
    let x = random(pos.len() * heads * hd, 7);
    let mut got = x.clone();
    dy.apply_calls(&mut got, heads, &pos, &calls);
    let r = heads * hd;
    let mut want = x.clone();
    dy.apply_with_seq_len(&mut want[..2 * r], heads, &pos[..2], 600);
    dy.apply_with_seq_len(&mut want[2 * r..3 * r], heads, &pos[2..3], 601);
    de.apply(&mut want[3 * r..], heads, &pos[3..]);
    assert_eq!(got, want);
}

/// The two frequency styles agree within the position-scaled bound on every
/// scaling rule llama.cpp supports.
#[test]
fn frequency_styles_agree_within_the_position_bound() {
    let (hd, heads) = (64, 2);
    let ps = [0, 1, 9, 100, 1000, 4096, 30000];
    let pos = text(&ps);
    let x = random(pos.len() * heads * hd, 8);
    let yarn = RopeScaling::Yarn { factor: 8.0, original_max_position: 2048.0, beta_fast: 32.0, beta_slow: 1.0, attention_factor: None, mscale: None, mscale_all_dim: None, truncate: true };
    let llama3 = RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 8192.0 };
    for (pairing, scaling) in [(Pairing::HalfSplit, RopeScaling::None), (Pairing::Adjacent, RopeScaling::Linear { factor: 4.0 }), (Pairing::HalfSplit, yarn), (Pairing::Adjacent, llama3)] {
        let cfg = config(5e5, hd, pairing, PartialLayout::LeadingBlock, scaling.clone());
        let a = rotated(&Rope::new(&cfg, hd).unwrap(), &x, heads, &pos);
        let b = rotated(&Rope::with_style(&cfg, hd, FreqStyle::Ggml).unwrap(), &x, heads, &pos);
        assert_rows(&format!("{scaling:?}"), &a, &b, heads * hd, |t| 2e-6 + 2.4e-7 * ps[t] as f32);
    }
    let dynamic = config(1e4, hd, Pairing::HalfSplit, PartialLayout::LeadingBlock, RopeScaling::Dynamic { factor: 2.0, max_position: 512.0 });
    assert!(Rope::with_style(&dynamic, hd, FreqStyle::Ggml).is_err(), "llama.cpp has no dynamic NTK");
}

/// Diagnosis fits theta continuously from a pre/post-RoPE pair: within 1% for
/// the usual bases, either pairing, positions 0..40, several heads.
#[test]
fn theta_is_fitted_to_within_one_percent() {
    let (hd, heads) = (64, 4);
    let pos = text(&(0..41).collect::<Vec<_>>());
    for (i, theta) in [1e4, 1e6, 5e5, 3.3e4].into_iter().enumerate() {
        for pairing in [Pairing::HalfSplit, Pairing::Adjacent] {
            let rope = Rope::new(&config(theta, hd, pairing, PartialLayout::LeadingBlock, RopeScaling::None), hd).unwrap();
            let x = random(pos.len() * heads * hd, 10 + i as u64);
            let y = rotated(&rope, &x, heads, &pos);
            let fit = fit_theta(&x, &y, heads, hd, &pos, pairing).unwrap();
            assert!((fit / theta - 1.0).abs() < 0.01, "theta {theta} {pairing:?}: fitted {fit}");
        }
    }
    // Large positions only (no row near 0), and a single row at position 1.
    let rope = Rope::new(&neox(1e6, hd), hd).unwrap();
    let far = text(&[4000, 4001, 4096, 9000, 30000]);
    let x = random(far.len() * heads * hd, 20);
    let fit = fit_theta(&x, &rotated(&rope, &x, heads, &far), heads, hd, &far, Pairing::HalfSplit).unwrap();
    assert!((fit / 1e6 - 1.0).abs() < 0.01, "far positions: fitted {fit}");
    let x = random(hd, 21);
    let fit = fit_theta(&x, &rotated(&rope, &x, 1, &text(&[1])), 1, hd, &text(&[1]), Pairing::HalfSplit).unwrap();
    assert!((fit / 1e6 - 1.0).abs() < 0.01, "one row: fitted {fit}");
    assert_eq!(fit_theta(&x, &x, 1, hd, &text(&[0]), Pairing::HalfSplit), None, "position 0 carries no rotation");
}

/// detect_pairing names the pairing that produced the data, with a cosine of 1
/// for it and a clearly lower one for the other.
#[test]
fn pairing_is_detected_with_each_candidates_cosine() {
    let (hd, heads) = (64, 2);
    let pos = text(&(0..24).collect::<Vec<_>>());
    let x = random(pos.len() * heads * hd, 30);
    for pairing in [Pairing::HalfSplit, Pairing::Adjacent] {
        let y = rotated(&Rope::new(&config(5e5, hd, pairing, PartialLayout::LeadingBlock, RopeScaling::None), hd).unwrap(), &x, heads, &pos);
        let fit = detect_pairing(&x, &y, heads, hd, &pos);
        assert_eq!(fit.best, pairing, "{fit:?}");
        for c in &fit.candidates {
            if c.pairing == pairing {
                assert!(c.cosine > 1.0 - 1e-9 && (c.theta.unwrap() / 5e5 - 1.0).abs() < 0.01, "{c:?}");
            } else {
                assert!(c.cosine < 0.9, "{c:?}");
            }
        }
    }
}

//! RoPE against golden vectors computed by transformers' own code
//! (scripts/rope_golden.py), and the equivalences that must hold between
//! conventions.

use std::path::{Path, PathBuf};

use parity::engine::rope::Rope;
use parity::formats::config::*;
use parity::formats::npy::{self, NpyData};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rope").join(p)
}

fn load(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = npy::read(p, None).unwrap();
    let NpyData::F32(v) = a.data else { panic!() };
    (a.shape, v)
}

fn config(theta: f64, hd: usize, rd: usize, pairing: Pairing, layout: PartialLayout, scaling: RopeScaling) -> RopeConfig {
    fn d<T>(v: T) -> Sourced<T> {
        Sourced::derived(v, "test")
    }
    RopeConfig { theta: d(theta), pairing: d(pairing), rotary_dim: d(rd), partial_layout: d(layout), scaling: d(scaling), mrope: None }
}

fn scaling_of(p: &serde_yaml::Value) -> RopeScaling {
    let f = |k: &str| p.get(k).and_then(|v| v.as_f64()).unwrap();
    match p.get("rope_type").and_then(|v| v.as_str()).unwrap() {
        "default" | "proportional" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: f("factor") },
        "llama3" => RopeScaling::Llama3 { factor: f("factor"), low_freq_factor: f("low_freq_factor"), high_freq_factor: f("high_freq_factor"), original_max_position: f("original_max_position_embeddings") },
        "yarn" => RopeScaling::Yarn { factor: f("factor"), original_max_position: f("original_max_position_embeddings"), beta_fast: 32.0, beta_slow: 1.0, attention_factor: None, truncate: true },
        other => panic!("no case for {other}"),
    }
}

/// Per position: our output against transformers'. Both round cos/sin to f32
/// (1e-5 absolute on inputs of unit scale); our inv_freq may differ from torch's
/// f32 pow/divide by up to two ulps (1.2e-7 relative, |inv_freq| <= 1), which the
/// position multiplies: bound = 1e-5 + 1.2e-7 * position.
#[test]
fn matches_transformers_golden_vectors() {
    let text = std::fs::read_to_string(data("hf/cases.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
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
        let rd = (hd as f64 * partial) as usize;
        let cfg = config(case["theta"].as_f64().unwrap(), hd, rd, Pairing::HalfSplit, layout, scaling_of(rp));
        let rope = Rope::new(&cfg, hd).unwrap();
        let positions: Vec<[i64; 4]> = case["positions"].as_sequence().unwrap().iter().map(|p| { let p = p.as_i64().unwrap(); [p, p, p, 0] }).collect();
        let (shape, mut x) = load(&data(&format!("hf/{name}.x.npy")));
        assert_eq!(shape, vec![positions.len(), heads, hd]);
        let (_, y) = load(&data(&format!("hf/{name}.y.npy")));
        rope.apply(&mut x, heads, &positions);
        let row = heads * hd;
        for (t, p) in positions.iter().enumerate() {
            let err = x[t * row..(t + 1) * row].iter().zip(&y[t * row..(t + 1) * row]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let bound = 1e-5 + 1.2e-7 * p[0] as f32;
            assert!(err <= bound, "{name} position {}: max |ours - transformers| = {err:e} > {bound:e}", p[0]);
        }
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n).map(|_| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5 }).collect()
}

/// llama.cpp's converter permutes each head's rows so that NORM (adjacent) RoPE
/// on the permuted layout equals NEOX (half-split) on the original.
#[test]
fn norm_on_permuted_rows_equals_neox_on_the_original() {
    let (hd, heads, t) = (32, 3, 7);
    let x = random(t * heads * hd, 1);
    // permuted[h*hd + 2i + j] = original[h*hd + j*hd/2 + i]
    let mut xp = x.clone();
    for r in 0..t * heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                xp[r * hd + 2 * i + j] = x[r * hd + j * hd / 2 + i];
            }
        }
    }
    let pos: Vec<[i64; 4]> = (0..t as i64).map(|p| [p * 13, p * 13, p * 13, 0]).collect();
    let neox = Rope::new(&config(1e6, hd, hd, Pairing::HalfSplit, PartialLayout::LeadingBlock, RopeScaling::None), hd).unwrap();
    let norm = Rope::new(&config(1e6, hd, hd, Pairing::Adjacent, PartialLayout::LeadingBlock, RopeScaling::None), hd).unwrap();
    let (mut a, mut b) = (x.clone(), xp.clone());
    neox.apply(&mut a, heads, &pos);
    norm.apply(&mut b, heads, &pos);
    for r in 0..t * heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                assert_eq!(b[r * hd + 2 * i + j].to_bits(), a[r * hd + j * hd / 2 + i].to_bits());
            }
        }
    }
}

/// With every position axis equal (text tokens), M-RoPE sections and the
/// interleaved M-RoPE of Qwen3-VL are both plain NEOX; a zero-padded partial
/// layout that rotates every pair is plain NEOX too.
#[test]
fn multi_axis_and_full_zero_pad_reduce_to_neox_on_text_positions() {
    let (hd, heads, t) = (64, 2, 9);
    let x = random(t * heads * hd, 2);
    let pos: Vec<[i64; 4]> = (0..t as i64).map(|p| [p * 5, p * 5, p * 5, 0]).collect();
    let base = config(1e6, hd, hd, Pairing::HalfSplit, PartialLayout::LeadingBlock, RopeScaling::None);
    let mut want = x.clone();
    Rope::new(&base, hd).unwrap().apply(&mut want, heads, &pos);
    for (sections, interleaved) in [([8, 12, 12, 0], false), ([12, 10, 10, 0], true)] {
        let mut cfg = base.clone();
        cfg.mrope = Some(Sourced::derived((sections, interleaved), "test"));
        let mut got = x.clone();
        Rope::new(&cfg, hd).unwrap().apply(&mut got, heads, &pos);
        assert_eq!(got, want, "sections {sections:?} interleaved {interleaved}");
    }
    let zp = config(1e6, hd, hd, Pairing::HalfSplit, PartialLayout::HalfSplitZeroPad, RopeScaling::None);
    let mut got = x.clone();
    Rope::new(&zp, hd).unwrap().apply(&mut got, heads, &pos);
    assert_eq!(got, want);
}

/// With distinct axes, M-RoPE must actually use them (else the test above proves nothing).
#[test]
fn multi_axis_positions_change_the_result() {
    let (hd, heads) = (64, 1);
    let x = random(hd, 3);
    let mut cfg = config(1e6, hd, hd, Pairing::HalfSplit, PartialLayout::LeadingBlock, RopeScaling::None);
    cfg.mrope = Some(Sourced::derived(([8, 12, 12, 0], false), "test"));
    let rope = Rope::new(&cfg, hd).unwrap();
    let (mut a, mut b) = (x.clone(), x.clone());
    rope.apply(&mut a, heads, &[[5, 5, 5, 0]]);
    rope.apply(&mut b, heads, &[[5, 9, 2, 0]]);
    assert_ne!(a, b);
}

/// Diagnosis fits theta from a pre/post-RoPE pair: within 1% of the true value.
#[test]
fn theta_is_fitted_from_a_rotation_to_within_one_percent() {
    use parity::engine::rope::fit_theta;
    let hd = 64;
    for theta in [1e4, 5e5, 1e6] {
        let rope = Rope::new(&config(theta, hd, hd, Pairing::HalfSplit, PartialLayout::LeadingBlock, RopeScaling::None), hd).unwrap();
        let x = random(hd, 9);
        let mut y = x.clone();
        rope.apply(&mut y, 1, &[[1, 1, 1, 0]]);
        let fit = fit_theta(&x, &y, hd, 1).unwrap();
        assert!((fit / theta - 1.0).abs() < 0.01, "theta {theta}: fitted {fit}");
    }
}

fn raw(p: &Path) -> Vec<f32> {
    std::fs::read(p).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Against ggml's own CPU kernel (scripts/rope_golden_ggml.c): NORM, NEOX,
/// partial n_dims, frequency factors, M-RoPE and interleaved M-RoPE on text
/// positions. ggml builds theta by an iterated f32 product (CONVENTIONS §1.3),
/// which adds up to k ulps at pair k: bound 1e-5 + 2.4e-7 * position.
/// Interleaved M-RoPE: ggml sends pairs outside every section span to the `e`
/// axis (position 0 for text) while transformers keeps them on `t` (§1.7); with
/// sections [12, 10, 10] that is the last pair, asserted to differ.
#[test]
fn matches_ggml_golden_vectors() {
    const POS: [i64; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 1000];
    let index = std::fs::read_to_string(data("ggml/cases.txt")).unwrap();
    for line in index.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, mode, hd, heads, n_dims) = (f[0], f[1].parse::<u32>().unwrap(), f[2].parse::<usize>().unwrap(), f[3].parse::<usize>().unwrap(), f[4].parse::<usize>().unwrap());
        let theta: f64 = f[5].parse().unwrap();
        let ff = f[6] == "1";
        let sections: [usize; 4] = [f[7].parse().unwrap(), f[8].parse().unwrap(), f[9].parse().unwrap(), f[10].parse().unwrap()];
        let pairing = if mode == 0 { Pairing::Adjacent } else { Pairing::HalfSplit };
        let scaling = if ff { RopeScaling::FreqFactors { factors: (0..n_dims / 2).map(|k| 1.0 + 0.25 * (k % 5) as f32).collect() } } else { RopeScaling::None };
        let mut cfg = config(theta, hd, n_dims, pairing, PartialLayout::LeadingBlock, scaling);
        if mode == 8 || mode == 40 {
            cfg.mrope = Some(Sourced::derived((sections, mode == 40), "test"));
        }
        let rope = Rope::new(&cfg, hd).unwrap();
        let mut x = raw(&data(&format!("ggml/{name}.x.f32")));
        let y = raw(&data(&format!("ggml/{name}.y.f32")));
        let positions: Vec<[i64; 4]> = POS.iter().map(|&p| [p, p, p, 0]).collect();
        rope.apply(&mut x, heads, &positions);
        let skip = |d: usize| mode == 40 && (d == hd / 2 - 1 || d == hd - 1);
        for (t, &p) in POS.iter().enumerate() {
            let bound = 1e-5 + 2.4e-7 * p as f32;
            for h in 0..heads {
                for d in 0..hd {
                    let i = (t * heads + h) * hd + d;
                    if skip(d) {
                        if p >= 100 {
                            assert!((x[i] - y[i]).abs() > 0.0, "{name}: ggml should leave the last pair unrotated at position {p}");
                        }
                        continue;
                    }
                    assert!((x[i] - y[i]).abs() <= bound, "{name} position {p} head {h} dim {d}: ours {} vs ggml {}", x[i], y[i]);
                }
            }
        }
    }
}

use half::f16;

use super::*;

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Activation rows with outliers, zeros, ±0 and exact rounding ties: blocks
/// whose largest value is ±127 have scale 1, so `x.5` values are ties.
fn activations(rng: &mut Rng, n: usize, k: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n * k).map(|_| rng.unit() * 3.0).collect();
    for (j, v) in x.iter_mut().enumerate() {
        match rng.next() % 50 {
            0 => *v *= 40.0,
            1 => *v = 0.0,
            2 => *v = -0.0,
            _ => {}
        }
        if (j / 256) % 4 == 3 {
            // A tie block for both formats: max magnitude 127, values on half-steps.
            *v = if j % 32 == 0 { -127.0 } else { (rng.next() % 40) as f32 - 20.5 };
        }
    }
    x
}

/// A weight row of `k` elements: random bytes with finite f16 scales.
fn weight_row(rng: &mut Rng, dtype: DType, k: usize) -> Vec<u8> {
    let (elems, size) = dtype.block();
    let mut w: Vec<u8> = (0..k / elems * size).map(|_| rng.next() as u8).collect();
    // Byte offsets of the f16 scales in each block (ggml-common.h).
    let halves: &[usize] = match dtype {
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q2_K => &[size - 4, size - 2],
        DType::Q3_K | DType::Q6_K => &[size - 2],
        _ => &[0],
    };
    for b in w.chunks_exact_mut(size) {
        for &o in halves {
            let v = f16::from_f32(rng.unit() * 0.05).to_le_bytes();
            b[o..o + 2].copy_from_slice(&v);
        }
    }
    w
}

const KERNEL_TYPES: [DType; 5] = [DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K];

fn row_lengths(dtype: DType) -> Vec<usize> {
    if dtype.block().0 == QK_K {
        vec![256, 768, 1024, 2816, 3072, 4096]
    } else {
        vec![32, 64, 96, 256, 288, 480, 1024]
    }
}

/// The integers times the scales are `ops::round_activations`' values: same
/// rounding (half away from zero for Q8_0, half to even for Q8_K), same
/// scales. Bit for bit, except that an integer has no sign for zero.
#[test]
fn quantised_values_times_scales_are_round_activations() {
    let mut rng = Rng(7);
    for dtype in [DType::Q8_0, DType::Q4_1, DType::Q6_K, DType::Q2_K] {
        let k = 1024;
        let x = activations(&mut rng, 3, k);
        let acts = quantize(dtype, &x, k).unwrap();
        let mut want = x.clone();
        want.chunks_mut(k).for_each(|r| ops::round_activations(r, dtype));
        for (j, (a, b)) in acts.expanded().iter().zip(&want).enumerate() {
            assert!(a.to_bits() == b.to_bits() || (*a == 0.0 && *b == 0.0), "{dtype} element {j}: {a} vs {b}");
        }
        for (j, s) in acts.bsums.iter().enumerate() {
            assert_eq!(*s as i32, acts.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum::<i32>());
        }
    }
    // The tie rules themselves: 2.5 and -2.5 at scale 1.
    let mut tie = vec![0f32; 256];
    tie[..3].copy_from_slice(&[-127.0, 2.5, -2.5]);
    assert_eq!(quantize(DType::Q8_0, &tie, 256).unwrap().qs[..3], [-127, 3, -3]);
    assert_eq!(quantize(DType::Q4_K, &tie, 256).unwrap().qs[..3], [-127, 2, -2]);
}

/// Each AVX2 kernel (and AVX-512 VNNI one, where the CPU has it) equals its
/// plain twin bit for bit, for several row lengths (including partial groups
/// of 8 blocks) and activation rows (whole tiles of 8 rows and a remainder).
#[test]
fn fast_kernels_are_bit_identical_to_their_plain_twins() {
    let mut rng = Rng(11);
    for dtype in KERNEL_TYPES {
        // One row and several: the kernels read weights in place for few rows.
        for (k, n) in row_lengths(dtype).into_iter().flat_map(|k| [(k, 1), (k, 5), (k, 11)]) {
            let acts = quantize(dtype, &activations(&mut rng, n, k), k).unwrap();
            for _ in 0..4 {
                let w = weight_row(&mut rng, dtype, k);
                let mut plain = vec![0f32; n];
                dot_rows_ref(dtype, &w, &acts, &mut plain);
                for vnni in [false, true] {
                    let mut fast = vec![0f32; n];
                    dot_rows_with(dtype, &[&w], &acts, &mut fast, vnni, &[]);
                    for (f, p) in fast.iter().zip(&plain) {
                        assert_eq!(f.to_bits(), p.to_bits(), "{dtype} k = {k}, VNNI {}: {f} vs {p}", vnni && has_vnni());
                    }
                }
            }
        }
    }
}

/// The integer kernels give the dequantised weights' dot with the rounded
/// activations up to float summation order: within 1e-5 of `Σ |w·x|`.
#[test]
fn kernels_agree_with_the_dequantised_dot() {
    let mut rng = Rng(13);
    for dtype in KERNEL_TYPES.into_iter().chain([DType::Q4_1, DType::Q3_K]) {
        for k in row_lengths(dtype) {
            let acts = quantize(dtype, &activations(&mut rng, 3, k), k).unwrap();
            let xs = acts.expanded();
            for _ in 0..4 {
                let w = weight_row(&mut rng, dtype, k);
                let (mut got, mut want) = (vec![0f32; 3], vec![0f32; 3]);
                dot_rows(dtype, &[&w], &acts, &mut got, &[]);
                dot_rows_dequant(dtype, &w, &xs, k, &mut want);
                let mut row = vec![0f32; k];
                quants::dequantize(dtype, &w, &mut row);
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    let mag: f64 = row.iter().zip(&xs[i * k..]).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
                    assert!(((g - e) as f64).abs() <= 1e-5 * mag, "{dtype} k = {k}: {g} vs {e} (Σ|w·x| = {mag})");
                }
            }
        }
    }
}

/// Several weight rows in one call give what each gives alone.
#[test]
fn several_weight_rows_per_call() {
    let mut rng = Rng(23);
    for dtype in KERNEL_TYPES.into_iter().chain([DType::Q4_1]) {
        let (k, n) = (512, 3);
        let acts = quantize(dtype, &activations(&mut rng, n, k), k).unwrap();
        let ws: Vec<Vec<u8>> = (0..5).map(|_| weight_row(&mut rng, dtype, k)).collect();
        let mut all = vec![0f32; ws.len() * n];
        dot_rows(dtype, &ws.iter().map(|w| &w[..]).collect::<Vec<_>>(), &acts, &mut all, &[]);
        for (w, got) in ws.iter().zip(all.chunks_exact(n)) {
            let mut one = vec![0f32; n];
            dot_rows(dtype, &[w], &acts, &mut one, &[]);
            assert_eq!(got, one, "{dtype}");
        }
    }
}

/// A row's result does not depend on the other rows sharing the call.
#[test]
fn kernels_are_batch_invariant() {
    let mut rng = Rng(17);
    for dtype in KERNEL_TYPES {
        let k = 512;
        let x = activations(&mut rng, 4, k);
        let w = weight_row(&mut rng, dtype, k);
        let mut all = vec![0f32; 4];
        dot_rows(dtype, &[&w], &quantize(dtype, &x, k).unwrap(), &mut all, &[]);
        let mut one = [0f32];
        dot_rows(dtype, &[&w], &quantize(dtype, &x[2 * k..3 * k], k).unwrap(), &mut one, &[]);
        assert_eq!(all[2].to_bits(), one[0].to_bits(), "{dtype}");
    }
}

/// The prefill kernels (eight or sixteen weight rows in lanes, AVX-512 VNNI)
/// with a group of rows that does not fill the lanes, groups of sixteen
/// followed by a remainder, and activation rows that do not fill the tiles:
/// every element is its plain twin's, bit for bit.
#[test]
fn many_rows_by_many_rows_equal_the_plain_twin() {
    let mut rng = Rng(29);
    for dtype in KERNEL_TYPES {
        for (rows, n) in [(13, 19), (8, 4), (3, 9), (16, 11), (16, 16), (37, 17)] {
            // Q8_0/Q4_0: 3 blocks (fewer than the 8 float lanes) and 17; k-quants 2 and 9.
            for k in if dtype.block().0 == QK_K { vec![512, 2304] } else { vec![96, 544] } {
                let acts = quantize(dtype, &activations(&mut rng, n, k), k).unwrap();
                let ws: Vec<Vec<u8>> = (0..rows).map(|_| weight_row(&mut rng, dtype, k)).collect();
                let refs: Vec<&[u8]> = ws.iter().map(|w| &w[..]).collect();
                for vnni in [true, false] {
                    let mut fast = vec![0f32; rows * n];
                    dot_rows_with(dtype, &refs, &acts, &mut fast, vnni, &[]);
                    for (w, got) in ws.iter().zip(fast.chunks_exact(n)) {
                        let mut plain = vec![0f32; n];
                        dot_rows_ref(dtype, w, &acts, &mut plain);
                        assert_eq!(bits(got), bits(&plain), "{dtype} {rows} x {n}, k {k}, VNNI {}", vnni && has_vnni());
                    }
                }
            }
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn q8_k_scale_comes_from_the_first_largest_magnitude_as_ggml_scans() {
    // ggml's scan, element by element: the first value of largest magnitude
    // (a NaN loses every comparison) sets the sign and size of the scale.
    let scan = |x: &[f32]| {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        max
    };
    let mut rng = Rng(7);
    let base: Vec<f32> = (0..QK_K).map(|_| rng.unit()).collect();
    // (values set, index of the first largest magnitude)
    let cases: [(&[(usize, f32)], usize); 5] =
        [(&[(9, 3.0), (200, -3.0)], 9), (&[(9, -3.0), (200, 3.0)], 9), (&[(3, f32::NAN), (77, -2.5), (250, 2.5)], 77), (&[(255, -4.0)], 255), (&[(0, 2.0), (8, -2.0), (16, 2.0)], 0)];
    for (c, (set, first)) in cases.iter().enumerate() {
        let mut x = base.clone();
        for &(i, v) in set.iter() {
            x[i] = v;
        }
        let mut q = vec![0i8; QK_K];
        let d = quantize_q8_k(&x, &mut q);
        let max = scan(&x);
        assert_eq!(max, x[*first], "case {c}: the scan's pick");
        assert_eq!(d.to_bits(), (1.0 / (-Q8_MAX / max)).to_bits(), "case {c}: scale from {max}");
        assert_eq!(q[*first], -127, "case {c}: the first largest value maps to -127");
        if x[3].is_nan() {
            assert_eq!(q[3], 127, "case {c}: a NaN maps to 127, as min(NaN, 127) gives");
        }
    }
}

/// The packed Q4_K layout (made on all threads or on one) gives each row's
/// plain-twin result bit for bit: one activation row (decode) and several (every tile width), whole
/// groups at any offset, every row length.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
#[test]
fn packed_q4_k_is_bit_identical_to_the_plain_twin() {
    use crate::formats::tensor::{Backing, Tensor};
    if !has_vnni() {
        eprintln!("no AVX-512 VNNI here: the packed kernel does not run");
        return;
    }
    let mut rng = Rng(23);
    for k in row_lengths(DType::Q4_K) {
        let rows = 24;
        let raw: Vec<u8> = (0..rows).flat_map(|_| weight_row(&mut rng, DType::Q4_K, k)).collect();
        let len = raw.len();
        let w = Tensor::new("w", DType::Q4_K, vec![rows, k], Backing::Owned(std::sync::Arc::new(raw)), 0..len).unwrap();
        assert!(packed::packs(DType::Q4_K, rows, k));
        let p = packed::pack(&w.row_view(), rows, k, true);
        assert!(p == packed::pack(&w.row_view(), rows, k, false), "laid out on one thread differs");
        for n in [1, 3, 8, 15] {
            let acts = quantize(DType::Q4_K, &activations(&mut rng, n, k), k).unwrap();
            for (first, count) in [(0, 24), (8, 16), (16, 8)] {
                let mut fast = vec![f32::NAN; count * n];
                packed::dot_rows(&p, first, &acts, &mut fast);
                for j in 0..count {
                    let mut plain = vec![0f32; n];
                    dot_rows_ref(DType::Q4_K, w.row_bytes(first + j), &acts, &mut plain);
                    for (i, (f, q)) in fast[j * n..(j + 1) * n].iter().zip(&plain).enumerate() {
                        assert_eq!(f.to_bits(), q.to_bits(), "k = {k}, n = {n}, row {}, activation row {i}: {f} vs {q}", first + j);
                    }
                }
            }
        }
    }
}

//! Exact numerics for any number of activation rows: a few weight rows times
//! every activation row.
//!
//! Up to `NR` weight rows are decoded (exact ggml values) into a scratch of
//! `NR` rows, one sequential stream per row; then every activation row meets
//! them in `R × C` register tiles (`R` weight rows, `C` activation rows), eight
//! lanes along `k`, block by block of `KC`. Decoding is paid once per weight
//! row whatever the batch, and the weight matrix is never expanded: only `NR`
//! rows (at most ~200 KB) exist in f32 at a time, per thread.
//!
//! Summation order, the same for every element whatever the batch size or the
//! tile it lands in: lane `l` of an element takes the products at
//! `k ≡ l (mod 8)`; inside a block of `KC` each lane is one fused multiply-add
//! chain from zero (32 long), and the block's lanes are added to the running
//! lanes; at the end the lanes are summed as ((0+4)+(1+5))+((2+6)+(3+7)), then
//! a tail of fewer than 8 elements (only when `k` is not a multiple of 8) is
//! added by fused multiply-adds in order. The plain twin spells this out and
//! agrees bit for bit; a row's result does not depend on which other rows
//! share the call, so prefill and decode agree. Short chains keep the rounding
//! error near that of llama.cpp's 32 partial sums: one long chain per element
//! measurably lost accuracy (llama-wide's f32 contract against llama.cpp went
//! from 2e-9 to 1e-8 NMSE at L1.attn_out; with blocks it is 3.7e-10).

use crate::formats::quants;
use crate::formats::tensor::DType;

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
mod one_row;

/// Weight rows decoded together (one task of the parallel loop).
pub const NR: usize = 16;
/// Length of one summation block along `k` (32 steps of 8 lanes).
pub const KC: usize = 256;
/// Register tile: weight rows × activation rows.
const R: usize = 4;
const C: usize = 3;
/// A tile with AVX-512 (`tile_wide`): up to `Q512` pairs of weight rows, each
/// pair in one 16-lane register, times up to `C512` activation rows.
const Q512: usize = NR / 2;
const C512: usize = 3;
/// Weight rows of a tile with one activation row.
const R1: usize = 8;
/// With one activation row, decoding a row prefetches the row this many places on.
const DECODE_AHEAD: usize = 2;

/// Reusable buffers of one thread.
#[derive(Default)]
pub struct Scratch {
    w: Vec<f32>,
    /// With AVX-512 tiles: one summation block of the decoded rows, two rows
    /// interleaved eight floats at a time (see `interleave`).
    pairs: Vec<f32>,
    lanes: Vec<f32>,
    tail: Vec<f32>,
}

/// `yt[j·t + i] = Σ_k w_j[k] · xs[i·k_len + k]` for up to `NR` weight rows given
/// as stored bytes of `dtype` (each holding `k` elements) and `t = xs.len() / k`
/// activation rows; `yt` is `[rows.len(), t]`. `next` holds the rows this
/// thread will probably take next (those after these, or none), prefetched
/// while these are multiplied (results never depend on them).
#[allow(clippy::too_many_arguments)]
pub fn rows_times_acts(dtype: DType, rows: &[&[u8]], xs: &[f32], k: usize, yt: &mut [f32], s: &mut Scratch, next: &[&[u8]]) {
    let (n, t) = (rows.len().min(NR), xs.len() / k.max(1));
    if t == 1 && n > R1 {
        // One activation row: a tile's worth of rows at a time keeps their
        // decoded values in L1 until the tile reads them.
        for (j0, (rs, ys)) in rows[..n].chunks(R1).zip(yt.chunks_mut(R1)).enumerate() {
            let following = rows.get((j0 + 1) * R1..n).filter(|r| !r.is_empty()).unwrap_or(next);
            rows_times_acts(dtype, rs, xs, k, ys, s, following);
        }
        return;
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    if t == 1 && matches!(dtype, DType::F16 | DType::BF16) && rows.iter().take(n).all(|r| r.len() >= 2 * k) {
        // SAFETY: AVX2, FMA and F16C are enabled for this build; every row holds k halves.
        unsafe { one_row::halves(dtype == DType::F16, &rows[..n], &xs[..k], &mut yt[..n], next) };
        return;
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    if t == 1
        && matches!(dtype, DType::Q4_K | DType::Q6_K)
        && k.is_multiple_of(quants::QK_K)
        && super::decode::has_avx512()
        && rows.iter().take(n).all(|r| r.len() >= k / quants::QK_K * dtype.block().1)
    {
        let kernel = if dtype == DType::Q4_K { one_row::q4_k } else { one_row::q6_k };
        // SAFETY: the CPU has AVX-512 F and BW (checked); every row holds k / 256 blocks.
        unsafe { kernel(&rows[..n], &xs[..k], &mut yt[..n], next) };
        return;
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    if t == 1 && dtype == DType::Q8_0 && k.is_multiple_of(quants::QK) && rows.iter().take(n).all(|r| r.len() >= k / quants::QK * dtype.block().1) {
        // SAFETY: AVX2, FMA and F16C are enabled for this build; every row holds k / 32 blocks.
        unsafe { one_row::q8_0(&rows[..n], &xs[..k], &mut yt[..n], next) };
        return;
    }
    let (block, size) = dtype.block();
    // Rows are decoded slice by slice into a scratch of n · sw floats. With
    // several activation rows a slice is one summation block, so the scratch
    // stays in L1 while every activation row meets it; with one, decoding is
    // the whole cost and each row is decoded in one sequential sweep, which
    // memory streams best.
    let sw = if t == 1 { k.max(1) } else { KC };
    s.w.resize(n * sw, 0.0);
    // With AVX-512 and several activation rows, two weight rows share each
    // register (`tile_wide`); their lanes sit side by side: element (j, i)
    // at `lane(j, i)`.
    let wide = t >= 2 && wide_tiles();
    let np = n.div_ceil(2);
    let lane = |j: usize, i: usize| if wide { ((j / 2) * t + i) * 16 + (j % 2) * 8 } else { (j * t + i) * 8 };
    s.lanes.clear();
    let lanes = on_lines(&mut s.lanes, np * 2 * t * 8);
    s.tail.resize(n * 8, 0.0);
    let k8 = k - k % 8;
    for d0 in (0..k).step_by(sw) {
        let d1 = (d0 + sw).min(k);
        let (b0, b1) = (d0 / block * size, d1.div_ceil(block) * size);
        // Weights stream from memory once per call: while one row is
        // decoded, the following one (the first of `next` after the last) is
        // asked for, so it is on its way.
        for (j, bytes) in rows.iter().take(n).enumerate() {
            if t == 1 {
                let ahead = rows[..n].get(j + DECODE_AHEAD).or_else(|| next.get(j + DECODE_AHEAD - n));
                prefetch(ahead.and_then(|r| r.get(b0..b1)).unwrap_or(&[]));
            }
            super::decode::decode(dtype, &bytes[b0..b1.min(bytes.len())], &mut s.w[j * sw..j * sw + (d1 - d0)]);
        }
        // With several activation rows, the tiles of a slice take far longer
        // than a memory fetch: every row's next slice (or the first slice of
        // the rows in `next`) is asked for while they run, one row per group
        // of activation rows or more when the groups are fewer (all at once
        // would stall on the few lines a core can have in flight).
        let (ahead, span) = if d1 < k { (&rows[..n], b1..2 * b1 - b0) } else { (next, 0..b1 - b0) };
        let per = ahead.len().div_ceil(t.div_ceil(if wide { C512 } else { C })).max(1);
        let ask = |g: usize| {
            for r in ahead.iter().skip(g * per).take(if t > 1 { per } else { 0 }) {
                prefetch(r.get(span.start..span.end.min(r.len())).unwrap_or(&[]));
            }
        };
        for k0 in (d0..d1).step_by(KC) {
            let kl = (k0 + KC).min(d1).min(k8).saturating_sub(k0);
            if wide {
                let pairs = interleave(&s.w, sw, k0 - d0, kl, n, &mut s.pairs);
                for i0 in (0..t).step_by(C512) {
                    ask(i0 / C512);
                    let cc = (t - i0).min(C512);
                    for q0 in (0..np).step_by(Q512) {
                        let qq = (np - q0).min(Q512);
                        let at = lanes.start + (q0 * t + i0) * 16;
                        tile_wide(qq, cc, &s.pairs[pairs.start + q0 * 2 * KC..], &xs[i0 * k + k0..], k, kl, &mut s.lanes[at..], t);
                    }
                }
                continue;
            }
            for i0 in (0..t).step_by(C) {
                ask(i0 / C);
                let cc = (t - i0).min(C);
                // A single activation row gives each weight row one FMA chain:
                // R1 rows keep enough chains in flight to hide the FMA latency.
                let r = if cc == 1 { R1 } else { R };
                for j0 in (0..n).step_by(r) {
                    let rr = (n - j0).min(r);
                    let w = &s.w[j0 * sw + (k0 - d0)..];
                    let x = &xs[i0 * k + k0..];
                    let at = lanes.start + (j0 * t + i0) * 8;
                    tile(rr, cc, w, sw, x, k, kl, &mut s.lanes[at..], t);
                }
            }
        }
        if d1 == k && k8 < k {
            for j in 0..n {
                let w = &s.w[j * sw + (k8 - d0)..j * sw + (k - d0)];
                s.tail[j * 8..j * 8 + w.len()].copy_from_slice(w);
            }
        }
    }
    if wide {
        finish_wide(&s.lanes[lanes], &s.tail, n, xs, k, yt);
        return;
    }
    for (j, y) in yt.chunks_mut(t).take(n).enumerate() {
        let wtail = &s.tail[j * 8..j * 8 + (k - k8)];
        for (i, v) in y.iter_mut().enumerate() {
            let l = &s.lanes[lanes.start + lane(j, i)..lanes.start + lane(j, i) + 8];
            *v = finish(l, wtail, &xs[i * k + k8..(i + 1) * k]);
        }
    }
}

/// Asks for every cache line of `bytes` (a hint; nothing is read): into L1
/// when they are few (up to 1 KiB), else into L2, where a longer run does not
/// crowd out the lines being decoded (measured: L1 is better for q4_K rows of
/// 576 bytes, L2 for f16 rows of 2 KiB).
#[inline]
pub(crate) fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() <= 1024 {
        prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T0 }>(bytes)
    } else {
        prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T1 }>(bytes)
    }
}

/// Asks for every cache line of `bytes` into L2 (a hint; nothing is read).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[inline]
pub(crate) fn prefetch_l2(bytes: &[u8]) {
    prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T1 }>(bytes)
}

/// Every cache line of `bytes` with the prefetch hint `HINT`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn prefetch_lines<const HINT: i32>(bytes: &[u8]) {
    for off in (0..bytes.len()).step_by(64) {
        // SAFETY: the pointer is inside `bytes`; a prefetch never faults or changes memory.
        unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(bytes[off..].as_ptr() as *const i8) };
    }
}

/// Lanes summed in the fixed tree, then the tail by fused multiply-adds.
#[inline]
fn finish(l: &[f32], wtail: &[f32], xtail: &[f32]) -> f32 {
    let mut s = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
    for (&w, &x) in wtail.iter().zip(xtail) {
        s = w.mul_add(x, s);
    }
    s
}

/// Adds one chunk's products of `rr ≤ R` decoded rows (stride `wk`) and `cc ≤ C`
/// activation rows (stride `k`) over `kl` (a multiple of 8) elements into
/// `lanes` (element (j, i) at `(j·t + i)·8`).
#[allow(clippy::too_many_arguments)]
fn tile(rr: usize, cc: usize, w: &[f32], wk: usize, x: &[f32], k: usize, kl: usize, lanes: &mut [f32], t: usize) {
    assert!(rr <= if cc == 1 { R1 } else { R } && cc <= C && kl.is_multiple_of(8));
    assert!(w.len() >= (rr - 1) * wk + kl && x.len() >= (cc - 1) * k + kl && lanes.len() >= ((rr - 1) * t + cc) * 8);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    // SAFETY: AVX2 and FMA are enabled for this build; the bounds asserted above
    // cover every load and store the kernel makes.
    unsafe {
        match (rr, cc) {
            (4, 3) => tile_avx2::<4, 3>(w, wk, x, k, kl, lanes, t),
            (3, 3) => tile_avx2::<3, 3>(w, wk, x, k, kl, lanes, t),
            (2, 3) => tile_avx2::<2, 3>(w, wk, x, k, kl, lanes, t),
            (1, 3) => tile_avx2::<1, 3>(w, wk, x, k, kl, lanes, t),
            (4, 2) => tile_avx2::<4, 2>(w, wk, x, k, kl, lanes, t),
            (3, 2) => tile_avx2::<3, 2>(w, wk, x, k, kl, lanes, t),
            (2, 2) => tile_avx2::<2, 2>(w, wk, x, k, kl, lanes, t),
            (1, 2) => tile_avx2::<1, 2>(w, wk, x, k, kl, lanes, t),
            (8, _) => tile_avx2::<8, 1>(w, wk, x, k, kl, lanes, t),
            (7, _) => tile_avx2::<7, 1>(w, wk, x, k, kl, lanes, t),
            (6, _) => tile_avx2::<6, 1>(w, wk, x, k, kl, lanes, t),
            (5, _) => tile_avx2::<5, 1>(w, wk, x, k, kl, lanes, t),
            (4, _) => tile_avx2::<4, 1>(w, wk, x, k, kl, lanes, t),
            (3, _) => tile_avx2::<3, 1>(w, wk, x, k, kl, lanes, t),
            (2, _) => tile_avx2::<2, 1>(w, wk, x, k, kl, lanes, t),
            _ => tile_avx2::<1, 1>(w, wk, x, k, kl, lanes, t),
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    tile_ref(rr, cc, w, wk, x, k, kl, lanes, t)
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[inline]
unsafe fn tile_avx2<const RR: usize, const CC: usize>(w: &[f32], wk: usize, x: &[f32], k: usize, kl: usize, lanes: &mut [f32], t: usize) {
    use std::arch::x86_64::*;
    let (pw, px, pl) = (w.as_ptr(), x.as_ptr(), lanes.as_mut_ptr());
    let mut acc = [[_mm256_setzero_ps(); CC]; RR];
    let mut s = 0;
    while s < kl {
        let mut xv = [_mm256_setzero_ps(); CC];
        for (c, v) in xv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(px.add(c * k + s));
        }
        for (r, a) in acc.iter_mut().enumerate() {
            let wv = _mm256_loadu_ps(pw.add(r * wk + s));
            for c in 0..CC {
                a[c] = _mm256_fmadd_ps(wv, xv[c], a[c]);
            }
        }
        s += 8;
    }
    for (r, a) in acc.iter().enumerate() {
        for (c, v) in a.iter().enumerate() {
            let p = pl.add((r * t + c) * 8);
            _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), *v));
        }
    }
}

/// Whether the several-row tiles use AVX-512 (`tile_avx512`): where the CPU
/// has it and `PARITY_NO_AVX512` is not set (`decode::has_avx512`).
#[inline]
fn wide_tiles() -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    return super::decode::has_avx512();
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    false
}

/// `v` resized to hold `len` floats from a 64-byte boundary on (a cache
/// line): the range of those floats. A 64-byte load from a line boundary
/// reads one line, from elsewhere two: measured on the Xeon of 2026-12-02
/// (a C copy of `tile_avx512`, one core, L1-resident), 8 pairs × 3 rows
/// ran at 89 GMAC/s with pairs and activations on line boundaries, 74 with
/// the pairs 16 bytes off (as the heap gives them), 69 with both off.
fn on_lines(v: &mut Vec<f32>, len: usize) -> std::ops::Range<usize> {
    v.resize(len + 15, 0.0);
    let at = v.as_ptr().align_offset(64).min(15);
    at..at + len
}

/// A copy of activation rows starting on a cache line boundary, so that with
/// rows of a multiple of 16 floats every broadcast of eight (`tile_avx512`)
/// reads one line (see `on_lines` for the measured difference).
pub struct OnLines {
    buf: Vec<f32>,
    /// Where the copy lies in `buf`.
    range: std::ops::Range<usize>,
}

impl OnLines {
    pub fn copy_of(x: &[f32]) -> Self {
        let mut buf = Vec::new();
        let range = on_lines(&mut buf, x.len());
        buf[range.clone()].copy_from_slice(x);
        OnLines { buf, range }
    }

    /// Whether `x` already starts on a line boundary (no copy needed).
    pub fn is_on_lines(x: &[f32]) -> bool {
        x.as_ptr().align_offset(64) == 0
    }
}

impl std::ops::Deref for OnLines {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.range.clone()]
    }
}

impl std::ops::DerefMut for OnLines {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.range.clone()]
    }
}

/// Copies `kl` elements (from `at`) of `n` decoded rows (stride `sw`) into
/// `pairs` (on a cache line boundary, at the returned range), rows 2q and
/// 2q + 1 interleaved eight floats at a time in pair q's `2 · KC` floats (an
/// odd last row is paired with itself).
fn interleave(w: &[f32], sw: usize, at: usize, kl: usize, n: usize, pairs: &mut Vec<f32>) -> std::ops::Range<usize> {
    let range = on_lines(pairs, n.div_ceil(2) * 2 * KC);
    for (q, p) in pairs[range.clone()].chunks_mut(2 * KC).take(n.div_ceil(2)).enumerate() {
        let rows = [2 * q, (2 * q + 1).min(n - 1)].map(|j| &w[j * sw + at..j * sw + at + kl]);
        for (g, out) in p[..2 * kl].chunks_exact_mut(16).enumerate() {
            out[..8].copy_from_slice(&rows[0][8 * g..8 * g + 8]);
            out[8..].copy_from_slice(&rows[1][8 * g..8 * g + 8]);
        }
    }
    range
}

/// `finish` for the lanes of `tile_wide` (pairs of rows side by side): both
/// rows' lane trees, the same additions of the same operands as `finish`
/// (eight activation rows at a time in `lane_trees8`, else one in
/// `lane_trees`), then each row's tail (`tail`, eight floats per row) as
/// `finish` adds it.
fn finish_wide(lanes: &[f32], tail: &[f32], n: usize, xs: &[f32], k: usize, yt: &mut [f32]) {
    let (t, k8) = (xs.len() / k, k - k % 8);
    assert!(lanes.len() >= n.div_ceil(2) * t * 16 && tail.len() >= n * 8 && yt.len() >= n * t);
    for q in 0..n.div_ceil(2) {
        let mut i = 0;
        while i < t {
            let rows = (n - 2 * q).min(2);
            #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
            if t - i >= 8 {
                // SAFETY: the CPU has AVX-512 F (`wide_tiles`, the condition of the wide path); the slice holds 8 · 16 floats.
                let sums = unsafe { lane_trees8(&lanes[(q * t + i) * 16..(q * t + i + 8) * 16]) };
                for h in 0..rows {
                    yt[(2 * q + h) * t + i..(2 * q + h) * t + i + 8].copy_from_slice(&sums[8 * h..8 * h + 8]);
                }
                i += 8;
                continue;
            }
            let l = &lanes[(q * t + i) * 16..(q * t + i + 1) * 16];
            #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
            // SAFETY: the CPU has AVX-512 F (`wide_tiles`, the condition of the wide path); `l` holds 16 floats.
            let sums = unsafe { lane_trees(l) };
            #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
            let sums = [finish(&l[..8], &[], &[]), finish(&l[8..], &[], &[])];
            for (h, v) in sums.into_iter().enumerate().take(rows) {
                yt[(2 * q + h) * t + i] = v;
            }
            i += 1;
        }
    }
    if k8 < k {
        for (j, y) in yt.chunks_mut(t).take(n).enumerate() {
            for (i, v) in y.iter_mut().enumerate() {
                for (&w, &x) in tail[j * 8..j * 8 + (k - k8)].iter().zip(&xs[i * k + k8..(i + 1) * k]) {
                    *v = w.mul_add(x, *v);
                }
            }
        }
    }
}

/// `lane_trees` for eight consecutive activation rows of one pair (`l`:
/// eight 16-lane groups): the pair's first row's eight sums, then its
/// second's. A transposing tree, every addition with the operands `finish`
/// adds (floating-point addition commutes exactly, so only the pairing
/// matters): lanes j + (j + 4), then neighbours, then neighbours again.
///
/// SAFETY: the CPU has AVX-512 F; `l` holds 128 floats.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[target_feature(enable = "avx512f")]
unsafe fn lane_trees8(l: &[f32]) -> [f32; 16] {
    use std::arch::x86_64::*;
    assert!(l.len() >= 128);
    let v: [__m512; 8] = std::array::from_fn(|i| _mm512_loadu_ps(l.as_ptr().add(16 * i)));
    // Quarters of a register: (first row, lanes 0-3), (first, 4-7), (second,
    // 0-3), (second, 4-7). From two activation rows i, i + 1: lanes 0-3 of
    // (first i, second i, first i+1, second i+1), and their lanes 4-7.
    let s1: [__m512; 4] = std::array::from_fn(|m| {
        let (a, b) = (v[2 * m], v[2 * m + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(a, b), _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b))
    });
    // In every quarter, lanes (0 + 1) and (2 + 3) of two sources side by side.
    let pairs = |x: __m512, y: __m512| _mm512_add_ps(_mm512_shuffle_ps::<0b10_00_10_00>(x, y), _mm512_shuffle_ps::<0b11_01_11_01>(x, y));
    let s2 = [pairs(s1[0], s1[1]), pairs(s1[2], s1[3])];
    // Quarters: first row at activation rows 0, 2, 4, 6; second row at the
    // same; first row at 1, 3, 5, 7; second row at the same.
    let f = pairs(s2[0], s2[1]);
    let order = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    let mut out = [0f32; 16];
    _mm512_storeu_ps(out.as_mut_ptr(), _mm512_permutexvar_ps(order, f));
    out
}

/// `finish`'s lane tree, ((0+4)+(1+5))+((2+6)+(3+7)), for both halves of a
/// 16-lane register: every addition has `finish`'s operands in `finish`'s order.
///
/// SAFETY: the CPU has AVX-512 F; `l` holds 16 floats.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[target_feature(enable = "avx512f")]
unsafe fn lane_trees(l: &[f32]) -> [f32; 2] {
    use std::arch::x86_64::*;
    let v = _mm512_loadu_ps(l.as_ptr());
    // Lane i < 4 of each half: l[i] + l[i + 4].
    let a = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b10_11_00_01>(v, v));
    // Lanes 0 and 2: a[0] + a[1], a[2] + a[3].
    let b = _mm512_add_ps(a, _mm512_permute_ps::<0b10_11_00_01>(a));
    // Lane 0: b[0] + b[2].
    let c = _mm512_add_ps(b, _mm512_permute_ps::<0b01_00_11_10>(b));
    [_mm512_cvtss_f32(c), _mm256_cvtss_f32(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(c))))]
}

/// Adds one summation block's products of `qq ≤ Q512` interleaved pairs of
/// weight rows (`interleave`) and `cc ≤ C512` activation rows (stride `k`)
/// over `kl` (a multiple of 8) elements into `lanes` (pair q and activation
/// row i at `(q·t + i)·16`, the pair's first row in the low eight).
#[allow(clippy::too_many_arguments)]
fn tile_wide(qq: usize, cc: usize, pairs: &[f32], x: &[f32], k: usize, kl: usize, lanes: &mut [f32], t: usize) {
    assert!((1..=Q512).contains(&qq) && (1..=C512).contains(&cc) && kl.is_multiple_of(8) && kl <= KC);
    assert!(pairs.len() >= (qq - 1) * 2 * KC + 2 * kl && x.len() >= (cc - 1) * k + kl && lanes.len() >= ((qq - 1) * t + cc) * 16);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    // SAFETY: the CPU has AVX-512 F (`wide_tiles`, the only caller's
    // condition); the bounds asserted above cover every load and store.
    unsafe {
        match cc {
            1 => tile_wide_c::<1>(qq, pairs, x, k, kl, lanes, t),
            2 => tile_wide_c::<2>(qq, pairs, x, k, kl, lanes, t),
            _ => tile_wide_c::<3>(qq, pairs, x, k, kl, lanes, t),
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    {
        let _ = (pairs, x, k, lanes, t);
        unreachable!("wide tiles need AVX-512 (`wide_tiles` is false in this build)")
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[target_feature(enable = "avx512f")]
unsafe fn tile_wide_c<const CC: usize>(qq: usize, pairs: &[f32], x: &[f32], k: usize, kl: usize, lanes: &mut [f32], t: usize) {
    match qq {
        8 => tile_avx512::<8, CC>(pairs, x, k, kl, lanes, t),
        7 => tile_avx512::<7, CC>(pairs, x, k, kl, lanes, t),
        6 => tile_avx512::<6, CC>(pairs, x, k, kl, lanes, t),
        5 => tile_avx512::<5, CC>(pairs, x, k, kl, lanes, t),
        4 => tile_avx512::<4, CC>(pairs, x, k, kl, lanes, t),
        3 => tile_avx512::<3, CC>(pairs, x, k, kl, lanes, t),
        2 => tile_avx512::<2, CC>(pairs, x, k, kl, lanes, t),
        _ => tile_avx512::<1, CC>(pairs, x, k, kl, lanes, t),
    }
}

/// `tile_avx2` with 16-lane registers: two weight rows share one register,
/// interleaved as `interleave` stores them, and each activation row's eight
/// floats are broadcast to both halves. Every lane still takes its own
/// element's products in the same order as `tile_avx2` (one chain per lane,
/// added to the lanes at the end), so results are the same bit for bit; each
/// multiply-add serves two weight rows, and a tile of 8 pairs by 3 activation
/// rows keeps 24 chains in flight from 11 loads per 24 multiply-adds.
///
/// SAFETY: as `tile_avx2`, and the CPU has AVX-512 F.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const QQ: usize, const CC: usize>(pairs: &[f32], x: &[f32], k: usize, kl: usize, lanes: &mut [f32], t: usize) {
    use std::arch::x86_64::*;
    let (pw, px, pl) = (pairs.as_ptr(), x.as_ptr(), lanes.as_mut_ptr());
    let mut acc = [[_mm512_setzero_ps(); CC]; QQ];
    let mut s = 0;
    while s < kl {
        let xv: [__m512; CC] = std::array::from_fn(|c| _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(px.add(c * k + s))))));
        for (q, a) in acc.iter_mut().enumerate() {
            let wv = _mm512_loadu_ps(pw.add(q * 2 * KC + 2 * s));
            for c in 0..CC {
                a[c] = _mm512_fmadd_ps(wv, xv[c], a[c]);
            }
        }
        s += 8;
    }
    for (q, a) in acc.iter().enumerate() {
        for (c, v) in a.iter().enumerate() {
            let at = pl.add((q * t + c) * 16);
            _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *v));
        }
    }
}

/// The plain twin of `tile`.
#[allow(clippy::too_many_arguments)]
pub fn tile_ref(rr: usize, cc: usize, w: &[f32], wk: usize, x: &[f32], k: usize, kl: usize, lanes: &mut [f32], t: usize) {
    for r in 0..rr {
        for c in 0..cc {
            let mut chunk = [0f32; 8];
            for s in (0..kl).step_by(8) {
                for (l, a) in chunk.iter_mut().enumerate() {
                    *a = w[r * wk + s + l].mul_add(x[c * k + s + l], *a);
                }
            }
            for (l, a) in chunk.iter().enumerate() {
                lanes[(r * t + c) * 8 + l] += a;
            }
        }
    }
}

/// One element in the kernels' order, from a decoded weight row.
pub fn dot_ref(w: &[f32], x: &[f32]) -> f32 {
    let k = w.len().min(x.len());
    let k8 = k - k % 8;
    let mut lanes = [0f32; 8];
    for c0 in (0..k8).step_by(KC) {
        let mut chunk = [0f32; 8];
        for s in (c0..(c0 + KC).min(k8)).step_by(8) {
            for (l, a) in chunk.iter_mut().enumerate() {
                *a = w[s + l].mul_add(x[s + l], *a);
            }
        }
        lanes.iter_mut().zip(chunk).for_each(|(a, b)| *a += b);
    }
    finish(&lanes, &w[k8..k], &x[k8..k])
}

/// The plain twin of `rows_times_acts`: dequantise each row whole, `dot_ref`.
pub fn rows_times_acts_ref(dtype: DType, rows: &[&[u8]], xs: &[f32], k: usize, yt: &mut [f32]) {
    let t = xs.len() / k.max(1);
    let mut row = vec![0f32; k];
    for (j, bytes) in rows.iter().enumerate() {
        quants::dequantize(dtype, bytes, &mut row);
        for i in 0..t {
            yt[j * t + i] = dot_ref(&row, &xs[i * k..(i + 1) * k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(seed: u32, n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn on_lines_copies_start_on_a_cache_line_and_hold_the_same_values() {
        for n in [0, 1, 15, 16, 17, 1000] {
            let x = vals(n as u32, n);
            // Any start in the source (the heap gives 16-byte alignment).
            for off in [0, 1, 3] {
                let src = &x[off.min(n)..];
                let mut c = OnLines::copy_of(src);
                assert!(OnLines::is_on_lines(&c), "n {n} off {off}: copy not on a line");
                assert_eq!(bits(&c), bits(src), "n {n} off {off}");
                c.iter_mut().for_each(|v| *v += 1.0);
                assert_eq!(c.len(), src.len());
            }
        }
        let mut v = Vec::new();
        for len in [0, 5, 64, 3] {
            let r = on_lines(&mut v, len);
            assert_eq!((r.len(), v[r.clone()].as_ptr().align_offset(64)), (len, 0));
        }
    }

    #[test]
    fn the_kernel_equals_its_twin_bit_for_bit_at_every_shape() {
        let mut s = Scratch::default();
        for k in [8, 100, 256, 600, 1024] {
            for n in [1, 3, 4, 13, 16] {
                let rows: Vec<Vec<u8>> = (0..n).map(|j| bytemuck::cast_slice(&vals(j as u32, k)).to_vec()).collect();
                let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
                for t in [1, 2, 3, 5, 7, 13, 64] {
                    let xs = vals(100 + t as u32, t * k);
                    let (mut fast, mut plain) = (vec![0f32; n * t], vec![0f32; n * t]);
                    rows_times_acts(DType::F32, &refs, &xs, k, &mut fast, &mut s, &[]);
                    rows_times_acts_ref(DType::F32, &refs, &xs, k, &mut plain);
                    assert_eq!(bits(&fast), bits(&plain), "k = {k}, rows = {n}, t = {t}");
                }
            }
        }
    }

    /// One activation row against f16 and bf16 rows read in place (no
    /// decoded scratch): bit for bit the plain twin, with tails and short groups.
    #[test]
    fn half_rows_with_one_activation_row_equal_the_twin() {
        let mut s = Scratch::default();
        for dtype in [DType::F16, DType::BF16] {
            for k in [8, 100, 256, 600, 1024] {
                for n in [1, 3, 8, 13, 16] {
                    let rows: Vec<Vec<u8>> = (0..n)
                        .map(|j| {
                            let v = vals(j as u32 + 7, k);
                            if dtype == DType::F16 {
                                v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()
                            } else {
                                v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect()
                            }
                        })
                        .collect();
                    one_activation_row_equals_the_twin(dtype, &rows, k, &mut s);
                }
            }
        }
    }

    /// `rows` (each of `k` elements of `dtype`) times one activation row, the
    /// kernels against the plain twin, bit for bit.
    fn one_activation_row_equals_the_twin(dtype: DType, rows: &[Vec<u8>], k: usize, s: &mut Scratch) {
        let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let xs = vals(3, k);
        let n = rows.len();
        let (mut fast, mut plain) = (vec![0f32; n], vec![0f32; n]);
        rows_times_acts(dtype, &refs, &xs, k, &mut fast, s, &[]);
        rows_times_acts_ref(dtype, &refs, &xs, k, &mut plain);
        assert_eq!(bits(&fast), bits(&plain), "{dtype} k = {k}, rows = {n}");
    }

    #[test]
    fn quantised_rows_with_one_activation_row_equal_the_twin() {
        // The fused one-row kernels (and past 8 rows, their tiles); scales
        // include zero and subnormal ones. Q4_K's and Q6_K's take AVX-512 (else the
        // decoding path runs, held to the same twin).
        let mut s = Scratch::default();
        for (dtype, ks) in [(DType::Q8_0, [32, 96, 256, 288, 1024]), (DType::Q4_K, [256, 512, 768, 1024, 3072]), (DType::Q6_K, [256, 512, 768, 1024, 3072])] {
            let block = dtype.block().0;
            for k in ks {
                for n in [1, 3, 8, 13, 16] {
                    let rows: Vec<Vec<u8>> = (0..n).map(|j| crate::engine::kernels::decode::synthetic_blocks(dtype, k / block, 11 + j as u64, true)).collect();
                    one_activation_row_equals_the_twin(dtype, &rows, k, &mut s);
                }
            }
        }
    }

    #[test]
    fn quantised_rows_give_the_dequantisers_products() {
        // A Q8_0 row of 512 (two summation blocks): every block scale 1/64.
        let k = 512;
        let d = half::f16::from_f32(1.0 / 64.0).to_le_bytes();
        let row: Vec<u8> = (0..k / 32).flat_map(|b| d.into_iter().chain((0..32).map(move |i| ((b * 7 + i * 13) % 255) as u8))).collect();
        let xs = vals(5, 3 * k);
        let (mut fast, mut plain) = (vec![0f32; 3], vec![0f32; 3]);
        rows_times_acts(DType::Q8_0, &[&row], &xs, k, &mut fast, &mut Scratch::default(), &[]);
        rows_times_acts_ref(DType::Q8_0, &[&row], &xs, k, &mut plain);
        assert_eq!(bits(&fast), bits(&plain));
    }

    #[test]
    fn a_rows_result_does_not_depend_on_its_batch() {
        let k = 264;
        let row: Vec<u8> = vals(7, k).iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        let xs = vals(9, 11 * k);
        let mut s = Scratch::default();
        let mut all = vec![0f32; 11];
        rows_times_acts(DType::F16, &[&row], &xs, k, &mut all, &mut s, &[&row]);
        for i in 0..11 {
            let mut one = [0f32];
            rows_times_acts(DType::F16, &[&row], &xs[i * k..(i + 1) * k], k, &mut one, &mut s, &[]);
            assert_eq!(one[0].to_bits(), all[i].to_bits(), "row {i}");
        }
    }
}

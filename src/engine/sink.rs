//! Where the engine sends its intermediates. The engine names every stage with
//! its SPEC §1 name at the one line that computes it; a sink decides what to keep.

use std::collections::BTreeMap;

/// Receives one engine call's rows of a stage. `Send`: an engine call runs
/// on one of the worker threads (`Model::forward_rows`).
pub trait Sink: Send {
    /// Cheap check before the engine copies anything.
    fn wants(&self, name: &str) -> bool;
    /// `data` holds `rows × prod(tail)` values.
    fn record(&mut self, name: &str, tail: &[usize], data: &[f32]);
    fn record_ids(&mut self, name: &str, tail: &[usize], data: &[i32]);
    /// False when nothing will ever be wanted, so the engine can skip even
    /// building stage names.
    fn active(&self) -> bool {
        true
    }
}

/// Tracing off: nothing is kept, nothing copied.
pub struct NoSink;

impl Sink for NoSink {
    fn wants(&self, _: &str) -> bool {
        false
    }
    fn record(&mut self, _: &str, _: &[usize], _: &[f32]) {}
    fn record_ids(&mut self, _: &str, _: &[usize], _: &[i32]) {}
    fn active(&self) -> bool {
        false
    }
}

/// A recorded stage: rows appended call after call.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub tail: Vec<usize>,
    pub f32: Vec<f32>,
    pub ids: Vec<i32>,
    pub is_ids: bool,
}

impl Recorded {
    pub fn rows(&self) -> usize {
        let per: usize = self.tail.iter().product::<usize>().max(1);
        if self.is_ids {
            self.ids.len() / per
        } else {
            self.f32.len() / per
        }
    }
}

/// Keeps every stage `filter` accepts, concatenating calls along T.
pub struct Recorder<F: Fn(&str) -> bool> {
    filter: F,
    pub stages: BTreeMap<String, Recorded>,
    /// Rows each stage will hold in the end, when known (see `expecting_rows`).
    rows_hint: usize,
}

impl<F: Fn(&str) -> bool> Recorder<F> {
    pub fn new(filter: F) -> Self {
        Recorder { filter, stages: BTreeMap::new(), rows_hint: 0 }
    }

    /// Says how many rows every stage will get in all (prompt plus decode
    /// steps), so each stage's storage is reserved once, at its first record.
    /// Without it a stage grows by doubling, and the first decode step after
    /// a prefill re-copies every stage recorded so far (measured: most of the
    /// cost of a traced decode). Only a hint: more rows still fit, and a
    /// reservation that cannot be made is skipped.
    pub fn expecting_rows(mut self, rows: usize) -> Self {
        self.rows_hint = rows;
        self
    }
    fn slot(&mut self, name: &str, tail: &[usize], is_ids: bool) -> &mut Recorded {
        // Decode appends one row per stage per step: look up without allocating a key.
        if self.stages.contains_key(name) {
            return self.stages.get_mut(name).expect("present");
        }
        let want = self.rows_hint.checked_mul(tail.iter().product::<usize>()).unwrap_or(0);
        let (mut f32, mut ids) = (Vec::new(), Vec::new());
        // Reserved, not touched: pages are only mapped when rows land in them.
        let _ = if is_ids { ids.try_reserve_exact(want) } else { f32.try_reserve_exact(want) };
        self.stages.entry(name.to_string()).or_insert(Recorded { tail: tail.to_vec(), f32, ids, is_ids })
    }
}

impl<F: Fn(&str) -> bool + Send> Sink for Recorder<F> {
    fn wants(&self, name: &str) -> bool {
        (self.filter)(name)
    }
    fn record(&mut self, name: &str, tail: &[usize], data: &[f32]) {
        append(&mut self.slot(name, tail, false).f32, data);
    }
    fn record_ids(&mut self, name: &str, tail: &[usize], data: &[i32]) {
        self.slot(name, tail, true).ids.extend_from_slice(data);
    }
}

/// `v.extend_from_slice(data)`, cheaper for large appends. A recorded stage
/// lands in fresh memory, and the first touch of each page (a page fault, ~3 µs
/// each on this kind of virtual machine) is most of the cost of tracing. So a
/// large append first asks the kernel to map the pages it will write in one
/// call per thread ([`prefault`]), and then is copied by all threads.
fn append(v: &mut Vec<f32>, data: &[f32]) {
    use rayon::prelude::*;
    const PARALLEL_FROM: usize = 1 << 16; // 256 KiB of f32
    const PIECE: usize = 1 << 14; // 64 KiB: 16 pages per task
    if data.len() < PARALLEL_FROM {
        v.extend_from_slice(data);
        return;
    }
    let old = v.len();
    v.reserve(data.len());
    let spare = &mut v.spare_capacity_mut()[..data.len()];
    prefault(spare);
    spare.par_chunks_mut(PIECE).zip(data.par_chunks(PIECE)).for_each(|(dst, src)| {
        for (d, s) in dst.iter_mut().zip(src) {
            d.write(*s);
        }
    });
    // SAFETY: the first `data.len()` elements of the spare capacity were all
    // written just above (the chunks of `dst` and `src` pair up one for one).
    unsafe { v.set_len(old + data.len()) };
}

/// Maps the whole pages inside `buf` before they are written: one
/// `MADV_POPULATE_WRITE` per half, the halves on two threads. Only a hint:
/// contents are unchanged, and on failure (older kernels) the pages are
/// simply faulted in by the copy as before. Measured for the 38 MB logits of
/// a traced 64-row prefill, Zen 4 VM, 2026-12-02: 8-11 ms with 4 KiB pages;
/// asking for transparent huge pages as well (`MADV_HUGEPAGE`, with this
/// kind's `defrag=madvise`) made it 34-72 ms, so we do not ask.
fn prefault<T>(buf: &mut [std::mem::MaybeUninit<T>]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + std::mem::size_of_val(buf));
        let (from, to) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        let populate = |from: usize, to: usize| {
            if to > from {
                // SAFETY: [from, to) lies inside `buf`, memory this process owns
                // and may write; this advice changes no contents.
                unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_POPULATE_WRITE) };
            }
        };
        if to > from {
            let mid = (from + (to - from) / 2) / PAGE * PAGE;
            rayon::join(|| populate(from, mid), || populate(mid, to));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_appends_keep_every_value_in_order() {
        let mut r = Recorder::new(|_: &str| true);
        // Past 2 MiB: several pages pre-mapped on both threads.
        let big: Vec<f32> = (0..(3 << 19) + 5).map(|i| i as f32).collect();
        r.record("s", &[1], &big[..3]);
        r.record("s", &[1], &big[3..]);
        r.record("s", &[1], &big[..2]);
        // With a row hint the storage is reserved once and nothing moves.
        let mut hinted = Recorder::new(|_: &str| true).expecting_rows(big.len() + 2);
        hinted.record("s", &[1], &big[..3]);
        let at = hinted.stages["s"].f32.as_ptr();
        hinted.record("s", &[1], &big[3..]);
        hinted.record("s", &[1], &big[..2]);
        assert_eq!(hinted.stages["s"].f32.as_ptr(), at);
        assert_eq!(hinted.stages["s"].f32, r.stages["s"].f32);
        // A hint too large to reserve is skipped, not a failure.
        Recorder::new(|_: &str| true).expecting_rows(usize::MAX / 2).record("s", &[4], &big[..8]);
        let got = &r.stages["s"].f32;
        assert_eq!(got.len(), big.len() + 2);
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(&got[big.len()..], &big[..2]);
    }
}

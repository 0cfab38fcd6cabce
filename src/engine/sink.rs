//! Where the engine sends its intermediates. The engine names every stage with
//! its SPEC §1 name at the one line that computes it; a sink decides what to keep.

use std::collections::BTreeMap;

/// Receives one engine call's rows of a stage.
pub trait Sink {
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
        if self.is_ids { self.ids.len() / per } else { self.f32.len() / per }
    }
}

/// Keeps every stage `filter` accepts, concatenating calls along T.
pub struct Recorder<F: Fn(&str) -> bool> {
    filter: F,
    pub stages: BTreeMap<String, Recorded>,
}

impl<F: Fn(&str) -> bool> Recorder<F> {
    pub fn new(filter: F) -> Self {
        Recorder { filter, stages: BTreeMap::new() }
    }
    fn slot(&mut self, name: &str, tail: &[usize], is_ids: bool) -> &mut Recorded {
        // Decode appends one row per stage per step: look up without allocating a key.
        if self.stages.contains_key(name) {
            return self.stages.get_mut(name).expect("present");
        }
        self.stages.entry(name.to_string()).or_insert_with(|| Recorded {
            tail: tail.to_vec(),
            f32: Vec::new(),
            ids: Vec::new(),
            is_ids,
        })
    }
}

impl<F: Fn(&str) -> bool> Sink for Recorder<F> {
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

/// `v.extend_from_slice(data)`, with large appends copied by all threads: a
/// recorded stage lands in fresh memory, and the first touch of each page (a
/// page fault) is most of the cost of tracing, so it is spread over the cores.
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
    v.spare_capacity_mut()[..data.len()].par_chunks_mut(PIECE).zip(data.par_chunks(PIECE)).for_each(|(dst, src)| {
        for (d, s) in dst.iter_mut().zip(src) {
            d.write(*s);
        }
    });
    // SAFETY: the first `data.len()` elements of the spare capacity were all
    // written just above (the chunks of `dst` and `src` pair up one for one).
    unsafe { v.set_len(old + data.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_appends_keep_every_value_in_order() {
        let mut r = Recorder::new(|_: &str| true);
        let big: Vec<f32> = (0..(1 << 16) + 5).map(|i| i as f32).collect();
        r.record("s", &[1], &big[..3]);
        r.record("s", &[1], &big[3..]);
        r.record("s", &[1], &big[..2]);
        let got = &r.stages["s"].f32;
        assert_eq!(got.len(), big.len() + 2);
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(&got[big.len()..], &big[..2]);
    }
}

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
        self.slot(name, tail, false).f32.extend_from_slice(data);
    }
    fn record_ids(&mut self, name: &str, tail: &[usize], data: &[i32]) {
        self.slot(name, tail, true).ids.extend_from_slice(data);
    }
}

//! `parity`: a numerical parity and regression harness for LLM inference.
//!
//! Four rooms with one-way doors (see ARCHITECTURE.md):
//! `formats` → `engine` → `harness` → `report`; `cli` sits on top.

pub mod engine;
pub mod error;
pub mod formats;
pub mod harness;
pub mod report;

pub use error::{Error, Result};

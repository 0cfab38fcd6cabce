//! The harness: contracts, metrics and the comparison of a subject trace with a
//! reference. Computation only; [`render`] turns results into text.
//!
//! `contract` parses and validates a contract; `check::compare` judges two
//! traces under gates and returns a [`result::Comparison`]; `run` checks contract
//! files (resolving engine subjects) into [`result::ContractResult`]s.

pub mod bisect;
pub mod check;
pub mod contract;
pub mod diagnose;
pub mod diff;
pub mod glob;
pub mod metrics;
pub mod render;
pub mod result;
pub mod run;

pub use check::compare;
pub use contract::Contract;
pub use result::{Comparison, ContractResult, Verdict};
pub use run::{check_contract, discover, exit_code, run_all, run_contract, shard};

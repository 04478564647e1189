//! rio-provenance: does a checkpoint fit a linear blend of candidate parent checkpoints?
//!
//! For every logical tensor the candidate shares with all parents, the fit streams the fp64
//! moments of the operands ([`moments`]) over memory-mapped shards ([`reader`]), solves the least
//! squares problem from them ([`solve`]), and reports per tensor, per layer and overall, with a
//! verdict ([`report`]). [`fit`] ties these together.
pub mod fit;
pub mod moments;
pub mod reader;
pub mod report;
pub mod solve;

pub use fit::{fit, fit_checkpoints, Options, Progress};
pub use report::{Report, Thresholds, Verdict, VerdictKind};

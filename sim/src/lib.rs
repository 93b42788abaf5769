//! ruprobes-sim: a RISC-V user-mode machine that runs real programs under ruprobes.
pub mod cpu;
pub mod error;
pub mod kernel;
pub mod machine;
pub mod mem;
pub mod scenario;
pub mod seed_ffi;
pub mod space;
pub mod sv39;
pub mod symbols;
pub mod trace;

pub use error::SimError;
pub use machine::{Config, Machine, ProbeId, RunResult};

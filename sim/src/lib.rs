//! ruprobes-sim: a RISC-V user-mode machine that runs real programs under ruprobes.
//!
//! Layers, bottom up: [`mem`] (emulated physical memory and frames), [`sv39`] (page
//! tables in it), [`cpu`] (the RV64GC interpreter), [`kernel`] (processes, ELF images,
//! system calls, the cooperative scheduler), [`space`] (the engine's view of a process's
//! memory, with fault injection), [`machine`] (all of it plus a ruprobes engine and the
//! [`trace`]), [`probes`] (probe specs, tracing consumers, counters), [`scenario`] (the canonical scenarios in the QEMU kernel's block format),
//! [`symbols`] (text symbols for probe specs and traces), [`bpf`] (eBPF programs as probe
//! handlers) and [`seed_ffi`] (the
//! `extern "C"` hooks of the seed face). The `ruprobes-sim` binary is the CLI.
pub mod attach;
pub mod bpf;
pub mod cpu;
pub mod error;
pub mod kernel;
pub mod machine;
pub mod mem;
pub mod probes;
pub mod report;
pub mod scenario;
pub mod seed_ffi;
pub mod space;
pub mod sv39;
pub mod symbols;
pub mod trace;

pub use error::SimError;
pub use machine::{Config, Machine, ProbeId, RunResult};

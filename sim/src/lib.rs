//! ruprobes-sim: a RISC-V user-mode machine that runs real programs under ruprobes.
pub mod cpu;
pub mod mem;
pub mod sv39;

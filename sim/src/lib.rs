//! ruprobes-sim: a RISC-V user-mode machine that runs real programs under ruprobes.

//! Helpers of the engine tests.
#![allow(dead_code)]

use std::sync::Arc;

use ruprobes::{TrapContext, UserRegs};

#[allow(unused_imports)]
pub use ruprobes::testing::{MemSpace as FakeSpace, DATA, PAGE, TEXT, XOL_BASE};

/// Registers at a trap: pc and sp set, everything else zero.
pub fn regs_at(pc: usize, sp: usize) -> TrapContext {
    let mut cx = TrapContext {
        sepc: pc,
        ..TrapContext::default()
    };
    cx.set_reg(2, sp);
    cx
}

/// A shared log of handler calls.
pub type Log = Arc<std::sync::Mutex<Vec<String>>>;

pub fn new_log() -> Log {
    Arc::new(std::sync::Mutex::new(Vec::new()))
}

pub fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Little-endian bytes of a sequence of instructions given as (word, length) pairs.
pub fn assemble(insns: &[(u32, usize)]) -> Vec<u8> {
    insns
        .iter()
        .flat_map(|&(w, len)| w.to_le_bytes()[..len].to_vec())
        .collect()
}

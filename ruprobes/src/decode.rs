//! Instruction decoding: how long an instruction is and which class of DESIGN §3.3 it falls
//! in (rejected, simulated, emulated, stepped out of line).
//!
//! Compressed instructions are expanded to their 32-bit equivalents first, so that
//! simulation and emulation have one implementation per operation.

use crate::error::Unsupported;

/// `ebreak`, the 32-bit breakpoint.
pub const EBREAK: u32 = 0x0010_0073;
/// `c.ebreak`, the 16-bit breakpoint.
pub const C_EBREAK: u16 = 0x9002;

/// How the engine executes a probed instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// PC-relative control flow or address computation, computed in the trap handler.
    Simulate,
    /// A register-only integer operation, computed in the trap handler.
    Emulate,
    /// Everything else that is valid: copied to an out-of-line slot and single-stepped there.
    Xol,
}

/// A decoded instruction that can carry a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    raw: u32,
    len: u8,
    class: Class,
}

impl Insn {
    /// The instruction bits (the low 16 bits for a compressed instruction).
    pub fn raw(&self) -> u32 {
        self.raw
    }
    /// Length in bytes: 2 or 4.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// How the engine executes it.
    pub fn class(&self) -> Class {
        self.class
    }
}

/// Length in bytes of the instruction whose first 16-bit parcel is `parcel`, or `None` for
/// encodings of 48 bits and more (which rv64gc does not have).
pub fn insn_len(parcel: u16) -> Option<usize> {
    if parcel & 0b11 != 0b11 {
        Some(2)
    } else if parcel & 0b1_1100 != 0b1_1100 {
        Some(4)
    } else {
        None
    }
}

/// Decodes the instruction at the start of `bytes` (little-endian, 2 or more bytes).
pub fn decode(bytes: &[u8]) -> Result<Insn, Unsupported> {
    let _ = bytes;
    Err(Unsupported::Illegal)
}

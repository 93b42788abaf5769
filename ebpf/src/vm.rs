//! The interpreter: eBPF instructions over a small address space of checked regions.
//!
//! A program's pointers are not host addresses: the high 32 bits name a region (its
//! context, its stack, a global data section, a map's values) and the low 32 bits an offset
//! in it. Every load and store is checked against its region's bounds, so a program touches
//! only its context (read-only), its stack, its object's data sections and map values, and
//! errors name what was touched the same way on every host.

use alloc::vec::Vec;
use core::fmt;

use crate::helpers::{self, Env};
use crate::maps::Map;

/// Bits of an address that are the offset within a region.
pub const REGION_SHIFT: u32 = 32;
/// The context region (read-only).
pub const REGION_CTX: u64 = 1;
/// The stack region; `r10` points at its end.
pub const REGION_STACK: u64 = 2;
/// Data section `g` of the object is region `REGION_GLOBAL + g`.
pub const REGION_GLOBAL: u64 = 0x10;
/// The values of map `m` are region `REGION_MAP + m`.
pub const REGION_MAP: u64 = 0x100;
/// Map `m`'s handle (what `&map` evaluates to) is `MAP_HANDLE + m` in the high half: not
/// memory, only a helper argument.
pub const MAP_HANDLE: u64 = 0x1000;
/// The stack size (Linux's).
pub const STACK_SIZE: usize = 512;
/// Bytes of the scratch buffer helpers copy their key, value and record arguments into.
pub const SCRATCH_SIZE: usize = 4096;
/// Instructions one run may execute unless the caller sets another budget.
pub const DEFAULT_BUDGET: u64 = 1 << 20;

/// A data section of the object (`.rodata`, `.data`, `.bss`).
#[derive(Clone, Debug)]
pub struct Global {
    /// The section name.
    pub name: alloc::string::String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Whether programs may write it.
    pub writable: bool,
}

/// Why a run stopped before `exit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmError {
    /// A load or store outside every region the program may touch.
    OutOfBounds {
        /// The instruction index.
        insn: usize,
        /// Store (or a helper's write) rather than load.
        write: bool,
        /// The address, in the program's address space.
        addr: u64,
        /// The access size.
        len: usize,
    },
    /// A store into the context or a read-only section.
    ReadOnly {
        /// The instruction index.
        insn: usize,
        /// The address.
        addr: u64,
    },
    /// A helper got an argument it cannot use.
    BadArgument {
        /// The instruction index (the call).
        insn: usize,
        /// The helper's name.
        helper: &'static str,
        /// What was wrong.
        why: &'static str,
    },
    /// The run executed its whole instruction budget.
    Budget {
        /// The budget.
        limit: u64,
    },
    /// The pc left the program (a loader-checked program cannot do this).
    PcOutOfRange {
        /// The instruction index.
        insn: usize,
    },
}

/// Names a program address: `ctx+0x8`, `stack-0x10`, `map calls+0x0`, or the raw value.
pub struct Addr<'a> {
    addr: u64,
    maps: &'a [Map],
    globals: &'a [Global],
}

impl fmt::Display for Addr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (region, off) = (self.addr >> REGION_SHIFT, self.addr & 0xffff_ffff);
        match region {
            REGION_CTX => write!(f, "ctx+{off:#x}"),
            REGION_STACK if off <= STACK_SIZE as u64 => {
                write!(f, "stack-{:#x}", STACK_SIZE as u64 - off)
            }
            r if (REGION_GLOBAL..REGION_MAP).contains(&r) => {
                match self.globals.get((r - REGION_GLOBAL) as usize) {
                    Some(g) => write!(f, "{}+{off:#x}", g.name),
                    None => write!(f, "{:#x}", self.addr),
                }
            }
            r if (REGION_MAP..MAP_HANDLE).contains(&r) => {
                match self.maps.get((r - REGION_MAP) as usize) {
                    Some(m) => write!(f, "map {}+{off:#x}", m.def.name),
                    None => write!(f, "{:#x}", self.addr),
                }
            }
            _ => write!(f, "{:#x}", self.addr),
        }
    }
}

impl VmError {
    /// The error with addresses named after the regions of `maps` and `globals`.
    pub fn display<'a>(&'a self, maps: &'a [Map], globals: &'a [Global]) -> impl fmt::Display + 'a {
        Shown {
            error: self,
            maps,
            globals,
        }
    }
}

struct Shown<'a> {
    error: &'a VmError,
    maps: &'a [Map],
    globals: &'a [Global],
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = |addr| Addr {
            addr,
            maps: self.maps,
            globals: self.globals,
        };
        match *self.error {
            VmError::OutOfBounds {
                insn,
                write,
                addr: a,
                len,
            } => write!(
                f,
                "out-of-bounds {} of {len} bytes at {} (insn {insn})",
                if write { "store" } else { "load" },
                addr(a)
            ),
            VmError::ReadOnly { insn, addr: a } => {
                write!(f, "store to read-only {} (insn {insn})", addr(a))
            }
            VmError::BadArgument { insn, helper, why } => {
                write!(f, "helper {helper}: {why} (insn {insn})")
            }
            VmError::Budget { limit } => write!(f, "instruction budget of {limit} exhausted"),
            VmError::PcOutOfRange { insn } => write!(f, "pc left the program at insn {insn}"),
        }
    }
}

/// What a run can touch besides its registers.
pub struct Memory<'a> {
    /// The context bytes (read-only).
    pub ctx: &'a [u8],
    /// The stack.
    pub stack: &'a mut [u8; STACK_SIZE],
    /// The object's data sections.
    pub globals: &'a mut [Global],
    /// The object's maps.
    pub maps: &'a mut [Map],
    /// Where helpers copy their arguments (no heap allocation per call).
    pub scratch: &'a mut [u8; SCRATCH_SIZE],
    /// Whether the program runs at a function's return (`bpf_get_func_ret` works there).
    pub at_return: bool,
}

impl Memory<'_> {
    fn region(&self, addr: u64, len: usize) -> Option<(u64, usize, usize)> {
        let (region, off) = (addr >> REGION_SHIFT, (addr & 0xffff_ffff) as usize);
        let size = match region {
            REGION_CTX => self.ctx.len(),
            REGION_STACK => STACK_SIZE,
            r if (REGION_GLOBAL..REGION_MAP).contains(&r) => {
                self.globals.get((r - REGION_GLOBAL) as usize)?.bytes.len()
            }
            r if (REGION_MAP..MAP_HANDLE).contains(&r) => {
                let map = self.maps.get((r - REGION_MAP) as usize)?;
                // An access must stay inside one value slot.
                let vs = map.def.value_size as usize;
                if vs == 0 || off % vs + len > vs {
                    return None;
                }
                map.values.len()
            }
            _ => return None,
        };
        (off.checked_add(len)? <= size).then_some((region, off, size))
    }

    /// The `len` bytes at `addr`, for reading.
    pub fn load(&self, insn: usize, addr: u64, len: usize) -> Result<&[u8], VmError> {
        let oob = VmError::OutOfBounds {
            insn,
            write: false,
            addr,
            len,
        };
        let (region, off, _) = self.region(addr, len).ok_or(oob)?;
        Ok(match region {
            REGION_CTX => &self.ctx[off..off + len],
            REGION_STACK => &self.stack[off..off + len],
            r if r < REGION_MAP => {
                &self.globals[(r - REGION_GLOBAL) as usize].bytes[off..off + len]
            }
            r => &self.maps[(r - REGION_MAP) as usize].values[off..off + len],
        })
    }

    /// The `len` bytes at `addr`, for writing.
    pub fn store(&mut self, insn: usize, addr: u64, len: usize) -> Result<&mut [u8], VmError> {
        let oob = VmError::OutOfBounds {
            insn,
            write: true,
            addr,
            len,
        };
        let (region, off, _) = self.region(addr, len).ok_or(oob)?;
        let read_only = VmError::ReadOnly { insn, addr };
        Ok(match region {
            REGION_CTX => return Err(read_only),
            REGION_STACK => &mut self.stack[off..off + len],
            r if r < REGION_MAP => {
                let g = &mut self.globals[(r - REGION_GLOBAL) as usize];
                if !g.writable {
                    return Err(read_only);
                }
                &mut g.bytes[off..off + len]
            }
            r => &mut self.maps[(r - REGION_MAP) as usize].values[off..off + len],
        })
    }

    /// Copies the `len` bytes at `addr` into the scratch buffer at `at`.
    pub fn fetch(&mut self, insn: usize, addr: u64, len: usize, at: usize) -> Result<(), VmError> {
        let oob = VmError::OutOfBounds {
            insn,
            write: false,
            addr,
            len,
        };
        if at + len > SCRATCH_SIZE {
            return Err(oob);
        }
        let (region, off, _) = self.region(addr, len).ok_or(oob)?;
        let src: &[u8] = match region {
            REGION_CTX => &self.ctx[off..off + len],
            REGION_STACK => &self.stack[off..off + len],
            r if r < REGION_MAP => {
                &self.globals[(r - REGION_GLOBAL) as usize].bytes[off..off + len]
            }
            r => &self.maps[(r - REGION_MAP) as usize].values[off..off + len],
        };
        self.scratch[at..at + len].copy_from_slice(src);
        Ok(())
    }

    fn load_uint(&self, insn: usize, addr: u64, len: usize) -> Result<u64, VmError> {
        let bytes = self.load(insn, addr, len)?;
        let mut word = [0u8; 8];
        word[..len].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    fn store_uint(
        &mut self,
        insn: usize,
        addr: u64,
        len: usize,
        value: u64,
    ) -> Result<(), VmError> {
        self.store(insn, addr, len)?
            .copy_from_slice(&value.to_le_bytes()[..len]);
        Ok(())
    }
}

/// One decoded instruction slot.
#[derive(Clone, Copy)]
pub(crate) struct Insn {
    pub opc: u8,
    pub dst: usize,
    pub src: usize,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub(crate) fn decode(word: u64) -> Insn {
        Insn {
            opc: word as u8,
            dst: ((word >> 8) & 0xf) as usize,
            src: ((word >> 12) & 0xf) as usize,
            off: (word >> 16) as u16 as i16,
            imm: (word >> 32) as u32 as i32,
        }
    }
}

// Instruction classes and fields (Linux's `bpf_common.h` / `bpf.h`).
pub(crate) const CLASS_LD: u8 = 0x00;
pub(crate) const CLASS_LDX: u8 = 0x01;
pub(crate) const CLASS_ST: u8 = 0x02;
pub(crate) const CLASS_STX: u8 = 0x03;
pub(crate) const CLASS_ALU: u8 = 0x04;
pub(crate) const CLASS_JMP: u8 = 0x05;
pub(crate) const CLASS_JMP32: u8 = 0x06;
pub(crate) const CLASS_ALU64: u8 = 0x07;
pub(crate) const MODE_IMM: u8 = 0x00;
pub(crate) const MODE_MEM: u8 = 0x60;
pub(crate) const MODE_ATOMIC: u8 = 0xc0;
pub(crate) const SIZE_DW: u8 = 0x18;
pub(crate) const SRC_X: u8 = 0x08;
pub(crate) const JMP_CALL: u8 = 0x80;
pub(crate) const JMP_EXIT: u8 = 0x90;
pub(crate) const ALU_END: u8 = 0xd0;
pub(crate) const ALU_NEG: u8 = 0x80;
pub(crate) const ATOMIC_FETCH: i32 = 0x01;
pub(crate) const ATOMIC_XCHG: i32 = 0xe0 | ATOMIC_FETCH;
pub(crate) const ATOMIC_CMPXCHG: i32 = 0xf0 | ATOMIC_FETCH;

/// Access size in bytes of a load or store opcode.
pub(crate) fn size_of(opc: u8) -> usize {
    match opc & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

fn alu(op: u8, a: u64, b: u64, wide: bool) -> u64 {
    let shift_mask = if wide { 63 } else { 31 };
    let r = match op {
        0x00 => a.wrapping_add(b),
        0x10 => a.wrapping_sub(b),
        0x20 => a.wrapping_mul(b),
        0x30 => {
            if wide {
                a.checked_div(b).unwrap_or(0)
            } else {
                (a as u32).checked_div(b as u32).unwrap_or(0) as u64
            }
        }
        0x40 => a | b,
        0x50 => a & b,
        0x60 => a << (b & shift_mask),
        0x70 => {
            if wide {
                a >> (b & 63)
            } else {
                ((a as u32) >> (b & 31)) as u64
            }
        }
        ALU_NEG => a.wrapping_neg(),
        0x90 => {
            if wide {
                a.checked_rem(b).unwrap_or(a)
            } else {
                (a as u32).checked_rem(b as u32).unwrap_or(a as u32) as u64
            }
        }
        0xa0 => a ^ b,
        0xb0 => b,
        0xc0 => {
            if wide {
                ((a as i64) >> (b & 63)) as u64
            } else {
                ((a as i32) >> (b & 31)) as u32 as u64
            }
        }
        _ => unreachable_op(),
    };
    if wide {
        r
    } else {
        r as u32 as u64
    }
}

/// The loader refuses every opcode the interpreter does not know; an unknown one here
/// would be a loader bug, and yields 0 rather than a panic on the trap path.
fn unreachable_op() -> u64 {
    0
}

fn condition(op: u8, a: u64, b: u64, wide: bool) -> bool {
    let (a, b) = if wide {
        (a, b)
    } else {
        (a as u32 as u64, b as u32 as u64)
    };
    let (sa, sb) = if wide {
        (a as i64, b as i64)
    } else {
        (a as u32 as i32 as i64, b as u32 as i32 as i64)
    };
    match op {
        0x00 => true,
        0x10 => a == b,
        0x20 => a > b,
        0x30 => a >= b,
        0x40 => a & b != 0,
        0x50 => a != b,
        0x60 => sa > sb,
        0x70 => sa >= sb,
        0xa0 => a < b,
        0xb0 => a <= b,
        0xc0 => sa < sb,
        0xd0 => sa <= sb,
        _ => false,
    }
}

fn byte_swap(value: u64, bits: i32, to_be: bool) -> u64 {
    match (bits, to_be) {
        (16, false) => value as u16 as u64,
        (32, false) => value as u32 as u64,
        (16, true) => (value as u16).swap_bytes() as u64,
        (32, true) => (value as u32).swap_bytes() as u64,
        (_, true) => value.swap_bytes(),
        _ => value,
    }
}

/// Runs `insns` (loader-checked) with `r1` = the context, until `exit`; returns `r0`.
pub fn run(
    insns: &[u64],
    mem: &mut Memory<'_>,
    env: &mut dyn Env,
    budget: u64,
) -> Result<u64, VmError> {
    let mut reg = [0u64; 11];
    reg[1] = REGION_CTX << REGION_SHIFT;
    reg[10] = (REGION_STACK << REGION_SHIFT) + STACK_SIZE as u64;
    let mut pc = 0usize;
    let mut executed = 0u64;
    loop {
        executed += 1;
        if executed > budget {
            return Err(VmError::Budget { limit: budget });
        }
        let &word = insns.get(pc).ok_or(VmError::PcOutOfRange { insn: pc })?;
        let i = Insn::decode(word);
        let at = pc;
        pc += 1;
        let imm = i.imm as i64 as u64;
        match i.opc & 0x07 {
            CLASS_LD => {
                // lddw: the loader resolved relocations into the two immediates.
                let &high = insns.get(pc).ok_or(VmError::PcOutOfRange { insn: pc })?;
                reg[i.dst] = (i.imm as u32 as u64) | ((high >> 32) << 32);
                pc += 1;
            }
            CLASS_LDX => {
                let addr = reg[i.src].wrapping_add(i.off as i64 as u64);
                reg[i.dst] = mem.load_uint(at, addr, size_of(i.opc))?;
            }
            CLASS_ST => {
                let addr = reg[i.dst].wrapping_add(i.off as i64 as u64);
                mem.store_uint(at, addr, size_of(i.opc), imm)?;
            }
            CLASS_STX => {
                let addr = reg[i.dst].wrapping_add(i.off as i64 as u64);
                let len = size_of(i.opc);
                if i.opc & 0xe0 == MODE_ATOMIC {
                    let old = mem.load_uint(at, addr, len)?;
                    let operand = reg[i.src];
                    let new = match i.imm {
                        ATOMIC_XCHG => operand,
                        ATOMIC_CMPXCHG => {
                            if old == reg[0] & mask(len) {
                                operand
                            } else {
                                old
                            }
                        }
                        op => alu((op & 0xf0) as u8, old, operand, true),
                    };
                    mem.store_uint(at, addr, len, new)?;
                    if i.imm == ATOMIC_CMPXCHG {
                        reg[0] = old;
                    } else if i.imm & ATOMIC_FETCH != 0 {
                        reg[i.src] = old;
                    }
                } else {
                    mem.store_uint(at, addr, len, reg[i.src])?;
                }
            }
            class @ (CLASS_ALU | CLASS_ALU64) => {
                let wide = class == CLASS_ALU64;
                let op = i.opc & 0xf0;
                let b = if i.opc & SRC_X != 0 { reg[i.src] } else { imm };
                reg[i.dst] = if op == ALU_END {
                    byte_swap(reg[i.dst], i.imm, i.opc & SRC_X != 0)
                } else {
                    alu(op, reg[i.dst], b, wide)
                };
            }
            class => {
                let op = i.opc & 0xf0;
                match op {
                    JMP_EXIT => return Ok(reg[0]),
                    JMP_CALL => {
                        reg[0] = helpers::call(i.imm as u32, at, &reg, mem, env)?;
                        // r1..r5 are caller-saved: clobber them as the kernel does.
                        reg[1..6].fill(0);
                    }
                    _ => {
                        let b = if i.opc & SRC_X != 0 { reg[i.src] } else { imm };
                        if condition(op, reg[i.dst], b, class == CLASS_JMP) {
                            pc = (pc as i64 + i.off as i64) as usize;
                        }
                    }
                }
            }
        }
    }
}

fn mask(len: usize) -> u64 {
    if len == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * len)) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel with nothing in it.
    struct NoEnv;

    impl Env for NoEnv {
        fn read_user(&mut self, _: u64, _: &mut [u8]) -> bool {
            false
        }
        fn pid_tgid(&self) -> u64 {
            0
        }
        fn now_ns(&self) -> u64 {
            0
        }
        fn print(&mut self, _: &str) {}
    }

    fn insn(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        opc as u64
            | ((dst as u64) << 8)
            | ((src as u64) << 12)
            | ((off as u16 as u64) << 16)
            | ((imm as u32 as u64) << 32)
    }

    const EXIT: u64 = 0x95;

    fn exec(words: &[u64], budget: u64) -> Result<u64, VmError> {
        let mut stack = [0u8; STACK_SIZE];
        let mut scratch = alloc::boxed::Box::new([0u8; SCRATCH_SIZE]);
        let mut mem = Memory {
            ctx: &[7; 16],
            stack: &mut stack,
            globals: &mut [],
            maps: &mut [],
            scratch: &mut scratch,
            at_return: false,
        };
        run(words, &mut mem, &mut NoEnv, budget)
    }

    fn r0(words: &[u64]) -> u64 {
        let mut all = words.to_vec();
        all.push(EXIT);
        exec(&all, 1000).unwrap()
    }

    #[test]
    fn arithmetic_64_and_32_bit() {
        assert_eq!(
            r0(&[insn(0xb7, 0, 0, 0, -1)]),
            u64::MAX,
            "mov64 sign-extends"
        );
        assert_eq!(
            r0(&[insn(0xb4, 0, 0, 0, -1)]),
            0xffff_ffff,
            "mov32 zero-extends"
        );
        let div0 = [insn(0xb7, 0, 0, 0, 9), insn(0x37, 0, 0, 0, 0)];
        assert_eq!(r0(&div0), 0, "x / 0 = 0");
        let mod0 = [insn(0xb7, 0, 0, 0, 9), insn(0x97, 0, 0, 0, 0)];
        assert_eq!(r0(&mod0), 9, "x % 0 = x");
        let arsh = [insn(0xb7, 0, 0, 0, -16), insn(0xc7, 0, 0, 0, 2)];
        assert_eq!(r0(&arsh), (-4i64) as u64);
        let lsh = [
            insn(0xb7, 0, 0, 0, 1),
            insn(0xb7, 1, 0, 0, 65),
            insn(0x6f, 0, 1, 0, 0),
        ];
        assert_eq!(r0(&lsh), 2, "shift amounts are masked");
        let wrap32 = [insn(0xb4, 0, 0, 0, -1), insn(0x04, 0, 0, 0, 1)];
        assert_eq!(r0(&wrap32), 0, "add32 wraps at 32 bits");
        let neg = [insn(0xb7, 0, 0, 0, 5), insn(0x87, 0, 0, 0, 0)];
        assert_eq!(r0(&neg), (-5i64) as u64);
        let be16 = [insn(0xb7, 0, 0, 0, 0x1234), insn(0xdc, 0, 0, 0, 16)];
        assert_eq!(r0(&be16), 0x3412);
        let lddw = [insn(0x18, 0, 0, 0, 0x5678), insn(0, 0, 0, 0, 0x1234)];
        assert_eq!(r0(&lddw), 0x1234_0000_5678);
    }

    #[test]
    fn signed_unsigned_and_32_bit_jumps() {
        // r1 = -1; r0 = 1 if the jump is taken, else 2.
        let jump = |opc: u8, imm: i32| {
            r0(&[
                insn(0xb7, 1, 0, 0, -1),
                insn(0xb7, 0, 0, 0, 2),
                insn(opc, 1, 0, 1, imm),
                EXIT,
                insn(0xb7, 0, 0, 0, 1),
            ])
        };
        assert_eq!(jump(0x25, 0), 1, "jgt: 2^64-1 > 0");
        assert_eq!(jump(0x65, 0), 2, "jsgt: -1 > 0 is false");
        assert_eq!(jump(0xc5, 0), 1, "jslt: -1 < 0");
        assert_eq!(jump(0x15, -1), 1, "jeq with a sign-extended immediate");
        assert_eq!(jump(0x26, 0), 1, "jgt32 on the low half");
        assert_eq!(jump(0x45, 0x10), 1, "jset");
    }

    #[test]
    fn atomics_on_the_stack() {
        let words = [
            insn(0x7a, 10, 0, -8, 5),    // *(u64 *)(r10 - 8) = 5
            insn(0xb7, 1, 0, 0, 3),      // r1 = 3
            insn(0xdb, 10, 1, -8, 0x01), // r1 = fetch_add(r10 - 8, r1): 5, memory 8
            insn(0x79, 0, 10, -8, 0),    // r0 = *(u64 *)(r10 - 8)
            insn(0x0f, 0, 1, 0, 0),      // r0 += r1
        ];
        assert_eq!(r0(&words), 8 + 5);
        let cmpxchg = [
            insn(0x7a, 10, 0, -8, 5),
            insn(0xb7, 0, 0, 0, 5),
            insn(0xb7, 1, 0, 0, 9),
            insn(0xdb, 10, 1, -8, ATOMIC_CMPXCHG),
            insn(0x79, 0, 10, -8, 0),
        ];
        assert_eq!(r0(&cmpxchg), 9, "cmpxchg stored when r0 matched");
    }

    #[test]
    fn bounds_read_only_context_and_budget() {
        let oob = [insn(0x7a, 10, 0, 0, 1), EXIT];
        assert_eq!(
            exec(&oob, 100).unwrap_err(),
            VmError::OutOfBounds {
                insn: 0,
                write: true,
                addr: (REGION_STACK << REGION_SHIFT) + STACK_SIZE as u64,
                len: 8
            },
            "just past the stack"
        );
        // The context is 16 bytes: an 8-byte load at offset 12 crosses its end.
        let ctx_end = [insn(0x79, 0, 1, 12, 0), EXIT];
        assert!(matches!(
            exec(&ctx_end, 100),
            Err(VmError::OutOfBounds { .. })
        ));
        assert_eq!(r0(&[insn(0x79, 0, 1, 8, 0)]), 0x0707_0707_0707_0707);
        let ctx_store = [insn(0x7a, 1, 0, 0, 1), EXIT];
        assert!(matches!(
            exec(&ctx_store, 100),
            Err(VmError::ReadOnly { .. })
        ));
        let null = [insn(0xb7, 1, 0, 0, 0), insn(0x79, 0, 1, 0, 0), EXIT];
        assert!(matches!(exec(&null, 100), Err(VmError::OutOfBounds { .. })));
        // bpf_get_func_ret wants the context in r1 and a writable 8 bytes in r2.
        let get_ret = |r1: i32| {
            exec(
                &[
                    insn(0xbf, 2, 10, 0, 0),  // r2 = r10
                    insn(0x07, 2, 0, 0, -8),  // r2 -= 8
                    insn(0xb7, 1, 0, 0, r1),  // r1 = r1
                    insn(0x85, 0, 0, 0, 184), // call bpf_get_func_ret
                    EXIT,
                ],
                100,
            )
        };
        assert!(matches!(
            get_ret(0),
            Err(VmError::BadArgument {
                why: "r1 is not the context",
                ..
            })
        ));
        let ctx_r1 = [
            insn(0xbf, 1, 1, 0, 0), // r1 = ctx (as set at entry)
            insn(0xb7, 2, 0, 0, 0), // r2 = 0: not memory
            insn(0x85, 0, 0, 0, 184),
            EXIT,
        ];
        assert!(matches!(
            exec(&ctx_r1, 100),
            Err(VmError::OutOfBounds { write: true, .. })
        ));
        let not_at_return = [
            insn(0xbf, 2, 10, 0, 0),
            insn(0x07, 2, 0, 0, -8),
            insn(0x85, 0, 0, 0, 184),
            EXIT,
        ];
        assert_eq!(
            exec(&not_at_return, 100),
            Ok((-95i64) as u64),
            "-EOPNOTSUPP"
        );
        let spin = [insn(0x05, 0, 0, -1, 0)];
        assert_eq!(exec(&spin, 50).unwrap_err(), VmError::Budget { limit: 50 });
    }
}

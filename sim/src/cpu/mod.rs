//! The RV64IMAFDC (RV64GC) user-mode interpreter.
//!
//! [`Cpu::run`] executes until a trap or until an instruction budget is used up, and
//! reports why it stopped as a [`Stop`]. Traps are exact: on every stop other than
//! [`Stop::BudgetExhausted`], `pc` is the address of the trapping instruction (2- or 4-byte)
//! and that instruction changed nothing. `ecall` leaves `pc` at the `ecall`; the kernel
//! advances it by 4.
//!
//! Memory is reached through Sv39 translation of the table set by [`Cpu::set_page_table`].
//! Every leaf used needs `U`, `A`, and `R` for loads, `W` (and `D`) for stores, `X` for
//! fetch; anything else is a [`Stop::PageFault`]. Misaligned loads and stores are
//! performed (byte by byte across pages), like Linux user space sees them; misaligned
//! LR/SC/AMOs stop with [`Stop::Misaligned`].
//!
//! Caches: per-access-kind software TLBs ([`Cpu::flush_tlb`] after any page-table change)
//! and a decode cache that is coherent by construction with every write made through
//! [`PhysMem`] (see [`crate::mem`]), so [`Cpu::flush_icache`] is never needed for
//! correctness. Several `Cpu`s may share one `PhysMem` (e.g. one per process); each sees
//! the others' stores to code before its next run. A `Cpu` moved to another `PhysMem`
//! notices and starts afresh. On a trap the LR reservation is dropped (so is it by
//! [`Cpu::set_page_table`]); it survives [`Stop::BudgetExhausted`]. The `time` CSR reads
//! `instret / 100`, `cycle` reads `instret`: deterministic, like everything here.

pub mod decode;
mod execute;
pub mod fp;
mod icache;
mod tlb;

use crate::mem::{PhysMem, PAGE_SIZE, PHYS_BASE};
use crate::sv39::{self, PTE_A, PTE_D, PTE_R, PTE_U, PTE_W, PTE_X};
use decode::{decode16, decode32, is_32bit, Insn, Op};
pub use fp::FpRegs;
use icache::DecodeCache;
use tlb::Tlb;

/// The kind of memory access that faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Instruction fetch.
    Fetch,
    /// Load (including LR).
    Load,
    /// Store (including SC and AMOs).
    Store,
}

/// Why [`Cpu::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stop {
    /// `ecall`; `pc` is at the `ecall`.
    Ecall,
    /// `ebreak` or `c.ebreak`; `pc` is at the breakpoint.
    Breakpoint,
    /// Translation or permission failure for `access` at virtual address `addr` (for a
    /// fetch that straddles a page, `addr` may be the second page's start).
    PageFault {
        /// What kind of access faulted.
        access: Access,
        /// The virtual address that could not be accessed.
        addr: u64,
    },
    /// Unsupported or invalid instruction (privileged, reserved, a CSR other than the user
    /// counters and the F/D ones, an invalid rounding mode);
    /// `raw` holds its bits (16 bits for a compressed one).
    Illegal {
        /// The instruction bits.
        raw: u32,
    },
    /// A misaligned LR/SC/AMO, or an odd `pc` set from outside (`access` is `Fetch`).
    Misaligned {
        /// What kind of access it was.
        access: Access,
        /// The misaligned virtual address.
        addr: u64,
    },
    /// `budget` instructions retired without a trap; `pc` is the next instruction.
    BudgetExhausted,
}

/// No virtual page: forces the fetch path to look the page up.
const NO_PAGE: u64 = u64::MAX;

/// One hart's user-mode state plus its caches.
pub struct Cpu {
    /// Integer registers; `x[0]` reads as 0.
    pub x: [u64; 32],
    /// Program counter.
    pub pc: u64,
    /// F/D registers and `fcsr`.
    pub fp: FpRegs,
    instret: u64,
    root: u64,
    /// LR reservation (virtual address).
    reservation: Option<u64>,
    fetch_tlb: Tlb,
    load_tlb: Tlb,
    store_tlb: Tlb,
    icache: DecodeCache,
    /// Virtual page the fetch path currently executes from, and its decoded page.
    cur_vpn: u64,
    cur_page: usize,
    cur_frame: usize,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpu {
    /// A CPU with all registers zero, no page table (every access faults until
    /// [`Cpu::set_page_table`]), and empty caches.
    pub fn new() -> Self {
        Cpu {
            x: [0; 32],
            pc: 0,
            fp: FpRegs::default(),
            instret: 0,
            root: 0,
            reservation: None,
            fetch_tlb: Tlb::new(),
            load_tlb: Tlb::new(),
            store_tlb: Tlb::new(),
            icache: DecodeCache::default(),
            cur_vpn: NO_PAGE,
            cur_page: 0,
            cur_frame: 0,
        }
    }

    /// Switches to the Sv39 root table at physical address `root` (like writing `satp`):
    /// flushes the TLBs and drops any LR reservation.
    pub fn set_page_table(&mut self, root: u64) {
        self.root = root;
        self.reservation = None;
        self.flush_tlb();
    }

    /// The current root table's physical address.
    pub fn page_table(&self) -> u64 {
        self.root
    }

    /// `sfence.vma`: forget every cached translation. Call after changing any page table
    /// entry of the current address space.
    pub fn flush_tlb(&mut self) {
        self.fetch_tlb.flush();
        self.load_tlb.flush();
        self.store_tlb.flush();
        self.cur_vpn = NO_PAGE;
    }

    /// Drops all predecoded instructions (`fence.i` for the kernel). Never needed for
    /// correctness: the decode cache follows every write made through [`PhysMem`], and
    /// notices when it is run on a different `PhysMem`. Provided for the core's
    /// icache-flush hook and for tests.
    pub fn flush_icache(&mut self) {
        self.icache.clear();
        self.cur_vpn = NO_PAGE;
    }

    /// Instructions retired so far (trapping instructions do not count).
    pub fn instret(&self) -> u64 {
        self.instret
    }

    /// Sets the retired-instruction counter (e.g. when switching processes).
    pub fn set_instret(&mut self, value: u64) {
        self.instret = value;
    }

    /// Whether the instruction at `pc` is a breakpoint that [`run`](Self::run) would stop
    /// at right away, known without fetching it: it is in the decode cache of the page the
    /// CPU executes from, and no code was written since. After a trap on a probe at every
    /// instruction, the next one usually is; the machine then takes the trap without
    /// entering `run`. `false` says nothing.
    #[inline]
    pub fn at_known_breakpoint(&self, mem: &PhysMem) -> bool {
        if self.pc >> 12 != self.cur_vpn || self.pc & 1 != 0 || !self.icache.in_sync(mem) {
            return false;
        }
        let slot = ((self.pc & (PAGE_SIZE - 1)) >> 1) as usize;
        self.icache
            .slots
            .get(self.cur_page * icache::SLOTS + slot)
            .is_some_and(|insn| insn.op == Op::Ebreak)
    }

    /// Takes the trap of a breakpoint found by
    /// [`at_known_breakpoint`](Self::at_known_breakpoint), as `run` would have stopped.
    pub fn breakpoint_stop(&mut self) -> Stop {
        self.reservation = None;
        Stop::Breakpoint
    }

    /// Executes until a trap or until `budget` instructions have retired.
    pub fn run(&mut self, mem: &mut PhysMem, budget: u64) -> Stop {
        if self.icache.sync(mem) {
            self.cur_vpn = NO_PAGE;
        }
        // Guest control transfers keep pc even (jalr clears bit 0, offsets are even), so
        // only a pc set from outside can be odd: check it once here, not per instruction.
        if self.pc & 1 != 0 {
            return Stop::Misaligned {
                access: Access::Fetch,
                addr: self.pc,
            };
        }
        let mut left = budget;
        let stop = loop {
            if left == 0 {
                break Stop::BudgetExhausted;
            }
            let insn = match self.fetch(mem) {
                Ok(insn) => insn,
                Err(stop) => break stop,
            };
            if let Err(stop) = self.execute(mem, insn) {
                break stop;
            }
            self.x[0] = 0;
            self.instret += 1;
            left -= 1;
        };
        if stop != Stop::BudgetExhausted {
            self.reservation = None;
        }
        stop
    }

    /// The instruction at `pc`, from the decode cache when possible.
    #[inline(always)]
    fn fetch(&mut self, mem: &mut PhysMem) -> Result<Insn, Stop> {
        let vpn = self.pc >> 12;
        if vpn != self.cur_vpn {
            let frame = self.translate(mem, self.pc, Access::Fetch)? / PAGE_SIZE as usize;
            self.cur_page = self.icache.page_for(mem, frame);
            self.cur_frame = frame;
            self.cur_vpn = vpn;
        }
        let slot = ((self.pc & (PAGE_SIZE - 1)) >> 1) as usize;
        let insn = self.icache.slots[self.cur_page * icache::SLOTS + slot];
        if insn.op != Op::Undecoded {
            return Ok(insn);
        }
        self.decode_at(mem, slot)
    }

    /// Decodes the instruction at parcel `slot` of the current page and caches it unless
    /// it straddles into the next page (whose mapping may change independently).
    #[cold]
    fn decode_at(&mut self, mem: &mut PhysMem, slot: usize) -> Result<Insn, Stop> {
        let at = self.cur_frame * PAGE_SIZE as usize + slot * 2;
        let bytes = mem.bytes();
        let lo = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let insn = if !is_32bit(lo) {
            decode16(lo)
        } else if slot + 1 < icache::SLOTS {
            decode32(lo as u32 | (u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]) as u32) << 16)
        } else {
            let next = self.translate(mem, self.pc + 2, Access::Fetch)?;
            let bytes = mem.bytes();
            let hi = u16::from_le_bytes([bytes[next], bytes[next + 1]]);
            return Ok(decode32(lo as u32 | (hi as u32) << 16));
        };
        self.icache.slots[self.cur_page * icache::SLOTS + slot] = insn;
        Ok(insn)
    }

    /// Translates `va` for `access` and returns the byte offset of its frame in memory.
    #[inline(always)]
    fn translate(&mut self, mem: &PhysMem, va: u64, access: Access) -> Result<usize, Stop> {
        let vpn = va >> 12;
        let tlb = match access {
            Access::Fetch => &mut self.fetch_tlb,
            Access::Load => &mut self.load_tlb,
            Access::Store => &mut self.store_tlb,
        };
        if let Some(frame) = tlb.get(vpn) {
            return Ok(frame);
        }
        let fault = Stop::PageFault { access, addr: va };
        let (pa, flags) = sv39::translate(mem, self.root, va).ok_or(fault)?;
        let need = PTE_U
            | PTE_A
            | match access {
                Access::Fetch => PTE_X,
                Access::Load => PTE_R,
                Access::Store => PTE_W | PTE_D,
            };
        if flags & need != need {
            return Err(fault);
        }
        // translate() only returns addresses inside memory for the PTE walk, not the
        // target: check that the whole frame is real memory.
        let frame_pa = pa & !(PAGE_SIZE - 1);
        if mem.frame_of(frame_pa).is_none() {
            return Err(fault);
        }
        let frame = (frame_pa - PHYS_BASE) as usize;
        tlb.insert(vpn, frame);
        Ok(frame)
    }

    /// Loads `size` (1, 2, 4, 8) bytes at `va`, zero-extended.
    #[inline(always)]
    fn load(&mut self, mem: &PhysMem, va: u64, size: usize) -> Result<u64, Stop> {
        let off = (va & (PAGE_SIZE - 1)) as usize;
        if off + size <= PAGE_SIZE as usize {
            let at = self.translate(mem, va, Access::Load)? + off;
            Ok(read_le(&mem.bytes()[at..at + size]))
        } else {
            let first = self.translate(mem, va, Access::Load)?;
            let boundary = (va | (PAGE_SIZE - 1)).wrapping_add(1);
            let second = self.translate(mem, boundary, Access::Load)?;
            let head = PAGE_SIZE as usize - off;
            let mut buf = [0u8; 8];
            buf[..head].copy_from_slice(&mem.bytes()[first + off..first + PAGE_SIZE as usize]);
            buf[head..size].copy_from_slice(&mem.bytes()[second..second + size - head]);
            Ok(read_le(&buf[..size]))
        }
    }

    /// Stores the low `size` bytes of `value` at `va`.
    #[inline(always)]
    fn store(&mut self, mem: &mut PhysMem, va: u64, size: usize, value: u64) -> Result<(), Stop> {
        let bytes = value.to_le_bytes();
        let off = (va & (PAGE_SIZE - 1)) as usize;
        if off + size <= PAGE_SIZE as usize {
            let frame = self.translate(mem, va, Access::Store)?;
            self.note_store(mem, frame);
            write_le(&mut mem.bytes_mut()[frame + off..frame + off + size], value);
        } else {
            let first = self.translate(mem, va, Access::Store)?;
            let boundary = (va | (PAGE_SIZE - 1)).wrapping_add(1);
            let second = self.translate(mem, boundary, Access::Store)?;
            let head = PAGE_SIZE as usize - off;
            self.note_store(mem, first);
            self.note_store(mem, second);
            let m = mem.bytes_mut();
            m[first + off..first + PAGE_SIZE as usize].copy_from_slice(&bytes[..head]);
            m[second..second + size - head].copy_from_slice(&bytes[head..size]);
        }
        Ok(())
    }

    /// Keeps the decode cache coherent with a guest store into the frame at `frame`.
    #[inline(always)]
    fn note_store(&mut self, mem: &mut PhysMem, frame: usize) {
        let index = frame / PAGE_SIZE as usize;
        if mem.is_decoded(index) {
            mem.note_write(index);
            if self.icache.sync(mem) {
                self.cur_vpn = NO_PAGE;
            }
        }
    }
}

/// Writes the low `dst.len()` (1, 2, 4 or 8) bytes of `value` little-endian; constant-size
/// copies keep the store path free of `memcpy` calls.
#[inline(always)]
fn write_le(dst: &mut [u8], value: u64) {
    match dst.len() {
        1 => dst[0] = value as u8,
        2 => dst.copy_from_slice(&(value as u16).to_le_bytes()),
        4 => dst.copy_from_slice(&(value as u32).to_le_bytes()),
        8 => dst.copy_from_slice(&value.to_le_bytes()),
        n => dst.copy_from_slice(&value.to_le_bytes()[..n]),
    }
}

/// Little-endian value of up to 8 bytes.
#[inline(always)]
fn read_le(b: &[u8]) -> u64 {
    match *b {
        [a] => a as u64,
        [a, b] => u16::from_le_bytes([a, b]) as u64,
        [a, b, c, d] => u32::from_le_bytes([a, b, c, d]) as u64,
        [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        _ => b.iter().rev().fold(0, |acc, &byte| acc << 8 | byte as u64),
    }
}

#[cfg(test)]
mod tests;

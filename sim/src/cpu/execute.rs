//! Executing one predecoded instruction.
//!
//! Every memory access happens before any register or `pc` write, so an instruction that
//! traps leaves the architectural state untouched.

use super::decode::{amo, Insn, Op, CSR_CYCLE, CSR_INSTRET, CSR_TIME};
use super::{Access, Cpu, Stop};
use crate::mem::PhysMem;
use rustc_apfloat::ieee::{Double, Single};

/// Instructions per tick of the `time` CSR: a deterministic stand-in for a clock.
pub const INSNS_PER_TIME_TICK: u64 = 100;

impl Cpu {
    /// Executes `i` at `self.pc`.
    #[inline(always)]
    pub(super) fn execute(&mut self, mem: &mut PhysMem, i: Insn) -> Result<(), Stop> {
        let rs1 = self.x[(i.rs1 & 31) as usize];
        let rs2 = self.x[(i.rs2 & 31) as usize];
        let imm = i.imm as i64 as u64;
        let pc = self.pc;
        let next = pc.wrapping_add(i.len as u64);
        let rd = (i.rd & 31) as usize;
        let value = match i.op {
            Op::Lui => imm,
            Op::Auipc => pc.wrapping_add(imm),
            Op::Jal => {
                self.x[rd] = next;
                self.pc = pc.wrapping_add(imm);
                return Ok(());
            }
            Op::Jalr => {
                let target = rs1.wrapping_add(imm) & !1;
                self.x[rd] = next;
                self.pc = target;
                return Ok(());
            }
            Op::Beq | Op::Bne | Op::Blt | Op::Bge | Op::Bltu | Op::Bgeu => {
                let taken = match i.op {
                    Op::Beq => rs1 == rs2,
                    Op::Bne => rs1 != rs2,
                    Op::Blt => (rs1 as i64) < (rs2 as i64),
                    Op::Bge => (rs1 as i64) >= (rs2 as i64),
                    Op::Bltu => rs1 < rs2,
                    _ => rs1 >= rs2,
                };
                self.pc = if taken { pc.wrapping_add(imm) } else { next };
                return Ok(());
            }
            Op::Lb => self.load(mem, rs1.wrapping_add(imm), 1)? as i8 as u64,
            Op::Lh => self.load(mem, rs1.wrapping_add(imm), 2)? as i16 as u64,
            Op::Lw => self.load(mem, rs1.wrapping_add(imm), 4)? as i32 as u64,
            Op::Ld => self.load(mem, rs1.wrapping_add(imm), 8)?,
            Op::Lbu => self.load(mem, rs1.wrapping_add(imm), 1)?,
            Op::Lhu => self.load(mem, rs1.wrapping_add(imm), 2)?,
            Op::Lwu => self.load(mem, rs1.wrapping_add(imm), 4)?,
            Op::Sb | Op::Sh | Op::Sw | Op::Sd => {
                let size = match i.op {
                    Op::Sb => 1,
                    Op::Sh => 2,
                    Op::Sw => 4,
                    _ => 8,
                };
                self.store(mem, rs1.wrapping_add(imm), size, rs2)?;
                self.pc = next;
                return Ok(());
            }
            Op::Addi => rs1.wrapping_add(imm),
            Op::Slti => ((rs1 as i64) < (imm as i64)) as u64,
            Op::Sltiu => (rs1 < imm) as u64,
            Op::Xori => rs1 ^ imm,
            Op::Ori => rs1 | imm,
            Op::Andi => rs1 & imm,
            Op::Slli => rs1 << (imm & 63),
            Op::Srli => rs1 >> (imm & 63),
            Op::Srai => ((rs1 as i64) >> (imm & 63)) as u64,
            Op::Add => rs1.wrapping_add(rs2),
            Op::Sub => rs1.wrapping_sub(rs2),
            Op::Sll => rs1 << (rs2 & 63),
            Op::Slt => ((rs1 as i64) < (rs2 as i64)) as u64,
            Op::Sltu => (rs1 < rs2) as u64,
            Op::Xor => rs1 ^ rs2,
            Op::Srl => rs1 >> (rs2 & 63),
            Op::Sra => ((rs1 as i64) >> (rs2 & 63)) as u64,
            Op::Or => rs1 | rs2,
            Op::And => rs1 & rs2,
            Op::Addiw => sext32(rs1.wrapping_add(imm)),
            Op::Slliw => sext32((rs1 as u32).wrapping_shl(imm as u32) as u64),
            Op::Srliw => sext32(((rs1 as u32) >> (imm & 31)) as u64),
            Op::Sraiw => ((rs1 as i32) >> (imm & 31)) as i64 as u64,
            Op::Addw => sext32(rs1.wrapping_add(rs2)),
            Op::Subw => sext32(rs1.wrapping_sub(rs2)),
            Op::Sllw => sext32(((rs1 as u32) << (rs2 & 31)) as u64),
            Op::Srlw => sext32(((rs1 as u32) >> (rs2 & 31)) as u64),
            Op::Sraw => ((rs1 as i32) >> (rs2 & 31)) as i64 as u64,
            Op::Mul => rs1.wrapping_mul(rs2),
            Op::Mulh => ((rs1 as i64 as i128 * rs2 as i64 as i128) >> 64) as u64,
            Op::Mulhsu => ((rs1 as i64 as i128).wrapping_mul(rs2 as i128) >> 64) as u64,
            Op::Mulhu => ((rs1 as u128 * rs2 as u128) >> 64) as u64,
            Op::Div => div(rs1 as i64, rs2 as i64) as u64,
            Op::Divu => rs1.checked_div(rs2).unwrap_or(u64::MAX),
            Op::Rem => rem(rs1 as i64, rs2 as i64) as u64,
            Op::Remu => rs1.checked_rem(rs2).unwrap_or(rs1),
            Op::Mulw => sext32(rs1.wrapping_mul(rs2)),
            Op::Divw => div(rs1 as i32 as i64, rs2 as i32 as i64) as i32 as i64 as u64,
            Op::Divuw => {
                let (a, b) = (rs1 as u32, rs2 as u32);
                a.checked_div(b).unwrap_or(u32::MAX) as i32 as i64 as u64
            }
            Op::Remw => rem(rs1 as i32 as i64, rs2 as i32 as i64) as i32 as i64 as u64,
            Op::Remuw => {
                let (a, b) = (rs1 as u32, rs2 as u32);
                a.checked_rem(b).unwrap_or(a) as i32 as i64 as u64
            }
            Op::Fence => {
                self.pc = next;
                return Ok(());
            }
            Op::CsrRead => match i.imm {
                CSR_CYCLE | CSR_INSTRET => self.instret,
                CSR_TIME => self.instret / INSNS_PER_TIME_TICK,
                _ => return Err(Stop::Illegal { raw: 0 }),
            },
            Op::LrW | Op::LrD => {
                let size = if i.op == Op::LrW { 4 } else { 8 };
                if rs1 % size as u64 != 0 {
                    return Err(Stop::Misaligned {
                        access: Access::Load,
                        addr: rs1,
                    });
                }
                let v = self.load(mem, rs1, size)?;
                self.reservation = Some(rs1);
                if size == 4 {
                    v as i32 as u64
                } else {
                    v
                }
            }
            Op::ScW | Op::ScD => {
                let size = if i.op == Op::ScW { 4 } else { 8 };
                if rs1 % size as u64 != 0 {
                    return Err(Stop::Misaligned {
                        access: Access::Store,
                        addr: rs1,
                    });
                }
                let ok = self.reservation == Some(rs1);
                if ok {
                    self.store(mem, rs1, size, rs2)?;
                }
                self.reservation = None;
                (!ok) as u64
            }
            Op::AmoW | Op::AmoD => {
                let size = if i.op == Op::AmoW { 4 } else { 8 };
                if rs1 % size as u64 != 0 {
                    return Err(Stop::Misaligned {
                        access: Access::Store,
                        addr: rs1,
                    });
                }
                // Check write permission first: an AMO faults as a store even on its read.
                self.translate(mem, rs1, Access::Store)?;
                let old = self.load_for_amo(mem, rs1, size)?;
                let (a, b) = if size == 4 {
                    (old as i32 as i64 as u64, rs2 as i32 as i64 as u64)
                } else {
                    (old, rs2)
                };
                let new = match i.imm {
                    amo::SWAP => b,
                    amo::ADD => a.wrapping_add(b),
                    amo::XOR => a ^ b,
                    amo::AND => a & b,
                    amo::OR => a | b,
                    amo::MIN => (a as i64).min(b as i64) as u64,
                    amo::MAX => (a as i64).max(b as i64) as u64,
                    amo::MINU => a.min(b),
                    _ => a.max(b),
                };
                self.store(mem, rs1, size, new)?;
                a
            }
            Op::FpS(op) => return self.execute_fp::<Single>(mem, op, i),
            Op::FpD(op) => return self.execute_fp::<Double>(mem, op, i),
            Op::CsrFp => {
                self.execute_fp_csr(i);
                return Ok(());
            }
            Op::Ecall => return Err(Stop::Ecall),
            Op::Ebreak => return Err(Stop::Breakpoint),
            Op::Illegal | Op::Undecoded => return Err(Stop::Illegal { raw: i.imm as u32 }),
        };
        self.x[rd] = value;
        self.pc = next;
        Ok(())
    }

    /// The read half of an AMO, through the store TLB entry checked just before (the page
    /// is writable, hence readable: W without R is not a valid PTE).
    fn load_for_amo(&mut self, mem: &PhysMem, va: u64, size: usize) -> Result<u64, Stop> {
        let frame = self.translate(mem, va, Access::Store)?;
        let at = frame + (va & (crate::mem::PAGE_SIZE - 1)) as usize;
        Ok(super::read_le(&mem.bytes()[at..at + size]))
    }
}

#[inline(always)]
fn sext32(v: u64) -> u64 {
    v as i32 as i64 as u64
}

/// RISC-V signed division: x/0 = -1, overflow = dividend.
#[inline(always)]
fn div(a: i64, b: i64) -> i64 {
    if b == 0 {
        -1
    } else {
        a.wrapping_div(b)
    }
}

/// RISC-V signed remainder: x%0 = x, overflow = 0.
#[inline(always)]
fn rem(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        a.wrapping_rem(b)
    }
}

//! Executing simulated and emulated instructions on the trapped register state.
//!
//! Every value is computed as a 64-bit (RV64) quantity with wrapping arithmetic, so no input
//! can make the trap handler panic.

use crate::decode::{Alu, Cond, Insn, Op, Rhs};
use crate::regs::UserRegs;

impl Insn {
    /// Executes a [`Class::Simulate`](crate::decode::Class::Simulate) or
    /// [`Class::Emulate`](crate::decode::Class::Emulate) instruction located at
    /// `regs.pc()`: updates the destination register and the pc. Returns `false` (and
    /// changes nothing) for an out-of-line instruction.
    pub fn execute(&self, regs: &mut dyn UserRegs) -> bool {
        let pc = regs.pc() as u64;
        let next = pc.wrapping_add(self.len() as u64);
        let read = |regs: &dyn UserRegs, r: u8| regs.reg(usize::from(r)) as u64;
        let (rd, value, new_pc) = match self.op() {
            Op::Lui { rd, imm } => (rd, imm as u64, next),
            Op::Auipc { rd, imm } => (rd, pc.wrapping_add(imm as u64), next),
            Op::Jal { rd, offset } => (rd, next, pc.wrapping_add(offset as u64)),
            Op::Jalr { rd, rs1, offset } => {
                // rs1 is read before rd is written: `jalr ra, 0(ra)` jumps to the old ra.
                let target = read(regs, rs1).wrapping_add(offset as u64) & !1;
                (rd, next, target)
            }
            Op::Branch {
                cond,
                rs1,
                rs2,
                offset,
            } => {
                let taken = cond.holds(read(regs, rs1), read(regs, rs2));
                let target = if taken {
                    pc.wrapping_add(offset as u64)
                } else {
                    next
                };
                (0, 0, target)
            }
            Op::Alu { alu, rd, rs1, rhs } => {
                let b = match rhs {
                    Rhs::Reg(rs2) => read(regs, rs2),
                    Rhs::Imm(imm) => imm as u64,
                };
                (rd, alu.apply(read(regs, rs1), b), next)
            }
            Op::Xol => return false,
        };
        if rd != 0 {
            regs.set_reg(usize::from(rd), value as usize);
        }
        regs.set_pc(new_pc as usize);
        true
    }
}

impl Cond {
    /// Whether the branch is taken for operands `a` (rs1) and `b` (rs2).
    pub fn holds(self, a: u64, b: u64) -> bool {
        match self {
            Cond::Eq => a == b,
            Cond::Ne => a != b,
            Cond::Lt => (a as i64) < (b as i64),
            Cond::Ge => (a as i64) >= (b as i64),
            Cond::Ltu => a < b,
            Cond::Geu => a >= b,
        }
    }
}

/// Sign-extends a 32-bit result to 64 bits, as every `W` operation does.
fn sext32(x: u32) -> u64 {
    x as i32 as i64 as u64
}

impl Alu {
    /// The result of the operation on `a` (rs1) and `b` (rs2 or the immediate), per the
    /// RISC-V unprivileged spec: shift amounts are masked to 6 (5 for `W`) bits, division
    /// by zero gives all ones (quotient) or the dividend (remainder), and signed overflow
    /// (`MIN / -1`) gives `MIN` and remainder 0.
    pub fn apply(self, a: u64, b: u64) -> u64 {
        let (sa, sb) = (a as i64, b as i64);
        let (wa, wb) = (a as u32, b as u32);
        let (swa, swb) = (wa as i32, wb as i32);
        match self {
            Alu::Add => a.wrapping_add(b),
            Alu::Sub => a.wrapping_sub(b),
            Alu::Sll => a << (b & 63),
            Alu::Slt => u64::from(sa < sb),
            Alu::Sltu => u64::from(a < b),
            Alu::Xor => a ^ b,
            Alu::Srl => a >> (b & 63),
            Alu::Sra => (sa >> (b & 63)) as u64,
            Alu::Or => a | b,
            Alu::And => a & b,
            Alu::Mul => a.wrapping_mul(b),
            Alu::Mulh => ((i128::from(sa) * i128::from(sb)) >> 64) as u64,
            Alu::Mulhsu => ((i128::from(sa) * i128::from(b)) >> 64) as u64,
            Alu::Mulhu => ((u128::from(a) * u128::from(b)) >> 64) as u64,
            Alu::Div if b == 0 => u64::MAX,
            Alu::Div => sa.wrapping_div(sb) as u64,
            Alu::Divu => a.checked_div(b).unwrap_or(u64::MAX),
            Alu::Rem if b == 0 => a,
            Alu::Rem => sa.wrapping_rem(sb) as u64,
            Alu::Remu => a.checked_rem(b).unwrap_or(a),
            Alu::Addw => sext32(wa.wrapping_add(wb)),
            Alu::Subw => sext32(wa.wrapping_sub(wb)),
            Alu::Sllw => sext32(wa << (wb & 31)),
            Alu::Srlw => sext32(wa >> (wb & 31)),
            Alu::Sraw => sext32((swa >> (wb & 31)) as u32),
            Alu::Mulw => sext32(wa.wrapping_mul(wb)),
            Alu::Divw if wb == 0 => u64::MAX,
            Alu::Divw => sext32(swa.wrapping_div(swb) as u32),
            Alu::Divuw => sext32(wa.checked_div(wb).unwrap_or(u32::MAX)),
            Alu::Remw if wb == 0 => sext32(wa),
            Alu::Remw => sext32(swa.wrapping_rem(swb) as u32),
            Alu::Remuw => sext32(wa.checked_rem(wb).unwrap_or(wa)),
        }
    }
}

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
        // One small function per kind: unoptimised builds give every arm's temporaries
        // their own stack slots.
        match self.op() {
            Op::Lui { rd, imm } => retire(regs, rd, imm as u64, next),
            Op::Auipc { rd, imm } => retire(regs, rd, pc.wrapping_add(imm as u64), next),
            Op::Jal { rd, offset } => retire(regs, rd, next, pc.wrapping_add(offset as u64)),
            Op::Jalr { rd, rs1, offset } => jalr(regs, rd, rs1, offset, next),
            Op::Branch {
                cond,
                rs1,
                rs2,
                offset,
            } => branch(regs, cond, rs1, rs2, pc.wrapping_add(offset as u64), next),
            Op::Alu { alu, rd, rs1, rhs } => {
                let value = alu.apply(read(regs, rs1), operand(regs, rhs));
                retire(regs, rd, value, next)
            }
            Op::Xol => return false,
        }
        true
    }
}

fn read(regs: &dyn UserRegs, r: u8) -> u64 {
    regs.reg(usize::from(r)) as u64
}

fn operand(regs: &dyn UserRegs, rhs: Rhs) -> u64 {
    match rhs {
        Rhs::Reg(rs2) => read(regs, rs2),
        Rhs::Imm(imm) => imm as u64,
    }
}

/// Writes `value` to `rd` (unless x0) and moves the pc to `new_pc`.
fn retire(regs: &mut dyn UserRegs, rd: u8, value: u64, new_pc: u64) {
    if rd != 0 {
        regs.set_reg(usize::from(rd), value as usize);
    }
    regs.set_pc(new_pc as usize);
}

fn jalr(regs: &mut dyn UserRegs, rd: u8, rs1: u8, offset: i64, next: u64) {
    // rs1 is read before rd is written: `jalr ra, 0(ra)` jumps to the old ra.
    let target = read(regs, rs1).wrapping_add(offset as u64) & !1;
    retire(regs, rd, next, target);
}

fn branch(regs: &mut dyn UserRegs, cond: Cond, rs1: u8, rs2: u8, target: u64, next: u64) {
    let taken = cond.holds(read(regs, rs1), read(regs, rs2));
    retire(regs, 0, 0, if taken { target } else { next });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{
        b, d16, d32, i, j, r, u, TestRegs, AUIPC, JALR, LUI, OP, OP_32, OP_IMM, OP_IMM_32,
    };
    use crate::decode::{decode, Class};

    const PC: usize = 0x1_0000;

    /// Initial register values: `(register, value)` pairs.
    type Setup = &'static [(usize, u64)];

    /// Decodes and executes one instruction at `regs.pc`, which must be simulated or
    /// emulated; returns the registers afterwards.
    fn run(bytes: &[u8], mut regs: TestRegs) -> TestRegs {
        let insn = decode(bytes).unwrap();
        assert_ne!(insn.class(), Class::Xol);
        assert!(insn.execute(&mut regs));
        assert!(!regs.wrote_x0, "{:#x} wrote x0", insn.raw());
        regs
    }
    fn run32(word: u32, regs: TestRegs) -> TestRegs {
        run(&word.to_le_bytes(), regs)
    }
    fn run16(parcel: u16, regs: TestRegs) -> TestRegs {
        run(&parcel.to_le_bytes(), regs)
    }
    /// `regs` with `x{n} = v` for each pair.
    fn with(pc: usize, set: &[(usize, u64)]) -> TestRegs {
        let mut regs = TestRegs::at(pc);
        for &(n, v) in set {
            regs.x[n] = v as usize;
        }
        regs
    }

    // ----- simulated instructions -----

    #[test]
    fn auipc() {
        let out = run32(u(AUIPC, 10, 0xfffff), TestRegs::at(PC));
        assert_eq!((out.x[10], out.pc), (PC - 0x1000, PC + 4));
        let out = run32(u(AUIPC, 10, 0x7ffff), TestRegs::at(PC));
        assert_eq!(out.x[10], PC + 0x7fff_f000);
        // rd = x0: only the pc moves.
        let before = TestRegs::at(PC);
        let out = run32(u(AUIPC, 0, 0x12345), before.clone());
        assert_eq!(
            out,
            TestRegs {
                pc: PC + 4,
                ..before
            }
        );
    }

    #[test]
    fn jal() {
        let out = run32(j(1, -8), TestRegs::at(PC));
        assert_eq!((out.x[1], out.pc), (PC + 4, PC - 8));
        let out = run32(j(5, 1_048_574), TestRegs::at(PC));
        assert_eq!((out.x[5], out.pc), (PC + 4, PC + 1_048_574));
        let out = run32(j(10, -1_048_576), TestRegs::at(0x20_0000));
        assert_eq!((out.x[10], out.pc), (0x20_0004, 0x10_0000));
        // j (rd = x0): no link.
        let before = TestRegs::at(PC);
        let out = run32(j(0, 16), before.clone());
        assert_eq!(
            out,
            TestRegs {
                pc: PC + 16,
                ..before
            }
        );
    }

    #[test]
    fn jalr() {
        // Plain call through a register, negative offset.
        let out = run32(i(JALR, 1, 0, 10, -16), with(PC, &[(10, 0x2_0010)]));
        assert_eq!((out.x[1], out.pc), (PC + 4, 0x2_0000));
        // rd == rs1: the target uses the old value of rs1.
        let out = run32(i(JALR, 1, 0, 1, 8), with(PC, &[(1, 0x3_0000)]));
        assert_eq!((out.x[1], out.pc), (PC + 4, 0x3_0008));
        // rd = x0 (ret): nothing written.
        let before = with(PC, &[(1, 0x4_0000)]);
        let out = run32(0x0000_8067, before.clone());
        assert_eq!(
            out,
            TestRegs {
                pc: 0x4_0000,
                ..before
            }
        );
        // Bit 0 of the target is cleared (odd base, odd offset, both).
        let out = run32(i(JALR, 0, 0, 10, 0), with(PC, &[(10, 0x5_0001)]));
        assert_eq!(out.pc, 0x5_0000);
        let out = run32(i(JALR, 0, 0, 10, -1), with(PC, &[(10, 0x5_0000)]));
        assert_eq!(out.pc, 0x4_fffe);
        let out = run32(i(JALR, 0, 0, 10, 2047), with(PC, &[(10, 0x5_0000)]));
        assert_eq!(out.pc, 0x5_07fe);
        // The address wraps around instead of panicking.
        let out = run32(i(JALR, 0, 0, 10, 4), with(PC, &[(10, u64::MAX)]));
        assert_eq!(out.pc, 2);
    }

    /// Regression (original): `blt` was missing and `bltu` listed twice. Every branch, both
    /// directions, with operands that tell signed and unsigned comparisons apart.
    #[test]
    fn branches() {
        const NEG: u64 = -1i64 as u64;
        // (funct3, rs1 value, rs2 value, taken)
        let cases: &[(u32, u64, u64, bool)] = &[
            (0, 5, 5, true),    // beq
            (0, 5, 6, false),   // beq
            (1, 5, 6, true),    // bne
            (1, 5, 5, false),   // bne
            (4, NEG, 1, true),  // blt: -1 < 1
            (4, 1, NEG, false), // blt
            (4, 3, 3, false),   // blt equal
            (5, 1, NEG, true),  // bge: 1 >= -1
            (5, NEG, 1, false), // bge
            (5, 3, 3, true),    // bge equal
            (6, 1, NEG, true),  // bltu: 1 < 0xffff...
            (6, NEG, 1, false), // bltu
            (6, 3, 3, false),   // bltu equal
            (7, NEG, 1, true),  // bgeu
            (7, 1, NEG, false), // bgeu
            (7, 3, 3, true),    // bgeu equal
        ];
        for &(funct3, a, bv, taken) in cases {
            for offset in [-4096, -2, 8, 4094] {
                let before = with(PC, &[(10, a), (11, bv)]);
                let out = run32(b(funct3, 10, 11, offset), before.clone());
                let pc = if taken {
                    PC.wrapping_add(offset as usize)
                } else {
                    PC + 4
                };
                assert_eq!(
                    out,
                    TestRegs { pc, ..before },
                    "funct3 {funct3} {a:#x} {bv:#x} offset {offset}"
                );
            }
        }
        // x0 as an operand reads 0.
        assert_eq!(run32(b(0, 0, 0, 12), TestRegs::at(PC)).pc, PC + 12);
        assert_eq!(run32(b(4, 10, 0, 12), with(PC, &[(10, NEG)])).pc, PC + 12);
    }

    #[test]
    fn compressed_jumps() {
        // c.j -2048, c.j 2046, c.j -2
        assert_eq!(run16(0xb001, TestRegs::at(PC)).pc, PC - 2048);
        assert_eq!(run16(0xaffd, TestRegs::at(PC)).pc, PC + 2046);
        let before = TestRegs::at(PC);
        assert_eq!(
            run16(0xbffd, before.clone()),
            TestRegs {
                pc: PC - 2,
                ..before
            }
        );
        // c.jr a0 (no link), c.jr ra (ret).
        let before = with(PC, &[(10, 0x7_0000)]);
        assert_eq!(
            run16(0x8502, before.clone()),
            TestRegs {
                pc: 0x7_0000,
                ..before
            }
        );
        assert_eq!(run16(0x8082, with(PC, &[(1, 0x7_1235)])).pc, 0x7_1234);
        // c.jalr a0: ra = pc + 2 (not + 4).
        let out = run16(0x9502, with(PC, &[(10, 0x8_0000)]));
        assert_eq!((out.x[1], out.pc), (PC + 2, 0x8_0000));
        // c.jalr ra: rs1 is read before ra is written.
        let out = run16(0x9082, with(PC, &[(1, 0x9_0000)]));
        assert_eq!((out.x[1], out.pc), (PC + 2, 0x9_0000));
        // c.jalr t0 with an odd target: bit 0 cleared.
        let out = run16(0x9282, with(PC, &[(5, 0xa_0003)]));
        assert_eq!((out.x[1], out.pc), (PC + 2, 0xa_0002));
    }

    #[test]
    fn compressed_branches() {
        // c.beqz a0, -256
        assert_eq!(run16(0xd101, with(PC, &[(10, 0)])).pc, PC - 256);
        assert_eq!(run16(0xd101, with(PC, &[(10, 1)])).pc, PC + 2);
        // c.beqz s1, 254
        assert_eq!(run16(0xccfd, with(PC, &[(9, 0)])).pc, PC + 254);
        // c.bnez a5, -2
        assert_eq!(run16(0xfffd, with(PC, &[(15, 1 << 63)])).pc, PC - 2);
        assert_eq!(run16(0xfffd, with(PC, &[(15, 0)])).pc, PC + 2);
        // c.bnez s0, 86
        let before = with(PC, &[(8, u64::MAX)]);
        assert_eq!(
            run16(0xe839, before.clone()),
            TestRegs {
                pc: PC + 86,
                ..before
            }
        );
    }

    // ----- emulated instructions -----

    #[test]
    fn alu_table() {
        const MIN: u64 = i64::MIN as u64;
        const MAX: u64 = u64::MAX;
        const W_MIN: u64 = i32::MIN as i64 as u64; // 0xffff_ffff_8000_0000
        let neg = |v: i64| v as u64;
        use Alu::*;
        let cases: &[(Alu, u64, u64, u64)] = &[
            (Add, MAX, 1, 0),
            (Add, 5, neg(-7), neg(-2)),
            (Sub, 0, 1, MAX),
            (Sub, MIN, 1, MIN - 1),
            (Sll, 1, 63, MIN),
            (Sll, 1, 64 + 3, 8), // shamt masked to 6 bits
            (Srl, MIN, 63, 1),
            (Srl, MAX, 64 + 60, 0xf),
            (Sra, MIN, 63, MAX),
            (Sra, neg(-16), 2, neg(-4)),
            (Sra, 16, 2, 4),
            (Slt, neg(-1), 1, 1),
            (Slt, 1, neg(-1), 0),
            (Slt, 2, 2, 0),
            (Sltu, neg(-1), 1, 0),
            (Sltu, 1, neg(-1), 1), // sltiu rd, rs, -1: rs < 0xffff...
            (Sltu, 0, 1, 1),       // seqz
            (Xor, 0xff00, 0x0ff0, 0xf0f0),
            (Xor, 5, MAX, !5), // not
            (Or, 0xf0, 0x0f, 0xff),
            (And, 0xf0, 0x3c, 0x30),
            (Mul, 3, neg(-4), neg(-12)),
            (Mul, MIN, neg(-1), MIN),
            (Mul, 0x1_0000_0001, 0x1_0000_0001, 0x2_0000_0001),
            (Mulh, neg(-1), neg(-1), 0),
            (Mulh, MIN, MIN, 1 << 62),
            (Mulh, neg(-2), 3, MAX),
            (Mulh, 1 << 32, 1 << 32, 1),
            (Mulhsu, neg(-1), MAX, MAX),
            (Mulhsu, MIN, MAX, MIN),
            (Mulhsu, 2, MAX, 1),
            (Mulhu, MAX, MAX, MAX - 1),
            (Mulhu, MIN, 2, 1),
            (Mulhu, neg(-1), neg(-1), MAX - 1),
            (Div, 7, 2, 3),
            (Div, neg(-7), 2, neg(-3)), // rounds towards zero
            (Div, 7, 0, MAX),           // by zero: -1
            (Div, MIN, neg(-1), MIN),   // overflow
            (Divu, 7, 0, MAX),
            (Divu, MAX, 2, MAX >> 1),
            (Rem, neg(-7), 2, neg(-1)), // sign of the dividend
            (Rem, 7, neg(-2), 1),
            (Rem, 7, 0, 7),         // by zero: the dividend
            (Rem, MIN, neg(-1), 0), // overflow
            (Remu, 7, 0, 7),
            (Remu, MAX, 10, 5),
            (Addw, 0x7fff_ffff, 1, W_MIN),
            (Addw, 0xdead_0000_0000_0001, 1, 2), // upper bits ignored
            (Addw, 0, neg(-1), MAX),
            (Subw, 0, 1, MAX),
            (Subw, W_MIN, 1, 0x7fff_ffff),
            (Sllw, 1, 31, W_MIN),
            (Sllw, 1, 32 + 4, 16), // shamt masked to 5 bits
            (Sllw, 0x1_0000_0001, 0, 1),
            (Srlw, W_MIN, 0, W_MIN), // sign-extends bit 31 of the result
            (Srlw, W_MIN, 1, 0x4000_0000),
            (Srlw, MAX, 32 + 28, 0xf),
            (Sraw, W_MIN, 4, 0xffff_ffff_f800_0000),
            (Sraw, 0x8000_0000_7fff_ffff, 31, 0),
            (Mulw, 0x8000_0000, 2, 0),
            (Mulw, 0x1_0000, 0x8000, W_MIN),
            (Mulw, neg(-3), 5, neg(-15)),
            (Divw, 7, 0, MAX),
            (Divw, W_MIN, neg(-1), W_MIN), // overflow
            (Divw, neg(-7), 2, neg(-3)),
            (Divw, 0x1_0000_0006, 0x1_0000_0003, 2), // only the low words count
            (Divuw, 7, 0, MAX),
            (Divuw, 0xffff_fffe, 1, neg(-2)), // the 32-bit result is sign-extended
            (Remw, 0x1_8000_0000, 0, W_MIN),  // by zero: sext of the low word
            (Remw, W_MIN, neg(-1), 0),
            (Remw, neg(-7), 2, neg(-1)),
            (Remuw, 0x1_8000_0000, 0, W_MIN),
            (Remuw, 0xffff_ffff, 0x10, 0xf),
        ];
        for &(alu, a, bv, want) in cases {
            assert_eq!(alu.apply(a, bv), want, "{alu:?}({a:#x}, {bv:#x})");
        }
    }

    #[test]
    fn register_forms_read_both_operands() {
        // (funct7, funct3, opcode) -> alu, checked through the whole decode + execute path
        // with a1 = -7 and a2 = 3.
        let a = -7i64 as u64;
        let bv = 3;
        let cases: &[(u32, u32, u32, Alu)] = &[
            (OP, 0, 0, Alu::Add),
            (OP, 0, 0x20, Alu::Sub),
            (OP, 1, 0, Alu::Sll),
            (OP, 2, 0, Alu::Slt),
            (OP, 3, 0, Alu::Sltu),
            (OP, 4, 0, Alu::Xor),
            (OP, 5, 0, Alu::Srl),
            (OP, 5, 0x20, Alu::Sra),
            (OP, 6, 0, Alu::Or),
            (OP, 7, 0, Alu::And),
            (OP, 0, 1, Alu::Mul),
            (OP, 1, 1, Alu::Mulh),
            (OP, 2, 1, Alu::Mulhsu),
            (OP, 3, 1, Alu::Mulhu),
            (OP, 4, 1, Alu::Div),
            (OP, 5, 1, Alu::Divu),
            (OP, 6, 1, Alu::Rem),
            (OP, 7, 1, Alu::Remu),
            (OP_32, 0, 0, Alu::Addw),
            (OP_32, 0, 0x20, Alu::Subw),
            (OP_32, 1, 0, Alu::Sllw),
            (OP_32, 5, 0, Alu::Srlw),
            (OP_32, 5, 0x20, Alu::Sraw),
            (OP_32, 0, 1, Alu::Mulw),
            (OP_32, 4, 1, Alu::Divw),
            (OP_32, 5, 1, Alu::Divuw),
            (OP_32, 6, 1, Alu::Remw),
            (OP_32, 7, 1, Alu::Remuw),
        ];
        for &(opcode, funct3, funct7, alu) in cases {
            let before = with(PC, &[(11, a), (12, bv)]);
            let out = run32(r(opcode, 10, funct3, 11, 12, funct7), before.clone());
            let mut want = before;
            want.x[10] = alu.apply(a, bv) as usize;
            want.pc = PC + 4;
            assert_eq!(out, want, "{alu:?}");
        }
        // Spot checks of the above against hand-computed values.
        let out = run32(r(OP, 10, 4, 11, 12, 1), with(PC, &[(11, a), (12, bv)]));
        assert_eq!(out.x[10] as i64, -2); // div -7 / 3
        let out = run32(r(OP, 10, 5, 11, 12, 0x20), with(PC, &[(11, a), (12, bv)]));
        assert_eq!(out.x[10] as i64, -1); // sra -7 >> 3
    }

    #[test]
    fn immediate_forms() {
        let at = |set: &[(usize, u64)]| with(PC, set);
        // addi sp, sp, -16 (0xff010113)
        let out = run32(0xff01_0113, at(&[(2, 0x4000_0000)]));
        assert_eq!((out.x[2], out.pc), (0x3fff_fff0, PC + 4));
        // slti / sltiu with a negative immediate.
        assert_eq!(
            run32(i(OP_IMM, 10, 2, 11, -1), at(&[(11, -2i64 as u64)])).x[10],
            1
        );
        assert_eq!(run32(i(OP_IMM, 10, 3, 11, -1), at(&[(11, 5)])).x[10], 1);
        assert_eq!(
            run32(i(OP_IMM, 10, 3, 11, -1), at(&[(11, u64::MAX)])).x[10],
            0
        );
        // xori -1 (not), ori, andi with sign-extended immediates.
        assert_eq!(
            run32(i(OP_IMM, 10, 4, 11, -1), at(&[(11, 0)])).x[10],
            usize::MAX
        );
        assert_eq!(
            run32(i(OP_IMM, 10, 6, 11, -2048), at(&[(11, 1)])).x[10] as i64,
            -2047
        );
        assert_eq!(
            run32(i(OP_IMM, 10, 7, 11, -16), at(&[(11, 0xff)])).x[10],
            0xf0
        );
        // slli/srli/srai by 63.
        assert_eq!(run32(0x03f5_9513, at(&[(11, 1)])).x[10], 1 << 63);
        assert_eq!(
            run32(r(OP_IMM, 10, 5, 11, 31, 1), at(&[(11, 1 << 63)])).x[10],
            1
        );
        assert_eq!(run32(0x43f5_d513, at(&[(11, 1 << 63)])).x[10], usize::MAX);
        // addiw, slliw, srliw, sraiw.
        assert_eq!(
            run32(i(OP_IMM_32, 10, 0, 11, 1), at(&[(11, 0x7fff_ffff)])).x[10],
            0xffff_ffff_8000_0000
        );
        assert_eq!(
            run32(i(OP_IMM_32, 10, 0, 11, 0), at(&[(11, 0x1_ffff_ffff)])).x[10],
            usize::MAX
        ); // sext.w
        assert_eq!(
            run32(r(OP_IMM_32, 10, 1, 11, 31, 0), at(&[(11, 1)])).x[10],
            0xffff_ffff_8000_0000
        );
        assert_eq!(
            run32(r(OP_IMM_32, 10, 5, 11, 31, 0), at(&[(11, 0x8000_0000)])).x[10],
            1
        );
        assert_eq!(
            run32(0x4035_d51b, at(&[(11, 0x8000_0000)])).x[10],
            0xffff_ffff_f000_0000
        ); // sraiw 3
           // lui
        assert_eq!(
            run32(u(LUI, 10, 0x80000), TestRegs::at(PC)).x[10],
            0xffff_ffff_8000_0000
        );
        assert_eq!(
            run32(u(LUI, 10, 0x7ffff), TestRegs::at(PC)).x[10],
            0x7fff_f000
        );
    }

    #[test]
    fn writes_to_x0_are_dropped() {
        for word in [
            i(OP_IMM, 0, 0, 5, 7), // addi x0, t0, 7
            u(LUI, 0, 0x12345),    // lui x0
            r(OP, 0, 0, 5, 6, 0),  // add x0, t0, t1
            r(OP, 0, 4, 5, 6, 1),  // div x0
            j(0, 64),              // j
            i(JALR, 0, 0, 5, 0),   // jr t0
        ] {
            let before = TestRegs::at(PC);
            let out = run32(word, before.clone());
            assert_eq!(out.x, before.x, "{word:#010x}");
        }
        for parcel in [0x0001u16, 0x0005, 0x4001, 0x6005, 0x800e, 0x900e, 0x0002] {
            let before = TestRegs::at(PC);
            let out = run16(parcel, before.clone());
            assert_eq!(
                out,
                TestRegs {
                    pc: PC + 2,
                    ..before
                },
                "{parcel:#06x}"
            );
        }
    }

    /// Regression (original): `c.addi4spn` was treated as an sp adjustment.
    #[test]
    fn c_addi4spn_leaves_sp_alone() {
        let before = with(PC, &[(2, 0x3fff_ff00)]);
        let out = run16(0x1fe8, before.clone()); // c.addi4spn a0, sp, 1020
        let mut want = before;
        want.x[10] = 0x3fff_ff00 + 1020;
        want.pc = PC + 2;
        assert_eq!(out, want);
        assert_eq!(out.x[2], 0x3fff_ff00);
        assert_eq!(run16(0x0800, with(PC, &[(2, 0x1000)])).x[8], 0x1010); // s0 = sp + 16
    }

    /// Peer regression: `c.addiw` was rejected.
    #[test]
    fn c_addiw() {
        let out = run16(0x357d, with(PC, &[(10, 0x8000_0000)])); // c.addiw a0, -1
        assert_eq!((out.x[10], out.pc), (0x7fff_ffff, PC + 2));
        let out = run16(0x2501, with(PC, &[(10, 0x1_8000_0000)])); // sext.w a0
        assert_eq!(out.x[10], 0xffff_ffff_8000_0000);
    }

    /// Peer regression: `c.mv` was decoded as `c.jr` (it must not jump).
    #[test]
    fn c_mv_copies_without_jumping() {
        let before = with(PC, &[(11, 0xabcd)]);
        let out = run16(0x852e, before.clone()); // c.mv a0, a1
        let mut want = before;
        want.x[10] = 0xabcd;
        want.pc = PC + 2;
        assert_eq!(out, want);
    }

    /// Peer regression: the `c.jalr` mask matched `c.ebreak`.
    #[test]
    fn c_ebreak_is_never_executed() {
        assert!(d16(crate::decode::C_EBREAK).is_err());
        assert!(d32(crate::decode::EBREAK).is_err());
    }

    #[test]
    fn compressed_alu() {
        let at = |set: &[(usize, u64)]| with(PC, set);
        // (instruction, initial registers, rd, expected rd)
        let cases: &[(u16, Setup, usize, u64)] = &[
            (0x1501, &[(10, 100)], 10, 68),                  // c.addi a0, -32
            (0x057d, &[(10, 1)], 10, 32),                    // c.addi a0, 31
            (0x7101, &[(2, 0x4000_0000)], 2, 0x3fff_fe00),   // c.addi16sp -512
            (0x717d, &[(2, 0x4000_0000)], 2, 0x3fff_fff0),   // c.addi16sp -16
            (0x617d, &[(2, 0x4000_0000)], 2, 0x4000_01f0),   // c.addi16sp 496
            (0x005c, &[(2, 0x1000)], 15, 0x1004),            // c.addi4spn a5, sp, 4
            (0x5501, &[], 10, -32i64 as u64),                // c.li a0, -32
            (0x437d, &[], 6, 31),                            // c.li t1, 31
            (0x7501, &[], 10, 0xffff_ffff_fffe_0000),        // c.lui a0, 0xfffe0
            (0x64fd, &[], 9, 0x1f000),                       // c.lui s1, 0x1f
            (0x952e, &[(10, 1), (11, 2)], 10, 3),            // c.add a0, a1
            (0x913e, &[(2, 0x100), (15, 0x10)], 2, 0x110),   // c.add sp, a5
            (0x808a, &[(2, 0x4000_0000)], 1, 0x4000_0000),   // c.mv ra, sp
            (0x917d, &[(10, 1 << 63)], 10, 1),               // c.srli a0, 63
            (0x8485, &[(9, -4i64 as u64)], 9, -2i64 as u64), // c.srai s1, 1
            (0x9781, &[(15, 1 << 63)], 15, 0xffff_ffff_8000_0000), // c.srai a5, 32
            (0x997d, &[(10, 0x1234)], 10, 0x1234),           // c.andi a0, -1
            (0x8841, &[(8, 0xff)], 8, 0x10),                 // c.andi s0, 16
            (0x157e, &[(10, 1)], 10, 1 << 63),               // c.slli a0, 63
            (0x0086, &[(1, 3)], 1, 6),                       // c.slli ra, 1
            (0x8d0d, &[(10, 1), (11, 2)], 10, u64::MAX),     // c.sub a0, a1
            (0x8c25, &[(8, 0b1100), (9, 0b1010)], 8, 0b0110), // c.xor s0, s1
            (0x8f5d, &[(14, 0b1100), (15, 0b1010)], 14, 0b1110), // c.or a4, a5
            (0x8e75, &[(12, 0b1100), (13, 0b1010)], 12, 0b1000), // c.and a2, a3
            (0x9d1d, &[(10, 0), (15, 1)], 10, u64::MAX),     // c.subw a0, a5
            (
                0x9ca9,
                &[(9, 0x7fff_ffff), (10, 1)],
                9,
                0xffff_ffff_8000_0000,
            ), // c.addw s1, a0
        ];
        for &(parcel, set, rd, want) in cases {
            let before = at(set);
            let out = run16(parcel, before.clone());
            let mut expect = before;
            expect.x[rd] = want as usize;
            expect.pc = PC + 2;
            assert_eq!(out, expect, "{parcel:#06x}");
        }
    }

    #[test]
    fn out_of_line_instructions_change_nothing() {
        for bytes in [
            &0xff84_3503u32.to_le_bytes()[..], // ld a0, -8(s0)
            &0x00b6_252fu32.to_le_bytes()[..], // amoadd.w
            &0x0330_000fu32.to_le_bytes()[..], // fence rw, rw
            &0x02c5_f553u32.to_le_bytes()[..], // fadd.d
            &0xe406u16.to_le_bytes()[..],      // c.sdsp ra, 8(sp)
            &0x5fe8u16.to_le_bytes()[..],      // c.lw a0, 124(a5)
        ] {
            let insn = decode(bytes).unwrap();
            assert_eq!(insn.class(), Class::Xol);
            let before = TestRegs::at(PC);
            let mut regs = before.clone();
            assert!(!insn.execute(&mut regs));
            assert_eq!(regs, before);
        }
    }

    #[test]
    fn pc_wraps_instead_of_panicking() {
        let out = run16(0x0001, TestRegs::at(usize::MAX - 1)); // c.nop at the top
        assert_eq!(out.pc, 0);
        let out = run32(j(0, 8), TestRegs::at(usize::MAX - 3));
        assert_eq!(out.pc, 4);
    }
}

//! Instruction decoding: how long an instruction is and which class of DESIGN §3.3 it falls
//! in (rejected, simulated, emulated, stepped out of line).
//!
//! Compressed instructions are expanded to their 32-bit equivalents first, so that
//! simulation and emulation have one implementation per operation ([`Op`]).

use crate::error::Unsupported;
use Unsupported::Illegal;

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
    op: Op,
}

// An instruction is never empty, so `is_empty` would be meaningless.
#[allow(clippy::len_without_is_empty)]
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
        match self.op {
            Op::Auipc { .. } | Op::Jal { .. } | Op::Jalr { .. } | Op::Branch { .. } => {
                Class::Simulate
            }
            Op::Lui { .. } | Op::Alu { .. } => Class::Emulate,
            Op::Xol => Class::Xol,
        }
    }
    /// The operation, compressed forms already expanded.
    pub fn op(&self) -> Op {
        self.op
    }
}

/// What an instruction does, as far as the engine computes it itself. Register numbers are
/// 0..=31; immediates are already sign-extended (and shifted, for `lui`/`auipc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `rd = imm`.
    Lui {
        /// Destination register.
        rd: u8,
        /// The upper immediate, sign-extended.
        imm: i64,
    },
    /// `rd = pc + imm`.
    Auipc {
        /// Destination register.
        rd: u8,
        /// The upper immediate, sign-extended.
        imm: i64,
    },
    /// `rd = pc + len; pc += offset`.
    Jal {
        /// Link register.
        rd: u8,
        /// Jump offset from the instruction's address.
        offset: i64,
    },
    /// `t = (rs1 + offset) & !1; rd = pc + len; pc = t`.
    Jalr {
        /// Link register.
        rd: u8,
        /// Base register.
        rs1: u8,
        /// Offset added to the base.
        offset: i64,
    },
    /// `if cond(rs1, rs2) { pc += offset }`.
    Branch {
        /// The comparison.
        cond: Cond,
        /// Left operand.
        rs1: u8,
        /// Right operand.
        rs2: u8,
        /// Branch offset from the instruction's address.
        offset: i64,
    },
    /// `rd = alu(rs1, rhs)`.
    Alu {
        /// The operation.
        alu: Alu,
        /// Destination register.
        rd: u8,
        /// Left operand.
        rs1: u8,
        /// Right operand.
        rhs: Rhs,
    },
    /// Anything else: stepped out of line.
    Xol,
}

/// The comparison of a conditional branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    /// `beq`.
    Eq,
    /// `bne`.
    Ne,
    /// `blt` (signed).
    Lt,
    /// `bge` (signed).
    Ge,
    /// `bltu`.
    Ltu,
    /// `bgeu`.
    Geu,
}

/// The right operand of an ALU operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rhs {
    /// A register.
    Reg(u8),
    /// A sign-extended immediate (or shift amount).
    Imm(i64),
}

/// An integer register-register or register-immediate operation (RV64I + M). The `W` forms
/// work on the low 32 bits and sign-extend the 32-bit result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the names are the mnemonics
pub enum Alu {
    Add,
    Sub,
    Sll,
    Slt,
    Sltu,
    Xor,
    Srl,
    Sra,
    Or,
    And,
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
    Addw,
    Subw,
    Sllw,
    Srlw,
    Sraw,
    Mulw,
    Divw,
    Divuw,
    Remw,
    Remuw,
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
///
/// A 32-bit instruction needs 4 bytes: with only its first 2 it is [`Unsupported::Illegal`].
pub fn decode(bytes: &[u8]) -> Result<Insn, Unsupported> {
    let [b0, b1, rest @ ..] = bytes else {
        return Err(Unsupported::Illegal);
    };
    let parcel = u16::from_le_bytes([*b0, *b1]);
    match (insn_len(parcel), rest) {
        (Some(2), _) => Ok(Insn {
            raw: u32::from(parcel),
            len: 2,
            op: decode16(parcel)?,
        }),
        (Some(4), [b2, b3, ..]) => {
            let raw = u32::from_le_bytes([*b0, *b1, *b2, *b3]);
            Ok(Insn {
                raw,
                len: 4,
                op: decode32(raw)?,
            })
        }
        _ => Err(Unsupported::Illegal),
    }
}

/// Bits `hi..=lo` of `x`, shifted down.
const fn bits(x: u32, hi: u32, lo: u32) -> u32 {
    (x >> lo) & ((1 << (hi - lo + 1)) - 1)
}

/// Sign-extends the low `width` bits of `x`.
const fn sext(x: u32, width: u32) -> i64 {
    let shift = 64 - width;
    ((x as u64) << shift) as i64 >> shift
}

/// `rd`, `rs1`, `rs2` fields of a 32-bit instruction.
fn reg(raw: u32, lo: u32) -> u8 {
    bits(raw, lo + 4, lo) as u8
}

fn alu_imm(alu: Alu, rd: u8, rs1: u8, imm: i64) -> Op {
    Op::Alu {
        alu,
        rd,
        rs1,
        rhs: Rhs::Imm(imm),
    }
}

fn alu_reg(alu: Alu, rd: u8, rs1: u8, rs2: u8) -> Op {
    Op::Alu {
        alu,
        rd,
        rs1,
        rhs: Rhs::Reg(rs2),
    }
}

/// Decodes a 32-bit instruction (its low two bits are `11`).
fn decode32(raw: u32) -> Result<Op, Unsupported> {
    let (rd, rs1, rs2) = (reg(raw, 7), reg(raw, 15), reg(raw, 20));
    let funct3 = bits(raw, 14, 12);
    let funct7 = bits(raw, 31, 25);
    let imm_i = sext(bits(raw, 31, 20), 12);
    let imm_u = sext(raw & 0xffff_f000, 32);
    match raw & 0x7f {
        0x37 => Ok(Op::Lui { rd, imm: imm_u }),
        0x17 => Ok(Op::Auipc { rd, imm: imm_u }),
        0x6f => {
            let imm = bits(raw, 31, 31) << 20
                | bits(raw, 19, 12) << 12
                | bits(raw, 20, 20) << 11
                | bits(raw, 30, 21) << 1;
            Ok(Op::Jal {
                rd,
                offset: sext(imm, 21),
            })
        }
        0x67 if funct3 == 0 => Ok(Op::Jalr {
            rd,
            rs1,
            offset: imm_i,
        }),
        0x63 => {
            let cond = match funct3 {
                0 => Cond::Eq,
                1 => Cond::Ne,
                4 => Cond::Lt,
                5 => Cond::Ge,
                6 => Cond::Ltu,
                7 => Cond::Geu,
                _ => return Err(Illegal),
            };
            let imm = bits(raw, 31, 31) << 12
                | bits(raw, 7, 7) << 11
                | bits(raw, 30, 25) << 5
                | bits(raw, 11, 8) << 1;
            Ok(Op::Branch {
                cond,
                rs1,
                rs2,
                offset: sext(imm, 13),
            })
        }
        0x13 => {
            let shamt = i64::from(bits(raw, 25, 20));
            let funct6 = bits(raw, 31, 26);
            let alu = match (funct3, funct6) {
                (0, _) => Alu::Add,
                (2, _) => Alu::Slt,
                (3, _) => Alu::Sltu,
                (4, _) => Alu::Xor,
                (6, _) => Alu::Or,
                (7, _) => Alu::And,
                (1, 0) => return Ok(alu_imm(Alu::Sll, rd, rs1, shamt)),
                (5, 0) => return Ok(alu_imm(Alu::Srl, rd, rs1, shamt)),
                (5, 0x10) => return Ok(alu_imm(Alu::Sra, rd, rs1, shamt)),
                _ => return Err(Illegal),
            };
            Ok(alu_imm(alu, rd, rs1, imm_i))
        }
        0x1b => {
            let shamt = i64::from(rs2);
            match (funct3, funct7) {
                (0, _) => Ok(alu_imm(Alu::Addw, rd, rs1, imm_i)),
                (1, 0) => Ok(alu_imm(Alu::Sllw, rd, rs1, shamt)),
                (5, 0) => Ok(alu_imm(Alu::Srlw, rd, rs1, shamt)),
                (5, 0x20) => Ok(alu_imm(Alu::Sraw, rd, rs1, shamt)),
                _ => Err(Illegal),
            }
        }
        0x33 => {
            let alu = match (funct7, funct3) {
                (0, 0) => Alu::Add,
                (0x20, 0) => Alu::Sub,
                (0, 1) => Alu::Sll,
                (0, 2) => Alu::Slt,
                (0, 3) => Alu::Sltu,
                (0, 4) => Alu::Xor,
                (0, 5) => Alu::Srl,
                (0x20, 5) => Alu::Sra,
                (0, 6) => Alu::Or,
                (0, 7) => Alu::And,
                (1, 0) => Alu::Mul,
                (1, 1) => Alu::Mulh,
                (1, 2) => Alu::Mulhsu,
                (1, 3) => Alu::Mulhu,
                (1, 4) => Alu::Div,
                (1, 5) => Alu::Divu,
                (1, 6) => Alu::Rem,
                (1, 7) => Alu::Remu,
                _ => return Err(Illegal),
            };
            Ok(alu_reg(alu, rd, rs1, rs2))
        }
        0x3b => {
            let alu = match (funct7, funct3) {
                (0, 0) => Alu::Addw,
                (0x20, 0) => Alu::Subw,
                (0, 1) => Alu::Sllw,
                (0, 5) => Alu::Srlw,
                (0x20, 5) => Alu::Sraw,
                (1, 0) => Alu::Mulw,
                (1, 4) => Alu::Divw,
                (1, 5) => Alu::Divuw,
                (1, 6) => Alu::Remw,
                (1, 7) => Alu::Remuw,
                _ => return Err(Illegal),
            };
            Ok(alu_reg(alu, rd, rs1, rs2))
        }
        // Loads lb..lwu (no funct3 7) and stores sb..sd.
        0x03 if funct3 != 7 => Ok(Op::Xol),
        0x23 if funct3 <= 3 => Ok(Op::Xol),
        // MISC-MEM: fence, fence.i, cbo.* (Zicbom/Zicboz).
        0x0f => match funct3 {
            // fence (and fence.tso, pause): the reserved rd/rs1 fields and fm must be zero.
            0 if rd == 0 && rs1 == 0 && matches!(bits(raw, 31, 28), 0 | 0b1000) => Ok(Op::Xol),
            1 => Err(Unsupported::FenceI),
            2 => Err(Unsupported::CacheBlock),
            _ => Err(Illegal),
        },
        // SYSTEM: ecall, ebreak, xret, wfi, sfence.vma (funct3 0), hypervisor loads and
        // stores (4), CSR accesses (the rest).
        0x73 => match funct3 {
            0 | 4 => Err(Unsupported::System),
            _ => Err(Unsupported::Csr),
        },
        0x2f => decode_amo(raw, funct3, rs2),
        // flw/fld, fsw/fsd.
        0x07 | 0x27 if matches!(funct3, 2 | 3) => Ok(Op::Xol),
        // fmadd, fmsub, fnmsub, fnmadd: fmt S or D.
        0x43 | 0x47 | 0x4b | 0x4f if bits(raw, 26, 25) <= 1 && valid_rm(funct3) => Ok(Op::Xol),
        0x53 if valid_op_fp(funct7, funct3, rs2) => Ok(Op::Xol),
        _ => Err(Illegal),
    }
}

/// The A extension: every AMO of width `.w`/`.d` is stepped; `lr`/`sc` are refused.
fn decode_amo(raw: u32, funct3: u32, rs2: u8) -> Result<Op, Unsupported> {
    if !matches!(funct3, 2 | 3) {
        return Err(Illegal);
    }
    match bits(raw, 31, 27) {
        0x02 if rs2 == 0 => Err(Unsupported::LoadReserved),
        0x03 => Err(Unsupported::LoadReserved),
        // amoadd, amoswap, amoxor, amoor, amoand, amomin, amomax, amominu, amomaxu
        0x00 | 0x01 | 0x04 | 0x08 | 0x0c | 0x10 | 0x14 | 0x18 | 0x1c => Ok(Op::Xol),
        _ => Err(Illegal),
    }
}

/// Rounding modes 5 and 6 are reserved; 7 means "dynamic".
fn valid_rm(rm: u32) -> bool {
    !matches!(rm, 5 | 6)
}

/// The OP-FP major opcode of F and D.
fn valid_op_fp(funct7: u32, funct3: u32, rs2: u8) -> bool {
    let fmt = funct7 & 0b11;
    if fmt > 1 {
        return false; // half and quad precision are not in rv64gc
    }
    match funct7 >> 2 {
        // fadd, fsub, fmul, fdiv
        0x00..=0x03 => valid_rm(funct3),
        // fsqrt
        0x0b => rs2 == 0 && valid_rm(funct3),
        // fsgnj, fsgnjn, fsgnjx
        0x04 => funct3 <= 2,
        // fmin, fmax
        0x05 => funct3 <= 1,
        // fcvt.s.d (fmt S, rs2 D) and fcvt.d.s (fmt D, rs2 S)
        0x08 => u32::from(rs2) == 1 - fmt && valid_rm(funct3),
        // fle, flt, feq
        0x14 => funct3 <= 2,
        // fcvt.{w,wu,l,lu}.{s,d} and fcvt.{s,d}.{w,wu,l,lu}
        0x18 | 0x1a => rs2 <= 3 && valid_rm(funct3),
        // fmv.x.{w,d}, fclass
        0x1c => rs2 == 0 && funct3 <= 1,
        // fmv.{w,d}.x
        0x1e => rs2 == 0 && funct3 == 0,
        _ => false,
    }
}

/// `rd'`/`rs1'`/`rs2'`: the 3-bit register fields of compressed instructions name x8..x15.
fn creg(raw: u32, lo: u32) -> u8 {
    bits(raw, lo + 2, lo) as u8 + 8
}

/// Decodes a 16-bit instruction by expanding it to its 32-bit equivalent operation.
fn decode16(parcel: u16) -> Result<Op, Unsupported> {
    let raw = u32::from(parcel);
    if raw == 0 {
        return Err(Illegal); // the all-zero parcel is defined illegal
    }
    let funct3 = bits(raw, 15, 13);
    let rd = reg(raw, 7); // also rs1 of the CR/CI formats
    let rs2 = reg(raw, 2);
    // The 6-bit signed immediate of CI: imm[5] = bit 12, imm[4:0] = bits 6:2.
    let imm6 = sext(bits(raw, 12, 12) << 5 | bits(raw, 6, 2), 6);
    let shamt = i64::from(bits(raw, 12, 12) << 5 | bits(raw, 6, 2));
    match (raw & 0b11, funct3) {
        // c.addi4spn: rd' = sp + nzuimm (sp is not changed).
        (0, 0) => {
            let imm = bits(raw, 12, 11) << 4
                | bits(raw, 10, 7) << 6
                | bits(raw, 6, 6) << 2
                | bits(raw, 5, 5) << 3;
            if imm == 0 {
                return Err(Illegal);
            }
            Ok(alu_imm(Alu::Add, creg(raw, 2), 2, i64::from(imm)))
        }
        // c.fld, c.lw, c.ld, c.fsd, c.sw, c.sd. funct3 4 is reserved.
        (0, 1..=3 | 5..=7) => Ok(Op::Xol),
        // c.addi (rd = 0: c.nop and hints).
        (1, 0) => Ok(alu_imm(Alu::Add, rd, rd, imm6)),
        // c.addiw (RV64; the RV32 c.jal encoding).
        (1, 1) if rd != 0 => Ok(alu_imm(Alu::Addw, rd, rd, imm6)),
        // c.li
        (1, 2) => Ok(alu_imm(Alu::Add, rd, 0, imm6)),
        // c.addi16sp
        (1, 3) if rd == 2 => {
            let imm = bits(raw, 12, 12) << 9
                | bits(raw, 6, 6) << 4
                | bits(raw, 5, 5) << 6
                | bits(raw, 4, 3) << 7
                | bits(raw, 2, 2) << 5;
            if imm == 0 {
                return Err(Illegal);
            }
            Ok(alu_imm(Alu::Add, 2, 2, sext(imm, 10)))
        }
        // c.lui
        (1, 3) if imm6 != 0 => Ok(Op::Lui {
            rd,
            imm: imm6 << 12,
        }),
        (1, 4) => decode_c_alu(raw, imm6, shamt),
        // c.j
        (1, 5) => {
            let imm = bits(raw, 12, 12) << 11
                | bits(raw, 11, 11) << 4
                | bits(raw, 10, 9) << 8
                | bits(raw, 8, 8) << 10
                | bits(raw, 7, 7) << 6
                | bits(raw, 6, 6) << 7
                | bits(raw, 5, 3) << 1
                | bits(raw, 2, 2) << 5;
            Ok(Op::Jal {
                rd: 0,
                offset: sext(imm, 12),
            })
        }
        // c.beqz, c.bnez
        (1, 6 | 7) => {
            let imm = bits(raw, 12, 12) << 8
                | bits(raw, 11, 10) << 3
                | bits(raw, 6, 5) << 6
                | bits(raw, 4, 3) << 1
                | bits(raw, 2, 2) << 5;
            Ok(Op::Branch {
                cond: if funct3 == 6 { Cond::Eq } else { Cond::Ne },
                rs1: creg(raw, 7),
                rs2: 0,
                offset: sext(imm, 9),
            })
        }
        // c.slli (rd = 0 or shamt = 0: hints)
        (2, 0) => Ok(alu_imm(Alu::Sll, rd, rd, shamt)),
        // c.fldsp, c.fsdsp, c.swsp, c.sdsp
        (2, 1 | 5..=7) => Ok(Op::Xol),
        // c.lwsp, c.ldsp (rd = 0 is reserved)
        (2, 2 | 3) if rd != 0 => Ok(Op::Xol),
        (2, 4) => decode_c_jump_move(raw, rd, rs2),
        _ => Err(Illegal),
    }
}

/// Quadrant 1, funct3 4: c.srli, c.srai, c.andi, c.sub, c.xor, c.or, c.and, c.subw, c.addw.
fn decode_c_alu(raw: u32, imm6: i64, shamt: i64) -> Result<Op, Unsupported> {
    let rd = creg(raw, 7);
    match bits(raw, 11, 10) {
        0 => Ok(alu_imm(Alu::Srl, rd, rd, shamt)),
        1 => Ok(alu_imm(Alu::Sra, rd, rd, shamt)),
        2 => Ok(alu_imm(Alu::And, rd, rd, imm6)),
        _ => {
            let alu = match (bits(raw, 12, 12), bits(raw, 6, 5)) {
                (0, 0) => Alu::Sub,
                (0, 1) => Alu::Xor,
                (0, 2) => Alu::Or,
                (0, 3) => Alu::And,
                (1, 0) => Alu::Subw,
                (1, 1) => Alu::Addw,
                _ => return Err(Illegal),
            };
            Ok(alu_reg(alu, rd, rd, creg(raw, 2)))
        }
    }
}

/// Quadrant 2, funct3 4: c.jr, c.mv, c.ebreak, c.jalr, c.add.
fn decode_c_jump_move(raw: u32, rd: u8, rs2: u8) -> Result<Op, Unsupported> {
    let link = bits(raw, 12, 12) == 1;
    match (link, rd, rs2) {
        (false, 0, 0) => Err(Illegal), // c.jr x0 is reserved
        (false, _, 0) => Ok(Op::Jalr {
            rd: 0,
            rs1: rd,
            offset: 0,
        }),
        (false, _, _) => Ok(alu_reg(Alu::Add, rd, 0, rs2)), // c.mv (rd = 0: hint)
        (true, 0, 0) => Err(Unsupported::System),           // c.ebreak
        (true, _, 0) => Ok(Op::Jalr {
            rd: 1,
            rs1: rd,
            offset: 0,
        }),
        (true, _, _) => Ok(alu_reg(Alu::Add, rd, rd, rs2)), // c.add (rd = 0: hint)
    }
}

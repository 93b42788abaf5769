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
        return Err(Illegal);
    };
    let parcel = u16::from_le_bytes([*b0, *b1]);
    match (insn_len(parcel), rest) {
        (Some(2), _) => decode_raw(u32::from(parcel), 2),
        (Some(4), [b2, b3, ..]) => decode_raw(u32::from_le_bytes([*b0, *b1, *b2, *b3]), 4),
        _ => Err(Illegal),
    }
}

/// Decodes `raw`, an instruction of `len` (2 or 4) bytes.
pub(crate) fn decode_raw(raw: u32, len: u8) -> Result<Insn, Unsupported> {
    let op = if len == 2 {
        decode16(raw)
    } else {
        decode32(raw)
    };
    match op {
        Ok(op) => Ok(Insn { raw, len, op }),
        Err(why) => Err(why),
    }
}

// Unoptimised builds (a kernel's debug profile) give every temporary of every match arm
// its own stack slot. So the decoders below build each `Op` in a small constructor that
// returns the whole `Decoded` (written straight into the caller's return slot), compute
// each immediate in its own function, and split by major opcode or quadrant: every frame
// stays small.

/// What a decoder returns.
type Decoded = Result<Op, Unsupported>;
const XOL: Decoded = Ok(Op::Xol);
const ILLEGAL: Decoded = Err(Illegal);

/// Bits `hi..=lo` of `x`, shifted down (`31 >= hi >= lo`: constants in range).
/// (Plain operators: in unoptimised builds their overflow checks are a compare and a
/// branch, where `wrapping_shr` and friends bring `unchecked_shr`'s precondition check
/// and a bigger frame under every field read.)
const fn bits(x: u32, hi: u32, lo: u32) -> u32 {
    (x >> lo) & (u32::MAX >> (31 - (hi - lo)))
}

/// Sign-extends the low `width` bits of `x`.
/// (`1 <= width <= 32`. Plain operators, as in [`bits`].)
const fn sext(x: u32, width: u32) -> i64 {
    let shift = 64 - width;
    (((x as u64) << shift) as i64) >> shift
}

/// `rd`, `rs1`, `rs2` fields of a 32-bit instruction.
fn reg(raw: u32, lo: u32) -> u8 {
    ((raw >> lo) & 0x1f) as u8 // not through `bits`: one frame less under every decoder
}

fn alu_imm(alu: Alu, rd: u8, rs1: u8, imm: i64) -> Decoded {
    Ok(Op::Alu {
        alu,
        rd,
        rs1,
        rhs: Rhs::Imm(imm),
    })
}

fn alu_reg(alu: Alu, rd: u8, rs1: u8, rs2: u8) -> Decoded {
    Ok(Op::Alu {
        alu,
        rd,
        rs1,
        rhs: Rhs::Reg(rs2),
    })
}

fn lui(rd: u8, imm: i64) -> Decoded {
    Ok(Op::Lui { rd, imm })
}

fn auipc(rd: u8, imm: i64) -> Decoded {
    Ok(Op::Auipc { rd, imm })
}

fn jal(rd: u8, offset: i64) -> Decoded {
    Ok(Op::Jal { rd, offset })
}

fn jalr(rd: u8, rs1: u8, offset: i64) -> Decoded {
    Ok(Op::Jalr { rd, rs1, offset })
}

fn branch(cond: Cond, rs1: u8, rs2: u8, offset: i64) -> Decoded {
    Ok(Op::Branch {
        cond,
        rs1,
        rs2,
        offset,
    })
}

/// The sign-extended upper immediate of `lui` / `auipc`.
fn upper_imm(raw: u32) -> i64 {
    sext(raw & 0xffff_f000, 32)
}

/// The sign-extended 12-bit immediate of the I format.
fn i_imm(raw: u32) -> i64 {
    sext(bits(raw, 31, 20), 12)
}

/// Decodes a 32-bit instruction (its low two bits are `11`).
fn decode32(raw: u32) -> Decoded {
    let funct3 = bits(raw, 14, 12);
    match raw & 0x7f {
        0x37 => lui(reg(raw, 7), upper_imm(raw)),
        0x17 => auipc(reg(raw, 7), upper_imm(raw)),
        0x6f => decode_jal(raw),
        0x67 if funct3 == 0 => jalr(reg(raw, 7), reg(raw, 15), i_imm(raw)),
        0x63 => decode_branch(raw),
        0x13 => decode_op_imm(raw),
        0x1b => decode_op_imm32(raw),
        0x33 => decode_op(raw),
        0x3b => decode_op32(raw),
        // Loads lb..lwu (no funct3 7) and stores sb..sd.
        0x03 if funct3 != 7 => XOL,
        0x23 if funct3 <= 3 => XOL,
        0x0f => decode_misc_mem(raw, funct3),
        // SYSTEM: ecall, ebreak, xret, wfi, sfence.vma (funct3 0), hypervisor loads and
        // stores (4), CSR accesses (the rest).
        0x73 => match funct3 {
            0 | 4 => Err(Unsupported::System),
            _ => Err(Unsupported::Csr),
        },
        0x2f => decode_amo(raw, funct3),
        // flw/fld, fsw/fsd.
        0x07 | 0x27 if matches!(funct3, 2 | 3) => XOL,
        // fmadd, fmsub, fnmsub, fnmadd: fmt S or D.
        0x43 | 0x47 | 0x4b | 0x4f if bits(raw, 26, 25) <= 1 && valid_rm(funct3) => XOL,
        0x53 if valid_op_fp(bits(raw, 31, 25), funct3, reg(raw, 20)) => XOL,
        _ => ILLEGAL,
    }
}

/// JAL.
fn decode_jal(raw: u32) -> Decoded {
    let imm = bits(raw, 31, 31) << 20
        | bits(raw, 19, 12) << 12
        | bits(raw, 20, 20) << 11
        | bits(raw, 30, 21) << 1;
    jal(reg(raw, 7), sext(imm, 21))
}

/// BRANCH: beq..bgeu.
fn decode_branch(raw: u32) -> Decoded {
    let cond = match bits(raw, 14, 12) {
        0 => Cond::Eq,
        1 => Cond::Ne,
        4 => Cond::Lt,
        5 => Cond::Ge,
        6 => Cond::Ltu,
        7 => Cond::Geu,
        _ => return ILLEGAL,
    };
    branch(cond, reg(raw, 15), reg(raw, 20), b_offset(raw))
}

/// The sign-extended offset of the B format.
fn b_offset(raw: u32) -> i64 {
    let imm = bits(raw, 31, 31) << 12
        | bits(raw, 7, 7) << 11
        | bits(raw, 30, 25) << 5
        | bits(raw, 11, 8) << 1;
    sext(imm, 13)
}

/// OP-IMM: addi..srai.
fn decode_op_imm(raw: u32) -> Decoded {
    let (rd, rs1) = (reg(raw, 7), reg(raw, 15));
    let shamt = i64::from(bits(raw, 25, 20));
    let alu = match (bits(raw, 14, 12), bits(raw, 31, 26)) {
        (0, _) => Alu::Add,
        (2, _) => Alu::Slt,
        (3, _) => Alu::Sltu,
        (4, _) => Alu::Xor,
        (6, _) => Alu::Or,
        (7, _) => Alu::And,
        (1, 0) => return alu_imm(Alu::Sll, rd, rs1, shamt),
        (5, 0) => return alu_imm(Alu::Srl, rd, rs1, shamt),
        (5, 0x10) => return alu_imm(Alu::Sra, rd, rs1, shamt),
        _ => return ILLEGAL,
    };
    alu_imm(alu, rd, rs1, i_imm(raw))
}

/// OP-IMM-32: addiw..sraiw.
fn decode_op_imm32(raw: u32) -> Decoded {
    let (rd, rs1) = (reg(raw, 7), reg(raw, 15));
    let shamt = i64::from(reg(raw, 20));
    match (bits(raw, 14, 12), bits(raw, 31, 25)) {
        (0, _) => alu_imm(Alu::Addw, rd, rs1, i_imm(raw)),
        (1, 0) => alu_imm(Alu::Sllw, rd, rs1, shamt),
        (5, 0) => alu_imm(Alu::Srlw, rd, rs1, shamt),
        (5, 0x20) => alu_imm(Alu::Sraw, rd, rs1, shamt),
        _ => ILLEGAL,
    }
}

/// OP: add..remu.
fn decode_op(raw: u32) -> Decoded {
    let alu = match (bits(raw, 31, 25), bits(raw, 14, 12)) {
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
        _ => return ILLEGAL,
    };
    alu_reg(alu, reg(raw, 7), reg(raw, 15), reg(raw, 20))
}

/// OP-32: addw..remuw.
fn decode_op32(raw: u32) -> Decoded {
    let alu = match (bits(raw, 31, 25), bits(raw, 14, 12)) {
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
        _ => return ILLEGAL,
    };
    alu_reg(alu, reg(raw, 7), reg(raw, 15), reg(raw, 20))
}

/// MISC-MEM: fence, fence.i, cbo.* (Zicbom/Zicboz).
fn decode_misc_mem(raw: u32, funct3: u32) -> Decoded {
    match funct3 {
        // fence (and fence.tso, pause): the reserved rd/rs1 fields and fm must be zero.
        0 if reg(raw, 7) == 0 && reg(raw, 15) == 0 && matches!(bits(raw, 31, 28), 0 | 0b1000) => {
            XOL
        }
        1 => Err(Unsupported::FenceI),
        2 => Err(Unsupported::CacheBlock),
        _ => ILLEGAL,
    }
}

/// The A extension: every AMO of width `.w`/`.d` is stepped; `lr`/`sc` are refused.
fn decode_amo(raw: u32, funct3: u32) -> Decoded {
    if !matches!(funct3, 2 | 3) {
        return ILLEGAL;
    }
    match bits(raw, 31, 27) {
        0x02 if reg(raw, 20) == 0 => Err(Unsupported::LoadReserved),
        0x03 => Err(Unsupported::LoadReserved),
        // amoadd, amoswap, amoxor, amoor, amoand, amomin, amomax, amominu, amomaxu
        0x00 | 0x01 | 0x04 | 0x08 | 0x0c | 0x10 | 0x14 | 0x18 | 0x1c => XOL,
        _ => ILLEGAL,
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
    ((raw >> lo) & 0x7) as u8 + 8 // not through `bits`, as in `reg`
}

/// The 6-bit signed immediate of CI: imm[5] = bit 12, imm[4:0] = bits 6:2.
fn ci_imm(raw: u32) -> i64 {
    sext(ci_shamt(raw) as u32, 6)
}

/// The same bits unsigned: the shift amount of c.slli, c.srli, c.srai.
fn ci_shamt(raw: u32) -> i64 {
    i64::from(bits(raw, 12, 12) << 5 | bits(raw, 6, 2))
}

/// Decodes a 16-bit instruction (in the low half of `raw`) by expanding it to its 32-bit
/// equivalent operation.
fn decode16(raw: u32) -> Decoded {
    if raw == 0 {
        return ILLEGAL; // the all-zero parcel is defined illegal
    }
    let funct3 = bits(raw, 15, 13);
    match raw & 0b11 {
        0 => decode_c0(raw, funct3),
        1 => decode_c1(raw, funct3),
        _ => decode_c2(raw, funct3),
    }
}

/// Quadrant 0: c.addi4spn and the loads and stores off a register.
fn decode_c0(raw: u32, funct3: u32) -> Decoded {
    match funct3 {
        // c.addi4spn: rd' = sp + nzuimm (sp is not changed).
        0 => match c_addi4spn_imm(raw) {
            0 => ILLEGAL,
            imm => alu_imm(Alu::Add, creg(raw, 2), 2, i64::from(imm)),
        },
        // c.fld, c.lw, c.ld, c.fsd, c.sw, c.sd. funct3 4 is reserved.
        4 => ILLEGAL,
        _ => XOL,
    }
}

fn c_addi4spn_imm(raw: u32) -> u32 {
    bits(raw, 12, 11) << 4 | bits(raw, 10, 7) << 6 | bits(raw, 6, 6) << 2 | bits(raw, 5, 5) << 3
}

/// Quadrant 1: immediates, the ALU group, jumps and branches.
fn decode_c1(raw: u32, funct3: u32) -> Decoded {
    let rd = reg(raw, 7);
    match funct3 {
        // c.addi (rd = 0: c.nop and hints).
        0 => alu_imm(Alu::Add, rd, rd, ci_imm(raw)),
        // c.addiw (RV64; the RV32 c.jal encoding).
        1 if rd != 0 => alu_imm(Alu::Addw, rd, rd, ci_imm(raw)),
        // c.li
        2 => alu_imm(Alu::Add, rd, 0, ci_imm(raw)),
        // c.addi16sp
        3 if rd == 2 => match c_addi16sp_imm(raw) {
            0 => ILLEGAL,
            imm => alu_imm(Alu::Add, 2, 2, sext(imm, 10)),
        },
        // c.lui
        3 if ci_imm(raw) != 0 => lui(rd, ci_imm(raw) << 12),
        4 => decode_c_alu(raw),
        // c.j
        5 => jal(0, c_j_offset(raw)),
        // c.beqz, c.bnez
        6 => branch(Cond::Eq, creg(raw, 7), 0, c_b_offset(raw)),
        7 => branch(Cond::Ne, creg(raw, 7), 0, c_b_offset(raw)),
        _ => ILLEGAL,
    }
}

fn c_addi16sp_imm(raw: u32) -> u32 {
    bits(raw, 12, 12) << 9
        | bits(raw, 6, 6) << 4
        | bits(raw, 5, 5) << 6
        | bits(raw, 4, 3) << 7
        | bits(raw, 2, 2) << 5
}

/// The sign-extended offset of c.j.
fn c_j_offset(raw: u32) -> i64 {
    let imm = bits(raw, 12, 12) << 11
        | bits(raw, 11, 11) << 4
        | bits(raw, 10, 9) << 8
        | bits(raw, 8, 8) << 10
        | bits(raw, 7, 7) << 6
        | bits(raw, 6, 6) << 7
        | bits(raw, 5, 3) << 1
        | bits(raw, 2, 2) << 5;
    sext(imm, 12)
}

/// The sign-extended offset of c.beqz / c.bnez.
fn c_b_offset(raw: u32) -> i64 {
    let imm = bits(raw, 12, 12) << 8
        | bits(raw, 11, 10) << 3
        | bits(raw, 6, 5) << 6
        | bits(raw, 4, 3) << 1
        | bits(raw, 2, 2) << 5;
    sext(imm, 9)
}

/// Quadrant 1, funct3 4: c.srli, c.srai, c.andi, c.sub, c.xor, c.or, c.and, c.subw, c.addw.
fn decode_c_alu(raw: u32) -> Decoded {
    let rd = creg(raw, 7);
    match bits(raw, 11, 10) {
        0 => alu_imm(Alu::Srl, rd, rd, ci_shamt(raw)),
        1 => alu_imm(Alu::Sra, rd, rd, ci_shamt(raw)),
        2 => alu_imm(Alu::And, rd, rd, ci_imm(raw)),
        _ => {
            let alu = match (bits(raw, 12, 12), bits(raw, 6, 5)) {
                (0, 0) => Alu::Sub,
                (0, 1) => Alu::Xor,
                (0, 2) => Alu::Or,
                (0, 3) => Alu::And,
                (1, 0) => Alu::Subw,
                (1, 1) => Alu::Addw,
                _ => return ILLEGAL,
            };
            alu_reg(alu, rd, rd, creg(raw, 2))
        }
    }
}

/// Quadrant 2: c.slli, the loads and stores off sp, and the jump/move group.
fn decode_c2(raw: u32, funct3: u32) -> Decoded {
    let rd = reg(raw, 7);
    match funct3 {
        // c.slli (rd = 0 or shamt = 0: hints)
        0 => alu_imm(Alu::Sll, rd, rd, ci_shamt(raw)),
        // c.fldsp, c.fsdsp, c.swsp, c.sdsp
        1 | 5..=7 => XOL,
        // c.lwsp, c.ldsp (rd = 0 is reserved)
        2 | 3 if rd != 0 => XOL,
        4 => decode_c_jump_move(raw, rd, reg(raw, 2)),
        _ => ILLEGAL,
    }
}

/// Quadrant 2, funct3 4: c.jr, c.mv, c.ebreak, c.jalr, c.add.
fn decode_c_jump_move(raw: u32, rd: u8, rs2: u8) -> Decoded {
    let link = bits(raw, 12, 12) == 1;
    match (link, rd, rs2) {
        (false, 0, 0) => ILLEGAL,                       // c.jr x0 is reserved
        (false, _, 0) => jalr(0, rd, 0),                // c.jr
        (false, _, _) => alu_reg(Alu::Add, rd, 0, rs2), // c.mv (rd = 0: hint)
        (true, 0, 0) => Err(Unsupported::System),       // c.ebreak
        (true, _, 0) => jalr(1, rd, 0),                 // c.jalr
        (true, _, _) => alu_reg(Alu::Add, rd, rd, rs2), // c.add (rd = 0: hint)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Decoder tests, plus the instruction encoders and the register file that the
    //! simulator tests share.

    use super::*;
    use crate::regs::UserRegs;

    // ----- hand encoders for the 32-bit formats -----

    /// R-type.
    pub(crate) fn r(opcode: u32, rd: u32, funct3: u32, rs1: u32, rs2: u32, funct7: u32) -> u32 {
        funct7 << 25 | rs2 << 20 | rs1 << 15 | funct3 << 12 | rd << 7 | opcode
    }
    /// I-type (imm is 12-bit signed).
    pub(crate) fn i(opcode: u32, rd: u32, funct3: u32, rs1: u32, imm: i32) -> u32 {
        (imm as u32 & 0xfff) << 20 | rs1 << 15 | funct3 << 12 | rd << 7 | opcode
    }
    /// S-type.
    pub(crate) fn s(opcode: u32, funct3: u32, rs1: u32, rs2: u32, imm: i32) -> u32 {
        let imm = imm as u32;
        (imm >> 5 & 0x7f) << 25 | rs2 << 20 | rs1 << 15 | funct3 << 12 | (imm & 0x1f) << 7 | opcode
    }
    /// B-type (conditional branch, opcode 0x63).
    pub(crate) fn b(funct3: u32, rs1: u32, rs2: u32, offset: i32) -> u32 {
        let o = offset as u32;
        (o >> 12 & 1) << 31
            | (o >> 5 & 0x3f) << 25
            | rs2 << 20
            | rs1 << 15
            | funct3 << 12
            | (o >> 1 & 0xf) << 8
            | (o >> 11 & 1) << 7
            | 0x63
    }
    /// U-type: `imm20` is the 20-bit upper immediate as written in assembly.
    pub(crate) fn u(opcode: u32, rd: u32, imm20: u32) -> u32 {
        (imm20 & 0xfffff) << 12 | rd << 7 | opcode
    }
    /// J-type (jal).
    pub(crate) fn j(rd: u32, offset: i32) -> u32 {
        let o = offset as u32;
        (o >> 20 & 1) << 31
            | (o >> 1 & 0x3ff) << 21
            | (o >> 11 & 1) << 20
            | (o >> 12 & 0xff) << 12
            | rd << 7
            | 0x6f
    }

    pub(crate) const OP_IMM: u32 = 0x13;
    pub(crate) const OP_IMM_32: u32 = 0x1b;
    pub(crate) const OP: u32 = 0x33;
    pub(crate) const OP_32: u32 = 0x3b;
    pub(crate) const LUI: u32 = 0x37;
    pub(crate) const AUIPC: u32 = 0x17;
    pub(crate) const JALR: u32 = 0x67;

    pub(crate) fn d32(word: u32) -> Result<Insn, Unsupported> {
        decode(&word.to_le_bytes())
    }
    pub(crate) fn d16(parcel: u16) -> Result<Insn, Unsupported> {
        decode(&parcel.to_le_bytes())
    }

    /// A register file with the hardware's x0 semantics that also notices any attempt to
    /// write x0 (the executor must drop those itself).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) struct TestRegs {
        pub(crate) x: [usize; 32],
        pub(crate) pc: usize,
        pub(crate) wrote_x0: bool,
    }

    impl TestRegs {
        pub(crate) fn at(pc: usize) -> Self {
            let mut x = [0; 32];
            // Distinct, recognisable values so a wrong source register shows.
            for (n, v) in x.iter_mut().enumerate().skip(1) {
                *v = 0x1000 * n + n;
            }
            TestRegs {
                x,
                pc,
                wrote_x0: false,
            }
        }
    }

    impl UserRegs for TestRegs {
        fn pc(&self) -> usize {
            self.pc
        }
        fn set_pc(&mut self, pc: usize) {
            self.pc = pc;
        }
        fn reg(&self, n: usize) -> usize {
            match n {
                1..=31 => self.x[n],
                _ => 0,
            }
        }
        fn set_reg(&mut self, n: usize, value: usize) {
            match n {
                1..=31 => self.x[n] = value,
                _ => self.wrote_x0 = true,
            }
        }
    }

    // ----- encoders and byte order -----

    #[test]
    fn encoders_match_known_encodings() {
        // Constants from `llvm-mc -show-encoding`.
        assert_eq!(i(OP_IMM, 2, 0, 2, -16), 0xff01_0113); // addi sp, sp, -16
        assert_eq!(r(OP, 10, 2, 11, 12, 1), 0x02c5_a533); // mulhsu a0, a1, a2
        assert_eq!(r(OP_32, 10, 4, 11, 12, 1), 0x02c5_c53b); // divw a0, a1, a2
        assert_eq!(r(OP_IMM_32, 10, 5, 11, 3, 0x20), 0x4035_d51b); // sraiw a0, a1, 3
        assert_eq!(j(1, -4), 0xffdf_f0ef); // jal ra, -4
        assert_eq!(j(0, 1_048_574), 0x7fff_f06f); // j 1048574
        assert_eq!(j(10, -1_048_576), 0x8000_056f); // jal a0, -1048576
        assert_eq!(b(0, 10, 11, -4096), 0x80b5_0063); // beq a0, a1, -4096
        assert_eq!(b(6, 10, 11, 4094), 0x7eb5_6fe3); // bltu a0, a1, 4094
        assert_eq!(b(5, 5, 6, -2), 0xfe62_dfe3); // bge t0, t1, -2
        assert_eq!(i(JALR, 1, 0, 10, -1), 0xfff5_00e7); // jalr ra, -1(a0)
        assert_eq!(i(JALR, 0, 0, 1, 2047), 0x7ff0_8067); // jr 2047(ra)
        assert_eq!(u(AUIPC, 10, 0xfffff), 0xffff_f517); // auipc a0, 0xfffff
        assert_eq!(u(LUI, 10, 0x80000), 0x8000_0537); // lui a0, 0x80000
        assert_eq!(s(0x23, 2, 11, 10, -2048), 0x80a5_a023); // sw a0, -2048(a1)
        assert_eq!(i(0x03, 10, 3, 8, -8), 0xff84_3503); // ld a0, -8(s0)
    }

    /// Regression (original): instruction bytes were assembled big-endian.
    #[test]
    fn bytes_are_little_endian() {
        let insn = decode(&[0x13, 0x01, 0x01, 0xff]).unwrap(); // addi sp, sp, -16
        assert_eq!(insn.raw(), 0xff01_0113);
        assert_eq!(insn.len(), 4);
        assert_eq!(
            insn.op(),
            Op::Alu {
                alu: Alu::Add,
                rd: 2,
                rs1: 2,
                rhs: Rhs::Imm(-16)
            }
        );
        // The same bytes read big-endian would start with 0xff: a 48-bit+ encoding.
        assert_eq!(decode(&[0xff, 0x01, 0x01, 0x13]), Err(Illegal));
        let c = decode(&[0x41, 0x11]).unwrap(); // c.addi sp, -16 = 0x1141
        assert_eq!((c.raw(), c.len(), c.class()), (0x1141, 2, Class::Emulate));
    }

    /// Regression (original): a 4-byte instruction was copied from a 2-byte buffer.
    #[test]
    fn truncated_input_is_illegal() {
        assert_eq!(decode(&[]), Err(Illegal));
        assert_eq!(decode(&[0x01]), Err(Illegal));
        assert_eq!(decode(&[0x13, 0x01]), Err(Illegal)); // first half of addi sp, sp, -16
        assert_eq!(decode(&[0x13, 0x01, 0x01]), Err(Illegal));
        // Extra trailing bytes are ignored.
        assert_eq!(decode(&[0x01, 0x00, 0xff, 0xff]).unwrap().len(), 2);
        assert_eq!(decode(&[0x13, 0, 0, 0, 0xff]).unwrap().raw(), 0x13);
    }

    #[test]
    fn lengths() {
        assert_eq!(insn_len(0x0001), Some(2));
        assert_eq!(insn_len(0x0002), Some(2));
        assert_eq!(insn_len(0x8082), Some(2));
        assert_eq!(insn_len(0x0013), Some(4));
        assert_eq!(insn_len(0x0073), Some(4));
        assert_eq!(insn_len(0x001f), None); // 48-bit
        assert_eq!(insn_len(0x003f), None); // 64-bit
        assert_eq!(insn_len(0x007f), None); // 80-bit+
        assert_eq!(insn_len(EBREAK as u16), Some(4));
        assert_eq!(insn_len(C_EBREAK), Some(2));
        assert_eq!(decode(&[0x1f, 0, 0, 0, 0, 0]), Err(Illegal));
    }

    // ----- classification table (DESIGN §3.3, one block per row) -----

    fn class32(word: u32) -> Result<Class, Unsupported> {
        d32(word).map(|i| i.class())
    }
    fn class16(parcel: u16) -> Result<Class, Unsupported> {
        d16(parcel).map(|i| i.class())
    }

    #[test]
    fn rejected_instructions() {
        use Unsupported::*;
        let cases: &[(u32, Unsupported, &str)] = &[
            (0x0000_0073, System, "ecall"),
            (EBREAK, System, "ebreak"),
            (0x1050_0073, System, "wfi"),
            (0x3020_0073, System, "mret"),
            (0x1020_0073, System, "sret"),
            (0x1200_0073, System, "sfence.vma"),
            (0x6000_4073, System, "hlv.b (SYSTEM funct3 4)"),
            (0xc000_2573, Csr, "rdcycle a0"),
            (0x1005_1073, Csr, "csrw sstatus, a0"),
            (0x0020_2573, Csr, "frrm a0"),
            (0x0000_5073, Csr, "csrrwi x0, 0, 0"),
            (0x0000_100f, FenceI, "fence.i"),
            (0x0015_200f, CacheBlock, "cbo.clean (a0)"),
            (0x0045_200f, CacheBlock, "cbo.zero (a0)"),
            (0x1005_a52f, LoadReserved, "lr.w a0, (a1)"),
            (0x1005_b52f, LoadReserved, "lr.d a0, (a1)"),
            (0x18b6_352f, LoadReserved, "sc.d a0, a1, (a2)"),
            (0x18b6_252f, LoadReserved, "sc.w a0, a1, (a2)"),
            (0x0000_0000, Illegal, "all-zero word"),
            (0xffff_ffff, Illegal, "all-ones word"),
            (0x0000_001f, Illegal, "48-bit"),
            (0x0000_003f, Illegal, "64-bit"),
            (0x0000_007f, Illegal, "80-bit+"),
            (0x0000_000b, Illegal, "custom-0"),
            (0x0000_0057, Illegal, "OP-V"),
            (0x0000_1067, Illegal, "jalr funct3 1"),
            (b(2, 1, 2, 8), Illegal, "branch funct3 2"),
            (b(3, 1, 2, 8), Illegal, "branch funct3 3"),
            (0x0000_7003, Illegal, "load funct3 7 (ldu is RV128)"),
            (0x0000_4023, Illegal, "store funct3 4 (sq is RV128)"),
            (r(OP_IMM, 1, 1, 1, 0, 0x20), Illegal, "slli funct6 0x10"),
            (r(OP_IMM, 1, 5, 1, 0, 0x30), Illegal, "srai funct6 0x18"),
            (r(OP_IMM_32, 1, 1, 1, 0, 1), Illegal, "slliw shamt[5]"),
            (r(OP_IMM_32, 1, 5, 1, 0, 1), Illegal, "srliw shamt[5]"),
            (r(OP_IMM_32, 1, 2, 1, 0, 0), Illegal, "OP-IMM-32 funct3 2"),
            (r(OP, 1, 0, 1, 2, 0x40), Illegal, "OP funct7 0x40"),
            (r(OP, 1, 1, 1, 2, 0x20), Illegal, "sll with funct7 0x20"),
            (r(OP_32, 1, 2, 1, 2, 0), Illegal, "OP-32 funct3 2"),
            (r(OP_32, 1, 1, 1, 2, 1), Illegal, "mulhw: no such op"),
            (r(OP_32, 1, 4, 1, 2, 0), Illegal, "xorw: no such op"),
            (0x0000_300f, Illegal, "MISC-MEM funct3 3"),
            (0x0000_050f, Illegal, "fence with rd != 0"),
            (0x4000_000f, Illegal, "fence with reserved fm"),
            (r(0x2f, 1, 2, 2, 3, 0x02 << 2), Illegal, "lr.w rs2 != 0"),
            (r(0x2f, 1, 2, 2, 3, 0x14), Illegal, "amocas.w"),
            (r(0x2f, 1, 4, 2, 3, 0), Illegal, "amoadd.q (RV128)"),
            (r(0x2f, 1, 0, 2, 3, 0), Illegal, "amoadd.b (not rv64gc)"),
            (0x0000_1007, Illegal, "flh (Zfh)"),
            (0x0000_4007, Illegal, "flq (Q)"),
            (0x0000_4027, Illegal, "fsq (Q)"),
            (r(0x43, 10, 0, 11, 12, 0b0110_0010), Illegal, "fmadd.h"),
            (r(0x43, 10, 5, 11, 12, 0), Illegal, "fmadd.s with rm 5"),
            (r(0x53, 10, 6, 11, 12, 0), Illegal, "fadd.s with rm 6"),
            (r(0x53, 10, 0, 11, 12, 0x03), Illegal, "fadd.q (fmt 3)"),
            (r(0x53, 10, 0, 11, 1, 0x2c), Illegal, "fsqrt.s rs2 != 0"),
            (r(0x53, 10, 3, 11, 12, 0x10), Illegal, "fsgnj.s funct3 3"),
            (r(0x53, 10, 2, 11, 12, 0x14), Illegal, "fmin.s funct3 2"),
            (r(0x53, 10, 0, 11, 0, 0x20), Illegal, "fcvt.s.s"),
            (r(0x53, 10, 3, 11, 12, 0x50), Illegal, "feq.s funct3 3"),
            (r(0x53, 10, 0, 11, 4, 0x60), Illegal, "fcvt with rs2 4"),
            (r(0x53, 10, 2, 11, 0, 0x70), Illegal, "fmv.x.w funct3 2"),
            (r(0x53, 10, 1, 11, 0, 0x78), Illegal, "fmv.w.x funct3 1"),
            (r(0x53, 10, 0, 11, 12, 0x7c), Illegal, "OP-FP funct7 0x7c"),
        ];
        for &(word, why, name) in cases {
            assert_eq!(class32(word), Err(why), "{name} ({word:#010x})");
        }
    }

    /// Regression (original): illegal instructions were armed anyway. Every reserved
    /// compressed encoding must be refused.
    #[test]
    fn rejected_compressed() {
        use Unsupported::*;
        let cases: &[(u16, Unsupported, &str)] = &[
            (0x0000, Illegal, "all-zero parcel"),
            (0x0004, Illegal, "c.addi4spn with nzuimm 0 (rd' = a1)"),
            (0x001c, Illegal, "c.addi4spn with nzuimm 0 (rd' = a5)"),
            (0x8000, Illegal, "quadrant 0 funct3 4 (reserved)"),
            (
                0x9c41,
                Illegal,
                "quadrant 1 c.subw-group reserved (bits 6:5 = 2)",
            ),
            (
                0x9c61,
                Illegal,
                "quadrant 1 c.subw-group reserved (bits 6:5 = 3)",
            ),
            (0x2001, Illegal, "c.addiw with rd 0"),
            (0x6101, Illegal, "c.addi16sp with nzimm 0"),
            (0x6501, Illegal, "c.lui a0 with nzimm 0"),
            (0x6001, Illegal, "c.lui x0 with nzimm 0"),
            (0x8002, Illegal, "c.jr with rs1 0"),
            (0x4002, Illegal, "c.lwsp with rd 0"),
            (0x6002, Illegal, "c.ldsp with rd 0"),
            (0x607e, Illegal, "c.ldsp with rd 0, offset 504"),
            (C_EBREAK, System, "c.ebreak"),
        ];
        for &(parcel, why, name) in cases {
            assert_eq!(class16(parcel), Err(why), "{name} ({parcel:#06x})");
        }
    }

    #[test]
    fn simulated_instructions() {
        let cases: &[(u32, &str)] = &[
            (u(AUIPC, 10, 0xfffff), "auipc"),
            (j(1, -4), "jal"),
            (j(0, 2048), "j"),
            (i(JALR, 1, 0, 10, -1), "jalr"),
            (0x0000_8067, "ret"),
            (b(0, 10, 11, 8), "beq"),
            (b(1, 10, 11, 8), "bne"),
            (b(4, 10, 11, 8), "blt"),
            (b(5, 10, 11, 8), "bge"),
            (b(6, 10, 11, 8), "bltu"),
            (b(7, 10, 11, 8), "bgeu"),
        ];
        for &(word, name) in cases {
            assert_eq!(class32(word), Ok(Class::Simulate), "{name}");
        }
        let compressed: &[(u16, &str)] = &[
            (0xb001, "c.j -2048"),
            (0x8502, "c.jr a0"),
            (0x8082, "c.jr ra (ret)"),
            (0x9502, "c.jalr a0"),
            (0x9082, "c.jalr ra"),
            (0xd101, "c.beqz a0, -256"),
            (0xe839, "c.bnez s0, 86"),
        ];
        for &(parcel, name) in compressed {
            assert_eq!(class16(parcel), Ok(Class::Simulate), "{name}");
        }
    }

    #[test]
    fn emulated_instructions() {
        let mut cases: alloc::vec::Vec<(u32, &str)> = alloc::vec![
            (u(LUI, 10, 0x80000), "lui"),
            (u(LUI, 0, 1), "lui x0 (hint)"),
            (i(OP_IMM, 0, 0, 0, 0), "nop"),
            (i(OP_IMM, 0, 0, 5, 7), "addi x0 (hint)"),
            (i(OP_IMM_32, 10, 0, 10, 0), "sext.w"),
            (r(OP_IMM, 10, 1, 11, 31, 1), "slli 63"),
            (r(OP_IMM, 10, 5, 11, 31, 1), "srli 63"),
            (r(OP_IMM, 10, 5, 11, 31, 0x21), "srai 63"),
            (r(OP_IMM_32, 10, 1, 11, 31, 0), "slliw 31"),
            (r(OP_IMM_32, 10, 5, 11, 31, 0), "srliw 31"),
            (r(OP_IMM_32, 10, 5, 11, 31, 0x20), "sraiw 31"),
        ];
        for f3 in [0, 2, 3, 4, 6, 7] {
            cases.push((i(OP_IMM, 10, f3, 11, -1), "OP-IMM"));
        }
        for (f7, f3s) in [
            (0, &[0, 1, 2, 3, 4, 5, 6, 7][..]),
            (0x20, &[0, 5][..]),
            (1, &[0, 1, 2, 3, 4, 5, 6, 7][..]),
        ] {
            for &f3 in f3s {
                cases.push((r(OP, 10, f3, 11, 12, f7), "OP"));
            }
        }
        for (f7, f3s) in [
            (0, &[0, 1, 5][..]),
            (0x20, &[0, 5][..]),
            (1, &[0, 4, 5, 6, 7][..]),
        ] {
            for &f3 in f3s {
                cases.push((r(OP_32, 10, f3, 11, 12, f7), "OP-32"));
            }
        }
        for (word, name) in cases {
            assert_eq!(class32(word), Ok(Class::Emulate), "{name} ({word:#010x})");
        }
        let compressed: &[(u16, &str)] = &[
            (0x0001, "c.nop"),
            (0x0005, "c.nop 1 (hint)"),
            (0x1501, "c.addi a0, -32"),
            (0x0501, "c.addi a0, 0 (hint)"),
            (0x357d, "c.addiw a0, -1"),
            (0x2501, "c.addiw a0, 0 (sext.w)"),
            (0x7101, "c.addi16sp -512"),
            (0x717d, "c.addi16sp -16"),
            (0x0800, "c.addi4spn s0, sp, 16"),
            (0x1fe8, "c.addi4spn a0, sp, 1020"),
            (0x5501, "c.li a0, -32"),
            (0x4001, "c.li x0 (hint)"),
            (0x7501, "c.lui a0, 0xfffe0"),
            (0x6005, "c.lui x0, 1 (hint)"),
            (0x852e, "c.mv a0, a1"),
            (0x800e, "c.mv x0, gp (hint)"),
            (0x952e, "c.add a0, a1"),
            (0x900e, "c.add x0, gp (hint)"),
            (0x917d, "c.srli a0, 63"),
            (0x8101, "c.srli a0, 0 (hint)"),
            (0x9781, "c.srai a5, 32"),
            (0x997d, "c.andi a0, -1"),
            (0x157e, "c.slli a0, 63"),
            (0x0002, "c.slli x0, 0 (hint)"),
            (0x8d0d, "c.sub"),
            (0x8c25, "c.xor"),
            (0x8f5d, "c.or"),
            (0x8e75, "c.and"),
            (0x9d1d, "c.subw"),
            (0x9ca9, "c.addw"),
        ];
        for &(parcel, name) in compressed {
            assert_eq!(
                class16(parcel),
                Ok(Class::Emulate),
                "{name} ({parcel:#06x})"
            );
        }
    }

    #[test]
    fn out_of_line_instructions() {
        let mut cases: alloc::vec::Vec<(u32, &str)> = alloc::vec![
            (0xff84_3503, "ld a0, -8(s0)"),
            (0x80a5_a023, "sw a0, -2048(a1)"),
            (s(0x23, 3, 2, 1, 8), "sd ra, 8(sp)"),
            (0x00b6_252f, "amoadd.w"),
            (0xe4b6_352f, "amomaxu.d.aq"),
            (0x0330_000f, "fence rw, rw"),
            (0x8330_000f, "fence.tso"),
            (0x0100_000f, "pause"),
            (0x0045_2507, "flw fa0, 4(a0)"),
            (0x00a1_3427, "fsd fa0, 8(sp)"),
            (0x02c5_f553, "fadd.d dyn"),
            (0x5805_f553, "fsqrt.s"),
            (0xe205_0553, "fmv.x.d"),
            (0x4205_8553, "fcvt.d.s"),
            (0x4015_f553, "fcvt.s.d"),
            (0xe205_9553, "fclass.d"),
            (0x6ac5_f543, "fmadd.d"),
            (0xc225_1553, "fcvt.l.d rtz"),
        ];
        for f3 in 0..=6 {
            cases.push((i(0x03, 10, f3, 11, 0), "load"));
        }
        for f3 in 0..=3 {
            cases.push((s(0x23, f3, 11, 10, 0), "store"));
        }
        for funct5 in [0x00, 0x01, 0x04, 0x08, 0x0c, 0x10, 0x14, 0x18, 0x1c] {
            for width in [2, 3] {
                cases.push((r(0x2f, 10, width, 11, 12, funct5 << 2 | 3), "amo"));
            }
        }
        for (word, name) in cases {
            assert_eq!(class32(word), Ok(Class::Xol), "{name} ({word:#010x})");
        }
        let compressed: &[(u16, &str)] = &[
            (0x5fe8, "c.lw a0, 124(a5)"),
            (0x7fe8, "c.ld a0, 248(a5)"),
            (0xc008, "c.sw a0, 0(s0)"),
            (0xe48c, "c.sd a1, 8(s1)"),
            (0x2508, "c.fld fa0, 8(a0)"),
            (0xbdec, "c.fsd fa1, 248(a1)"),
            (0x557e, "c.lwsp a0, 252(sp)"),
            (0x70fe, "c.ldsp ra, 504(sp)"),
            (0xc02a, "c.swsp a0, 0(sp)"),
            (0xe406, "c.sdsp ra, 8(sp)"),
            (0x2542, "c.fldsp fa0, 16(sp)"),
            (0xa022, "c.fsdsp fs0, 0(sp)"),
        ];
        for &(parcel, name) in compressed {
            assert_eq!(class16(parcel), Ok(Class::Xol), "{name} ({parcel:#06x})");
        }
    }

    // ----- exact decoding of the regressions and the compressed expansions -----

    /// Regression (original): `blt` was missing and `bltu` listed twice.
    #[test]
    fn every_branch_kind_decodes_to_its_own_condition() {
        let expect = [
            (0, Cond::Eq),
            (1, Cond::Ne),
            (4, Cond::Lt),
            (5, Cond::Ge),
            (6, Cond::Ltu),
            (7, Cond::Geu),
        ];
        for (funct3, cond) in expect {
            assert_eq!(
                d32(b(funct3, 10, 11, -4096)).unwrap().op(),
                Op::Branch {
                    cond,
                    rs1: 10,
                    rs2: 11,
                    offset: -4096
                }
            );
        }
    }

    /// Regression (original): `jal`/`jalr` were neither rejected nor simulated.
    #[test]
    fn jal_and_jalr_are_simulated() {
        assert_eq!(d32(j(1, -4)).unwrap().op(), Op::Jal { rd: 1, offset: -4 });
        assert_eq!(
            d32(j(10, -1_048_576)).unwrap().op(),
            Op::Jal {
                rd: 10,
                offset: -1_048_576
            }
        );
        assert_eq!(
            d32(i(JALR, 1, 0, 10, -1)).unwrap().op(),
            Op::Jalr {
                rd: 1,
                rs1: 10,
                offset: -1
            }
        );
    }

    /// Regression (original): `c.addi4spn` was treated as an sp adjustment. It writes
    /// `rd' = sp + nzuimm` and leaves sp alone.
    #[test]
    fn c_addi4spn_writes_rd_prime() {
        assert_eq!(
            d16(0x1fe8).unwrap().op(), // c.addi4spn a0, sp, 1020
            Op::Alu {
                alu: Alu::Add,
                rd: 10,
                rs1: 2,
                rhs: Rhs::Imm(1020)
            }
        );
        assert_eq!(
            d16(0x005c).unwrap().op(), // c.addi4spn a5, sp, 4
            Op::Alu {
                alu: Alu::Add,
                rd: 15,
                rs1: 2,
                rhs: Rhs::Imm(4)
            }
        );
    }

    /// Peer regression: `c.addiw` was rejected (on RV64 it is not `c.jal`).
    #[test]
    fn c_addiw_is_emulated() {
        assert_eq!(
            d16(0x357d).unwrap().op(), // c.addiw a0, -1
            Op::Alu {
                alu: Alu::Addw,
                rd: 10,
                rs1: 10,
                rhs: Rhs::Imm(-1)
            }
        );
    }

    /// Peer regression: `c.mv` was decoded as `c.jr`.
    #[test]
    fn c_mv_is_not_c_jr() {
        assert_eq!(
            d16(0x852e).unwrap().op(), // c.mv a0, a1
            Op::Alu {
                alu: Alu::Add,
                rd: 10,
                rs1: 0,
                rhs: Rhs::Reg(11)
            }
        );
        assert_eq!(
            d16(0x8502).unwrap().op(), // c.jr a0
            Op::Jalr {
                rd: 0,
                rs1: 10,
                offset: 0
            }
        );
    }

    /// Peer regression: the `c.jalr` mask matched `c.ebreak`.
    #[test]
    fn c_jalr_and_c_ebreak_are_told_apart() {
        assert_eq!(d16(C_EBREAK), Err(Unsupported::System));
        for rs1 in 1..32u16 {
            assert_eq!(
                d16(0x9002 | rs1 << 7).unwrap().op(),
                Op::Jalr {
                    rd: 1,
                    rs1: rs1 as u8,
                    offset: 0
                },
                "c.jalr x{rs1}"
            );
        }
        // c.add has the same top bits but rs2 != 0.
        assert_eq!(d16(0x952e).unwrap().class(), Class::Emulate);
    }

    #[test]
    fn compressed_expansions() {
        let add_imm = |rd, rs1, imm| Op::Alu {
            alu: Alu::Add,
            rd,
            rs1,
            rhs: Rhs::Imm(imm),
        };
        let cases: &[(u16, Op)] = &[
            (
                0xb001,
                Op::Jal {
                    rd: 0,
                    offset: -2048,
                },
            ),
            (
                0xaffd,
                Op::Jal {
                    rd: 0,
                    offset: 2046,
                },
            ),
            (0xbffd, Op::Jal { rd: 0, offset: -2 }),
            (0xa46d, Op::Jal { rd: 0, offset: 682 }),
            (
                0xd101,
                Op::Branch {
                    cond: Cond::Eq,
                    rs1: 10,
                    rs2: 0,
                    offset: -256,
                },
            ),
            (
                0xccfd,
                Op::Branch {
                    cond: Cond::Eq,
                    rs1: 9,
                    rs2: 0,
                    offset: 254,
                },
            ),
            (
                0xfffd,
                Op::Branch {
                    cond: Cond::Ne,
                    rs1: 15,
                    rs2: 0,
                    offset: -2,
                },
            ),
            (
                0xe839,
                Op::Branch {
                    cond: Cond::Ne,
                    rs1: 8,
                    rs2: 0,
                    offset: 86,
                },
            ),
            (0x7101, add_imm(2, 2, -512)),
            (0x717d, add_imm(2, 2, -16)),
            (0x617d, add_imm(2, 2, 496)),
            (0x0800, add_imm(8, 2, 16)),
            (0x1501, add_imm(10, 10, -32)),
            (0x057d, add_imm(10, 10, 31)),
            (0x5501, add_imm(10, 0, -32)),
            (0x437d, add_imm(6, 0, 31)),
            (
                0x7501,
                Op::Lui {
                    rd: 10,
                    imm: -0x20000,
                },
            ),
            (
                0x64fd,
                Op::Lui {
                    rd: 9,
                    imm: 0x1f000,
                },
            ),
            (
                0x6505,
                Op::Lui {
                    rd: 10,
                    imm: 0x1000,
                },
            ),
            (
                0x917d,
                Op::Alu {
                    alu: Alu::Srl,
                    rd: 10,
                    rs1: 10,
                    rhs: Rhs::Imm(63),
                },
            ),
            (
                0x8485,
                Op::Alu {
                    alu: Alu::Sra,
                    rd: 9,
                    rs1: 9,
                    rhs: Rhs::Imm(1),
                },
            ),
            (
                0x8841,
                Op::Alu {
                    alu: Alu::And,
                    rd: 8,
                    rs1: 8,
                    rhs: Rhs::Imm(16),
                },
            ),
            (
                0x157e,
                Op::Alu {
                    alu: Alu::Sll,
                    rd: 10,
                    rs1: 10,
                    rhs: Rhs::Imm(63),
                },
            ),
            (
                0x8d0d,
                Op::Alu {
                    alu: Alu::Sub,
                    rd: 10,
                    rs1: 10,
                    rhs: Rhs::Reg(11),
                },
            ),
            (
                0x9d1d,
                Op::Alu {
                    alu: Alu::Subw,
                    rd: 10,
                    rs1: 10,
                    rhs: Rhs::Reg(15),
                },
            ),
            (
                0x9ca9,
                Op::Alu {
                    alu: Alu::Addw,
                    rd: 9,
                    rs1: 9,
                    rhs: Rhs::Reg(10),
                },
            ),
            (
                0x913e,
                Op::Alu {
                    alu: Alu::Add,
                    rd: 2,
                    rs1: 2,
                    rhs: Rhs::Reg(15),
                },
            ),
            (
                0x808a,
                Op::Alu {
                    alu: Alu::Add,
                    rd: 1,
                    rs1: 0,
                    rhs: Rhs::Reg(2),
                },
            ),
        ];
        for &(parcel, op) in cases {
            let insn = d16(parcel).unwrap();
            assert_eq!(insn.op(), op, "{parcel:#06x}");
            assert_eq!((insn.raw(), insn.len()), (u32::from(parcel), 2));
        }
    }

    #[test]
    fn upper_immediates_and_shift_amounts() {
        assert_eq!(
            d32(u(LUI, 10, 0x80000)).unwrap().op(),
            Op::Lui {
                rd: 10,
                imm: -0x8000_0000
            }
        );
        assert_eq!(
            d32(u(AUIPC, 10, 0xfffff)).unwrap().op(),
            Op::Auipc { rd: 10, imm: -4096 }
        );
        assert_eq!(
            d32(0x03f5_9513).unwrap().op(), // slli a0, a1, 63
            Op::Alu {
                alu: Alu::Sll,
                rd: 10,
                rs1: 11,
                rhs: Rhs::Imm(63)
            }
        );
        assert_eq!(
            d32(0x43f5_d513).unwrap().op(), // srai a0, a1, 63
            Op::Alu {
                alu: Alu::Sra,
                rd: 10,
                rs1: 11,
                rhs: Rhs::Imm(63)
            }
        );
        assert_eq!(
            d32(0xfff5_b513).unwrap().op(), // sltiu a0, a1, -1
            Op::Alu {
                alu: Alu::Sltu,
                rd: 10,
                rs1: 11,
                rhs: Rhs::Imm(-1)
            }
        );
    }

    // ----- whole-space properties -----

    /// Checks what holds for any decodable instruction: its length and raw bits, and that
    /// `execute` agrees with the class (never panicking).
    fn check_consistent(bytes: &[u8]) {
        let Ok(insn) = decode(bytes) else { return };
        let parcel = u16::from_le_bytes([bytes[0], bytes[1]]);
        assert_eq!(Some(insn.len()), insn_len(parcel));
        let mut raw = [0u8; 4];
        raw[..insn.len()].copy_from_slice(&bytes[..insn.len()]);
        assert_eq!(insn.raw(), u32::from_le_bytes(raw));
        for (pc, fill) in [(0x1_0000, 0x5555), (usize::MAX - 1, usize::MAX)] {
            let mut regs = TestRegs::at(pc);
            regs.x[1..].iter_mut().for_each(|x| *x ^= fill);
            let before = regs.clone();
            let done = insn.execute(&mut regs);
            assert_eq!(done, insn.class() != Class::Xol, "{:#x}", insn.raw());
            if !done {
                assert_eq!(regs, before, "an out-of-line insn must change nothing");
            }
            assert!(!regs.wrote_x0, "{:#x} wrote x0", insn.raw());
        }
    }

    #[test]
    fn every_compressed_parcel() {
        let mut valid = 0;
        for parcel in 0..=u16::MAX {
            if parcel & 0b11 == 0b11 {
                continue;
            }
            let bytes = parcel.to_le_bytes();
            if decode(&bytes).is_ok() {
                valid += 1;
            }
            check_consistent(&bytes);
        }
        // Of the 49152 compressed parcels, llvm-mc's disassembler rejects 2377 more; it
        // additionally accepts the 31 reserved `c.lui rd, 0` code points, `c.unimp` (the
        // all-zero parcel) and `c.ebreak` (refused here as a system instruction).
        assert_eq!(valid, 49152 - 2377 - 31 - 1 - 1);
    }

    #[test]
    fn a_million_32_bit_words() {
        // A fixed LCG over the 32-bit space; decode and execute must never panic.
        let mut word: u32 = 0x1234_5678;
        for _ in 0..1_000_000 {
            word = word.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            for w in [word, word | 0b11, word & !0x7c | 0x13 | (word & 0x60)] {
                check_consistent(&w.to_le_bytes());
            }
        }
    }
}

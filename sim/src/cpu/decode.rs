//! Decoding RV64IMAFDC (+ Zicsr user counters and the F/D CSRs) into a compact predecoded
//! form.
//!
//! Compressed instructions expand to the same [`Op`]s as their 32-bit twins, with
//! `len == 2`, so the executor has one path per operation. F/D encodings are decoded by
//! [`super::fp`]. Anything outside the supported set (privileged, reserved encodings,
//! static rounding modes 5 and 6, CSRs other than the user counters and `fflags`/`frm`/
//! `fcsr`, writes to the counters) decodes to [`Op::Illegal`] carrying the raw bits.

use super::fp::{self, FpOp};

/// One operation. `Undecoded` marks an empty decode-cache slot.
#[allow(missing_docs)] // the names are the RISC-V mnemonics
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Undecoded,
    Illegal,
    Lui,
    Auipc,
    Jal,
    Jalr,
    Beq,
    Bne,
    Blt,
    Bge,
    Bltu,
    Bgeu,
    Lb,
    Lh,
    Lw,
    Ld,
    Lbu,
    Lhu,
    Lwu,
    Sb,
    Sh,
    Sw,
    Sd,
    Addi,
    Slti,
    Sltiu,
    Xori,
    Ori,
    Andi,
    Slli,
    Srli,
    Srai,
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
    Addiw,
    Slliw,
    Srliw,
    Sraiw,
    Addw,
    Subw,
    Sllw,
    Srlw,
    Sraw,
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
    Mulw,
    Divw,
    Divuw,
    Remw,
    Remuw,
    /// `fence`, `fence.i`: nothing to do on one hart with a coherent decode cache.
    Fence,
    Ecall,
    Ebreak,
    /// Read of a user counter CSR; `imm` is the CSR number.
    CsrRead,
    LrW,
    LrD,
    ScW,
    ScD,
    /// 32-bit AMO; `imm` is funct5 (see [`amo`]).
    AmoW,
    /// 64-bit AMO; `imm` is funct5 (see [`amo`]).
    AmoD,
    /// A single-precision (F) operation.
    FpS(FpOp),
    /// A double-precision (D) operation.
    FpD(FpOp),
    /// `csrrw/csrrs/csrrc(i)` on `fflags`, `frm` or `fcsr`: `rm` is funct3, `imm` the CSR
    /// number, `rs1` the source register or 5-bit immediate.
    CsrFp,
}

/// AMO funct5 values.
#[allow(missing_docs)]
pub mod amo {
    pub const ADD: i32 = 0x00;
    pub const SWAP: i32 = 0x01;
    pub const XOR: i32 = 0x04;
    pub const OR: i32 = 0x08;
    pub const AND: i32 = 0x0c;
    pub const MIN: i32 = 0x10;
    pub const MAX: i32 = 0x14;
    pub const MINU: i32 = 0x18;
    pub const MAXU: i32 = 0x1c;
}

/// User counter CSRs.
pub const CSR_CYCLE: i32 = 0xc00;
/// `time` CSR.
pub const CSR_TIME: i32 = 0xc01;
/// `instret` CSR.
pub const CSR_INSTRET: i32 = 0xc02;

/// A predecoded instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// What to do.
    pub op: Op,
    /// Destination register.
    pub rd: u8,
    /// First source register.
    pub rs1: u8,
    /// Second source register.
    pub rs2: u8,
    /// Encoded length in bytes: 2 or 4.
    pub len: u8,
    /// Third source register (fused multiply-add).
    pub rs3: u8,
    /// F/D rounding mode (0..=4, or [`fp::RM_DYN`]); funct3 for [`Op::CsrFp`].
    pub rm: u8,
    /// Immediate (sign-extended), shift amount, CSR number, AMO funct5, or for
    /// [`Op::Illegal`] and the F/D operations that round the raw instruction bits.
    pub imm: i32,
}

impl Insn {
    /// The empty decode-cache slot.
    pub const UNDECODED: Insn = Insn {
        op: Op::Undecoded,
        rd: 0,
        rs1: 0,
        rs2: 0,
        len: 0,
        rs3: 0,
        rm: 0,
        imm: 0,
    };

    fn new(op: Op, rd: u32, rs1: u32, rs2: u32, imm: i32, len: u8) -> Insn {
        Insn {
            op,
            rd: rd as u8,
            rs1: rs1 as u8,
            rs2: rs2 as u8,
            len,
            rs3: 0,
            rm: 0,
            imm,
        }
    }

    /// An F (`double == false`) or D operation.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fp(
        op: FpOp,
        double: bool,
        rd: u8,
        rs1: u8,
        rs2: u8,
        rs3: u8,
        rm: u8,
        imm: i32,
        len: u8,
    ) -> Insn {
        Insn {
            op: if double { Op::FpD(op) } else { Op::FpS(op) },
            rd,
            rs1,
            rs2,
            len,
            rs3,
            rm,
            imm,
        }
    }

    fn illegal(raw: u32, len: u8) -> Insn {
        Insn {
            op: Op::Illegal,
            len,
            imm: raw as i32,
            ..Insn::UNDECODED
        }
    }
}

/// Whether a 16-bit parcel starts a 32-bit instruction (anything else is compressed).
#[inline]
pub fn is_32bit(parcel: u16) -> bool {
    parcel & 3 == 3
}

/// Decodes a 32-bit instruction.
pub fn decode32(raw: u32) -> Insn {
    let rd = (raw >> 7) & 31;
    let rs1 = (raw >> 15) & 31;
    let rs2 = (raw >> 20) & 31;
    let f3 = (raw >> 12) & 7;
    let f7 = raw >> 25;
    let imm_i = (raw as i32) >> 20;
    let imm_s = ((raw as i32) >> 25 << 5) | ((raw >> 7) & 0x1f) as i32;
    let imm_b = ((raw as i32) >> 31 << 12)
        | (((raw >> 7) & 1) << 11) as i32
        | (((raw >> 25) & 0x3f) << 5) as i32
        | (((raw >> 8) & 0xf) << 1) as i32;
    let imm_u = (raw & 0xffff_f000) as i32;
    let imm_j = ((raw as i32) >> 31 << 20)
        | (raw & 0xff000) as i32
        | (((raw >> 20) & 1) << 11) as i32
        | (((raw >> 21) & 0x3ff) << 1) as i32;
    let i = |op| Insn::new(op, rd, rs1, rs2, imm_i, 4);
    let r = |op| Insn::new(op, rd, rs1, rs2, 0, 4);
    let bad = Insn::illegal(raw, 4);
    match raw & 0x7f {
        0x37 => Insn::new(Op::Lui, rd, 0, 0, imm_u, 4),
        0x17 => Insn::new(Op::Auipc, rd, 0, 0, imm_u, 4),
        0x6f => Insn::new(Op::Jal, rd, 0, 0, imm_j, 4),
        0x67 if f3 == 0 => i(Op::Jalr),
        0x63 => {
            let op = match f3 {
                0 => Op::Beq,
                1 => Op::Bne,
                4 => Op::Blt,
                5 => Op::Bge,
                6 => Op::Bltu,
                7 => Op::Bgeu,
                _ => return bad,
            };
            Insn::new(op, 0, rs1, rs2, imm_b, 4)
        }
        0x03 => {
            let op = match f3 {
                0 => Op::Lb,
                1 => Op::Lh,
                2 => Op::Lw,
                3 => Op::Ld,
                4 => Op::Lbu,
                5 => Op::Lhu,
                6 => Op::Lwu,
                _ => return bad,
            };
            i(op)
        }
        0x23 => {
            let op = match f3 {
                0 => Op::Sb,
                1 => Op::Sh,
                2 => Op::Sw,
                3 => Op::Sd,
                _ => return bad,
            };
            Insn::new(op, 0, rs1, rs2, imm_s, 4)
        }
        0x13 => {
            let shamt = ((raw >> 20) & 0x3f) as i32;
            let f6 = raw >> 26;
            match f3 {
                0 => i(Op::Addi),
                2 => i(Op::Slti),
                3 => i(Op::Sltiu),
                4 => i(Op::Xori),
                6 => i(Op::Ori),
                7 => i(Op::Andi),
                1 if f6 == 0 => Insn::new(Op::Slli, rd, rs1, 0, shamt, 4),
                5 if f6 == 0 => Insn::new(Op::Srli, rd, rs1, 0, shamt, 4),
                5 if f6 == 0x10 => Insn::new(Op::Srai, rd, rs1, 0, shamt, 4),
                _ => bad,
            }
        }
        0x1b => {
            let shamt = rs2 as i32;
            match (f3, f7) {
                (0, _) => i(Op::Addiw),
                (1, 0) => Insn::new(Op::Slliw, rd, rs1, 0, shamt, 4),
                (5, 0) => Insn::new(Op::Srliw, rd, rs1, 0, shamt, 4),
                (5, 0x20) => Insn::new(Op::Sraiw, rd, rs1, 0, shamt, 4),
                _ => bad,
            }
        }
        0x33 => r(match (f7, f3) {
            (0, 0) => Op::Add,
            (0, 1) => Op::Sll,
            (0, 2) => Op::Slt,
            (0, 3) => Op::Sltu,
            (0, 4) => Op::Xor,
            (0, 5) => Op::Srl,
            (0, 6) => Op::Or,
            (0, 7) => Op::And,
            (0x20, 0) => Op::Sub,
            (0x20, 5) => Op::Sra,
            (1, 0) => Op::Mul,
            (1, 1) => Op::Mulh,
            (1, 2) => Op::Mulhsu,
            (1, 3) => Op::Mulhu,
            (1, 4) => Op::Div,
            (1, 5) => Op::Divu,
            (1, 6) => Op::Rem,
            (1, 7) => Op::Remu,
            _ => return bad,
        }),
        0x3b => r(match (f7, f3) {
            (0, 0) => Op::Addw,
            (0, 1) => Op::Sllw,
            (0, 5) => Op::Srlw,
            (0x20, 0) => Op::Subw,
            (0x20, 5) => Op::Sraw,
            (1, 0) => Op::Mulw,
            (1, 4) => Op::Divw,
            (1, 5) => Op::Divuw,
            (1, 6) => Op::Remw,
            (1, 7) => Op::Remuw,
            _ => return bad,
        }),
        0x0f if f3 <= 1 => Insn::new(Op::Fence, 0, 0, 0, 0, 4),
        0x07 | 0x27 | 0x43 | 0x47 | 0x4b | 0x4f | 0x53 => fp::decode32(raw).unwrap_or(bad),
        0x73 => match raw {
            0x0000_0073 => Insn::new(Op::Ecall, 0, 0, 0, 0, 4),
            0x0010_0073 => Insn::new(Op::Ebreak, 0, 0, 0, 0, 4),
            _ => {
                let csr = (raw >> 20) as i32;
                // Only reads (csrrs/csrrc with x0, csrrsi/csrrci with 0) of the user counters.
                let read_only = matches!(f3, 2 | 3 | 6 | 7) && rs1 == 0;
                let fp_csr = matches!(csr, fp::csr::FFLAGS | fp::csr::FRM | fp::csr::FCSR);
                if read_only && matches!(csr, CSR_CYCLE | CSR_TIME | CSR_INSTRET) {
                    Insn::new(Op::CsrRead, rd, 0, 0, csr, 4)
                } else if fp_csr && f3 != 0 && f3 != 4 {
                    Insn {
                        rm: f3 as u8,
                        ..Insn::new(Op::CsrFp, rd, rs1, 0, csr, 4)
                    }
                } else {
                    bad
                }
            }
        },
        0x2f if f3 == 2 || f3 == 3 => {
            let wide = f3 == 3;
            let f5 = (raw >> 27) as i32;
            let op = match f5 {
                0x02 if rs2 == 0 => {
                    if wide {
                        Op::LrD
                    } else {
                        Op::LrW
                    }
                }
                0x03 => {
                    if wide {
                        Op::ScD
                    } else {
                        Op::ScW
                    }
                }
                amo::ADD
                | amo::SWAP
                | amo::XOR
                | amo::OR
                | amo::AND
                | amo::MIN
                | amo::MAX
                | amo::MINU
                | amo::MAXU => {
                    if wide {
                        Op::AmoD
                    } else {
                        Op::AmoW
                    }
                }
                _ => return bad,
            };
            Insn::new(op, rd, rs1, rs2, f5, 4)
        }
        _ => bad,
    }
}

/// Bit `from` of `v`, moved to position `to`.
#[inline]
fn b(v: u32, from: u32, to: u32) -> u32 {
    ((v >> from) & 1) << to
}

/// Sign-extends the low `bits` bits of `v`.
fn sext(v: u32, bits: u32) -> i32 {
    ((v << (32 - bits)) as i32) >> (32 - bits)
}

/// Decodes a 16-bit (compressed) instruction.
pub fn decode16(raw: u16) -> Insn {
    let c = raw as u32;
    let f3 = (c >> 13) & 7;
    let rd = (c >> 7) & 31; // also rs1 in the full-register forms
    let rs2 = (c >> 2) & 31;
    let rdp = 8 + ((c >> 2) & 7); // rd'/rs2' in bits 4:2
    let rs1p = 8 + ((c >> 7) & 7); // rs1'/rd' in bits 9:7
    let imm6 = sext(b(c, 12, 5) | ((c >> 2) & 0x1f), 6);
    let shamt = (b(c, 12, 5) | ((c >> 2) & 0x1f)) as i32;
    let lw_off = (((c >> 10) & 7) << 3 | b(c, 6, 2) | b(c, 5, 6)) as i32;
    let ld_off = (((c >> 10) & 7) << 3 | ((c >> 5) & 3) << 6) as i32;
    let n = |op, rd, rs1, rs2, imm| Insn::new(op, rd, rs1, rs2, imm, 2);
    let bad = Insn::illegal(c, 2);
    match (c & 3, f3) {
        (0, 0) => {
            let imm = ((c >> 11) & 3) << 4 | ((c >> 7) & 0xf) << 6 | b(c, 6, 2) | b(c, 5, 3);
            if imm == 0 {
                return bad; // includes the all-zero illegal instruction
            }
            n(Op::Addi, rdp, 2, 0, imm as i32)
        }
        (0, 1) => Insn::fp(FpOp::Load, true, rdp as u8, rs1p as u8, 0, 0, 0, ld_off, 2),
        (0, 5) => Insn::fp(FpOp::Store, true, 0, rs1p as u8, rdp as u8, 0, 0, ld_off, 2),
        (0, 2) => n(Op::Lw, rdp, rs1p, 0, lw_off),
        (0, 3) => n(Op::Ld, rdp, rs1p, 0, ld_off),
        (0, 6) => n(Op::Sw, 0, rs1p, rdp, lw_off),
        (0, 7) => n(Op::Sd, 0, rs1p, rdp, ld_off),
        (1, 0) => n(Op::Addi, rd, rd, 0, imm6),
        (1, 1) if rd != 0 => n(Op::Addiw, rd, rd, 0, imm6),
        (1, 2) => n(Op::Addi, rd, 0, 0, imm6),
        (1, 3) if rd == 2 => {
            let imm = b(c, 12, 9) | b(c, 6, 4) | b(c, 5, 6) | ((c >> 3) & 3) << 7 | b(c, 2, 5);
            if imm == 0 {
                return bad;
            }
            n(Op::Addi, 2, 2, 0, sext(imm, 10))
        }
        (1, 3) => {
            let imm = b(c, 12, 17) | ((c >> 2) & 0x1f) << 12;
            if imm == 0 {
                return bad;
            }
            n(Op::Lui, rd, 0, 0, sext(imm, 18))
        }
        (1, 4) => match (c >> 10) & 3 {
            0 => n(Op::Srli, rs1p, rs1p, 0, shamt),
            1 => n(Op::Srai, rs1p, rs1p, 0, shamt),
            2 => n(Op::Andi, rs1p, rs1p, 0, imm6),
            _ => {
                let op = match (b(c, 12, 2) | (c >> 5) & 3) as u8 {
                    0 => Op::Sub,
                    1 => Op::Xor,
                    2 => Op::Or,
                    3 => Op::And,
                    4 => Op::Subw,
                    5 => Op::Addw,
                    _ => return bad,
                };
                n(op, rs1p, rs1p, rdp, 0)
            }
        },
        (1, 5) => {
            let imm = b(c, 12, 11)
                | b(c, 11, 4)
                | ((c >> 9) & 3) << 8
                | b(c, 8, 10)
                | b(c, 7, 6)
                | b(c, 6, 7)
                | ((c >> 3) & 7) << 1
                | b(c, 2, 5);
            n(Op::Jal, 0, 0, 0, sext(imm, 12))
        }
        (1, 6) | (1, 7) => {
            let imm = b(c, 12, 8)
                | ((c >> 10) & 3) << 3
                | ((c >> 5) & 3) << 6
                | ((c >> 3) & 3) << 1
                | b(c, 2, 5);
            let op = if f3 == 6 { Op::Beq } else { Op::Bne };
            n(op, 0, rs1p, 0, sext(imm, 9))
        }
        (2, 0) => n(Op::Slli, rd, rd, 0, shamt),
        (2, 1) => {
            let imm = b(c, 12, 5) | ((c >> 5) & 3) << 3 | ((c >> 2) & 7) << 6;
            Insn::fp(FpOp::Load, true, rd as u8, 2, 0, 0, 0, imm as i32, 2)
        }
        (2, 5) => {
            let imm = ((c >> 10) & 7) << 3 | ((c >> 7) & 7) << 6;
            Insn::fp(FpOp::Store, true, 0, 2, rs2 as u8, 0, 0, imm as i32, 2)
        }
        (2, 2) if rd != 0 => {
            let imm = b(c, 12, 5) | ((c >> 4) & 7) << 2 | ((c >> 2) & 3) << 6;
            n(Op::Lw, rd, 2, 0, imm as i32)
        }
        (2, 3) if rd != 0 => {
            let imm = b(c, 12, 5) | ((c >> 5) & 3) << 3 | ((c >> 2) & 7) << 6;
            n(Op::Ld, rd, 2, 0, imm as i32)
        }
        (2, 4) => match (b(c, 12, 0), rd, rs2) {
            (0, 0, 0) => bad,
            (0, _, 0) => n(Op::Jalr, 0, rd, 0, 0),
            (0, _, _) => n(Op::Add, rd, 0, rs2, 0),
            (_, 0, 0) => n(Op::Ebreak, 0, 0, 0, 0),
            (_, _, 0) => n(Op::Jalr, 1, rd, 0, 0),
            _ => n(Op::Add, rd, rd, rs2, 0),
        },
        (2, 6) => {
            let imm = ((c >> 9) & 0xf) << 2 | ((c >> 7) & 3) << 6;
            n(Op::Sw, 0, 2, rs2, imm as i32)
        }
        (2, 7) => {
            let imm = ((c >> 10) & 7) << 3 | ((c >> 7) & 7) << 6;
            n(Op::Sd, 0, 2, rs2, imm as i32)
        }
        _ => bad, // reserved encodings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_representative_32bit_forms() {
        // addi a0, a0, -1
        assert_eq!(
            decode32(0xfff5_0513),
            Insn::new(Op::Addi, 10, 10, 31, -1, 4)
        );
        // jal ra, -4 (0xffdff0ef)
        let j = decode32(0xffdf_f0ef);
        assert_eq!((j.op, j.rd, j.imm), (Op::Jal, 1, -4));
        // bne a0, zero, -8: 0xfe051ce3
        let br = decode32(0xfe05_1ce3);
        assert_eq!((br.op, br.rs1, br.rs2, br.imm), (Op::Bne, 10, 0, -8));
        // sd ra, 8(sp): 0x00113423
        let s = decode32(0x0011_3423);
        assert_eq!((s.op, s.rs1, s.rs2, s.imm), (Op::Sd, 2, 1, 8));
        // rdinstret a0: csrrs a0, instret, x0 = 0xc0202573
        assert_eq!(decode32(0xc020_2573).op, Op::CsrRead);
        // csrrw x0, instret, a0 writes a read-only CSR: illegal
        assert_eq!(decode32(0xc025_1073).op, Op::Illegal);
        // mstatus read: illegal in user mode
        assert_eq!(decode32(0x3000_2573).op, Op::Illegal);
        // fld fa0, 0(a0)
        assert_eq!(decode32(0x0005_3507).op, Op::FpD(FpOp::Load));
        // fadd.d with the reserved rounding mode 5; fadd.h (no Zfh)
        assert_eq!(decode32(0x02b5_5553).op, Op::Illegal);
        assert_eq!(decode32(0x04b5_0553).op, Op::Illegal);
        // frflags a0 = csrrs a0, fflags, x0
        assert_eq!(decode32(0x0010_2573).op, Op::CsrFp);
        // wfi
        assert_eq!(decode32(0x1050_0073).op, Op::Illegal);
    }

    #[test]
    fn a_predecoded_instruction_stays_small() {
        // The decode cache holds one per 2-byte parcel of every executed page.
        assert_eq!(std::mem::size_of::<Insn>(), 12);
    }

    #[test]
    fn decodes_representative_compressed_forms() {
        assert_eq!(decode16(0x9002).op, Op::Ebreak); // c.ebreak
        assert_eq!(decode16(0x0000).op, Op::Illegal);
        // c.addi sp, -16: 0x1141
        assert_eq!(decode16(0x1141), Insn::new(Op::Addi, 2, 2, 0, -16, 2));
        // c.sdsp ra, 8(sp): 0xe406
        assert_eq!(decode16(0xe406), Insn::new(Op::Sd, 0, 2, 1, 8, 2));
        // c.ldsp ra, 8(sp): 0x60a2
        assert_eq!(decode16(0x60a2), Insn::new(Op::Ld, 1, 2, 0, 8, 2));
        // c.ret = c.jr ra: 0x8082
        assert_eq!(decode16(0x8082), Insn::new(Op::Jalr, 0, 1, 0, 0, 2));
        // c.mv a0, a1: 0x852e
        assert_eq!(decode16(0x852e), Insn::new(Op::Add, 10, 0, 11, 0, 2));
        // c.j -2: 0xbffd
        assert_eq!(decode16(0xbffd).imm, -2);
        // c.beqz a0, +8: 0xc501
        assert_eq!(decode16(0xc501), Insn::new(Op::Beq, 0, 10, 0, 8, 2));
        // c.lui a0, 0xfffff (-4096): 0x757d
        assert_eq!(decode16(0x757d), Insn::new(Op::Lui, 10, 0, 0, -4096, 2));
        // c.addi16sp sp, -64: 0x7139
        assert_eq!(decode16(0x7139), Insn::new(Op::Addi, 2, 2, 0, -64, 2));
        // c.fld fa0, 0(a0): 0x2108
        assert_eq!(
            decode16(0x2108),
            Insn::fp(FpOp::Load, true, 10, 10, 0, 0, 0, 0, 2)
        );
    }
}

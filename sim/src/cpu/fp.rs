//! RV64F and RV64D: the F/D register file, `fcsr`, and every F/D instruction.
//!
//! Results are exact as the ISA defines them: arithmetic goes through `rustc_apfloat`
//! (correct rounding in all five modes, IEEE status flags); square root is computed here
//! with integer arithmetic. RISC-V specifics layered on top:
//! - NaN-boxing: a single is held in the low half of a 64-bit register with the high half
//!   all ones; a single operand that is not boxed reads as the canonical NaN.
//! - Every NaN result is the canonical NaN (no payload propagation); a signalling NaN input
//!   raises NV.
//! - Overflow and underflow are signalled as IEEE 754 defines them from the result rounded
//!   with an unbounded exponent (tininess after rounding, as RISC-V specifies), which
//!   `rustc_apfloat` does not do at two boundaries: `unbounded_flags` fixes those.
//! - Conversions to integers saturate (NaN converts to the largest value) and raise NV.
//! - The rounding mode is the instruction's `rm` field, or `frm` for the dynamic mode 7;
//!   an invalid mode (5 and 6 statically, or `frm` >= 5 dynamically) is an illegal
//!   instruction, also for conversions that cannot round (as on hardware and in QEMU).
//!
//! `mstatus.FS` is not modelled: like a user process under Linux, FP is always enabled.

use rustc_apfloat::ieee::{Double, IeeeFloat, Semantics, Single};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};

use super::decode::Insn;
use super::{Cpu, Stop};
use crate::mem::PhysMem;

/// The F/D register file and `fcsr`: plain data, cheap to copy (a thread's saved context
/// holds one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FpRegs {
    /// `f0..f31` as raw bits; a single-precision value is NaN-boxed in the low 32 bits.
    pub f: [u64; 32],
    /// `fcsr`: `frm` in bits 7:5, the accrued exception flags `fflags` in bits 4:0.
    pub fcsr: u32,
}

/// `fflags` bits.
pub mod flags {
    /// Inexact.
    pub const NX: u32 = 1;
    /// Underflow.
    pub const UF: u32 = 2;
    /// Overflow.
    pub const OF: u32 = 4;
    /// Division by zero.
    pub const DZ: u32 = 8;
    /// Invalid operation.
    pub const NV: u32 = 16;
}

/// CSR numbers of the F/D state.
pub mod csr {
    /// `fflags`: the accrued exception flags.
    pub const FFLAGS: i32 = 0x001;
    /// `frm`: the dynamic rounding mode.
    pub const FRM: i32 = 0x002;
    /// `fcsr`: `frm` and `fflags` together.
    pub const FCSR: i32 = 0x003;
}

/// The `rm` value that selects the dynamic rounding mode (`frm`).
pub const RM_DYN: u8 = 7;

/// An F or D operation; the format comes from the [`super::decode::Op`] variant that
/// carries it (`FpS` or `FpD`).
#[allow(missing_docs)] // the names are the mnemonics without the format suffix
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FpOp {
    /// `flw`/`fld` (and `c.fld`, `c.fldsp`): `f[rd] = mem[x[rs1] + imm]`.
    Load,
    /// `fsw`/`fsd` (and `c.fsd`, `c.fsdsp`): `mem[x[rs1] + imm] = f[rs2]`.
    Store,
    Madd,
    Msub,
    Nmsub,
    Nmadd,
    Add,
    Sub,
    Mul,
    Div,
    Sqrt,
    Sgnj,
    Sgnjn,
    Sgnjx,
    Min,
    Max,
    /// `fcvt.s.d` (in `FpS`) or `fcvt.d.s` (in `FpD`): from the other format.
    CvtFromOther,
    /// `fcvt.w.*`: to a signed 32-bit integer in `x[rd]`.
    CvtW,
    CvtWu,
    CvtL,
    CvtLu,
    /// `fcvt.*.w`: from the signed 32-bit integer in `x[rs1]`.
    CvtFromW,
    CvtFromWu,
    CvtFromL,
    CvtFromLu,
    /// `fmv.x.w`/`fmv.x.d`: raw bits to `x[rd]` (a single sign-extended).
    MvToX,
    /// `fmv.w.x`/`fmv.d.x`: raw bits from `x[rs1]` (a single NaN-boxed).
    MvFromX,
    Eq,
    Lt,
    Le,
    Class,
}

/// Decodes the F/D opcodes (LOAD-FP, STORE-FP, the fused multiply-adds and OP-FP); the
/// caller has matched `raw & 0x7f` to one of them. `None` means illegal.
pub(super) fn decode32(raw: u32) -> Option<Insn> {
    let rd = ((raw >> 7) & 31) as u8;
    let rs1 = ((raw >> 15) & 31) as u8;
    let rs2 = ((raw >> 20) & 31) as u8;
    let rs3 = (raw >> 27) as u8;
    let f3 = ((raw >> 12) & 7) as u8;
    let f7 = raw >> 25;
    // Operations that round carry `rm` and, as their immediate, the raw bits (for the
    // illegal-instruction report when `frm` turns out to be invalid).
    let rounding = |op, double| {
        let valid = f3 <= 4 || f3 == RM_DYN;
        valid.then(|| Insn::fp(op, double, rd, rs1, rs2, rs3, f3, raw as i32, 4))
    };
    let plain = |op, double| Some(Insn::fp(op, double, rd, rs1, rs2, 0, 0, 0, 4));
    match raw & 0x7f {
        0x07 | 0x27 => {
            let double = match f3 {
                2 => false,
                3 => true,
                _ => return None,
            };
            Some(if raw & 0x7f == 0x07 {
                Insn::fp(FpOp::Load, double, rd, rs1, 0, 0, 0, (raw as i32) >> 20, 4)
            } else {
                let imm = ((raw as i32) >> 25 << 5) | ((raw >> 7) & 0x1f) as i32;
                Insn::fp(FpOp::Store, double, 0, rs1, rs2, 0, 0, imm, 4)
            })
        }
        op @ (0x43 | 0x47 | 0x4b | 0x4f) => {
            let double = match f7 & 3 {
                0 => false,
                1 => true,
                _ => return None,
            };
            let fused = match op {
                0x43 => FpOp::Madd,
                0x47 => FpOp::Msub,
                0x4b => FpOp::Nmsub,
                _ => FpOp::Nmadd,
            };
            rounding(fused, double)
        }
        0x53 => {
            let double = match f7 & 3 {
                0 => false,
                1 => true,
                _ => return None,
            };
            match (f7 >> 2, f3, rs2) {
                (0x00, _, _) => rounding(FpOp::Add, double),
                (0x01, _, _) => rounding(FpOp::Sub, double),
                (0x02, _, _) => rounding(FpOp::Mul, double),
                (0x03, _, _) => rounding(FpOp::Div, double),
                (0x0b, _, 0) => rounding(FpOp::Sqrt, double),
                (0x04, 0, _) => plain(FpOp::Sgnj, double),
                (0x04, 1, _) => plain(FpOp::Sgnjn, double),
                (0x04, 2, _) => plain(FpOp::Sgnjx, double),
                (0x05, 0, _) => plain(FpOp::Min, double),
                (0x05, 1, _) => plain(FpOp::Max, double),
                // fcvt.s.d has rs2 = 1 (source D), fcvt.d.s rs2 = 0 (source S).
                (0x08, _, 1) if !double => rounding(FpOp::CvtFromOther, false),
                (0x08, _, 0) if double => rounding(FpOp::CvtFromOther, true),
                (0x14, 2, _) => plain(FpOp::Eq, double),
                (0x14, 1, _) => plain(FpOp::Lt, double),
                (0x14, 0, _) => plain(FpOp::Le, double),
                (0x18, _, 0) => rounding(FpOp::CvtW, double),
                (0x18, _, 1) => rounding(FpOp::CvtWu, double),
                (0x18, _, 2) => rounding(FpOp::CvtL, double),
                (0x18, _, 3) => rounding(FpOp::CvtLu, double),
                (0x1a, _, 0) => rounding(FpOp::CvtFromW, double),
                (0x1a, _, 1) => rounding(FpOp::CvtFromWu, double),
                (0x1a, _, 2) => rounding(FpOp::CvtFromL, double),
                (0x1a, _, 3) => rounding(FpOp::CvtFromLu, double),
                (0x1c, 0, 0) => plain(FpOp::MvToX, double),
                (0x1c, 1, 0) => plain(FpOp::Class, double),
                (0x1e, 0, 0) => plain(FpOp::MvFromX, double),
                _ => None,
            }
        }
        _ => None,
    }
}

/// An IEEE format as the F/D registers hold it.
pub(super) trait Format:
    Float + FloatConvert<Self::Other> + FloatConvert<Self::Unbounded>
{
    /// The other one of single and double (for `fcvt.s.d`/`fcvt.d.s`).
    type Other: Format;
    /// The same precision with an unbounded exponent range (see [`unbounded_flags`]).
    type Unbounded: Float;
    /// Bytes in memory.
    const BYTES: usize;
    /// The register value of the canonical NaN.
    const CANONICAL_NAN: u64;
    /// The operand a register holds (unboxed for a single).
    fn from_reg(reg: u64) -> Self;
    /// The register value of a result (NaN-boxed for a single).
    fn to_reg(self) -> u64;
}

impl Format for Single {
    type Other = Double;
    type Unbounded = IeeeFloat<UnboundedS<24>>;
    const BYTES: usize = 4;
    const CANONICAL_NAN: u64 = 0xffff_ffff_7fc0_0000;
    fn from_reg(reg: u64) -> Self {
        let bits = if reg >> 32 == 0xffff_ffff {
            reg as u32
        } else {
            Self::CANONICAL_NAN as u32
        };
        Single::from_bits(bits as u128)
    }
    fn to_reg(self) -> u64 {
        box_single(self.to_bits() as u32)
    }
}

impl Format for Double {
    type Other = Single;
    type Unbounded = IeeeFloat<UnboundedS<53>>;
    const BYTES: usize = 8;
    const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;
    fn from_reg(reg: u64) -> Self {
        Double::from_bits(reg as u128)
    }
    fn to_reg(self) -> u64 {
        self.to_bits() as u64
    }
}

/// A binary format with `P` bits of precision and an exponent range that no F/D result
/// leaves: rounding into it is IEEE 754's "rounding as if the exponent range were
/// unbounded".
pub struct UnboundedS<const P: usize>;

impl<const P: usize> Semantics for UnboundedS<P> {
    const BITS: usize = P + 16;
    const EXP_BITS: usize = 16;
}

/// `bits` as a NaN-boxed single in a 64-bit register.
#[inline]
pub fn box_single(bits: u32) -> u64 {
    0xffff_ffff_0000_0000 | bits as u64
}

/// The `fflags` bits of an apfloat status.
fn fflags(status: Status) -> u32 {
    let mut f = 0;
    for (s, bit) in [
        (Status::INVALID_OP, flags::NV),
        (Status::DIV_BY_ZERO, flags::DZ),
        (Status::OVERFLOW, flags::OF),
        (Status::UNDERFLOW, flags::UF),
        (Status::INEXACT, flags::NX),
    ] {
        if status.contains(s) {
            f |= bit;
        }
    }
    f
}

/// The rounding modes 0..=4 of `frm`/`rm`.
fn round_mode(rm: u32) -> Option<Round> {
    Some(match rm {
        0 => Round::NearestTiesToEven,
        1 => Round::TowardZero,
        2 => Round::TowardNegative,
        3 => Round::TowardPositive,
        4 => Round::NearestTiesToAway,
        _ => return None,
    })
}

/// The arithmetic operations that round.
#[derive(Clone, Copy)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    /// `a * b + c`, one rounding.
    MulAdd,
}

/// `op` on `a, b (, c)` rounded in `round`, in any format (the F/D ones and their
/// unbounded twins).
fn arith<T: Float>(op: Arith, a: T, b: T, c: T, round: Round) -> StatusAnd<T> {
    match op {
        Arith::Add => a.add_r(b, round),
        Arith::Sub => a.sub_r(b, round),
        Arith::Mul => a.mul_r(b, round),
        Arith::Div => a.div_r(b, round),
        Arith::MulAdd => a.mul_add_r(b, c, round),
    }
}

/// Whether any of `values` is a signalling NaN.
fn any_signaling<F: Float>(values: &[F]) -> bool {
    values.iter().any(|v| v.is_signaling())
}

/// Adds the flags IEEE 754 defines from the result rounded with an unbounded exponent
/// (`unbounded` computes it) where `rustc_apfloat` leaves them out, both at a boundary of
/// the finite range:
/// - overflow: an inexact ±(largest finite) from rounding toward zero that is, unbounded,
///   larger still (apfloat reports only inexact);
/// - underflow, tininess being detected after rounding: an inexact ±(smallest normal)
///   whose unbounded rounding is below it (a subnormal-range result that rounded up).
fn unbounded_flags<F: Format>(
    r: StatusAnd<F>,
    unbounded: impl FnOnce() -> F::Unbounded,
) -> StatusAnd<F> {
    if r.status != Status::INEXACT {
        return r;
    }
    let magnitude = r.value.abs();
    let (largest, min_normal) = (F::largest(), F::smallest_normalized());
    let extra = if magnitude.bitwise_eq(largest) {
        (unbounded().abs() > widen(largest)).then_some(Status::OVERFLOW)
    } else if magnitude.bitwise_eq(min_normal) {
        (unbounded().abs() < widen(min_normal)).then_some(Status::UNDERFLOW)
    } else {
        None
    };
    match extra {
        Some(flag) => (flag | Status::INEXACT).and(r.value),
        None => r,
    }
}

/// `x` in its unbounded-exponent twin format (exact).
fn widen<F: Format>(x: F) -> F::Unbounded {
    FloatConvert::<F::Unbounded>::convert(x, &mut false).value
}

/// A NaN result becomes the canonical NaN.
fn canonical<F: Format>(x: F) -> u64 {
    if x.is_nan() {
        F::CANONICAL_NAN
    } else {
        x.to_reg()
    }
}

/// `op` with the RISC-V NaN rules: any NaN input gives the canonical NaN (NV if one is
/// signalling, or for `fma(∞, 0, qNaN)`); returns the register value and the flags.
fn rounded<F: Format>(op: Arith, a: F, b: F, c: F, round: Round) -> (u64, u32) {
    let inputs: &[F] = if matches!(op, Arith::MulAdd) {
        &[a, b, c]
    } else {
        &[a, b]
    };
    if inputs.iter().any(|v| v.is_nan()) {
        let inf_times_zero = matches!(op, Arith::MulAdd)
            && ((a.is_infinite() && b.is_zero()) || (a.is_zero() && b.is_infinite()));
        let nv = any_signaling(inputs) || inf_times_zero;
        return (F::CANONICAL_NAN, if nv { flags::NV } else { 0 });
    }
    let r = arith(op, a, b, c, round);
    let r = unbounded_flags(r, || arith(op, widen(a), widen(b), widen(c), round).value);
    (canonical(r.value), fflags(r.status))
}

/// Square root, correctly rounded, from an integer square root with enough extra bits.
fn sqrt<F: Format>(x: F, round: Round) -> (u64, u32) {
    if x.is_nan() {
        let nv = if x.is_signaling() { flags::NV } else { 0 };
        return (F::CANONICAL_NAN, nv);
    }
    if x.is_zero() || (x.is_infinite() && !x.is_negative()) {
        return (x.to_reg(), 0);
    }
    if x.is_negative() {
        return (F::CANONICAL_NAN, flags::NV);
    }
    // x = m * 2^e with m an integer.
    let p = F::PRECISION as u32;
    let bits = x.to_bits();
    let biased = (bits >> (p - 1)) as i32; // sign is 0
    let frac = bits & ((1u128 << (p - 1)) - 1);
    let (mut m, mut e) = if biased == 0 {
        (frac, F::MIN_EXP - (p as i32 - 1))
    } else {
        (
            frac | 1u128 << (p - 1),
            biased - F::MAX_EXP - (p as i32 - 1),
        )
    };
    if e % 2 != 0 {
        m <<= 1;
        e -= 1;
    }
    // Scale m by an even power of two so that its root has at least p + 2 bits: the root's
    // bits below the rounding position plus a sticky bit for a nonzero remainder then round
    // exactly as the real root does.
    let want = 2 * p + 4;
    let have = 128 - m.leading_zeros();
    let shift = (want.saturating_sub(have) + 1) & !1;
    let big = m << shift;
    let root = big.isqrt();
    let sticky = (root * root != big) as u128;
    let n = root << 1 | sticky; // 2 * sqrt(big), with the sticky bit as its lowest bit
    let r = F::from_u128_r(n, round);
    // sqrt(x) = n / 2 * 2^((e - shift) / 2); the scaling is exact (a root is never
    // subnormal nor overflows).
    let value = r.value.scalbn((e - shift as i32) / 2 - 1);
    (value.to_reg(), fflags(r.status))
}

/// `fcvt` to a `bits`-wide integer (`signed` or not): rounded in `round`, saturating
/// (NaN to the largest value) with NV when out of range, NX when inexact. The result is
/// sign-extended to 64 bits (also for `fcvt.wu`).
fn to_int<F: Format>(x: F, bits: u32, signed: bool, round: Round) -> (u64, u32) {
    let (lo, hi): (i128, i128) = if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    let sext = |v: i128| {
        let v = v as u64;
        if bits == 32 {
            v as i32 as u64
        } else {
            v
        }
    };
    if x.is_nan() {
        return (sext(hi), flags::NV);
    }
    let r = x.round_to_integral(round).value;
    // Bounds are powers of two (exact in both formats): lo <= r < hi + 1.
    let below = F::from_i128(lo).value;
    let above = F::from_i128(hi + 1).value;
    if r < below {
        return (sext(lo), flags::NV);
    }
    if r >= above {
        return (sext(hi), flags::NV);
    }
    let v = r.to_i128(128).value;
    let nx = if r.bitwise_eq(x) { 0 } else { flags::NX };
    (sext(v), nx)
}

/// `fcvt` from an integer (already widened to `i128`), rounded in `round`.
fn from_int<F: Format>(v: i128, round: Round) -> (u64, u32) {
    let r = F::from_i128_r(v, round);
    (r.value.to_reg(), fflags(r.status))
}

/// `fcvt.s.d` or `fcvt.d.s`: from the other format to `F`.
fn convert<F: Format>(x: F::Other, round: Round) -> (u64, u32)
where
    F::Other: FloatConvert<F> + FloatConvert<F::Unbounded>,
{
    if x.is_nan() {
        let nv = if x.is_signaling() { flags::NV } else { 0 };
        return (F::CANONICAL_NAN, nv);
    }
    let r: StatusAnd<F> = x.convert_r(round, &mut false);
    let r = unbounded_flags(r, || {
        FloatConvert::<F::Unbounded>::convert_r(x, round, &mut false).value
    });
    (r.value.to_reg(), fflags(r.status))
}

/// `fmin`/`fmax`: IEEE 754-2019 minimumNumber/maximumNumber with -0 < +0; a NaN operand
/// yields the other operand (both NaN: the canonical NaN); a signalling NaN raises NV.
fn min_max<F: Format>(a: F, b: F, max: bool) -> (u64, u32) {
    let nv = if any_signaling(&[a, b]) { flags::NV } else { 0 };
    let value = match (a.is_nan(), b.is_nan()) {
        (true, true) => return (F::CANONICAL_NAN, nv),
        (true, false) => b,
        (false, true) => a,
        // Equal values can only differ in the sign of zero.
        _ if a == b => {
            if a.is_negative() != max {
                a
            } else {
                b
            }
        }
        _ if (a < b) != max => a,
        _ => b,
    };
    (value.to_reg(), nv)
}

/// `fclass`: the one-hot class mask.
fn class<F: Format>(x: F) -> u64 {
    let neg = x.is_negative();
    let bit = if x.is_nan() {
        if x.is_signaling() {
            8
        } else {
            9
        }
    } else if x.is_infinite() {
        if neg {
            0
        } else {
            7
        }
    } else if x.is_zero() {
        if neg {
            3
        } else {
            4
        }
    } else if x.is_denormal() {
        if neg {
            2
        } else {
            5
        }
    } else if neg {
        1
    } else {
        6
    };
    1 << bit
}

impl Cpu {
    /// The rounding mode of `i` (its `rm`, or `frm` when dynamic), or the illegal
    /// instruction an invalid dynamic mode makes it.
    fn rounding(&self, i: Insn) -> Result<Round, Stop> {
        let rm = if i.rm == RM_DYN {
            (self.fp.fcsr >> 5) & 7
        } else {
            i.rm as u32
        };
        round_mode(rm).ok_or(Stop::Illegal { raw: i.imm as u32 })
    }

    /// Executes the F/D operation `op` on format `F` (single or double).
    #[inline(never)]
    pub(super) fn execute_fp<F: Format>(
        &mut self,
        mem: &mut PhysMem,
        op: FpOp,
        i: Insn,
    ) -> Result<(), Stop>
    where
        F::Other: FloatConvert<F> + FloatConvert<F::Unbounded>,
    {
        let rd = (i.rd & 31) as usize;
        let rs1 = (i.rs1 & 31) as usize;
        let f = &self.fp.f;
        let a = F::from_reg(f[rs1]);
        let b = F::from_reg(f[(i.rs2 & 31) as usize]);
        let x1 = self.x[rs1];
        // Each arm gives (the new f[rd] or x[rd], whether it is an x register, flags).
        let (value, to_x, flags) = match op {
            FpOp::Load => {
                let addr = x1.wrapping_add(i.imm as i64 as u64);
                let raw = self.load(mem, addr, F::BYTES)?;
                let v = if F::BYTES == 4 {
                    box_single(raw as u32)
                } else {
                    raw
                };
                (v, false, 0)
            }
            FpOp::Store => {
                let addr = x1.wrapping_add(i.imm as i64 as u64);
                let v = self.fp.f[(i.rs2 & 31) as usize];
                self.store(mem, addr, F::BYTES, v)?;
                self.pc = self.pc.wrapping_add(i.len as u64);
                return Ok(());
            }
            FpOp::Add | FpOp::Sub | FpOp::Mul | FpOp::Div => {
                let arith_op = match op {
                    FpOp::Add => Arith::Add,
                    FpOp::Sub => Arith::Sub,
                    FpOp::Mul => Arith::Mul,
                    _ => Arith::Div,
                };
                let (v, fl) = rounded(arith_op, a, b, F::ZERO, self.rounding(i)?);
                (v, false, fl)
            }
            // The negated forms negate inputs: exact, and the same exact value rounds the
            // same way (fnmsub = -(a*b) + c, fnmadd = -(a*b) - c).
            FpOp::Madd | FpOp::Msub | FpOp::Nmsub | FpOp::Nmadd => {
                let round = self.rounding(i)?;
                let c = F::from_reg(f[(i.rs3 & 31) as usize]);
                let (a, c) = match op {
                    FpOp::Madd => (a, c),
                    FpOp::Msub => (a, -c),
                    FpOp::Nmsub => (-a, c),
                    _ => (-a, -c),
                };
                let (v, fl) = rounded(Arith::MulAdd, a, b, c, round);
                (v, false, fl)
            }
            FpOp::Sqrt => {
                let (v, fl) = sqrt(a, self.rounding(i)?);
                (v, false, fl)
            }
            FpOp::Sgnj | FpOp::Sgnjn | FpOp::Sgnjx => {
                let sign = match op {
                    FpOp::Sgnj => b.is_negative(),
                    FpOp::Sgnjn => !b.is_negative(),
                    _ => a.is_negative() != b.is_negative(),
                };
                let v = if sign == a.is_negative() { a } else { -a };
                (v.to_reg(), false, 0)
            }
            FpOp::Min | FpOp::Max => {
                let (v, fl) = min_max(a, b, op == FpOp::Max);
                (v, false, fl)
            }
            FpOp::CvtFromOther => {
                let round = self.rounding(i)?;
                let x = <F::Other as Format>::from_reg(f[rs1]);
                let (v, fl) = convert::<F>(x, round);
                (v, false, fl)
            }
            FpOp::CvtW | FpOp::CvtWu | FpOp::CvtL | FpOp::CvtLu => {
                let round = self.rounding(i)?;
                let (bits, signed) = match op {
                    FpOp::CvtW => (32, true),
                    FpOp::CvtWu => (32, false),
                    FpOp::CvtL => (64, true),
                    _ => (64, false),
                };
                let (v, fl) = to_int(a, bits, signed, round);
                (v, true, fl)
            }
            FpOp::CvtFromW | FpOp::CvtFromWu | FpOp::CvtFromL | FpOp::CvtFromLu => {
                let round = self.rounding(i)?;
                let v = match op {
                    FpOp::CvtFromW => x1 as i32 as i128,
                    FpOp::CvtFromWu => x1 as u32 as i128,
                    FpOp::CvtFromL => x1 as i64 as i128,
                    _ => x1 as i128,
                };
                let (v, fl) = from_int::<F>(v, round);
                (v, false, fl)
            }
            FpOp::MvToX => {
                let raw = f[rs1];
                let v = if F::BYTES == 4 {
                    raw as i32 as u64
                } else {
                    raw
                };
                (v, true, 0)
            }
            FpOp::MvFromX => {
                let v = if F::BYTES == 4 {
                    box_single(x1 as u32)
                } else {
                    x1
                };
                (v, false, 0)
            }
            FpOp::Eq => {
                let nv = any_signaling(&[a, b]);
                ((a == b) as u64, true, if nv { flags::NV } else { 0 })
            }
            FpOp::Lt | FpOp::Le => {
                let nv = a.is_nan() || b.is_nan();
                let v = if op == FpOp::Lt { a < b } else { a <= b };
                (v as u64, true, if nv { flags::NV } else { 0 })
            }
            FpOp::Class => (class(a), true, 0),
        };
        if to_x {
            self.x[rd] = value;
        } else {
            self.fp.f[rd] = value;
        }
        self.fp.fcsr |= flags;
        self.pc = self.pc.wrapping_add(i.len as u64);
        Ok(())
    }

    /// `csrrw/csrrs/csrrc` (`f3` 1..=3) and their immediate forms (5..=7) on `fflags`,
    /// `frm` or `fcsr`; `src` is `x[rs1]` or the 5-bit immediate.
    pub(super) fn execute_fp_csr(&mut self, i: Insn) {
        let f3 = i.rm;
        let src = if f3 >= 5 {
            i.rs1 as u32
        } else {
            self.x[(i.rs1 & 31) as usize] as u32
        };
        let (shift, mask) = match i.imm {
            csr::FFLAGS => (0, 0x1f),
            csr::FRM => (5, 0x7),
            _ => (0, 0xff),
        };
        let old = (self.fp.fcsr >> shift) & mask;
        let new = match f3 & 3 {
            1 => src,
            2 => old | src,
            _ => old & !src,
        } & mask;
        self.fp.fcsr = (self.fp.fcsr & !(mask << shift)) | new << shift;
        self.x[(i.rd & 31) as usize] = old as u64;
        self.pc = self.pc.wrapping_add(4);
    }
}

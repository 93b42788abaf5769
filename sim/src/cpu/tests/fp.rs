//! F/D edge cases: rounding modes, flags, NaN-boxing, conversions, min/max, classes, CSRs,
//! and a cross-check of round-to-nearest results against the host's IEEE arithmetic.

use super::*;
use crate::cpu::fp::{box_single, flags::*};

const S: u32 = 0;
const D: u32 = 1;
const RNE: u32 = 0;
const RTZ: u32 = 1;
const RDN: u32 = 2;
const RUP: u32 = 3;
const RMM: u32 = 4;
const DYN: u32 = 7;

/// An OP-FP instruction: funct5, format, rs2, rs1, rm/funct3, rd.
fn fop(f5: u32, fmt: u32, rs2: u32, rs1: u32, rm: u32, rd: u32) -> u32 {
    r(f5 << 2 | fmt, rs2, rs1, rm, rd, 0x53)
}
fn fadd(fmt: u32, rm: u32) -> u32 {
    fop(0x00, fmt, 2, 1, rm, 3)
}
fn fmul(fmt: u32, rm: u32) -> u32 {
    fop(0x02, fmt, 2, 1, rm, 3)
}
/// A fused multiply-add (`opcode` 0x43/47/4b/4f): f3 = f1 * f2 +- f4.
fn fused(opcode: u32, fmt: u32, rm: u32) -> u32 {
    4 << 27 | fmt << 25 | 2 << 20 | 1 << 15 | rm << 12 | 3 << 7 | opcode
}

/// Runs one instruction (then an `ebreak`) with f1, f2, f4 = `f`, a0 = `x`, `fcsr`.
fn exec(raw: u32, f: [u64; 3], x: u64, fcsr: u32) -> Cpu {
    let mut m = Machine::new(Asm::default().w(raw).w(EBREAK));
    m.cpu.fp.f[1] = f[0];
    m.cpu.fp.f[2] = f[1];
    m.cpu.fp.f[4] = f[2];
    m.cpu.x[A0 as usize] = x;
    m.cpu.fp.fcsr = fcsr;
    assert_eq!(m.run(), Stop::Breakpoint, "{raw:#010x}");
    m.cpu
}

fn s(v: f32) -> u64 {
    box_single(v.to_bits())
}
fn d(v: f64) -> u64 {
    v.to_bits()
}
/// Result f3 and the accrued flags.
fn f3(cpu: &Cpu) -> (u64, u32) {
    (cpu.fp.f[3], cpu.fp.fcsr & 0x1f)
}

const TWO_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_64: f64 = 18_446_744_073_709_551_616.0;
const S_QNAN: u64 = 0xffff_ffff_7fc0_0000;
const D_QNAN: u64 = 0x7ff8_0000_0000_0000;
const D_SNAN: u64 = 0x7ff0_0000_0000_0001;
const S_SNAN: u64 = 0xffff_ffff_7f80_0001;

#[test]
fn every_rounding_mode_rounds_a_tie_its_own_way() {
    let half_ulp = 2f32.powi(-24);
    let up = 1.0 + 2f32.powi(-23);
    for (rm, pos, neg) in [
        (RNE, 1.0, -1.0),
        (RTZ, 1.0, -1.0),
        (RDN, 1.0, -up),
        (RUP, up, -1.0),
        (RMM, up, -up),
    ] {
        let c = exec(fadd(S, rm), [s(1.0), s(half_ulp), 0], 0, 0);
        assert_eq!(f3(&c), (s(pos), NX), "rm {rm} positive");
        let c = exec(fadd(S, rm), [s(-1.0), s(-half_ulp), 0], 0, 0);
        assert_eq!(f3(&c), (s(neg), NX), "rm {rm} negative");
        // The same through frm.
        let c = exec(fadd(S, DYN), [s(1.0), s(half_ulp), 0], 0, rm << 5);
        assert_eq!(f3(&c), (s(pos), NX), "frm {rm}");
    }
    // Exact results raise nothing; flags accrue (OR into fflags).
    let c = exec(fadd(D, RNE), [d(1.5), d(2.25), 0], 0, DZ);
    assert_eq!(f3(&c), (d(3.75), DZ));
}

#[test]
fn invalid_rounding_modes_are_illegal_instructions() {
    for rm in [5, 6] {
        let raw = fadd(D, rm);
        let mut m = Machine::new(Asm::default().w(raw));
        assert_eq!(m.run(), Stop::Illegal { raw });
    }
    for frm in [5, 6, 7] {
        // Dynamic rounding with an invalid frm, also for a conversion that cannot round.
        for raw in [fadd(S, DYN), fop(0x08, D, 0, 1, DYN, 3)] {
            let mut m = Machine::new(Asm::default().w(raw));
            m.cpu.fp.fcsr = frm << 5;
            assert_eq!(m.run(), Stop::Illegal { raw }, "frm {frm}");
            assert_eq!(
                (m.cpu.pc, m.cpu.fp.f[3], m.cpu.fp.fcsr),
                (CODE, 0, frm << 5)
            );
        }
    }
    // fsgnj/fmin/fle/fclass use funct3 as an opcode: frm does not matter.
    let c = exec(fop(0x04, D, 2, 1, 0, 3), [d(1.0), d(-2.0), 0], 0, 7 << 5);
    assert_eq!(c.fp.f[3], d(-1.0));
}

#[test]
fn exceptions_set_their_flags() {
    let max = f64::MAX;
    let c = exec(fop(0x03, D, 2, 1, RNE, 3), [d(1.0), d(0.0), 0], 0, 0);
    assert_eq!(f3(&c), (d(f64::INFINITY), DZ));
    let c = exec(fop(0x03, D, 2, 1, RNE, 3), [d(0.0), d(0.0), 0], 0, 0);
    assert_eq!(f3(&c), (D_QNAN, NV));
    let c = exec(
        fop(0x01, D, 2, 1, RNE, 3),
        [d(f64::INFINITY), d(f64::INFINITY), 0],
        0,
        0,
    );
    assert_eq!(f3(&c), (D_QNAN, NV));
    let c = exec(fmul(D, RNE), [d(max), d(2.0), 0], 0, 0);
    assert_eq!(f3(&c), (d(f64::INFINITY), OF | NX));
    let c = exec(fmul(D, RTZ), [d(max), d(2.0), 0], 0, 0);
    assert_eq!(f3(&c), (d(max), OF | NX));
    let c = exec(fmul(D, RDN), [d(-max), d(2.0), 0], 0, 0);
    assert_eq!(f3(&c), (d(f64::NEG_INFINITY), OF | NX));
    // An exact subnormal result is no underflow; an inexact one is.
    let tiny = f64::MIN_POSITIVE;
    let c = exec(fmul(D, RNE), [d(tiny), d(0.5), 0], 0, 0);
    assert_eq!(f3(&c), (d(tiny / 2.0), 0));
    let c = exec(fmul(D, RNE), [d(5e-324), d(0.5), 0], 0, 0);
    assert_eq!(f3(&c), (d(0.0), UF | NX));
}

#[test]
fn tininess_is_detected_after_rounding() {
    // (1 - 2^-53) * 2^-1022 rounds (ties to even) up to the smallest normal, but with an
    // unbounded exponent it would stay below it: underflow is signalled.
    let below_one = f64::from_bits(0x3fef_ffff_ffff_ffff);
    let min = f64::MIN_POSITIVE;
    let c = exec(fmul(D, RNE), [d(below_one), d(min), 0], 0, 0);
    assert_eq!(f3(&c), (d(min), UF | NX));
    // Rounding up reaches the smallest normal too; unbounded, the product is exact and tiny.
    let c = exec(fmul(D, RUP), [d(below_one), d(min), 0], 0, 0);
    assert_eq!(f3(&c), (d(min), UF | NX));
    let c = exec(fmul(D, RTZ), [d(below_one), d(min), 0], 0, 0);
    assert_eq!(f3(&c), (0x000f_ffff_ffff_ffff, UF | NX));
    let s_min = f32::MIN_POSITIVE;
    let c = exec(fmul(S, RNE), [s(1.0 - 2f32.powi(-24)), s(s_min), 0], 0, 0);
    assert_eq!(f3(&c), (s(s_min), UF | NX));
    // fcvt.s.d: 2^-126 * (1 - 3 * 2^-26) is tiny after rounding, 2^-126 * (1 - 2^-26) not.
    let cvt = fop(0x08, S, 1, 1, RNE, 3);
    let tiny = 2f64.powi(-126) * (1.0 - 3.0 * 2f64.powi(-26));
    let c = exec(cvt, [d(tiny), 0, 0], 0, 0);
    assert_eq!(f3(&c), (s(s_min), UF | NX));
    let not_tiny = 2f64.powi(-126) * (1.0 - 2f64.powi(-26));
    let c = exec(cvt, [d(not_tiny), 0, 0], 0, 0);
    assert_eq!(f3(&c), (s(s_min), NX));
}

#[test]
fn singles_are_nan_boxed() {
    let one = 1f32.to_bits() as u64;
    // A single operand without the all-ones upper half reads as the canonical NaN.
    let c = exec(fadd(S, RNE), [one, s(1.0), 0], 0, 0);
    assert_eq!(f3(&c), (S_QNAN, 0));
    let c = exec(fop(0x1c, S, 0, 1, 1, A1), [one, 0, 0], 0, 0); // fclass.s
    assert_eq!(c.x[A1 as usize], 1 << 9);
    let c = exec(fop(0x04, S, 2, 1, 0, 3), [one, s(-1.0), 0], 0, 0); // fsgnj.s
    assert_eq!(c.fp.f[3], 0xffff_ffff_ffc0_0000);
    // fmv.x.w and fsw move the raw low bits; fmv.w.x and flw box.
    let c = exec(
        fop(0x1c, S, 0, 1, 0, A1),
        [0x1234_5678_8000_0000, 0, 0],
        0,
        0,
    );
    assert_eq!(c.x[A1 as usize], 0xffff_ffff_8000_0000);
    let c = exec(
        fop(0x1e, S, 0, A0, 0, 3),
        [0, 0, 0],
        0xdead_beef_3f80_0000,
        0,
    );
    assert_eq!(c.fp.f[3], s(1.0));
    // fcvt.d.s of an unboxed operand: the canonical NaN, quiet.
    let c = exec(fop(0x08, D, 0, 1, RNE, 3), [one, 0, 0], 0, 0);
    assert_eq!(f3(&c), (D_QNAN, 0));
    // Results are canonical NaNs, whatever the inputs' payloads; sNaN inputs raise NV.
    let c = exec(fadd(S, RNE), [S_SNAN, s(1.0), 0], 0, 0);
    assert_eq!(f3(&c), (S_QNAN, NV));
    let c = exec(fadd(D, RNE), [0x7ff8_0000_dead_beef, d(1.0), 0], 0, 0);
    assert_eq!(f3(&c), (D_QNAN, 0));
}

#[test]
fn loads_and_stores_move_raw_bits_also_compressed() {
    let flw = i(8, 8, 2, 5, 0x07); // flw f5, 8(s0)
    let fld = i(16, 8, 3, 6, 0x07); // fld f6, 16(s0)
    let fsw = r(0, 5, 8, 2, 24, 0x27); // fsw f5, 24(s0)
    let fsd = r(0, 6, 8, 3, 0, 0x27) | 1 << 25; // fsd f6, 32(s0)
    let c_fld = 0x2000 | 1 << 10 | 1 << 2; // c.fld f9, 8(s0)
    let c_fsd = 0xa000 | 5 << 10 | 1 << 2; // c.fsd f9, 40(s0)
    let c_fldsp = 0x2002 | 7 << 7 | 1 << 5; // c.fldsp f7, 8(sp)
    let c_fsdsp = 0xa002 | 2 << 10 | 7 << 2; // c.fsdsp f7, 16(sp)
    let mut m = Machine::new(
        Asm::default()
            .w(flw)
            .w(fld)
            .w(fsw)
            .w(fsd)
            .h(c_fld)
            .h(c_fsd)
            .h(c_fldsp)
            .h(c_fsdsp)
            .w(EBREAK),
    );
    m.cpu.x[8] = DATA;
    m.cpu.x[2] = DATA + 0x100;
    m.poke(DATA + 8, &0x1122_3344_7fa0_0001u64.to_le_bytes()); // a single sNaN bit pattern
    m.poke(DATA + 16, &0x7ff0_0000_0000_0001u64.to_le_bytes());
    m.poke(DATA + 0x108, &0x4009_21fb_5444_2d18u64.to_le_bytes());
    assert_eq!(m.run(), Stop::Breakpoint);
    assert_eq!(m.cpu.fp.f[5], 0xffff_ffff_7fa0_0001);
    assert_eq!(m.cpu.fp.f[6], 0x7ff0_0000_0000_0001);
    assert_eq!(m.peek_u64(DATA + 24) as u32, 0x7fa0_0001);
    assert_eq!(m.peek_u64(DATA + 32), 0x7ff0_0000_0000_0001);
    assert_eq!(m.cpu.fp.f[9], 0x1122_3344_7fa0_0001);
    assert_eq!(m.peek_u64(DATA + 40), 0x1122_3344_7fa0_0001);
    assert_eq!(m.cpu.fp.f[7], 0x4009_21fb_5444_2d18);
    assert_eq!(m.peek_u64(DATA + 0x110), 0x4009_21fb_5444_2d18);
    assert_eq!(m.cpu.fp.fcsr, 0, "moves raise no flags");
    // A faulting FP load changes nothing and reports its own pc.
    let mut m = Machine::new(Asm::default().h(c_fld));
    m.cpu.x[8] = 0x5000_0000;
    assert_eq!(
        m.run(),
        Stop::PageFault {
            access: Access::Load,
            addr: 0x5000_0008
        }
    );
    assert_eq!((m.cpu.pc, m.cpu.fp.f[9]), (CODE, 0));
}

#[test]
fn conversions_to_integers_round_and_saturate() {
    // (funct5 0x18) rs2: 0 w, 1 wu, 2 l, 3 lu; the result goes to a1.
    let cvt = |fmt, to, rm| fop(0x18, fmt, to, 1, rm, A1);
    let cases: &[(u32, u32, u32, u64, u64, u32)] = &[
        (D, 0, RNE, d(2.5), 2, NX),
        (D, 0, RMM, d(2.5), 3, NX),
        (D, 0, RUP, d(2.1), 3, NX),
        (D, 0, RDN, d(-2.1), -3i64 as u64, NX),
        (D, 0, RMM, d(-2.5), -3i64 as u64, NX),
        (D, 0, RTZ, d(-2.9), -2i64 as u64, NX),
        (S, 0, RNE, S_QNAN, 0x7fff_ffff, NV),
        (S, 0, RNE, s(f32::INFINITY), 0x7fff_ffff, NV),
        (S, 0, RNE, s(f32::NEG_INFINITY), 0xffff_ffff_8000_0000, NV),
        (S, 0, RNE, s(3e9), 0x7fff_ffff, NV),
        (D, 0, RNE, d(-2147483648.0), 0xffff_ffff_8000_0000, 0),
        (D, 0, RNE, d(-2147483648.5), 0xffff_ffff_8000_0000, NX),
        (D, 0, RDN, d(-2147483648.5), 0xffff_ffff_8000_0000, NV),
        (S, 1, RNE, s(-1.0), 0, NV),
        (S, 1, RTZ, s(-0.5), 0, NX),
        (S, 1, RNE, s(4e9), 4_000_000_000u32 as i32 as u64, 0),
        (S, 1, RNE, S_QNAN, u64::MAX, NV),
        (D, 2, RNE, d(TWO_63), i64::MAX as u64, NV),
        (D, 2, RNE, d(-TWO_63), i64::MIN as u64, 0),
        (D, 2, RNE, d(f64::NAN), i64::MAX as u64, NV),
        (D, 3, RNE, d(TWO_64), u64::MAX, NV),
        (D, 3, RNE, d(TWO_64 - 2048.0), 18446744073709549568, 0),
        (D, 3, RNE, d(-0.0), 0, 0),
        (D, 3, RUP, d(-0.25), 0, NX),
        (D, 3, RDN, d(-0.25), 0, NV),
    ];
    for &(fmt, to, rm, input, want, fl) in cases {
        let c = exec(cvt(fmt, to, rm), [input, 0, 0], 0, 0);
        assert_eq!(
            (c.x[A1 as usize], c.fp.fcsr),
            (want, fl),
            "fmt {fmt} to {to} rm {rm} input {input:#x}"
        );
    }
}

#[test]
fn conversions_from_integers_and_between_formats() {
    // (funct5 0x1a) rs2: 0 w, 1 wu, 2 l, 3 lu from a0.
    let cvt = |fmt, from, rm| fop(0x1a, fmt, from, A0, rm, 3);
    let cases: &[(u32, u32, u32, u64, u64, u32)] = &[
        (D, 0, RNE, 0xffff_ffff_8000_0000, d(-2147483648.0), 0),
        (D, 0, RNE, 0x1234_5678_ffff_ffff, d(-1.0), 0), // only the low word counts
        (D, 1, RNE, 0x1234_5678_ffff_ffff, d(4294967295.0), 0),
        (S, 1, RNE, 0xffff_ffff, s(4294967296.0), NX),
        (S, 1, RTZ, 0xffff_ffff, s(4294967040.0), NX),
        (D, 2, RNE, i64::MAX as u64, d(TWO_63), NX),
        (D, 2, RDN, -3i64 as u64, d(-3.0), 0),
        (S, 2, RUP, (1 << 24) + 1, s(16777218.0), NX),
        (S, 2, RDN, (1 << 24) + 1, s(16777216.0), NX),
        (D, 3, RNE, u64::MAX, d(TWO_64), NX),
    ];
    for &(fmt, from, rm, input, want, fl) in cases {
        let c = exec(cvt(fmt, from, rm), [0, 0, 0], input, 0);
        assert_eq!(
            f3(&c),
            (want, fl),
            "fmt {fmt} from {from} rm {rm} {input:#x}"
        );
    }
    let to_s = |rm| fop(0x08, S, 1, 1, rm, 3);
    let c = exec(to_s(RNE), [d(1e300), 0, 0], 0, 0);
    assert_eq!(f3(&c), (s(f32::INFINITY), OF | NX));
    let c = exec(to_s(RTZ), [d(1e300), 0, 0], 0, 0);
    assert_eq!(f3(&c), (s(f32::MAX), OF | NX));
    let c = exec(to_s(RUP), [d(0.1), 0, 0], 0, 0);
    assert_eq!(f3(&c), (s(0.1f32), NX)); // 0.1f32 is above 0.1
    let c = exec(to_s(RDN), [d(0.1), 0, 0], 0, 0);
    assert_eq!(f3(&c), (box_single(0.1f32.to_bits() - 1), NX));
    let c = exec(to_s(RNE), [D_SNAN, 0, 0], 0, 0);
    assert_eq!(f3(&c), (S_QNAN, NV));
    let to_d = fop(0x08, D, 0, 1, RNE, 3);
    let c = exec(to_d, [s(0.1), 0, 0], 0, 0);
    assert_eq!(f3(&c), (d(0.1f32 as f64), 0));
    let c = exec(to_d, [S_SNAN, 0, 0], 0, 0);
    assert_eq!(f3(&c), (D_QNAN, NV));
}

#[test]
fn min_max_order_zeros_and_skip_nans() {
    let min = fop(0x05, D, 2, 1, 0, 3);
    let max = fop(0x05, D, 2, 1, 1, 3);
    let cases: &[(u32, u64, u64, u64, u32)] = &[
        (min, d(-0.0), d(0.0), d(-0.0), 0),
        (min, d(0.0), d(-0.0), d(-0.0), 0),
        (max, d(-0.0), d(0.0), d(0.0), 0),
        (max, d(0.0), d(-0.0), d(0.0), 0),
        (min, D_QNAN, d(1.0), d(1.0), 0),
        (max, d(1.0), 0x7ff8_0000_0000_0042, d(1.0), 0),
        (min, D_SNAN, d(1.0), d(1.0), NV),
        (max, D_QNAN, D_SNAN, D_QNAN, NV),
        (min, 0xfff8_0000_0000_0001, D_QNAN, D_QNAN, 0),
        (min, d(-1.0), d(2.0), d(-1.0), 0),
        (max, d(-1.0), d(2.0), d(2.0), 0),
        (max, d(f64::NEG_INFINITY), d(-1e308), d(-1e308), 0),
    ];
    for &(raw, a, b, want, fl) in cases {
        let c = exec(raw, [a, b, 0], 0, 0);
        assert_eq!(f3(&c), (want, fl), "{raw:#x} {a:#x} {b:#x}");
    }
    let c = exec(fop(0x05, S, 2, 1, 0, 3), [S_SNAN, S_QNAN, 0], 0, 0);
    assert_eq!(f3(&c), (S_QNAN, NV));
}

#[test]
fn comparisons_signal_as_specified() {
    let feq = fop(0x14, D, 2, 1, 2, A1);
    let flt = fop(0x14, D, 2, 1, 1, A1);
    let fle = fop(0x14, D, 2, 1, 0, A1);
    let cases: &[(u32, u64, u64, u64, u32)] = &[
        (feq, d(0.0), d(-0.0), 1, 0),
        (fle, d(0.0), d(-0.0), 1, 0),
        (flt, d(-0.0), d(0.0), 0, 0),
        (flt, d(-1.0), d(0.0), 1, 0),
        (feq, D_QNAN, d(1.0), 0, 0),
        (feq, D_SNAN, d(1.0), 0, NV),
        (flt, D_QNAN, d(1.0), 0, NV),
        (fle, d(1.0), D_QNAN, 0, NV),
        (feq, D_QNAN, D_QNAN, 0, 0),
    ];
    for &(raw, a, b, want, fl) in cases {
        let c = exec(raw, [a, b, 0], 0, 0);
        assert_eq!(
            (c.x[A1 as usize], c.fp.fcsr),
            (want, fl),
            "{raw:#x} {a:#x} {b:#x}"
        );
    }
}

#[test]
fn fclass_names_all_ten_classes() {
    let class = fop(0x1c, D, 0, 1, 1, A1);
    let inputs = [
        d(f64::NEG_INFINITY),
        d(-1.0),
        d(-5e-324),
        d(-0.0),
        d(0.0),
        d(5e-324),
        d(1.0),
        d(f64::INFINITY),
        D_SNAN,
        D_QNAN,
    ];
    for (bit, input) in inputs.into_iter().enumerate() {
        let c = exec(class, [input, 0, 0], 0, 0);
        assert_eq!(c.x[A1 as usize], 1 << bit, "{input:#x}");
    }
    let c = exec(fop(0x1c, S, 0, 1, 1, A1), [S_SNAN, 0, 0], 0, 0);
    assert_eq!(c.x[A1 as usize], 1 << 8);
    let c = exec(fop(0x1c, S, 0, 1, 1, A1), [s(-1e-40), 0, 0], 0, 0);
    assert_eq!(c.x[A1 as usize], 1 << 2);
}

#[test]
fn sign_injection_and_fused_forms() {
    let sgnj = |f3| fop(0x04, D, 2, 1, f3, 3);
    let c = exec(sgnj(0), [d(3.0), d(-0.0), 0], 0, 0);
    assert_eq!(c.fp.f[3], d(-3.0));
    let c = exec(sgnj(1), [d(3.0), d(-1.0), 0], 0, 0);
    assert_eq!(c.fp.f[3], d(3.0));
    let c = exec(sgnj(2), [d(-3.0), d(-1.0), 0], 0, 0);
    assert_eq!(c.fp.f[3], d(3.0));
    // fsgnj keeps a NaN's payload (it is not arithmetic).
    let c = exec(sgnj(1), [0x7ff8_0000_0000_0042, d(1.0), 0], 0, 0);
    assert_eq!(c.fp.f[3], 0xfff8_0000_0000_0042);
    // f3 = f1 * f2 (+-) f4 with 2 * 3 and 4.
    for (opcode, want) in [(0x43, 10.0), (0x47, 2.0), (0x4b, -2.0), (0x4f, -10.0)] {
        let c = exec(fused(opcode, D, RNE), [d(2.0), d(3.0), d(4.0)], 0, 0);
        assert_eq!(f3(&c), (d(want), 0), "opcode {opcode:#x}");
        let c = exec(fused(opcode, S, RNE), [s(2.0), s(3.0), s(4.0)], 0, 0);
        assert_eq!(f3(&c), (s(want as f32), 0), "opcode {opcode:#x}");
    }
    // One rounding: 0.1 * 10 - 1 is not 0.
    let c = exec(fused(0x47, D, RNE), [d(0.1), d(10.0), d(1.0)], 0, 0);
    assert_eq!(f3(&c), (d(2f64.powi(-54)), 0));
    let c = exec(fused(0x43, D, RNE), [d(0.1), d(0.1), d(0.0)], 0, 0);
    assert_eq!(f3(&c), (d(0.1f64.mul_add(0.1, 0.0)), NX));
    // inf * 0 + qNaN is invalid.
    let c = exec(
        fused(0x43, D, RNE),
        [d(f64::INFINITY), d(0.0), D_QNAN],
        0,
        0,
    );
    assert_eq!(f3(&c), (D_QNAN, NV));
    let c = exec(fused(0x43, D, RNE), [d(1.0), d(0.0), D_QNAN], 0, 0);
    assert_eq!(f3(&c), (D_QNAN, 0));
    // An exact zero sum is +0, but -0 rounding down.
    let c = exec(fused(0x47, D, RNE), [d(1.0), d(2.0), d(2.0)], 0, 0);
    assert_eq!(f3(&c), (d(0.0), 0));
    let c = exec(fused(0x47, D, RDN), [d(1.0), d(2.0), d(2.0)], 0, 0);
    assert_eq!(f3(&c), (d(-0.0), 0));
}

#[test]
fn square_roots_are_correctly_rounded() {
    let sqrt = |fmt, rm| fop(0x0b, fmt, 0, 1, rm, 3);
    let c = exec(sqrt(D, RNE), [d(2.0), 0, 0], 0, 0);
    assert_eq!(f3(&c), (0x3ff6_a09e_667f_3bcd, NX));
    let c = exec(sqrt(D, RTZ), [d(2.0), 0, 0], 0, 0);
    assert_eq!(f3(&c), (0x3ff6_a09e_667f_3bcc, NX));
    let c = exec(sqrt(D, RUP), [d(2.0), 0, 0], 0, 0);
    assert_eq!(f3(&c), (0x3ff6_a09e_667f_3bcd, NX));
    let c = exec(sqrt(D, RNE), [d(6.25), 0, 0], 0, 0);
    assert_eq!(f3(&c), (d(2.5), 0));
    let c = exec(sqrt(D, RNE), [d(5e-324), 0, 0], 0, 0);
    assert_eq!(f3(&c), (d(2f64.powi(-537)), 0));
    let c = exec(sqrt(D, RNE), [d(-0.0), 0, 0], 0, 0);
    assert_eq!(f3(&c), (d(-0.0), 0));
    let c = exec(sqrt(D, RNE), [d(-1e-300), 0, 0], 0, 0);
    assert_eq!(f3(&c), (D_QNAN, NV));
    let c = exec(sqrt(D, RNE), [d(f64::INFINITY), 0, 0], 0, 0);
    assert_eq!(f3(&c), (d(f64::INFINITY), 0));
    let c = exec(sqrt(S, RNE), [s(2.0), 0, 0], 0, 0);
    assert_eq!(f3(&c), (s(2f32.sqrt()), NX));
}

#[test]
fn fcsr_frm_and_fflags_are_user_csrs() {
    let csr = |f3, csr, rs1, rd| i(csr, rs1, f3, rd, 0x73);
    // csrrw a1, fcsr, a0: only 8 bits exist.
    let c = exec(csr(1, 3, A0, A1), [0; 3], 0xffff_ffff, 0x21);
    assert_eq!((c.x[A1 as usize], c.fp.fcsr), (0x21, 0xff));
    // csrrs a1, fflags, a0 / csrrc a1, frm, a0.
    let c = exec(csr(2, 1, A0, A1), [0; 3], 0x3, 0x44);
    assert_eq!((c.x[A1 as usize], c.fp.fcsr), (0x4, 0x47));
    let c = exec(csr(3, 2, A0, A1), [0; 3], 0x2, 0xff);
    assert_eq!((c.x[A1 as usize], c.fp.fcsr), (0x7, 0xbf));
    // csrrwi a1, frm, 3 / csrrsi a1, fflags, 0x10 / csrrci a1, fcsr, 0x1f.
    let c = exec(csr(5, 2, 3, A1), [0; 3], 0, 0x1f);
    assert_eq!((c.x[A1 as usize], c.fp.fcsr), (0, 0x7f));
    let c = exec(csr(6, 1, 0x10, A1), [0; 3], 0, 0x01);
    assert_eq!((c.x[A1 as usize], c.fp.fcsr), (1, 0x11));
    let c = exec(csr(7, 3, 0x1f, A1), [0; 3], 0, 0xff);
    assert_eq!((c.x[A1 as usize], c.fp.fcsr), (0xff, 0xe0));
    // frm may hold an invalid mode; only using it traps.
    let c = exec(csr(5, 2, 6, 0), [0; 3], 0, 0);
    assert_eq!(c.fp.fcsr, 6 << 5);
}

/// xorshift64*, for the host cross-check.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// A random double bit pattern biased to interesting exponents (subnormals, near 1, huge).
fn random_f64(state: &mut u64) -> f64 {
    let r = next(state);
    let exp = match r % 4 {
        0 => (r >> 8) % 2047,
        1 => (r >> 8) % 60,
        2 => 1023 - 30 + (r >> 8) % 60,
        _ => 2046 - (r >> 8) % 60,
    };
    let v = f64::from_bits((r & (1 << 63)) | exp << 52 | (next(state) >> 12));
    if v.is_nan() {
        1.0
    } else {
        v
    }
}

/// A random single, the same way.
fn random_f32(state: &mut u64) -> f32 {
    let r = next(state);
    let exp = match r % 4 {
        0 => (r >> 8) % 255,
        1 => (r >> 8) % 30,
        2 => 127 - 15 + (r >> 8) % 30,
        _ => 254 - (r >> 8) % 30,
    } as u32;
    let v = f32::from_bits((r >> 32) as u32 & (1 << 31) | exp << 23 | (next(state) >> 41) as u32);
    if v.is_nan() {
        1.0
    } else {
        v
    }
}

/// Round-to-nearest-even results equal the host's IEEE arithmetic (which `rustc_apfloat`
/// and our square root must agree with), for random operands of both formats.
#[test]
fn round_to_nearest_matches_the_host() {
    let mut state = 0x1234_5678_9abc_def1;
    let code: Vec<u32> = [0x00, 0x01, 0x02, 0x03, 0x0b]
        .iter()
        .flat_map(|&f5| {
            let rs2 = if f5 == 0x0b { 0 } else { 2 }; // fsqrt has rs2 = 0
            [fop(f5, D, rs2, 1, RNE, 3), fop(f5, S, rs2, 1, RNE, 3)]
        })
        .chain([fused(0x43, D, RNE), fused(0x43, S, RNE)])
        .collect();
    let mut asm = Asm::default();
    for raw in &code {
        asm = asm.w(*raw);
    }
    let mut m = Machine::new(asm.w(EBREAK));
    for _ in 0..3000 {
        let [a, b, c] = [(); 3].map(|()| random_f64(&mut state));
        let [sa, sb, sc] = [(); 3].map(|()| random_f32(&mut state));
        let want_d = [a + b, a - b, a * b, a / b, a.sqrt(), a.mul_add(b, c)];
        let want_s = [
            sa + sb,
            sa - sb,
            sa * sb,
            sa / sb,
            sa.sqrt(),
            sa.mul_add(sb, sc),
        ];
        for (k, raw) in code.iter().enumerate() {
            let double = k % 2 == 0;
            m.cpu.pc = CODE + 4 * k as u64;
            m.cpu.fp.f[1] = if double { d(a) } else { s(sa) };
            m.cpu.fp.f[2] = if double { d(b) } else { s(sb) };
            m.cpu.fp.f[4] = if double { d(c) } else { s(sc) };
            assert_eq!(m.cpu.run(&mut m.mem, 1), Stop::BudgetExhausted);
            let want = match (double, want_d[k / 2], want_s[k / 2]) {
                (true, v, _) if v.is_nan() => D_QNAN,
                (true, v, _) => d(v),
                (false, _, v) if v.is_nan() => S_QNAN,
                (false, _, v) => s(v),
            };
            assert_eq!(
                m.cpu.fp.f[3], want,
                "{raw:#010x} on {a:e} {b:e} {c:e} / {sa:e} {sb:e} {sc:e}"
            );
        }
    }
}

/// Random F/D encodings on random register contents never panic: each one either retires
/// or stops with a trap that changed nothing.
#[test]
fn random_fp_encodings_retire_or_trap_cleanly() {
    let mut state = 0x0bad_cafe_f00d_0001;
    let opcodes = [0x07, 0x27, 0x43, 0x47, 0x4b, 0x4f, 0x53, 0x53, 0x53, 0x53];
    let mut m = Machine::new(Asm::default().w(0).w(EBREAK));
    let code_pa = m.pa(CODE);
    for _ in 0..100_000 {
        let opcode = opcodes[(next(&mut state) % opcodes.len() as u64) as usize];
        let raw = (next(&mut state) as u32 & !0x7f) | opcode;
        assert!(m.mem.write(code_pa, &raw.to_le_bytes()));
        for r in 1..32 {
            m.cpu.fp.f[r] = match next(&mut state) % 4 {
                0 => box_single(random_f32(&mut state).to_bits()),
                1 => random_f64(&mut state).to_bits(),
                _ => next(&mut state),
            };
            m.cpu.x[r] = if next(&mut state) % 2 == 0 {
                DATA + next(&mut state) % 4096
            } else {
                next(&mut state)
            };
        }
        m.cpu.fp.fcsr = next(&mut state) as u32 & 0xff;
        let before = (m.cpu.x, m.cpu.fp);
        m.cpu.pc = CODE;
        match m.cpu.run(&mut m.mem, 1) {
            Stop::BudgetExhausted => assert_eq!(m.cpu.pc, CODE + 4, "{raw:#010x}"),
            stop => {
                assert!(
                    matches!(stop, Stop::Illegal { .. } | Stop::PageFault { .. }),
                    "{raw:#010x}: {stop:?}"
                );
                assert_eq!((m.cpu.x, m.cpu.fp, m.cpu.pc), (before.0, before.1, CODE));
            }
        }
    }
}

//! Differential oracle for F/D: one random F/D instruction at a time, on our interpreter and
//! on `rvemu`, where rvemu implements it.
//!
//! rvemu keeps every F register as a host `f64` (a single as its `f64` value, not NaN-boxed)
//! and computes with host arithmetic, so it is an oracle only for round-to-nearest-even
//! results (it ignores `rm` and never sets `fflags`), on operands that are not NaNs where
//! its `f32`/`f64` conversions would quiet them. What is left out, and why:
//! - `fnmadd`/`fnmsub`: rvemu swaps them (its `fnmadd` computes `-(a*b) + c`).
//! - `fmin`/`fmax` on zeros of opposite signs (Rust's `f64::min` may return either) and
//!   NaN results in general (rvemu returns host NaNs, not the canonical NaN).
//! - `fcvt.s.d`: rvemu does not round (the register keeps the double).
//! - `fcvt.{w,wu,l,lu}.*`: rvemu rounds with `f64::round` (ties away) whatever `rm` says,
//!   so ours run with `rm = rmm`, on in-range operands only; `fcvt.l.*` only on
//!   non-negative ones (rvemu converts through `u64`, which clamps negatives to 0).
//! - `fcvt.s.l`/`fcvt.d.l`: rvemu converts the source as unsigned: non-negative sources only.
//! - `fmv.x.w`, `fclass.s`: rvemu reads the `f64` representation of a single: left out.
//! - `fsw`/`fsd` with a negative offset: rvemu does not sign-extend it; offsets here are
//!   positive.
//! - `fclass.d`: rvemu returns the class number `k`, not the mask `1 << k`: compared as such,
//!   signalling NaNs aside (rvemu does not tell them apart).
//!
//! One rvemu CPU per test thread, reused (see `rvemu_diff.rs`); code at `CODE`, data at
//! `DATA` through an identity mapping on our side.

use ruprobes_sim::cpu::fp::box_single;
use ruprobes_sim::cpu::{Cpu, Stop};
use ruprobes_sim::mem::PhysMem;
use ruprobes_sim::sv39::{map_page, new_root, PTE_A, PTE_D, PTE_R, PTE_U, PTE_W, PTE_X};
use std::cell::RefCell;

const CODE: u64 = 0x8000_0000;
const DATA: u64 = CODE + 0x1000;
const PAGE: usize = 4096;
const EBREAK: u32 = 0x0010_0073;
const CASES: u64 = 30_000;
/// Registers: f1, f2, f4 sources, f3 destination; a0 integer source, a2 integer result;
/// s0 and sp point into the data page.
const A0: u32 = 10;
const A2: u32 = 12;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A double, biased to subnormals, values near 1 and huge ones; never a NaN.
    fn double(&mut self) -> f64 {
        let r = self.next();
        let exp = match r % 4 {
            0 => (r >> 8) % 2047,
            1 => (r >> 8) % 60,
            2 => 1023 - 30 + (r >> 8) % 60,
            _ => 2046 - (r >> 8) % 60,
        };
        let v = f64::from_bits((r & 1 << 63) | exp << 52 | self.next() >> 12);
        if v.is_nan() {
            0.5
        } else {
            v
        }
    }
    /// A single, the same way.
    fn single(&mut self) -> f32 {
        let r = self.next();
        let exp = match r % 4 {
            0 => (r >> 8) % 255,
            1 => (r >> 8) % 30,
            2 => 127 - 15 + (r >> 8) % 30,
            _ => 254 - (r >> 8) % 30,
        } as u32;
        let v = f32::from_bits((r >> 32) as u32 & 1 << 31 | exp << 23 | (self.next() >> 41) as u32);
        if v.is_nan() {
            0.5
        } else {
            v
        }
    }
}

/// What to compare after the instruction.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// f3 as a double (both NaN counts as equal).
    D,
    /// f3 as a NaN-boxed single (both NaN counts as equal).
    S,
    /// a2.
    X,
    /// a2: ours is `1 << rvemu's`.
    Class,
    /// The data page.
    Mem,
}

/// One case: the instruction, the F sources as (our bits, rvemu value), a0, and what to
/// compare.
struct Case {
    code: Vec<u8>,
    f: [(u64, f64); 3],
    a0: u64,
    check: Check,
    /// For `flw`: the data offset it loads from (rvemu quiets a signalling NaN there when
    /// it widens the single to `f64`, so such words are skipped).
    single_load: Option<usize>,
}

fn op_fp(f7: u32, rs2: u32, rs1: u32, f3: u32, rd: u32) -> u32 {
    f7 << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | rd << 7 | 0x53
}

fn d(v: f64) -> (u64, f64) {
    (v.to_bits(), v)
}
fn s(v: f32) -> (u64, f64) {
    (box_single(v.to_bits()), v as f64)
}

fn random_case(rng: &mut Rng) -> Case {
    let (da, db, dc) = (rng.double(), rng.double(), rng.double());
    let (sa, sb, sc) = (rng.single(), rng.single(), rng.single());
    let dd = [d(da), d(db), d(dc)];
    let ss = [s(sa), s(sb), s(sc)];
    let word = |w: u32| w.to_le_bytes().to_vec();
    let mut single_load = None;
    let (raw, f, a0, check): (Vec<u8>, [(u64, f64); 3], u64, Check) = match rng.below(14) {
        // fadd/fsub/fmul/fdiv/fsqrt (.s, .d), RNE.
        0..=2 => {
            let f5 = [0x00, 0x01, 0x02, 0x03, 0x0b][rng.below(5) as usize];
            let double = rng.below(2) == 1;
            let rs2 = if f5 == 0x0b { 0 } else { 2 };
            let w = op_fp(f5 << 2 | double as u32, rs2, 1, 0, 3);
            if double {
                (word(w), dd, 0, Check::D)
            } else {
                (word(w), ss, 0, Check::S)
            }
        }
        // fmadd/fmsub, RNE: f3 = f1 * f2 +- f4.
        3 => {
            let opcode = [0x43, 0x47][rng.below(2) as usize];
            let double = rng.below(2) == 1;
            let w = 4 << 27 | (double as u32) << 25 | 2 << 20 | 1 << 15 | 3 << 7 | opcode;
            if double {
                (word(w), dd, 0, Check::D)
            } else {
                (word(w), ss, 0, Check::S)
            }
        }
        // fsgnj/fsgnjn/fsgnjx: any bits for doubles (pure bit operations in both).
        4 => {
            let f3 = rng.below(3) as u32;
            if rng.below(2) == 1 {
                let any = |r: &mut Rng| {
                    let b = r.next();
                    (b, f64::from_bits(b))
                };
                let f = [any(rng), any(rng), (0, 0.0)];
                (word(op_fp(0x11, 2, 1, f3, 3)), f, 0, Check::D)
            } else {
                (word(op_fp(0x10, 2, 1, f3, 3)), ss, 0, Check::S)
            }
        }
        // fmin/fmax, except zeros of opposite signs; equal operands half of the time.
        5 => {
            let f3 = rng.below(2) as u32;
            let double = rng.below(2) == 1;
            let (mut f, check) = if double {
                (dd, Check::D)
            } else {
                (ss, Check::S)
            };
            if rng.below(2) == 0 {
                f[1] = f[0];
            }
            if f[0].1 == 0.0 && f[1].1 == 0.0 && f[0].0 != f[1].0 {
                f[1] = f[0];
            }
            (word(op_fp(0x14 | double as u32, 2, 1, f3, 3)), f, 0, check)
        }
        // feq/flt/fle, with quiet NaNs too (no flags are compared).
        6 => {
            let f3 = rng.below(3) as u32;
            let double = rng.below(2) == 1;
            let mut f = if double { dd } else { ss };
            if rng.below(4) == 0 {
                f[rng.below(2) as usize] = if double { d(f64::NAN) } else { s(f32::NAN) };
            }
            if rng.below(3) == 0 {
                f[1] = f[0];
            }
            (
                word(op_fp(0x50 | double as u32, 2, 1, f3, A2)),
                f,
                0,
                Check::X,
            )
        }
        // fcvt.{s,d}.{w,wu,l,lu} from a0, RNE (fcvt.*.l from non-negative values).
        7 => {
            let from = rng.below(4) as u32;
            let double = rng.below(2) == 1;
            let mut x = rng.next() >> rng.below(64);
            if rng.below(2) == 0 {
                x = x.wrapping_neg();
            }
            if from == 2 {
                x &= i64::MAX as u64;
            }
            let w = op_fp(0x68 | double as u32, from, A0, 0, 3);
            let check = if double { Check::D } else { Check::S };
            (word(w), dd, x, check)
        }
        // fcvt.{w,wu,l,lu}.{s,d} to a2 with rm = rmm, in range.
        8 => {
            let to = rng.below(4);
            let double = rng.below(2) == 1;
            let scale = [2f64.powi(30), 2f64.powi(31), 2f64.powi(62), 2f64.powi(63)][to as usize];
            let r = (rng.next() >> 11) as f64 / 2f64.powi(53); // [0, 1)
            let mut v = r * scale;
            if rng.below(2) == 0 {
                v = (v * 8.0).round() / 8.0; // ties appear
            }
            if to == 0 && rng.below(2) == 0 {
                v = -v;
            }
            let f = if double {
                [d(v), d(0.0), d(0.0)]
            } else {
                [s(v as f32), s(0.0), s(0.0)]
            };
            let w = op_fp(0x60 | double as u32, to as u32, 1, 4, A2);
            (word(w), f, 0, Check::X)
        }
        // fcvt.d.s (exact).
        9 => (word(op_fp(0x21, 0, 1, 0, 3)), ss, 0, Check::D),
        // fmv.x.d / fmv.d.x: any bits.
        10 => {
            let b = rng.next();
            if rng.below(2) == 0 {
                let f = [(b, f64::from_bits(b)), (0, 0.0), (0, 0.0)];
                (word(op_fp(0x71, 0, 1, 0, A2)), f, 0, Check::X)
            } else {
                (word(op_fp(0x79, 0, A0, 0, 3)), dd, b, Check::D)
            }
        }
        // fclass.d (rvemu: the class number), no signalling NaNs.
        11 => {
            let mut f = dd;
            match rng.below(6) {
                0 => f[0] = d(f64::NAN),
                1 => f[0] = d(-0.0),
                2 => f[0] = d(f64::NEG_INFINITY),
                _ => {}
            }
            (word(op_fp(0x71, 0, 1, 1, A2)), f, 0, Check::Class)
        }
        // fld/fsd/flw/fsw relative to s0, and fsd/fsw of the loaded value.
        12 => {
            let double = rng.below(2) == 1;
            let off = rng.below(256) as u32 * 8;
            let f3 = if double { 3 } else { 2 };
            if !double {
                single_load = Some(off as usize);
            }
            let load = off << 20 | 8 << 15 | f3 << 12 | 3 << 7 | 0x07;
            // Positive offsets only: rvemu does not sign-extend the offset of fsw/fsd.
            let off2 = rng.below(256) as u32 * 8;
            let store = (off2 >> 5) << 25 | 3 << 20 | 8 << 15 | f3 << 12 | (off2 & 31) << 7 | 0x27;
            let mut code = word(load);
            code.extend(word(store));
            (code, dd, 0, Check::Mem)
        }
        // c.fld/c.fsd (s0) and c.fldsp/c.fsdsp (sp).
        _ => {
            let off = rng.below(32) as u16 * 8; // 0..=248
            let c_fld = 0x2000 | (off >> 3 & 7) << 10 | (off >> 6 & 3) << 5 | 1 << 2;
            let off2 = rng.below(32) as u16 * 8;
            let c_fsd = 0xa000 | (off2 >> 3 & 7) << 10 | (off2 >> 6 & 3) << 5 | 1 << 2;
            let off3 = rng.below(64) as u16 * 8; // 0..=504
            let c_fldsp = 0x2002
                | (off3 >> 5 & 1) << 12
                | 3 << 7
                | (off3 >> 3 & 3) << 5
                | (off3 >> 6 & 7) << 2;
            let off4 = rng.below(64) as u16 * 8;
            let c_fsdsp = 0xa002 | (off4 >> 3 & 7) << 10 | (off4 >> 6 & 7) << 7 | 3 << 2;
            let mut code = Vec::new();
            for h in [c_fld, c_fsd, c_fldsp, c_fsdsp] {
                code.extend(h.to_le_bytes());
            }
            (code, dd, 0, Check::Mem)
        }
    };
    let mut code = raw;
    code.extend(EBREAK.to_le_bytes());
    Case {
        code,
        f,
        a0,
        check,
        single_load,
    }
}

/// The state a case compares.
#[derive(Debug, PartialEq)]
struct Outcome {
    f3: u64,
    a2: u64,
    data: Vec<u8>,
}

fn run_ours(case: &Case, data: &[u8]) -> Result<Outcome, String> {
    let mut mem = PhysMem::new(8);
    let root = new_root(&mut mem).map_err(|e| e.to_string())?;
    let code_pa = mem.alloc_frame().ok_or("no frame")?;
    let data_pa = mem.alloc_frame().ok_or("no frame")?;
    let a = PTE_U | PTE_A;
    map_page(&mut mem, root, CODE, code_pa, a | PTE_R | PTE_X).map_err(|e| e.to_string())?;
    map_page(&mut mem, root, DATA, data_pa, a | PTE_R | PTE_W | PTE_D)
        .map_err(|e| e.to_string())?;
    mem.write(code_pa, &case.code);
    mem.write(data_pa, data);
    let mut cpu = Cpu::new();
    cpu.set_page_table(root);
    for (r, (bits, _)) in [1, 2, 4].into_iter().zip(case.f) {
        cpu.fp.f[r] = bits;
    }
    cpu.x[A0 as usize] = case.a0;
    cpu.x[8] = DATA;
    cpu.x[2] = DATA + 2048;
    cpu.pc = CODE;
    let stop = cpu.run(&mut mem, 100);
    if stop != Stop::Breakpoint {
        return Err(format!("our cpu stopped with {stop:?} at {:#x}", cpu.pc));
    }
    let mut out = vec![0; PAGE];
    mem.read(data_pa, &mut out);
    Ok(Outcome {
        f3: cpu.fp.f[3],
        a2: cpu.x[A2 as usize],
        data: out,
    })
}

thread_local! {
    static RVEMU: RefCell<rvemu::cpu::Cpu> = RefCell::new(rvemu::cpu::Cpu::new());
}

/// rvemu's outcome, with f3 in our register form (a single NaN-boxed).
fn run_rvemu(case: &Case, data: &[u8], single: bool) -> Result<Outcome, String> {
    use rvemu::cpu::{BYTE, DOUBLEWORD};
    RVEMU.with(|cell| {
        let cpu = &mut *cell.borrow_mut();
        let end = CODE + case.code.len() as u64 - 4;
        for (k, b) in case.code.iter().enumerate() {
            cpu.bus
                .write(CODE + k as u64, *b as u64, BYTE)
                .map_err(|e| format!("{e:?}"))?;
        }
        for (k, chunk) in data.chunks(8).enumerate() {
            let v = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            cpu.bus
                .write(DATA + 8 * k as u64, v, DOUBLEWORD)
                .map_err(|e| format!("{e:?}"))?;
        }
        for r in 0..32 {
            cpu.fregs.write(r, 0.0);
        }
        for (r, (_, value)) in [1u64, 2, 4].into_iter().zip(case.f) {
            cpu.fregs.write(r, value);
        }
        cpu.xregs.write(A0 as u64, case.a0);
        cpu.xregs.write(A2 as u64, 0);
        cpu.xregs.write(8, DATA);
        cpu.xregs.write(2, DATA + 2048);
        cpu.pc = CODE;
        for _ in 0..8 {
            if cpu.pc == end {
                break;
            }
            cpu.execute()
                .map_err(|e| format!("rvemu raised {e:?} at {:#x}", cpu.pc))?;
        }
        if cpu.pc != end {
            return Err(format!("rvemu did not reach the end, pc {:#x}", cpu.pc));
        }
        let f3 = cpu.fregs.read(3);
        let f3 = if single {
            box_single((f3 as f32).to_bits())
        } else {
            f3.to_bits()
        };
        let mut out = Vec::with_capacity(PAGE);
        for k in 0..PAGE as u64 / 8 {
            let v = cpu
                .bus
                .read(DATA + 8 * k, DOUBLEWORD)
                .map_err(|e| format!("{e:?}"))?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(Outcome {
            f3,
            a2: cpu.xregs.read(A2 as u64),
            data: out,
        })
    })
}

fn is_nan(bits: u64, single: bool) -> bool {
    if single {
        f32::from_bits(bits as u32).is_nan()
    } else {
        f64::from_bits(bits).is_nan()
    }
}

fn check_case(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let case = random_case(&mut rng);
    let data: Vec<u8> = (0..PAGE).map(|_| rng.next() as u8).collect();
    if let Some(at) = case.single_load {
        let word = u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or([0; 4]));
        if f32::from_bits(word).is_nan() {
            return;
        }
    }
    let single = matches!(case.check, Check::S);
    let ours = run_ours(&case, &data).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let theirs = run_rvemu(&case, &data, single).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let same = match case.check {
        Check::D | Check::S => {
            ours.f3 == theirs.f3 || (is_nan(ours.f3, single) && is_nan(theirs.f3, single))
        }
        Check::X => ours.a2 == theirs.a2,
        Check::Class => ours.a2 == 1 << theirs.a2,
        Check::Mem => ours.data == theirs.data,
    };
    assert!(
        same,
        "seed {seed}: {:?} differs for {:02x?} with f1/f2/f4 {:x?}, a0 {:#x}: f3 ours {:#x} rvemu {:#x}, a2 ours {:#x} rvemu {:#x}",
        case.check,
        case.code,
        case.f.map(|(b, _)| b),
        case.a0,
        ours.f3,
        theirs.f3,
        ours.a2,
        theirs.a2
    );
}

#[test]
fn random_fp_instructions_match_rvemu() {
    for seed in 0..CASES {
        check_case(seed);
    }
}

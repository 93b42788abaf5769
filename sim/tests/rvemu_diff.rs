//! Differential oracle: random straight-line RV64IMC sequences run on our interpreter and on
//! `rvemu` must leave identical registers, pc and data memory.
//!
//! Each case: a random register file, a random 4 KiB data page, and up to 24 random
//! instructions (ALU, M, W forms, compressed forms, loads/stores into the data page,
//! AMOs, forward branches and jumps to instruction boundaries inside the sequence). Three
//! registers (sp, s0, t6) hold the data page address and are never written, so every
//! memory access stays in the data page; everything else is random.
//!
//! rvemu runs in bare M-mode with code and data at the same addresses our CPU sees through
//! an identity Sv39 mapping. One rvemu CPU is created per test thread and reused: creating
//! it writes `rvemu.dts` into the current directory, tries to run `dtc`, maps 1 GiB and
//! starts a UART thread. Our CPU ends the sequence on an `ebreak`; rvemu is stepped until
//! its pc reaches that `ebreak` (so rvemu's trap reporting, which says `pc - 4` even after
//! a compressed instruction, never matters).

use ruprobes_sim::cpu::decode::{decode16, decode32, Op};
use ruprobes_sim::cpu::{Cpu, Stop};
use ruprobes_sim::mem::PhysMem;
use ruprobes_sim::sv39::{map_page, new_root, PTE_A, PTE_D, PTE_R, PTE_U, PTE_W, PTE_X};
use std::cell::RefCell;

const CODE: u64 = 0x8000_0000;
const DATA: u64 = CODE + 0x1000;
const PAGE: usize = 4096;
const EBREAK: u32 = 0x0010_0073;
/// Registers holding `DATA`, never written by generated code.
const BASES: [u32; 3] = [2, 8, 31];
const CASES: u64 = 20_000;
const MAX_LEN: usize = 24;

/// xorshift64*: deterministic, so a failing seed reproduces.
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
    fn reg(&mut self) -> u32 {
        self.below(32) as u32
    }
    /// A register value biased towards edge cases.
    fn value(&mut self) -> u64 {
        match self.below(8) {
            0 => [
                0,
                1,
                u64::MAX,
                i64::MIN as u64,
                i64::MAX as u64,
                0x8000_0000,
                0xffff_ffff,
            ][self.below(7) as usize],
            1 => self.below(64),
            2 => (self.next() as i32) as u64,
            _ => self.next(),
        }
    }
}

/// One instruction of a sequence; control transfers name a target instruction index.
enum Item {
    Word(u32),
    Half(u16),
    Branch {
        f3: u32,
        rs1: u32,
        rs2: u32,
        target: usize,
    },
    Jal {
        rd: u32,
        target: usize,
    },
    CBranch {
        bnez: bool,
        rs1p: u32,
        target: usize,
    },
    CJump {
        target: usize,
    },
}

impl Item {
    fn len(&self) -> u64 {
        match self {
            Item::Half(_) | Item::CBranch { .. } | Item::CJump { .. } => 2,
            _ => 4,
        }
    }
}

fn writes_base(rd: u8) -> bool {
    BASES.contains(&(rd as u32))
}

/// A random 32-bit instruction of the computational opcodes that decodes as legal and
/// leaves the base registers alone.
fn alu32(rng: &mut Rng) -> u32 {
    loop {
        let opcode = [0x13, 0x1b, 0x33, 0x3b, 0x37, 0x17][rng.below(6) as usize];
        let mut raw = (rng.next() as u32 & !0x7f) | opcode;
        if opcode == 0x33 || opcode == 0x3b {
            // Keep funct7 to the defined values (0, 0x20, M) so most draws are legal.
            raw = raw & 0x01ff_ffff | [0u32, 0x20, 1][rng.below(3) as usize] << 25;
        }
        let insn = decode32(raw);
        if insn.op != Op::Illegal && !writes_base(insn.rd) {
            return raw;
        }
    }
}

/// A random compressed computational instruction (quadrants 1 and 2, no control flow,
/// no memory access) that leaves the base registers alone.
fn alu16(rng: &mut Rng) -> u16 {
    loop {
        let raw = rng.next() as u16;
        let quadrant = raw & 3;
        let f3 = raw >> 13;
        let computational = match quadrant {
            1 => f3 <= 4,
            2 => f3 == 0 || f3 == 4,
            _ => false,
        };
        let insn = decode16(raw);
        let alu = !matches!(insn.op, Op::Illegal | Op::Jalr | Op::Ebreak);
        if computational && alu && !writes_base(insn.rd) {
            return raw;
        }
    }
}

/// A random load or store relative to a base register, inside the data page.
fn mem32(rng: &mut Rng) -> u32 {
    let base = BASES[rng.below(3) as usize];
    let imm = rng.below(2040) as u32;
    if rng.below(2) == 0 {
        let f3 = [0, 1, 2, 3, 4, 5, 6][rng.below(7) as usize];
        let rd = loop {
            let r = rng.reg();
            if !BASES.contains(&r) {
                break r;
            }
        };
        imm << 20 | base << 15 | f3 << 12 | rd << 7 | 0x03
    } else {
        let f3 = rng.below(4) as u32;
        (imm >> 5) << 25 | rng.reg() << 20 | base << 15 | f3 << 12 | (imm & 31) << 7 | 0x23
    }
}

/// A random compressed load or store: `c.lw/c.ld/c.sw/c.sd` with base s0, or the sp forms.
fn mem16(rng: &mut Rng) -> u16 {
    loop {
        let raw = if rng.below(2) == 0 {
            // Quadrant 0, funct3 2/3/6/7, rs1' forced to s0 (x8).
            let f3 = [2u16, 3, 6, 7][rng.below(4) as usize];
            (rng.next() as u16 & 0x1c7c) | f3 << 13
        } else {
            // Quadrant 2 c.lwsp/c.ldsp/c.swsp/c.sdsp.
            let f3 = [2u16, 3, 6, 7][rng.below(4) as usize];
            (rng.next() as u16 & 0x1ffc) | f3 << 13 | 2
        };
        let insn = decode16(raw);
        if insn.op != Op::Illegal && !writes_base(insn.rd) {
            return raw;
        }
    }
}

/// A random AMO (not LR/SC) on the first doubleword of the data page.
fn amo(rng: &mut Rng) -> u32 {
    let f5 = [0x00, 0x01, 0x04, 0x08, 0x0c, 0x10, 0x14, 0x18, 0x1c][rng.below(9) as usize];
    let f3 = 2 + rng.below(2) as u32;
    let rd = loop {
        let r = rng.reg();
        if !BASES.contains(&r) {
            break r;
        }
    };
    let base = BASES[rng.below(3) as usize];
    f5 << 27 | rng.reg() << 20 | base << 15 | f3 << 12 | rd << 7 | 0x2f
}

fn random_sequence(rng: &mut Rng) -> Vec<Item> {
    let n = 1 + rng.below(MAX_LEN as u64) as usize;
    (0..n)
        .map(|i| {
            let target = i + 1 + rng.below((n - i) as u64) as usize; // later, or the end
            match rng.below(17) {
                16 => Item::Word(amo(rng)),
                0..=4 => Item::Word(alu32(rng)),
                5..=7 => Item::Half(alu16(rng)),
                8 | 9 => Item::Word(mem32(rng)),
                10 | 11 => Item::Half(mem16(rng)),
                12 => Item::Branch {
                    f3: [0, 1, 4, 5, 6, 7][rng.below(6) as usize],
                    rs1: rng.reg(),
                    rs2: rng.reg(),
                    target,
                },
                13 => Item::CBranch {
                    bnez: rng.below(2) == 0,
                    rs1p: rng.below(8) as u32,
                    target,
                },
                14 => Item::CJump { target },
                _ => {
                    let rd = loop {
                        let r = rng.reg();
                        if !BASES.contains(&r) {
                            break r;
                        }
                    };
                    Item::Jal { rd, target }
                }
            }
        })
        .collect()
}

/// Machine code for `items` placed at `CODE`, followed by an `ebreak`.
fn assemble(items: &[Item]) -> Vec<u8> {
    let mut addr = vec![0u64];
    for item in items {
        addr.push(addr[addr.len() - 1] + item.len());
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let off = |target: usize| (addr[target] - addr[i]) as u32;
        match *item {
            Item::Word(w) => out.extend_from_slice(&w.to_le_bytes()),
            Item::Half(h) => out.extend_from_slice(&h.to_le_bytes()),
            Item::Branch {
                f3,
                rs1,
                rs2,
                target,
            } => {
                let m = off(target);
                let w = (m >> 12 & 1) << 31
                    | (m >> 5 & 0x3f) << 25
                    | rs2 << 20
                    | rs1 << 15
                    | f3 << 12
                    | (m >> 1 & 0xf) << 8
                    | (m >> 11 & 1) << 7
                    | 0x63;
                out.extend_from_slice(&w.to_le_bytes());
            }
            Item::Jal { rd, target } => {
                let m = off(target);
                let w = (m >> 20 & 1) << 31
                    | (m >> 1 & 0x3ff) << 21
                    | (m >> 11 & 1) << 20
                    | (m >> 12 & 0xff) << 12
                    | rd << 7
                    | 0x6f;
                out.extend_from_slice(&w.to_le_bytes());
            }
            Item::CBranch { bnez, rs1p, target } => {
                let m = off(target);
                let h = (6 + bnez as u32) << 13
                    | (m >> 8 & 1) << 12
                    | (m >> 3 & 3) << 10
                    | rs1p << 7
                    | (m >> 6 & 3) << 5
                    | (m >> 1 & 3) << 3
                    | (m >> 5 & 1) << 2
                    | 1;
                out.extend_from_slice(&(h as u16).to_le_bytes());
            }
            Item::CJump { target } => {
                let m = off(target);
                let h = 5 << 13
                    | (m >> 11 & 1) << 12
                    | (m >> 4 & 1) << 11
                    | (m >> 8 & 3) << 9
                    | (m >> 10 & 1) << 8
                    | (m >> 6 & 1) << 7
                    | (m >> 7 & 1) << 6
                    | (m >> 1 & 7) << 3
                    | (m >> 5 & 1) << 2
                    | 1;
                out.extend_from_slice(&(h as u16).to_le_bytes());
            }
        }
    }
    out.extend_from_slice(&EBREAK.to_le_bytes());
    out
}

/// Final state of one run: registers, pc, data page.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    x: [u64; 32],
    pc: u64,
    data: Vec<u8>,
}

fn run_ours(code: &[u8], regs: &[u64; 32], data: &[u8]) -> Result<Outcome, String> {
    let mut mem = PhysMem::new(8);
    let root = new_root(&mut mem).map_err(|e| e.to_string())?;
    let code_pa = mem.alloc_frame().ok_or("no frame")?;
    let data_pa = mem.alloc_frame().ok_or("no frame")?;
    let a = PTE_U | PTE_A;
    map_page(&mut mem, root, CODE, code_pa, a | PTE_R | PTE_X).map_err(|e| e.to_string())?;
    map_page(&mut mem, root, DATA, data_pa, a | PTE_R | PTE_W | PTE_D)
        .map_err(|e| e.to_string())?;
    mem.write(code_pa, code);
    mem.write(data_pa, data);
    let mut cpu = Cpu::new();
    cpu.set_page_table(root);
    cpu.x = *regs;
    cpu.pc = CODE;
    let stop = cpu.run(&mut mem, 10_000);
    if stop != Stop::Breakpoint {
        return Err(format!("our cpu stopped with {stop:?} at {:#x}", cpu.pc));
    }
    let mut out = vec![0; PAGE];
    mem.read(data_pa, &mut out);
    Ok(Outcome {
        x: cpu.x,
        pc: cpu.pc,
        data: out,
    })
}

thread_local! {
    static RVEMU: RefCell<rvemu::cpu::Cpu> = RefCell::new(rvemu::cpu::Cpu::new());
}

fn run_rvemu(code: &[u8], regs: &[u64; 32], data: &[u8]) -> Result<Outcome, String> {
    use rvemu::cpu::{BYTE, DOUBLEWORD};
    RVEMU.with(|cell| {
        let cpu = &mut *cell.borrow_mut();
        let end = CODE + code.len() as u64 - 4; // the ebreak
        for (k, b) in code.iter().enumerate() {
            cpu.bus
                .write(CODE + k as u64, *b as u64, BYTE)
                .map_err(|e| format!("{e:?}"))?;
        }
        for (k, chunk) in data.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let v = u64::from_le_bytes(w);
            cpu.bus
                .write(DATA + 8 * k as u64, v, DOUBLEWORD)
                .map_err(|e| format!("{e:?}"))?;
        }
        for (r, v) in regs.iter().enumerate() {
            cpu.xregs.write(r as u64, *v);
        }
        cpu.pc = CODE;
        for _ in 0..=MAX_LEN {
            if cpu.pc == end {
                break;
            }
            cpu.execute()
                .map_err(|e| format!("rvemu raised {e:?} at {:#x}", cpu.pc))?;
        }
        if cpu.pc != end {
            return Err(format!("rvemu did not reach the end, pc {:#x}", cpu.pc));
        }
        let mut x = [0u64; 32];
        for (r, v) in x.iter_mut().enumerate() {
            *v = cpu.xregs.read(r as u64);
        }
        let mut out = Vec::with_capacity(PAGE);
        for k in 0..PAGE as u64 / 8 {
            let v = cpu
                .bus
                .read(DATA + 8 * k, DOUBLEWORD)
                .map_err(|e| format!("{e:?}"))?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(Outcome {
            x,
            pc: cpu.pc,
            data: out,
        })
    })
}

fn disassemble(code: &[u8]) -> String {
    let mut s = String::new();
    let mut at = 0;
    while at + 2 <= code.len() {
        let lo = u16::from_le_bytes([code[at], code[at + 1]]);
        if lo & 3 == 3 && at + 4 <= code.len() {
            let raw = u32::from_le_bytes([code[at], code[at + 1], code[at + 2], code[at + 3]]);
            s += &format!("  {:#x}: {raw:08x} {:?}\n", CODE + at as u64, decode32(raw));
            at += 4;
        } else {
            s += &format!(
                "  {:#x}: {lo:04x}     {:?}\n",
                CODE + at as u64,
                decode16(lo)
            );
            at += 2;
        }
    }
    s
}

fn check_case(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let items = random_sequence(&mut rng);
    let code = assemble(&items);
    let mut regs = [0u64; 32];
    for r in regs.iter_mut().skip(1) {
        *r = rng.value();
    }
    for b in BASES {
        regs[b as usize] = DATA;
    }
    let data: Vec<u8> = (0..PAGE).map(|_| rng.next() as u8).collect();
    let ours = run_ours(&code, &regs, &data);
    let theirs = run_rvemu(&code, &regs, &data);
    match (ours, theirs) {
        (Ok(a), Ok(b)) if a == b => {}
        (a, b) => {
            let diff = match (&a, &b) {
                (Ok(a), Ok(b)) => {
                    let regs: Vec<String> = (0..32)
                        .filter(|&r| a.x[r] != b.x[r])
                        .map(|r| format!("x{r}: ours {:#x} rvemu {:#x}", a.x[r], b.x[r]))
                        .collect();
                    let bytes = (0..PAGE).filter(|&k| a.data[k] != b.data[k]).count();
                    format!(
                        "pc ours {:#x} rvemu {:#x}; {regs:?}; {bytes} data bytes differ",
                        a.pc, b.pc
                    )
                }
                _ => format!("ours {:?} / rvemu {:?}", a.as_ref().err(), b.as_ref().err()),
            };
            panic!(
                "seed {seed}: {diff}\ninitial x: {regs:x?}\n{}",
                disassemble(&code)
            );
        }
    }
}

#[test]
fn random_sequences_match_rvemu() {
    for seed in 0..CASES {
        check_case(seed);
    }
}

//! Unit tests of the interpreter on hand-assembled code under real Sv39 tables.

use super::*;

mod fp;
use crate::sv39::{map_page, new_root, PTE_A, PTE_D, PTE_R, PTE_U, PTE_W, PTE_X};

const CODE: u64 = 0x10000;
const DATA: u64 = 0x20000;
const RX: u64 = PTE_U | PTE_R | PTE_X | PTE_A;
const RW: u64 = PTE_U | PTE_R | PTE_W | PTE_A | PTE_D;

// Tiny assembler: encoders for the formats used below.
fn r(f7: u32, rs2: u32, rs1: u32, f3: u32, rd: u32, op: u32) -> u32 {
    f7 << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | rd << 7 | op
}
fn i(imm: i32, rs1: u32, f3: u32, rd: u32, op: u32) -> u32 {
    (imm as u32) << 20 | rs1 << 15 | f3 << 12 | rd << 7 | op
}
fn s(imm: i32, rs2: u32, rs1: u32, f3: u32) -> u32 {
    let imm = imm as u32;
    (imm >> 5) << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | (imm & 31) << 7 | 0x23
}
fn br(imm: i32, rs2: u32, rs1: u32, f3: u32) -> u32 {
    let m = imm as u32;
    (m >> 12 & 1) << 31
        | (m >> 5 & 0x3f) << 25
        | rs2 << 20
        | rs1 << 15
        | f3 << 12
        | (m >> 1 & 0xf) << 8
        | (m >> 11 & 1) << 7
        | 0x63
}
fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
    i(imm, rs1, 0, rd, 0x13)
}
fn ld(rd: u32, rs1: u32, imm: i32) -> u32 {
    i(imm, rs1, 3, rd, 0x03)
}
fn sd(rs2: u32, rs1: u32, imm: i32) -> u32 {
    s(imm, rs2, rs1, 3)
}
fn lui(rd: u32, imm: u32) -> u32 {
    imm << 12 | rd << 7 | 0x37
}
const ECALL: u32 = 0x73;
const EBREAK: u32 = 0x0010_0073;
const C_EBREAK: u16 = 0x9002;
const C_NOP: u16 = 0x0001;
const A0: u32 = 10;
const A1: u32 = 11;
const A2: u32 = 12;

/// Machine code being assembled.
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    fn w(mut self, insn: u32) -> Self {
        self.0.extend_from_slice(&insn.to_le_bytes());
        self
    }
    fn h(mut self, insn: u16) -> Self {
        self.0.extend_from_slice(&insn.to_le_bytes());
        self
    }
}

/// A machine with code at `CODE` (two pages, R+X) and data at `DATA` (one page, R+W).
struct Machine {
    mem: PhysMem,
    cpu: Cpu,
    root: u64,
}

impl Machine {
    fn new(code: Asm) -> Self {
        Self::at(CODE, code)
    }

    /// Places `code` at virtual address `at` inside the two code pages.
    fn at(at: u64, code: Asm) -> Self {
        let mut mem = PhysMem::new(64);
        let root = new_root(&mut mem).unwrap();
        let mut m = Machine {
            mem,
            cpu: Cpu::new(),
            root,
        };
        m.map(CODE, RX);
        m.map(CODE + PAGE_SIZE, RX);
        m.map(DATA, RW);
        m.poke(at, &code.0);
        m.cpu.set_page_table(root);
        m.cpu.pc = at;
        m
    }

    fn map(&mut self, va: u64, flags: u64) -> u64 {
        let frame = self.mem.alloc_frame().unwrap();
        map_page(&mut self.mem, self.root, va, frame, flags).unwrap();
        self.cpu.flush_tlb();
        frame
    }

    fn pa(&self, va: u64) -> u64 {
        sv39::translate(&self.mem, self.root, va).unwrap().0
    }

    /// Writes `bytes` at `va`, page by page.
    fn poke(&mut self, va: u64, bytes: &[u8]) {
        for (k, byte) in bytes.iter().enumerate() {
            let pa = self.pa(va + k as u64);
            assert!(self.mem.write(pa, &[*byte]));
        }
    }

    fn peek_u64(&self, va: u64) -> u64 {
        self.mem.read_u64(self.pa(va)).unwrap()
    }

    fn run(&mut self) -> Stop {
        self.cpu.run(&mut self.mem, 1_000_000)
    }
}

/// a0 += 1, a1 -= 1 until a1 == 0, then ecall.
fn counting_loop() -> Asm {
    Asm::default()
        .w(addi(A0, A0, 1))
        .w(addi(A1, A1, -1))
        .w(br(-8, 0, A1, 1))
        .w(ECALL)
}

#[test]
fn loop_runs_to_ecall_and_counts_instructions() {
    let mut m = Machine::new(counting_loop());
    m.cpu.x[A1 as usize] = 1000;
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(m.cpu.pc, CODE + 12, "pc stays at the ecall");
    assert_eq!(m.cpu.x[A0 as usize], 1000);
    assert_eq!(m.cpu.instret(), 3000, "the ecall itself does not retire");
}

#[test]
fn budget_stops_between_instructions_and_resumes() {
    let mut m = Machine::new(counting_loop());
    m.cpu.x[A1 as usize] = 10;
    assert_eq!(m.cpu.run(&mut m.mem, 4), Stop::BudgetExhausted);
    assert_eq!(
        (m.cpu.instret(), m.cpu.pc, m.cpu.x[A0 as usize]),
        (4, CODE + 4, 2)
    );
    assert_eq!(m.cpu.run(&mut m.mem, 0), Stop::BudgetExhausted);
    assert_eq!(m.cpu.instret(), 4);
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(m.cpu.x[A0 as usize], 10);
}

#[test]
fn x0_stays_zero() {
    let mut m = Machine::new(Asm::default().w(addi(0, 0, 5)).w(lui(0, 1)).w(ECALL));
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(m.cpu.x[0], 0);
}

#[test]
fn loads_and_stores_check_permissions_exactly() {
    // ld a0, 0(a1) with a1 pointing at various pages.
    let cases: [(u64, Option<u64>); 6] = [
        (DATA, None),                                   // R+W data: fine
        (0x30000, Some(0)),                             // unmapped
        (0x31000, Some(PTE_R | PTE_W | PTE_A | PTE_D)), // no U
        (0x32000, Some(PTE_U | PTE_X | PTE_A)),         // execute-only
        (0x33000, Some(PTE_U | PTE_R)),                 // no A
        (0xffff_0000_0000_0000, Some(0)),               // non-canonical
    ];
    for (va, flags) in cases {
        let mut m = Machine::new(Asm::default().w(ld(A0, A1, 8)).w(ECALL));
        if let Some(f) = flags.filter(|&f| f != 0) {
            m.map(va, f);
        }
        m.cpu.x[A0 as usize] = 77;
        m.cpu.x[A1 as usize] = va;
        let stop = m.run();
        if flags.is_none() {
            assert_eq!(stop, Stop::Ecall);
            assert_eq!(m.cpu.x[A0 as usize], 0);
        } else {
            assert_eq!(
                stop,
                Stop::PageFault {
                    access: Access::Load,
                    addr: va + 8
                },
                "{va:#x}"
            );
            assert_eq!(m.cpu.pc, CODE, "pc at the faulting load");
            assert_eq!(m.cpu.x[A0 as usize], 77, "destination untouched");
            assert_eq!(m.cpu.instret(), 0);
        }
    }
}

#[test]
fn stores_need_write_and_dirty() {
    for (flags, ok) in [
        (RW, true),
        (RX, false),
        (PTE_U | PTE_R | PTE_W | PTE_A, false),
    ] {
        let mut m = Machine::new(Asm::default().w(sd(A0, A1, 0)).w(ECALL));
        m.map(0x40000, flags);
        m.cpu.x[A0 as usize] = 0x1234;
        m.cpu.x[A1 as usize] = 0x40000;
        let stop = m.run();
        if ok {
            assert_eq!(stop, Stop::Ecall);
            assert_eq!(m.peek_u64(0x40000), 0x1234);
        } else {
            assert_eq!(
                stop,
                Stop::PageFault {
                    access: Access::Store,
                    addr: 0x40000
                }
            );
            assert_eq!(m.cpu.pc, CODE);
            assert_eq!(m.peek_u64(0x40000), 0, "nothing written");
        }
    }
}

#[test]
fn fetch_needs_execute_and_user() {
    for flags in [PTE_U | PTE_R | PTE_A, PTE_R | PTE_X | PTE_A, PTE_U | PTE_X] {
        let mut m = Machine::new(Asm::default().w(i(0, A1, 0, 0, 0x67))); // jr a1
        m.map(0x50000, flags);
        m.cpu.x[A1 as usize] = 0x50000;
        assert_eq!(
            m.run(),
            Stop::PageFault {
                access: Access::Fetch,
                addr: 0x50000
            }
        );
        assert_eq!(
            m.cpu.pc, 0x50000,
            "the jump retired; the fetch at its target faults"
        );
        assert_eq!(m.cpu.instret(), 1);
    }
}

#[test]
fn compressed_and_full_traps_report_their_own_pc() {
    // c.nop; c.ebreak
    let mut m = Machine::new(Asm::default().h(C_NOP).h(C_EBREAK));
    assert_eq!(m.run(), Stop::Breakpoint);
    assert_eq!(m.cpu.pc, CODE + 2);
    // c.nop; ebreak
    let mut m = Machine::new(Asm::default().h(C_NOP).w(EBREAK));
    assert_eq!(m.run(), Stop::Breakpoint);
    assert_eq!(m.cpu.pc, CODE + 2);
    // c.nop; c.ld a0, 0(a1) faulting: 0x6188
    let mut m = Machine::new(Asm::default().h(C_NOP).h(0x6188).h(C_NOP));
    m.cpu.x[A1 as usize] = 0x70000;
    assert_eq!(
        m.run(),
        Stop::PageFault {
            access: Access::Load,
            addr: 0x70000
        }
    );
    assert_eq!(m.cpu.pc, CODE + 2);
    // illegal compressed (all zero) and a quad-precision (Q, not supported) load
    let mut m = Machine::new(Asm::default().h(C_NOP).h(0));
    assert_eq!(m.run(), Stop::Illegal { raw: 0 });
    assert_eq!(m.cpu.pc, CODE + 2);
    let flq = i(0, A0, 4, A0, 0x07);
    let mut m = Machine::new(Asm::default().w(flq));
    assert_eq!(m.run(), Stop::Illegal { raw: flq });
    assert_eq!(m.cpu.pc, CODE);
}

#[test]
fn fetch_straddling_a_page_translates_both_halves() {
    let at = CODE + PAGE_SIZE - 2;
    let mut m = Machine::at(at, Asm::default().w(addi(A0, A0, 3)).w(ECALL));
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(m.cpu.x[A0 as usize], 3);
    assert_eq!(m.cpu.pc, at + 4);

    // Second half unmapped: a fetch fault at the second page, pc at the instruction.
    let at = DATA - 2;
    let mut m = Machine::new(Asm::default().w(i(0, A1, 0, 0, 0x67)));
    m.map(DATA - PAGE_SIZE, RX);
    m.poke(at, &addi(A0, A0, 3).to_le_bytes()[..2]);
    m.cpu.x[A1 as usize] = at;
    assert_eq!(
        m.run(),
        Stop::PageFault {
            access: Access::Fetch,
            addr: DATA
        }
    );
    assert_eq!(m.cpu.pc, at);
    assert_eq!(m.cpu.x[A0 as usize], 0);
}

#[test]
fn breakpoint_written_through_physmem_is_seen_by_cached_code() {
    let mut m = Machine::new(counting_loop());
    m.cpu.x[A1 as usize] = 100;
    assert_eq!(m.cpu.run(&mut m.mem, 30), Stop::BudgetExhausted);
    // Replace `addi a1, a1, -1` (at CODE+4) by c.ebreak + c.nop, as ruprobes does.
    let pa = m.pa(CODE + 4);
    assert!(m.mem.write(pa, &[0x02, 0x90, 0x01, 0x00]));
    assert_eq!(m.run(), Stop::Breakpoint);
    assert_eq!(m.cpu.pc, CODE + 4);
    // Restore the original: the loop finishes.
    assert!(m.mem.write(pa, &addi(A1, A1, -1).to_le_bytes()));
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(m.cpu.x[A0 as usize], 100);
}

#[test]
fn guest_store_into_code_is_seen_by_the_next_fetch() {
    // sw a2, 8(a1) overwrites the instruction right after it (addi a0,a0,1) with ebreak.
    let code = Asm::default()
        .w(s(8, A2, A1, 2))
        .w(ECALL)
        .w(addi(A0, A0, 1))
        .w(ECALL);
    let mut m = Machine::new(code);
    // Make the code page writable.
    let pa = m.pa(CODE);
    crate::sv39::unmap_page(&mut m.mem, m.root, CODE);
    map_page(&mut m.mem, m.root, CODE, pa, RX | RW).unwrap();
    m.cpu.flush_tlb();
    // First pass: execute (and cache) the addi by jumping over the store.
    m.cpu.pc = CODE + 8;
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(m.cpu.x[A0 as usize], 1);
    m.cpu.pc = CODE;
    m.cpu.x[A1 as usize] = CODE;
    m.cpu.x[A2 as usize] = EBREAK as u64;
    assert_eq!(m.run(), Stop::Ecall);
    m.cpu.pc = CODE + 8;
    assert_eq!(m.run(), Stop::Breakpoint);
    assert_eq!(m.cpu.pc, CODE + 8);
}

#[test]
fn two_cpus_sharing_memory_stay_coherent() {
    let mut m = Machine::new(counting_loop());
    let mut other = Cpu::new();
    other.set_page_table(m.root);
    other.pc = CODE;
    other.x[A1 as usize] = 2;
    assert_eq!(other.run(&mut m.mem, 100), Stop::Ecall);
    // `m.cpu` stores an ebreak over the loop head, through a writable alias of the frame.
    let code_pa = m.pa(CODE);
    map_page(&mut m.mem, m.root, 0x60000, code_pa, RW).unwrap();
    m.cpu.flush_tlb();
    let code = Asm::default().w(sd(A2, A1, 0)).w(ECALL);
    m.poke(DATA, &code.0);
    let data_pa = m.pa(DATA);
    crate::sv39::unmap_page(&mut m.mem, m.root, DATA);
    map_page(&mut m.mem, m.root, DATA, data_pa, RX).unwrap();
    m.cpu.flush_tlb();
    m.cpu.pc = DATA;
    m.cpu.x[A1 as usize] = 0x60000;
    m.cpu.x[A2 as usize] = EBREAK as u64;
    assert_eq!(m.run(), Stop::Ecall);
    other.pc = CODE;
    assert_eq!(other.run(&mut m.mem, 100), Stop::Breakpoint);
}

#[test]
fn lr_sc_pairs_and_reservation_loss() {
    let lr_d = r(0b00010 << 2, 0, A1, 3, A0, 0x2f);
    let sc_d = r(0b00011 << 2, A2, A1, 3, A0, 0x2f);
    let mut m = Machine::new(
        Asm::default()
            .w(lr_d)
            .w(sc_d)
            .w(sc_d)
            .w(lr_d)
            .w(ECALL)
            .w(sc_d)
            .w(ECALL),
    );
    m.poke(DATA, &5u64.to_le_bytes());
    m.cpu.x[A1 as usize] = DATA;
    m.cpu.x[A2 as usize] = 9;
    assert_eq!(m.cpu.run(&mut m.mem, 2), Stop::BudgetExhausted);
    assert_eq!(m.cpu.x[A0 as usize], 0, "sc after lr succeeds");
    assert_eq!(m.peek_u64(DATA), 9);
    m.cpu.x[A2 as usize] = 11;
    assert_eq!(m.cpu.run(&mut m.mem, 1), Stop::BudgetExhausted);
    assert_eq!(m.cpu.x[A0 as usize], 1, "second sc fails");
    assert_eq!(m.peek_u64(DATA), 9);
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(m.cpu.x[A0 as usize], 9, "lr read the value");
    m.cpu.pc += 4;
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(
        m.cpu.x[A0 as usize], 1,
        "a trap between lr and sc drops the reservation"
    );
    assert_eq!(m.peek_u64(DATA), 9);
}

#[test]
fn amos_and_their_alignment() {
    let amo = |f5: u32, f3: u32| r(f5 << 2, A2, A1, f3, A0, 0x2f);
    let mut m = Machine::new(
        Asm::default()
            .w(amo(0x00, 3))
            .w(amo(0x10, 2))
            .w(amo(0x01, 3))
            .w(ECALL),
    );
    m.poke(DATA, &40u64.to_le_bytes());
    m.cpu.x[A1 as usize] = DATA;
    m.cpu.x[A2 as usize] = (-3i64) as u64;
    assert_eq!(m.cpu.run(&mut m.mem, 1), Stop::BudgetExhausted);
    assert_eq!((m.cpu.x[A0 as usize], m.peek_u64(DATA)), (40, 37));
    assert_eq!(m.cpu.run(&mut m.mem, 1), Stop::BudgetExhausted); // amomin.w
    assert_eq!(
        (m.cpu.x[A0 as usize], m.peek_u64(DATA)),
        (37, (-3i32) as u32 as u64)
    );
    assert_eq!(m.run(), Stop::Ecall); // amoswap.d
    assert_eq!(m.peek_u64(DATA), (-3i64) as u64);

    let mut m = Machine::new(Asm::default().w(amo(0x00, 3)));
    m.cpu.x[A1 as usize] = DATA + 4;
    assert_eq!(
        m.run(),
        Stop::Misaligned {
            access: Access::Store,
            addr: DATA + 4
        }
    );
    assert_eq!(m.cpu.pc, CODE);
    // An AMO on a read-only page faults as a store.
    let mut m = Machine::new(Asm::default().w(amo(0x00, 3)));
    m.cpu.x[A1 as usize] = CODE;
    assert_eq!(
        m.run(),
        Stop::PageFault {
            access: Access::Store,
            addr: CODE
        }
    );
}

#[test]
fn misaligned_access_across_pages_works() {
    let mut m = Machine::new(Asm::default().w(sd(A2, A1, 0)).w(ld(A0, A1, 0)).w(ECALL));
    m.map(DATA + PAGE_SIZE, RW);
    m.cpu.x[A1 as usize] = DATA + PAGE_SIZE - 3;
    m.cpu.x[A2 as usize] = 0x1122_3344_5566_7788;
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(m.cpu.x[A0 as usize], 0x1122_3344_5566_7788);
    assert_eq!(m.peek_u64(DATA + PAGE_SIZE), 0x11_2233_4455);

    // The second page unmapped: fault at its start, nothing written to the first.
    let mut m = Machine::new(Asm::default().w(sd(A2, A1, 0)));
    m.cpu.x[A1 as usize] = DATA + PAGE_SIZE - 3;
    m.cpu.x[A2 as usize] = u64::MAX;
    assert_eq!(
        m.run(),
        Stop::PageFault {
            access: Access::Store,
            addr: DATA + PAGE_SIZE
        }
    );
    assert_eq!(m.peek_u64(DATA + PAGE_SIZE - 8), 0);
}

#[test]
fn division_by_zero_and_overflow() {
    let m_op = |f3: u32, rd: u32, op: u32| r(1, A2, A1, f3, rd, op);
    let code = Asm::default()
        .w(m_op(4, 5, 0x33)) // div t0
        .w(m_op(5, 6, 0x33)) // divu t1
        .w(m_op(6, 7, 0x33)) // rem t2
        .w(m_op(7, 28, 0x33)) // remu t3
        .w(m_op(4, 29, 0x3b)) // divw t4
        .w(m_op(6, 30, 0x3b)) // remw t5
        .w(ECALL);
    let mut m = Machine::new(code);
    m.cpu.x[A1 as usize] = 7;
    assert_eq!(m.run(), Stop::Ecall);
    let x = &m.cpu.x;
    assert_eq!(
        [x[5], x[6], x[7], x[28], x[29], x[30]],
        [u64::MAX, u64::MAX, 7, 7, u64::MAX, 7]
    );

    let mut m = Machine::new(
        Asm::default()
            .w(m_op(4, 5, 0x33))
            .w(m_op(6, 6, 0x33))
            .w(m_op(4, 7, 0x3b))
            .w(ECALL),
    );
    m.cpu.x[A1 as usize] = i64::MIN as u64;
    m.cpu.x[A2 as usize] = u64::MAX;
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(
        [m.cpu.x[5], m.cpu.x[6], m.cpu.x[7]],
        [i64::MIN as u64, 0, 0]
    );
}

#[test]
fn user_counters_are_readable_and_other_csrs_are_not() {
    let rdinstret = i(0xc02, 0, 2, A0, 0x73);
    let rdcycle = i(0xc00, 0, 2, A1, 0x73);
    let rdtime = i(0xc01, 0, 2, A2, 0x73);
    let mut m = Machine::new(
        Asm::default()
            .h(C_NOP)
            .h(C_NOP)
            .w(rdinstret)
            .w(rdcycle)
            .w(rdtime)
            .w(ECALL),
    );
    m.cpu.set_instret(1000);
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(
        [
            m.cpu.x[A0 as usize],
            m.cpu.x[A1 as usize],
            m.cpu.x[A2 as usize]
        ],
        [1002, 1003, 10]
    );

    for raw in [
        i(0x300, 0, 2, A0, 0x73),
        i(0xc02, A0, 1, 0, 0x73),
        0x1050_0073,
        0x3020_0073,
    ] {
        let mut m = Machine::new(Asm::default().w(raw));
        assert_eq!(m.run(), Stop::Illegal { raw }, "{raw:#x}");
        assert_eq!(m.cpu.pc, CODE);
    }
}

#[test]
fn odd_pc_set_from_outside_is_a_misaligned_fetch() {
    let mut m = Machine::new(counting_loop());
    m.cpu.pc = CODE + 1;
    assert_eq!(
        m.run(),
        Stop::Misaligned {
            access: Access::Fetch,
            addr: CODE + 1
        }
    );
    assert_eq!(m.cpu.pc, CODE + 1);
    assert_eq!(m.cpu.instret(), 0);
}

#[test]
fn page_table_change_needs_and_gets_a_tlb_flush() {
    let mut m = Machine::new(Asm::default().w(ld(A0, A1, 0)).w(ECALL));
    m.cpu.x[A1 as usize] = DATA;
    m.poke(DATA, &7u64.to_le_bytes());
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(m.cpu.x[A0 as usize], 7);
    // Remap DATA to a fresh frame holding 9.
    crate::sv39::unmap_page(&mut m.mem, m.root, DATA);
    let frame = m.map(DATA, RW); // map() flushes the TLB
    assert!(m.mem.write_u64(frame, 9));
    m.cpu.pc = CODE;
    assert_eq!(m.run(), Stop::Ecall);
    assert_eq!(
        m.cpu.x[A0 as usize], 9,
        "the flushed TLB sees the new mapping"
    );
    // Unmapped without telling the CPU is the kernel's bug; after the flush it faults.
    crate::sv39::unmap_page(&mut m.mem, m.root, DATA);
    m.cpu.flush_tlb();
    m.cpu.pc = CODE;
    assert_eq!(
        m.run(),
        Stop::PageFault {
            access: Access::Load,
            addr: DATA
        }
    );
}

#[test]
fn a_cpu_moved_to_another_memory_does_not_reuse_decoded_code() {
    let mut first = Machine::new(Asm::default().w(addi(A0, A0, 1)).w(ECALL));
    assert_eq!(first.run(), Stop::Ecall);
    // Same layout, same frames, different bytes at CODE.
    let mut second = Machine::new(Asm::default().w(addi(A0, A0, 2)).w(ECALL));
    first.cpu.set_page_table(second.root);
    first.cpu.pc = CODE;
    first.cpu.x[A0 as usize] = 0;
    assert_eq!(first.cpu.run(&mut second.mem, 10), Stop::Ecall);
    assert_eq!(first.cpu.x[A0 as usize], 2);
}

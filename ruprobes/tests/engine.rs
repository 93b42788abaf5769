//! The engine through its public API, against an in-memory user space.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use ruprobes::{
    abi, Consumer, ConsumerId, Error, ProbeStatus, Trap, TrapContext, Unsupported, Uprobes,
    UserRegs, MAX_RETURN_DEPTH, SLOT_SIZE,
};

const PATH: &str = "/bin/app";

// Instruction encoders (RISC-V base formats).
fn i_type(op: u32, f3: u32, rd: u32, rs1: u32, imm: i32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
}
fn s_type(op: u32, f3: u32, rs1: u32, rs2: u32, imm: i32) -> u32 {
    let imm = imm as u32;
    (((imm >> 5) & 0x7f) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | ((imm & 0x1f) << 7) | op
}
fn b_type(f3: u32, rs1: u32, rs2: u32, imm: i32) -> u32 {
    let imm = imm as u32;
    (((imm >> 12) & 1) << 31)
        | (((imm >> 5) & 0x3f) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (f3 << 12)
        | (((imm >> 1) & 0xf) << 8)
        | (((imm >> 11) & 1) << 7)
        | 0x63
}
fn j_type(rd: u32, imm: i32) -> u32 {
    let imm = imm as u32;
    (((imm >> 20) & 1) << 31)
        | (((imm >> 1) & 0x3ff) << 21)
        | (((imm >> 11) & 1) << 20)
        | (((imm >> 12) & 0xff) << 12)
        | (rd << 7)
        | 0x6f
}

const SP: u32 = 2;
const RA: u32 = 1;
const A0: u32 = 10;
const A1: u32 = 11;

// The test program: (offset, word, length).
const ADDI_SP: usize = 0x00; // addi sp, sp, -16        emulate
const SD_RA: usize = 0x04; //   sd ra, 8(sp)            out of line
const C_LI: usize = 0x08; //    c.li a0, 5              emulate (16-bit)
const BEQ: usize = 0x0a; //     beq a0, a1, +8          simulate
const JAL: usize = 0x0e; //     jal ra, +0x20           simulate
const ECALL: usize = 0x12; //   ecall                   reject
const C_EBREAK_AT: usize = 0x16; // c.ebreak            reject / the program's own breakpoint
const LR_W: usize = 0x18; //    lr.w a0, (a1)           reject
const CSRR: usize = 0x1c; //    csrr a0, cycle          reject
const JALR: usize = 0x20; //    jalr a0, 4(a0)          simulate, rd == rs1
const C_JR: usize = 0x24; //    c.jr ra                 simulate (16-bit)
const ZERO: usize = 0x26; //    0x0000                  illegal
const FENCE_I: usize = 0x28; // fence.i                 reject
const C_NOP: usize = 0x2c; //   c.nop                   emulate
const LD_A0: usize = 0x2e; //   ld a0, 0(a1)            out of line
const TEXT_LEN: usize = 0x32;

fn program() -> Vec<u8> {
    assemble(&[
        (i_type(0x13, 0, SP, SP, -16), 4),
        (s_type(0x23, 3, SP, RA, 8), 4),
        (0x4515, 2),
        (b_type(0, A0, A1, 8), 4),
        (j_type(RA, 0x20), 4),
        (0x0000_0073, 4),
        (0x9002, 2),
        (0x1005_a52f, 4),
        (0xc000_2573, 4),
        (i_type(0x67, 0, A0, A0, 4), 4),
        (0x8082, 2),
        (0x0000, 2),
        (0x0000_100f, 4),
        (0x0001, 2),
        (i_type(0x03, 3, A0, A1, 0), 4),
    ])
}

/// Registers a consumer without handlers at `off`, armed in `space`.
fn arm(engine: &Uprobes, space: &mut FakeSpace, off: usize) -> ConsumerId {
    engine
        .register(PATH, at(off), Consumer::new(), Some(space))
        .unwrap()
}

/// Takes a breakpoint trap that must be ruprobes'.
fn handled(engine: &Uprobes, space: &mut FakeSpace, regs: &mut TrapContext) {
    assert_eq!(
        engine.handle_breakpoint(space, regs),
        Trap::Handled,
        "trap at {:#x}",
        regs.pc()
    );
}

/// An engine with process 1 running PATH.
fn setup() -> (Uprobes, FakeSpace) {
    let engine = Uprobes::new();
    let mut space = FakeSpace::with_text(1, &program());
    engine.on_exec(&mut space, PATH).unwrap();
    (engine, space)
}

fn at(off: usize) -> usize {
    TEXT + off
}

fn recording(log: &Log, name: &'static str) -> Consumer {
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    Consumer::new()
        .on_entry(move |r, h| {
            l1.lock()
                .unwrap()
                .push(format!("{name} entry {:#x} pc={:#x}", h.addr, r.pc()))
        })
        .on_post(move |r, h| {
            l2.lock()
                .unwrap()
                .push(format!("{name} post {:#x} pc={:#x}", h.addr, r.pc()))
        })
        .on_return(move |r, ret| {
            l3.lock().unwrap().push(format!(
                "{name} ret {:#x} a0={} to={:#x}",
                ret.func,
                r.reg(abi::A0),
                ret.ret_addr
            ))
        })
}

fn entry_only(log: &Log, name: &'static str) -> Consumer {
    let l = log.clone();
    Consumer::new().on_entry(move |_, h| l.lock().unwrap().push(format!("{name} {:#x}", h.addr)))
}

#[test]
fn register_arms_and_unregister_restores_bytes() {
    let (engine, mut space) = setup();
    let original = space.text(TEXT_LEN);
    let id = arm(&engine, &mut space, ADDI_SP);
    assert_eq!(
        space.peek(at(ADDI_SP), 4),
        0x0010_0073u32.to_le_bytes(),
        "32-bit ebreak written"
    );
    let id2 = arm(&engine, &mut space, C_LI);
    assert_eq!(
        space.peek(at(C_LI), 2),
        0x9002u16.to_le_bytes(),
        "c.ebreak over a 16-bit instruction"
    );
    assert_eq!(
        space.peek(at(C_LI) + 2, 4),
        original[BEQ..BEQ + 4],
        "next instruction untouched"
    );
    engine.unregister(id, Some(&mut space)).unwrap();
    engine.unregister(id2, Some(&mut space)).unwrap();
    assert_eq!(space.text(TEXT_LEN), original);
    assert_eq!(engine.stats(PATH, at(ADDI_SP)), None);
}

#[test]
fn rejected_instructions_leave_memory_identical() {
    let cases = [
        (ECALL, Unsupported::System),
        (C_EBREAK_AT, Unsupported::System),
        (LR_W, Unsupported::LoadReserved),
        (CSRR, Unsupported::Csr),
        (ZERO, Unsupported::Illegal),
        (FENCE_I, Unsupported::FenceI),
    ];
    for (off, why) in cases {
        let (engine, mut space) = setup();
        let before = space.clone();
        let err = engine.register(
            PATH,
            at(off),
            Consumer::new().on_return(|_, _| {}),
            Some(&mut space),
        );
        assert_eq!(
            err,
            Err(Error::Unsupported { addr: at(off), why }),
            "offset {off:#x}"
        );
        assert_eq!(space.text(TEXT_LEN), before.text(TEXT_LEN));
        assert_eq!(space.peek(XOL_BASE, 8), vec![0; 8], "no XOL page written");
        assert_eq!(engine.stats(PATH, at(off)), None, "nothing registered");
    }
}

#[test]
fn bad_addresses_are_refused() {
    let (engine, mut space) = setup();
    let before = space.text(TEXT_LEN);
    assert_eq!(
        engine.register(PATH, at(1), Consumer::new(), Some(&mut space)),
        Err(Error::Misaligned(at(1)))
    );
    assert_eq!(
        engine.register(PATH, DATA, Consumer::new(), Some(&mut space)),
        Err(Error::NotExecutable(DATA))
    );
    assert_eq!(
        engine.register(PATH, 0x9000_0000, Consumer::new(), Some(&mut space)),
        Err(Error::NotExecutable(0x9000_0000))
    );
    arm(&engine, &mut space, ADDI_SP);
    assert_eq!(
        engine.register(PATH, at(ADDI_SP + 2), Consumer::new(), Some(&mut space)),
        Err(Error::Conflict(at(ADDI_SP + 2))),
        "second half of an armed 32-bit instruction"
    );
    space.fail_read_at = Some(at(SD_RA) + 2);
    assert!(matches!(
        engine.register(PATH, at(SD_RA), Consumer::new(), Some(&mut space)),
        Err(Error::ReadFault(_))
    ));
    assert_eq!(space.text(TEXT_LEN)[4..], before[4..]);
}

#[test]
fn emulated_hit_runs_entry_then_post_and_advances() {
    let (engine, mut space) = setup();
    let log = new_log();
    engine
        .register(PATH, at(ADDI_SP), recording(&log, "a"), Some(&mut space))
        .unwrap();
    let mut regs = regs_at(at(ADDI_SP), 0x8000);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(regs.reg(abi::SP), 0x8000 - 16);
    assert_eq!(regs.pc(), at(ADDI_SP + 4));
    assert_eq!(
        lines(&log),
        [
            format!("a entry {:#x} pc={:#x}", at(0), at(0)),
            format!("a post {:#x} pc={:#x}", at(0), at(4))
        ]
    );
    assert_eq!(engine.stats(PATH, at(ADDI_SP)).unwrap().hits, 1);
}

#[test]
fn compressed_emulated_hit() {
    let (engine, mut space) = setup();
    arm(&engine, &mut space, C_LI);
    let mut regs = regs_at(at(C_LI), 0x8000);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(regs.reg(abi::A0), 5);
    assert_eq!(regs.pc(), at(C_LI + 2));
    let mut regs = regs_at(at(C_NOP), 0x8000);
    arm(&engine, &mut space, C_NOP);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(regs.pc(), at(C_NOP + 2));
}

#[test]
fn simulated_branch_both_directions() {
    let (engine, mut space) = setup();
    arm(&engine, &mut space, BEQ);
    let mut taken = regs_at(at(BEQ), 0x8000);
    taken.set_reg(abi::A0, 7);
    taken.set_reg(11, 7);
    handled(&engine, &mut space, &mut taken);
    assert_eq!(taken.pc(), at(BEQ + 8));
    let mut not_taken = regs_at(at(BEQ), 0x8000);
    not_taken.set_reg(abi::A0, 7);
    handled(&engine, &mut space, &mut not_taken);
    assert_eq!(not_taken.pc(), at(BEQ + 4));
}

#[test]
fn simulated_jumps_link_and_jump() {
    let (engine, mut space) = setup();
    for off in [JAL, JALR, C_JR] {
        engine
            .register(PATH, at(off), Consumer::new(), Some(&mut space))
            .unwrap();
    }
    let mut regs = regs_at(at(JAL), 0x8000);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(
        (regs.pc(), regs.reg(abi::RA)),
        (at(JAL + 0x20), at(JAL + 4))
    );

    let mut regs = regs_at(at(JALR), 0x8000);
    regs.set_reg(abi::A0, 0x5001); // target 0x5005 & !1: rs1 read before rd is written
    handled(&engine, &mut space, &mut regs);
    assert_eq!((regs.pc(), regs.reg(abi::A0)), (0x5004, at(JALR + 4)));

    let mut regs = regs_at(at(C_JR), 0x8000);
    regs.set_reg(abi::RA, 0x7000);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(regs.pc(), 0x7000);
}

#[test]
fn out_of_line_step_takes_two_traps() {
    let (engine, mut space) = setup();
    let log = new_log();
    engine
        .register(PATH, at(SD_RA), recording(&log, "s"), Some(&mut space))
        .unwrap();
    let mut regs = regs_at(at(SD_RA), 0x8000);
    handled(&engine, &mut space, &mut regs);
    let slot = regs.pc();
    assert!(
        slot > XOL_BASE && slot < XOL_BASE + PAGE && slot % SLOT_SIZE == 0,
        "pc in a slot: {slot:#x}"
    );
    let mut expected = program()[SD_RA..SD_RA + 4].to_vec();
    expected.extend(0x0010_0073u32.to_le_bytes());
    assert_eq!(space.peek(slot, 8), expected, "slot = instruction + ebreak");
    assert_eq!(
        space.peek(XOL_BASE, 4),
        0x0010_0073u32.to_le_bytes(),
        "trampoline"
    );
    // The kernel returns to user mode; the CPU executes the slot and traps on its ebreak.
    regs.set_pc(slot + 4);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(regs.pc(), at(SD_RA + 4));
    assert_eq!(lines(&log).len(), 2);
    assert!(lines(&log)[1].starts_with("s post"));
    // A second arrival at the slot's breakpoint without a step in progress is not ours.
    regs.set_pc(slot + 4);
    assert_eq!(
        engine.handle_breakpoint(&mut space, &mut regs),
        Trap::NotOurs
    );
}

#[test]
fn fault_inside_a_slot_is_reported_at_the_probe() {
    let (engine, mut space) = setup();
    engine
        .register(PATH, at(LD_A0), Consumer::new(), Some(&mut space))
        .unwrap();
    let mut regs = regs_at(at(LD_A0), 0x8000);
    handled(&engine, &mut space, &mut regs);
    assert!(engine.fixup_fault(&mut space, &mut regs));
    assert_eq!(regs.pc(), at(LD_A0));
    let mut elsewhere = regs_at(at(BEQ), 0x8000);
    assert!(!engine.fixup_fault(&mut space, &mut elsewhere));
    assert_eq!(elsewhere.pc(), at(BEQ));
}

#[test]
fn handler_chain_and_double_register() {
    let (engine, mut space) = setup();
    let original = space.text(TEXT_LEN);
    let log = new_log();
    let a = engine
        .register(
            PATH,
            at(ADDI_SP),
            entry_only(&log, "first"),
            Some(&mut space),
        )
        .unwrap();
    let b = engine
        .register(
            PATH,
            at(ADDI_SP),
            entry_only(&log, "second"),
            Some(&mut space),
        )
        .unwrap();
    let mut regs = regs_at(at(ADDI_SP), 0x8000);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(
        lines(&log),
        [
            format!("first {:#x}", at(0)),
            format!("second {:#x}", at(0))
        ]
    );
    engine.unregister(a, Some(&mut space)).unwrap();
    assert_eq!(
        space.peek(at(ADDI_SP), 4),
        0x0010_0073u32.to_le_bytes(),
        "still armed for the second"
    );
    engine.unregister(b, Some(&mut space)).unwrap();
    assert_eq!(space.text(TEXT_LEN), original);
    assert_eq!(
        engine.unregister(b, Some(&mut space)),
        Err(Error::NotRegistered)
    );
}

#[test]
fn same_consumer_twice_is_refused() {
    let (engine, mut space) = setup();
    let consumer = Consumer::new().on_entry(|_, _| {});
    engine
        .register(PATH, at(ADDI_SP), consumer.clone(), Some(&mut space))
        .unwrap();
    assert_eq!(
        engine.register(PATH, at(ADDI_SP), consumer, Some(&mut space)),
        Err(Error::AlreadyRegistered)
    );
}

#[test]
fn write_failure_mid_arm_rolls_back() {
    for writes in 0..3 {
        let (engine, mut space) = setup();
        let before = space.text(TEXT_LEN);
        // Out of line with a return handler: trampoline, slot, breakpoint = 3 writes.
        space.writes_left = Some(writes);
        let r = engine.register(
            PATH,
            at(SD_RA),
            Consumer::new().on_return(|_, _| {}),
            Some(&mut space),
        );
        assert!(
            matches!(r, Err(Error::WriteFault(_))),
            "{writes} writes allowed: {r:?}"
        );
        assert_eq!(space.text(TEXT_LEN), before);
        space.writes_left = None;
        // Nothing half-registered: a clean registration works and traps correctly.
        arm(&engine, &mut space, SD_RA);
        let mut regs = regs_at(at(SD_RA), 0x8000);
        handled(&engine, &mut space, &mut regs);
    }
}

#[test]
fn xol_map_failure_is_clean() {
    let (engine, mut space) = setup();
    space.fail_map = true;
    let before = space.text(TEXT_LEN);
    assert_eq!(
        engine.register(PATH, at(SD_RA), Consumer::new(), Some(&mut space)),
        Err(Error::XolMapFailed)
    );
    assert_eq!(
        engine.register(
            PATH,
            at(ADDI_SP),
            Consumer::new().on_return(|_, _| {}),
            Some(&mut space)
        ),
        Err(Error::XolMapFailed)
    );
    assert_eq!(space.text(TEXT_LEN), before);
}

#[test]
fn foreign_breakpoints_are_not_ours() {
    let (engine, mut space) = setup();
    arm(&engine, &mut space, ADDI_SP);
    let mut regs = regs_at(at(C_EBREAK_AT), 0x8000);
    let before = regs;
    assert_eq!(
        engine.handle_breakpoint(&mut space, &mut regs),
        Trap::NotOurs
    );
    assert_eq!(regs, before, "registers untouched");
    let mut unmapped = regs_at(0xdead_0000, 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut space, &mut unmapped),
        Trap::NotOurs
    );
    let mut other = FakeSpace::with_text(9, &program());
    let mut regs = regs_at(at(ADDI_SP), 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut other, &mut regs),
        Trap::NotOurs,
        "unknown process"
    );
}

#[test]
fn entry_handler_changing_pc_skips_the_instruction() {
    let (engine, mut space) = setup();
    let log = new_log();
    let l = log.clone();
    let consumer = Consumer::new()
        .on_entry(|regs, _| {
            regs.set_reg(abi::A0, 99);
            regs.set_pc(0x4444);
        })
        .on_post(move |_, _| l.lock().unwrap().push("post".into()))
        .on_return(|_, _| {});
    engine
        .register(PATH, at(ADDI_SP), consumer, Some(&mut space))
        .unwrap();
    let mut regs = regs_at(at(ADDI_SP), 0x8000);
    regs.set_reg(abi::RA, 0x5000);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(
        (regs.pc(), regs.reg(abi::A0), regs.reg(abi::SP)),
        (0x4444, 99, 0x8000)
    );
    assert_eq!(
        regs.reg(abi::RA),
        0x5000,
        "no return hijack for a skipped call"
    );
    assert!(
        lines(&log).is_empty(),
        "no post handler for a skipped instruction"
    );
}

/// Enters the probed function at `sp` with return address `ra`; returns the registers.
fn enter(
    engine: &Uprobes,
    space: &mut FakeSpace,
    func: usize,
    sp: usize,
    ra: usize,
) -> TrapContext {
    let mut regs = regs_at(func, sp);
    regs.set_reg(abi::RA, ra);
    assert_eq!(engine.handle_breakpoint(space, &mut regs), Trap::Handled);
    regs
}

/// Returns from a hijacked call: jump to `ra` with `sp` restored and a0 = `value`.
fn leave(
    engine: &Uprobes,
    space: &mut FakeSpace,
    ra: usize,
    sp: usize,
    value: usize,
) -> (Trap, TrapContext) {
    let mut regs = regs_at(ra, sp);
    regs.set_reg(abi::A0, value);
    let trap = engine.handle_breakpoint(space, &mut regs);
    (trap, regs)
}

#[test]
fn uretprobe_reports_return_value_and_resumes_caller() {
    let (engine, mut space) = setup();
    let log = new_log();
    engine
        .register(PATH, at(ADDI_SP), recording(&log, "f"), Some(&mut space))
        .unwrap();
    let tramp = engine.trampoline(1).unwrap();
    let regs = enter(&engine, &mut space, at(ADDI_SP), 0x8000, 0x5000);
    assert_eq!(regs.reg(abi::RA), tramp);
    let (trap, regs) = leave(&engine, &mut space, tramp, 0x8000, 42);
    assert_eq!(trap, Trap::Handled);
    assert_eq!(regs.pc(), 0x5000);
    assert_eq!(
        lines(&log).last().unwrap(),
        &format!("f ret {:#x} a0=42 to=0x5000", at(0))
    );
    assert_eq!(engine.stats(PATH, at(ADDI_SP)).unwrap().returns, 1);
}

#[test]
fn uretprobe_recursion_beyond_depth_limit_counts_missed() {
    let (engine, mut space) = setup();
    let returns = Arc::new(Mutex::new(Vec::new()));
    let r = returns.clone();
    let c = Consumer::new()
        .on_return(move |regs, ret| r.lock().unwrap().push((regs.reg(abi::A0), ret.ret_addr)));
    engine
        .register(PATH, at(ADDI_SP), c, Some(&mut space))
        .unwrap();
    let tramp = engine.trampoline(1).unwrap();
    let depth = MAX_RETURN_DEPTH + 6;
    // Call i enters with sp = top - 32 i and a real return address 0x6000 + 4 i, except the
    // nested ones whose ra is the trampoline only if their caller was hijacked — here each
    // caller is the function itself after its prologue, so ra is a fresh address.
    let mut ras = Vec::new();
    for i in 0..depth {
        let regs = enter(
            &engine,
            &mut space,
            at(ADDI_SP),
            0x8000 - 32 * i,
            0x6000 + 4 * i,
        );
        ras.push(regs.reg(abi::RA));
    }
    let stats = engine.stats(PATH, at(ADDI_SP)).unwrap();
    assert_eq!(stats.hits, depth as u64);
    assert_eq!(stats.missed, 6);
    assert!(ras[..MAX_RETURN_DEPTH].iter().all(|&ra| ra == tramp));
    assert!(
        ras[MAX_RETURN_DEPTH..].iter().all(|&ra| ra != tramp),
        "deep calls not hijacked"
    );
    // Unwind: the 64 outer calls return through the trampoline, innermost first.
    for i in (0..MAX_RETURN_DEPTH).rev() {
        let (trap, regs) = leave(&engine, &mut space, tramp, 0x8000 - 32 * i, i);
        assert_eq!(trap, Trap::Handled);
        assert_eq!(regs.pc(), 0x6000 + 4 * i);
    }
    let got = returns.lock().unwrap().clone();
    let want: Vec<_> = (0..MAX_RETURN_DEPTH)
        .rev()
        .map(|i| (i, 0x6000 + 4 * i))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        engine.stats(PATH, at(ADDI_SP)).unwrap().returns,
        MAX_RETURN_DEPTH as u64
    );
    let (trap, _) = leave(&engine, &mut space, tramp, 0x8000, 0);
    assert_eq!(trap, Trap::NotOurs, "no pending return left");
}

#[test]
fn longjmp_drops_frames_that_are_gone() {
    let (engine, mut space) = setup();
    let log = new_log();
    engine
        .register(PATH, at(ADDI_SP), recording(&log, "f"), Some(&mut space))
        .unwrap();
    let tramp = engine.trampoline(1).unwrap();
    for i in 0..5 {
        enter(
            &engine,
            &mut space,
            at(ADDI_SP),
            0x8000 - 64 * i,
            0x6000 + 4 * i,
        );
    }
    // longjmp from the innermost frame back into call 1's frame, which then returns.
    let (trap, regs) = leave(&engine, &mut space, tramp, 0x8000 - 64, 7);
    assert_eq!(trap, Trap::Handled);
    assert_eq!(regs.pc(), 0x6004);
    let rets: Vec<_> = lines(&log)
        .into_iter()
        .filter(|l| l.contains(" ret "))
        .collect();
    assert_eq!(
        rets,
        [format!("f ret {:#x} a0=7 to=0x6004", at(0))],
        "only call 1 returned"
    );
    let (trap, regs) = leave(&engine, &mut space, tramp, 0x8000, 8);
    assert_eq!((trap, regs.pc()), (Trap::Handled, 0x6000));
}

#[test]
fn tail_calls_chain_return_instances() {
    let (engine, mut space) = setup();
    let log = new_log();
    engine
        .register(PATH, at(ADDI_SP), recording(&log, "a"), Some(&mut space))
        .unwrap();
    engine
        .register(PATH, at(C_LI), recording(&log, "b"), Some(&mut space))
        .unwrap();
    let tramp = engine.trampoline(1).unwrap();
    let a = enter(&engine, &mut space, at(ADDI_SP), 0x8000, 0x5000);
    // a tail-calls b: same sp, ra still the trampoline.
    let b = enter(&engine, &mut space, at(C_LI), 0x8000, a.reg(abi::RA));
    assert_eq!(b.reg(abi::RA), tramp);
    let (trap, regs) = leave(&engine, &mut space, tramp, 0x8000, 3);
    assert_eq!((trap, regs.pc()), (Trap::Handled, 0x5000));
    let rets: Vec<_> = lines(&log)
        .into_iter()
        .filter(|l| l.contains(" ret "))
        .collect();
    assert_eq!(
        rets,
        [
            format!("b ret {:#x} a0=3 to=0x5000", at(C_LI)),
            format!("a ret {:#x} a0=3 to=0x5000", at(ADDI_SP))
        ]
    );
}

#[test]
fn forged_trampoline_jump_is_not_ours() {
    let (engine, mut space) = setup();
    engine
        .register(
            PATH,
            at(ADDI_SP),
            Consumer::new().on_return(|_, _| {}),
            Some(&mut space),
        )
        .unwrap();
    let tramp = engine.trampoline(1).unwrap();
    let (trap, _) = leave(&engine, &mut space, tramp, 0x8000, 0);
    assert_eq!(trap, Trap::NotOurs);
}

#[test]
fn exec_arms_probes_registered_earlier() {
    let engine = Uprobes::new();
    let id = engine
        .register(PATH, at(SD_RA), Consumer::new(), None)
        .unwrap();
    engine
        .register("/bin/other", at(ADDI_SP), Consumer::new(), None)
        .unwrap();
    let mut space = FakeSpace::with_text(1, &program());
    engine.on_exec(&mut space, PATH).unwrap();
    assert_eq!(space.peek(at(SD_RA), 4), 0x0010_0073u32.to_le_bytes());
    assert_eq!(
        space.peek(at(ADDI_SP), 4),
        program()[..4],
        "other path not armed"
    );
    // A second exec of a fresh image arms again; the recorded original is the real one.
    let mut again = FakeSpace::with_text(1, &program());
    engine.on_exec(&mut again, PATH).unwrap();
    engine.unregister(id, Some(&mut again)).unwrap();
    assert_eq!(again.text(TEXT_LEN), program());
}

#[test]
fn exec_reports_a_probe_it_cannot_arm_and_arms_the_rest() {
    let engine = Uprobes::new();
    engine
        .register(PATH, at(ECALL), Consumer::new(), None)
        .unwrap();
    engine
        .register(PATH, at(ADDI_SP), Consumer::new(), None)
        .unwrap();
    let mut space = FakeSpace::with_text(1, &program());
    let r = engine.on_exec(&mut space, PATH);
    assert_eq!(
        r,
        Err(Error::Unsupported {
            addr: at(ECALL),
            why: Unsupported::System
        })
    );
    assert_eq!(space.peek(at(ECALL), 4), program()[ECALL..ECALL + 4]);
    assert_eq!(space.peek(at(ADDI_SP), 4), 0x0010_0073u32.to_le_bytes());
}

#[test]
fn fork_gives_the_child_its_own_state_and_exit_drops_it() {
    let (engine, mut parent) = setup();
    let log = new_log();
    engine
        .register(PATH, at(ADDI_SP), recording(&log, "f"), Some(&mut parent))
        .unwrap();
    let tramp = engine.trampoline(1).unwrap();
    enter(&engine, &mut parent, at(ADDI_SP), 0x8000, 0x5000);
    // fork inside the probed function: the child is a copy, with the pending return.
    let mut child = parent.clone();
    child.pid = 2;
    child.tid = 2;
    engine.on_fork(1, 1, 2, 2);
    let (trap, regs) = leave(&engine, &mut child, tramp, 0x8000, 1);
    assert_eq!((trap, regs.pc()), (Trap::Handled, 0x5000));
    let (trap, regs) = leave(&engine, &mut parent, tramp, 0x8000, 2);
    assert_eq!(
        (trap, regs.pc()),
        (Trap::Handled, 0x5000),
        "the parent's instance is its own"
    );
    engine.on_exit(2);
    let mut regs = regs_at(at(ADDI_SP), 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut child, &mut regs),
        Trap::NotOurs,
        "exited"
    );
    let mut regs = regs_at(at(ADDI_SP), 0x8000);
    handled(&engine, &mut parent, &mut regs);
}

#[test]
fn thread_exit_drops_the_threads_returns_and_step_and_the_slot_is_reused() {
    let (engine, mut space) = setup();
    engine
        .register(
            PATH,
            at(ADDI_SP),
            Consumer::new().on_return(|_, _| {}),
            Some(&mut space),
        )
        .unwrap();
    let ld = engine
        .register(PATH, at(LD_A0), Consumer::new(), Some(&mut space))
        .unwrap();
    assert_eq!(engine.threads_tracked(1), 0, "no thread has trapped yet");
    // Thread 1 is inside the probed function (a pending return) when it exits.
    enter(&engine, &mut space, at(ADDI_SP), 0x8000, 0x5000);
    // Thread 7 is killed while it steps the load in its slot (pc in the slot).
    space.tid = 7;
    let mut regs = regs_at(at(LD_A0), 0x7000);
    handled(&engine, &mut space, &mut regs);
    let slot = regs.pc();
    assert_eq!(engine.threads_tracked(1), 2);
    engine.on_thread_exit(1, 1);
    engine.on_thread_exit(1, 7);
    assert_eq!(
        engine.threads_tracked(1),
        0,
        "nothing left of the exited threads"
    );
    // Its step is gone: the slot's breakpoint is no longer a step of thread 7.
    regs.set_pc(slot + 4);
    assert_eq!(
        engine.handle_breakpoint(&mut space, &mut regs),
        Trap::NotOurs
    );
    // The slot is free again once the probe goes, and the next arming takes it.
    engine.unregister(ld, Some(&mut space)).unwrap();
    engine
        .register(PATH, at(LD_A0), Consumer::new(), Some(&mut space))
        .unwrap();
    let mut regs = regs_at(at(LD_A0), 0x7000);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(regs.pc(), slot, "the same slot, stepped again");
    // Unknown processes track nothing; an exit of an unknown thread is harmless.
    engine.on_thread_exit(1, 99);
    engine.on_thread_exit(42, 1);
    assert_eq!(engine.threads_tracked(42), 0);
    engine.on_exit(1);
    assert_eq!(engine.threads_tracked(1), 0);
}

#[test]
fn process_armed_elsewhere_restores_at_its_next_hit() {
    let (engine, mut parent) = setup();
    let id = engine
        .register(PATH, at(ADDI_SP), Consumer::new(), Some(&mut parent))
        .unwrap();
    let mut child = parent.clone();
    child.pid = 2;
    engine.on_fork(1, 1, 2, 2);
    engine.unregister(id, Some(&mut child)).unwrap();
    assert_eq!(child.text(TEXT_LEN), program());
    // The parent still has the breakpoint; its next hit restores and re-runs the original.
    let mut regs = regs_at(at(ADDI_SP), 0x8000);
    handled(&engine, &mut parent, &mut regs);
    assert_eq!(
        regs.pc(),
        at(ADDI_SP),
        "re-execute the original instruction"
    );
    assert_eq!(parent.text(TEXT_LEN), program());
    // Or eagerly: sync restores too (already done here, so it is a no-op).
    engine.sync(&mut parent).unwrap();
    assert_eq!(parent.text(TEXT_LEN), program());
}

#[test]
fn handlers_may_register_and_unregister() {
    let engine = Arc::new(Uprobes::new());
    let mut space = FakeSpace::with_text(1, &program());
    engine.on_exec(&mut space, PATH).unwrap();
    let e = engine.clone();
    let consumer = Consumer::new().on_entry(move |_, _| {
        let id = e.register(PATH, at(BEQ), Consumer::new(), None).unwrap();
        e.unregister(id, None).unwrap();
    });
    engine
        .register(PATH, at(ADDI_SP), consumer, Some(&mut space))
        .unwrap();
    let mut regs = regs_at(at(ADDI_SP), 0x8000);
    handled(&engine, &mut space, &mut regs);
}

#[test]
fn many_out_of_line_probes_take_more_pages() {
    // 600 `ld` instructions: more than one page of slots.
    let ld = i_type(0x03, 3, A0, A1, 0);
    let code = assemble(&vec![(ld, 4); 600]);
    let engine = Uprobes::new();
    let mut space = FakeSpace::with_text(1, &code);
    engine.on_exec(&mut space, PATH).unwrap();
    let mut slots = std::collections::BTreeSet::new();
    for i in 0..600 {
        engine
            .register(PATH, TEXT + 4 * i, Consumer::new(), Some(&mut space))
            .unwrap();
        let mut regs = regs_at(TEXT + 4 * i, 0x8000);
        handled(&engine, &mut space, &mut regs);
        assert!(slots.insert(regs.pc()), "each probe has its own slot");
        regs.set_pc(regs.pc() + 4);
        handled(&engine, &mut space, &mut regs);
        assert_eq!(regs.pc(), TEXT + 4 * i + 4);
    }
    assert!(
        slots.iter().any(|&s| s >= XOL_BASE + PAGE),
        "a second page was mapped"
    );
}

#[test]
fn second_return_from_setjmp_is_not_taken_for_an_outer_return() {
    // `outer` (probed) calls `setjmp` (probed); setjmp saved ra = the trampoline, returns
    // normally, and later a longjmp makes it "return" again through the saved trampoline.
    let (engine, mut space) = setup();
    let log = new_log();
    engine
        .register(
            PATH,
            at(ADDI_SP),
            recording(&log, "outer"),
            Some(&mut space),
        )
        .unwrap();
    engine
        .register(PATH, at(C_LI), recording(&log, "setjmp"), Some(&mut space))
        .unwrap();
    let tramp = engine.trampoline(1).unwrap();
    enter(&engine, &mut space, at(ADDI_SP), 0x8000, 0x5000);
    enter(&engine, &mut space, at(C_LI), 0x7f00, 0x6000);
    let (trap, regs) = leave(&engine, &mut space, tramp, 0x7f00, 0);
    assert_eq!((trap, regs.pc()), (Trap::Handled, 0x6000));
    // The second return: same frame, but its record is gone. Never resume at 0x5000.
    let (trap, regs) = leave(&engine, &mut space, tramp, 0x7f00, 1);
    assert_eq!(trap, Trap::NotOurs);
    assert_eq!(regs.pc(), tramp);
    // The outer call still returns correctly.
    let (trap, regs) = leave(&engine, &mut space, tramp, 0x8000, 2);
    assert_eq!((trap, regs.pc()), (Trap::Handled, 0x5000));
}

#[test]
fn unregister_whose_restore_fails_changes_nothing() {
    let (engine, mut space) = setup();
    let id = arm(&engine, &mut space, SD_RA);
    let armed = space.text(TEXT_LEN);
    space.writes_left = Some(0);
    assert!(matches!(
        engine.unregister(id, Some(&mut space)),
        Err(Error::WriteFault(_))
    ));
    assert_eq!(space.text(TEXT_LEN), armed, "still armed");
    assert!(engine.stats(PATH, at(SD_RA)).is_some(), "still registered");
    let mut regs = regs_at(at(SD_RA), 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut space, &mut regs),
        Trap::Handled,
        "still works"
    );
    space.writes_left = None;
    engine.unregister(id, Some(&mut space)).unwrap();
    assert_eq!(space.text(TEXT_LEN), program());
}

/// What the image of PATH holds: the test program at TEXT. Faults elsewhere.
fn read_program_image(path: &str, addr: usize, buf: &mut [u8]) -> Result<(), ruprobes::Fault> {
    let image = program();
    let off = addr.wrapping_sub(TEXT);
    match image.get(off..off.wrapping_add(buf.len())) {
        Some(bytes) if path == PATH => {
            buf.copy_from_slice(bytes);
            Ok(())
        }
        _ => Err(ruprobes::Fault { addr }),
    }
}

#[test]
fn status_reports_pending_armed_and_the_typed_arm_error() {
    let engine = Uprobes::new();
    let ecall = engine
        .register(PATH, at(ECALL), Consumer::new(), None)
        .unwrap();
    let addi = engine
        .register(PATH, at(ADDI_SP), Consumer::new(), None)
        .unwrap();
    assert_eq!(engine.status(ecall), Ok(ProbeStatus::Pending));
    let mut space = FakeSpace::with_text(1, &program());
    assert!(engine.on_exec(&mut space, PATH).is_err());
    let refused = ProbeStatus::Failed(Error::Unsupported {
        addr: at(ECALL),
        why: Unsupported::System,
    });
    assert_eq!(engine.status(ecall), Ok(refused));
    assert_eq!(engine.status(addi), Ok(ProbeStatus::Armed));
    // Still refused at the next exec: the status stays, it does not flip back.
    let mut again = FakeSpace::with_text(2, &program());
    assert!(engine.on_exec(&mut again, PATH).is_err());
    assert_eq!(engine.status(ecall), Ok(refused));
    engine.unregister(ecall, None).unwrap();
    assert_eq!(engine.status(ecall), Err(Error::NotRegistered));
}

#[test]
fn image_reader_refuses_a_probe_before_its_program_runs() {
    let engine = Uprobes::new();
    engine.set_image_reader(Some(read_program_image));
    // ecall, lr.w and an illegal parcel fail at registration, with the typed error.
    assert_eq!(
        engine.register(PATH, at(ECALL), Consumer::new(), None),
        Err(Error::Unsupported {
            addr: at(ECALL),
            why: Unsupported::System
        })
    );
    assert_eq!(
        engine.register(PATH, at(LR_W), Consumer::new(), None),
        Err(Error::Unsupported {
            addr: at(LR_W),
            why: Unsupported::LoadReserved
        })
    );
    assert_eq!(
        engine.register(PATH, at(ZERO), Consumer::new(), None),
        Err(Error::Unsupported {
            addr: at(ZERO),
            why: Unsupported::Illegal
        })
    );
    // Outside the image: the reader's fault.
    assert_eq!(
        engine.register(PATH, TEXT + 0x1000, Consumer::new(), None),
        Err(Error::ReadFault(ruprobes::Fault {
            addr: TEXT + 0x1000
        }))
    );
    // A good one is accepted, pending, and armed by the exec; nothing else was kept.
    let id = engine
        .register(PATH, at(SD_RA), Consumer::new(), None)
        .unwrap();
    assert_eq!(engine.status(id), Ok(ProbeStatus::Pending));
    let mut space = FakeSpace::with_text(1, &program());
    engine.on_exec(&mut space, PATH).unwrap();
    assert_eq!(engine.status(id), Ok(ProbeStatus::Armed));
    assert_eq!(space.peek(at(ECALL), 4), program()[ECALL..ECALL + 4]);
}

#[test]
fn no_pid_means_no_process_and_pid_zero_is_one() {
    let engine = Uprobes::new();
    let mut init = FakeSpace::with_text(0, &program());
    engine.on_exec(&mut init, PATH).unwrap();
    let id = engine
        .register(PATH, at(ADDI_SP), Consumer::new(), Some(&mut init))
        .unwrap();
    assert_eq!(init.peek(at(ADDI_SP), 4), 0x0010_0073u32.to_le_bytes());
    assert_eq!(engine.status(id), Ok(ProbeStatus::Armed));
    // No current process: nothing is read or written, the probe waits.
    let mut nobody = FakeSpace::new(ruprobes::NO_PID);
    nobody.fail_read_at = Some(at(SD_RA));
    let id = engine
        .register(PATH, at(SD_RA), Consumer::new(), Some(&mut nobody))
        .unwrap();
    assert_eq!(engine.status(id), Ok(ProbeStatus::Pending));
    assert_eq!(
        engine.on_exec(&mut nobody, PATH),
        Err(Error::UnknownProcess(ruprobes::NO_PID))
    );
    let mut regs = regs_at(at(ADDI_SP), 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut nobody, &mut regs),
        Trap::NotOurs
    );
}

#[test]
fn return_handlers_see_the_return_address_as_pc() {
    let (engine, mut space) = setup();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let consumer = Consumer::new().on_return(move |regs, ret| {
        s.lock().unwrap().push((regs.pc(), ret.ret_addr));
    });
    engine
        .register(PATH, at(ADDI_SP), consumer, Some(&mut space))
        .unwrap();
    let tramp = engine.trampoline(1).unwrap();
    enter(&engine, &mut space, at(ADDI_SP), 0x8000, 0x5000);
    let (trap, regs) = leave(&engine, &mut space, tramp, 0x8000, 1);
    assert_eq!(trap, Trap::Handled);
    assert_eq!(regs.pc(), 0x5000);
    assert_eq!(*seen.lock().unwrap(), [(0x5000, 0x5000)]);
}

/// Counts the warnings logged about one path (the logger is global to the test binary).
struct WarningCounter;

static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for WarningCounter {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            WARNINGS.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

#[test]
fn an_arm_refusal_is_logged_once_not_at_every_exec() {
    static LOGGER: WarningCounter = WarningCounter;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Warn);
    const ONCE: &str = "/bin/logged-once";
    let engine = Uprobes::new();
    engine
        .register(ONCE, at(ECALL), Consumer::new(), None)
        .unwrap();
    for pid in 1..=3 {
        let mut space = FakeSpace::with_text(pid, &program());
        assert!(
            engine.on_exec(&mut space, ONCE).is_err(),
            "every exec reports it"
        );
    }
    let about = |w: &String| w.contains(ONCE);
    let warnings: Vec<String> = WARNINGS
        .lock()
        .unwrap()
        .iter()
        .filter(|w| about(w))
        .cloned()
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("cannot probe the instruction"),
        "{}",
        warnings[0]
    );
}

#[test]
fn executed_in_trap_counts_instructions_run_in_the_trap_only() {
    let (engine, mut space) = setup();
    for off in [ADDI_SP, SD_RA, BEQ] {
        arm(&engine, &mut space, off);
    }
    // Emulated and simulated instructions retire in the trap: one each.
    let mut regs = regs_at(at(ADDI_SP), 0x8000);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(engine.executed_in_trap(), 1);
    let mut regs = regs_at(at(BEQ), 0x8000);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(engine.executed_in_trap(), 2);
    // An out-of-line step runs on the CPU: neither of its traps counts.
    let mut regs = regs_at(at(SD_RA), 0x8000);
    handled(&engine, &mut space, &mut regs);
    let slot = regs.pc();
    regs.set_pc(slot + 4);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(engine.executed_in_trap(), 2);
    // A handler that moves the pc skips the instruction: it does not count.
    engine
        .register(
            PATH,
            at(C_LI),
            Consumer::new().on_entry(|r, _| r.set_pc(0x7000)),
            Some(&mut space),
        )
        .unwrap();
    let mut regs = regs_at(at(C_LI), 0x8000);
    handled(&engine, &mut space, &mut regs);
    assert_eq!(regs.pc(), 0x7000);
    assert_eq!(engine.executed_in_trap(), 2);
}

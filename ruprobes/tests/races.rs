//! Traps racing registration on another hart, each forced at the exact point where it
//! once went wrong: a thread that trapped on a breakpoint which is then removed (and put
//! back), a thread about to step out of line whose probe goes away, a slot whose probe is
//! removed while a thread steps in it.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ruprobes::{Consumer, ConsumerId, Trap, Uprobes, UserRegs, UserSpace, SLOT_SIZE};

const PATH: &str = "/bin/race";
const ADDI: u32 = 0xff01_0113; // addi sp, sp, -16     emulated
const LD: u32 = 0x0005_b503; //   ld a0, 0(a1)         out of line
const SD: u32 = 0x00a1_3423; //   sd a0, 8(sp)         out of line

/// A process (pid 1) running `code` at TEXT, in memory every hart shares.
fn process(code: &[(u32, usize)]) -> (Arc<Uprobes>, Arc<Mutex<FakeSpace>>) {
    let engine = Arc::new(Uprobes::new());
    let mem = Arc::new(Mutex::new(FakeSpace::with_text(1, &assemble(code))));
    engine
        .on_exec(&mut SharedSpace::new(&mem, 1), PATH)
        .unwrap();
    (engine, mem)
}

/// Linux's `handle_swbp`: a trap at an address with no probe, whose instruction is no longer
/// a breakpoint, restarts the instruction. The answer must be taken while no other hart can
/// write a breakpoint there: here the churn re-arms the address just when the trap looks.
#[test]
fn a_trap_whose_probe_was_removed_restarts_even_if_the_address_is_rearmed_meanwhile() {
    let (engine, mem) = process(&[(ADDI, 4), (ADDI, 4)]);
    let id = engine
        .register(
            PATH,
            TEXT,
            Consumer::new(),
            Some(&mut SharedSpace::new(&mem, 1)),
        )
        .unwrap();
    // This hart fetched the breakpoint; before its trap reaches the engine, the churn on
    // another hart removes the probe (the original is back in memory)...
    engine
        .unregister(id, Some(&mut SharedSpace::new(&mem, 2)))
        .unwrap();
    // ...and arms it again as soon as the trap reads the instruction at the pc.
    let (go, go_rx) = mpsc::channel();
    let (rearmed, rearmed_rx) = mpsc::channel();
    let churn = {
        let (engine, mem) = (engine.clone(), mem.clone());
        std::thread::spawn(move || {
            go_rx.recv().unwrap();
            let mut space = SharedSpace::new(&mem, 2);
            let id = engine.register(PATH, TEXT, Consumer::new(), Some(&mut space));
            let _ = rearmed.send(());
            id.unwrap()
        })
    };
    let mut hart = SharedSpace::new(&mem, 1);
    let mut go = Some(go);
    hart.on_read = Some(Box::new(move |addr| {
        if addr == TEXT {
            if let Some(go) = go.take() {
                go.send(()).unwrap();
                // Long enough for the churn to re-arm, unless the trap keeps it out.
                let _ = rearmed_rx.recv_timeout(Duration::from_millis(300));
            }
        }
    }));
    let mut regs = regs_at(TEXT, 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut hart, &mut regs),
        Trap::Handled,
        "the stale breakpoint's trap was taken for the program's own"
    );
    assert_eq!(regs.pc(), TEXT, "the instruction is restarted");
    assert_eq!(engine.trap_stats().restarted, 1);
    let id = churn.join().unwrap();
    // The restarted instruction now traps on the new probe, which is ours.
    let mut regs = regs_at(TEXT, 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut SharedSpace::new(&mem, 1), &mut regs),
        Trap::Handled
    );
    assert_eq!(regs.pc(), TEXT + 4);
    engine
        .unregister(id, Some(&mut SharedSpace::new(&mem, 1)))
        .unwrap();
    assert_eq!(
        mem.lock().unwrap().text(8),
        assemble(&[(ADDI, 4), (ADDI, 4)])
    );
}

/// Linux keeps a uprobe alive (a reference) while a thread uses its slot. Between the hit
/// and the step, the entry handlers run without the engine's lock: here the probe is
/// removed and another out-of-line probe registered then, which could take the freed slot
/// and put its own instruction where the thread is about to step.
#[test]
fn a_slot_keeps_its_instruction_for_a_thread_about_to_step_in_it() {
    let (engine, mem) = process(&[(ADDI, 4), (LD, 4), (SD, 4)]);
    let (ld, sd) = (TEXT + 4, TEXT + 8);
    let id: Arc<Mutex<Option<ConsumerId>>> = Arc::default();
    let churned: Arc<Mutex<Option<ConsumerId>>> = Arc::default();
    let consumer = {
        let (engine, mem, id, churned) = (engine.clone(), mem.clone(), id.clone(), churned.clone());
        Consumer::new().on_entry(move |_, _| {
            let Some(mine) = id.lock().unwrap().take() else {
                return;
            };
            let mut other_hart = SharedSpace::new(&mem, 2);
            engine.unregister(mine, Some(&mut other_hart)).unwrap();
            let sd_probe = engine.register(PATH, sd, Consumer::new(), Some(&mut other_hart));
            *churned.lock().unwrap() = Some(sd_probe.unwrap());
        })
    };
    let mut hart = SharedSpace::new(&mem, 1);
    *id.lock().unwrap() = Some(
        engine
            .register(PATH, ld, consumer, Some(&mut hart))
            .unwrap(),
    );
    let mut regs = regs_at(ld, 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut hart, &mut regs),
        Trap::Handled
    );
    let slot = regs.pc();
    assert!(slot > XOL_BASE, "stepping out of line: pc {slot:#x}");
    assert_eq!(
        mem.lock().unwrap().peek(slot, 4),
        LD.to_le_bytes(),
        "the slot holds the instruction the thread is stepping"
    );
    regs.set_pc(slot + 4);
    assert_eq!(
        engine.handle_breakpoint(&mut hart, &mut regs),
        Trap::Handled
    );
    assert_eq!(regs.pc(), ld + 4);
    // The probe registered meanwhile steps in a slot of its own.
    let mut regs = regs_at(sd, 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut hart, &mut regs),
        Trap::Handled
    );
    assert_ne!(regs.pc(), slot);
    assert_eq!(mem.lock().unwrap().peek(regs.pc(), 4), SD.to_le_bytes());
    regs.set_pc(regs.pc() + 4);
    assert_eq!(
        engine.handle_breakpoint(&mut hart, &mut regs),
        Trap::Handled
    );
    let churned = churned.lock().unwrap().take().unwrap();
    engine.unregister(churned, Some(&mut hart)).unwrap();
    assert_eq!(
        mem.lock().unwrap().text(12),
        assemble(&[(ADDI, 4), (LD, 4), (SD, 4)])
    );
}

/// A slot whose probe is removed while a thread steps in it stays until the step is done,
/// then is free again: the churn must not leak a slot per removal it races.
#[test]
fn a_slot_removed_during_a_step_is_reused_after_the_step() {
    let slots = 4096 / SLOT_SIZE - 1; // the first XOL page, the trampoline's slot aside
    let (engine, mem) = process(&vec![(LD, 4); slots + 1]);
    let mut hart = SharedSpace::new(&mem, 1);
    let id = engine
        .register(PATH, TEXT, Consumer::new(), Some(&mut hart))
        .unwrap();
    let mut regs = regs_at(TEXT, 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut hart, &mut regs),
        Trap::Handled
    );
    let slot = regs.pc();
    // Removed on another hart while this thread is inside its slot.
    engine
        .unregister(id, Some(&mut SharedSpace::new(&mem, 2)))
        .unwrap();
    regs.set_pc(slot + 4);
    assert_eq!(
        engine.handle_breakpoint(&mut hart, &mut regs),
        Trap::Handled
    );
    assert_eq!(regs.pc(), TEXT + 4, "the step finished");
    // A thread that exits in its slot gives the slot back too.
    let id = engine
        .register(PATH, TEXT + 4, Consumer::new(), Some(&mut hart))
        .unwrap();
    let mut other = SharedSpace::new(&mem, 3);
    let mut regs = regs_at(TEXT + 4, 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut other, &mut regs),
        Trap::Handled
    );
    engine.unregister(id, Some(&mut hart)).unwrap();
    engine.on_thread_exit(1, 3);
    // Every slot of the first page is free again: as many probes fit in it.
    let ids: Vec<_> = (0..slots)
        .map(|i| {
            engine
                .register(PATH, TEXT + 4 * i, Consumer::new(), Some(&mut hart))
                .unwrap()
        })
        .collect();
    assert!(
        !hart.is_executable(XOL_BASE + 4096),
        "a second XOL page was mapped: a slot leaked"
    );
    for id in ids {
        engine.unregister(id, Some(&mut hart)).unwrap();
    }
    assert_eq!(
        mem.lock().unwrap().text(4 * (slots + 1)),
        assemble(&vec![(LD, 4); slots + 1])
    );
}

/// With compressed breakpoints a 32-bit instruction gets `c.ebreak` in its first parcel
/// only: the second never changes, so no fetch can combine halves of two instructions.
#[test]
fn compressed_breakpoints_change_only_the_first_parcel() {
    let engine = Uprobes::new();
    engine.set_compressed_breakpoints(true);
    let code = assemble(&[(ADDI, 4), (LD, 4)]);
    let mut space = FakeSpace::with_text(1, &code);
    engine.on_exec(&mut space, PATH).unwrap();
    let ids: Vec<_> = [TEXT, TEXT + 4]
        .into_iter()
        .map(|at| {
            engine
                .register(PATH, at, Consumer::new(), Some(&mut space))
                .unwrap()
        })
        .collect();
    let c_ebreak = 0x9002u16.to_le_bytes();
    assert_eq!(space.peek(TEXT, 4), [&c_ebreak[..], &code[2..4]].concat());
    assert_eq!(
        space.peek(TEXT + 4, 4),
        [&c_ebreak[..], &code[6..8]].concat()
    );
    // Both still hit: the emulated addi, and the load stepped out of line.
    let mut regs = regs_at(TEXT, 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut space, &mut regs),
        Trap::Handled
    );
    assert_eq!((regs.pc(), regs.reg(2)), (TEXT + 4, 0x8000 - 16));
    let mut regs = regs_at(TEXT + 4, 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut space, &mut regs),
        Trap::Handled
    );
    assert!(regs.pc() > XOL_BASE);
    regs.set_pc(regs.pc() + 4);
    assert_eq!(
        engine.handle_breakpoint(&mut space, &mut regs),
        Trap::Handled
    );
    assert_eq!(regs.pc(), TEXT + 8);
    for id in ids {
        engine.unregister(id, Some(&mut space)).unwrap();
    }
    assert_eq!(space.text(8), code);
}

//! Traps racing registration on another hart, each forced at the exact point where it
//! once went wrong: a thread that trapped on a breakpoint which is then removed (and put
//! back), a thread about to step out of line whose probe goes away, a slot whose probe is
//! removed while a thread steps in it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Traps take the registry's read side, so they never wait for each other; a writer must
/// still get in while they keep coming. Here one trap is held inside the read side (at its
/// read of the instruction) while a registration waits: a trap on another hart must then
/// wait behind the registration, not overtake it (a reader-preferring lock would let traps
/// in for as long as they overlap, and starve the churn of issue 14's scenario).
#[test]
fn a_waiting_writer_stops_new_traps_and_gets_in_before_them() {
    let (engine, mem) = process(&[(ADDI, 4), (ADDI, 4), (ADDI, 4)]);
    engine
        .register(
            PATH,
            TEXT,
            Consumer::new(),
            Some(&mut SharedSpace::new(&mem, 1)),
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Arc<Mutex<Vec<std::thread::JoinHandle<HitterReport>>>> = Arc::default();
    let writer: Arc<Mutex<Option<std::thread::JoinHandle<ConsumerId>>>> = Arc::default();
    let mut hart = SharedSpace::new(&mem, 1);
    let mut held = false;
    hart.on_read = {
        let (engine, mem, stop, threads, writer) = (
            engine.clone(),
            mem.clone(),
            stop.clone(),
            threads.clone(),
            writer.clone(),
        );
        Some(Box::new(move |addr| {
            if addr != TEXT + 8 || std::mem::replace(&mut held, true) {
                return;
            }
            // This trap holds the read side now. A registration on hart 2...
            *writer.lock().unwrap() = Some({
                let (engine, mem) = (engine.clone(), mem.clone());
                std::thread::spawn(move || {
                    let mut space = SharedSpace::new(&mem, 2);
                    engine
                        .register(PATH, TEXT + 4, Consumer::new(), Some(&mut space))
                        .unwrap()
                })
            });
            // ...and a thread on hart 3 that keeps hitting the armed probe.
            threads.lock().unwrap().push({
                let (engine, mem, stop) = (engine.clone(), mem.clone(), stop.clone());
                std::thread::spawn(move || hit_until_blocked(&engine, &mem, 3, &stop))
            });
            // Hold the read side until a hit had to wait (bounded, so that a lock that never
            // makes one wait fails the test below instead of hanging it).
            for _ in 0..10_000 {
                if engine.trap_stats().lock_contended > 0 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            stop.store(true, Ordering::Relaxed);
        }))
    };
    // A trap at an address with no probe: it reads the instruction under the read side.
    let mut regs = regs_at(TEXT + 8, 0x8000);
    assert_eq!(
        engine.handle_breakpoint(&mut hart, &mut regs),
        Trap::Handled
    );
    assert_eq!(regs.pc(), TEXT + 8, "not a breakpoint any more: restarted");
    let registered = writer.lock().unwrap().take().unwrap().join().unwrap();
    let report = threads.lock().unwrap().pop().unwrap().join().unwrap();
    assert!(
        engine.trap_stats().lock_contended > 0,
        "traps kept getting in while a registration waited"
    );
    assert!(
        report.waited_behind_the_writer,
        "the trap that waited got in before the registration it waited for"
    );
    assert_eq!(
        engine.stats(PATH, TEXT).unwrap().hits,
        report.hits,
        "every hit counted once"
    );
    engine
        .unregister(registered, Some(&mut SharedSpace::new(&mem, 1)))
        .unwrap();
}

struct HitterReport {
    hits: u64,
    /// The hit that found the lock taken saw the registration's breakpoint when it got in.
    waited_behind_the_writer: bool,
}

/// Hits the probe at TEXT until one hit had to wait for the lock (or `stop`).
fn hit_until_blocked(
    engine: &Uprobes,
    mem: &Arc<Mutex<FakeSpace>>,
    tid: usize,
    stop: &AtomicBool,
) -> HitterReport {
    let mut space = SharedSpace::new(mem, tid);
    let mut hits = 0;
    while !stop.load(Ordering::Relaxed) {
        let waited_before = engine.trap_stats().lock_contended;
        let mut regs = regs_at(TEXT, 0x8000);
        assert_eq!(
            engine.handle_breakpoint(&mut space, &mut regs),
            Trap::Handled
        );
        assert_eq!(regs.pc(), TEXT + 4);
        hits += 1;
        if engine.trap_stats().lock_contended > waited_before {
            let rearmed = mem.lock().unwrap().peek(TEXT + 4, 4) == 0x0010_0073u32.to_le_bytes();
            return HitterReport {
                hits,
                waited_behind_the_writer: rearmed,
            };
        }
    }
    HitterReport {
        hits,
        waited_behind_the_writer: false,
    }
}

/// Threads of one process step out of line and return through the trampoline while other
/// threads of it get their state (a first out-of-line hit, under the write side) and exit
/// in their slot: the exits drop only their own state, and every step and return of the
/// others ends where it must.
#[test]
fn threads_exiting_in_their_slot_leave_the_other_threads_steps_and_returns_alone() {
    const ROUNDS: usize = 2000;
    let (engine, mem) = process(&[(LD, 4), (ADDI, 4)]);
    let mismatched = Arc::new(AtomicU64::new(0));
    let consumer = {
        let mismatched = mismatched.clone();
        Consumer::new().on_return(move |_, ret| {
            if ret.ret_addr != return_address(ret.tid) {
                mismatched.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let id = engine
        .register(PATH, TEXT, consumer, Some(&mut SharedSpace::new(&mem, 1)))
        .unwrap();
    let hitters: Vec<_> = [2usize, 3]
        .into_iter()
        .map(|tid| {
            let (engine, mem) = (engine.clone(), mem.clone());
            std::thread::spawn(move || {
                let mut space = SharedSpace::new(&mem, tid);
                for _ in 0..ROUNDS {
                    let slot = step_into_slot(&engine, &mut space, tid);
                    let mut regs = regs_at(slot + 4, 0x8000);
                    regs.set_reg(1, engine.trampoline(1).unwrap());
                    assert_eq!(
                        engine.handle_breakpoint(&mut space, &mut regs),
                        Trap::Handled
                    );
                    assert_eq!(regs.pc(), TEXT + 4, "thread {tid}: step finished");
                    regs.set_pc(regs.reg(1));
                    assert_eq!(
                        engine.handle_breakpoint(&mut space, &mut regs),
                        Trap::Handled
                    );
                    assert_eq!(regs.pc(), return_address(tid), "thread {tid}: returned");
                }
            })
        })
        .collect();
    // Short-lived threads: each steps into the slot once and exits there.
    for i in 0..ROUNDS {
        let tid = 100 + i;
        step_into_slot(&engine, &mut SharedSpace::new(&mem, tid), tid);
        engine.on_thread_exit(1, tid);
    }
    for h in hitters {
        h.join().unwrap();
    }
    assert_eq!(
        mismatched.load(Ordering::Relaxed),
        0,
        "a return went to another thread"
    );
    let stats = engine.stats(PATH, TEXT).unwrap();
    assert_eq!(stats.hits, 3 * ROUNDS as u64);
    assert_eq!(stats.returns, 2 * ROUNDS as u64);
    assert_eq!(
        engine.threads_tracked(1),
        2,
        "the exited threads' state is gone"
    );
    engine
        .unregister(id, Some(&mut SharedSpace::new(&mem, 1)))
        .unwrap();
    assert_eq!(mem.lock().unwrap().text(8), assemble(&[(LD, 4), (ADDI, 4)]));
}

/// The return address thread `tid` calls the probed function with.
fn return_address(tid: usize) -> usize {
    0x5000 + 16 * tid
}

/// Thread `tid` hits the out-of-line probe at TEXT; the slot it is to step in.
fn step_into_slot(engine: &Uprobes, space: &mut SharedSpace, tid: usize) -> usize {
    let mut regs = regs_at(TEXT, 0x8000);
    regs.set_reg(1, return_address(tid));
    assert_eq!(engine.handle_breakpoint(space, &mut regs), Trap::Handled);
    assert!(regs.pc() > XOL_BASE, "thread {tid} steps out of line");
    regs.pc()
}

/// A probe unregistered while armed in a process that is not current is restored by that
/// process's next hit, under the write side; traps of several threads on the stale
/// breakpoint at once must each run the original exactly once (restore or restart),
/// never report it as the program's own.
#[test]
fn traps_racing_the_lazy_restore_of_a_removed_probe_all_restart() {
    let (engine, mem) = process(&[(ADDI, 4)]);
    for _ in 0..200 {
        let id = engine
            .register(
                PATH,
                TEXT,
                Consumer::new(),
                Some(&mut SharedSpace::new(&mem, 1)),
            )
            .unwrap();
        // Removed from elsewhere: the breakpoint stays until this process traps on it.
        engine.unregister(id, None).unwrap();
        let start = Arc::new(std::sync::Barrier::new(3));
        let traps: Vec<_> = (1..=3)
            .map(|tid| {
                let (engine, mem, start) = (engine.clone(), mem.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut regs = regs_at(TEXT, 0x8000);
                    start.wait();
                    let trap =
                        engine.handle_breakpoint(&mut SharedSpace::new(&mem, tid), &mut regs);
                    (trap, regs.pc())
                })
            })
            .collect();
        for t in traps {
            assert_eq!(t.join().unwrap(), (Trap::Handled, TEXT), "restarted");
        }
        assert_eq!(mem.lock().unwrap().text(4), assemble(&[(ADDI, 4)]));
    }
}

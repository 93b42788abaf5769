//! Threads registering, unregistering and hitting probes of one process at once: no
//! deadlock, no breakpoint that is not claimed, no original bytes lost.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ruprobes::{abi, Consumer, ConsumerId, Tid, Trap, Uprobes, UserRegs};

const PATH: &str = "/bin/stress";
const SITES: usize = 48;
/// Hits per hitter at least, and rounds per registrar; fewer under Miri, which checks every
/// memory access of every thread for data races (thousands of times slower).
const MIN_ROUNDS: usize = if cfg!(miri) { 100 } else { 5000 };
const REGISTRAR_ROUNDS: usize = if cfg!(miri) { 300 } else { 20_000 };
/// Never unregistered by the registrars, so the hitters always find an armed probe.
const PERMANENT: usize = TEXT + 4 * 7;

/// Three instruction classes in turn: addi (emulate), ld (out of line), bne (simulate).
fn program() -> Vec<u8> {
    let words = [0xff01_0113u32, 0x0005_b503, 0x00b5_1463];
    assemble(&(0..SITES).map(|i| (words[i % 3], 4)).collect::<Vec<_>>())
}

/// A small deterministic generator, one per thread.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
}

fn is_breakpoint(mem: &Mutex<FakeSpace>, addr: usize) -> bool {
    mem.lock().unwrap().peek(addr, 4) == 0x0010_0073u32.to_le_bytes()
}

fn hitter(engine: &Uprobes, mem: Arc<Mutex<FakeSpace>>, tid: Tid, stop: &AtomicBool) -> u64 {
    let mut space = SharedSpace::new(&mem, tid);
    let mut rng = Lcg(tid as u64);
    let mut hits = 0;
    // At least MIN_ROUNDS, then until the registrars are done.
    for round in 0.. {
        if round >= MIN_ROUNDS && stop.load(Ordering::Relaxed) {
            break;
        }
        let addr = TEXT + 4 * (rng.next() % SITES);
        if !is_breakpoint(&mem, addr) {
            continue;
        }
        let sp = 0x8000;
        let mut regs = regs_at(addr, sp);
        regs.set_reg(abi::RA, 0x5000);
        assert_eq!(
            engine.handle_breakpoint(&mut space, &mut regs),
            Trap::Handled,
            "hit at {addr:#x}"
        );
        hits += 1;
        if regs.pc() >= XOL_BASE {
            // Step the slot: its breakpoint follows the 4-byte instruction.
            regs.set_pc(regs.pc() + 4);
            assert_eq!(
                engine.handle_breakpoint(&mut space, &mut regs),
                Trap::Handled,
                "step of {addr:#x}"
            );
            assert_eq!(regs.pc(), addr + 4);
        }
        if Some(regs.reg(abi::RA)) == engine.trampoline(1) {
            let mut ret = regs_at(regs.reg(abi::RA), sp);
            assert_eq!(
                engine.handle_breakpoint(&mut space, &mut ret),
                Trap::Handled,
                "return of {addr:#x}"
            );
            assert_eq!(ret.pc(), 0x5000);
        }
    }
    hits
}

fn registrar(
    engine: &Uprobes,
    mem: Arc<Mutex<FakeSpace>>,
    seed: u64,
    rounds: usize,
    counter: Arc<AtomicU64>,
) {
    let mut space = SharedSpace::new(&mem, 100 + seed as usize);
    let mut rng = Lcg(seed);
    let mut mine: Vec<ConsumerId> = Vec::new();
    for _ in 0..rounds {
        if !mine.is_empty() && rng.next() % 2 == 0 {
            let id = mine.swap_remove(rng.next() % mine.len());
            engine.unregister(id, Some(&mut space)).unwrap();
        } else {
            let addr = TEXT + 4 * (rng.next() % SITES);
            let c = counter.clone();
            let mut consumer = Consumer::new().on_entry(move |_, _| {
                c.fetch_add(1, Ordering::Relaxed);
            });
            if rng.next() % 3 == 0 {
                consumer = consumer.on_return(|_, _| {});
            }
            mine.push(
                engine
                    .register(PATH, addr, consumer, Some(&mut space))
                    .unwrap(),
            );
        }
    }
    for id in mine {
        engine.unregister(id, Some(&mut space)).unwrap();
    }
}

#[test]
fn concurrent_register_unregister_and_hits() {
    let engine = Arc::new(Uprobes::new());
    let mem = Arc::new(Mutex::new(FakeSpace::with_text(1, &program())));
    engine
        .on_exec(&mut SharedSpace::new(&mem, 1), PATH)
        .unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    let c = counter.clone();
    let permanent = Consumer::new().on_entry(move |_, _| {
        c.fetch_add(1, Ordering::Relaxed);
    });
    let permanent = engine
        .register(
            PATH,
            PERMANENT,
            permanent,
            Some(&mut SharedSpace::new(&mem, 1)),
        )
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (reg_tx, reg_rx) = mpsc::channel();
    let (hit_tx, hit_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for tid in 1..=3 {
        let (e, m, s, tx) = (engine.clone(), mem.clone(), stop.clone(), hit_tx.clone());
        handles.push(std::thread::spawn(move || {
            tx.send(hitter(&e, m, tid, &s)).unwrap()
        }));
    }
    for seed in 1..=2u64 {
        let (e, m, c, tx) = (engine.clone(), mem.clone(), counter.clone(), reg_tx.clone());
        handles.push(std::thread::spawn(move || {
            registrar(&e, m, seed, REGISTRAR_ROUNDS, c);
            tx.send(()).unwrap();
        }));
    }
    let deadline = Duration::from_secs(120);
    for _ in 0..2 {
        reg_rx
            .recv_timeout(deadline)
            .expect("a registrar deadlocked or died");
    }
    stop.store(true, Ordering::Relaxed);
    let mut hits = 0;
    for _ in 0..3 {
        hits += hit_rx
            .recv_timeout(deadline)
            .expect("a hitter deadlocked or died");
    }
    for h in handles {
        h.join().unwrap();
    }
    eprintln!(
        "{hits} hits, {} entry handler calls",
        counter.load(Ordering::Relaxed)
    );
    assert!(
        engine.stats(PATH, PERMANENT).unwrap().hits > 0,
        "the hitters hit the permanent probe"
    );
    assert!(counter.load(Ordering::Relaxed) > 0, "entry handlers ran");
    engine
        .unregister(permanent, Some(&mut SharedSpace::new(&mem, 1)))
        .unwrap();
    // Every registrar unregistered what it registered: the text is the program again.
    assert_eq!(mem.lock().unwrap().text(4 * SITES), program());
}

//! The machine API the proof suite builds on: probes with custom handlers, unregistering
//! mid-run, fault injection, pc counts, final registers, budgets, faults in XOL slots.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ruprobes::{abi, Consumer};
use ruprobes_sim::kernel::ExitStatus;
use ruprobes_sim::machine::{Config, Machine, Progress, FIXTURES_DIR};
use ruprobes_sim::space::FaultInjection;
use ruprobes_sim::trace::TraceEvent;
use ruprobes_sim::SimError;

fn elf(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES_DIR).join(format!("{name}.elf")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn machine(name: &str, config: Config) -> Machine {
    let mut m = Machine::new(config);
    m.set_image_dir(Path::new(FIXTURES_DIR));
    m.load(name, &elf(name)).unwrap_or_else(|e| panic!("{e}"));
    m
}

fn sym(m: &Machine, name: &str) -> u64 {
    m.main_image()
        .and_then(|i| i.symbols.resolve(name))
        .unwrap_or_else(|| panic!("no symbol {name}"))
}

fn text(m: &Machine, addr: u64, len: usize) -> Vec<u8> {
    m.read_user(1, addr, len).unwrap_or_else(|e| panic!("{e}"))
}

fn elf_text(m: &Machine, addr: u64, len: usize) -> Vec<u8> {
    m.main_image()
        .and_then(|i| i.initial_bytes(addr, len))
        .unwrap_or_default()
}

fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

#[test]
fn hit_counts_equal_pc_counts_of_the_unprobed_run() {
    let mut plain = machine(
        "fib",
        Config {
            count_pcs: true,
            ..Config::default()
        },
    );
    let fib = sym(&plain, "fib");
    let unprobed = plain.run().unwrap_or_else(|e| panic!("{e}"));
    let executed = plain.pc_counts().get(&fib).copied();
    assert_eq!(executed, Some(89));
    let mut probed = machine("fib", Config::default());
    let id = probed
        .add_probe("uprobe:fib")
        .unwrap_or_else(|e| panic!("{e}"));
    let result = probed.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.stdout, unprobed.stdout);
    assert_eq!(probed.stats(id).map(|s| s.hits), executed);
    assert_eq!(
        probed.final_regs(),
        plain.final_regs(),
        "same final register file"
    );
    let regs = probed.final_regs().unwrap_or_default();
    assert_eq!(regs.x[17], 93, "stopped at the exit call");
    assert_eq!(regs.x[abi::A0], 0, "exit code 0");
    // The probed `addi sp, sp, -48` is emulated by the engine in the trap: it still counts
    // once in the machine's clock, the breakpoint not at all.
    assert_eq!(
        result.instructions, unprobed.instructions,
        "probes leave the instruction count alone"
    );
    assert_eq!(probed.probe_cost().executed_in_trap, 89);
}

#[test]
fn unregister_mid_run_restores_the_text() {
    let mut m = machine("fib", Config::default());
    let fib = sym(&m, "fib");
    let original = elf_text(&m, fib, 4);
    let entry = m.add_probe("uprobe:fib").unwrap_or_else(|e| panic!("{e}"));
    let ret = m
        .add_probe("uretprobe:fib")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        text(&m, fib, 4),
        original,
        "armed: a breakpoint is in the text"
    );
    assert_eq!(
        m.run_for(300).unwrap_or_else(|e| panic!("{e}")),
        Progress::Paused
    );
    let hits = m.stats(entry).map(|s| s.hits).unwrap_or(0);
    assert!(hits > 0 && hits < 89, "paused in the middle: {hits} hits");
    m.unregister(entry).unwrap_or_else(|e| panic!("{e}"));
    m.unregister(ret).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        text(&m, fib, 4),
        original,
        "unregistered: the ELF's bytes again"
    );
    assert_eq!(m.unregister(entry), Err(SimError::UnknownProbe(entry.0)));
    let result = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        result.stdout, b"fib(10) = 55\n",
        "pending returns still come back right"
    );
    assert_eq!(
        m.stats(entry).map(|s| s.hits),
        Some(hits),
        "counters frozen at unregister"
    );
    assert_eq!(text(&m, fib, 4), original);
}

#[test]
fn a_handler_can_unregister_through_the_queue() {
    let mut m = machine("fib", Config::default());
    let fib = sym(&m, "fib");
    let queue = m.unregister_queue();
    let hits = counter();
    let seen = hits.clone();
    let id_cell = Arc::new(AtomicU64::new(u64::MAX));
    let id_of_probe = id_cell.clone();
    let consumer = Consumer::new().on_entry(move |_, _| {
        if seen.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
            queue.push(ruprobes_sim::ProbeId(
                id_of_probe.load(Ordering::SeqCst) as usize
            ));
        }
    });
    let id = m.register(fib, consumer).unwrap_or_else(|e| panic!("{e}"));
    id_cell.store(id.0 as u64, Ordering::SeqCst);
    let result = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.stdout, b"fib(10) = 55\n");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        5,
        "no hit after the queued unregister"
    );
    assert_eq!(text(&m, fib, 2), elf_text(&m, fib, 2));
}

#[test]
fn handlers_that_change_registers_take_effect() {
    let mut m = machine("fib", Config::default());
    let fib = sym(&m, "fib");
    // fib(10) -> fib(5): set a0 at the first call only.
    let first = counter();
    let consumer = Consumer::new().on_entry(move |regs, _| {
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            regs.set_reg(abi::A0, 5);
        }
    });
    m.register(fib, consumer).unwrap_or_else(|e| panic!("{e}"));
    let result = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        result.stdout, b"fib(10) = 5\n",
        "main prints its own n, and fib(5) = 5"
    );
}

#[test]
fn fault_injection_leaves_memory_unchanged() {
    let cases = [
        (FaultInjection::fail_reads(), "read"),
        (FaultInjection::fail_writes_after(0), "write"),
    ];
    for (faults, what) in cases {
        let mut m = machine("fib", Config::default());
        let fib = sym(&m, "fib");
        let before = text(&m, fib, 64);
        m.set_faults(faults);
        let err = m.add_probe("uprobe:fib");
        match (what, &err) {
            (
                "read",
                Err(SimError::Probe {
                    error: ruprobes::Error::ReadFault(_),
                    ..
                }),
            ) => {}
            (
                "write",
                Err(SimError::Probe {
                    error: ruprobes::Error::WriteFault(_),
                    ..
                }),
            ) => {}
            _ => panic!("{what}: unexpected {err:?}"),
        }
        m.set_faults(FaultInjection::none());
        assert_eq!(text(&m, fib, 64), before, "{what}: byte-identical");
        assert_eq!(
            m.run().map(|r| r.stdout).unwrap_or_default(),
            b"fib(10) = 55\n"
        );
    }
}

#[test]
fn failing_xol_map_is_reported_and_changes_nothing() {
    // `sd ra, 40(sp)` at fib+2 needs an out-of-line step, hence an XOL page.
    let mut m = machine("fib", Config::default());
    let fib = sym(&m, "fib");
    let before = text(&m, fib, 64);
    m.set_faults(FaultInjection::fail_xol_map());
    let err = m.add_probe("uprobe:fib+2");
    assert!(
        matches!(
            err,
            Err(SimError::Probe {
                error: ruprobes::Error::XolMapFailed,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        text(&m, fib, 64),
        before,
        "byte-identical after the failure"
    );
    // A probe that needs no XOL page (an emulated addi) still works.
    m.add_probe("uprobe:fib").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        m.run().map(|r| r.stdout).unwrap_or_default(),
        b"fib(10) = 55\n"
    );
}

#[test]
fn a_fault_in_an_xol_slot_is_reported_at_the_probed_pc() {
    let mut m = machine("fib", Config::default());
    let store = sym(&m, "fib") + 2; // sd ra, 40(sp): stepped out of line
                                    // Point sp at unmapped memory just before the store runs in its slot.
    m.register(
        store,
        Consumer::new().on_entry(|regs, _| regs.set_reg(abi::SP, 0x100)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let result = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.status, ExitStatus::Killed(11));
    assert_eq!(
        result.trace.last().map(ToString::to_string),
        Some(format!("pid 1 killed SIGSEGV at fib+0x2 pc={store:#x}")),
        "the kill names the probed instruction, not its slot"
    );
    assert_eq!(
        m.final_regs().map(|r| r.pc),
        Some(store),
        "the fault is reported at the probed pc"
    );
    let diag = result.diagnostics.join("\n");
    assert!(
        diag.contains(&format!("pc={store:#x} (faulted in XOL slot 0x3000")),
        "{diag}"
    );
}

#[test]
fn budget_ends_a_runaway_with_a_clear_error() {
    let mut m = machine(
        "fib",
        Config {
            max_insns: 500,
            ..Config::default()
        },
    );
    assert_eq!(
        m.run().err(),
        Some(SimError::BudgetExhausted { executed: 500 })
    );
}

#[test]
fn fork_exec_and_probes_in_parent_and_child() {
    let mut m = machine("forker", Config::default());
    m.add_probe("uprobe:child_work")
        .unwrap_or_else(|e| panic!("{e}"));
    // A probe on the program the child execs, keyed by that program's path.
    let hello_main = m
        .image("hello")
        .ok()
        .and_then(|i| i.symbols.resolve("main"))
        .unwrap_or(0);
    let hits = counter();
    let seen = hits.clone();
    let pid_seen = counter();
    let pid_of_hit = pid_seen.clone();
    m.register_at(
        "hello",
        hello_main,
        Consumer::new().on_entry(move |_, hit| {
            seen.fetch_add(1, Ordering::SeqCst);
            pid_of_hit.store(hit.pid as u64, Ordering::SeqCst);
        }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let result = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.status, ExitStatus::Exited(0));
    assert!(
        result
            .trace
            .iter()
            .any(|e| matches!(e, TraceEvent::Hit { pid: 2, .. })),
        "child_work hit in pid 2"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "hello's main hit once, after exec"
    );
    assert_eq!(pid_seen.load(Ordering::SeqCst), 2);
    let syscalls: Vec<u64> = result
        .trace
        .iter()
        .filter_map(|e| match e {
            TraceEvent::Syscall { pid: 2, nr } => Some(*nr),
            _ => None,
        })
        .collect();
    assert!(syscalls.contains(&221), "the child execs: {syscalls:?}");
    assert!(result.stdout.ends_with(b"parent: child status 0\n"));
}

#[test]
fn machines_run_in_parallel_threads() {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let mut m = machine("fib", Config::default());
                m.add_probe("uretprobe:fib")
                    .unwrap_or_else(|e| panic!("{e}"));
                let r = m.run().unwrap_or_else(|e| panic!("{e}"));
                r.trace
                    .iter()
                    .filter(|e| matches!(e, TraceEvent::Return { .. }))
                    .count()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().ok(), Some(89));
    }
}

#[test]
fn exec_looks_in_the_image_directory_first() {
    let dir = std::env::temp_dir().join(format!("ruprobes-sim-images-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    // A "hello" that is really fib: the child's exec must pick it up.
    std::fs::write(dir.join("hello.elf"), elf("fib")).unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(Config::default());
    m.set_image_dir(&dir);
    m.load("forker", &elf("forker"))
        .unwrap_or_else(|e| panic!("{e}"));
    let result = m.run().unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let out = String::from_utf8_lossy(&result.stdout);
    assert!(
        out.contains("fib(10) = 55\n") && !out.contains("hello, world"),
        "{out}"
    );
    assert_eq!(result.status, ExitStatus::Exited(0));
}

//! The seed face of ruprobes (free functions over the global engine, reaching the kernel
//! through `extern "C"` hooks) driving real programs in a seed-mode machine, whose hooks
//! `ruprobes_sim::seed_ffi` routes to the process on the CPU.
//!
//! The seed engine is global, so the tests of this binary take turns.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ruprobes::seed::{uprobe_register, uprobe_unregister, ProbeType, SeedHandler};
use ruprobes::TrapContext;
use ruprobes_sim::kernel::ExitStatus;
use ruprobes_sim::machine::{Config, Machine, RunResult, FIXTURES_DIR};

static TURN: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

fn elf(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES_DIR).join(format!("{name}.elf")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn symbol(name: &str, sym: &str) -> usize {
    let image = ruprobes_sim::kernel::image::Image::parse(name, &elf(name))
        .unwrap_or_else(|e| panic!("{e}"));
    image
        .symbols
        .resolve(sym)
        .unwrap_or_else(|| panic!("{sym} not in {name}")) as usize
}

fn run_seed(name: &str) -> RunResult {
    let mut machine = Machine::new(Config {
        seed: true,
        ..Config::default()
    });
    machine.set_image_dir(Path::new(FIXTURES_DIR));
    machine
        .load(name, &elf(name))
        .unwrap_or_else(|e| panic!("{e}"));
    machine.run().unwrap_or_else(|e| panic!("{e}"))
}

/// A handler that records (pc, a0, probed address) of each call.
/// Calls seen by a recording handler: (pc, a0, probed address).
type Log = Arc<Mutex<Vec<(usize, usize, usize)>>>;

fn recorder() -> (SeedHandler, Log) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let handler: SeedHandler = Arc::new(spin::Mutex::new(
        move |cx: &mut TrapContext, addr: usize| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((cx.sepc, cx.x[10], addr));
        },
    ));
    (handler, log)
}

fn take(log: &Log) -> Vec<(usize, usize, usize)> {
    std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner))
}

#[test]
fn insn_and_function_probes_through_the_extern_c_hooks() {
    let _turn = turn();
    let fib = symbol("fib", "fib");
    let (entry, entries) = recorder();
    let (post, posts_log) = recorder();
    assert_eq!(
        uprobe_register("fib".into(), fib, entry, Some(post), ProbeType::Insn),
        0
    );
    let (fentry, fentries) = recorder();
    let (fret, frets) = recorder();
    let main = symbol("fib", "main");
    assert_eq!(
        uprobe_register("fib".into(), main, fentry, Some(fret), ProbeType::SyncFunc),
        0
    );

    let result = run_seed("fib");
    assert_eq!(result.stdout, b"fib(10) = 55\n");
    assert_eq!(result.status, ExitStatus::Exited(0));

    let hits = take(&entries);
    assert_eq!(hits.len(), 89, "fib(10) makes 89 calls");
    assert_eq!(hits[0], (fib, 10, fib), "first call: pc at fib, a0 = 10");
    let posts = take(&posts_log);
    assert_eq!(posts.len(), 89);
    assert!(
        posts
            .iter()
            .all(|&(pc, _, addr)| pc == fib + 2 && addr == fib),
        "post: pc after the 2-byte addi"
    );
    assert_eq!(take(&fentries).len(), 1, "main entered once");
    let rets = take(&frets);
    assert_eq!(rets.len(), 1, "main returned once: {rets:x?}");
    assert_eq!(
        rets[0].2, main,
        "the return handler gets the function address"
    );

    assert_eq!(uprobe_unregister("fib", fib), 0);
    assert_eq!(uprobe_unregister("fib", main), 0);
    assert!(
        uprobe_unregister("fib", fib) < 0,
        "unregistering twice is an error"
    );
    // Unregistered: a new run hits nothing.
    let result = run_seed("fib");
    assert_eq!(result.stdout, b"fib(10) = 55\n");
    assert!(
        take(&entries).is_empty() && take(&posts_log).is_empty(),
        "no handler runs after unregister"
    );
}

#[test]
fn a_breakpoint_that_is_not_ours_kills_with_sigtrap() {
    let _turn = turn();
    let result = run_seed("trap_self");
    assert_eq!(result.status, ExitStatus::Killed(5));
    assert_eq!(result.stdout, b"before ebreak\n");
}

#[test]
fn probes_follow_fork_into_the_child() {
    let _turn = turn();
    let work = symbol("forker", "child_work");
    let (entry, entries) = recorder();
    assert_eq!(
        uprobe_register("forker".into(), work, entry, None, ProbeType::Insn),
        0
    );
    let result = run_seed("forker");
    assert_eq!(result.status, ExitStatus::Exited(0));
    let expected = std::fs::read(Path::new(FIXTURES_DIR).join("forker.stdout")).unwrap_or_default();
    assert_eq!(result.stdout, expected);
    let entries = take(&entries);
    assert_eq!(
        entries.len(),
        1,
        "child_work runs once, in the child: {entries:x?}"
    );
    assert_eq!(entries[0].0, work);
    assert_eq!(uprobe_unregister("forker", work), 0);
}

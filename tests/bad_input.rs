//! Bad probe requests and faults, against real programs in the simulator: each request gets
//! its typed error and leaves user memory byte-identical (and the program still runs
//! correctly); forged jumps into the XOL area kill the process instead of looping; a fault
//! of an instruction stepped out of line is reported at the probed address; malformed ELF
//! files are refused or run within the budget, never panic.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use ruprobes::{Consumer, Error, Fault, Unsupported};
use ruprobes_sim::kernel::image::Image;
use ruprobes_sim::kernel::ExitStatus;
use ruprobes_sim::machine::{Config, Machine};
use ruprobes_sim::space::FaultInjection;
use ruprobes_sim::SimError;
use ruprobes_suite::{cases, fixture, fixtures, sites, Fixture};
use ruprobes_trace::{SIGSEGV, SIGTRAP};

/// The bytes of every page of process 1 that the image maps (text, data, bss).
fn image_memory(m: &Machine, image: &Image) -> Vec<(u64, Vec<u8>)> {
    image
        .pages
        .iter()
        .map(|p| {
            (
                p.va,
                m.read_user(1, p.va, p.bytes.len())
                    .unwrap_or_else(|e| panic!("read {:#x}: {e}", p.va)),
            )
        })
        .collect()
}

/// The address of symbol `name`.
fn sym(image: &Image, name: &str) -> u64 {
    image
        .symbols
        .resolve(name)
        .unwrap_or_else(|| panic!("no symbol {name}"))
}

/// A consumer that records nothing and changes nothing.
fn quiet() -> Consumer {
    Consumer::new().on_entry(|_, _| {}).on_post(|_, _| {})
}

/// The first site of `image` inside `func` whose class is `class`.
fn first_site(image: &Image, func: &str, class: ruprobes::decode::Class, len: usize) -> u64 {
    let start = sym(image, func);
    let all = sites(image);
    let end = image
        .symbols
        .symbols()
        .iter()
        .map(|s| s.addr)
        .filter(|&a| a > start)
        .min()
        .unwrap_or(u64::MAX);
    all.iter()
        .find(|s| s.addr >= start && s.addr < end && s.class == Ok(class) && s.len == len)
        .unwrap_or_else(|| panic!("no {class:?} site of length {len} in {func}"))
        .addr
}

/// One bad request: what to set up, what to ask, what error to expect.
struct Case {
    what: &'static str,
    faults: FaultInjection,
    /// Returns the engine error of the bad request.
    request: Request,
    expect: Box<dyn Fn(&Image) -> Error>,
}

/// Makes the bad request on a loaded machine; returns what the machine answered.
type Request = Box<dyn Fn(&mut Machine, &Image) -> Result<(), SimError>>;

fn register_at(addr: u64) -> Request {
    Box::new(move |m, _| m.register(addr, quiet()).map(drop))
}

fn probe_error(result: Result<(), SimError>, what: &str) -> Error {
    match result {
        Err(SimError::Probe { error, .. }) => error,
        other => panic!("{what}: expected an engine error, got {other:?}"),
    }
}

#[test]
fn bad_requests_get_typed_errors_and_leave_memory_identical() {
    let zoo = fixture("insn_zoo");
    let image = zoo.image();
    let expected_stdout =
        std::fs::read(ruprobes_suite::fixtures_dir().join("insn_zoo.stdout")).unwrap_or_default();
    use ruprobes::decode::Class::{Emulate, Xol};
    let xol_site = first_site(&image, "insn_zoo_run", Xol, 4);
    let long_site = first_site(&image, "insn_zoo_run", Emulate, 4);
    let data_page = image
        .pages
        .iter()
        .find(|p| !p.perms.exec)
        .map(|p| p.va)
        .unwrap_or_else(|| panic!("no data page"));

    let mut table: Vec<Case> = vec![
        Case {
            what: "unmapped address",
            faults: FaultInjection::none(),
            request: register_at(0x2000_0000),
            expect: Box::new(|_| Error::NotExecutable(0x2000_0000)),
        },
        Case {
            what: "odd address",
            faults: FaultInjection::none(),
            request: register_at(xol_site + 1),
            expect: Box::new(move |_| Error::Misaligned(xol_site as usize + 1)),
        },
        Case {
            what: "non-executable page",
            faults: FaultInjection::none(),
            request: register_at(data_page),
            expect: Box::new(move |_| Error::NotExecutable(data_page as usize)),
        },
        Case {
            what: "inside an armed 32-bit instruction",
            faults: FaultInjection::none(),
            request: Box::new(move |m, _| {
                m.register(long_site, quiet())
                    .unwrap_or_else(|e| panic!("{e}"));
                m.register(long_site + 2, quiet()).map(drop)
            }),
            expect: Box::new(move |_| Error::Conflict(long_site as usize + 2)),
        },
        Case {
            what: "duplicate registration of one consumer",
            faults: FaultInjection::none(),
            request: Box::new(move |m, _| {
                let consumer = quiet();
                m.register(xol_site, consumer.clone())
                    .unwrap_or_else(|e| panic!("{e}"));
                m.register(xol_site, consumer).map(drop)
            }),
            expect: Box::new(|_| Error::AlreadyRegistered),
        },
        Case {
            what: "unregister of an unknown consumer",
            faults: FaultInjection::none(),
            request: Box::new(move |m, _| {
                let engine = m.engine().unwrap_or_else(|| panic!("own engine"));
                let id = engine
                    .register("insn_zoo", xol_site as usize, quiet(), None)
                    .unwrap_or_else(|e| panic!("{e}"));
                engine
                    .unregister(id, None)
                    .unwrap_or_else(|e| panic!("{e}"));
                engine
                    .unregister(id, None)
                    .map_err(|error| SimError::Probe {
                        spec: "again".into(),
                        error,
                    })
            }),
            expect: Box::new(|_| Error::NotRegistered),
        },
        Case {
            what: "user memory read fails",
            faults: FaultInjection::fail_reads(),
            request: register_at(long_site),
            expect: Box::new(move |_| {
                Error::ReadFault(Fault {
                    addr: long_site as usize,
                })
            }),
        },
        Case {
            what: "breakpoint write fails (emulated instruction)",
            faults: FaultInjection::fail_writes_after(0),
            request: register_at(long_site),
            expect: Box::new(move |_| {
                Error::WriteFault(Fault {
                    addr: long_site as usize,
                })
            }),
        },
        Case {
            what: "XOL slot written, then the breakpoint write fails",
            faults: FaultInjection::fail_writes_after(2), // trampoline, slot, then the breakpoint
            request: register_at(xol_site),
            expect: Box::new(move |_| {
                Error::WriteFault(Fault {
                    addr: xol_site as usize,
                })
            }),
        },
        Case {
            what: "XOL page mapping fails (stepped instruction)",
            faults: FaultInjection::fail_xol_map(),
            request: register_at(xol_site),
            expect: Box::new(|_| Error::XolMapFailed),
        },
        Case {
            what: "XOL page mapping fails (return probe trampoline)",
            faults: FaultInjection::fail_xol_map(),
            request: Box::new(move |m, _| {
                m.register(long_site, Consumer::new().on_return(|_, _| {}))
                    .map(drop)
            }),
            expect: Box::new(|_| Error::XolMapFailed),
        },
    ];
    // Every instruction the core must reject, as labelled in insn_zoo.
    let rejected: &[(&str, Unsupported)] = &[
        ("bad_ecall", Unsupported::System),
        ("bad_lr_d", Unsupported::LoadReserved),
        ("bad_sc_d", Unsupported::LoadReserved),
        ("bad_fence_i", Unsupported::FenceI),
        ("bad_ebreak", Unsupported::System),
        ("bad_c_ebreak", Unsupported::System),
        ("bad_rdcycle", Unsupported::Csr),
        ("bad_rdtime", Unsupported::Csr),
        ("bad_rdinstret", Unsupported::Csr),
        ("bad_csrrw", Unsupported::Csr),
        ("bad_wfi", Unsupported::System),
        ("bad_sret", Unsupported::System),
        ("bad_mret", Unsupported::System),
        ("bad_sfence_vma", Unsupported::System),
        ("bad_cbo_clean", Unsupported::CacheBlock),
        ("bad_unimp", Unsupported::Illegal),
        ("bad_lr_w", Unsupported::LoadReserved),
        ("bad_sc_w", Unsupported::LoadReserved),
    ];
    let labels = image.symbols.with_prefix("bad_").count();
    assert_eq!(
        labels,
        rejected.len(),
        "every bad_* label of insn_zoo is in the table"
    );
    for &(label, why) in rejected {
        let addr = sym(&image, label);
        table.push(Case {
            what: label,
            faults: FaultInjection::none(),
            request: register_at(addr),
            expect: Box::new(move |_| Error::Unsupported {
                addr: addr as usize,
                why,
            }),
        });
    }

    for case in &table {
        let mut m = zoo.machine(Config::default());
        let before = image_memory(&m, &image);
        m.set_faults(case.faults.clone());
        let error = probe_error((case.request)(&mut m, &image), case.what);
        assert_eq!(error, (case.expect)(&image), "{}", case.what);
        m.set_faults(FaultInjection::none());
        // Probes registered on the way (not the bad one) are removed again.
        for id in 0..m.probe_reports().len() {
            let _ = m.unregister(ruprobes_sim::ProbeId(id));
        }
        assert!(
            image_memory(&m, &image) == before,
            "{}: user memory changed",
            case.what
        );
        let result = m.run().unwrap_or_else(|e| panic!("{}: {e}", case.what));
        assert_eq!(
            result.stdout, expected_stdout,
            "{}: the program still runs correctly",
            case.what
        );
        assert_eq!(result.status, ExitStatus::Exited(0), "{}", case.what);
    }
}

/// Unregistering while user memory cannot be written: the error is reported and nothing
/// changes (the probe stays registered and armed), so a retry succeeds and the text ends
/// byte-identical to the ELF.
#[test]
fn unregister_with_a_failing_restore_changes_nothing_and_can_be_retried() {
    let fib = fixture("fib");
    let image = fib.image();
    let addr = sym(&image, "fib");
    let mut m = fib.machine(Config::default());
    let id = m.register(addr, quiet()).unwrap_or_else(|e| panic!("{e}"));
    m.set_faults(FaultInjection::fail_writes_after(0));
    let error = probe_error(m.unregister(id), "unregister");
    assert_eq!(
        error,
        Error::WriteFault(Fault {
            addr: addr as usize
        })
    );
    m.set_faults(FaultInjection::none());
    assert!(
        m.stats(id).is_some(),
        "still registered after the failed unregister"
    );
    m.unregister(id).unwrap_or_else(|e| panic!("retry: {e}"));
    let text = m.read_user(1, addr, 4).unwrap_or_default();
    assert_eq!(
        Some(text),
        image.initial_bytes(addr, 4),
        "restored by the retry"
    );
    let result = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&result.stdout), "fib(10) = 55\n");
    assert_eq!(
        result.status,
        ExitStatus::Exited(0),
        "{:?}",
        result.diagnostics
    );
}

/// Arming at `exec` fails (every write fails): the new image runs unprobed and unchanged.
#[test]
fn arming_failing_at_exec_leaves_the_program_unprobed() {
    let forker = fixture("forker");
    let expected =
        std::fs::read(ruprobes_suite::fixtures_dir().join("forker.stdout")).unwrap_or_default();
    let hello = fixture("hello").image();
    let main = sym(&hello, "main");
    let mut m = forker.machine(Config::default());
    let id = m
        .register_at("hello", main, quiet())
        .unwrap_or_else(|e| panic!("{e}"));
    m.set_faults(FaultInjection::fail_writes_after(0));
    let result = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.stdout, expected);
    assert_eq!(result.status, ExitStatus::Exited(0));
    assert_eq!(m.stats(id).map(|s| s.hits), Some(0));
    assert!(
        result
            .diagnostics
            .iter()
            .any(|d| d.contains("arming probes of hello")),
        "{:?}",
        result.diagnostics
    );
}

/// A 32-bit instruction whose upper half, on its own, is a valid instruction the core
/// accepts: probing the upper half first must not make a later probe of the whole
/// instruction record the breakpoint as part of its original bytes.
#[test]
fn probes_on_both_halves_of_a_32_bit_instruction_restore_memory() {
    let zoo = fixture("insn_zoo");
    let image = zoo.image();
    let all = sites(&image);
    let victim = all
        .iter()
        .filter(|s| s.len == 4 && s.probeable())
        .find(|s| {
            let upper = image.initial_bytes(s.addr + 2, 2).unwrap_or_default();
            ruprobes::decode::decode(&upper).is_ok_and(|i| i.len() == 2)
        })
        .unwrap_or_else(|| panic!("no 32-bit instruction with a valid upper half"));
    for order in [[0u64, 1], [1, 0]] {
        let mut m = zoo.machine(Config::default());
        let before = image_memory(&m, &image);
        let upper = m.register(victim.addr + 2, quiet());
        assert!(
            upper.is_ok(),
            "the upper half alone looks like an instruction: {upper:?}"
        );
        let whole = m.register(victim.addr, quiet());
        assert_eq!(
            whole.map(drop),
            Err(SimError::Probe {
                spec: format!("{:#x}", victim.addr),
                error: Error::Conflict(victim.addr as usize)
            }),
            "{:#x}: the whole instruction overlaps the armed upper half",
            victim.addr
        );
        let ids: Vec<_> = m.probe_reports().iter().map(|r| r.id).collect();
        for &i in &order {
            if let Some(&id) = ids.get(i as usize) {
                m.unregister(id).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        assert!(
            image_memory(&m, &image) == before,
            "{:#x}: user memory restored",
            victim.addr
        );
    }
}

/// An entry handler that sends the thread to `target` (a forged jump into the XOL area).
fn jump_to(target: Arc<AtomicUsize>) -> Consumer {
    Consumer::new().on_entry(move |regs, _| regs.set_pc(target.load(Ordering::Relaxed)))
}

#[test]
fn forged_jumps_into_the_xol_area_kill_with_sigtrap() {
    let fib = fixture("fib");
    let image = fib.image();
    let main = sym(&image, "main");
    let fib_fn = sym(&image, "fib");
    let ld_site = first_site(&image, "main", ruprobes::decode::Class::Xol, 4);
    for what in ["trampoline", "slot start", "slot breakpoint"] {
        let mut m = fib.machine(Config {
            max_insns: 1_000_000,
            ..Config::default()
        });
        // A return probe maps the trampoline; an out-of-line probe takes slot 1.
        m.register(fib_fn, Consumer::new().on_return(|_, _| {}))
            .unwrap_or_else(|e| panic!("{e}"));
        m.register(ld_site, quiet())
            .unwrap_or_else(|e| panic!("{e}"));
        let trampoline = m
            .engine()
            .and_then(|e| e.trampoline(1))
            .unwrap_or_else(|| panic!("trampoline"));
        let target = match what {
            "trampoline" => trampoline,
            "slot start" => trampoline + ruprobes::SLOT_SIZE,
            _ => trampoline + ruprobes::SLOT_SIZE + 4,
        };
        m.register(main, jump_to(Arc::new(AtomicUsize::new(target))))
            .unwrap_or_else(|e| panic!("{e}"));
        let result = m
            .run()
            .unwrap_or_else(|e| panic!("{what}: {e} (must not loop)"));
        // A jump to a slot's start runs the copied instruction with whatever registers the
        // thread has (here a store through a clobbered pointer may fault first).
        let killed = match what {
            "slot start" => matches!(result.status, ExitStatus::Killed(SIGTRAP | SIGSEGV)),
            _ => result.status == ExitStatus::Killed(SIGTRAP),
        };
        assert!(
            killed,
            "{what}: {:?} {:?}",
            result.status, result.diagnostics
        );
    }
}

#[test]
fn a_fault_in_an_xol_slot_is_reported_at_the_probed_address() {
    let sort = fixture("sort");
    let image = sort.image();
    // The first load of a function that is surely called: point its base register at the
    // unmapped page 0 in the entry handler, so the out-of-line step faults.
    let all = sites(&image);
    let main = sym(&image, "main");
    let load = all
        .iter()
        .filter(|s| s.addr >= main && s.len == 4)
        .find_map(|s| {
            let raw = u32::from_le_bytes(image.initial_bytes(s.addr, 4)?.try_into().ok()?);
            (raw & 0x7f == 0x03).then_some((s.addr, ((raw >> 15) & 31) as usize))
        })
        .unwrap_or_else(|| panic!("no load in main"));
    let (addr, base) = load;
    let mut m = sort.machine(Config::default());
    m.register(
        addr,
        Consumer::new().on_entry(move |regs, _| regs.set_reg(base, 8)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let result = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        result.status,
        ExitStatus::Killed(SIGSEGV),
        "{:?}",
        result.diagnostics
    );
    let regs = m.final_regs().unwrap_or_else(|| panic!("final registers"));
    assert_eq!(
        regs.pc, addr,
        "the fault is reported at the probed load, not in the slot"
    );
    assert_eq!(regs.x[base], 8);
    assert!(
        result
            .diagnostics
            .iter()
            .any(|d| d.contains(&format!("pc={addr:#x}")) && d.contains("XOL slot")),
        "{:?}",
        result.diagnostics
    );
}

/// A mutation of an ELF file: overwrite bytes, or cut it short.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
}

fn mutate(elf: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = elf.to_vec();
    for m in mutations {
        match *m {
            Mutation::Set(at, byte) => {
                // Bias towards the headers, where a flip changes the most.
                let len = out.len().max(1);
                let at = if at % 2 == 0 {
                    at % len.min(0x200)
                } else {
                    at % len
                };
                if let Some(b) = out.get_mut(at) {
                    *b = byte;
                }
            }
            Mutation::Truncate(len) => out.truncate(len % (out.len() + 1)),
        }
    }
    out
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        9 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1024), failure_persistence: None, ..ProptestConfig::default() })]

    /// The loader refuses a mutated fixture with an error or runs it within the budget:
    /// never a panic, never an endless run.
    #[test]
    fn malformed_elf_is_refused_or_runs_within_budget(
        which in 0usize..64,
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let all: Vec<Fixture> = fixtures().into_iter().filter(|f| f.name != "sort").collect();
        let f = &all[which % all.len()];
        let elf = mutate(&f.elf, &mutations);
        let mut m = Machine::new(Config { mem_bytes: 16 << 20, max_insns: 200_000, ..Config::default() });
        if m.load(&f.name, &elf).is_ok() {
            match m.run() {
                Ok(_) | Err(SimError::BudgetExhausted { .. }) | Err(SimError::Deadlock)
                | Err(SimError::OutOfMemory) | Err(SimError::UnknownImage(_)) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            prop_assert!(m.instructions() <= 200_000);
        }
    }
}

/// The mutations above both break the loader's checks and produce programs that load and
/// run (mutated code), so the property cannot pass vacuously.
#[test]
fn mutated_elves_are_both_refused_and_run() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(mutation(), 1..8);
    let all = fixtures();
    let (mut refused, mut ran) = (0, 0);
    for i in 0..400 {
        let f = &all[i % all.len()];
        if f.name == "sort" {
            continue;
        }
        let mutations = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("{e}"))
            .current();
        let mut m = Machine::new(Config {
            mem_bytes: 16 << 20,
            max_insns: 200_000,
            ..Config::default()
        });
        match m.load(&f.name, &mutate(&f.elf, &mutations)) {
            Ok(_) => {
                let _ = m.run();
                ran += 1;
            }
            Err(SimError::BadElf { .. }) => refused += 1,
            Err(e) => panic!("{}: unexpected load error {e}", f.name),
        }
    }
    assert!(refused > 40 && ran > 40, "refused {refused}, ran {ran}");
}

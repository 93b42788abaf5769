//! Property tests over the real fixture programs in the simulator.
//!
//! - Probed ≡ unprobed: random sets of probe sites (drawn from every instruction start of
//!   the program's text) with entry, post and return handlers that only record leave the
//!   output, exit status, syscall sequence and final register file unchanged.
//! - Exact counts: each probe's hit count is the number of times its pc executed in the
//!   unprobed run (the interpreter's per-pc counts); return counts are the calls that
//!   completed while hijacked, and the missed counter is the calls beyond depth 64, both
//!   from a reference model run over the program's full instruction trace.
//! - Probe everything: a probe on every supported instruction, one case per fixture.
//! - Unregistering every probe restores the text byte-identical to the ELF, also mid-run.
//! - Handlers that change registers (a0, or the pc to skip a call) do what a user expects.
//! - The instruction clock (what `rdinstret`, `rdcycle`, `rdtime`, `get_time` and latency
//!   histograms read) is the same probed and unprobed, in every probed-vs-unprobed check.
//!
//! Raise the case counts with `PROPTEST_CASES=N cargo test --test properties`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use proptest::prelude::*;
use proptest::sample::Index;
use ruprobes::{abi, Consumer, Error};
use ruprobes_sim::kernel::image::Image;
use ruprobes_sim::machine::{Config, Progress};
use ruprobes_sim::{ProbeId, SimError};
use ruprobes_suite::{cases, finish, fixture, fixtures, sites, Fixture, Outcome, Site};

/// What the unprobed run of a fixture gives, plus a full instruction trace.
struct Reference {
    fixture: Fixture,
    image: Arc<Image>,
    sites: Vec<Site>,
    /// Addresses of function symbols (where return probes go).
    functions: Vec<u64>,
    outcome: Outcome,
    /// How often each pc executed (interpreter, single-stepped).
    pc_counts: HashMap<u64, u64>,
    /// Every probeable instruction executed: (pid, pc, sp, ra), in order, from a run with a
    /// probe on every site (itself checked against `pc_counts` and `outcome`).
    trace: Vec<Step>,
}

#[derive(Clone, Copy, Debug)]
struct Step {
    pid: usize,
    pc: u64,
    sp: u64,
    ra: u64,
}

impl Reference {
    fn new(fixture: Fixture) -> Self {
        let image = fixture.image();
        let sites = sites(&image);
        // A return probe on a function that returns twice (setjmp) saves the trampoline as
        // the longjmp target; the second return then finds no pending instance and the
        // process is killed (as on Linux). Such functions get no return probes here.
        let mut functions: Vec<u64> = image
            .symbols
            .symbols()
            .iter()
            .filter(|s| s.is_func && !s.name.contains("setjmp"))
            .map(|s| s.addr)
            .collect();
        functions.dedup();
        functions.retain(|a| sites.iter().any(|s| s.addr == *a && s.probeable()));
        let outcome = finish(&mut fixture.machine(Config::default()));
        let mut counting = fixture.machine(Config {
            count_pcs: true,
            ..Config::default()
        });
        let counted = finish(&mut counting);
        assert_eq!(
            counted, outcome,
            "{}: counting pcs changes nothing",
            fixture.name
        );
        let pc_counts = counting.pc_counts().clone();
        Reference {
            fixture,
            image,
            sites,
            functions,
            outcome,
            pc_counts,
            trace: Vec::new(),
        }
    }

    /// Expected hits of a probe at `addr` (only meaningful for programs that do not exec:
    /// the counts are by address over every image).
    fn count(&self, addr: u64) -> u64 {
        self.pc_counts.get(&addr).copied().unwrap_or(0)
    }

    /// Whether per-pc counts belong to this program alone (forker execs hello, whose
    /// addresses overlap).
    fn counts_are_exact(&self) -> bool {
        self.fixture.name != "forker"
    }

    /// Expected (returns, missed) per return-probed function, from the instruction trace:
    /// a call to a probed function is hijacked unless 64 hijacked calls are pending (then
    /// missed); it completes when the thread reaches the caller's return address with the
    /// entry's `sp`. Pending calls whose frames lie below the current `sp` were unwound
    /// (longjmp) and never complete.
    ///
    /// Functions called with a return address the trace cannot see (an instruction that
    /// cannot be probed, such as the `ebreak` of trap_self) are left out.
    fn returns(&self, probed: &[u64]) -> HashMap<u64, (u64, u64)> {
        let visible: std::collections::HashSet<u64> = self
            .sites
            .iter()
            .filter(|s| s.probeable())
            .map(|s| s.addr)
            .collect();
        let mut blind = std::collections::HashSet::new();
        let mut out: HashMap<u64, (u64, u64)> = probed.iter().map(|&f| (f, (0, 0))).collect();
        let mut pending: HashMap<usize, Vec<(u64, u64, u64)>> = HashMap::new(); // (func, sp, ra)
        for step in &self.trace {
            let stack = pending.entry(step.pid).or_default();
            if stack
                .iter()
                .any(|&(_, sp, ra)| ra == step.pc && sp == step.sp)
            {
                stack.retain(|&(_, sp, _)| sp >= step.sp);
                while let Some(&(func, sp, ra)) = stack.last() {
                    if ra != step.pc || sp != step.sp {
                        break;
                    }
                    stack.pop();
                    out.entry(func).or_default().0 += 1;
                }
            }
            if probed.contains(&step.pc) {
                stack.retain(|&(_, sp, _)| sp >= step.sp);
                if stack.len() >= ruprobes::MAX_RETURN_DEPTH {
                    out.entry(step.pc).or_default().1 += 1;
                } else {
                    stack.push((step.pc, step.sp, step.ra));
                }
                if !visible.contains(&step.ra) {
                    blind.insert(step.pc);
                }
            }
        }
        out.retain(|f, _| !blind.contains(f));
        out
    }
}

/// A registered recording probe: address, handle, entry, post and (for return probes)
/// return handler call counts.
type Recorded = (
    u64,
    ProbeId,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Option<Arc<AtomicU64>>,
);

/// A consumer counting entry and post calls; with `ret`, also returns.
fn recorder(
    entries: &Arc<AtomicU64>,
    posts: &Arc<AtomicU64>,
    returns: Option<&Arc<AtomicU64>>,
) -> Consumer {
    let (e, p) = (entries.clone(), posts.clone());
    let c = Consumer::new()
        .on_entry(move |_, _| {
            e.fetch_add(1, Ordering::Relaxed);
        })
        .on_post(move |_, _| {
            p.fetch_add(1, Ordering::Relaxed);
        });
    match returns {
        Some(r) => {
            let r = r.clone();
            c.on_return(move |_, _| {
                r.fetch_add(1, Ordering::Relaxed);
            })
        }
        None => c,
    }
}

/// The reference of every fixture, computed once per test binary.
fn references() -> &'static [Reference] {
    static REFS: OnceLock<Vec<Reference>> = OnceLock::new();
    REFS.get_or_init(|| {
        fixtures()
            .into_iter()
            .map(|f| {
                let mut r = Reference::new(f);
                r.trace = probe_everything(&r);
                r
            })
            .collect()
    })
}

/// Runs `r`'s program with a recording probe on every supported site and checks the
/// result against the unprobed run; returns the instruction trace the probes saw.
fn probe_everything(r: &Reference) -> Vec<Step> {
    let name = &r.fixture.name;
    let mut m = r.fixture.machine(Config::default());
    let trace = Arc::new(Mutex::new(Vec::new()));
    let mut ids = Vec::new();
    for site in &r.sites {
        let t = trace.clone();
        let consumer = Consumer::new().on_entry(move |regs, hit| {
            let step = Step {
                pid: hit.pid,
                pc: hit.addr as u64,
                sp: regs.reg(abi::SP) as u64,
                ra: regs.reg(abi::RA) as u64,
            };
            t.lock().unwrap_or_else(|e| e.into_inner()).push(step);
        });
        match (m.register(site.addr, consumer), site.class) {
            (Ok(id), Ok(_)) => ids.push((site.addr, id)),
            (
                Err(SimError::Probe {
                    error: Error::Unsupported { why, .. },
                    ..
                }),
                Err(expected),
            ) => {
                assert_eq!(why, expected, "{name} {:#x}", site.addr)
            }
            (result, class) => panic!("{name} {:#x} ({class:?}): {result:?}", site.addr),
        }
    }
    assert!(!ids.is_empty(), "{name}: some site is probeable");
    let outcome = finish(&mut m);
    assert_same(
        &r.outcome,
        &outcome,
        &format!("{name}, every site probed"),
        false,
    );
    if r.counts_are_exact() {
        for (addr, id) in &ids {
            let hits = m.stats(*id).map_or(0, |s| s.hits);
            assert_eq!(
                hits,
                r.count(*addr),
                "{name} {addr:#x}: hits of the probe-everything run"
            );
        }
    }
    let trace = std::mem::take(&mut *trace.lock().unwrap_or_else(|e| e.into_inner()));
    trace
}

/// Probed and unprobed runs agree. With return probes, `ra` at exit may legitimately hold
/// the trampoline address (a function returned through it and `ra` was not reloaded).
fn assert_same(expected: &Outcome, got: &Outcome, what: &str, ra_may_differ: bool) {
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&expected.stdout),
        "{what}: output"
    );
    assert_eq!(got.status, expected.status, "{what}: status");
    assert_eq!(got.events, expected.events, "{what}: syscalls and exits");
    // Every instruction counts once however a probe ran it (CPU, XOL slot, or simulated or
    // emulated in the trap); breakpoints count zero: the program's clocks read the same.
    assert_eq!(
        got.instructions, expected.instructions,
        "{what}: instruction clock"
    );
    match (expected.final_regs, got.final_regs) {
        (Some(mut e), Some(mut g)) => {
            if ra_may_differ
                && e.x[abi::RA] != g.x[abi::RA]
                && g.x[abi::RA] >= ruprobes::testing::XOL_BASE as u64
            {
                e.x[abi::RA] = 0;
                g.x[abi::RA] = 0;
            }
            assert_eq!(g, e, "{what}: final registers");
        }
        (e, g) => assert_eq!(g, e, "{what}: final registers"),
    }
}

#[test]
fn probe_everything_equals_unprobed_for_every_fixture() {
    let refs = references();
    assert_eq!(refs.len(), fixtures().len());
    for r in refs {
        // (The probed run itself is checked in `probe_everything`.)
        assert!(
            !r.trace.is_empty(),
            "{}: the probes saw the program run",
            r.fixture.name
        );
        if r.counts_are_exact() {
            let executed: u64 = r
                .sites
                .iter()
                .filter(|s| s.probeable())
                .map(|s| r.count(s.addr))
                .sum();
            assert_eq!(
                r.trace.len() as u64,
                executed,
                "{}: one hit per executed instruction",
                r.fixture.name
            );
        }
    }
}

/// Return probes on every function of every fixture at once (functions that return twice
/// excepted): counts match the reference model, including the missed ones of `deep`.
#[test]
fn return_probes_on_every_function_count_exactly() {
    let mut missed_total = 0;
    for r in references() {
        let picks: Vec<Index> = Vec::new();
        let all: Vec<u64> = r.functions.clone();
        let expected = r.returns(&all);
        check_probes(r, &picks, &all);
        missed_total += expected.values().map(|(_, missed)| missed).sum::<u64>();
    }
    assert!(
        missed_total > 0,
        "some fixture (deep) recurses beyond the return-depth limit"
    );
}

#[test]
fn deep_recursion_misses_returns_beyond_depth_64() {
    let r = references()
        .iter()
        .find(|r| r.fixture.name == "deep")
        .unwrap_or_else(|| panic!("deep"));
    let deep = r
        .image
        .symbols
        .resolve("deep")
        .unwrap_or_else(|| panic!("deep symbol"));
    let mut m = r.fixture.machine(Config::default());
    let id = m
        .register(deep, Consumer::new().on_return(|_, _| {}))
        .unwrap_or_else(|e| panic!("{e}"));
    finish(&mut m);
    let stats = m.stats(id).unwrap_or_default();
    assert_eq!(stats.hits, r.count(deep));
    assert_eq!(
        stats.returns,
        ruprobes::MAX_RETURN_DEPTH as u64,
        "{stats:?}"
    );
    assert_eq!(
        stats.returns + stats.missed,
        stats.hits,
        "every call completes: {stats:?}"
    );
    assert_eq!(
        r.returns(&[deep]).get(&deep).copied(),
        Some((stats.returns, stats.missed))
    );
}

/// One random case: a fixture, entry probe sites, return-probed functions.
fn check_random_probes(r: &Reference, picks: &[Index], ret_picks: &[Index]) {
    let ret_funcs: Vec<u64> = if r.functions.is_empty() {
        Vec::new()
    } else {
        ret_picks.iter().map(|i| *i.get(&r.functions)).collect()
    };
    check_probes(r, picks, &ret_funcs);
}

/// Entry probes at the picked sites and return probes on `ret_funcs`: the run equals the
/// unprobed one and every counter is exact.
fn check_probes(r: &Reference, picks: &[Index], ret_funcs: &[u64]) {
    let name = &r.fixture.name;
    let mut chosen: Vec<Site> = picks.iter().map(|i| *i.get(&r.sites)).collect();
    chosen.sort_by_key(|s| s.addr);
    chosen.dedup_by_key(|s| s.addr);
    let mut ret_funcs = ret_funcs.to_vec();
    ret_funcs.sort_unstable();
    ret_funcs.dedup();

    let mut m = r.fixture.machine(Config::default());
    let mut probes: Vec<Recorded> = Vec::new();
    for site in &chosen {
        let (e, p) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        match (m.register(site.addr, recorder(&e, &p, None)), site.class) {
            (Ok(id), Ok(_)) => probes.push((site.addr, id, e, p, None)),
            (
                Err(SimError::Probe {
                    error: Error::Unsupported { why, .. },
                    ..
                }),
                Err(expected),
            ) => {
                assert_eq!(why, expected, "{name} {:#x}", site.addr)
            }
            (result, class) => panic!("{name} {:#x} ({class:?}): {result:?}", site.addr),
        }
    }
    for &f in &ret_funcs {
        let (e, p, ret) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let id = m
            .register(f, recorder(&e, &p, Some(&ret)))
            .unwrap_or_else(|err| panic!("{name} ret {f:#x}: {err}"));
        probes.push((f, id, e, p, Some(ret)));
    }
    let what = format!(
        "{name} with probes at {:x?} and return probes at {ret_funcs:x?}",
        chosen.iter().map(|s| s.addr).collect::<Vec<_>>()
    );
    let outcome = finish(&mut m);
    assert_same(&r.outcome, &outcome, &what, !ret_funcs.is_empty());
    if !r.counts_are_exact() {
        return;
    }
    let expected_returns = r.returns(&ret_funcs);
    for (addr, id, e, p, ret) in &probes {
        let stats = m.stats(*id).unwrap_or_default();
        let runs = r.count(*addr);
        assert_eq!(stats.hits, runs, "{what}: hits at {addr:#x}");
        assert_eq!(
            e.load(Ordering::Relaxed),
            runs,
            "{what}: entry handler calls at {addr:#x}"
        );
        // Post handlers run for every hit, except where the thread left for good while
        // stepping (the process exited or was killed in the probed instruction).
        assert!(
            p.load(Ordering::Relaxed) <= runs && p.load(Ordering::Relaxed) + 1 >= runs,
            "{what}: post calls at {addr:#x}"
        );
        if let Some(ret) = ret {
            let Some(&(returns, missed)) = expected_returns.get(addr) else {
                continue;
            };
            assert_eq!(stats.returns, returns, "{what}: returns of {addr:#x}");
            assert_eq!(
                ret.load(Ordering::Relaxed),
                returns,
                "{what}: return handler calls of {addr:#x}"
            );
            assert_eq!(stats.missed, missed, "{what}: missed returns of {addr:#x}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1024), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_probes_change_nothing_and_count_exactly(
        which in any::<Index>(),
        picks in prop::collection::vec(any::<Index>(), 1..24),
        ret_picks in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        let r = which.get(references());
        check_random_probes(r, &picks, &ret_picks);
    }

    #[test]
    fn unregister_all_restores_the_text_also_mid_run(
        which in any::<Index>(),
        picks in prop::collection::vec(any::<Index>(), 1..48),
        late_picks in prop::collection::vec(any::<Index>(), 0..16),
        ret_picks in prop::collection::vec(any::<Index>(), 0..4),
        stop_at in 0.0f64..1.0,
    ) {
        let r = which.get(references());
        let mut m = r.fixture.machine(Config::default());
        let text = text_pages(&r.image);
        let mut ids = Vec::new();
        let quiet = || Consumer::new().on_entry(|_, _| {}).on_post(|_, _| {});
        for i in &picks {
            if let Ok(id) = m.register(i.get(&r.sites).addr, quiet()) {
                ids.push(id);
            }
        }
        for i in &ret_picks {
            if let Some(&f) = (!r.functions.is_empty()).then(|| i.get(&r.functions)) {
                ids.push(m.register(f, Consumer::new().on_return(|_, _| {})).unwrap_or_else(|e| panic!("{e}")));
            }
        }
        // Run part of the way, add more probes (the thread may be paused inside an XOL
        // slot), run on, then remove every probe.
        let total = r.pc_counts.values().sum::<u64>();
        let first = (total as f64 * stop_at / 2.0) as u64;
        let mut progress = m.run_for(first).unwrap_or_else(|e| panic!("{e}"));
        if progress == Progress::Paused {
            for i in &late_picks {
                if let Ok(id) = m.register(i.get(&r.sites).addr, quiet()) {
                    ids.push(id);
                }
            }
            progress = m.run_for(first).unwrap_or_else(|e| panic!("{e}"));
        }
        for id in ids {
            m.unregister(id).unwrap_or_else(|e| panic!("{e}"));
        }
        if progress == Progress::Paused && m.pids().contains(&1) {
            for (va, bytes) in &text {
                let now = m.read_user(1, *va, bytes.len()).unwrap_or_else(|e| panic!("{e}"));
                prop_assert!(&now == bytes, "{}: text page {:#x} differs from the ELF after unregistering", r.fixture.name, va);
            }
        }
        let outcome = finish(&mut m);
        assert_same(&r.outcome, &outcome, &format!("{}: unregistered mid-run", r.fixture.name), true);
    }
}

/// The executable pages of an image with their ELF bytes.
fn text_pages(image: &Image) -> Vec<(u64, Vec<u8>)> {
    image
        .pages
        .iter()
        .filter(|p| p.perms.exec)
        .map(|p| (p.va, p.bytes.to_vec()))
        .collect()
}

#[test]
fn unregister_all_before_running_restores_the_text() {
    for r in references() {
        let mut m = r.fixture.machine(Config::default());
        let ids: Vec<ProbeId> = r
            .sites
            .iter()
            .filter_map(|s| m.register(s.addr, Consumer::new()).ok())
            .collect();
        let armed: Vec<(u64, Vec<u8>)> = text_pages(&r.image)
            .iter()
            .map(|(va, b)| (*va, m.read_user(1, *va, b.len()).unwrap_or_default()))
            .collect();
        assert!(
            armed != text_pages(&r.image),
            "{}: breakpoints are in the text",
            r.fixture.name
        );
        for id in ids {
            m.unregister(id).unwrap_or_else(|e| panic!("{e}"));
        }
        for (va, bytes) in text_pages(&r.image) {
            assert!(
                m.read_user(1, va, bytes.len()).unwrap_or_default() == bytes,
                "{} {va:#x}",
                r.fixture.name
            );
        }
    }
}

/// A handler that unregisters its own probe (through the machine's queue) after `n` hits:
/// exactly `n` hits, the text is the ELF's again, and the run is unchanged.
#[test]
fn a_handler_can_unregister_its_own_probe_mid_run() {
    let r = references()
        .iter()
        .find(|r| r.fixture.name == "sort")
        .unwrap_or_else(|| panic!("sort"));
    let site = r
        .sites
        .iter()
        .filter(|s| s.probeable())
        .max_by_key(|s| r.count(s.addr))
        .unwrap_or_else(|| panic!("a hot site"));
    let n = r.count(site.addr) / 2;
    assert!(n > 1000, "a hot site");
    let mut m = r.fixture.machine(Config::default());
    let queue = m.unregister_queue();
    let hits = Arc::new(AtomicU64::new(0));
    let id_cell = Arc::new(OnceLock::new());
    let (h, cell) = (hits.clone(), id_cell.clone());
    let id = m
        .register(
            site.addr,
            Consumer::new().on_entry(move |_, _| {
                if h.fetch_add(1, Ordering::Relaxed) + 1 == n {
                    if let Some(&id) = cell.get() {
                        queue.push(id);
                    }
                }
            }),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    id_cell.set(id).unwrap_or_else(|_| panic!("set once"));
    let outcome = finish(&mut m);
    assert_same(
        &r.outcome,
        &outcome,
        "sort, probe unregistered by its handler",
        false,
    );
    assert_eq!(hits.load(Ordering::Relaxed), n);
    assert_eq!(
        m.stats(id).map(|s| s.hits),
        Some(n),
        "counters frozen at unregistration"
    );
    for (va, bytes) in text_pages(&r.image) {
        assert!(
            m.read_user(1, va, bytes.len()).unwrap_or_default() == bytes,
            "text at {va:#x} is the ELF's"
        );
    }
}

/// A probe on a program that a child `exec`s is armed by the exec: forker's child runs
/// hello, whose `main` is hit once, by pid 2.
#[test]
fn exec_arms_the_probes_of_the_new_image() {
    let r = references()
        .iter()
        .find(|r| r.fixture.name == "forker")
        .unwrap_or_else(|| panic!("forker"));
    let hello = fixture("hello").image();
    let main = hello
        .symbols
        .resolve("main")
        .unwrap_or_else(|| panic!("hello main"));
    let mut m = r.fixture.machine(Config::default());
    let pids = Arc::new(Mutex::new(Vec::new()));
    let p = pids.clone();
    let id = m
        .register_at(
            "hello",
            main,
            Consumer::new()
                .on_entry(move |_, hit| p.lock().unwrap_or_else(|e| e.into_inner()).push(hit.pid)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let outcome = finish(&mut m);
    assert_same(&r.outcome, &outcome, "forker with a probe on hello", false);
    assert_eq!(*pids.lock().unwrap_or_else(|e| e.into_inner()), vec![2]);
    assert_eq!(m.stats(id).map(|s| s.hits), Some(1));
}

#[test]
fn an_entry_handler_that_sets_a0_changes_the_argument() {
    let fib = fixture("fib");
    let image = fib.image();
    let addr = image
        .symbols
        .resolve("fib")
        .unwrap_or_else(|| panic!("fib"));
    let mut m = fib.machine(Config::default());
    let first = Arc::new(AtomicU64::new(0));
    let f = first.clone();
    let id = m
        .register(
            addr,
            Consumer::new().on_entry(move |regs, _| {
                if f.fetch_add(1, Ordering::Relaxed) == 0 {
                    regs.set_reg(abi::A0, 5);
                }
            }),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let result = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        String::from_utf8_lossy(&result.stdout),
        "fib(10) = 5\n",
        "fib(5) was computed"
    );
    // fib(5) makes as many calls as the naive recursion of fib(5) does here.
    assert!(
        m.stats(id).is_some_and(|s| s.hits > 1 && s.hits < 89),
        "{:?}",
        m.stats(id)
    );
}

#[test]
fn an_entry_handler_that_sets_the_pc_skips_the_call() {
    let fib = fixture("fib");
    let image = fib.image();
    let addr = image
        .symbols
        .resolve("fib")
        .unwrap_or_else(|| panic!("fib"));
    let mut m = fib.machine(Config::default());
    // Return 7 at once: a0 = 7, pc = ra (the probed function never runs).
    let id = m
        .register(
            addr,
            Consumer::new()
                .on_entry(|regs, _| {
                    regs.set_reg(abi::A0, 7);
                    let ra = regs.reg(abi::RA);
                    regs.set_pc(ra);
                })
                .on_post(|_, _| panic!("the skipped instruction has no post-step")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // A return consumer on the same probe: the skipped call never returns through it.
    let ret = m.register(
        addr,
        Consumer::new().on_return(|_, _| panic!("no return of a skipped call")),
    );
    let ret = ret.unwrap_or_else(|e| panic!("{e}"));
    let result = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&result.stdout), "fib(10) = 7\n");
    assert_eq!(
        m.stats(id).map(|s| s.hits),
        Some(1),
        "no recursion happened"
    );
    assert_eq!(m.stats(ret).map(|s| (s.returns, s.missed)), Some((0, 0)));
}

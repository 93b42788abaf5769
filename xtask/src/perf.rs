//! `cargo xtask perf [--json] [FIXTURE ...]`: what probes cost on real programs.
//!
//! First the core alone ([`measure_core`]): nanoseconds per hit by class and as probes
//! multiply, through the public trap API with an in-memory user space. Then, for each
//! fixture (default: every one in `fixtures/bin/MANIFEST`), it runs the program in the
//! simulator several ways, all in this one process, and prints one table (see docs/PERF.md
//! for how to read it):
//! - unprobed: instructions retired and wall time (the simulator's MIPS);
//! - one run per instruction class with a do-nothing probe on every site of that class,
//!   and one with a return probe on every function: breakpoint traps per probe hit;
//! - a probe on every instruction the core accepts (the sites are found by decoding from
//!   the function symbols): the share of sites, and of hits, that cost one trap, and the
//!   slowdown;
//! - entry + return probes on the most-called function: the slowdown;
//! - the same program on rvemu's CPU (see [`rvemu_user`]), in a child process: its MIPS.
//!
//! Last, for the benchmark fixture (`bench`, not in the table), the tracer CLI as a user
//! runs it, with a probe on every instruction: wall time, slowdown and peak RSS of
//! `ruprobes-sim` child processes, next to a do-nothing consumer's figure ([`tracer`]).
//! It runs when no fixture is named, or when `bench` is.
//!
//! Wall times are the fastest of several runs; slowdowns are ratios of times taken in the
//! same run of this command. Measuring needs an optimised build, so a debug build of xtask
//! re-runs itself with `cargo run --release`.

#[path = "../../benches/support/workload.rs"]
#[allow(dead_code)]
mod workload;

#[path = "../../benches/support/hits.rs"]
#[allow(dead_code)]
mod hits;

mod rvemu_user;
mod tracer;

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::time::Instant;

use hits::{Hits, Many, Site};

use ruprobes::decode::Class;
use ruprobes_sim::kernel::ExitStatus;
use ruprobes_sim::machine::{Machine, RunResult};
use serde::{Deserialize, Serialize};
use workload::{
    add_probes, fixture_elf, fixture_names, functions, hits, hottest_function, sites, Kind,
};

/// The signal both kernels kill a process with on a breakpoint that is not a probe's.
const SIGTRAP: i32 = 5;
/// Fewest timed runs of each configuration.
const MIN_RUNS: usize = 3;
/// Timed runs of a configuration go on until they took this long together (or 20 runs).
const MIN_SECS: f64 = 0.3;
const MAX_RUNS: usize = 20;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Per-hit costs in the core.
    pub core: CoreReport,
    /// One entry per fixture.
    pub fixtures: Vec<FixtureReport>,
    /// The tracer CLI on the benchmark fixture (when it was asked for, or by default).
    pub tracer: Option<tracer::TracerReport>,
}

/// Per-hit cost in the core through the public trap API (in-memory user space), each the
/// fastest of [`ROUNDS`] batches of [`BATCH`] hits, all cases interleaved round by round
/// so that a busy machine slows them alike.
#[derive(Debug, Serialize)]
pub struct CoreReport {
    /// Nanoseconds per hit (all its traps), by class; the first is the floor (not ours).
    pub per_hit_ns: Vec<(String, f64)>,
    /// Per-hit cost as probes multiply, one entry per kind of hit.
    pub scaling: Vec<Scaling>,
}

/// Per-hit cost of one kind of hit with 1, 1 000 and 100 000 probes of its class armed in
/// one process.
#[derive(Debug, Serialize)]
pub struct Scaling {
    /// The kind of hit, e.g. "emulated, fixed site".
    pub hit: String,
    /// Nanoseconds per hit (all its traps) with this many probes armed.
    pub ns: Vec<(usize, f64)>,
    /// The cost with the most probes over the cost with one.
    pub ratio: f64,
}

/// Batches per case in [`measure_core`].
const ROUNDS: usize = 50;
/// Hits per batch.
const BATCH: u32 = 10_000;
/// Probe counts of the scaling measurement.
const SCALES: [usize; 3] = [1, 1_000, 100_000];
/// The kinds of scaling hit: name, out of line, spread over all probes (else one fixed site).
const SCALING_HITS: [(&str, bool, bool); 4] = [
    ("emulated, fixed site", false, false),
    ("emulated, spread", false, true),
    ("out-of-line, fixed site", true, false),
    ("out-of-line, spread", true, true),
];

/// Times `BATCH` calls of `hit`; nanoseconds per call, or `None` if one failed.
fn batch(mut hit: impl FnMut() -> bool) -> Option<f64> {
    let start = Instant::now();
    for _ in 0..BATCH {
        if !black_box(hit()) {
            return None;
        }
    }
    Some(start.elapsed().as_nanos() as f64 / f64::from(BATCH))
}

fn measure_core() -> Result<CoreReport, String> {
    let mut hits = Hits::new().map_err(|e| format!("arming the core probes: {e}"))?;
    // One engine per (kind, count); each case keeps its own walk over its probes.
    let mut cases = Vec::new();
    for (_, xol, spread) in SCALING_HITS {
        for n in SCALES {
            let many = Many::new(n, 0, xol).map_err(|e| format!("arming {n} probes: {e}"))?;
            cases.push((many, spread));
        }
    }
    let mut per_site = [f64::INFINITY; Site::ALL.len()];
    let mut per_case = vec![f64::INFINITY; cases.len()];
    for _ in 0..ROUNDS {
        for (best, &site) in per_site.iter_mut().zip(&Site::ALL) {
            let ns = batch(|| hits.hit(site))
                .ok_or_else(|| format!("{} hit not handled", site.name()))?;
            *best = best.min(ns);
        }
        for (best, (many, spread)) in per_case.iter_mut().zip(&mut cases) {
            let ns = if *spread {
                batch(|| many.hit_spread())
            } else {
                batch(|| many.hit())
            };
            *best = best.min(ns.ok_or("scaling hit not handled")?);
        }
    }
    let scaling = SCALING_HITS
        .iter()
        .zip(per_case.chunks(SCALES.len()))
        .map(|((name, _, _), ns)| Scaling {
            hit: name.to_string(),
            ns: SCALES.into_iter().zip(ns.iter().copied()).collect(),
            ratio: ns[SCALES.len() - 1] / ns[0],
        })
        .collect();
    Ok(CoreReport {
        per_hit_ns: Site::ALL
            .iter()
            .map(|s| s.name().to_string())
            .zip(per_site)
            .collect(),
        scaling,
    })
}

/// The report on one fixture.
#[derive(Debug, Serialize)]
pub struct FixtureReport {
    /// The fixture's name.
    pub fixture: String,
    /// Instructions retired by the unprobed run.
    pub instructions: u64,
    /// Probe sites found by decoding the functions, by class.
    pub sites: SiteCounts,
    /// Breakpoint traps per probe hit, by class (`None`: no site of the class was hit).
    pub traps_per_hit: TrapsPerHit,
    /// With a probe on every accepted site: the share that costs one trap.
    pub one_trap_share: OneTrapShare,
    /// The most-called function (demangled) and its calls.
    pub hottest: Option<(String, u64)>,
    /// Wall time probed / unprobed.
    pub slowdown: Slowdown,
    /// Unprobed guest instructions per second, in millions.
    pub sim_mips: f64,
    /// The same program on rvemu.
    pub rvemu: Result<RvemuReport, String>,
    /// The probed runs whose exit status (named) or output differ from the unprobed run's.
    pub differing_runs: Vec<String>,
}

/// Probe sites by class.
#[derive(Debug, Default, Serialize)]
pub struct SiteCounts {
    /// Simulated in the trap (pc-relative: branches, jumps, auipc).
    pub simulate: usize,
    /// Emulated in the trap (register-only integer ops).
    pub emulate: usize,
    /// Stepped out of line (loads, stores, AMOs, …).
    pub xol: usize,
    /// Instructions the core refuses (or that did not register).
    pub rejected: usize,
}

/// Breakpoint traps per hit.
#[derive(Debug, Default, Serialize)]
pub struct TrapsPerHit {
    /// Simulated sites.
    pub simulate: Option<f64>,
    /// Emulated sites.
    pub emulate: Option<f64>,
    /// Out-of-line sites.
    pub xol: Option<f64>,
    /// Return probes on every function: entry trap(s) plus the return trap, per call.
    pub uretprobe: Option<f64>,
}

/// The share of one-trap probes with a probe on every accepted site.
#[derive(Debug, Default, Serialize)]
pub struct OneTrapShare {
    /// Of the sites.
    pub sites: f64,
    /// Of the hits in the run.
    pub hits: Option<f64>,
}

/// Probed / unprobed wall time.
#[derive(Debug, Default, Serialize)]
pub struct Slowdown {
    /// Entry and return probes on the most-called function.
    pub hottest_entry_return: Option<f64>,
    /// A probe on every accepted site.
    pub every_instruction: f64,
}

/// The program run on rvemu's CPU.
#[derive(Debug, Serialize)]
pub struct RvemuReport {
    /// Instructions it executed.
    pub instructions: u64,
    /// Millions of instructions per second.
    pub mips: f64,
    /// Whether its output, exit code and instruction count equal the simulator's.
    pub same_as_sim: bool,
}

/// What the rvemu child process reports.
#[derive(Debug, Serialize, Deserialize)]
struct RvemuRun {
    instructions: u64,
    secs: f64,
    stdout: String,
    /// `None`: ended by the program's own breakpoint.
    exit_code: Option<i64>,
}

/// Entry point of `cargo xtask perf`.
pub fn run(args: &[String]) -> Result<(), String> {
    if let [flag, name] = args {
        if flag == "--rvemu-child" {
            return rvemu_child(name);
        }
    }
    if let Some(bad) = args.iter().find(|a| a.starts_with("--") && *a != "--json") {
        return Err(format!(
            "unknown option {bad} (usage: cargo xtask perf [--json] [FIXTURE ... | bench])"
        ));
    }
    if cfg!(debug_assertions) {
        return rerun_optimised(args);
    }
    let json = args.iter().any(|a| a == "--json");
    let given: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    // The benchmark fixture is measured through the tracer CLI, not in the table.
    let with_tracer = given.is_empty() || given.iter().any(|n| *n == tracer::FIXTURE);
    let names: Vec<String> = if given.is_empty() {
        fixture_names().map_err(|e| format!("reading the fixture manifest: {e}"))?
    } else {
        given
            .into_iter()
            .filter(|n| *n != tracer::FIXTURE)
            .cloned()
            .collect()
    };
    eprintln!("perf: core");
    let core = measure_core()?;
    let mut fixtures = Vec::new();
    for name in &names {
        eprintln!("perf: {name}");
        fixtures.push(measure(name)?);
    }
    let tracer = with_tracer.then(tracer::measure).transpose()?;
    let report = Report {
        core,
        fixtures,
        tracer,
    };
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print_core(&report.core);
        if !report.fixtures.is_empty() {
            print_table(&report.fixtures);
        }
        if let Some(t) = &report.tracer {
            println!();
            tracer::print(t);
        }
    }
    Ok(())
}

/// Runs this command again from an optimised build (timings of a debug build mean little).
fn rerun_optimised(args: &[String]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "xtask",
            "--",
            "perf",
        ])
        .args(args)
        .current_dir(crate::repo_root())
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the optimised perf run failed ({status})"))
    }
}

/// A loaded machine for `name`, with probes added by `probe`.
fn setup(name: &str, elf: &[u8], probe: impl FnOnce(&mut Machine)) -> Result<Machine, String> {
    let mut m = workload::machine(name, elf).map_err(|e| format!("{name}: {e}"))?;
    probe(&mut m);
    Ok(m)
}

/// A finished timed run: the fastest time, and the last run's machine, result and whatever
/// its set-up returned (e.g. probe ids).
struct Timed<T> {
    secs: f64,
    machine: Machine,
    result: RunResult,
    extra: T,
}

/// Runs fresh machines from `make` at least [`MIN_RUNS`] times and until [`MIN_SECS`] went
/// by (at most [`MAX_RUNS`] times); only `run()` is timed.
fn timed<T>(make: impl Fn() -> Result<(Machine, T), String>) -> Result<Timed<T>, String> {
    let (mut best, mut total, mut runs) = (f64::INFINITY, 0.0, 0);
    loop {
        let (mut machine, extra) = make()?;
        let start = Instant::now();
        let result = machine.run().map_err(|e| e.to_string())?;
        let secs = start.elapsed().as_secs_f64();
        best = best.min(secs);
        total += secs;
        runs += 1;
        if runs >= MAX_RUNS || (runs >= MIN_RUNS && total >= MIN_SECS) {
            return Ok(Timed {
                secs: best,
                machine,
                result,
                extra,
            });
        }
    }
}

/// One untimed run; returns the machine (for counters) and the result.
fn once(m: Result<Machine, String>) -> Result<(Machine, RunResult), String> {
    let mut m = m?;
    let result = m.run().map_err(|e| e.to_string())?;
    Ok((m, result))
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn measure(name: &str) -> Result<FixtureReport, String> {
    let elf = fixture_elf(name).map_err(|e| format!("fixture {name}: {e}"))?;
    let image = workload::machine(name, &elf)
        .map_err(|e| format!("{name}: {e}"))?
        .main_image()
        .cloned()
        .ok_or("no image")?;
    let all = sites(&image);
    let of_class = |class: Class| {
        all.accepted
            .iter()
            .filter(move |s| s.class == class)
            .map(|s| s.addr)
    };

    let base = timed(|| Ok((setup(name, &elf, |_| {})?, ())))?;
    let (base_secs, base_result) = (base.secs, base.result);
    let base_traps = base.machine.breakpoint_traps();
    let mut differing_runs = Vec::new();
    let mut check = |run: &str, r: &RunResult| {
        if r.status != base_result.status {
            differing_runs.push(format!("{run} ({})", describe(r.status)));
        } else if r.stdout != base_result.stdout {
            differing_runs.push(format!("{run} (output)"));
        }
    };

    // Traps per hit, one class at a time (traps not ours, as in trap_self, subtracted).
    let mut traps_per_hit = TrapsPerHit::default();
    for (class, slot) in [
        (Class::Simulate, &mut traps_per_hit.simulate),
        (Class::Emulate, &mut traps_per_hit.emulate),
        (Class::Xol, &mut traps_per_hit.xol),
    ] {
        let mut ids = Vec::new();
        let (m, r) = once(setup(name, &elf, |m| {
            ids = add_probes(m, of_class(class), Kind::Entry).0
        }))?;
        check(&format!("{class:?} sites"), &r);
        *slot = ratio(
            m.breakpoint_traps().saturating_sub(base_traps),
            hits(&m, &ids),
        );
    }
    let mut ids = Vec::new();
    let entries: Vec<u64> = functions(&image).iter().map(|f| f.addr).collect();
    let (m, r) = once(setup(name, &elf, |m| {
        ids = add_probes(m, entries.iter().copied(), Kind::Return).0
    }))?;
    check("uretprobe on every function", &r);
    traps_per_hit.uretprobe = ratio(
        m.breakpoint_traps().saturating_sub(base_traps),
        hits(&m, &ids),
    );

    // A probe on every accepted site.
    let every = timed(|| {
        let mut m = setup(name, &elf, |_| {})?;
        let by_class = [Class::Simulate, Class::Emulate, Class::Xol]
            .map(|class| (class, add_probes(&mut m, of_class(class), Kind::Entry)));
        Ok((m, by_class))
    })?;
    check("every instruction", &every.result);
    let by_class = &every.extra;
    let rejected = all.rejected
        + by_class
            .iter()
            .map(|(_, (_, skipped))| skipped)
            .sum::<usize>();
    let count = |class: Class| {
        by_class
            .iter()
            .filter(|(c, _)| *c == class)
            .map(|(_, (ids, _))| ids.len())
            .sum::<usize>()
    };
    let sites_count = SiteCounts {
        simulate: count(Class::Simulate),
        emulate: count(Class::Emulate),
        xol: count(Class::Xol),
        rejected,
    };
    let hits_of = |class: Class| -> u64 {
        by_class
            .iter()
            .filter(|(c, _)| *c == class)
            .map(|(_, (ids, _))| hits(&every.machine, ids))
            .sum()
    };
    let (one_hits, xol_hits) = (
        hits_of(Class::Simulate) + hits_of(Class::Emulate),
        hits_of(Class::Xol),
    );
    let accepted = sites_count.simulate + sites_count.emulate + sites_count.xol;
    let one_trap_share = OneTrapShare {
        sites: ratio(
            (sites_count.simulate + sites_count.emulate) as u64,
            accepted as u64,
        )
        .unwrap_or(0.0),
        hits: ratio(one_hits, one_hits + xol_hits),
    };

    // Entry and return probes on the most-called function.
    let hot = hottest_function(name, &elf)
        .ok()
        .filter(|(_, calls)| *calls > 0);
    let hot_slowdown = match &hot {
        Some((f, _)) => {
            let hot = timed(|| {
                let m = setup(name, &elf, |m| {
                    add_probes(m, [f.addr], Kind::Entry);
                    add_probes(m, [f.addr], Kind::Return);
                })?;
                Ok((m, ()))
            })?;
            check("hottest entry+return", &hot.result);
            Some(hot.secs / base_secs)
        }
        None => None,
    };

    let rvemu = rvemu_in_child(name).map(|run| RvemuReport {
        instructions: run.instructions,
        mips: run.instructions as f64 / run.secs / 1e6,
        same_as_sim: run.stdout.as_bytes() == base_result.stdout.as_slice()
            && run.instructions == base_result.instructions
            && base_result.status
                == match run.exit_code {
                    Some(code) => ExitStatus::Exited(code as i32),
                    None => ExitStatus::Killed(SIGTRAP),
                },
    });
    Ok(FixtureReport {
        fixture: name.to_string(),
        instructions: base_result.instructions,
        sites: sites_count,
        traps_per_hit,
        one_trap_share,
        hottest: hot.map(|(f, calls)| (demangle(&f.name), calls)),
        slowdown: Slowdown {
            hottest_entry_return: hot_slowdown,
            every_instruction: every.secs / base_secs,
        },
        sim_mips: base_result.instructions as f64 / base_secs / 1e6,
        rvemu,
        differing_runs,
    })
}

/// Runs the rvemu measurement in a child process: rvemu's CPU writes `rvemu.dts` into the
/// working directory (a temporary one here), may print warnings on stdout, starts a thread
/// reading stdin and maps 1 GiB; none of that belongs in this process.
fn rvemu_in_child(name: &str) -> Result<RvemuRun, String> {
    let dir = std::env::temp_dir().join("ruprobes-perf-rvemu");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["perf", "--rvemu-child", name])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("starting the rvemu run: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    if !out.status.success() {
        return Err(format!(
            "rvemu run failed ({}): {}",
            out.status,
            last.trim()
        ));
    }
    serde_json::from_str::<Result<RvemuRun, String>>(last)
        .map_err(|e| format!("rvemu run: unreadable result ({e})"))?
}

/// The child side of [`rvemu_in_child`]: prints one JSON line last, the run or why the
/// program cannot run on rvemu (e.g. it forks). That is a finding for the table's notes,
/// not an error of this command, so the child succeeds either way.
fn rvemu_child(name: &str) -> Result<(), String> {
    let elf = fixture_elf(name).map_err(|e| format!("fixture {name}: {e}"))?;
    let m = workload::machine(name, &elf).map_err(|e| format!("{name}: {e}"))?;
    let image = m.main_image().ok_or("no image")?;
    let result: Result<RvemuRun, String> =
        rvemu_user::run(image, 20_000_000_000).map(|run| RvemuRun {
            instructions: run.instructions,
            secs: run.secs,
            stdout: String::from_utf8_lossy(&run.stdout).into_owned(),
            exit_code: run.exit_code,
        });
    println!(
        "\n{}",
        serde_json::to_string(&result).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// `_ZN2rt3Rng5below17h0123456789abcdefE` -> `rt::Rng::below`; other names unchanged.
fn demangle(name: &str) -> String {
    let Some(mut rest) = name.strip_prefix("_ZN") else {
        return name.to_string();
    };
    let mut parts = Vec::new();
    while let Some(digits) = rest.find(|c: char| !c.is_ascii_digit()).filter(|&n| n > 0) {
        let Ok(len) = rest[..digits].parse::<usize>() else {
            break;
        };
        let Some(part) = rest.get(digits..digits + len) else {
            break;
        };
        parts.push(part);
        rest = &rest[digits + len..];
    }
    if parts
        .last()
        .is_some_and(|p| p.len() == 17 && p.starts_with('h'))
    {
        parts.pop();
    }
    if parts.is_empty() || rest != "E" {
        return name.to_string();
    }
    parts.join("::")
}

/// How a process ended, in words.
fn describe(status: ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exit code {code}"),
        ExitStatus::Killed(SIGTRAP) => "killed by SIGTRAP".into(),
        ExitStatus::Killed(signal) => format!("killed by signal {signal}"),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn print_core(core: &CoreReport) {
    println!(
        "core: ns per hit (all its traps), fastest of {ROUNDS} interleaved batches of {BATCH} hits"
    );
    let floor = core.per_hit_ns.first().map_or(1.0, |(_, ns)| *ns);
    for (name, ns) in &core.per_hit_ns {
        println!("  {name:<24} {ns:>7.1} ns  {:>5.2}x the floor", ns / floor);
    }
    for scaling in &core.scaling {
        let ns: Vec<String> = scaling
            .ns
            .iter()
            .map(|(n, ns)| format!("{n:>6} probes {ns:>5.1} ns"))
            .collect();
        println!(
            "  scaling, {:<23} {}; ratio {:.2}x",
            scaling.hit,
            ns.join(", "),
            scaling.ratio
        );
    }
    println!();
}

fn print_table(reports: &[FixtureReport]) {
    println!(
        "{:<10} {:>11} {:>17} | {:>4} {:>4} {:>4} {:>4} | {:>5} {:>5} | {:>7} {:>7} | {:>6} {:>6}",
        "", "", "sites", "traps per hit", "", "", "", "1-trap", "", "slowdown", "", "MIPS", ""
    );
    println!(
        "{:<10} {:>11} {:>17} | {:>4} {:>4} {:>4} {:>4} | {:>5} {:>5} | {:>7} {:>7} | {:>6} {:>6}",
        "fixture",
        "insns",
        "sim/emu/xol/rej",
        "sim",
        "emu",
        "xol",
        "uret",
        "sites",
        "hits",
        "hottest",
        "every",
        "sim",
        "rvemu"
    );
    for r in reports {
        let s = &r.sites;
        let t = &r.traps_per_hit;
        let rvemu = match &r.rvemu {
            Ok(rv) => format!("{:.1}{}", rv.mips, if rv.same_as_sim { "" } else { "*" }),
            Err(_) => "-".into(),
        };
        println!(
            "{:<10} {:>11} {:>17} | {:>4} {:>4} {:>4} {:>4} | {:>4.0}% {:>5} | {:>7} {:>7} | {:>6.1} {:>6}",
            r.fixture,
            r.instructions,
            format!("{}/{}/{}/{}", s.simulate, s.emulate, s.xol, s.rejected),
            opt(t.simulate, 2),
            opt(t.emulate, 2),
            opt(t.xol, 2),
            opt(t.uretprobe, 2),
            100.0 * r.one_trap_share.sites,
            r.one_trap_share.hits.map_or_else(|| "-".into(), |h| format!("{:.0}%", 100.0 * h)),
            opt(r.slowdown.hottest_entry_return, 2).to_string() + "x",
            format!("{:.1}x", r.slowdown.every_instruction),
            r.sim_mips,
            rvemu,
        );
    }
    println!();
    for r in reports {
        let mut notes = Vec::new();
        if let Some((f, calls)) = &r.hottest {
            notes.push(format!("hottest {f} ({calls} calls)"));
        }
        match &r.rvemu {
            Ok(rv) if !rv.same_as_sim => {
                notes.push(format!("* rvemu differs: {} instructions", rv.instructions))
            }
            Ok(_) => {}
            Err(e) => notes.push(format!("rvemu: {e}")),
        }
        if !r.differing_runs.is_empty() {
            notes.push(format!(
                "output DIFFERS from the unprobed run with: {}",
                r.differing_runs.join(", ")
            ));
        }
        println!("{:<10} {}", r.fixture, notes.join("; "));
    }
}

//! `cargo xtask smp-perf [--boots N]`: the test kernel's probe hits per second on 1, 2 and
//! 4 harts (its `hits_scaling` scenario, `--features smp-only`), each face booted N times
//! (default 5) under `qemu-system-riscv64 -smp 4`, with what each vCPU cost in host CPU time.
//!
//! The wall-clock rate cannot show more than the host's cores: on a 2-core host 4 vCPU
//! threads share 2 cores. So the host's scheduler counts too: for each run, the CPU time
//! each vCPU thread got (`/proc/PID/task/TID/schedstat`, read when the kernel announces the
//! run and again at its result line). The busiest vCPU's time is what the run would
//! take if every hart had a core to itself; the hits divided by it is the run's rate on
//! such a machine. An estimate: a vCPU spinning while the host runs another one counts
//! against it (a lock holder descheduled), one asleep in `wfi` does not.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::qemu_test;
use crate::repo_root;

/// A boot is killed (and the measurement fails) after this long.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The kernel's line before a run: `[smp] hits_scaling: run on N harts starts`.
const RUN_START: &str = "[smp] hits_scaling: run on ";
/// Its line after: `[smp] hits/s on N harts: RATE (HITS hits in MS ms; ...)`.
const RUN_RESULT: &str = "[smp] hits/s on ";
/// Then: `[smp] hits_scaling: kernel time per hit on N harts: median C cycles (T ns), ...`.
const KERNEL_TIME: &str = "[smp] hits_scaling: kernel time per hit on ";
/// The kernel's faces, as `cargo xtask qemu-test` builds them.
const FACES: &[(&str, &[&str])] = &[
    ("seed face", &["--features", "smp-only"]),
    ("trait face", &["--features", "smp-only,trait-face"]),
];

/// One run of `hits_scaling`: what the kernel printed and what the host measured.
#[derive(Clone, Debug, PartialEq)]
struct Run {
    harts: usize,
    /// Hits per second of the guest's clock (the `time` CSR: host wall-clock time).
    wall_rate: u64,
    hits: u64,
    /// Host CPU nanoseconds each vCPU thread ran during the run, busiest first.
    vcpu_ns: Vec<u64>,
    /// The kernel's median time in a breakpoint trap (ns), once reported.
    kernel_ns: Option<u64>,
}

impl Run {
    /// Hits per second if each hart had a host core of its own: hits over the busiest
    /// vCPU's CPU time.
    fn own_core_rate(&self) -> u64 {
        let busiest = self.vcpu_ns.first().copied().unwrap_or(0).max(1);
        (self.hits as u128 * 1_000_000_000 / busiest as u128) as u64
    }

    /// Host CPU time per hit, all vCPUs (those asleep take next to none).
    fn vcpu_ns_per_hit(&self) -> u64 {
        self.vcpu_ns.iter().sum::<u64>() / self.hits.max(1)
    }
}

const USAGE: &str = "smp-perf takes [--boots N]";

/// Runs the measurement and prints a table per face.
pub fn run(args: &[String]) -> Result<(), String> {
    let boots = match args {
        [] => 5,
        [flag, n] if flag == "--boots" => n
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .ok_or(format!("--boots needs a positive number ({USAGE})"))?,
        _ => return Err(format!("unexpected arguments ({USAGE})")),
    };
    let root = repo_root();
    for (face, features) in FACES {
        let kernel = qemu_test::build_kernel(&root, features)?;
        let mut runs: BTreeMap<usize, Vec<Run>> = BTreeMap::new();
        for boot in 1..=boots {
            eprintln!("smp-perf: {face}, boot {boot} of {boots}");
            for run in boot_runs(&kernel)? {
                runs.entry(run.harts).or_default().push(run);
            }
        }
        print_table(face, &runs);
    }
    Ok(())
}

/// Boots `kernel` once; its `hits_scaling` runs, with the vCPUs' CPU time in each.
fn boot_runs(kernel: &Path) -> Result<Vec<Run>, String> {
    // `-name ...debug-threads=on` names the vCPU threads (`CPU 0/TCG`), to tell them apart.
    let mut child = qemu_test::qemu(kernel, &["-smp", "4", "-name", "ruprobes,debug-threads=on"])
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-riscv64: {e}"))?;
    let result = read_runs(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Follows the console of `child`, sampling its vCPUs at each run's two lines.
fn read_runs(child: &mut Child) -> Result<Vec<Run>, String> {
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    // Lines come through a channel, so that a silent hang ends at the deadline too.
    let (lines, console) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut runs = Vec::new();
    let mut started: Option<BTreeMap<String, u64>> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match console.recv_timeout(left) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("no power-off within {} s", BOOT_TIMEOUT.as_secs()));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err("the console ended before `=== all done`".into());
            }
        };
        let line = line.trim_end_matches('\r');
        if line.starts_with(RUN_START) {
            started = Some(vcpu_times(pid).map_err(|e| format!("at `{line}`: {e}"))?);
        } else if let Some((harts, wall_rate, hits)) = parse_result(line) {
            let before = started
                .take()
                .ok_or("a result line without its start line")?;
            let after = vcpu_times(pid)?;
            let mut vcpu_ns: Vec<u64> = after
                .iter()
                .map(|(name, ns)| ns.saturating_sub(before.get(name).copied().unwrap_or(0)))
                .collect();
            vcpu_ns.sort_unstable_by(|a, b| b.cmp(a));
            runs.push(Run {
                harts,
                wall_rate,
                hits,
                vcpu_ns,
                kernel_ns: None,
            });
        } else if let Some((harts, ns)) = parse_kernel_time(line) {
            if let Some(run) = runs.last_mut().filter(|r| r.harts == harts) {
                run.kernel_ns = Some(ns);
            }
        } else if line.contains("FAILED") {
            return Err(format!("the kernel reported a failure: {line}"));
        } else if line == "=== all done" {
            return Ok(runs);
        }
    }
}

/// Host CPU nanoseconds of each vCPU thread of QEMU process `pid`, by thread name.
fn vcpu_times(pid: u32) -> Result<BTreeMap<String, u64>, String> {
    let tasks = format!("/proc/{pid}/task");
    let mut times = BTreeMap::new();
    for entry in std::fs::read_dir(&tasks).map_err(|e| format!("{tasks}: {e}"))? {
        let dir = entry.map_err(|e| e.to_string())?.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let name = name.trim();
        if !name.starts_with("CPU ") {
            continue;
        }
        let schedstat = std::fs::read_to_string(dir.join("schedstat"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let ns = schedstat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or(format!("{}: unreadable schedstat", dir.display()))?;
        times.insert(name.to_string(), ns);
    }
    if times.is_empty() {
        let names: Vec<String> = std::fs::read_dir(&tasks)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path().join("comm")).unwrap_or_default())
            .collect();
        return Err(format!(
            "QEMU shows no vCPU threads (named `CPU N/TCG`); its threads: {names:?}"
        ));
    }
    Ok(times)
}

/// `(harts, hits/s, hits)` of a result line.
fn parse_result(line: &str) -> Option<(usize, u64, u64)> {
    let rest = line.strip_prefix(RUN_RESULT)?;
    let (harts, rest) = rest.split_once(" harts: ")?;
    let (rate, rest) = rest.split_once(" (")?;
    let (hits, _) = rest.split_once(" hits in ")?;
    Some((harts.parse().ok()?, rate.parse().ok()?, hits.parse().ok()?))
}

/// `(harts, median ns)` of a kernel-time line.
fn parse_kernel_time(line: &str) -> Option<(usize, u64)> {
    let rest = line.strip_prefix(KERNEL_TIME)?;
    let (harts, rest) = rest.split_once(" harts: median ")?;
    let (_, rest) = rest.split_once(" cycles (")?;
    let (ns, _) = rest.split_once(" ns)")?;
    Some((harts.parse().ok()?, ns.parse().ok()?))
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Medians per hart count, and each rate as a multiple of the 1-hart one.
fn print_table(face: &str, runs: &BTreeMap<usize, Vec<Run>>) {
    println!(
        "smp-perf: {face}, medians of {} boots",
        runs.values().map(Vec::len).max().unwrap_or(0)
    );
    println!(
        "  harts  wall hits/s     x  own-core hits/s     x  vCPU ns/hit  kernel ns/hit  busiest vCPU ms  (each vCPU, ms)"
    );
    let wall = |n: &usize| {
        runs.get(n)
            .map(|r| median(r.iter().map(|r| r.wall_rate).collect()))
    };
    let own = |n: &usize| {
        runs.get(n)
            .map(|r| median(r.iter().map(Run::own_core_rate).collect()))
    };
    let (wall_one, own_one) = (wall(&1).unwrap_or(0).max(1), own(&1).unwrap_or(0).max(1));
    for (harts, these) in runs {
        let (w, o) = (wall(harts).unwrap_or(0), own(harts).unwrap_or(0));
        let kernel = median(these.iter().filter_map(|r| r.kernel_ns).collect());
        let vcpu = median(these.iter().map(Run::vcpu_ns_per_hit).collect());
        // The boot with the median own-core rate, for its per-vCPU times.
        let mut sorted: Vec<&Run> = these.iter().collect();
        sorted.sort_by_key(|r| r.own_core_rate());
        let typical = sorted[sorted.len() / 2];
        let each: Vec<String> = typical
            .vcpu_ns
            .iter()
            .map(|ns| format!("{:.0}", *ns as f64 / 1e6))
            .collect();
        println!(
            "  {harts:>5}  {w:>11}  {:>4.2}  {o:>15}  {:>4.2}  {vcpu:>11}  {kernel:>13}  {:>15.0}  ({})",
            w as f64 / wall_one as f64,
            o as f64 / own_one as f64,
            typical.vcpu_ns.first().copied().unwrap_or(0) as f64 / 1e6,
            each.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_give_harts_rate_and_hits() {
        let line = "[smp] hits/s on 4 harts: 83100 (20000 hits in 240 ms; the program counted Some(20000) calls)";
        assert_eq!(parse_result(line), Some((4, 83100, 20000)));
        assert_eq!(
            parse_result("[smp] hits_scaling: run on 4 harts starts"),
            None
        );
        assert_eq!(
            parse_result("[smp] hits/s on x harts: 1 (2 hits in 3 ms)"),
            None
        );
    }

    #[test]
    fn the_own_core_rate_is_the_hits_over_the_busiest_vcpu() {
        let run = Run {
            harts: 2,
            wall_rate: 1,
            hits: 20_000,
            vcpu_ns: vec![400_000_000, 100_000_000],
            kernel_ns: None,
        };
        assert_eq!(run.own_core_rate(), 50_000);
        assert_eq!(run.vcpu_ns_per_hit(), 25_000);
    }
}

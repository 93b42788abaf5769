//! The tracer CLI on the benchmark fixture: `ruprobes-sim` run as a user runs it, in child
//! processes, with a probe on every instruction (`-p 'uprobe:*+*'`): wall time, slowdown
//! over the unprobed `run`, and peak RSS; and, for comparison with `-q`, the same program
//! in this process with a do-nothing consumer (an entry handler, as `-q` has) on every
//! instruction: the probe machinery alone, no tracer. The unprobed runs, the short ones,
//! are the fastest of [`BASE_RUNS`]; the probed ones run once.
//!
//! Each run reports wall time and CPU time (user + system: the child's from `wait4`, this
//! thread's from `getrusage`). On a machine shared with other work the wall time of a
//! long run grows with the load while its CPU time barely does, so slowdowns are given
//! for both.
//!
//! Peak RSS is the child's `VmHWM` from `/proc/PID/status`, read at its exit while its
//! memory still exists: the child runs under ptrace with `PTRACE_O_TRACEEXIT`, which stops
//! it in `exit` before the kernel releases its address space. A zombie has no `VmHWM` any
//! more (so reading it after `waitid(WNOWAIT)` finds nothing), and `wait4`'s `ru_maxrss`
//! over-reports: Linux carries the high-water mark of the address space that `exec`
//! replaces into it, which for a child spawned by this (large) process is this process's.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use super::workload::{self, add_probes, fixture_elf, sites, Kind};

/// The benchmark fixture (manifest kind `bench`).
pub const FIXTURE: &str = "bench";

/// Every instruction of every function.
const EVERY: &str = "uprobe:*+*";

/// Runs of each unprobed command; the fastest counts.
const BASE_RUNS: usize = 3;

/// The tracer section of the report.
#[derive(Debug, Serialize)]
pub struct TracerReport {
    /// The fixture.
    pub fixture: String,
    /// Instructions retired by the unprobed run (in this process).
    pub instructions: u64,
    /// One row per command, the unprobed `run` first.
    pub runs: Vec<TracerRun>,
    /// The do-nothing consumer on every accepted instruction, in this process.
    pub do_nothing: DoNothing,
}

/// One command of the tracer section.
#[derive(Debug, Serialize)]
pub struct TracerRun {
    /// What it measures, e.g. "full text trace > /dev/null".
    pub name: String,
    /// The arguments of `ruprobes-sim`.
    pub args: Vec<String>,
    /// Wall time from spawn to exit, and CPU time.
    pub time: Times,
    /// Over the unprobed `run`.
    pub slowdown: Times,
    /// Peak resident set size in KiB (`VmHWM` at exit); `None` if it could not be read.
    pub peak_rss_kib: Option<u64>,
    /// The exit code (the program's: 0 for bench).
    pub exit_code: Option<i32>,
}

/// The probe machinery alone on the same program, in this process.
#[derive(Debug, Serialize)]
pub struct DoNothing {
    /// Probes registered (every instruction the core accepts).
    pub probes: usize,
    /// The unprobed run in this process.
    pub unprobed: Times,
    /// The run with the probes.
    pub time: Times,
    /// `time / unprobed`.
    pub slowdown: Times,
}

/// Wall and CPU seconds of a run (or their ratios).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Times {
    /// Wall time.
    pub wall: f64,
    /// User + system CPU time.
    pub cpu: f64,
}

impl Times {
    fn over(self, base: Times) -> Times {
        Times {
            wall: self.wall / base.wall,
            cpu: self.cpu / base.cpu,
        }
    }
}

/// User + system CPU seconds in `usage`.
fn cpu_secs(usage: &libc::rusage) -> f64 {
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds of this thread so far.
fn thread_cpu() -> f64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage overwrites it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into a valid local.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    cpu_secs(&usage)
}

/// Measures the tracer section: builds `ruprobes-sim` (release, next to this executable)
/// or takes the one named by `PERF_SIM` (e.g. an older build, for a before/after), then
/// runs the commands.
pub fn measure() -> Result<TracerReport, String> {
    let sim = match std::env::var_os("PERF_SIM") {
        Some(path) => PathBuf::from(path),
        None => build_sim()?,
    };
    let elf_path = Path::new(ruprobes_sim::machine::FIXTURES_DIR).join(format!("{FIXTURE}.elf"));
    let prog = elf_path.display().to_string();
    let commands: [(&str, Vec<&str>); 4] = [
        ("unprobed (run)", vec!["run", &prog]),
        ("-q", vec!["trace", &prog, "-p", EVERY, "-q"]),
        (
            "full text trace > /dev/null",
            vec!["trace", &prog, "-p", EVERY],
        ),
        (
            "--json > /dev/null",
            vec!["trace", &prog, "-p", EVERY, "--json"],
        ),
    ];
    let mut runs: Vec<TracerRun> = Vec::new();
    for (name, args) in commands {
        eprintln!("perf: tracer: ruprobes-sim {}", args.join(" "));
        let times = if runs.is_empty() { BASE_RUNS } else { 1 };
        let mut best: Option<(Times, Option<u64>, Option<i32>)> = None;
        for _ in 0..times {
            let run = run_child(&sim, &args)
                .map_err(|e| format!("running ruprobes-sim {args:?}: {e}"))?;
            if best.is_none_or(|b| run.0.cpu < b.0.cpu) {
                best = Some(run);
            }
        }
        let Some((time, peak_rss_kib, exit_code)) = best else {
            continue;
        };
        let base = runs.first().map_or(time, |r| r.time);
        runs.push(TracerRun {
            name: name.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            time,
            slowdown: time.over(base),
            peak_rss_kib,
            exit_code,
        });
    }
    eprintln!("perf: tracer: do-nothing consumers in this process");
    let (instructions, do_nothing) = do_nothing()?;
    Ok(TracerReport {
        fixture: FIXTURE.to_string(),
        instructions,
        runs,
        do_nothing,
    })
}

/// `cargo build --release -p ruprobes-sim`; the binary lands next to this executable.
fn build_sim() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "--package",
            "ruprobes-sim",
            "--bin",
            "ruprobes-sim",
        ])
        .current_dir(crate::repo_root())
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building ruprobes-sim failed ({status})"));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    Ok(exe.with_file_name("ruprobes-sim"))
}

/// The unprobed run and the do-nothing run of the fixture in this process, timed once each.
fn do_nothing() -> Result<(u64, DoNothing), String> {
    let elf = fixture_elf(FIXTURE).map_err(|e| format!("fixture {FIXTURE}: {e}"))?;
    let machine = || workload::machine(FIXTURE, &elf).map_err(|e| format!("{FIXTURE}: {e}"));
    let timed_run = |mut m: ruprobes_sim::machine::Machine| {
        let (start, cpu) = (Instant::now(), thread_cpu());
        let result = m.run().map_err(|e| format!("{FIXTURE}: {e}"))?;
        let time = Times {
            wall: start.elapsed().as_secs_f64(),
            cpu: thread_cpu() - cpu,
        };
        Ok::<_, String>((time, result))
    };
    let (mut unprobed, base) = timed_run(machine()?)?;
    for _ in 1..BASE_RUNS {
        let (time, _) = timed_run(machine()?)?;
        if time.cpu < unprobed.cpu {
            unprobed = time;
        }
    }
    let mut m = machine()?;
    let image = m.main_image().cloned().ok_or("no image")?;
    let addrs: Vec<u64> = sites(&image).accepted.iter().map(|s| s.addr).collect();
    let (ids, _) = add_probes(&mut m, addrs, Kind::EntryOnly);
    let (time, probed) = timed_run(m)?;
    if probed.stdout != base.stdout || probed.status != base.status {
        return Err(format!(
            "{FIXTURE}: the run with do-nothing probes differs from the unprobed run"
        ));
    }
    Ok((
        base.instructions,
        DoNothing {
            probes: ids.len(),
            unprobed,
            time,
            slowdown: time.over(unprobed),
        },
    ))
}

/// Runs `sim args` with stdout to /dev/null and stderr inherited; its wall and CPU time,
/// peak RSS (KiB) and exit code.
fn run_child(sim: &Path, args: &[&str]) -> io::Result<(Times, Option<u64>, Option<i32>)> {
    let mut command = Command::new(sim);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create("/dev/null")?);
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe ptrace system call.
    unsafe {
        command.pre_exec(|| {
            let none = std::ptr::null_mut::<libc::c_void>();
            if libc::ptrace(libc::PTRACE_TRACEME, 0, none, none) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let child = command.spawn()?;
    let pid = child.id() as libc::pid_t;
    // The child is reaped below, by waitpid; `child` is not waited on.
    drop(child);
    let (peak, code, cpu) = trace_to_exit(pid)?;
    let wall = start.elapsed().as_secs_f64();
    Ok((Times { wall, cpu }, peak, code))
}

/// Follows the traced child `pid` from its post-exec stop to its end: at the exit stop reads
/// `VmHWM`, passes every other signal on. Returns the peak RSS, the exit code (`None` if
/// killed by a signal) and the child's CPU seconds.
fn trace_to_exit(pid: libc::pid_t) -> io::Result<(Option<u64>, Option<i32>, f64)> {
    let none = std::ptr::null_mut::<libc::c_void>();
    let mut peak = None;
    let mut first = true;
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value; wait4 overwrites it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes the status and the usage into valid locals.
        if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } == -1 {
            return Err(io::Error::last_os_error());
        }
        if libc::WIFEXITED(status) {
            return Ok((peak, Some(libc::WEXITSTATUS(status)), cpu_secs(&usage)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok((peak, None, cpu_secs(&usage)));
        }
        let mut deliver = 0;
        if first {
            // The SIGTRAP of the exec: ask for an exit stop, and kill the child if we die.
            first = false;
            let options = (libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL) as usize;
            // SAFETY: ptrace on our stopped tracee; the data argument is the option bits.
            if unsafe {
                libc::ptrace(
                    libc::PTRACE_SETOPTIONS,
                    pid,
                    none,
                    options as *mut libc::c_void,
                )
            } == -1
            {
                return Err(io::Error::last_os_error());
            }
        } else if status >> 8 == (libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8)) {
            peak = vm_hwm(pid);
        } else {
            deliver = libc::WSTOPSIG(status);
        }
        // SAFETY: resumes our stopped tracee, delivering `deliver` (0: none).
        if unsafe {
            libc::ptrace(
                libc::PTRACE_CONT,
                pid,
                none,
                deliver as usize as *mut libc::c_void,
            )
        } == -1
        {
            return Err(io::Error::last_os_error());
        }
    }
}

/// `VmHWM` of a live process, in KiB.
fn vm_hwm(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Prints the section.
pub fn print(r: &TracerReport) {
    println!(
        "tracer: {} ({} instructions), ruprobes-sim with -p '{EVERY}'",
        r.fixture, r.instructions
    );
    let rss = |kib: Option<u64>| {
        kib.map_or_else(|| "-".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
    };
    let d = &r.do_nothing;
    let mut rows: Vec<[String; 6]> = vec![[
        "run",
        "wall",
        "CPU",
        "slowdown wall",
        "slowdown CPU",
        "peak RSS",
    ]
    .map(String::from)];
    for run in &r.runs {
        rows.push([
            run.name.clone(),
            format!("{:.2} s", run.time.wall),
            format!("{:.2} s", run.time.cpu),
            format!("{:.1}x", run.slowdown.wall),
            format!("{:.1}x", run.slowdown.cpu),
            rss(run.peak_rss_kib),
        ]);
        if run.name == "-q" {
            rows.push([
                format!("(do-nothing consumers, {} probes, in-process)", d.probes),
                format!("{:.2} s", d.time.wall),
                format!("{:.2} s", d.time.cpu),
                format!("{:.1}x", d.slowdown.wall),
                format!("{:.1}x", d.slowdown.cpu),
                "-".into(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = format!("  {:<w$}", row[0], w = widths[0]);
        for (cell, w) in row.iter().zip(&widths).skip(1) {
            line.push_str(&format!("  {cell:>w$}"));
        }
        println!("{line}");
    }
    println!(
        "  unprobed in-process: {:.2} s wall, {:.2} s CPU; unprobed runs are the fastest of {BASE_RUNS}, the others run once",
        d.unprobed.wall, d.unprobed.cpu
    );
    for run in &r.runs {
        if run.exit_code != Some(0) {
            println!(
                "  note: {} ended with {:?} (exit code)",
                run.name, run.exit_code
            );
        }
    }
    println!();
}

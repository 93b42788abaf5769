//! `cargo xtask qemu-test`: boots the test kernel (`fixtures/kernel`) under
//! `qemu-system-riscv64`, takes the trace it prints for every scenario and compares each with
//! the simulator's trace of the same scenario (`ruprobes-sim scenarios`): identical text, or
//! a diff and a failure. Each face boots twice: on one hart under `-icount shift=0`, where
//! the kernel's user instruction clock is exact and every scenario must match (those whose
//! eBPF maps read the clock included), and on four harts with QEMU's own clock, where those
//! are left out and the SMP scenarios run. Prints the peak kernel-stack use the kernel reports per scenario
//! (outside the compared blocks), and boots a build that overflows a kernel stack on purpose
//! to check that the guard page turns it into a clear message and a prompt power-off. Also
//! checks that every code block of `docs/PORTING.md` is a snippet of the kernel sources, so
//! the guide cannot drift from code that compiles and runs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::repo_root;

/// The kernel's target.
const TARGET: &str = "riscv64gc-unknown-none-elf";
/// QEMU is killed (and the test fails) after this long. The SMP scenarios dominate: every
/// remote `fence.i` is an SBI call that waits for the other vCPUs (milliseconds each on a
/// loaded 2-core host).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Harts of the virtual machine: the canonical scenarios run on one of them, the SMP
/// scenarios on all.
const HARTS: &str = "4";
/// The plain boot: [`HARTS`] harts, QEMU's own clock.
const PLAIN: &[&str] = &["-smp", HARTS];
/// The exact-clock boot: one hart with `-icount shift=0`, where `instret` counts the
/// instructions retired, so the kernel's user instruction clock (trap entry and exit read
/// `instret`) equals the simulator's and the scenarios whose maps read `bpf_ktime_get_ns`
/// match too. (Several harts under `-icount` take minutes; one is enough here.)
const EXACT_CLOCK: &[&str] = &["-smp", "1", "-icount", "shift=0"];
/// The SMP scenarios the kernel must report `[smp] NAME: ok` for.
const SMP_SCENARIOS: &[&str] = &[
    "threads_probed",
    "fork_exit",
    "killed_in_xol",
    "own_ebreak",
    "hits_scaling",
];
/// The prefix of the kernel's SMP result lines.
const SMP_LINE: &str = "[smp] ";
/// The line the kernel prints after its last scenario.
const ALL_DONE: &str = "=== all done";
/// What the kernel prints after each scenario block: `NAME: BYTES of SIZE bytes (pid P)`.
const STACK_PEAK: &str = "[kernel] kernel stack peak ";
/// What the kernel prints for each bad BPF object its loader refused at boot.
const BPF_REFUSED: &str = "[kernel] bpf: ";
/// What the kernel prints when a kernel stack ran into its guard page.
const STACK_OVERFLOW: &str = "[kernel] kernel stack overflow in pid ";

/// The kernel builds booted: the seed face (as the original crate's users wire it) and the
/// trait face. Both must print the simulator's traces.
const FACES: &[(&str, &[&str])] = &[
    ("seed face", &[]),
    ("trait face", &["--features", "trait-face"]),
];

/// Runs the boot test. No options.
pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!(
            "unexpected argument `{arg}` (qemu-test takes none)"
        ));
    }
    let root = repo_root();
    let started = Instant::now();
    let snippets = check_guide(&root)?;
    println!("qemu-test: docs/PORTING.md: {snippets} code blocks match the kernel sources");
    check_prerequisites()?;
    let expected = simulator_traces(&root)?;
    let clocked: Vec<&str> = ruprobes_trace::BPF_SCENARIOS
        .iter()
        .filter(|s| s.exact_clock)
        .map(|s| s.name)
        .collect();
    let mut failures = String::new();
    for (face, features) in FACES {
        let kernel = build_kernel(&root, features)?;
        let boot_started = Instant::now();
        match boot(&kernel, EXACT_CLOCK) {
            Ok(console) => match compare(&expected, &console, &[]) {
                Ok(n) => println!(
                    "qemu-test: {face}: exact-clock boot (1 hart, -icount shift=0) in {:.1} s, \
                     all {n} scenarios match the simulator, {} included",
                    boot_started.elapsed().as_secs_f64(),
                    clocked.join(", ")
                ),
                Err(report) => failures.push_str(&format!("{face}, exact-clock boot: {report}")),
            },
            Err(report) => failures.push_str(&format!("{face}, exact-clock boot: {report}\n")),
        }
        let boot_started = Instant::now();
        let console = match boot(&kernel, PLAIN) {
            Ok(console) => console,
            Err(report) => {
                failures.push_str(&format!("{face}: {report}\n"));
                continue;
            }
        };
        let seconds = boot_started.elapsed().as_secs_f64();
        // QEMU's default clock: instret follows host ticks, so the clocked scenarios'
        // maps are left out here (compared in the exact-clock boot above).
        match compare(&expected, &console, &clocked) {
            Ok(n) => println!(
                "qemu-test: {face}: booted in {seconds:.1} s, all {n} scenarios match the \
                 simulator (not compared here: {})",
                clocked.join(", ")
            ),
            Err(report) => failures.push_str(&format!("{face}: {report}")),
        }
        // The kernel's boot check (a failed one fails the boot): the loader's lines.
        let refused: String = console
            .lines()
            .filter_map(|l| l.strip_prefix(BPF_REFUSED))
            .map(|l| format!("  {l}\n"))
            .collect();
        print!("qemu-test: {face}: bad BPF objects refused by the kernel's loader\n{refused}");
        match stack_peaks(&expected, &console) {
            Ok(table) => print!("qemu-test: {face}: peak kernel-stack use per scenario\n{table}"),
            Err(report) => failures.push_str(&format!("{face}: {report}\n")),
        }
        match smp_results(&console) {
            Ok(lines) => {
                print!("qemu-test: {face}: SMP scenarios on {HARTS} harts, all ok\n{lines}")
            }
            Err(report) => failures.push_str(&format!("{face}: {report}\n")),
        }
    }
    let kernel = build_kernel(&root, &["--features", "overflow-test"])?;
    match check_overflow(&boot_console(&kernel, PLAIN)?) {
        Ok(line) => println!("qemu-test: deliberate kernel-stack overflow reported: {line}"),
        Err(report) => failures.push_str(&format!("overflow test: {report}\n")),
    }
    println!("qemu-test: total {:.1} s", started.elapsed().as_secs_f64());
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Fails with a message naming what to install when the RISC-V target or QEMU is missing.
fn check_prerequisites() -> Result<(), String> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib").join(TARGET).exists() {
        return Err(format!(
            "the Rust target {TARGET} is not installed; install it with `rustup target add {TARGET}`"
        ));
    }
    let qemu = Command::new("qemu-system-riscv64")
        .arg("--version")
        .output();
    if !qemu.is_ok_and(|out| out.status.success()) {
        return Err("qemu-system-riscv64 is not installed; on Debian/Ubuntu: \
                    `apt-get install qemu-system-misc` (it brings OpenSBI for `-bios default`)"
            .into());
    }
    Ok(())
}

/// Builds the kernel (its own target dir under `target/`, no absolute paths embedded) and
/// returns the ELF's path.
pub fn build_kernel(root: &Path, features: &[&str]) -> Result<PathBuf, String> {
    let dir = root.join("fixtures/kernel");
    let target_dir = root.join("target/kernel");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let home = std::env::var("CARGO_HOME")
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.cargo")))
        .unwrap_or_default();
    let mut rustflags = format!("--remap-path-prefix={}=.", root.display());
    if !home.is_empty() {
        rustflags.push_str(&format!("\x1f--remap-path-prefix={home}=cargo"));
    }
    let status = Command::new(cargo)
        .current_dir(&dir)
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .args(features)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the test kernel failed ({status})"));
    }
    Ok(target_dir.join(TARGET).join("release/ruprobes-test-kernel"))
}

/// Boots `kernel` with QEMU options `machine` and returns what it printed. Fails on a
/// timeout or a failure exit.
fn boot(kernel: &Path, machine: &[&str]) -> Result<String, String> {
    let (status, console, stderr) = boot_console(kernel, machine)?;
    if !status.success() || !console.lines().any(|l| l == ALL_DONE) {
        let overflow = console
            .lines()
            .find(|l| l.starts_with(STACK_OVERFLOW))
            .map(|l| format!("{l}\n"))
            .unwrap_or_default();
        return Err(format!(
            "the kernel reported a failure (QEMU {status}). {overflow}Last output:\n{}{}",
            tail(&console, 30),
            stderr
        ));
    }
    Ok(console)
}

/// Boots `kernel` with QEMU options `machine` (harts, clock) until it powers off: QEMU's
/// status, the console and QEMU's stderr. Fails (killing QEMU) on a timeout.
fn boot_console(
    kernel: &Path,
    machine: &[&str],
) -> Result<(std::process::ExitStatus, String, String), String> {
    let mut child = qemu(kernel, machine)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-riscv64: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let out = reader.join().unwrap_or_default();
                return Err(format!(
                    "QEMU did not power off within {} s; killed it. Last output:\n{}",
                    BOOT_TIMEOUT.as_secs(),
                    tail(&String::from_utf8_lossy(&out), 20)
                ));
            }
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let console = String::from_utf8_lossy(&reader.join().unwrap_or_default()).replace('\r', "");
    Ok((status, console, stderr))
}

/// `qemu-system-riscv64` booting `kernel` on the `virt` machine with options `machine`
/// (harts, clock), the distro's OpenSBI, no input, the console on a pipe.
pub fn qemu(kernel: &Path, machine: &[&str]) -> Command {
    let mut qemu = Command::new("qemu-system-riscv64");
    qemu.args(["-machine", "virt", "-m", "128M"])
        .args(machine)
        .args(["-nographic", "-bios", "default"])
        .args(["-no-reboot", "-kernel"])
        .arg(kernel)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    qemu
}

/// The SMP scenarios' lines of `console`, if each of [`SMP_SCENARIOS`] reported ok; else
/// what failed.
fn smp_results(console: &str) -> Result<String, String> {
    let lines: Vec<&str> = console
        .lines()
        .filter(|l| l.starts_with(SMP_LINE))
        .collect();
    let mut bad = Vec::new();
    for name in SMP_SCENARIOS {
        let verdict = format!("{SMP_LINE}{name}: ");
        match lines.iter().find(|l| {
            l.starts_with(&format!("{verdict}ok")) || l.starts_with(&format!("{verdict}FAILED"))
        }) {
            Some(line) if line.ends_with(": ok") => {}
            Some(line) => bad.push(line.to_string()),
            None => bad.push(format!("SMP scenario {name}: the kernel did not report it")),
        }
    }
    let shown: String = lines.iter().map(|l| format!("  {l}\n")).collect();
    if bad.is_empty() {
        Ok(shown)
    } else {
        Err(format!(
            "SMP scenarios failed:\n{}\n{shown}",
            bad.join("\n")
        ))
    }
}

/// The overflow build's boot must end with the guard-page report for pid 1 and no
/// `=== all done` line: the report line, or why not.
fn check_overflow(
    (_, console, _): &(std::process::ExitStatus, String, String),
) -> Result<String, String> {
    let report = console.lines().find(|l| l.starts_with(STACK_OVERFLOW));
    match report {
        Some(line) if line.starts_with(&format!("{STACK_OVERFLOW}1:")) && !console.lines().any(|l| l == ALL_DONE) => {
            Ok(line.trim_start_matches("[kernel] ").to_string())
        }
        _ => Err(format!(
            "the kernel did not report the overflow of pid 1's kernel stack and stop. Last output:\n{}",
            tail(console, 20)
        )),
    }
}

/// The peak kernel-stack lines of `kernel`, one per scenario of `simulator`, as a table;
/// an error naming the scenarios without one.
fn stack_peaks(simulator: &str, kernel: &str) -> Result<String, String> {
    let expected = blocks(simulator).map_err(|e| format!("simulator output: {e}"))?;
    let peaks: Vec<(&str, &str)> = kernel
        .lines()
        .filter_map(|l| l.strip_prefix(STACK_PEAK)?.split_once(": "))
        .collect();
    let mut table = String::new();
    let mut missing = Vec::new();
    for block in &expected {
        match peaks.iter().find(|(name, _)| *name == block.name) {
            Some((name, peak)) => table.push_str(&format!("  {name:<24} {peak}\n")),
            None => missing.push(block.name),
        }
    }
    if missing.is_empty() {
        Ok(table)
    } else {
        Err(format!(
            "no kernel-stack peak reported for: {}",
            missing.join(", ")
        ))
    }
}

/// The simulator's traces of every scenario (`cargo run -p ruprobes-sim -- scenarios`).
fn simulator_traces(root: &Path) -> Result<String, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "ruprobes-sim",
            "--",
            "scenarios",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("`ruprobes-sim scenarios` failed ({})", out.status));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| "`ruprobes-sim scenarios` printed invalid UTF-8".into())
}

/// One `=== scenario NAME` ... `=== end NAME` block: its name and the lines in between.
#[derive(Debug, PartialEq, Eq)]
struct Block<'a> {
    name: &'a str,
    lines: Vec<&'a str>,
}

/// Every scenario block of `text`, in order; anything outside blocks (firmware banner,
/// kernel log) is ignored. An unterminated block is an error.
fn blocks(text: &str) -> Result<Vec<Block<'_>>, String> {
    let mut found = Vec::new();
    let mut open: Option<Block> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("=== scenario ") {
            if let Some(block) = open.take() {
                return Err(format!("scenario {} has no `=== end` line", block.name));
            }
            open = Some(Block {
                name,
                lines: Vec::new(),
            });
        } else if let Some(name) = line.strip_prefix("=== end ") {
            match open.take() {
                Some(block) if block.name == name => found.push(block),
                _ => return Err(format!("stray `=== end {name}`")),
            }
        } else if let Some(block) = open.as_mut() {
            block.lines.push(line);
        }
    }
    match open {
        Some(block) => Err(format!("scenario {} has no `=== end` line", block.name)),
        None => Ok(found),
    }
}

/// Compares the simulator's blocks with the kernel's, scenario by scenario, leaving out
/// the scenarios named in `skip` on both sides: the number of matching scenarios, or every
/// difference as a readable report.
fn compare(simulator: &str, kernel: &str, skip: &[&str]) -> Result<usize, String> {
    let mut expected = blocks(simulator).map_err(|e| format!("simulator output: {e}"))?;
    let mut actual = blocks(kernel).map_err(|e| format!("kernel output: {e}"))?;
    expected.retain(|b| !skip.contains(&b.name));
    actual.retain(|b| !skip.contains(&b.name));
    if expected.is_empty() {
        return Err("the simulator printed no scenario".into());
    }
    let mut report = String::new();
    for exp in &expected {
        match actual.iter().find(|b| b.name == exp.name) {
            None => report.push_str(&format!(
                "scenario {}: the kernel did not run it\n",
                exp.name
            )),
            Some(act) if act.lines == exp.lines => {}
            Some(act) => {
                report.push_str(&format!(
                    "scenario {}: traces differ (--- simulator, +++ qemu)\n",
                    exp.name
                ));
                report.push_str(&diff(&exp.lines, &act.lines));
            }
        }
    }
    for act in actual
        .iter()
        .filter(|a| !expected.iter().any(|e| e.name == a.name))
    {
        report.push_str(&format!(
            "scenario {}: the simulator does not know it\n",
            act.name
        ));
    }
    if report.is_empty() {
        Ok(expected.len())
    } else {
        Err(format!("QEMU and the simulator disagree:\n{report}"))
    }
}

/// Lines of context around each change, and the most diff lines shown per scenario.
const CONTEXT: usize = 3;
const MAX_DIFF_LINES: usize = 60;

/// A unified-style line diff (`-` only in `old`, `+` only in `new`, ` ` context), with
/// `@@ line` headers, cut after [`MAX_DIFF_LINES`].
fn diff(old: &[&str], new: &[&str]) -> String {
    // Common prefix and suffix first: traces differ in few places, which keeps the
    // quadratic LCS table small.
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (a, b) = (
        &old[prefix..old.len() - suffix],
        &new[prefix..new.len() - suffix],
    );
    let ops = if a.len().saturating_mul(b.len()) <= 4_000_000 {
        lcs_ops(a, b)
    } else {
        // Too large to align: show the whole middle as replaced.
        a.iter()
            .map(|l| ('-', *l))
            .chain(b.iter().map(|l| ('+', *l)))
            .collect()
    };
    let mut out = format!("@@ line {} @@\n", prefix + 1);
    for line in &old[prefix.saturating_sub(CONTEXT)..prefix] {
        out.push_str(&format!("  {line}\n"));
    }
    let after = old[old.len() - suffix..]
        .iter()
        .take(CONTEXT)
        .map(|l| (' ', *l));
    for (shown, (op, line)) in ops.into_iter().chain(after).enumerate() {
        if shown == MAX_DIFF_LINES {
            out.push_str("  ... (more differences not shown)\n");
            break;
        }
        out.push_str(&format!("{op} {line}\n"));
    }
    out
}

/// The edit script turning `a` into `b` by a longest common subsequence.
fn lcs_ops<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(char, &'a str)> {
    let w = b.len() + 1;
    let mut len = vec![0u32; (a.len() + 1) * w];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            len[i * w + j] = if a[i] == b[j] {
                len[(i + 1) * w + j + 1] + 1
            } else {
                len[(i + 1) * w + j].max(len[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j, mut ops) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || len[(i + 1) * w + j] >= len[i * w + j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    ops
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n") + "\n"
}

/// Checks `docs/PORTING.md` against the kernel sources (and the `ruprobes` sources the
/// kernel compiles); the number of code blocks checked.
fn check_guide(root: &Path) -> Result<usize, String> {
    let guide_path = root.join("docs/PORTING.md");
    let guide = std::fs::read_to_string(&guide_path)
        .map_err(|e| format!("cannot read docs/PORTING.md: {e}"))?;
    let sources = kernel_sources(root)?;
    let library = rust_files(&root.join("ruprobes/src"), root)?;
    guide_blocks_match(&guide, &sources, &library).map_err(|errors| {
        format!(
            "docs/PORTING.md has code blocks that are not kernel snippets:\n{}",
            errors.join("\n")
        )
    })
}

/// Every file of the kernel that may hold snippets: `(relative path, text)`.
fn kernel_sources(root: &Path) -> Result<Vec<(String, String)>, String> {
    let dir = root.join("fixtures/kernel");
    let mut files = read_files(vec![dir.join("Cargo.toml")], root)?;
    files.extend(rust_files(&dir.join("src"), root)?);
    Ok(files)
}

/// The `.rs` files directly in `dir`: `(path relative to root, text)`, sorted.
fn rust_files(dir: &Path, root: &Path) -> Result<Vec<(String, String)>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    paths.sort();
    read_files(paths, root)
}

fn read_files(paths: Vec<PathBuf>, root: &Path) -> Result<Vec<(String, String)>, String> {
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Ok((
                path.strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                text,
            ))
        })
        .collect()
}

/// Whether `body` (de-indented lines) appears verbatim, at some indentation, in `text`.
fn quoted_in(text: &str, body: &str) -> bool {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let wanted: Vec<&str> = body.lines().collect();
    let Some(first) = wanted.first() else {
        return false;
    };
    (0..lines.len().saturating_sub(wanted.len() - 1)).any(|i| {
        let Some(indent) = lines[i].strip_suffix(first).filter(|p| p.trim().is_empty()) else {
            return false;
        };
        wanted.iter().zip(&lines[i..]).all(|(want, have)| {
            if want.is_empty() {
                have.is_empty()
            } else {
                have.strip_prefix(indent) == Some(want)
            }
        })
    })
}

/// The snippets of `text`: each `ANCHOR: name` ... `ANCHOR_END: name` region (in `//` or
/// `#` comments), without nested anchor lines, de-indented.
fn anchors(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some((_, name)) = line.split_once("ANCHOR: ") else {
            continue;
        };
        let name = name.trim();
        let end_marker = format!("ANCHOR_END: {name}");
        let Some(len) = lines[start + 1..]
            .iter()
            .position(|l| l.trim_end().ends_with(&end_marker))
        else {
            continue;
        };
        let body: Vec<&str> = lines[start + 1..start + 1 + len]
            .iter()
            .copied()
            .filter(|l| !l.contains("ANCHOR"))
            .collect();
        found.push((name.to_string(), dedent(&body)));
    }
    found
}

fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fenced code blocks of a Markdown text: `(info string, body, line number)`.
fn code_blocks(markdown: &str) -> Vec<(&str, String, usize)> {
    let mut found = Vec::new();
    let mut open: Option<(&str, Vec<&str>, usize)> = None;
    for (n, line) in markdown.lines().enumerate() {
        match (open.as_mut(), line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim(), Vec::new(), n + 1)),
            (Some(_), Some(_)) => {
                if let Some((info, body, at)) = open.take() {
                    found.push((info, dedent(&body), at));
                }
            }
            (Some((_, body, _)), None) => body.push(line),
            (None, None) => {}
        }
    }
    found
}

/// Languages whose blocks must be kernel snippets; other blocks (`sh`, `text`) show
/// commands or output.
const CHECKED: &[&str] = &["rust", "toml"];

/// `Ok(number of checked blocks)` if every `rust`/`toml` block of `guide` equals an
/// ANCHOR snippet of `sources` or is quoted verbatim from one of `library`, else one
/// message per stray block.
fn guide_blocks_match(
    guide: &str,
    sources: &[(String, String)],
    library: &[(String, String)],
) -> Result<usize, Vec<String>> {
    let snippets: Vec<(String, String)> =
        sources.iter().flat_map(|(_, text)| anchors(text)).collect();
    let mut errors = Vec::new();
    let mut checked = 0;
    for (info, body, line) in code_blocks(guide) {
        if !CHECKED.contains(&info) {
            if info.is_empty() {
                errors.push(format!("  line {line}: a code block without a language"));
            }
            continue;
        }
        checked += 1;
        if !snippets.iter().any(|(_, s)| *s == body)
            && !library.iter().any(|(_, text)| quoted_in(text, &body))
        {
            let first = body.lines().next().unwrap_or("");
            errors.push(format!("  line {line}: ```{info} block starting `{first}` is neither an ANCHOR region of fixtures/kernel nor quoted from ruprobes/src"));
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIM: &str = "=== scenario a\npid 1 exit 0\n--- output\nhi\n=== end a\n\
                       === scenario b\npid 1 syscall write\npid 1 exit 0\n--- output\n=== end b\n";

    #[test]
    fn blocks_ignore_text_outside_and_reject_unterminated_ones() {
        let text = "OpenSBI banner\n=== scenario a\nx\n=== end a\n[kernel] log\n=== all done\n";
        assert_eq!(
            blocks(text),
            Ok(vec![Block {
                name: "a",
                lines: vec!["x"]
            }])
        );
        assert!(blocks("=== scenario a\nx\n").is_err());
        assert!(blocks("=== scenario a\n=== scenario b\n=== end b\n").is_err());
        assert!(blocks("=== end a\n").is_err());
    }

    #[test]
    fn identical_traces_match_whatever_surrounds_them() {
        let kernel = format!("banner\n[kernel] 13 fixtures\n{SIM}=== all done\n");
        assert_eq!(compare(SIM, &kernel, &[]), Ok(2));
    }

    #[test]
    fn a_different_line_is_reported_as_a_diff() {
        let kernel = SIM.replace("pid 1 syscall write", "pid 1 syscall yield");
        let report = compare(SIM, &kernel, &[]).unwrap_err();
        assert!(report.contains("scenario b: traces differ"), "{report}");
        assert!(
            report.contains("- pid 1 syscall write\n+ pid 1 syscall yield\n  pid 1 exit 0\n"),
            "{report}"
        );
        assert!(!report.contains("scenario a"), "{report}");
    }

    #[test]
    fn skipped_scenarios_are_left_out_on_both_sides() {
        let kernel = SIM.replace("pid 1 syscall write", "pid 1 syscall yield");
        assert_eq!(compare(SIM, &kernel, &["b"]), Ok(1));
        let only_a = "=== scenario a\npid 1 exit 0\n--- output\nhi\n=== end a\n";
        assert_eq!(compare(SIM, only_a, &["b"]), Ok(1));
        assert!(compare(SIM, &kernel, &["a"]).is_err(), "b still differs");
    }

    #[test]
    fn missing_and_unknown_scenarios_fail() {
        let only_a = "=== scenario a\npid 1 exit 0\n--- output\nhi\n=== end a\n";
        assert!(compare(SIM, only_a, &[])
            .unwrap_err()
            .contains("scenario b: the kernel did not run it"));
        assert!(compare(only_a, SIM, &[])
            .unwrap_err()
            .contains("scenario b: the simulator does not know it"));
        assert!(compare("", SIM, &[]).is_err());
    }

    #[test]
    fn stack_peaks_are_listed_per_scenario_and_required() {
        let kernel = format!(
            "{SIM}[kernel] kernel stack peak a: 1200 of 8192 bytes (pid 1)\n\
             [kernel] kernel stack peak b: 2400 of 8192 bytes (pid 2)\n"
        );
        assert_eq!(
            stack_peaks(SIM, &kernel),
            Ok(format!(
                "  {:<24} 1200 of 8192 bytes (pid 1)\n  {:<24} 2400 of 8192 bytes (pid 2)\n",
                "a", "b"
            ))
        );
        let only_a = "[kernel] kernel stack peak a: 1200 of 8192 bytes (pid 1)\n";
        assert_eq!(
            stack_peaks(SIM, only_a),
            Err("no kernel-stack peak reported for: b".to_string())
        );
    }

    #[test]
    fn every_smp_scenario_must_report_ok() {
        let ok: String = SMP_SCENARIOS
            .iter()
            .map(|name| format!("[smp] {name}: 4 harts\n[smp] {name}: ok\n"))
            .collect();
        let shown: String = ok.lines().map(|l| format!("  {l}\n")).collect();
        assert_eq!(smp_results(&ok), Ok(shown));
        let failed = ok.replace(
            "[smp] killed_in_xol: ok",
            "[smp] killed_in_xol: FAILED: threads were left blocked",
        );
        assert!(smp_results(&failed).unwrap_err().contains("left blocked"));
        let missing = ok.replace("[smp] own_ebreak: ok\n", "");
        assert!(smp_results(&missing)
            .unwrap_err()
            .contains("own_ebreak: the kernel did not report it"));
        assert!(smp_results("[smp] other: ok\n")
            .unwrap_err()
            .contains("threads_probed: the kernel did not report it"));
    }

    #[test]
    fn the_overflow_boot_must_report_pid_1_and_stop() {
        use std::os::unix::process::ExitStatusExt;
        let run = |console: &str| {
            check_overflow(&(
                std::process::ExitStatus::from_raw(0),
                console.to_string(),
                String::new(),
            ))
        };
        let report = "[kernel] kernel stack overflow in pid 1: sp 0xc0001ea0 ...";
        assert_eq!(
            run(&format!("banner\n{report}\n=== all done (FAILED)\n")),
            Ok("kernel stack overflow in pid 1: sp 0xc0001ea0 ...".to_string())
        );
        assert!(run("banner\n[kernel] panic: kernel trap\n").is_err());
        assert!(run(&format!("{report}\n{ALL_DONE}\n")).is_err());
        assert!(run("[kernel] kernel stack overflow in pid 2: ...\n").is_err());
    }

    #[test]
    fn diff_aligns_insertions_and_deletions() {
        let old = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let new = ["a", "b", "c", "X", "d", "e", "g", "h"];
        let d = diff(&old, &new);
        assert_eq!(
            d,
            "@@ line 4 @@\n  a\n  b\n  c\n+ X\n  d\n  e\n- f\n  g\n  h\n"
        );
    }

    #[test]
    fn diff_output_is_bounded() {
        let old: Vec<String> = (0..500).map(|i| format!("line {i}")).collect();
        let new: Vec<String> = (0..500).map(|i| format!("other {i}")).collect();
        let (old, new): (Vec<&str>, Vec<&str>) = (
            old.iter().map(|s| s.as_str()).collect(),
            new.iter().map(|s| s.as_str()).collect(),
        );
        let d = diff(&old, &new);
        assert!(d.lines().count() <= MAX_DIFF_LINES + 2, "{d}");
        assert!(d.ends_with("  ... (more differences not shown)\n"));
    }

    #[test]
    fn guide_blocks_must_be_anchored_snippets() {
        let source = "fn a() {\n    // ANCHOR: call\n    let x = 1;\n    // ANCHOR: inner\n    f(x);\n    // ANCHOR_END: inner\n    // ANCHOR_END: call\n}\n";
        let sources = vec![("k.rs".to_string(), source.to_string())];
        let library = vec![(
            "lib.rs".to_string(),
            "pub trait T {\n    fn a(&self);\n\n    fn b(&self);\n}\n".to_string(),
        )];
        let check = |guide: &str| guide_blocks_match(guide, &sources, &library);
        assert_eq!(check("text\n```rust\nlet x = 1;\nf(x);\n```\n"), Ok(1));
        assert_eq!(
            check("```rust\nf(x);\n```\n```sh\ncargo xtask qemu-test\n```\n"),
            Ok(1)
        );
        let err = check("```rust\nlet x = 2;\n```\n").unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].contains("line 1"), "{err:?}");
        assert!(check("```\nf(x);\n```\n").is_err());
        // Quotes from the library: whole items or indented runs, verbatim.
        assert_eq!(
            check("```rust\npub trait T {\n    fn a(&self);\n\n    fn b(&self);\n}\n```\n"),
            Ok(1)
        );
        assert_eq!(check("```rust\nfn a(&self);\n\nfn b(&self);\n```\n"), Ok(1));
        assert!(check("```rust\nfn a(&self);\nfn b(&self);\n```\n").is_err());
        assert!(check("```rust\nfn c(&self);\n```\n").is_err());
    }

    /// The real guide against the real kernel: a plain `cargo test` catches drift too.
    #[test]
    fn porting_guide_matches_the_kernel() {
        match check_guide(&repo_root()) {
            Ok(n) => assert!(n >= 8, "only {n} checked code blocks in docs/PORTING.md"),
            Err(e) => panic!("{e}"),
        }
    }
}

//! `cargo xtask linux-user`: programs built by the distro's cross toolchains run in the
//! simulator exactly as under `qemu-riscv64`, probed and unprobed.
//!
//! The programs of `fixtures/linux/` are built here, into `target/linux-user/`, and never
//! committed (a static glibc binary carries LGPL code; building it is cheap):
//! `glibc_demo.c` and `glibc_abort.c` with `riscv64-linux-gnu-gcc -static -O2`, and
//! `std_demo.rs` with `rustc --target riscv64gc-unknown-linux-gnu -C target-feature=+crt-static
//! -C linker=riscv64-linux-gnu-gcc -O`. Each runs with the same arguments and environment
//! under `qemu-riscv64` (the reference) and in the simulator with the Linux personality,
//! chosen automatically from the ELF; stdout and exit status must be equal. Then the
//! property: with an entry probe and a return probe on every function symbol, while the
//! threads run (and interleave differently, since probe hits shift the instruction clock),
//! output and status are unchanged and the named functions' entry and return counts equal
//! their known call counts, across all threads (`setjmp`, which returns twice, has no
//! return probe).
//!
//! `--perf` also prints the simulator's speed (MIPS) on each program, unprobed, measured in
//! this process (build xtask with `--release` for numbers worth quoting).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use ruprobes_sim::kernel::{ExitStatus, Personality};
use ruprobes_sim::machine::{Config, Machine, ProbeRole};

/// The arguments every program gets after `argv[0]`.
const ARGS: [&str; 2] = ["one", "two words"];
/// The environment every program gets (and only this).
const ENV: &str = "FIXTURE_MODE=ci";

/// One program and what its probed run must show.
struct Program {
    /// Its name (the source file stem).
    name: &'static str,
    /// How it is built.
    build: Build,
    /// Functions with their exact number of calls in one run.
    calls: &'static [(&'static str, u64)],
}

enum Build {
    /// `riscv64-linux-gnu-gcc -static -O2 fixtures/linux/NAME.c -lm`.
    Gcc,
    /// rustc for riscv64gc-unknown-linux-gnu, static.
    Rustc,
}

const PROGRAMS: &[Program] = &[
    Program {
        name: "glibc_demo",
        build: Build::Gcc,
        // 4 workers x 3000 steps; each worker runs once; main once.
        calls: &[("step", 12_000), ("worker", 4), ("main", 1)],
    },
    Program {
        name: "glibc_abort",
        build: Build::Gcc,
        calls: &[("report", 3)],
    },
    Program {
        name: "std_demo",
        build: Build::Rustc,
        // 4 threads x 500 numbers.
        calls: &[("collatz_len", 2000), ("integrate", 4)],
    },
];

/// Entry point of `cargo xtask linux-user`.
pub fn run(args: &[String]) -> Result<(), String> {
    let perf = match args {
        [] => false,
        [flag] if flag == "--perf" => true,
        _ => return Err("usage: cargo xtask linux-user [--perf]".into()),
    };
    let root = crate::repo_root();
    let out = root.join("target").join("linux-user");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut failures = Vec::new();
    for program in PROGRAMS {
        let elf = build(&root, &out, program)?;
        let bytes = std::fs::read(&elf).map_err(|e| format!("{}: {e}", elf.display()))?;
        let (want_out, want_status) = run_qemu(&elf)?;
        let shown = elf.display().to_string();
        let mut plain_machine = machine(program.name, &shown, &bytes)?;
        if plain_machine.personality() != Personality::Linux {
            failures.push(format!(
                "{}: the automatic personality is not Linux",
                program.name
            ));
        }
        let started = Instant::now();
        let plain = plain_machine
            .run()
            .map_err(|e| format!("{}: {e}", program.name))?;
        let seconds = started.elapsed().as_secs_f64();
        let mut check = |what: &str, stdout: &[u8], status: ExitStatus| {
            if stdout != want_out.as_slice() {
                failures.push(format!(
                    "{}: {what} stdout differs from qemu-riscv64's\n--- qemu-riscv64\n{}--- simulator\n{}",
                    program.name,
                    String::from_utf8_lossy(&want_out),
                    String::from_utf8_lossy(stdout)
                ));
            }
            if status.shell_code() != want_status {
                failures.push(format!(
                    "{}: {what} exit status {} ({status:?}), qemu-riscv64 gives {want_status}",
                    program.name,
                    status.shell_code()
                ));
            }
        };
        check("unprobed", &plain.stdout, plain.status);
        if perf {
            eprintln!(
                "xtask linux-user: {}: {} instructions in {:.3} s = {:.1} MIPS",
                program.name,
                plain.instructions,
                seconds,
                plain.instructions as f64 / seconds / 1e6
            );
        }
        // Every function probed at entry, and at return but for `setjmp` (see
        // `returns_twice`).
        let mut probed = machine(program.name, &shown, &bytes)?;
        probed
            .add_probes("uprobe:*")
            .map_err(|e| format!("{}: uprobe:*: {e}", program.name))?;
        let returning: Vec<String> = probed
            .main_image()
            .map(|image| {
                image
                    .symbols
                    .symbols()
                    .iter()
                    .filter(|s| s.is_func && !returns_twice(&s.name))
                    .map(|s| s.name.to_string())
                    .collect()
            })
            .unwrap_or_default();
        // Functions that start with an instruction the engine refuses (a CSR access, as
        // `uretprobe:*` skips them too) go without.
        for name in returning {
            let _ = probed.add_probe(&format!("uretprobe:{name}"));
        }
        let result = probed.run().map_err(|e| format!("{}: {e}", program.name))?;
        check("probed", &result.stdout, result.status);
        if result.status != plain.status {
            failures.push(format!(
                "{}: probed run's kernel messages: {:?}",
                program.name, result.diagnostics
            ));
        }
        for &(function, calls) in program.calls {
            let counts = result
                .probes
                .iter()
                .filter(|p| {
                    p.role == ProbeRole::Return
                        && probed
                            .main_image()
                            .and_then(|i| i.symbols.resolve(function))
                            .is_some_and(|a| a == p.addr)
                })
                .map(|p| (p.stats.hits, p.stats.returns))
                .next();
            if counts != Some((calls, calls)) {
                failures.push(format!(
                    "{}: {function}: (entries, returns) {counts:?}, expected ({calls}, {calls})",
                    program.name
                ));
            }
        }
        eprintln!(
            "xtask linux-user: {}: exit {} like qemu-riscv64; {} instructions unprobed, {} with every function probed ({} probes)",
            program.name,
            want_status,
            plain.instructions,
            result.instructions,
            result.probes.len()
        );
    }
    if failures.is_empty() {
        eprintln!(
            "xtask linux-user: {} programs match qemu-riscv64, probed and unprobed",
            PROGRAMS.len()
        );
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// Functions that return twice: `setjmp` and its aliases. A return probe replaces the return
/// address, which `setjmp` saves in the `jmp_buf`; the second return (by `longjmp`) then
/// reaches the engine's trampoline with no pending return, and the process is killed by
/// SIGTRAP, as Linux does. The property leaves their return probes out (entry probes stay);
/// the `longjmp`s themselves (glibc's failing `dlsym` in Rust std's weak-symbol lookups)
/// run with every other function return-probed.
fn returns_twice(name: &str) -> bool {
    name.contains("setjmp")
}

/// A quiet machine with `elf` loaded as it is started here.
fn machine(name: &str, shown: &str, elf: &[u8]) -> Result<Machine, String> {
    let mut m = Machine::new(Config::default());
    let argv = std::iter::once(shown.to_string())
        .chain(ARGS.iter().map(|s| s.to_string()))
        .collect();
    m.set_args(argv, vec![ENV.to_string()]);
    m.load(name, elf).map_err(|e| format!("{name}: {e}"))?;
    Ok(m)
}

/// Builds `program` into `out` and returns the ELF's path.
fn build(root: &Path, out: &Path, program: &Program) -> Result<PathBuf, String> {
    let src_dir = root.join("fixtures").join("linux");
    let elf = out.join(program.name);
    let mut cmd = match program.build {
        Build::Gcc => {
            let mut c = Command::new("riscv64-linux-gnu-gcc");
            c.args(["-static", "-O2", "-Wall", "-Werror", "-o"])
                .arg(&elf)
                .arg(src_dir.join(format!("{}.c", program.name)))
                .arg("-lm");
            c
        }
        Build::Rustc => {
            let mut c = Command::new("rustc");
            c.args([
                "--edition",
                "2021",
                "--target",
                "riscv64gc-unknown-linux-gnu",
                "-C",
                "target-feature=+crt-static",
                "-C",
                "linker=riscv64-linux-gnu-gcc",
                "-O",
                "-o",
            ])
            .arg(&elf)
            .arg(src_dir.join(format!("{}.rs", program.name)));
            c
        }
    };
    let tool = match program.build {
        Build::Gcc => "riscv64-linux-gnu-gcc (apt-get install gcc-riscv64-linux-gnu)",
        Build::Rustc => {
            "rustc with riscv64gc-unknown-linux-gnu (rustup target add riscv64gc-unknown-linux-gnu)"
        }
    };
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if !status.success() {
        return Err(format!("building {} failed ({tool})", program.name));
    }
    Ok(elf)
}

/// Runs `elf` under qemu-riscv64 with [`ARGS`] and only [`ENV`]; its stdout and status.
fn run_qemu(elf: &Path) -> Result<(Vec<u8>, i32), String> {
    let (key, value) = ENV.split_once('=').unwrap_or((ENV, ""));
    let output = Command::new("qemu-riscv64")
        .arg(elf)
        .args(ARGS)
        .env_clear()
        .env(key, value)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run qemu-riscv64 (apt-get install qemu-user): {e}"))?;
    let status = {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            output
                .status
                .signal()
                .map(|s| 128 + s)
                .or(output.status.code())
                .unwrap_or(-1)
        }
        #[cfg(not(unix))]
        {
            output.status.code().unwrap_or(-1)
        }
    };
    Ok((output.stdout, status))
}

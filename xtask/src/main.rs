//! `cargo xtask`: fixture builds, QEMU checks, performance report.
//!
//! A small dispatcher: one module per subcommand, each exposing
//! `run(args: &[String]) -> Result<(), String>`. Add a subcommand with one line in
//! [`COMMANDS`].

mod bpf;
mod fixtures;
mod linux_user;
mod manifest;
mod perf;
mod qemu_test;
mod qemu_user;
mod smp_perf;
mod stack_check;

use std::path::PathBuf;
use std::process::ExitCode;

/// A subcommand: its name, a one-line description and its entry point.
type Command = (
    &'static str,
    &'static str,
    fn(&[String]) -> Result<(), String>,
);

/// Every subcommand.
const COMMANDS: &[Command] = &[
    (
        "fixtures",
        "build fixtures/bin from fixtures/user ([--check]: verify instead)",
        fixtures::run,
    ),
    (
        "bpf",
        "compile the BPF C programs of fixtures/bpf ([--check]: verify instead)",
        bpf::run,
    ),
    (
        "qemu-user",
        "run the Linux-compatible fixtures under qemu-riscv64 ([--bless])",
        qemu_user::run,
    ),
    (
        "linux-user",
        "build the glibc and Rust std programs of fixtures/linux; they must run in the simulator as under qemu-riscv64, probed and unprobed ([--perf])",
        linux_user::run,
    ),
    (
        "qemu-test",
        "boot the test kernel under qemu-system-riscv64 and compare its traces with the simulator's",
        qemu_test::run,
    ),
    (
        "perf",
        "measure probe costs on the fixtures in the simulator ([--json] [FIXTURE ...])",
        perf::run,
    ),
    (
        "smp-perf",
        "the test kernel's probe hits/s on 1, 2 and 4 harts under QEMU, with each vCPU's host CPU time ([--boots N])",
        smp_perf::run,
    ),
    (
        "stack-check",
        "prove the core's kernel-stack budget from its riscv64 object code ([--report]: do not fail)",
        stack_check::run,
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        return usage();
    };
    let Some((_, _, run)) = COMMANDS.iter().find(|(n, _, _)| n == name) else {
        eprintln!("xtask: unknown command `{name}`");
        return usage();
    };
    match run(&args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {name}: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: cargo xtask <command> [options]\n\ncommands:");
    for (name, help, _) in COMMANDS {
        eprintln!("  {name:<12} {help}");
    }
    ExitCode::from(2)
}

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().map(PathBuf::from).unwrap_or(xtask_dir)
}

//! `cargo xtask qemu-user [--bless]`: runs every Linux-compatible fixture under
//! `qemu-riscv64` (an independent oracle) and compares stdout and exit status with
//! `fixtures/bin/NAME.stdout` and the manifest. `--bless` rewrites the `.stdout` files of the
//! Linux fixtures from qemu's output instead (review the diff before committing).

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::manifest::{self, Entry, Kind};

/// The user-mode emulator.
const QEMU: &str = "qemu-riscv64";

/// A fixture taking longer than this is reported as hung.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Entry point of `cargo xtask qemu-user`.
pub fn run(args: &[String]) -> Result<(), String> {
    let bless = match args {
        [] => false,
        [flag] if flag == "--bless" => true,
        _ => return Err("usage: cargo xtask qemu-user [--bless]".into()),
    };
    let root = crate::repo_root();
    let bin = manifest::bin_dir(&root);
    let entries = manifest::load(&root)?;
    let mut failures = Vec::new();
    let mut ran = 0;
    for entry in entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Linux | Kind::Bench))
    {
        let elf = bin.join(format!("{}.elf", entry.name));
        let bytes =
            std::fs::read(&elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
        if manifest::sha256_hex(&bytes) != entry.sha256 {
            failures.push(format!(
                "{}: the ELF does not match its MANIFEST sha256",
                entry.name
            ));
            continue;
        }
        if !is_executable(&elf) {
            failures.push(format!(
                "{}: {} is not executable, which qemu-riscv64 requires (chmod +x, or rerun `cargo xtask fixtures`)",
                entry.name,
                elf.display()
            ));
            continue;
        }
        let (stdout, status) = run_qemu(&elf)?;
        ran += 1;
        let stdout_path = bin.join(format!("{}.stdout", entry.name));
        if bless {
            std::fs::write(&stdout_path, &stdout)
                .map_err(|e| format!("cannot write {}: {e}", stdout_path.display()))?;
        }
        failures.extend(check(entry, &stdout, status, &stdout_path));
    }
    if failures.is_empty() {
        eprintln!("xtask qemu-user: {ran} fixtures match their expected stdout and exit status");
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// Whether `path` has an execute bit (always true off Unix).
fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        true
    }
}

/// Compares one run with the expectations; returns the mismatches.
fn check(entry: &Entry, stdout: &[u8], status: i32, stdout_path: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    if status != entry.exit_code {
        problems.push(format!(
            "{}: exit status {status}, MANIFEST expects {}",
            entry.name, entry.exit_code
        ));
    }
    match std::fs::read(stdout_path) {
        Ok(expected) if expected == stdout => {}
        Ok(expected) => problems.push(format!(
            "{}: stdout differs\n--- expected ({})\n{}--- qemu-riscv64\n{}",
            entry.name,
            stdout_path.display(),
            String::from_utf8_lossy(&expected),
            String::from_utf8_lossy(stdout)
        )),
        Err(e) => problems.push(format!(
            "{}: cannot read {}: {e}",
            entry.name,
            stdout_path.display()
        )),
    }
    problems
}

/// Runs `elf` under qemu-riscv64; returns its stdout and its status (128 + signal if killed).
fn run_qemu(elf: &Path) -> Result<(Vec<u8>, i32), String> {
    let mut child = Command::new(QEMU)
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!(
                    "{QEMU} not found: install the qemu-user package: apt-get install qemu-user"
                )
            }
            _ => format!("cannot run {QEMU}: {e}"),
        })?;
    // Fixture output is small (far below a pipe's buffer), so reading after exit is safe.
    let started = Instant::now();
    let status = loop {
        match child
            .try_wait()
            .map_err(|e| format!("waiting for {QEMU}: {e}"))?
        {
            Some(status) => break status,
            None if started.elapsed() > TIMEOUT => {
                // Best effort: the process may exit on its own meanwhile.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish within {TIMEOUT:?}",
                    elf.display()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let mut stdout = Vec::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_end(&mut stdout)
            .map_err(|e| format!("reading {QEMU} output: {e}"))?;
    }
    Ok((stdout, status_code(status)))
}

/// The shell convention: the exit code, or 128 + signal number for a killed process.
fn status_code(status: ExitStatus) -> i32 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    status.code().unwrap_or(-1)
}

//! `cargo xtask fixtures [--check]`: builds the RISC-V fixture programs of `fixtures/user`
//! (Rust) and `fixtures/c` (freestanding C, no libc) and installs them as
//! `fixtures/bin/NAME.elf` with the manifest; `--check` rebuilds into a temporary directory
//! and fails if any committed ELF, the manifest or the recorded toolchains differ.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::manifest::{self, Entry, Kind};

/// The compilation target of every fixture.
const TARGET: &str = "riscv64gc-unknown-none-elf";

/// A fixture program: `fixtures/user/src/bin/NAME.rs`.
struct Fixture {
    name: &'static str,
    /// Exit status expected in every kernel (128 + signal under Linux when killed).
    exit_code: i32,
    kind: Kind,
}

/// The C compiler of the `fixtures/c` programs (Debian package `gcc-riscv64-linux-gnu`).
const CC: &str = "riscv64-linux-gnu-gcc";

/// How every C fixture is built: static, no libc, no start files (each has its own
/// `_start`), RV64GC.
const CFLAGS: &[&str] = &[
    "-static",
    "-nostdlib",
    "-O2",
    "-march=rv64gc",
    "-mabi=lp64d",
    "-Wall",
    "-Wextra",
];

/// The C fixtures: `fixtures/c/NAME.c`, after the Rust ones in the manifest.
const C_FIXTURES: &[Fixture] = &[
    // Ends with a dynamic-rounding instruction while frm is invalid: killed by SIGILL
    // (128 + 4).
    Fixture {
        name: "fp",
        exit_code: 132,
        kind: Kind::Linux,
    },
];

/// Every Rust fixture, in manifest order.
const FIXTURES: &[Fixture] = &[
    Fixture {
        name: "hello",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "fib",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "deep",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "loops",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "calls",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "globals",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "longjmp",
        exit_code: 0,
        kind: Kind::Linux,
    },
    // Copies stdin to stdout: a shell-like program driven from a pipe (read 63).
    Fixture {
        name: "cat",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "greet",
        exit_code: 0,
        kind: Kind::Linux,
    },
    // Killed by SIGTRAP: Linux reports 128 + 5.
    Fixture {
        name: "trap_self",
        exit_code: 133,
        kind: Kind::Linux,
    },
    // Killed by SIGSEGV: Linux reports 128 + 11.
    Fixture {
        name: "xol_fault",
        exit_code: 139,
        kind: Kind::Linux,
    },
    Fixture {
        name: "forker",
        exit_code: 0,
        kind: Kind::Ours,
    },
    // Prints the simulator's clock readings (instret, cycle, time, get_time).
    Fixture {
        name: "clock",
        exit_code: 0,
        kind: Kind::Ours,
    },
    Fixture {
        name: "insn_zoo",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "sort",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "crc",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "interp",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "xol_pages",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "smp_threads",
        exit_code: 0,
        kind: Kind::Linux,
    },
    // The other SMP scenarios of the QEMU test kernel; elsewhere they exit 0 at once.
    Fixture {
        name: "smp_fork",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "smp_kill",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "smp_ebreak",
        exit_code: 0,
        kind: Kind::Linux,
    },
    Fixture {
        name: "smp_hits",
        exit_code: 0,
        kind: Kind::Linux,
    },
    // Over 50 million instructions: `cargo xtask perf` only.
    Fixture {
        name: "bench",
        exit_code: 0,
        kind: Kind::Bench,
    },
];

/// Entry point of `cargo xtask fixtures`.
pub fn run(args: &[String]) -> Result<(), String> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => return Err("usage: cargo xtask fixtures [--check]".into()),
    };
    let root = crate::repo_root();
    let user = root.join("fixtures").join("user");
    check_fixture_list(&user.join("src").join("bin"), "rs", FIXTURES)?;
    check_fixture_list(&root.join("fixtures").join("c"), "c", C_FIXTURES)?;
    if check {
        let scratch =
            std::env::temp_dir().join(format!("ruprobes-fixtures-check-{}", std::process::id()));
        let result = build(&root, &scratch).and_then(|built| compare(&root, &built));
        // Best effort: a leftover temporary directory is harmless.
        let _ = std::fs::remove_dir_all(&scratch);
        result
    } else {
        let built = build(&root, &root.join("target").join("fixtures"))?;
        install(&root, &built)
    }
}

/// The outputs of one build.
struct Built {
    entries: Vec<Entry>,
    elves: Vec<Vec<u8>>,
    toolchain: String,
}

/// Fails unless `dir` holds exactly the sources (`NAME.ext`) of `fixtures`.
fn check_fixture_list(dir: &Path, ext: &str, fixtures: &[Fixture]) -> Result<(), String> {
    let suffix = format!(".{ext}");
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(suffix.as_str()))
                .map(String::from)
        })
        .collect();
    found.sort();
    let mut listed: Vec<String> = fixtures.iter().map(|f| f.name.to_string()).collect();
    listed.sort();
    if found != listed {
        return Err(format!(
            "{} holds {found:?} but xtask lists {listed:?}: update xtask/src/fixtures.rs",
            dir.display()
        ));
    }
    Ok(())
}

/// Builds every fixture with cargo into `target_dir` and collects ELFs and manifest entries.
fn build(root: &Path, target_dir: &Path) -> Result<Built, String> {
    let user = root.join("fixtures").join("user");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    // Configuration is discovered from the working directory: fixtures/user/.cargo.
    cmd.current_dir(&user)
        .args([
            "build",
            "--release",
            "--locked",
            "--bins",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
    // Only the committed configuration may influence the bytes.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_RISCV64GC_UNKNOWN_NONE_ELF_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_PROFILE_RELEASE_STRIP",
        "CARGO_PROFILE_RELEASE_OPT_LEVEL",
    ] {
        cmd.env_remove(var);
    }
    eprintln!("xtask fixtures: building into {}", target_dir.display());
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build of fixtures/user failed ({status}); is the target installed? rustup target add {TARGET}"
        ));
    }
    let out = target_dir.join(TARGET).join("release");
    let c_out = target_dir.join("c");
    build_c(root, &c_out)?;
    let root_text = root.to_string_lossy().into_owned();
    let mut entries = Vec::new();
    let mut elves = Vec::new();
    let built = FIXTURES
        .iter()
        .map(|f| (f, out.join(f.name)))
        .chain(C_FIXTURES.iter().map(|f| (f, c_out.join(f.name))));
    for (f, path) in built {
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if contains(&bytes, root_text.as_bytes()) {
            return Err(format!(
                "{}.elf embeds the absolute path {root_text}: the build is not location-independent",
                f.name
            ));
        }
        entries.push(Entry {
            name: f.name.to_string(),
            sha256: manifest::sha256_hex(&bytes),
            exit_code: f.exit_code,
            kind: f.kind,
        });
        elves.push(bytes);
    }
    Ok(Built {
        entries,
        elves,
        toolchain: rustc_version(&user)? + &cc_version()?,
    })
}

/// Compiles every C fixture into `out`. The compiler runs in `fixtures/c` on the bare file
/// name, so no absolute path reaches the ELF (its symbol table names the file `NAME.c`).
fn build_c(root: &Path, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let dir = root.join("fixtures").join("c");
    for f in C_FIXTURES {
        let source = format!("{}.c", f.name);
        let status = Command::new(CC)
            .current_dir(&dir)
            .args(CFLAGS)
            .arg("-o")
            .arg(out.join(f.name))
            .arg(&source)
            .status()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("{CC} not found: install it with apt-get install gcc-riscv64-linux-gnu")
                }
                _ => format!("cannot run {CC}: {e}"),
            })?;
        if !status.success() {
            return Err(format!("{CC} failed on fixtures/c/{source} ({status})"));
        }
    }
    Ok(())
}

/// `CC --version`'s first line, which the C fixtures' bytes depend on.
fn cc_version() -> Result<String, String> {
    let out = Command::new(CC)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {CC}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(format!("{}\n", text.lines().next().unwrap_or("").trim()))
}

/// `rustc --version` of the toolchain cargo uses in `dir`.
fn rustc_version(dir: &Path) -> Result<String, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .current_dir(dir)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    Ok(format!("{}\n", String::from_utf8_lossy(&out.stdout).trim()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn elf_path(bin: &Path, name: &str) -> PathBuf {
    bin.join(format!("{name}.elf"))
}

/// Writes the ELFs, MANIFEST and TOOLCHAIN into fixtures/bin.
fn install(root: &Path, built: &Built) -> Result<(), String> {
    let bin = manifest::bin_dir(root);
    std::fs::create_dir_all(&bin).map_err(|e| format!("cannot create {}: {e}", bin.display()))?;
    let write = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    for (entry, elf) in built.entries.iter().zip(&built.elves) {
        let path = elf_path(&bin, &entry.name);
        write(path.clone(), elf)?;
        make_executable(&path)?;
        if !bin.join(format!("{}.stdout", entry.name)).exists() {
            eprintln!(
                "xtask fixtures: warning: no expected output fixtures/bin/{}.stdout",
                entry.name
            );
        }
    }
    write(
        bin.join("MANIFEST"),
        manifest::format(&built.entries).as_bytes(),
    )?;
    write(bin.join("TOOLCHAIN"), built.toolchain.as_bytes())?;
    eprintln!(
        "xtask fixtures: installed {} fixtures into fixtures/bin",
        built.entries.len()
    );
    Ok(())
}

/// Marks an ELF executable: qemu-riscv64 refuses to load files without the x bit.
fn make_executable(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Compares a fresh build with what is committed in fixtures/bin.
fn compare(root: &Path, built: &Built) -> Result<(), String> {
    let bin = manifest::bin_dir(root);
    let mut problems = Vec::new();
    for (entry, elf) in built.entries.iter().zip(&built.elves) {
        let path = elf_path(&bin, &entry.name);
        match std::fs::read(&path) {
            Ok(committed) if committed == *elf => {}
            Ok(committed) => problems.push(format!(
                "fixtures/bin/{}.elf differs from a fresh build (committed sha256 {}, rebuilt {})",
                entry.name,
                manifest::sha256_hex(&committed),
                entry.sha256
            )),
            Err(e) => problems.push(format!("cannot read {}: {e}", path.display())),
        }
        if !bin.join(format!("{}.stdout", entry.name)).exists() {
            problems.push(format!(
                "fixtures/bin/{}.stdout (expected output) is missing",
                entry.name
            ));
        }
    }
    let expected = manifest::format(&built.entries);
    match std::fs::read_to_string(bin.join("MANIFEST")) {
        Ok(committed) if committed == expected => {}
        Ok(_) => problems.push(format!(
            "fixtures/bin/MANIFEST differs from a fresh build; expected:\n{expected}"
        )),
        Err(e) => problems.push(format!("cannot read fixtures/bin/MANIFEST: {e}")),
    }
    match std::fs::read_to_string(bin.join("TOOLCHAIN")) {
        Ok(committed) if committed == built.toolchain => {}
        Ok(committed) => problems.push(format!(
            "fixtures were committed with `{}` but this is `{}`: ELF differences may come from the compiler",
            committed.trim(),
            built.toolchain.trim()
        )),
        Err(e) => problems.push(format!("cannot read fixtures/bin/TOOLCHAIN: {e}")),
    }
    if problems.is_empty() {
        eprintln!(
            "xtask fixtures: all {} committed fixtures match a fresh build",
            built.entries.len()
        );
        Ok(())
    } else {
        Err(format!(
            "{}\n(run `cargo xtask fixtures` and commit fixtures/bin if the change is intended)",
            problems.join("\n")
        ))
    }
}

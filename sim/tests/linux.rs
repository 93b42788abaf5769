//! The program-facing options of `run` and `trace` (`-- ARGS`, `--env`, `--root`,
//! `--personality`), exec by app name, and the bad-input lines for ELFs the simulator
//! cannot run. The glibc and Rust std programs are checked by `cargo xtask linux-user`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ruprobes_sim::machine::FIXTURES_DIR;

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ruprobes-sim"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start ruprobes-sim: {e}"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES_DIR).join(format!("{name}.elf"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ruprobes-linux-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn one_error_line(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "{err:?}"
    );
}

#[test]
fn dynamic_and_foreign_elves_get_one_clear_line() {
    let dir = scratch("bad-elf");
    let fib = read(&fixture("fib"));
    let phoff = u64::from_le_bytes(fib[32..40].try_into().unwrap_or_default()) as usize;
    let mut dynamic = fib.clone();
    dynamic[phoff..phoff + 4].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
    let mut x86 = fib.clone();
    x86[18] = 62; // EM_X86_64
    let mut class32 = fib;
    class32[4] = 1; // ELFCLASS32
    for (name, bytes, needle) in [
        ("dynamic", dynamic, "needs the dynamic loader"),
        ("x86", x86, "not a RISC-V 64 executable"),
        ("class32", class32, "(machine 243, 32-bit)"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        let o = sim(&["run", &path.display().to_string()]);
        one_error_line(&o, 1, needle);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_says_why_a_program_was_killed() {
    let o = sim(&["run", &fixture("trap_self").display().to_string()]);
    assert_eq!(o.status.code(), Some(133));
    let err = stderr(&o);
    assert!(
        err.contains("killed by SIGTRAP at pc=0x") && err.contains("(main+0x"),
        "signal, pc and symbol on stderr: {err:?}"
    );
    let o = sim(&["run", &fixture("hello").display().to_string()]);
    assert_eq!(stderr(&o), "", "nothing on stderr when it exits");
}

#[test]
fn exec_finds_apps_by_name_in_the_program_dir_and_the_root() {
    let expected = read(&Path::new(FIXTURES_DIR).join("forker.stdout"));
    let apps = scratch("apps");
    let root = scratch("root");
    std::fs::write(apps.join("forker.elf"), read(&fixture("forker"))).unwrap_or_default();
    let forker = apps.join("forker.elf").display().to_string();
    // No `hello` anywhere the machine looks: exec fails (nothing is baked in).
    let o = sim(&["run", &forker]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("child: exec failed"));
    // `hello` without the .elf suffix, in --root.
    std::fs::write(root.join("hello"), read(&fixture("hello"))).unwrap_or_default();
    let o = sim(&["run", &forker, "--root", &root.display().to_string()]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(o.status.code(), Some(0));
    // `hello.elf` beside the first program.
    std::fs::write(apps.join("hello.elf"), read(&fixture("hello"))).unwrap_or_default();
    let o = sim(&["run", &forker]);
    assert_eq!(o.stdout, expected);
    let _ = std::fs::remove_dir_all(&apps);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn personality_env_and_root_options() {
    let hello = fixture("hello").display().to_string();
    // write 64 and exit 93 mean the same to both personalities.
    for personality in ["auto", "linux", "teaching"] {
        let o = sim(&[
            "run",
            &hello,
            "--personality",
            personality,
            "--env",
            "K=V",
            "--",
            "a",
            "b c",
        ]);
        assert_eq!(o.status.code(), Some(0), "{personality}: {}", stderr(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "hello, world\n");
    }
    let o = sim(&["run", &hello, "--personality", "dos"]);
    assert_eq!(o.status.code(), Some(2));
    let o = sim(&["run", &hello, "--env", "NOEQUALS"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("KEY=VALUE"), "{}", stderr(&o));
    let o = sim(&["run", &hello, "--root", "/nonexistent/dir"]);
    one_error_line(&o, 1, "not a directory");
    // trace takes the same options.
    let o = sim(&[
        "trace",
        &hello,
        "-q",
        "-p",
        "uprobe:main",
        "--env",
        "A=1",
        "--",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

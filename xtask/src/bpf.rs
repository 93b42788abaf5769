//! `cargo xtask bpf [--check]`: compiles the BPF C programs of `fixtures/bpf` (and the bad
//! ones of `fixtures/bpf/bad`) with `clang -target bpf -O2 -g` into the committed `.o`
//! objects and records the compiler in `fixtures/bpf/TOOLCHAIN`; `--check` compiles into a
//! temporary directory and fails if any committed object or the toolchain differs.
//!
//! Needs `clang` and the libbpf headers (Debian: `clang llvm libbpf-dev`). Sources are
//! compiled from their own directory by relative path, with the debug prefix mapped, so no
//! machine path ends up in an object.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Entry point of `cargo xtask bpf`.
pub fn run(args: &[String]) -> Result<(), String> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => return Err("usage: cargo xtask bpf [--check]".into()),
    };
    let dir = crate::repo_root().join("fixtures").join("bpf");
    let sources = sources(&dir)?;
    let toolchain = clang_version()?;
    let include = multiarch_include()?;
    if !check {
        for source in &sources {
            compile(&dir, source, &object_path(&dir, source), &include)?;
        }
        write(&dir.join("TOOLCHAIN"), toolchain.as_bytes())?;
        eprintln!("xtask bpf: compiled {} objects", sources.len());
        return Ok(());
    }
    let scratch = std::env::temp_dir().join(format!("ruprobes-bpf-check-{}", std::process::id()));
    let result = check_all(&dir, &scratch, &sources, &include, &toolchain);
    // Best effort: a leftover temporary directory is harmless.
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn check_all(
    dir: &Path,
    scratch: &Path,
    sources: &[PathBuf],
    include: &str,
    toolchain: &str,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for source in sources {
        let rel = source.strip_prefix(dir).unwrap_or(source);
        let fresh = scratch.join(rel).with_extension("o");
        if let Some(parent) = fresh.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        compile(dir, source, &fresh, include)?;
        let committed = object_path(dir, source);
        let (a, b) = (std::fs::read(&committed), std::fs::read(&fresh));
        match (a, b) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(_), Ok(_)) => problems.push(format!(
                "{} differs from a fresh build",
                committed.strip_prefix(dir).unwrap_or(&committed).display()
            )),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(format!("cannot read {}: {e}", committed.display()))
            }
        }
    }
    match std::fs::read_to_string(dir.join("TOOLCHAIN")) {
        Ok(committed) if committed == toolchain => {}
        Ok(committed) => problems.push(format!(
            "objects were committed with `{}` but this is `{}`",
            committed.trim(),
            toolchain.trim()
        )),
        Err(e) => problems.push(format!("cannot read fixtures/bpf/TOOLCHAIN: {e}")),
    }
    if problems.is_empty() {
        eprintln!(
            "xtask bpf: all {} committed objects match a fresh build",
            sources.len()
        );
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// `fixtures/bpf/*.bpf.c` and `fixtures/bpf/bad/*.bpf.c`, sorted.
fn sources(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for sub in [dir.to_path_buf(), dir.join("bad")] {
        let entries =
            std::fs::read_dir(&sub).map_err(|e| format!("cannot list {}: {e}", sub.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.to_string_lossy().ends_with(".bpf.c") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `NAME.bpf.c` -> `NAME.bpf.o` beside it.
fn object_path(_dir: &Path, source: &Path) -> PathBuf {
    source.with_extension("o")
}

fn compile(dir: &Path, source: &Path, output: &Path, include: &str) -> Result<(), String> {
    let rel = source.strip_prefix(dir).unwrap_or(source);
    let status = Command::new("clang")
        .current_dir(dir)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror", "-c"])
        .arg(format!("-I{include}"))
        .arg(format!("-fdebug-prefix-map={}=.", dir.display()))
        .arg(rel)
        .arg("-o")
        .arg(output)
        .status()
        .map_err(|e| format!("cannot run clang (apt-get install clang llvm libbpf-dev): {e}"))?;
    if !status.success() {
        return Err(format!("clang failed on {}", rel.display()));
    }
    Ok(())
}

/// The first line of `clang --version`.
fn clang_version() -> Result<String, String> {
    let out = Command::new("clang")
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run clang (apt-get install clang llvm libbpf-dev): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(format!("{}\n", text.lines().next().unwrap_or("").trim()))
}

/// `/usr/include/<multiarch>`, where `<linux/bpf.h>` finds `<asm/types.h>`.
fn multiarch_include() -> Result<String, String> {
    let out = Command::new("clang")
        .arg("-print-multiarch")
        .output()
        .map_err(|e| format!("cannot run clang: {e}"))?;
    let arch = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if arch.is_empty() {
        return Err("clang -print-multiarch printed nothing".into());
    }
    Ok(format!("/usr/include/{arch}"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

//! `cargo xtask stack-check`: proves the core's kernel-stack budget from its object code.
//!
//! Builds `ruprobes` for `riscv64gc-unknown-none-elf` in release and in debug (opt-level 1
//! and 0, or the one given), with and without `seed`, into `target/stack-check`, then reads the
//! object files of the rlibs it links (the core, its dependencies, and the target's `core`, `alloc` and
//! `compiler_builtins`). For every function it decodes the stack-pointer adjustments
//! (`addi sp,sp,-N`, `c.addi16sp`, `c.addi sp`, and `lui/addi(w)` + `sub`/`add sp,sp,rX` for
//! big frames) and, from the call relocations (`call`, `tail`, `jal`), its direct callees.
//!
//! It fails when a function of the core has a frame over [`FRAME_LIMIT`] bytes, or when the
//! deepest direct call chain of a public entry point needs more than [`PEAK_LIMIT`] bytes,
//! in every build (see [`DEBUG_OPT_LEVELS`]).
//! Indirect calls (through `dyn UserSpace` / `dyn UserRegs`, handler closures, the logger)
//! and the kernel's `extern "C"` hooks run the kernel's code on the same stack: they are the
//! kernel's budget and are not counted (the output says so and names the external symbols).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use goblin::archive::Archive;
use goblin::elf::section_header::SHT_RELA;
use goblin::elf::sym::{STB_LOCAL, STT_FUNC, STT_SECTION};
use goblin::elf::Elf;

use crate::repo_root;

const TARGET: &str = "riscv64gc-unknown-none-elf";
/// No function of the core may have a bigger frame.
pub const FRAME_LIMIT: u64 = 512;
/// No entry point may need more stack with its whole direct call tree.
pub const PEAK_LIMIT: u64 = 2048;

/// RISC-V relocation types that mark a direct call or jump to a symbol.
const R_RISCV_JAL: u32 = 17;
const R_RISCV_CALL: u32 = 18;
const R_RISCV_CALL_PLT: u32 = 19;
const R_RISCV_RVC_JUMP: u32 = 45;

/// The public entry points a kernel calls, by demangled path; `true`: seed feature only.
const ENTRY_POINTS: &[(&str, bool)] = &[
    ("ruprobes::engine::Uprobes::register", false),
    ("ruprobes::engine::Uprobes::unregister", false),
    ("ruprobes::engine::Uprobes::sync", false),
    ("ruprobes::engine::Uprobes::on_exec", false),
    ("ruprobes::engine::Uprobes::on_fork", false),
    ("ruprobes::engine::Uprobes::on_exit", false),
    ("ruprobes::engine::Uprobes::on_thread_exit", false),
    ("ruprobes::engine::Uprobes::handle_breakpoint", false),
    ("ruprobes::engine::Uprobes::fixup_fault", false),
    ("ruprobes::engine::Uprobes::status", false),
    ("ruprobes::engine::Uprobes::set_image_reader", false),
    ("ruprobes::engine::Uprobes::stats", false),
    ("ruprobes::engine::Uprobes::trampoline", false),
    ("ruprobes::engine::Uprobes::threads_tracked", false),
    ("ruprobes::seed::uprobe_register", true),
    ("ruprobes::seed::uprobe_unregister", true),
    ("ruprobes::seed::uprobe_status", true),
    ("ruprobes::seed::uprobes_init", true),
    ("ruprobes::seed::uprobes_trap_handler", true),
    ("ruprobes::seed::uprobes_trap_handler_regs", true),
    ("ruprobes::seed::uprobes_fixup_fault", true),
    ("ruprobes::seed::uprobes_fixup_fault_regs", true),
    ("ruprobes::seed::uprobes_fork", true),
    ("ruprobes::seed::uprobes_exit", true),
    ("ruprobes::seed::uprobes_set_image_reader", true),
    ("ruprobes::seed::uprobes_thread_exit", true),
    ("ruprobes::seed::uprobes_sync", true),
    ("ruprobes::seed::uprobes_threads_tracked", true),
];

/// One build of the core that is checked.
struct Config {
    /// `None`: release; `Some(n)`: the dev profile at opt-level `n`.
    debug_opt_level: Option<u8>,
    seed: bool,
}

impl Config {
    fn label(&self) -> String {
        format!(
            "{}, {}",
            match self.debug_opt_level {
                None => String::from("release"),
                Some(n) => format!("debug (opt-level {n})"),
            },
            if self.seed {
                "--features seed"
            } else {
                "no features"
            }
        )
    }
}

/// The debug builds checked by default: opt-level 1, this workspace's dev profile (debug
/// assertions and overflow checks on), and opt-level 0, what a kernel's own dev profile
/// compiles the core at unless told otherwise (docs/PORTING.md §9 has the figures).
const DEBUG_OPT_LEVELS: [u8; 2] = [1, 0];

const USAGE: &str = "stack-check takes [--report] [--debug-opt-level N] [--top N]";

/// Runs the check. `--report`: print everything but do not fail (to measure code that is
/// known to be over budget); `--debug-opt-level N`: check only the debug build at
/// opt-level N (with and without `seed`), to measure one case quickly; `--top N`: list the
/// N largest frames of each build (default 5).
pub fn run(args: &[String]) -> Result<(), String> {
    let mut report_only = false;
    let mut only_level = None;
    let mut top = 5;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--report" => report_only = true,
            "--debug-opt-level" => {
                only_level = Some(
                    args.next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n <= 3)
                        .ok_or(format!("--debug-opt-level needs 0..=3 ({USAGE})"))?,
                );
            }
            "--top" => {
                top = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or(format!("--top needs a number ({USAGE})"))?;
            }
            other => return Err(format!("unexpected argument `{other}` ({USAGE})")),
        }
    }
    let profiles: Vec<Option<u8>> = match only_level {
        Some(n) => vec![Some(n)],
        None => DEBUG_OPT_LEVELS
            .iter()
            .map(|&n| Some(n))
            .chain([None])
            .collect(),
    };
    let root = repo_root();
    let target_dir = root.join("target").join("stack-check");
    let sysroot_libs = sysroot_libs()?;
    let mut failures = Vec::new();
    for debug_opt_level in profiles {
        for seed in [false, true] {
            let config = Config {
                debug_opt_level,
                seed,
            };
            let rlibs = build(&root, &target_dir, &config)?;
            let mut inputs = rlibs;
            inputs.extend(sysroot_libs.iter().cloned());
            let program = Program::load(&inputs)?;
            failures.extend(report(&program, &config, top));
        }
    }
    println!(
        "stack-check: not counted: indirect calls (dyn UserSpace, dyn UserRegs, handler closures, \
         the logger) and the kernel's hooks run kernel code; add the kernel's own peak for them"
    );
    if report_only {
        for failure in &failures {
            println!("stack-check: over budget: {failure}");
        }
    }
    if failures.is_empty() || report_only {
        println!(
            "stack-check: every frame of the core <= {FRAME_LIMIT} bytes and every entry point <= {PEAK_LIMIT} bytes{}",
            if failures.is_empty() { "" } else { ": NO (report only)" }
        );
        Ok(())
    } else {
        Err(format!("over budget:\n  {}", failures.join("\n  ")))
    }
}

/// The target's precompiled `core`, `alloc` and `compiler_builtins`.
fn sysroot_libs() -> Result<Vec<(PathBuf, bool)>, String> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dir = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib");
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        format!(
            "cannot read {}: {e}; install the target: rustup target add {TARGET}",
            dir.display()
        )
    })?;
    let mut libs: Vec<(PathBuf, bool)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rlib"))
        .map(|p| (p, false))
        .collect();
    libs.sort();
    Ok(libs)
}

/// Builds the core for `config`; the rlibs of the build, `true` for the core's own.
fn build(root: &Path, target_dir: &Path, config: &Config) -> Result<Vec<(PathBuf, bool)>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "-p",
            "ruprobes",
            "--target",
            TARGET,
            "--message-format=json",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    match config.debug_opt_level {
        Some(n) => cmd.env("CARGO_PROFILE_DEV_OPT_LEVEL", n.to_string()),
        None => cmd.arg("--release"),
    };
    if config.seed {
        cmd.args(["--features", "seed"]);
    }
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_RISCV64GC_UNKNOWN_NONE_ELF_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build of ruprobes ({}) failed",
            config.label()
        ));
    }
    let mut rlibs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_core = msg["target"]["name"] == "ruprobes";
        for file in msg["filenames"].as_array().into_iter().flatten() {
            if let Some(path) = file.as_str().filter(|p| p.ends_with(".rlib")) {
                rlibs.push((PathBuf::from(path), is_core));
            }
        }
    }
    if !rlibs.iter().any(|(_, core)| *core) {
        return Err("cargo did not report the ruprobes rlib".into());
    }
    Ok(rlibs)
}

/// Prints the report of one build; returns its budget violations.
fn report(program: &Program, config: &Config, top: usize) -> Vec<String> {
    let label = config.label();
    let mut failures = Vec::new();
    println!("\nstack-check: {label}");
    let mut core: Vec<&Func> = program.funcs.iter().filter(|f| f.is_core).collect();
    core.sort_by(|a, b| b.frame.cmp(&a.frame).then(a.name.cmp(&b.name)));
    println!("  {} functions in the core; largest frames:", core.len());
    for f in core.iter().take(top) {
        println!("  {:>7}  {}", f.frame, short(&f.name));
    }
    for f in &core {
        if f.frame > FRAME_LIMIT {
            failures.push(format!(
                "{label}: frame of {} is {} bytes (limit {FRAME_LIMIT})",
                f.name, f.frame
            ));
        }
        if f.dynamic {
            failures.push(format!(
                "{label}: {} adjusts sp by an amount not known statically",
                f.name
            ));
        }
    }
    println!("  peak stack of each entry point with its direct call tree (deepest path):");
    let mut peaks = Peaks::new(program);
    let mut external = BTreeSet::new();
    for (name, seed_only) in ENTRY_POINTS {
        if *seed_only && !config.seed {
            continue;
        }
        let Some(root) = program.by_name(name) else {
            failures.push(format!(
                "{label}: entry point {name} not found in the object code"
            ));
            continue;
        };
        let peak = peaks.peak(root);
        let path = peaks.path(root);
        let path: Vec<String> = path
            .iter()
            .map(|&i| {
                format!(
                    "{} ({})",
                    short(&program.funcs[i].name),
                    program.funcs[i].frame
                )
            })
            .collect();
        println!("  {peak:>7}  {name}\n           {}", path.join(" -> "));
        if peak > PEAK_LIMIT {
            failures.push(format!(
                "{label}: {name} peaks at {peak} bytes (limit {PEAK_LIMIT})"
            ));
        }
        external.extend(peaks.external_below(root));
    }
    for cycle in &peaks.recursion {
        failures.push(format!("{label}: recursion, stack not bounded: {cycle}"));
    }
    if !external.is_empty() {
        let names: Vec<&str> = external.iter().map(String::as_str).collect();
        println!(
            "  called but defined outside these objects (not counted): {}",
            names.join(", ")
        );
    }
    failures
}

/// A demangled name without generic arguments, cut to its last two path segments: enough
/// to follow a call chain.
fn short(name: &str) -> String {
    let mut plain = String::new();
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let segments: Vec<&str> = plain.split("::").filter(|s| !s.is_empty()).collect();
    segments[segments.len().saturating_sub(2)..].join("::")
}

/// A direct call from one function to another.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Callee {
    /// Resolved to a function of the program (index).
    Func(usize),
    /// A symbol no loaded object defines.
    External(String),
}

/// One function: its frame and its direct calls (`true`: a tail call, made after the frame
/// is popped).
#[derive(Debug)]
pub struct Func {
    name: String,
    is_core: bool,
    frame: u64,
    dynamic: bool,
    calls: Vec<(Callee, bool)>,
}

/// Every function of the loaded objects.
struct Program {
    funcs: Vec<Func>,
}

/// A symbol reference inside one object, before resolution.
enum Target {
    Local(usize),
    Global(String),
}

impl Program {
    /// Loads the functions of every object file in `rlibs` (`true`: the core's).
    fn load(rlibs: &[(PathBuf, bool)]) -> Result<Program, String> {
        let mut funcs = Vec::new();
        let mut pending: Vec<Vec<(Target, bool)>> = Vec::new();
        let mut globals: HashMap<String, usize> = HashMap::new();
        for (path, is_core) in rlibs {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let archive = Archive::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            for member in archive.members() {
                if !member.ends_with(".o") {
                    continue;
                }
                let data = archive
                    .extract(member, &bytes)
                    .map_err(|e| format!("{}({member}): {e}", path.display()))?;
                let elf =
                    Elf::parse(data).map_err(|e| format!("{}({member}): {e}", path.display()))?;
                load_object(&elf, data, *is_core, &mut funcs, &mut pending, &mut globals);
            }
        }
        for (func, calls) in funcs.iter_mut().zip(pending) {
            func.calls = calls
                .into_iter()
                .map(|(target, tail)| match target {
                    Target::Local(i) => (Callee::Func(i), tail),
                    Target::Global(name) => match globals.get(&name) {
                        Some(&i) => (Callee::Func(i), tail),
                        None => (Callee::External(name), tail),
                    },
                })
                .collect();
        }
        Ok(Program { funcs })
    }

    fn by_name(&self, name: &str) -> Option<usize> {
        self.funcs.iter().position(|f| f.is_core && f.name == name)
    }
}

/// Adds the functions of one object file.
fn load_object(
    elf: &Elf,
    data: &[u8],
    is_core: bool,
    funcs: &mut Vec<Func>,
    pending: &mut Vec<Vec<(Target, bool)>>,
    globals: &mut HashMap<String, usize>,
) {
    // (section, offset) -> index of the function starting there; symbol index -> function.
    let mut at: BTreeMap<(usize, u64), usize> = BTreeMap::new();
    let mut of_sym: HashMap<usize, usize> = HashMap::new();
    let mut ranges: Vec<(usize, u64, u64, usize)> = Vec::new();
    for (si, sym) in elf.syms.iter().enumerate() {
        if sym.st_type() != STT_FUNC || sym.st_shndx == 0 || sym.st_size == 0 {
            continue;
        }
        let Some(sh) = elf.section_headers.get(sym.st_shndx) else {
            continue;
        };
        let start = sh.sh_offset + sym.st_value;
        let Some(code) = data.get(start as usize..(start + sym.st_size) as usize) else {
            continue;
        };
        let raw = elf.strtab.get_at(sym.st_name).unwrap_or("?");
        let frame = frame_size(code);
        let index = funcs.len();
        funcs.push(Func {
            name: format!("{:#}", rustc_demangle::demangle(raw)),
            is_core,
            frame: frame.size,
            dynamic: frame.dynamic,
            calls: Vec::new(),
        });
        pending.push(Vec::new());
        at.insert((sym.st_shndx, sym.st_value), index);
        of_sym.insert(si, index);
        ranges.push((
            sym.st_shndx,
            sym.st_value,
            sym.st_value + sym.st_size,
            index,
        ));
        if sym.st_bind() != STB_LOCAL {
            globals.entry(raw.to_string()).or_insert(index);
        }
    }
    for (reloc_shndx, relocs) in &elf.shdr_relocs {
        let Some(rsh) = elf.section_headers.get(*reloc_shndx) else {
            continue;
        };
        if rsh.sh_type != SHT_RELA {
            continue;
        }
        let text = rsh.sh_info as usize;
        let Some(tsh) = elf.section_headers.get(text) else {
            continue;
        };
        for r in relocs.iter() {
            if !matches!(
                r.r_type,
                R_RISCV_JAL | R_RISCV_CALL | R_RISCV_CALL_PLT | R_RISCV_RVC_JUMP
            ) {
                continue;
            }
            let Some(&(.., caller)) = ranges
                .iter()
                .find(|(s, lo, hi, _)| *s == text && (*lo..*hi).contains(&r.r_offset))
            else {
                continue;
            };
            let insn_at = (tsh.sh_offset + r.r_offset) as usize;
            let Some(tail) = is_tail_call(r.r_type, data.get(insn_at..insn_at + 4).unwrap_or(&[]))
            else {
                continue;
            };
            let Some(sym) = elf.syms.get(r.r_sym) else {
                continue;
            };
            let target = if sym.st_type() == STT_SECTION {
                let offset = r.r_addend.unwrap_or(0).max(0) as u64;
                match at.get(&(sym.st_shndx, offset)) {
                    Some(&i) => Target::Local(i),
                    None => continue,
                }
            } else if let Some(&i) = of_sym.get(&r.r_sym) {
                Target::Local(i)
            } else {
                Target::Global(elf.strtab.get_at(sym.st_name).unwrap_or("?").to_string())
            };
            pending[caller].push((target, tail));
        }
    }
}

/// Whether the call relocation of `r_type` on the instruction starting with `code` is a
/// tail call (`Some(true)`), a call that returns (`Some(false)`), or not a call.
fn is_tail_call(r_type: u32, code: &[u8]) -> Option<bool> {
    match r_type {
        // `auipc ra, ..` (call) or `auipc t1, ..` (tail), then `jalr`.
        R_RISCV_CALL | R_RISCV_CALL_PLT => {
            let w = u32::from_le_bytes(code.get(..4)?.try_into().ok()?);
            Some((w >> 7) & 31 != 1)
        }
        R_RISCV_JAL => {
            let w = u32::from_le_bytes(code.get(..4)?.try_into().ok()?);
            Some((w >> 7) & 31 != 1)
        }
        // `c.j` on rv64.
        R_RISCV_RVC_JUMP => Some(true),
        _ => None,
    }
}

/// What the stack-pointer arithmetic of one function adds up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The deepest the function moves `sp` below its entry value.
    size: u64,
    /// `sp` moved by a register whose value is not a constant of the function.
    dynamic: bool,
}

/// Walks a function's instructions in order, tracks constants in registers (`lui`, `li`,
/// `addi(w)`), and follows every `sp` adjustment. The running depth never goes below zero,
/// so several epilogues (or several shrink-wrapped prologues) count once, not twice.
pub fn frame_size(code: &[u8]) -> Frame {
    let mut regs: [Option<i64>; 32] = [None; 32];
    regs[0] = Some(0);
    let (mut depth, mut max, mut dynamic) = (0i64, 0i64, false);
    let mut adjust = |delta: Option<i64>, depth: &mut i64, max: &mut i64| match delta {
        Some(d) => {
            *depth = (*depth - d).max(0);
            *max = (*max).max(*depth);
        }
        None => dynamic = true,
    };
    let mut pc = 0;
    while pc + 2 <= code.len() {
        let half = u16::from_le_bytes([code[pc], code[pc + 1]]);
        if half & 3 == 3 {
            let Some(bytes) = code.get(pc..pc + 4) else {
                break;
            };
            let w = u32::from_le_bytes(bytes.try_into().unwrap_or([0; 4]));
            pc += 4;
            let (opcode, rd, f3) = (w & 0x7f, ((w >> 7) & 31) as usize, (w >> 12) & 7);
            let (rs1, rs2, f7) = (
                ((w >> 15) & 31) as usize,
                ((w >> 20) & 31) as usize,
                w >> 25,
            );
            let imm = (w as i32 >> 20) as i64;
            let value = match (opcode, f3) {
                (0x37, _) => Some((w & 0xffff_f000) as i32 as i64), // lui
                (0x13, 0) if rd == 2 && rs1 == 2 => {
                    adjust(Some(imm), &mut depth, &mut max); // addi sp, sp, imm
                    continue;
                }
                (0x13, 0) => regs[rs1].map(|v| v.wrapping_add(imm)), // addi / li
                (0x1b, 0) => regs[rs1].map(|v| v.wrapping_add(imm) as i32 as i64), // addiw
                (0x33, 0) if rd == 2 && rs1 == 2 && (f7 == 0 || f7 == 0x20) => {
                    let sign = if f7 == 0 { 1 } else { -1 }; // add / sub sp, sp, rs2
                    adjust(regs[rs2].map(|v| sign * v), &mut depth, &mut max);
                    continue;
                }
                (0x23 | 0x27 | 0x63 | 0x0f, _) => continue, // stores, branches, fences
                _ => None,
            };
            if rd != 0 {
                regs[rd] = value;
            }
        } else {
            pc += 2;
            let (quadrant, f3) = (half & 3, half >> 13);
            let rd = ((half >> 7) & 31) as usize;
            let imm6 = ((((half >> 12) & 1) << 5 | (half >> 2) & 31) as i64) << 58 >> 58;
            match (quadrant, f3) {
                (1, 0) if rd == 2 => adjust(Some(imm6), &mut depth, &mut max), // c.addi sp
                (1, 0) if rd != 0 => regs[rd] = regs[rd].map(|v| v.wrapping_add(imm6)),
                (1, 1) if rd != 0 => {
                    regs[rd] = regs[rd].map(|v| v.wrapping_add(imm6) as i32 as i64)
                }
                (1, 2) if rd != 0 => regs[rd] = Some(imm6), // c.li
                (1, 3) if rd == 2 => {
                    // c.addi16sp: nzimm[9|4|6|8:7|5] in bits 12|6|5|4:3|2.
                    let h = half as i64;
                    let imm = ((h >> 12) & 1) << 9
                        | ((h >> 6) & 1) << 4
                        | ((h >> 5) & 1) << 6
                        | ((h >> 3) & 3) << 7
                        | ((h >> 2) & 1) << 5;
                    adjust(Some(imm << 54 >> 54), &mut depth, &mut max);
                }
                (1, 3) if rd != 0 => regs[rd] = Some(imm6 << 12), // c.lui
                (1, 4) => regs[8 + ((half >> 7) & 7) as usize] = None, // c.srli/andi/sub/...
                (2, 4) => {
                    let rs2 = ((half >> 2) & 31) as usize;
                    let add = (half >> 12) & 1 == 1;
                    match (add, rs2) {
                        (_, 0) => {} // c.jr / c.jalr / c.ebreak
                        (true, _) if rd == 2 => adjust(regs[rs2], &mut depth, &mut max), // c.add sp
                        (true, _) => {
                            regs[rd] = regs[rd].zip(regs[rs2]).map(|(a, b)| a.wrapping_add(b))
                        }
                        (false, _) if rd == 2 => {} // c.mv sp, rX: restores a saved sp
                        (false, _) => regs[rd] = regs[rs2],
                    }
                }
                (2, 0 | 2 | 3) if rd != 0 => regs[rd] = None, // c.slli, c.lwsp, c.ldsp
                (0, 0 | 2 | 3) => regs[8 + ((half >> 2) & 7) as usize] = None, // c.addi4spn, c.lw, c.ld
                _ => {}
            }
        }
    }
    Frame {
        size: max as u64,
        dynamic,
    }
}

/// Peak stack of call trees, memoised; records recursion it meets.
struct Peaks<'a> {
    program: &'a Program,
    memo: HashMap<usize, (u64, Option<usize>)>,
    active: BTreeSet<usize>,
    recursion: BTreeSet<String>,
}

impl<'a> Peaks<'a> {
    fn new(program: &'a Program) -> Self {
        Peaks {
            program,
            memo: HashMap::new(),
            active: BTreeSet::new(),
            recursion: BTreeSet::new(),
        }
    }

    /// The most stack `f` and its direct callees use at once: its frame plus the deepest
    /// callee, or a tail callee alone (the frame is gone by then).
    fn peak(&mut self, f: usize) -> u64 {
        if let Some(&(peak, _)) = self.memo.get(&f) {
            return peak;
        }
        if !self.active.insert(f) {
            self.recursion.insert(self.program.funcs[f].name.clone());
            return 0;
        }
        let frame = self.program.funcs[f].frame;
        let (mut peak, mut via) = (frame, None);
        let calls: Vec<(usize, bool)> = self.program.funcs[f]
            .calls
            .iter()
            .filter_map(|(c, tail)| match c {
                Callee::Func(i) => Some((*i, *tail)),
                Callee::External(_) => None,
            })
            .collect();
        for (callee, tail) in calls {
            let below = self.peak(callee) + if tail { 0 } else { frame };
            if below > peak {
                (peak, via) = (below, Some(callee));
            }
        }
        self.active.remove(&f);
        self.memo.insert(f, (peak, via));
        peak
    }

    /// The deepest chain from `f`, as computed by [`peak`](Self::peak).
    fn path(&self, f: usize) -> Vec<usize> {
        let mut path = vec![f];
        let mut at = f;
        while let Some(&(_, Some(next))) = self.memo.get(&at) {
            if path.contains(&next) {
                break;
            }
            path.push(next);
            at = next;
        }
        path
    }

    /// External symbols called anywhere in `f`'s tree.
    fn external_below(&self, f: usize) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut out = BTreeSet::new();
        let mut todo = vec![f];
        while let Some(at) = todo.pop() {
            if !seen.insert(at) {
                continue;
            }
            for (callee, _) in &self.program.funcs[at].calls {
                match callee {
                    Callee::Func(i) => todo.push(*i),
                    Callee::External(name) => {
                        out.insert(format!("{:#}", rustc_demangle::demangle(name)));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn halves(parcels: &[u16]) -> Vec<u8> {
        parcels.iter().flat_map(|h| h.to_le_bytes()).collect()
    }

    /// `addi rd, rs1, imm`.
    fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
        ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (rd << 7) | 0x13
    }

    const RET: u32 = 0x0000_8067;
    const T0: u32 = 5;

    #[test]
    fn addi_prologue_and_epilogue() {
        let f = frame_size(&code(&[addi(2, 2, -48), 0x0211_3423, addi(2, 2, 48), RET]));
        assert_eq!(
            f,
            Frame {
                size: 48,
                dynamic: false
            }
        );
    }

    #[test]
    fn compressed_addi16sp_and_addi() {
        // c.addi16sp sp, -64 (0x7139); c.addi16sp sp, 64 (0x6121); c.jr ra.
        assert_eq!(frame_size(&halves(&[0x7139, 0x6121, 0x8082])).size, 64);
        // c.addi16sp sp, -512 (0x7101).
        assert_eq!(frame_size(&halves(&[0x7101, 0x8082])).size, 512);
        // c.addi sp, -16 (0x1141) and c.addi sp, 16 (0x0141).
        assert_eq!(frame_size(&halves(&[0x1141, 0x0141, 0x8082])).size, 16);
    }

    #[test]
    fn several_epilogues_count_once() {
        let words = [addi(2, 2, -96), addi(2, 2, 96), RET, addi(2, 2, 96), RET];
        assert_eq!(frame_size(&code(&words)).size, 96);
    }

    /// The pre-fix `Xol::add_page` prologue: `addi sp, sp, -2032`, then
    /// `lui t0, 2; addiw t0, t0, -1840; sub sp, sp, t0` for a frame of 8384 bytes: the check
    /// must see all of it and flag it.
    #[test]
    fn big_frame_form_is_summed_and_flagged() {
        let lui_t0_2 = (2 << 12) | (T0 << 7) | 0x37;
        let addiw = ((-1840i32 as u32 & 0xfff) << 20) | (T0 << 15) | (T0 << 7) | 0x1b;
        let sub_sp_t0 = (0x20 << 25) | (T0 << 20) | (2 << 15) | (2 << 7) | 0x33;
        let f = frame_size(&code(&[addi(2, 2, -2032), lui_t0_2, addiw, sub_sp_t0, RET]));
        assert_eq!(f.size, 2032 + 8192 - 1840);
        assert!(f.size > FRAME_LIMIT);
        // The same adjustment as `add sp, sp, t0` with a negative constant.
        let lui_t0_m2 = (0xffffe << 12) | (T0 << 7) | 0x37;
        let add_sp_t0 = (T0 << 20) | (2 << 15) | (2 << 7) | 0x33;
        assert_eq!(frame_size(&code(&[lui_t0_m2, add_sp_t0, RET])).size, 8192);
    }

    #[test]
    fn unknown_adjustment_is_dynamic() {
        let sub_sp_a0 = (0x20 << 25) | (10 << 20) | (2 << 15) | (2 << 7) | 0x33;
        assert!(frame_size(&code(&[sub_sp_a0, RET])).dynamic);
    }

    #[test]
    fn call_and_tail_relocations() {
        // auipc ra, 0 / auipc t1, 0; jal ra / jal zero.
        assert_eq!(
            is_tail_call(R_RISCV_CALL_PLT, &0x0000_0097u32.to_le_bytes()),
            Some(false)
        );
        assert_eq!(
            is_tail_call(R_RISCV_CALL_PLT, &0x0000_0317u32.to_le_bytes()),
            Some(true)
        );
        assert_eq!(
            is_tail_call(R_RISCV_JAL, &0x0000_00efu32.to_le_bytes()),
            Some(false)
        );
        assert_eq!(
            is_tail_call(R_RISCV_JAL, &0x0000_006fu32.to_le_bytes()),
            Some(true)
        );
        assert_eq!(is_tail_call(R_RISCV_RVC_JUMP, &[1, 0xa0]), Some(true));
        assert_eq!(is_tail_call(16, &[0; 4]), None);
    }

    fn func(name: &str, frame: u64, calls: &[(usize, bool)]) -> Func {
        Func {
            name: name.into(),
            is_core: true,
            frame,
            dynamic: false,
            calls: calls.iter().map(|&(i, t)| (Callee::Func(i), t)).collect(),
        }
    }

    #[test]
    fn peak_follows_the_deepest_chain_and_tail_calls_reuse_the_frame() {
        let program = Program {
            funcs: vec![
                func("entry", 100, &[(1, false), (2, false), (3, true)]),
                func("shallow", 50, &[]),
                func("deep", 200, &[(1, false)]),
                func("tail", 320, &[]),
            ],
        };
        let mut peaks = Peaks::new(&program);
        // entry + deep + shallow = 350 beats the tail call alone (320).
        assert_eq!(peaks.peak(0), 350);
        assert_eq!(peaks.path(0), [0, 2, 1]);
        assert!(peaks.recursion.is_empty());
    }

    #[test]
    fn recursion_is_reported() {
        let program = Program {
            funcs: vec![func("a", 16, &[(1, false)]), func("b", 16, &[(0, false)])],
        };
        let mut peaks = Peaks::new(&program);
        peaks.peak(0);
        assert_eq!(peaks.recursion.len(), 1);
    }

    #[test]
    fn short_names_keep_two_segments() {
        assert_eq!(
            short("ruprobes::engine::Uprobes::register"),
            "Uprobes::register"
        );
        assert_eq!(
            short("alloc::btree::<impl Handle<K, V>>::split"),
            "btree::split"
        );
        assert_eq!(short("BTreeMap<K,V,A>::remove"), "BTreeMap::remove");
    }
}

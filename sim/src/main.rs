//! `ruprobes-sim`: run RISC-V programs in the simulator, with bpftrace-like probes.
//!
//! ```text
//! ruprobes-sim trace PROG [-p SPEC ...] [--bpf OBJ.o ...] [--quiet] [--json] [--max-insns N] [OPTIONS] [-- ARGS...]
//! ruprobes-sim run PROG [--max-insns N] [OPTIONS] [-- ARGS...]
//!   OPTIONS: --env K=V (repeatable), --root DIR, --personality auto|linux|teaching
//! ruprobes-sim scenarios [NAME ...]
//! ruprobes-sim                      # traces the bundled fib demo
//! ```
//!
//! Output of `trace`: the program's output as it is written, then a report on stdout after
//! a `--- trace` header line: the trace (unless `--quiet`), a per-probe table and, for each
//! return probe, a log2 histogram of function latency in instructions (entry to return;
//! instructions the engine emulates on a hit do not count). The table's counters are those
//! of the probed address (all probes there together): HITS counts traps at the address,
//! RETURNS and MISSED (shown for return probes) count returns seen and returns missed
//! beyond the engine's depth limit.
//! `--bpf OBJ.o` attaches the programs of a clang-built BPF object (see `sim/src/bpf.rs`):
//! their `bpf_trace_printk` lines are trace events, and a `--- bpf OBJ.o` section after the
//! table prints its maps and each program's runs and errors.
//! `--json` prints one JSON document instead. `run` and `trace` exit with the program's exit
//! code, or 128 + N if it was killed by signal N, like `qemu-riscv64`.
//!
//! The program gets `ARGS` as `argv[1..]` (`argv[0]` is PROG as given) and the `--env`
//! variables as its whole environment; `--root DIR` is the guest's read-only `/` (files,
//! and where `exec` also finds apps by name). The personality (the system-call interface)
//! is chosen from the ELF unless given (see `ruprobes_sim::kernel::image`). `run` reads the
//! guest's stdin from its own; when the program is killed, `run` says by what, where, on
//! stderr.
//!
//! Errors are one line on stderr starting with `error:`; the exit code is 2 for a bad
//! command line (including a malformed probe spec) and 1 for anything else.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ruprobes_sim::bpf::BpfObject;
use ruprobes_sim::kernel::Personality;
use ruprobes_sim::machine::{Config, Histogram, Machine, ProbeReport, ProbeRole, RunResult};
use ruprobes_sim::{scenario, SimError};

const EXAMPLES: &str = "\
Without a command, traces the bundled demo (fib with entry and return probes).

Examples:
  ruprobes-sim trace fixtures/bin/fib.elf -p uprobe:fib -p uretprobe:fib
  ruprobes-sim trace fixtures/bin/fib.elf -p uprobe:main+8 --quiet
  ruprobes-sim trace fixtures/bin/insn_zoo.elf -p 'uprobe:zoo_*' --json
  ruprobes-sim trace fixtures/bin/greet.elf --bpf fixtures/bpf/greet.bpf.o
  ruprobes-sim run fixtures/bin/hello.elf
  ruprobes-sim trace ./prog -p uprobe:main -p 'uretprobe:qsort' --env LANG=C -- in.txt

run and trace exit with the program's exit code (128 + N if killed by signal N).";

/// The demo traced when no arguments are given.
const DEMO_ELF: &[u8] = include_bytes!("../../fixtures/bin/fib.elf");
const DEMO_PROBES: [&str; 2] = ["uprobe:fib", "uretprobe:fib"];

/// Run RISC-V (RV64GC) programs in a simulator with ruprobes uprobes.
#[derive(Parser, Debug)]
#[command(name = "ruprobes-sim", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a program with probes and print its output, the trace and probe statistics.
    Trace {
        /// The RISC-V ELF executable; its file stem is its path for probes (e.g. `fib`).
        prog: PathBuf,
        /// A probe: uprobe:SYM, uprobe:SYM+OFF, uprobe:0xADDR, uretprobe:SYM, uretprobe:0xADDR
        /// (SYM may end in `*`: every symbol with that prefix).
        #[arg(short = 'p', long = "probe", value_name = "SPEC")]
        probes: Vec<String>,
        /// A BPF object whose programs run as probe handlers (SEC("uprobe/SYM"), ...).
        #[arg(long = "bpf", value_name = "OBJ.o")]
        bpf: Vec<PathBuf>,
        /// Do not print the trace lines (only the table and histograms).
        #[arg(short, long)]
        quiet: bool,
        /// Print one JSON document (output, trace, statistics, histograms).
        #[arg(long)]
        json: bool,
        /// Instruction budget of the whole run.
        #[arg(long, value_name = "N")]
        max_insns: Option<u64>,
        #[command(flatten)]
        guest: Guest,
    },
    /// Run a program without probes.
    Run {
        /// The RISC-V ELF executable.
        prog: PathBuf,
        /// Instruction budget of the whole run.
        #[arg(long, value_name = "N")]
        max_insns: Option<u64>,
        #[command(flatten)]
        guest: Guest,
    },
    /// Print the canonical scenarios' traces in the QEMU test kernel's block format.
    Scenarios {
        /// Scenario names (all when none).
        names: Vec<String>,
    },
}

/// What the program sees: its arguments, environment, files and system-call interface.
#[derive(Args, Debug, Clone, Default)]
struct Guest {
    /// An environment variable of the program (repeatable); the environment is empty
    /// otherwise.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<String>,
    /// A host directory the program sees, read-only, as `/`.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The system-call interface: chosen from the ELF (auto), Linux, or the teaching
    /// kernel's (rCore-Tutorial numbers).
    #[arg(long, value_enum, default_value_t = PersonalityArg::Auto)]
    personality: PersonalityArg,
    /// Arguments of the program (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
enum PersonalityArg {
    #[default]
    Auto,
    Linux,
    Teaching,
}

fn parse_env(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(s.to_string()),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

/// A failure with its exit code.
struct Failure {
    message: String,
    code: u8,
}

impl From<SimError> for Failure {
    fn from(e: SimError) -> Self {
        let code = if matches!(e, SimError::BadSpec { .. }) {
            2
        } else {
            1
        };
        Failure {
            message: e.to_string(),
            code,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("error: bad command line");
            eprintln!("{}", first.trim_end());
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        None => trace_demo(),
        Some(Command::Trace {
            prog,
            probes,
            bpf,
            quiet,
            json,
            max_insns,
            guest,
        }) => read_program(&prog, guest)
            .and_then(|p| trace(&p, &probes, &bpf, quiet, json, max_insns)),
        Some(Command::Run {
            prog,
            max_insns,
            guest,
        }) => read_program(&prog, guest).and_then(|p| run(&p, max_insns)),
        Some(Command::Scenarios { names }) => scenarios(&names),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// A program to run.
struct Program {
    /// Its exec path and probe key: the file stem.
    name: String,
    /// The ELF bytes.
    elf: Vec<u8>,
    /// Its directory, where `exec` looks for sibling programs first.
    dir: Option<PathBuf>,
    /// The path the user gave, for error messages and `argv[0]`.
    shown: String,
    /// Arguments, environment, root and personality.
    guest: Guest,
}

impl Program {
    /// A machine with this program loaded.
    fn machine(&self, config: Config) -> Result<Machine, Failure> {
        let personality = match self.guest.personality {
            PersonalityArg::Auto => Personality::Auto,
            PersonalityArg::Linux => Personality::Linux,
            PersonalityArg::Teaching => Personality::Teaching,
        };
        let mut machine = Machine::new(Config {
            personality,
            ..config
        });
        if let Some(dir) = &self.dir {
            machine.set_image_dir(dir);
        }
        if let Some(root) = &self.guest.root {
            if !root.is_dir() {
                return Err(SimError::Io {
                    path: root.display().to_string(),
                    message: "not a directory (--root)".into(),
                }
                .into());
            }
            machine.set_root(root);
        }
        let argv = std::iter::once(self.shown.clone())
            .chain(self.guest.args.iter().cloned())
            .collect();
        machine.set_args(argv, self.guest.env.clone());
        machine.set_stdin(std::io::stdin());
        machine.load(&self.name, &self.elf).map_err(|e| match e {
            // Name the file the user gave, not its probe key.
            SimError::BadElf { why, .. } => SimError::BadElf {
                name: self.shown.clone(),
                why,
            },
            other => other,
        })?;
        Ok(machine)
    }
}

/// Reads the program at `path`.
fn read_program(path: &Path, guest: Guest) -> Result<Program, Failure> {
    let elf = std::fs::read(path).map_err(|e| SimError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "prog".into());
    let dir = path.parent().map(Path::to_path_buf);
    let shown = path.display().to_string();
    Ok(Program {
        name,
        elf,
        dir,
        shown,
        guest,
    })
}

fn config(max_insns: Option<u64>, echo: bool) -> Config {
    let default = Config::default();
    Config {
        max_insns: max_insns.unwrap_or(default.max_insns),
        echo_stdout: echo,
        ..default
    }
}

fn trace_demo() -> Result<u8, Failure> {
    println!(
        "ruprobes-sim demo: trace fixtures/bin/fib.elf -p uprobe:fib -p uretprobe:fib (see --help)"
    );
    let probes: Vec<String> = DEMO_PROBES.iter().map(|s| s.to_string()).collect();
    let demo = Program {
        name: "fib".into(),
        elf: DEMO_ELF.to_vec(),
        dir: None,
        shown: "fixtures/bin/fib.elf".into(),
        guest: Guest::default(),
    };
    trace(&demo, &probes, &[], false, false, None)
}

fn run(program: &Program, max_insns: Option<u64>) -> Result<u8, Failure> {
    let mut machine = program.machine(config(max_insns, true))?;
    let result = machine.run()?;
    if let Some(note) = machine.kill_note() {
        let _ = std::io::stdout().flush();
        eprintln!("ruprobes-sim: {}: {note}", program.shown);
    }
    Ok(result.status.shell_code() as u8)
}

fn trace(
    program: &Program,
    specs: &[String],
    bpf: &[PathBuf],
    quiet: bool,
    json: bool,
    max_insns: Option<u64>,
) -> Result<u8, Failure> {
    let mut machine = program.machine(config(max_insns, !json))?;
    for spec in specs {
        machine.add_probes(spec)?;
    }
    let mut objects = Vec::new();
    for path in bpf {
        let bytes = std::fs::read(path).map_err(|e| SimError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        objects.push(machine.attach_bpf(&bytes, &path.display().to_string())?);
    }
    let result = machine.run()?;
    let code = result.status.shell_code() as u8;
    let mut out = BufWriter::new(std::io::stdout().lock());
    // A closed stdout (e.g. `| head`) ends the report early; the exit code still counts.
    let _ = if json {
        write_json(&mut out, &program.name, &result, &objects)
    } else {
        write_report(&mut out, &machine, &result, quiet, &objects)
    };
    let _ = out.flush();
    Ok(code)
}

fn write_report(
    out: &mut impl Write,
    machine: &Machine,
    result: &RunResult,
    quiet: bool,
    objects: &[BpfObject],
) -> std::io::Result<()> {
    if !result.stdout.is_empty() && !result.stdout.ends_with(b"\n") {
        writeln!(out)?;
    }
    if !quiet {
        writeln!(out, "--- trace ({} events)", result.trace.len())?;
        for event in &result.trace {
            writeln!(out, "{event}")?;
        }
    }
    writeln!(out, "--- probes")?;
    let spec_width = result
        .probes
        .iter()
        .map(|p| p.spec.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<spec_width$}  {:<10}  {:<20}  {:>10}  {:>10}  {:>8}",
        "SPEC", "ADDRESS", "LOCATION", "HITS", "RETURNS", "MISSED"
    )?;
    for p in &result.probes {
        let location = location(machine, p.addr);
        let s = p.stats;
        // Counters belong to the address; returns only mean something for return probes.
        let (returns, missed) = match p.role {
            ProbeRole::Entry => ("-".to_string(), "-".to_string()),
            _ => (s.returns.to_string(), s.missed.to_string()),
        };
        writeln!(
            out,
            "{:<spec_width$}  {:<10}  {:<20}  {:>10}  {:>10}  {:>8}",
            p.spec,
            format!("{:#x}", p.addr),
            location,
            s.hits,
            returns,
            missed
        )?;
    }
    for p in result.probes.iter().filter(|p| p.role == ProbeRole::Return) {
        if let Some(histogram) = &p.latency {
            writeln!(
                out,
                "--- latency of {} at {} (instructions, entry to return)",
                p.spec,
                location(machine, p.addr)
            )?;
            write_histogram(out, histogram)?;
        }
    }
    for object in objects {
        writeln!(out, "--- bpf {}", object.shown)?;
        write!(out, "{}", object.summary())?;
    }
    for line in &result.diagnostics {
        writeln!(out, "--- kernel: {line}")?;
    }
    writeln!(
        out,
        "--- {} after {} instructions",
        status_text(result),
        result.instructions
    )?;
    Ok(())
}

fn status_text(result: &RunResult) -> String {
    match result.status {
        ruprobes_sim::kernel::ExitStatus::Exited(code) => format!("exit {code}"),
        ruprobes_sim::kernel::ExitStatus::Killed(signal) => {
            match ruprobes_trace::signal_name(signal) {
                Some(name) => format!("killed by {name}"),
                None => format!("killed by signal {signal}"),
            }
        }
    }
}

fn location(machine: &Machine, addr: u64) -> String {
    machine.main_image().map_or_else(
        || format!("{addr:#x}"),
        |image| image.location(addr).to_string(),
    )
}

fn write_histogram(out: &mut impl Write, histogram: &Histogram) -> std::io::Result<()> {
    if histogram.count() == 0 {
        return writeln!(out, "(no completed calls)");
    }
    let max = histogram.buckets.iter().copied().max().unwrap_or(1).max(1);
    let first = histogram.buckets.iter().position(|&c| c > 0).unwrap_or(0);
    for (i, &count) in histogram.buckets.iter().enumerate().skip(first) {
        let (lo, hi) = Histogram::range(i);
        let bar = "@".repeat(((count * 40).div_ceil(max)) as usize);
        let range = if hi == lo + 1 {
            format!("[{lo}]")
        } else {
            format!("[{lo}, {hi})")
        };
        writeln!(out, "{range:<20} {count:>8} |{bar:<40}|")?;
    }
    Ok(())
}

fn write_json(
    out: &mut impl Write,
    name: &str,
    result: &RunResult,
    objects: &[BpfObject],
) -> std::io::Result<()> {
    let probes: Vec<serde_json::Value> = result.probes.iter().map(probe_json).collect();
    let bpf: Vec<serde_json::Value> = objects
        .iter()
        .map(|o| serde_json::json!({ "object": o.shown, "summary": o.summary() }))
        .collect();
    let doc = serde_json::json!({
        "program": name,
        "output": String::from_utf8_lossy(&result.stdout),
        "status": result.status,
        "exit_code": result.status.shell_code(),
        "instructions": result.instructions,
        "trace": result.trace,
        "probes": probes,
        "diagnostics": result.diagnostics,
        "bpf": bpf,
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

fn probe_json(p: &ProbeReport) -> serde_json::Value {
    let histogram = p.latency.as_ref().map(|h| {
        h.buckets
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &count)| {
                let (lo, hi) = Histogram::range(i);
                serde_json::json!({ "lo": lo, "hi": hi, "count": count })
            })
            .collect::<Vec<_>>()
    });
    serde_json::json!({
        "spec": p.spec,
        "addr": p.addr,
        "role": p.role,
        "hits": p.stats.hits,
        "returns": p.stats.returns,
        "missed": p.stats.missed,
        "latency_histogram": histogram,
    })
}

fn scenarios(names: &[String]) -> Result<u8, Failure> {
    let selected = scenario::select(names).map_err(|n| Failure {
        message: format!("no scenario named '{n}'"),
        code: 2,
    })?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for s in selected {
        let block = scenario::render(s).map_err(|e| Failure {
            message: format!("scenario {}: {e}", s.name),
            code: 1,
        })?;
        let _ = out.write_all(block.as_bytes());
    }
    for s in scenario::select_bpf(names) {
        let block = scenario::render_bpf(s).map_err(|e| Failure {
            message: format!("scenario {}: {e}", s.name),
            code: 1,
        })?;
        let _ = out.write_all(block.as_bytes());
    }
    let _ = out.flush();
    Ok(0)
}

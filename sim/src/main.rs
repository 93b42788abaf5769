//! `ruprobes-sim`: run RISC-V programs in the simulator, with bpftrace-like probes.
//!
//! ```text
//! ruprobes-sim trace PROG -p SPEC [-p SPEC ...] [--probes-from FILE] [--quiet] [--json]
//!                    [--post] [--pid N] [--tid N] [--max-events N] [--output FILE]
//!                    [--hist | --lhist MIN,MAX,STEP] [--max-insns N]
//!                    [--bpf OBJ.o ...]
//! ruprobes-sim trace PROG --list SPEC [--json]
//!                    [-- ARGS...]
//! ruprobes-sim run PROG [--max-insns N] [GUEST OPTIONS] [-- ARGS...]
//!   GUEST OPTIONS (run and trace): --env K=V (repeatable), --root DIR,
//!   --personality auto|linux|teaching
//! ruprobes-sim scenarios [NAME ...]
//! ruprobes-sim                      # traces the bundled fib demo
//! ```
//!
//! `trace` writes trace events as they happen (never kept in memory), in the program's
//! output order on stdout, or to `--output FILE`; `--json` writes JSON Lines (one object
//! per event, the program's output as `output` objects). Then, however the run ended (exit,
//! kill, `--max-insns`, `--max-events`, Ctrl-C, a closed pipe), the summary: the hit table,
//! hits per function, latency and value histograms, what the probe machinery cost and how
//! the run ended ([`ruprobes_sim::report`]); with `--json` one `summary` object. When the
//! trace's writer is gone (`| head`), the run stops and the summary goes to stderr.
//! `--bpf OBJ.o` attaches the programs of a clang-built BPF object (see `sim/src/bpf.rs`):
//! their `bpf_trace_printk` lines are trace events, and a `bpf OBJ.o` section of the summary
//! prints its maps and each program's runs and errors.
//! The program gets `ARGS` as `argv[1..]` (`argv[0]` is PROG as given) and the `--env`
//! variables as its whole environment; `--root DIR` is the guest's read-only `/` (files,
//! and where `exec` also finds apps by name). The personality (the system-call interface)
//! is chosen from the ELF unless given (see `ruprobes_sim::kernel::image`). `run` reads the
//! guest's stdin from its own; when the program is killed, `run` says by what, where, on
//! stderr.
//!
//! Exit code: the program's (128 + N if killed by signal N, like `qemu-riscv64`); 130
//! after Ctrl-C, 141 after a closed output, 0 at `--max-events`. Errors are one line on
//! stderr starting with `error:`; the exit code is 2 for a bad command line (including a
//! malformed probe spec) and 1 for anything else (an exhausted budget prints the summary
//! first).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ruprobes_sim::bpf::BpfObject;
use ruprobes_sim::kernel::{ExitStatus, Personality};
use ruprobes_sim::machine::{Config, Machine, Progress, Scale, TraceOptions};
use ruprobes_sim::report::{self, Ending, Section, Summary};
use ruprobes_sim::trace::{Filter, Format};
use ruprobes_sim::{scenario, SimError};
use ruprobes_trace::{ProbeKind, ProbeSpec};

const EXAMPLES: &str = "\
Without a command, traces the bundled demo (fib with entry and return probes).

Probe specs: KIND:[PROG:]TARGET [FETCH ...]
  KIND    uprobe | uretprobe
  TARGET  SYM, SYM+OFF, SYM* (prefix), SYM+* (every instruction; *+* all functions),
          0xADDR, 0xLO-0xHI (every instruction in [LO, HI))
  FETCH   [NAME=]%REG | $retval | OFF(%REG), then :u8..:u64, :s8..:s64, :x8..:x64, :string

Examples:
  ruprobes-sim trace fixtures/bin/fib.elf -p uprobe:fib -p uretprobe:fib
  ruprobes-sim trace fixtures/bin/fib.elf -p 'uprobe:fib n=%a0:u32' --hist
  ruprobes-sim trace fixtures/bin/fib.elf -p 'uretprobe:fib $retval:u64' --lhist 0,100,10
  ruprobes-sim trace fixtures/bin/fib.elf -p 'uprobe:fib +8(%sp):x64 %ra' --post
  ruprobes-sim trace fixtures/bin/crc.elf -p 'uprobe:crc32+*' --quiet
  ruprobes-sim trace fixtures/bin/crc.elf -p 'uprobe:*+*' --json --output trace.jsonl
  ruprobes-sim trace fixtures/bin/crc.elf --list 'uprobe:crc32+*'
  ruprobes-sim trace fixtures/bin/fib.elf -p uprobe:0x10014-0x10040 --max-events 20
  ruprobes-sim trace fixtures/bin/forker.elf -p uprobe:hello:main --pid 2
  ruprobes-sim trace fixtures/bin/fib.elf --probes-from probes.txt | head
  ruprobes-sim trace fixtures/bin/greet.elf --bpf fixtures/bpf/greet.bpf.o
  ruprobes-sim trace ./prog -p uprobe:main -p 'uretprobe:qsort' --env LANG=C -- in.txt
  ruprobes-sim run fixtures/bin/hello.elf

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
    /// Run a program with probes: its output and the trace as they happen, then a summary.
    Trace {
        /// The RISC-V ELF executable; its file stem is its path for probes (e.g. `fib`).
        prog: PathBuf,
        #[command(flatten)]
        args: TraceArgs,
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

/// The options of `trace`.
#[derive(Args, Debug, Default)]
struct TraceArgs {
    /// A probe (see "Probe specs" below), e.g. uprobe:fib, 'uretprobe:fib $retval'.
    #[arg(short = 'p', long = "probe", value_name = "SPEC")]
    probes: Vec<String>,
    /// A BPF object whose programs run as probe handlers (SEC("uprobe/SYM"), ...).
    #[arg(long = "bpf", value_name = "OBJ.o")]
    bpf: Vec<PathBuf>,
    /// Read more probe specs from FILE, one per line (# starts a comment).
    #[arg(long, value_name = "FILE")]
    probes_from: Option<PathBuf>,
    /// List the sites SPEC names (instruction, class, traps per hit) and exit.
    #[arg(short = 'l', long, value_name = "SPEC")]
    list: Option<String>,
    /// Write no trace events (only the summary).
    #[arg(short, long)]
    quiet: bool,
    /// JSON Lines: one object per event, then one summary object.
    #[arg(long)]
    json: bool,
    /// Also trace a post line after each probed instruction of a uprobe.
    #[arg(long)]
    post: bool,
    /// Only events of process N (hits, returns, kernel events).
    #[arg(long, value_name = "N")]
    pid: Option<u64>,
    /// Only hits and returns of thread N.
    #[arg(long, value_name = "N")]
    tid: Option<u64>,
    /// Stop after writing N events.
    #[arg(long, value_name = "N")]
    max_events: Option<u64>,
    /// Write the trace and summary to FILE (the program's output stays on stdout).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// A log2 histogram of each probe's first fetched value.
    #[arg(long)]
    hist: bool,
    /// Linear histograms (of latency and of first fetched values): MIN,MAX,STEP.
    #[arg(long, value_name = "MIN,MAX,STEP", conflicts_with = "hist")]
    lhist: Option<String>,
    /// Instruction budget of the whole run.
    #[arg(long, value_name = "N")]
    max_insns: Option<u64>,
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
        Some(Command::Trace { prog, args, guest }) => {
            read_program(&prog, guest).and_then(|p| trace(&p, &args))
        }
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
    let demo = Program {
        name: "fib".into(),
        elf: DEMO_ELF.to_vec(),
        dir: None,
        shown: "fixtures/bin/fib.elf".into(),
        guest: Guest::default(),
    };
    let args = TraceArgs {
        probes: DEMO_PROBES.iter().map(|s| s.to_string()).collect(),
        ..TraceArgs::default()
    };
    trace(&demo, &args)
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

/// Instructions between checks for SIGINT, a closed output and the event limit.
const CHUNK: u64 = 1 << 20;

/// Set by the SIGINT handler; the run loop stops at the next chunk.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Every spec of the command line: `-p` ones, then those of `--probes-from` (one per line;
/// blank lines and `#` comments skipped).
fn all_specs(args: &TraceArgs) -> Result<Vec<String>, Failure> {
    let mut specs = args.probes.clone();
    if let Some(path) = &args.probes_from {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        specs.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    Ok(specs)
}

/// `MIN,MAX,STEP` of `--lhist`.
fn linear_scale(text: &str) -> Result<Scale, Failure> {
    let bad = |why: &str| Failure {
        message: format!("bad --lhist '{text}': {why}"),
        code: 2,
    };
    let numbers: Vec<u64> = text
        .split(',')
        .map(|n| n.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("expected MIN,MAX,STEP (decimal numbers)"))?;
    match numbers[..] {
        [min, max, step] if step > 0 && max > min => Ok(Scale::Linear { min, max, step }),
        [_, _, _] => Err(bad("needs MAX > MIN and STEP > 0")),
        _ => Err(bad("expected MIN,MAX,STEP (decimal numbers)")),
    }
}

fn trace(program: &Program, args: &TraceArgs) -> Result<u8, Failure> {
    let specs = all_specs(args)?;
    if let Some(spec) = &args.list {
        return list(program, spec, args.json);
    }
    if specs.is_empty() && args.bpf.is_empty() {
        return Err(Failure {
            message: "no probes: give -p SPEC, --probes-from FILE or --bpf OBJ.o (see --help)"
                .into(),
            code: 2,
        });
    }
    let scale = args.lhist.as_deref().map(linear_scale).transpose()?;
    let output: Option<File> = match &args.output {
        Some(path) => Some(File::create(path).map_err(|e| SimError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?),
        None => None,
    };
    let mut config = config(args.max_insns, !args.json);
    config.keep_output = false;
    let mut machine = program.machine(config)?;
    let (format, inline_output) = match (args.json, output.is_some()) {
        (true, _) => (Format::Json, true),
        // Output and events share stdout: keep their order.
        (false, false) => (Format::Text, true),
        (false, true) => (Format::Text, false),
    };
    // The sink buffers: a traced run writes tens of millions of lines.
    let writer: Box<dyn Write + Send> = match output {
        Some(file) => Box::new(file),
        None => Box::new(std::io::stdout()),
    };
    let filter = Filter {
        pid: args.pid,
        max_events: args.max_events,
        quiet: args.quiet,
    };
    machine
        .trace_sink()
        .stream_to(writer, format, filter, inline_output);
    machine.set_trace_options(TraceOptions {
        post: args.post,
        pid: args.pid,
        tid: args.tid,
        latency_scale: scale.unwrap_or_default(),
        value_histogram: (args.hist || scale.is_some()).then(|| scale.unwrap_or_default()),
    });
    for spec in &specs {
        machine.add_probes(spec)?;
    }
    let mut objects: Vec<BpfObject> = Vec::new();
    for path in &args.bpf {
        let bytes = std::fs::read(path).map_err(|e| SimError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        objects.push(machine.attach_bpf(&bytes, &path.display().to_string())?);
    }
    // Ctrl-C ends the run with its summary (a second handler cannot be installed: the demo
    // and tests run once per process, so a failure here only loses that nicety).
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed));
    let ending = run_until_stopped(&mut machine);
    let mut summary = Summary::of(&machine, &program.name, ending);
    summary.sections.extend(objects.iter().map(|o| {
        let text = o.summary();
        Section {
            title: format!("bpf {}", o.shown),
            json: serde_json::json!({ "object": o.shown, "summary": text }),
            lines: text.lines().map(str::to_string).collect(),
        }
    }));
    let written = machine.trace_sink().with_writer(|out| {
        if args.json {
            report::write_json(out, &summary)
        } else {
            report::write_text(out, &summary)
        }
    });
    if written.is_none() {
        // The trace's writer is gone (`| head`): the summary goes to stderr.
        let mut err = std::io::stderr().lock();
        let _ = if args.json {
            report::write_json(&mut err, &summary)
        } else {
            report::write_text(&mut err, &summary)
        };
    }
    match summary.ending {
        Ending::Failed(e) => Err(e.into()),
        ending => Ok(ending.exit_code()),
    }
}

/// Runs until the program ends, SIGINT, a closed output, the event limit or a failure.
fn run_until_stopped(machine: &mut Machine) -> Ending {
    loop {
        match machine.run_for(CHUNK) {
            Ok(Progress::Finished) => {
                return Ending::Finished(machine.status().unwrap_or(ExitStatus::Killed(0)))
            }
            Ok(Progress::Paused) => {}
            Err(e) => return Ending::Failed(e),
        }
        let sink = machine.trace_sink();
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Ending::Interrupted;
        }
        if sink.closed() {
            return Ending::OutputClosed;
        }
        if sink.full() {
            return Ending::MaxEvents(sink.counts().written);
        }
    }
}

/// `--list SPEC`: the sites, their instruction, class and cost, without running.
fn list(program: &Program, spec: &str, json: bool) -> Result<u8, Failure> {
    let mut machine = program.machine(config(None, false))?;
    let sites = machine.sites(spec)?;
    let is_return = ProbeSpec::parse(spec).is_ok_and(|s| s.kind == ProbeKind::Return);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let _ = if json {
        serde_json::to_writer(&mut out, &report::SiteList { sites: &sites })
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        report::write_sites(&mut out, &sites, is_return)
    };
    let _ = out.flush();
    Ok(0)
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

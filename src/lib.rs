//! Shared helpers of the ruprobes integration tests and benchmarks: the committed fixture
//! programs, the instruction sites of their text, and unprobed reference runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ruprobes::decode::{self, Class};
use ruprobes::Unsupported;
use ruprobes_sim::kernel::image::Image;
use ruprobes_sim::kernel::{ExitStatus, Regs};
use ruprobes_sim::machine::{Config, Machine, FIXTURES_DIR};
use ruprobes_sim::trace::TraceEvent;

/// One program of `fixtures/bin/MANIFEST`.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// Its name (the exec path and probe key).
    pub name: String,
    /// The exit code a shell reports (`128 + signal` when killed).
    pub exit_code: i32,
    /// The ELF bytes.
    pub elf: Vec<u8>,
}

impl Fixture {
    /// The parsed image (symbols and initial page contents).
    pub fn image(&self) -> Arc<Image> {
        Image::parse(&self.name, &self.elf).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// A fresh machine with this program loaded as process 1.
    pub fn machine(&self, config: Config) -> Machine {
        let mut machine = Machine::new(config);
        machine.set_image_dir(&fixtures_dir());
        machine
            .load(&self.name, &self.elf)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        machine
    }
}

/// The directory of the committed fixtures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(FIXTURES_DIR)
}

/// Every fixture of the manifest, in manifest order, except the benchmarks (kind `bench`:
/// too long to trace in the tests).
pub fn fixtures() -> Vec<Fixture> {
    let dir = fixtures_dir();
    let manifest = read(&dir.join("MANIFEST"));
    String::from_utf8_lossy(&manifest)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter(|l| l.split_whitespace().nth(3) != Some("bench"))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 3, "malformed manifest line: {line}");
            let name = fields[0].to_string();
            let exit_code = fields[2].parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            let elf = read(&dir.join(format!("{name}.elf")));
            Fixture {
                name,
                exit_code,
                elf,
            }
        })
        .collect()
}

/// The fixture called `name`.
pub fn fixture(name: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One instruction start in a program's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    /// Its address.
    pub addr: u64,
    /// Its length (2 or 4).
    pub len: usize,
    /// How the core executes it, or why it rejects it.
    pub class: Result<Class, Unsupported>,
}

impl Site {
    /// Whether the core accepts a probe here.
    pub fn probeable(&self) -> bool {
        self.class.is_ok()
    }
}

/// Every instruction start of `image`'s function symbols, found by decoding forward from
/// each symbol to its end (`st_size`, or the next symbol for labels without a size), in
/// address order without duplicates.
pub fn sites(image: &Image) -> Vec<Site> {
    let symbols = image.symbols.symbols();
    let mut out: Vec<Site> = Vec::new();
    for (i, sym) in symbols.iter().enumerate() {
        let next = symbols[i + 1..]
            .iter()
            .map(|s| s.addr)
            .find(|&a| a > sym.addr);
        let end = if sym.size > 0 {
            sym.addr + sym.size
        } else {
            next.unwrap_or(sym.addr)
        };
        let mut addr = sym.addr;
        while addr < end {
            let Some(bytes) = image.initial_bytes(addr, 2) else {
                break;
            };
            let Some(len) = decode::insn_len(u16::from_le_bytes([bytes[0], bytes[1]])) else {
                break;
            };
            let Some(bytes) = image.initial_bytes(addr, len) else {
                break;
            };
            let class = decode::decode(&bytes).map(|insn| insn.class());
            out.push(Site { addr, len, class });
            addr += len as u64;
        }
    }
    out.sort_by_key(|s| s.addr);
    out.dedup_by_key(|s| s.addr);
    out
}

/// What a finished run looks like from outside: what the probed and the unprobed run must
/// agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Everything written to fd 1 and 2.
    pub stdout: Vec<u8>,
    /// How process 1 ended.
    pub status: ExitStatus,
    /// Syscalls, exits and kills, in order (probe events left out).
    pub events: Vec<TraceEvent>,
    /// The register file of the process that exited last.
    pub final_regs: Option<Regs>,
    /// Instructions the program executed: the clock behind `rdinstret`, `rdcycle`,
    /// `rdtime` and `get_time`, which probes must not change.
    pub instructions: u64,
}

/// Runs `machine` to the end and collects its [`Outcome`].
pub fn finish(machine: &mut Machine) -> Outcome {
    let result = machine.run().unwrap_or_else(|e| panic!("run: {e}"));
    let events = result
        .trace
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                TraceEvent::Syscall { .. } | TraceEvent::Exit { .. } | TraceEvent::Killed { .. }
            )
        })
        .collect();
    Outcome {
        stdout: result.stdout,
        status: result.status,
        events,
        final_regs: machine.final_regs(),
        instructions: result.instructions,
    }
}

/// The number of proptest cases: `PROPTEST_CASES` if set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

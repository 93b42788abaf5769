//! The whole simulated computer: one CPU, physical memory, the sim kernel, a ruprobes
//! engine of its own, and the trace.
//!
//! ```no_run
//! use ruprobes_sim::machine::{Config, Machine};
//! let elf = std::fs::read("fixtures/bin/fib.elf").unwrap();
//! let mut m = Machine::new(Config::default());
//! m.load("fib", &elf).unwrap();
//! m.add_probe("uprobe:fib").unwrap();
//! m.add_probe("uretprobe:fib").unwrap();
//! let result = m.run().unwrap();
//! for event in &result.trace {
//!     println!("{event}");
//! }
//! ```
//!
//! Every machine owns its engine, so tests run machines on parallel threads. Seed mode
//! ([`Config::seed`]) instead drives the global engine of `ruprobes::seed` through the
//! `extern "C"` hooks of [`crate::seed_ffi`]; probes are then registered with
//! `ruprobes::seed::uprobe_register`, and only one seed-mode machine may run at a time.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ruprobes::{abi, Consumer, ConsumerId, TrapContext, Uprobes, UserRegs};
use ruprobes_trace::{ProbeKind, ProbeSpec, Target, SIGILL, SIGSEGV, SIGTRAP};
use serde::Serialize;

use crate::cpu::{Cpu, Stop};
use crate::error::SimError;
use crate::kernel::aspace::{Access, AddressSpace};
use crate::kernel::image::Image;
use crate::kernel::{initial_regs, ExitStatus, Kernel, Pid, ProcState, Regs};
use crate::mem::{PhysMem, PAGE_SIZE};
use crate::seed_ffi;
use crate::space::{FaultInjection, SimSpace};
use crate::trace::{Loc, TraceEvent, TraceSink};

/// Where the committed fixture programs live; `exec` finds images there by name.
pub const FIXTURES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/bin");

/// Machine settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Emulated physical memory in bytes (rounded down to whole pages).
    pub mem_bytes: u64,
    /// Instructions the whole run may execute before it ends with
    /// [`SimError::BudgetExhausted`].
    pub max_insns: u64,
    /// Copy the programs' output to the host's stdout as it is written.
    pub echo_stdout: bool,
    /// Count how often each pc executes (single-steps the CPU: slow, for tests).
    pub count_pcs: bool,
    /// Drive the global seed engine through the `extern "C"` hooks instead of an engine of
    /// this machine's own.
    pub seed: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mem_bytes: 64 << 20,
            max_insns: 2_000_000_000,
            echo_stdout: false,
            count_pcs: false,
            seed: false,
        }
    }
}

/// The handle of a probe added to a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProbeId(pub usize);

/// Queue of probes to unregister, for handlers that cannot reach the machine: push ids,
/// and the machine unregisters them right after the trap that queued them.
#[derive(Clone, Debug, Default)]
pub struct UnregisterQueue(Arc<Mutex<Vec<ProbeId>>>);

impl UnregisterQueue {
    /// Asks the machine to unregister `id` once the current trap is handled.
    pub fn push(&self, id: ProbeId) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
    }

    fn take(&self) -> Vec<ProbeId> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Hit counters of one probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Times the probed instruction was hit.
    pub hits: u64,
    /// Times return handlers ran.
    pub returns: u64,
    /// Returns missed beyond the return-depth limit.
    pub missed: u64,
}

impl From<ruprobes::ProbeStats> for Stats {
    fn from(s: ruprobes::ProbeStats) -> Self {
        Stats {
            hits: s.hits,
            returns: s.returns,
            missed: s.missed,
        }
    }
}

/// A log2 histogram: bucket `i` counts values `v` with `2^(i-1) <= v < 2^i` (bucket 0: v = 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Histogram {
    /// Counts per bucket; trailing empty buckets are omitted.
    pub buckets: Vec<u64>,
}

impl Histogram {
    /// Counts one value.
    pub fn add(&mut self, value: u64) {
        let i = (u64::BITS - value.leading_zeros()) as usize;
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, 0);
        }
        self.buckets[i] += 1;
    }

    /// The value range `[lo, hi)` of bucket `i`.
    pub fn range(i: usize) -> (u64, u64) {
        match i {
            0 => (0, 1),
            _ => (1 << (i - 1), 1u64.checked_shl(i as u32).unwrap_or(u64::MAX)),
        }
    }

    /// Total number of values.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Function latency of a return probe, in instructions from entry to return, per thread.
#[derive(Debug, Default)]
struct Latency {
    /// Pending calls per thread: (sp at entry, instruction count at entry).
    stacks: HashMap<usize, Vec<(usize, u64)>>,
    histogram: Histogram,
}

impl Latency {
    fn enter(&mut self, tid: usize, sp: usize, now: u64) {
        self.stacks.entry(tid).or_default().push((sp, now));
    }

    /// Matches the return with the call made at the same stack depth; calls deeper than it
    /// (skipped by a longjmp, or missed beyond the depth limit) are dropped.
    fn exit(&mut self, tid: usize, sp: usize, now: u64) {
        let Some(stack) = self.stacks.get_mut(&tid) else {
            return;
        };
        while let Some(&(entry_sp, start)) = stack.last() {
            stack.pop();
            if entry_sp >= sp {
                if entry_sp == sp {
                    self.histogram.add(now.saturating_sub(start));
                }
                return;
            }
        }
    }
}

/// What a probe of a machine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeRole {
    /// `uprobe:` — traces hits and post-steps.
    Entry,
    /// `uretprobe:` — traces returns and measures latency.
    Return,
    /// A consumer given by the caller ([`Machine::register`]).
    Custom,
}

/// One probe of a machine, as reported after a run.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// Its handle.
    pub id: ProbeId,
    /// The spec it came from (or `0xADDR` for [`Machine::register`]).
    pub spec: String,
    /// The program path it is keyed by.
    pub path: String,
    /// The probed address.
    pub addr: u64,
    /// Its kind.
    pub role: ProbeRole,
    /// Counters (of every consumer at this address together).
    pub stats: Stats,
    /// Entry-to-return latency in instructions, for return probes.
    pub latency: Option<Histogram>,
}

struct ProbeRecord {
    spec: String,
    path: String,
    addr: u64,
    role: ProbeRole,
    /// `None` once unregistered.
    consumer: Option<ConsumerId>,
    /// Counters frozen at unregistration.
    frozen: Option<Stats>,
    latency: Option<Arc<Mutex<Latency>>>,
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Everything the processes wrote to fd 1 and 2.
    #[serde(serialize_with = "lossy_utf8")]
    pub stdout: Vec<u8>,
    /// How the first process ended.
    pub status: ExitStatus,
    /// The trace, in order.
    pub trace: Vec<TraceEvent>,
    /// Instructions retired.
    pub instructions: u64,
    /// Every probe added to the machine.
    pub probes: Vec<ProbeReport>,
    /// Kernel messages (unknown syscalls, faults with their pc).
    pub diagnostics: Vec<String>,
}

fn lossy_utf8<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

/// Whether a bounded run finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every process has exited.
    Finished,
    /// The instruction count given to [`Machine::run_for`] was reached.
    Paused,
}

/// The engine a machine drives.
enum Engine {
    Own(Uprobes),
    Seed,
}

/// How a trap reaches the engine.
enum EngineCall<'a, 'b> {
    /// This machine's engine, with the process's user space.
    Own(&'a Uprobes, &'a mut SimSpace<'b>),
    /// The global seed engine; its hooks reach the space through [`seed_ffi`].
    Seed,
}

/// [`UserRegs`] over the CPU's registers.
struct CpuRegs<'a>(&'a mut Cpu);

impl UserRegs for CpuRegs<'_> {
    fn pc(&self) -> usize {
        self.0.pc as usize
    }
    fn set_pc(&mut self, pc: usize) {
        self.0.pc = pc as u64;
    }
    fn reg(&self, n: usize) -> usize {
        match n {
            1..=31 => self.0.x[n] as usize,
            _ => 0,
        }
    }
    fn set_reg(&mut self, n: usize, value: usize) {
        if let 1..=31 = n {
            self.0.x[n] = value as u64;
        }
    }
}

/// A simulated RISC-V computer running one program (and whatever it forks and execs).
pub struct Machine {
    pub(crate) config: Config,
    pub(crate) mem: PhysMem,
    pub(crate) cpu: Cpu,
    pub(crate) kernel: Kernel,
    engine: Engine,
    pub(crate) faults: FaultInjection,
    pub(crate) trace: TraceSink,
    images: HashMap<String, Arc<Image>>,
    /// Searched for `NAME.elf` before [`FIXTURES_DIR`].
    image_dir: Option<std::path::PathBuf>,
    main_image: Option<Arc<Image>>,
    probes: Vec<ProbeRecord>,
    unregister_queue: UnregisterQueue,
    /// The CPU's instruction count at the last trap, for handlers that measure time.
    clock: Arc<AtomicU64>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) diagnostics: Vec<String>,
    pub(crate) main_status: Option<ExitStatus>,
    pub(crate) last_exit_regs: Option<Regs>,
    pc_counts: HashMap<u64, u64>,
    /// Breakpoint traps taken so far (ours and not ours), for the performance report.
    breakpoint_traps: u64,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl Machine {
    /// A machine with no program.
    pub fn new(config: Config) -> Self {
        let frames = (config.mem_bytes / PAGE_SIZE) as usize;
        Machine {
            mem: PhysMem::new(frames),
            cpu: Cpu::new(),
            kernel: Kernel::new(),
            engine: if config.seed {
                Engine::Seed
            } else {
                Engine::Own(Uprobes::new())
            },
            faults: FaultInjection::none(),
            trace: TraceSink::default(),
            images: HashMap::new(),
            image_dir: None,
            main_image: None,
            probes: Vec::new(),
            unregister_queue: UnregisterQueue::default(),
            clock: Arc::new(AtomicU64::new(0)),
            stdout: Vec::new(),
            diagnostics: Vec::new(),
            main_status: None,
            last_exit_regs: None,
            pc_counts: HashMap::new(),
            breakpoint_traps: 0,
            config,
        }
    }

    /// Adds a named program image that `exec` can start.
    pub fn add_image(&mut self, name: &str, elf: &[u8]) -> Result<Arc<Image>, SimError> {
        let image = Image::parse(name, elf)?;
        self.images.insert(name.to_string(), image.clone());
        Ok(image)
    }

    /// Makes `exec` look for `NAME.elf` in `dir` before [`FIXTURES_DIR`] (the CLI passes
    /// the program's own directory).
    pub fn set_image_dir(&mut self, dir: &Path) {
        self.image_dir = Some(dir.to_path_buf());
    }

    /// The image called `name`: added ones first, then `NAME.elf` in the image directory
    /// and in [`FIXTURES_DIR`].
    pub fn image(&mut self, name: &str) -> Result<Arc<Image>, SimError> {
        if let Some(image) = self.images.get(name) {
            return Ok(image.clone());
        }
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !plain {
            return Err(SimError::UnknownImage(name.to_string()));
        }
        let file = format!("{name}.elf");
        let dirs = self
            .image_dir
            .iter()
            .map(|d| d.as_path())
            .chain([Path::new(FIXTURES_DIR)]);
        let bytes = dirs
            .filter_map(|dir| std::fs::read(dir.join(&file)).ok())
            .next()
            .ok_or_else(|| SimError::UnknownImage(name.to_string()))?;
        self.add_image(name, &bytes)
    }

    /// Loads `elf` as the program `name` (its exec path and probe key) into process 1.
    pub fn load(&mut self, name: &str, elf: &[u8]) -> Result<Pid, SimError> {
        if !self.kernel.procs.is_empty() {
            return Err(SimError::Unavailable("a program is already loaded"));
        }
        let image = self.add_image(name, elf)?;
        let aspace = AddressSpace::with_image(&mut self.mem, &image)?;
        let pid = self
            .kernel
            .spawn(None, image.clone(), aspace, initial_regs(image.entry));
        self.main_image = Some(image);
        self.exec_hook(pid);
        Ok(pid)
    }

    /// Injects failures into the engine's user-memory accesses from now on.
    pub fn set_faults(&mut self, faults: FaultInjection) {
        self.faults = faults;
    }

    /// The main program's image.
    pub fn main_image(&self) -> Option<&Arc<Image>> {
        self.main_image.as_ref()
    }

    /// The engine of this machine (`None` in seed mode).
    pub fn engine(&self) -> Option<&Uprobes> {
        match &self.engine {
            Engine::Own(engine) => Some(engine),
            Engine::Seed => None,
        }
    }

    /// A queue through which handlers can unregister probes during a run.
    pub fn unregister_queue(&self) -> UnregisterQueue {
        self.unregister_queue.clone()
    }

    /// The instruction count at the latest trap (what handlers should read as "now").
    pub fn clock(&self) -> Arc<AtomicU64> {
        self.clock.clone()
    }

    /// Instructions retired so far.
    pub fn instructions(&self) -> u64 {
        self.cpu.instret()
    }

    /// Output written so far.
    pub fn stdout(&self) -> &[u8] {
        &self.stdout
    }

    /// How often each pc executed (with [`Config::count_pcs`]).
    pub fn pc_counts(&self) -> &HashMap<u64, u64> {
        &self.pc_counts
    }

    /// Breakpoint traps taken so far (every `ebreak` that stopped the CPU: probe hits,
    /// out-of-line step ends, return trampolines and breakpoints that are not ours).
    pub fn breakpoint_traps(&self) -> u64 {
        self.breakpoint_traps
    }

    /// The registers of the process that exited last, at its `exit` call (pc at the ecall)
    /// or at the faulting instruction.
    pub fn final_regs(&self) -> Option<Regs> {
        self.last_exit_regs
    }

    /// Live (not reaped) processes.
    pub fn pids(&self) -> Vec<Pid> {
        self.kernel.procs.keys().copied().collect()
    }

    /// Reads `len` bytes of `pid`'s memory at `addr` (kernel view: any mapped page). Works
    /// on exited processes that were not reaped, such as process 1 after the run.
    pub fn read_user(&self, pid: Pid, addr: u64, len: usize) -> Result<Vec<u8>, SimError> {
        let proc = self.kernel.procs.get(&pid).ok_or(SimError::NoProcess)?;
        let mut buf = vec![0; len];
        proc.aspace
            .read(&self.mem, addr, &mut buf, Access::Kernel)
            .map_err(|f| SimError::Probe {
                spec: format!("{:#x}", f.addr),
                error: ruprobes::Error::ReadFault(f),
            })?;
        Ok(buf)
    }

    // ---- probes ----

    /// Adds one probe from a spec (`uprobe:fib`, `uprobe:main+8`, `uprobe:0x10074`,
    /// `uretprobe:fib`) on the main program, tracing per the shared trace semantics.
    pub fn add_probe(&mut self, spec: &str) -> Result<ProbeId, SimError> {
        let (kind, addr) = self.resolve(spec)?;
        self.add_resolved(spec, kind, addr)
    }

    /// Like [`add_probe`](Self::add_probe), but a symbol ending in `*` adds a probe on every
    /// symbol with that prefix, in address order; those whose instruction cannot be probed
    /// ([`ruprobes::Error::Unsupported`]) are skipped.
    pub fn add_probes(&mut self, spec: &str) -> Result<Vec<ProbeId>, SimError> {
        let parsed = ProbeSpec::parse(spec).map_err(|e| bad_spec(spec, e))?;
        let Target::Symbol(name, 0) = parsed.target else {
            return self.add_probe(spec).map(|id| vec![id]);
        };
        let Some(prefix) = name.strip_suffix('*') else {
            return self.add_probe(spec).map(|id| vec![id]);
        };
        let image = self.main_image.clone().ok_or(SimError::NoProcess)?;
        let addrs: Vec<u64> = image.symbols.with_prefix(prefix).map(|s| s.addr).collect();
        if addrs.is_empty() {
            return Err(SimError::UnknownSymbol {
                spec: spec.to_string(),
                symbol: name.to_string(),
            });
        }
        let mut ids = Vec::new();
        for addr in addrs {
            match self.add_resolved(spec, parsed.kind, addr) {
                Ok(id) => ids.push(id),
                Err(SimError::Probe {
                    error: ruprobes::Error::Unsupported { .. },
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ids)
    }

    fn resolve(&self, spec: &str) -> Result<(ProbeKind, u64), SimError> {
        let parsed = ProbeSpec::parse(spec).map_err(|e| bad_spec(spec, e))?;
        let image = self.main_image.as_ref().ok_or(SimError::NoProcess)?;
        let addr = match parsed.target {
            Target::Addr(addr) => addr,
            Target::Symbol(name, off) => {
                let base = image
                    .symbols
                    .resolve(name)
                    .ok_or_else(|| SimError::UnknownSymbol {
                        spec: spec.to_string(),
                        symbol: name.to_string(),
                    })?;
                base.checked_add(off).ok_or_else(|| SimError::BadSpec {
                    spec: spec.to_string(),
                    why: "offset overflows".into(),
                })?
            }
        };
        Ok((parsed.kind, addr))
    }

    fn add_resolved(
        &mut self,
        spec: &str,
        kind: ProbeKind,
        addr: u64,
    ) -> Result<ProbeId, SimError> {
        let image = self.main_image.clone().ok_or(SimError::NoProcess)?;
        let loc = location(&image, addr);
        let sink = self.trace.clone();
        let (consumer, role, latency) = match kind {
            ProbeKind::Entry => {
                let (at, post_at, post_sink) = (loc.clone(), loc, sink.clone());
                let consumer = Consumer::new()
                    .on_entry(move |regs, hit| {
                        let args = [regs.reg(abi::A0) as u64, regs.reg(abi::A0 + 1) as u64];
                        sink.push(TraceEvent::Hit {
                            pid: hit.pid as u64,
                            at: at.clone(),
                            args,
                        });
                    })
                    .on_post(move |regs, hit| {
                        let next = regs.pc() as u64;
                        post_sink.push(TraceEvent::Post {
                            pid: hit.pid as u64,
                            at: post_at.clone(),
                            next,
                        });
                    });
                (consumer, ProbeRole::Entry, None)
            }
            ProbeKind::Return => {
                let latency = Arc::new(Mutex::new(Latency::default()));
                let (on_entry, on_return) = (latency.clone(), latency.clone());
                let (clock_in, clock_out) = (self.clock.clone(), self.clock.clone());
                let consumer = Consumer::new()
                    .on_entry(move |regs, hit| {
                        let now = clock_in.load(Ordering::Relaxed);
                        lock(&on_entry).enter(hit.tid, regs.reg(abi::SP), now);
                    })
                    .on_return(move |regs, ret| {
                        let value = regs.reg(abi::A0) as u64;
                        sink.push(TraceEvent::Return {
                            pid: ret.pid as u64,
                            func: loc.clone(),
                            value,
                        });
                        let now = clock_out.load(Ordering::Relaxed);
                        lock(&on_return).exit(ret.tid, regs.reg(abi::SP), now);
                    });
                (consumer, ProbeRole::Return, Some(latency))
            }
        };
        self.register_consumer(spec, &image.name, addr, consumer, role, latency)
    }

    /// Adds a caller-made consumer at `addr` of the main program.
    pub fn register(&mut self, addr: u64, consumer: Consumer) -> Result<ProbeId, SimError> {
        let path = self
            .main_image
            .as_ref()
            .ok_or(SimError::NoProcess)?
            .name
            .clone();
        self.register_at(&path, addr, consumer)
    }

    /// Adds a caller-made consumer at `addr` of the program `path` (e.g. a program that a
    /// child `exec`s).
    pub fn register_at(
        &mut self,
        path: &str,
        addr: u64,
        consumer: Consumer,
    ) -> Result<ProbeId, SimError> {
        self.register_consumer(
            &format!("{addr:#x}"),
            path,
            addr,
            consumer,
            ProbeRole::Custom,
            None,
        )
    }

    fn register_consumer(
        &mut self,
        spec: &str,
        path: &str,
        addr: u64,
        consumer: Consumer,
        role: ProbeRole,
        latency: Option<Arc<Mutex<Latency>>>,
    ) -> Result<ProbeId, SimError> {
        let Engine::Own(engine) = &self.engine else {
            return Err(SimError::Unavailable(
                "per-machine probes in seed mode (use ruprobes::seed)",
            ));
        };
        let target = self.process_running(path);
        let result = match target {
            Some(pid) => {
                let proc = self.kernel.procs.get_mut(&pid).ok_or(SimError::NoProcess)?;
                let mut space =
                    SimSpace::new(&mut self.mem, &mut proc.aspace, pid, &mut self.faults);
                let result = engine.register(path, addr as usize, consumer, Some(&mut space));
                if space.page_table_changed() {
                    self.cpu.flush_tlb();
                }
                result
            }
            None => engine.register(path, addr as usize, consumer, None),
        };
        let id = result.map_err(|error| SimError::Probe {
            spec: spec.to_string(),
            error,
        })?;
        self.sync_others(path, target);
        self.probes.push(ProbeRecord {
            spec: spec.to_string(),
            path: path.to_string(),
            addr,
            role,
            consumer: Some(id),
            frozen: None,
            latency,
        });
        Ok(ProbeId(self.probes.len() - 1))
    }

    /// Removes a probe (also in the middle of a run); its counters are kept for the report.
    pub fn unregister(&mut self, id: ProbeId) -> Result<(), SimError> {
        let Engine::Own(engine) = &self.engine else {
            return Err(SimError::Unavailable(
                "per-machine probes in seed mode (use ruprobes::seed)",
            ));
        };
        let record = self.probes.get(id.0).ok_or(SimError::UnknownProbe(id.0))?;
        let consumer = record.consumer.ok_or(SimError::UnknownProbe(id.0))?;
        let (path, addr, spec) = (record.path.clone(), record.addr, record.spec.clone());
        let frozen = engine.stats(&path, addr as usize).map(Stats::from);
        let target = self.process_running(&path);
        let result = match target {
            Some(pid) => {
                let proc = self.kernel.procs.get_mut(&pid).ok_or(SimError::NoProcess)?;
                let mut space =
                    SimSpace::new(&mut self.mem, &mut proc.aspace, pid, &mut self.faults);
                engine.unregister(consumer, Some(&mut space))
            }
            None => engine.unregister(consumer, None),
        };
        result.map_err(|error| SimError::Probe { spec, error })?;
        self.sync_others(&path, target);
        let record = &mut self.probes[id.0];
        record.consumer = None;
        record.frozen = frozen;
        Ok(())
    }

    /// Counters of a probe.
    pub fn stats(&self, id: ProbeId) -> Option<Stats> {
        let record = self.probes.get(id.0)?;
        match (&self.engine, record.consumer) {
            (Engine::Own(engine), Some(_)) => engine
                .stats(&record.path, record.addr as usize)
                .map(Stats::from),
            _ => record.frozen,
        }
    }

    /// Reports of every probe added so far.
    pub fn probe_reports(&self) -> Vec<ProbeReport> {
        (0..self.probes.len())
            .map(|i| {
                let record = &self.probes[i];
                ProbeReport {
                    id: ProbeId(i),
                    spec: record.spec.clone(),
                    path: record.path.clone(),
                    addr: record.addr,
                    role: record.role,
                    stats: self.stats(ProbeId(i)).unwrap_or_default(),
                    latency: record.latency.as_ref().map(|l| lock(l).histogram.clone()),
                }
            })
            .collect()
    }

    /// The live process running `path`: the current one if it does, else the lowest pid.
    fn process_running(&self, path: &str) -> Option<Pid> {
        let runs = |pid: &Pid| {
            self.kernel
                .procs
                .get(pid)
                .is_some_and(|p| p.image.name == path && !matches!(p.state, ProcState::Zombie(_)))
        };
        self.kernel
            .current
            .filter(runs)
            .or_else(|| self.kernel.procs.keys().copied().find(runs))
    }

    /// Brings every other live process running `path` in line with the registry.
    fn sync_others(&mut self, path: &str, done: Option<Pid>) {
        let Engine::Own(engine) = &self.engine else {
            return;
        };
        let others: Vec<Pid> = self
            .kernel
            .procs
            .values()
            .filter(|p| {
                Some(p.pid) != done
                    && p.image.name == path
                    && !matches!(p.state, ProcState::Zombie(_))
            })
            .map(|p| p.pid)
            .collect();
        for pid in others {
            let Some(proc) = self.kernel.procs.get_mut(&pid) else {
                continue;
            };
            let mut space = SimSpace::new(&mut self.mem, &mut proc.aspace, pid, &mut self.faults);
            if let Err(e) = engine.sync(&mut space) {
                self.diagnostics
                    .push(format!("pid {pid}: syncing probes of {path}: {e}"));
            }
        }
    }

    // ---- running ----

    /// Runs until every process has exited.
    pub fn run(&mut self) -> Result<RunResult, SimError> {
        match self.run_for(u64::MAX)? {
            Progress::Finished => Ok(self.result()),
            Progress::Paused => Err(SimError::BudgetExhausted {
                executed: self.cpu.instret(),
            }),
        }
    }

    /// Runs at most `n` more instructions (within the budget). Returns
    /// [`Progress::Paused`] if they ran out first, so the caller can inspect or change the
    /// machine (e.g. unregister probes) and continue.
    pub fn run_for(&mut self, n: u64) -> Result<Progress, SimError> {
        if self.kernel.procs.is_empty() {
            return Err(SimError::NoProcess);
        }
        let deadline = self
            .cpu
            .instret()
            .saturating_add(n)
            .min(self.config.max_insns);
        loop {
            if !self.schedule()? {
                return Ok(Progress::Finished);
            }
            let left = deadline.saturating_sub(self.cpu.instret());
            if left == 0 {
                if self.cpu.instret() >= self.config.max_insns {
                    return Err(SimError::BudgetExhausted {
                        executed: self.cpu.instret(),
                    });
                }
                return Ok(Progress::Paused);
            }
            let stop = if self.config.count_pcs {
                *self.pc_counts.entry(self.cpu.pc).or_insert(0) += 1;
                self.cpu.run(&mut self.mem, 1)
            } else {
                self.cpu.run(&mut self.mem, left)
            };
            self.clock.store(self.cpu.instret(), Ordering::Relaxed);
            match stop {
                Stop::BudgetExhausted => {}
                Stop::Ecall => self.syscall(),
                Stop::Breakpoint => self.breakpoint(),
                Stop::PageFault { access, addr } => {
                    self.fault(SIGSEGV, &format!("page fault ({access:?}) at {addr:#x}"))
                }
                Stop::Misaligned { access, addr } => self.fault(
                    SIGSEGV,
                    &format!("misaligned atomic ({access:?}) at {addr:#x}"),
                ),
                Stop::Illegal { raw } => {
                    self.fault(SIGILL, &format!("illegal instruction {raw:#x}"))
                }
            }
            for id in self.unregister_queue.take() {
                if let Err(e) = self.unregister(id) {
                    self.diagnostics
                        .push(format!("queued unregister of probe {}: {e}", id.0));
                }
            }
        }
    }

    /// The result so far (complete once [`run_for`](Self::run_for) returned `Finished`).
    /// Takes the trace recorded up to now.
    pub fn result(&mut self) -> RunResult {
        RunResult {
            stdout: self.stdout.clone(),
            status: self.main_status.unwrap_or(ExitStatus::Killed(0)),
            trace: self.trace.take(),
            instructions: self.cpu.instret(),
            probes: self.probe_reports(),
            diagnostics: self.diagnostics.clone(),
        }
    }

    /// Makes sure a process is on the CPU. Returns `false` when none is left.
    fn schedule(&mut self) -> Result<bool, SimError> {
        if self.kernel.current.is_some() {
            return Ok(true);
        }
        let Some(pid) = self.kernel.ready.pop_front() else {
            let blocked = self
                .kernel
                .procs
                .values()
                .any(|p| matches!(p.state, ProcState::Blocked { .. }));
            return if blocked {
                Err(SimError::Deadlock)
            } else {
                Ok(false)
            };
        };
        let Some(proc) = self.kernel.procs.get_mut(&pid) else {
            return Ok(true);
        };
        proc.state = ProcState::Running;
        self.cpu.x = proc.regs.x;
        self.cpu.pc = proc.regs.pc;
        self.cpu.set_page_table(proc.aspace.root);
        self.kernel.current = Some(pid);
        Ok(true)
    }

    /// Takes the current process off the CPU, saving its registers, in state `state`.
    pub(crate) fn deschedule(&mut self, state: ProcState) {
        let Some(pid) = self.kernel.current.take() else {
            return;
        };
        if let Some(proc) = self.kernel.procs.get_mut(&pid) {
            proc.regs = Regs {
                x: self.cpu.x,
                pc: self.cpu.pc,
            };
            proc.state = state;
            if state == ProcState::Ready {
                self.kernel.ready.push_back(pid);
            }
        }
    }

    /// The breakpoint trap: the engine's, or SIGTRAP.
    fn breakpoint(&mut self) {
        self.breakpoint_traps += 1;
        let Some(pid) = self.kernel.current else {
            return;
        };
        let handled = self.with_engine(pid, |call, cpu| match call {
            EngineCall::Own(engine, space) => {
                engine.handle_breakpoint(space, &mut CpuRegs(cpu)) == ruprobes::Trap::Handled
            }
            EngineCall::Seed => seed_trap(cpu, ruprobes::seed::uprobes_trap_handler),
        });
        if handled != Some(true) {
            let pc = self.cpu.pc;
            self.diagnostics
                .push(format!("pid {pid}: breakpoint at {pc:#x} is not a probe's"));
            self.kill(SIGTRAP);
        }
    }

    /// Any other fault: fix up a pc inside an XOL slot, then kill.
    fn fault(&mut self, signal: i32, what: &str) {
        let Some(pid) = self.kernel.current else {
            return;
        };
        let slot_pc = self.cpu.pc;
        let fixed = self.with_engine(pid, |call, cpu| match call {
            EngineCall::Own(engine, space) => engine.fixup_fault(space, &mut CpuRegs(cpu)),
            EngineCall::Seed => seed_trap(cpu, ruprobes::seed::uprobes_fixup_fault),
        });
        let pc = self.cpu.pc;
        let note = if fixed == Some(true) {
            format!(" (faulted in XOL slot {slot_pc:#x})")
        } else {
            String::new()
        };
        self.diagnostics
            .push(format!("pid {pid}: {what}, pc={pc:#x}{note}"));
        self.kill(signal);
    }

    /// Runs `f` with the engine and the user space of process `pid` (in seed mode, with
    /// the `extern "C"` hooks routed to that space), and the CPU. `None` if `pid` is gone.
    fn with_engine<R>(
        &mut self,
        pid: Pid,
        f: impl FnOnce(EngineCall<'_, '_>, &mut Cpu) -> R,
    ) -> Option<R> {
        let proc = self.kernel.procs.get_mut(&pid)?;
        let mut space = SimSpace::new(&mut self.mem, &mut proc.aspace, pid, &mut self.faults);
        let cpu = &mut self.cpu;
        let result = match &self.engine {
            Engine::Own(engine) => f(EngineCall::Own(engine, &mut space), cpu),
            Engine::Seed => {
                seed_ffi::with_current(&mut space, &proc.image.name, || f(EngineCall::Seed, cpu))
            }
        };
        if space.page_table_changed() {
            self.cpu.flush_tlb();
        }
        Some(result)
    }

    /// Tells the engine that `pid` now runs a new image.
    pub(crate) fn exec_hook(&mut self, pid: Pid) {
        let Some(path) = self.kernel.procs.get(&pid).map(|p| p.image.name.clone()) else {
            return;
        };
        let result = self.with_engine(pid, |call, _| match call {
            EngineCall::Own(engine, space) => engine.on_exec(space, &path),
            EngineCall::Seed => {
                ruprobes::seed::uprobes_init();
                Ok(())
            }
        });
        if let Some(Err(e)) = result {
            self.diagnostics
                .push(format!("pid {pid}: arming probes of {path}: {e}"));
        }
    }

    /// Tells the engine that `parent` forked `child`.
    pub(crate) fn fork_hook(&mut self, parent: Pid, child: Pid) {
        match &self.engine {
            Engine::Own(engine) => engine.on_fork(parent, parent, child, child),
            Engine::Seed => ruprobes::seed::uprobes_fork(parent, parent, child, child),
        }
    }

    /// Tells the engine that `pid` is gone.
    pub(crate) fn exit_hook(&mut self, pid: Pid) {
        match &self.engine {
            Engine::Own(engine) => engine.on_exit(pid),
            Engine::Seed => ruprobes::seed::uprobes_exit(pid),
        }
    }

    /// Appends program output, echoing it if configured.
    pub(crate) fn output(&mut self, bytes: &[u8]) {
        self.stdout.extend_from_slice(bytes);
        if self.config.echo_stdout {
            let mut out = std::io::stdout().lock();
            // The host's stdout going away (a closed pipe) must not stop the guest.
            let _ = out.write_all(bytes).and_then(|()| out.flush());
        }
    }
}

/// Calls a seed trap function on a trap frame built from the CPU's registers.
fn seed_trap(cpu: &mut Cpu, f: fn(&mut TrapContext) -> bool) -> bool {
    let mut cx = TrapContext {
        x: cpu.x.map(|v| v as usize),
        sepc: cpu.pc as usize,
        ..TrapContext::default()
    };
    let handled = f(&mut cx);
    cpu.x = cx.x.map(|v| v as u64);
    cpu.x[0] = 0;
    cpu.pc = cx.sepc as u64;
    handled
}

fn location(image: &Image, addr: u64) -> Loc {
    Loc {
        addr,
        symbol: image
            .symbols
            .lookup(addr)
            .map(|(name, off)| (name.clone(), off)),
    }
}

fn bad_spec(spec: &str, e: ruprobes_trace::SpecError) -> SimError {
    SimError::BadSpec {
        spec: spec.to_string(),
        why: e.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

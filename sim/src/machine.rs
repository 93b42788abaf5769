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

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ruprobes::{TrapContext, Uprobes, UserRegs};
use ruprobes_trace::{SIGILL, SIGSEGV, SIGTRAP};
use serde::Serialize;

use crate::cpu::Access as CpuAccess;
use crate::cpu::{Cpu, Stop};
use crate::error::SimError;
use crate::kernel::aspace::{Access, AddressSpace, STACK_TOP};
use crate::kernel::files::{FdTable, RootView};
use crate::kernel::image::Image;
use crate::kernel::signals::{SignalActions, SIGKILL};
use crate::kernel::startup::{self, StartInfo};
use crate::kernel::{
    initial_regs, ExitStatus, Kernel, Personality, Pid, Regs, ThreadState, Tid, QUANTUM,
};
use crate::mem::{PhysMem, PAGE_SIZE};
use crate::seed_ffi;
use crate::space::{FaultInjection, SimSpace};
use crate::trace::{TraceEvent, TraceSink};

use crate::probes::{FetchQueue, ProbeRecord};
pub use crate::probes::{
    Histogram, ProbeId, ProbeReport, ProbeRole, Scale, Stats, TraceOptions, UnregisterQueue,
};

/// Where this repository's committed fixture programs live (for tests and the demo; `exec`
/// does not look there unless told to with [`Machine::set_image_dir`]).
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
    /// The system-call interface (automatic: from the first program's ELF).
    pub personality: Personality,
    /// Keep the programs' output for [`RunResult::stdout`] (off for long streaming runs,
    /// whose memory must not grow with their output).
    pub keep_output: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mem_bytes: 256 << 20,
            max_insns: 2_000_000_000,
            echo_stdout: false,
            count_pcs: false,
            seed: false,
            personality: Personality::Auto,
            keep_output: true,
        }
    }
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
/// (Boxed: the engine keeps its trap counters on cache lines of their own, 320 bytes.)
pub(crate) enum Engine {
    Own(Box<Uprobes>),
    Seed,
}

/// How a trap reaches the engine.
enum EngineCall<'a> {
    /// This machine's engine, with the process's user space.
    Own(&'a Uprobes, &'a mut dyn ruprobes::UserSpace),
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
    pub(crate) engine: Engine,
    pub(crate) faults: FaultInjection,
    pub(crate) trace: TraceSink,
    pub(crate) images: HashMap<String, Arc<Image>>,
    /// Searched for apps by name (`NAME`, `NAME.elf`), before the root view's top.
    pub(crate) image_dirs: Vec<PathBuf>,
    /// The files the guest sees (`--root`).
    pub(crate) root: RootView,
    /// The guest's fd 0 (none: always at its end).
    pub(crate) stdin: Option<Box<dyn Read + Send>>,
    /// The first program's arguments and environment (Linux personality).
    start: StartInfo,
    /// The personality in force (chosen at [`Machine::load`]).
    pub(crate) personality: Personality,
    /// State of the deterministic random stream (`getrandom`).
    pub(crate) rng: u64,
    /// Call numbers already reported as unknown.
    pub(crate) unknown_calls: BTreeSet<u64>,
    /// Why process 1 was killed (signal, pc, symbol), for `run` to print.
    pub(crate) kill_note: Option<String>,
    /// The instruction count when the running thread got the CPU.
    slice_start: u64,
    pub(crate) main_image: Option<Arc<Image>>,
    pub(crate) probes: Vec<ProbeRecord>,
    pub(crate) trace_options: TraceOptions,
    pub(crate) unregister_queue: UnregisterQueue,
    /// The CPU's instruction count at the last trap, for handlers that measure time.
    pub(crate) clock: Arc<AtomicU64>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) diagnostics: Vec<String>,
    pub(crate) main_status: Option<ExitStatus>,
    pub(crate) last_exit_regs: Option<Regs>,
    pub(crate) pc_counts: HashMap<u64, u64>,
    /// Probe handlers read user memory through [`seed_ffi::read_current`] (eBPF).
    pub(crate) handlers_read_user: bool,
    /// What the probe machinery cost so far (`host_ns` aside: see `trap_timer`).
    pub(crate) cost: ProbeCost,
    pub(crate) trap_timer: TrapTimer,
    /// Values of memory that probe handlers asked for, read after their trap.
    pub(crate) fetches: FetchQueue,
}

/// What the probe machinery itself cost a run, apart from the program's instructions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProbeCost {
    /// Breakpoint traps taken (ours and not ours).
    pub traps: u64,
    /// Probed instructions the engine executed in the trap (counted in the program's clock).
    pub executed_in_trap: u64,
    /// Host nanoseconds spent handling breakpoint traps (handlers included), estimated
    /// from a sample of the traps ([`TrapTimer`]).
    pub host_ns: u64,
}

/// Host time of breakpoint traps, from a sample: every trap of the first
/// [`TrapTimer::ALL_TIMED`], then one trap in [`TrapTimer::SAMPLE`] chosen at random (so a
/// loop cannot line up with it), scaled to all traps. Reading the clock twice per trap
/// costs about as much as a cheap trap itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrapTimer {
    timed_traps: u64,
    timed_ns: u64,
    /// xorshift64 state.
    random: u64,
}

impl Default for TrapTimer {
    fn default() -> Self {
        TrapTimer {
            timed_traps: 0,
            timed_ns: 0,
            random: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

impl TrapTimer {
    /// Traps that are all timed.
    const ALL_TIMED: u64 = 1024;
    /// One in this many of the later traps is timed (a power of two).
    const SAMPLE: u64 = 16;

    /// Whether to time the trap that follows `traps` earlier ones.
    fn times(&mut self, traps: u64) -> bool {
        if traps < Self::ALL_TIMED {
            return true;
        }
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        x % Self::SAMPLE == 0
    }

    fn record(&mut self, ns: u64) {
        self.timed_traps += 1;
        self.timed_ns += ns;
    }

    /// The estimated host time of `traps` traps.
    fn estimate(&self, traps: u64) -> u64 {
        match self.timed_traps {
            0 => 0,
            n => (u128::from(self.timed_ns) * u128::from(traps) / u128::from(n)) as u64,
        }
    }
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
                Engine::Own(Box::new(Uprobes::new()))
            },
            faults: FaultInjection::none(),
            trace: TraceSink::default(),
            images: HashMap::new(),
            image_dirs: Vec::new(),
            root: RootView::default(),
            stdin: None,
            start: StartInfo::default(),
            personality: config.personality,
            rng: 0x5eed_5eed_5eed_5eed,
            unknown_calls: BTreeSet::new(),
            kill_note: None,
            slice_start: 0,
            main_image: None,
            probes: Vec::new(),
            trace_options: TraceOptions::default(),
            unregister_queue: UnregisterQueue::default(),
            clock: Arc::new(AtomicU64::new(0)),
            stdout: Vec::new(),
            diagnostics: Vec::new(),
            main_status: None,
            last_exit_regs: None,
            pc_counts: HashMap::new(),
            handlers_read_user: false,
            cost: ProbeCost::default(),
            trap_timer: TrapTimer::default(),
            fetches: FetchQueue::default(),
            config,
        }
    }

    /// Adds a named program image that `exec` can start.
    pub fn add_image(&mut self, name: &str, elf: &[u8]) -> Result<Arc<Image>, SimError> {
        let image = Image::parse(name, elf)?;
        self.images.insert(name.to_string(), image.clone());
        Ok(image)
    }

    /// Makes `exec` look for apps (`NAME`, `NAME.elf`) in `dir` (after directories added
    /// before; the CLI adds the first program's own directory).
    pub fn set_image_dir(&mut self, dir: &Path) {
        self.image_dirs.push(dir.to_path_buf());
    }

    /// Makes `dir` the guest's `/` (read-only; see [`crate::kernel::files`]); `exec` also
    /// finds apps by name at its top.
    pub fn set_root(&mut self, dir: &Path) {
        self.root = RootView::new(Some(dir.to_path_buf()));
    }

    /// The first program's `argv` (`argv[0]` included) and environment (`KEY=VALUE`), for
    /// the Linux initial stack. Call before [`Machine::load`].
    pub fn set_args(&mut self, argv: Vec<String>, env: Vec<String>) {
        self.start.argv = argv.into_iter().map(String::into_bytes).collect();
        self.start.envp = env.into_iter().map(String::into_bytes).collect();
    }

    /// What the guest reads from fd 0 (without this, it is at its end).
    pub fn set_stdin(&mut self, input: impl Read + Send + 'static) {
        self.stdin = Some(Box::new(input));
    }

    /// The personality in force (resolved from the ELF once a program is loaded).
    pub fn personality(&self) -> Personality {
        self.personality
    }

    /// Why process 1 was killed, when it was: `killed by SIGSEGV at pc=0x... (sym+0x..)`.
    pub fn kill_note(&self) -> Option<&str> {
        self.kill_note.as_deref()
    }

    /// The image called `name`: added ones first, then the app `NAME` or `NAME.elf` in
    /// the image directories and at the top of the root view.
    pub fn image(&mut self, name: &str) -> Result<Arc<Image>, SimError> {
        if let Some(image) = self.images.get(name) {
            return Ok(image.clone());
        }
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !plain || name.starts_with('.') {
            return Err(SimError::UnknownImage(name.to_string()));
        }
        let bytes = self
            .find_app(name)
            .ok_or_else(|| SimError::UnknownImage(name.to_string()))?;
        let key = name.strip_suffix(".elf").unwrap_or(name);
        self.add_image(key, &bytes)
    }

    /// Loads `elf` as the program `name` (its exec path and probe key) into process 1.
    pub fn load(&mut self, name: &str, elf: &[u8]) -> Result<Pid, SimError> {
        if !self.kernel.procs.is_empty() {
            return Err(SimError::Unavailable("a program is already loaded"));
        }
        let image = self.add_image(name, elf)?;
        self.personality = self.config.personality.resolve(&image);
        let linux = self.personality == Personality::Linux;
        let mut aspace = AddressSpace::with_image(&mut self.mem, &image, linux)?;
        let sp = if linux {
            let mut info = self.start.clone();
            if info.argv.is_empty() {
                info.argv.push(name.as_bytes().to_vec());
            }
            info.random = startup::random_bytes(1);
            match startup::build(&mut self.mem, &mut aspace, &image, &info) {
                Ok(sp) => sp,
                Err(e) => {
                    aspace.free(&mut self.mem);
                    return Err(e);
                }
            }
        } else {
            STACK_TOP
        };
        let pid = self.kernel.spawn(
            None,
            image.clone(),
            aspace,
            FdTable::default(),
            SignalActions::default(),
            initial_regs(image.entry, sp),
        );
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

    /// Instructions the programs executed so far: the machine's one clock. Every
    /// instruction counts once however it ran (on the CPU, in an out-of-line slot, or
    /// simulated or emulated by the engine in the trap); breakpoints, the return trampoline
    /// and slot breakpoints count zero. `instret`, `cycle`, `time` and `get_time` read it, so
    /// probes do not change what a program sees of time.
    pub fn instructions(&self) -> u64 {
        self.cpu.instret()
    }

    /// Kernel messages so far (unknown syscalls, faults with their pc).
    pub fn diagnostics(&self) -> &[String] {
        &self.diagnostics
    }

    /// How the first process ended, once it has.
    pub fn status(&self) -> Option<ExitStatus> {
        self.main_status
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
        self.cost.traps
    }

    /// What the probe machinery cost so far (traps, host time).
    pub fn probe_cost(&self) -> ProbeCost {
        ProbeCost {
            host_ns: self.trap_timer.estimate(self.cost.traps),
            ..self.cost
        }
    }

    /// The trace sink: collecting by default; make it stream with
    /// [`TraceSink::stream_to`] before the run.
    pub fn trace_sink(&self) -> &TraceSink {
        &self.trace
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
        let preemptive = self.personality == Personality::Linux;
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
            // With another thread ready, the running one gets what is left of its quantum.
            let slice = if preemptive && !self.kernel.ready.is_empty() {
                let used = self.cpu.instret() - self.slice_start;
                QUANTUM.saturating_sub(used).max(1)
            } else {
                u64::MAX
            };
            let stop = if self.config.count_pcs {
                *self.pc_counts.entry(self.cpu.pc).or_insert(0) += 1;
                self.cpu.run(&mut self.mem, 1)
            } else if self.cpu.at_known_breakpoint(&self.mem) {
                self.cpu.breakpoint_stop()
            } else {
                self.cpu.run(&mut self.mem, left.min(slice))
            };
            self.clock.store(self.cpu.instret(), Ordering::Relaxed);
            match stop {
                Stop::BudgetExhausted => {}
                Stop::Ecall => self.syscall(),
                Stop::Breakpoint => self.breakpoint(),
                Stop::PageFault { access, addr } => self.page_fault(access, addr),
                Stop::Misaligned { access, addr } => self.fault(
                    SIGSEGV,
                    &format!("misaligned atomic ({access:?}) at {addr:#x}"),
                ),
                Stop::Illegal { raw } => {
                    self.fault(SIGILL, &format!("illegal instruction {raw:#x}"))
                }
            }
            if preemptive {
                self.wake_expired(false);
                let used = self.cpu.instret() - self.slice_start;
                if used >= QUANTUM && !self.kernel.ready.is_empty() {
                    self.deschedule(ThreadState::Ready);
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

    /// The instruction clock that time system calls read (through [`Machine::now_ns`]).
    pub(crate) fn instruction_clock(&self) -> u64 {
        self.cpu.instret()
    }

    /// Makes sure a thread is on the CPU. Returns `false` when none is left.
    fn schedule(&mut self) -> Result<bool, SimError> {
        if self.kernel.current.is_some() {
            return Ok(true);
        }
        let tid = loop {
            if let Some(tid) = self.kernel.ready.pop_front() {
                break tid;
            }
            // Nothing ready: let time pass to the earliest sleeper, if any.
            if self.wake_expired(true) {
                continue;
            }
            return if self.kernel.threads.is_empty() {
                Ok(false)
            } else {
                Err(SimError::Deadlock)
            };
        };
        let Some(thread) = self.kernel.threads.get_mut(&tid) else {
            return Ok(true);
        };
        thread.state = ThreadState::Running;
        let regs = thread.regs;
        let Some(root) = self.kernel.procs.get(&thread.pid).map(|p| p.aspace.root) else {
            return Ok(true);
        };
        regs.load_into(&mut self.cpu);
        if self.cpu.page_table() != root {
            self.cpu.set_page_table(root);
        }
        self.kernel.current = Some(tid);
        self.slice_start = self.cpu.instret();
        Ok(true)
    }

    /// Takes the current thread off the CPU, saving its registers, in state `state`.
    pub(crate) fn deschedule(&mut self, state: ThreadState) {
        let Some(tid) = self.kernel.current.take() else {
            return;
        };
        let regs = self.cpu_regs();
        if let Some(thread) = self.kernel.threads.get_mut(&tid) {
            thread.regs = regs;
            thread.state = state;
            if state == ThreadState::Ready {
                self.kernel.ready.push_back(tid);
            }
        }
    }

    /// A page fault: a page of an area is mapped on demand (and the instruction runs
    /// again); anything else is SIGSEGV.
    fn page_fault(&mut self, access: CpuAccess, addr: u64) {
        let Some(pid) = self.kernel.current_pid() else {
            return;
        };
        let mem = &mut self.mem;
        let demand = self.kernel.procs.get_mut(&pid).map(|p| {
            p.aspace.demand_page(
                mem,
                addr,
                access == CpuAccess::Store,
                access == CpuAccess::Fetch,
            )
        });
        match demand {
            Some(Ok(true)) => self.cpu.flush_tlb(),
            Some(Err(_)) => {
                self.diagnostics.push(format!(
                    "pid {pid}: out of memory mapping {addr:#x} on demand: killed"
                ));
                self.kill(SIGKILL);
            }
            _ => self.fault(SIGSEGV, &format!("page fault ({access:?}) at {addr:#x}")),
        }
    }

    /// The breakpoint trap: the engine's, or SIGTRAP. Instructions the engine executes in
    /// the trap join the CPU's count (see [`Machine::instructions`]).
    fn breakpoint(&mut self) {
        let started = self.trap_timer.times(self.cost.traps).then(Instant::now);
        let executed = self.executed_in_trap();
        self.handle_breakpoint();
        let executed = self.executed_in_trap().wrapping_sub(executed);
        self.cpu.set_instret(self.cpu.instret() + executed);
        if !self.fetches.is_empty() {
            self.complete_fetches();
        }
        self.cost.traps += 1;
        self.cost.executed_in_trap += executed;
        if let Some(started) = started {
            self.trap_timer.record(started.elapsed().as_nanos() as u64);
        }
    }

    fn executed_in_trap(&self) -> u64 {
        match &self.engine {
            Engine::Own(engine) => engine.executed_in_trap(),
            Engine::Seed => ruprobes::seed::engine().executed_in_trap(),
        }
    }

    fn handle_breakpoint(&mut self) {
        let Some(tid) = self.kernel.current else {
            return;
        };
        let handled = self.with_engine(tid, |call, cpu| match call {
            EngineCall::Own(engine, space) => {
                engine.handle_breakpoint(space, &mut CpuRegs(cpu)) == ruprobes::Trap::Handled
            }
            EngineCall::Seed => seed_trap(cpu, ruprobes::seed::uprobes_trap_handler),
        });
        if handled != Some(true) {
            let pc = self.cpu.pc;
            let pid = self.kernel.current_pid().unwrap_or(tid);
            self.diagnostics
                .push(format!("pid {pid}: breakpoint at {pc:#x} is not a probe's"));
            self.kill(SIGTRAP);
        }
    }

    /// Any other fault: fix up a pc inside an XOL slot, then kill.
    fn fault(&mut self, signal: i32, what: &str) {
        let Some(tid) = self.kernel.current else {
            return;
        };
        let slot_pc = self.cpu.pc;
        let fixed = self.with_engine(tid, |call, cpu| match call {
            EngineCall::Own(engine, space) => engine.fixup_fault(space, &mut CpuRegs(cpu)),
            EngineCall::Seed => seed_trap(cpu, ruprobes::seed::uprobes_fixup_fault),
        });
        let pc = self.cpu.pc;
        let note = if fixed == Some(true) {
            format!(" (faulted in XOL slot {slot_pc:#x})")
        } else {
            String::new()
        };
        let pid = self.kernel.current_pid().unwrap_or(tid);
        self.diagnostics
            .push(format!("pid {pid}: {what}, pc={pc:#x}{note}"));
        self.kill(signal);
    }

    /// Runs `f` with the engine and the user space of thread `tid` (in seed mode, with
    /// the `extern "C"` hooks routed to that space), and the CPU. `None` if `tid` is gone.
    fn with_engine<R>(
        &mut self,
        tid: Tid,
        f: impl FnOnce(EngineCall<'_>, &mut Cpu) -> R,
    ) -> Option<R> {
        let pid = self.kernel.threads.get(&tid)?.pid;
        let proc = self.kernel.procs.get_mut(&pid)?;
        let mut space =
            SimSpace::new(&mut self.mem, &mut proc.aspace, pid, &mut self.faults).with_tid(tid);
        let cpu = &mut self.cpu;
        let result = match &self.engine {
            // Handlers that read user memory (eBPF helpers) reach the space through the
            // hooks while the engine holds it.
            Engine::Own(engine) if self.handlers_read_user => {
                let name = &proc.image.name;
                seed_ffi::with_current(&mut space, name, || {
                    f(EngineCall::Own(engine, &mut seed_ffi::CurrentSpace), cpu)
                })
            }
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
        let tid = self
            .kernel
            .current
            .filter(|t| self.kernel.threads.get(t).is_some_and(|t| t.pid == pid))
            .unwrap_or(pid);
        let result = self.with_engine(tid, |call, _| match call {
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

    /// Tells the engine that thread `parent_tid` of `parent` forked `child` (whose first
    /// thread is `child_tid`).
    pub(crate) fn fork_hook(&mut self, parent: Pid, parent_tid: Tid, child: Pid, child_tid: Tid) {
        match &self.engine {
            Engine::Own(engine) => engine.on_fork(parent, parent_tid, child, child_tid),
            Engine::Seed => ruprobes::seed::uprobes_fork(parent, parent_tid, child, child_tid),
        }
    }

    /// Tells the engine that `pid` is gone.
    pub(crate) fn exit_hook(&mut self, pid: Pid) {
        match &self.engine {
            Engine::Own(engine) => engine.on_exit(pid),
            Engine::Seed => ruprobes::seed::uprobes_exit(pid),
        }
    }

    /// Tells the engine that thread `tid` of `pid` is gone (the process lives on).
    pub(crate) fn thread_exit_hook(&mut self, pid: Pid, tid: Tid) {
        match &self.engine {
            Engine::Own(engine) => engine.on_thread_exit(pid, tid),
            Engine::Seed => {}
        }
    }

    /// Appends program output, echoing it if configured (through a streaming trace sink
    /// that shares stdout, to keep output and events in order).
    pub(crate) fn output(&mut self, bytes: &[u8]) {
        if self.config.keep_output {
            self.stdout.extend_from_slice(bytes);
        }
        if self.trace.output(bytes) {
            return;
        }
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

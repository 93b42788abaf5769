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
use std::sync::Arc;

use ruprobes::{TrapContext, Uprobes, UserRegs};
use ruprobes_trace::{SIGILL, SIGSEGV, SIGTRAP};
use serde::Serialize;

use crate::cpu::{Cpu, Stop};
use crate::error::SimError;
use crate::kernel::aspace::{Access, AddressSpace};
use crate::kernel::image::Image;
use crate::kernel::{initial_regs, ExitStatus, Kernel, Pid, ProcState, Regs};
use crate::mem::{PhysMem, PAGE_SIZE};
use crate::seed_ffi;
use crate::space::{FaultInjection, SimSpace};
use crate::trace::{TraceEvent, TraceSink};

use crate::probes::ProbeRecord;
pub use crate::probes::{Histogram, ProbeId, ProbeReport, ProbeRole, Stats, UnregisterQueue};

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
pub(crate) enum Engine {
    Own(Uprobes),
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
    /// Searched for `NAME.elf` before [`FIXTURES_DIR`].
    image_dir: Option<std::path::PathBuf>,
    pub(crate) main_image: Option<Arc<Image>>,
    pub(crate) probes: Vec<ProbeRecord>,
    pub(crate) unregister_queue: UnregisterQueue,
    /// The CPU's instruction count at the last trap, for handlers that measure time.
    pub(crate) clock: Arc<AtomicU64>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) diagnostics: Vec<String>,
    pub(crate) main_status: Option<ExitStatus>,
    pub(crate) last_exit_regs: Option<Regs>,
    pub(crate) pc_counts: HashMap<u64, u64>,
    /// Breakpoint traps taken so far (ours and not ours), for the performance report.
    pub(crate) breakpoint_traps: u64,
    /// Probe handlers read user memory through [`seed_ffi::read_current`] (eBPF).
    pub(crate) handlers_read_user: bool,
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
            handlers_read_user: false,
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
        proc.regs.load_into(&mut self.cpu);
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
            proc.regs = Regs::of(&self.cpu);
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
        f: impl FnOnce(EngineCall<'_>, &mut Cpu) -> R,
    ) -> Option<R> {
        let proc = self.kernel.procs.get_mut(&pid)?;
        let mut space = SimSpace::new(&mut self.mem, &mut proc.aspace, pid, &mut self.faults);
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

//! eBPF programs as probe handlers (`ruprobes-sim trace PROG --bpf prog.o`): every program of
//! a clang-built object is attached where its section says (`uprobe/SYM`, `uprobe/SYM+OFF`,
//! `uretprobe/SYM` or a seed tracepoint name) and runs with the `UProbeBPFContext` of each
//! hit. `bpf_trace_printk` lines go into the trace; [`BpfObject::summary`] renders the maps
//! and the per-program counters printed at exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ruprobes::bpf::{TracepointType, UProbeBPFContext};
use ruprobes::{Consumer, UserRegs};
use ruprobes_ebpf::{Env, Object, Runtime};

use crate::error::SimError;
use crate::machine::{Machine, ProbeId};
use crate::seed_ffi;
use crate::trace::{TraceEvent, TraceSink};

/// An object attached to a machine.
#[derive(Clone)]
pub struct BpfObject {
    /// The path the user gave.
    pub shown: String,
    runtime: Arc<Mutex<Runtime>>,
    /// The probes its programs are attached with, in program order.
    pub probes: Vec<ProbeId>,
}

impl BpfObject {
    /// The maps and the programs' run and error counts, as every kernel prints them.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = lock(&self.runtime).write_summary(&mut out);
        out
    }

    /// Runs with the runtime (its maps, its counters).
    pub fn with_runtime<R>(&self, f: impl FnOnce(&Runtime) -> R) -> R {
        f(&lock(&self.runtime))
    }
}

/// What a program reaches of the machine while it runs.
struct SimEnv<'a> {
    pid: usize,
    tid: usize,
    now: u64,
    trace: &'a TraceSink,
}

impl Env for SimEnv<'_> {
    fn read_user(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        seed_ffi::read_current(addr as usize, buf)
    }
    fn pid_tgid(&self) -> u64 {
        ((self.pid as u64) << 32) | (self.tid as u64 & 0xffff_ffff)
    }
    fn now_ns(&self) -> u64 {
        // The instruction clock: one instruction is one nanosecond.
        self.now
    }
    fn print(&mut self, line: &str) {
        self.trace.push(TraceEvent::Print {
            pid: self.pid as u64,
            text: Arc::from(line),
        });
    }
}

/// Runs program `index` for one hit.
fn run(
    runtime: &Mutex<Runtime>,
    index: usize,
    ctx: &UProbeBPFContext,
    (pid, tid): (usize, usize),
    clock: &AtomicU64,
    trace: &TraceSink,
) {
    let mut env = SimEnv {
        pid,
        tid,
        now: clock.load(Ordering::Relaxed),
        trace,
    };
    // An error stops only the program; the runtime counts it for the summary.
    let _ = lock(runtime).run(index, ctx, &mut env);
}

impl Machine {
    /// Loads a BPF object and attaches each of its programs to the main program; `shown`
    /// names the file in errors. Nothing is registered if any program cannot be attached.
    pub fn attach_bpf(&mut self, bytes: &[u8], shown: &str) -> Result<BpfObject, SimError> {
        let bad = |why: String| SimError::BadBpf {
            path: shown.to_string(),
            why,
        };
        let object = Object::load(bytes).map_err(|e| bad(e.to_string()))?;
        let image = self.main_image().cloned().ok_or(SimError::NoProcess)?;
        // Resolve everything before registering anything.
        let mut targets = Vec::new();
        for program in &object.programs {
            let base = image
                .symbols
                .resolve(&program.attach.symbol)
                .ok_or_else(|| {
                    bad(format!(
                        "program {} ({}): no symbol '{}' in {}",
                        program.name, program.section, program.attach.symbol, image.name
                    ))
                })?;
            targets.push(base.wrapping_add(program.attach.offset));
        }
        let programs: Vec<(TracepointType, String)> = object
            .programs
            .iter()
            .map(|p| (p.attach.kind, format!("bpf:{}", p.name)))
            .collect();
        let runtime = Arc::new(Mutex::new(Runtime::new(object)));
        let mut attached = BpfObject {
            shown: shown.to_string(),
            runtime: runtime.clone(),
            probes: Vec::new(),
        };
        self.handlers_read_user = true;
        for (index, ((kind, label), addr)) in programs.into_iter().zip(targets).enumerate() {
            let consumer = self.bpf_consumer(&runtime, index, kind);
            match self.register_labeled(&label, addr, consumer) {
                Ok(id) => attached.probes.push(id),
                Err(e) => {
                    for id in attached.probes {
                        let _ = self.unregister(id);
                    }
                    return Err(bad(format!("attaching at {addr:#x}: {e}")));
                }
            }
        }
        Ok(attached)
    }

    /// The consumer running program `index` of `runtime` as a `kind` handler.
    fn bpf_consumer(
        &self,
        runtime: &Arc<Mutex<Runtime>>,
        index: usize,
        kind: TracepointType,
    ) -> Consumer {
        let (runtime, clock, trace) = (runtime.clone(), self.clock(), self.trace.clone());
        let ptype = kind.ptype();
        let context =
            move |regs: &dyn UserRegs, addr: usize| UProbeBPFContext::from_regs(regs, addr, ptype);
        match kind {
            TracepointType::URetProbeExitSyncFunc => Consumer::new().on_return(move |regs, ret| {
                let ctx = context(&*regs, ret.func);
                run(&runtime, index, &ctx, (ret.pid, ret.tid), &clock, &trace);
            }),
            TracepointType::URetProbeExitInsn => Consumer::new().on_post(move |regs, hit| {
                let ctx = context(&*regs, hit.addr);
                run(&runtime, index, &ctx, (hit.pid, hit.tid), &clock, &trace);
            }),
            _ => Consumer::new().on_entry(move |regs, hit| {
                let ctx = context(&*regs, hit.addr);
                run(&runtime, index, &ctx, (hit.pid, hit.tid), &clock, &trace);
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

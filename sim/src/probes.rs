//! The probes of a machine: specs resolved against the program's symbols, consumers that
//! trace per the shared trace semantics, counters, latency histograms, and unregistering
//! (also in the middle of a run).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use ruprobes::{abi, Consumer, ConsumerId};
use ruprobes_trace::{ProbeKind, ProbeSpec, Target};
use serde::Serialize;

use crate::error::SimError;
use crate::kernel::{Pid, ProcState};
use crate::machine::{Engine, Machine};
use crate::space::SimSpace;
use crate::trace::TraceEvent;

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

    pub(crate) fn take(&self) -> Vec<ProbeId> {
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

pub(crate) struct ProbeRecord {
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

impl Machine {
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
        // A breakpoint over the second half of an instruction would corrupt it; the engine
        // cannot tell instruction boundaries, the symbol table can. (An odd address is the
        // engine's `Misaligned`.)
        if let Some(start) = image.inside_instruction(addr).filter(|_| addr % 2 == 0) {
            return Err(SimError::InsideInstruction {
                spec: spec.to_string(),
                addr,
                insn: image.location(start).to_string(),
            });
        }
        let loc = image.location(addr);
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

    /// Adds a caller-made consumer at `addr` of the main program, reported under `label`
    /// (e.g. `bpf:PROGRAM`) instead of its address.
    pub fn register_labeled(
        &mut self,
        label: &str,
        addr: u64,
        consumer: Consumer,
    ) -> Result<ProbeId, SimError> {
        let path = self
            .main_image
            .as_ref()
            .ok_or(SimError::NoProcess)?
            .name
            .clone();
        self.register_consumer(label, &path, addr, consumer, ProbeRole::Custom, None)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_log2() {
        let mut h = Histogram::default();
        for v in [0, 1, 2, 3, 4, 7, 8, 1000] {
            h.add(v);
        }
        assert_eq!(h.buckets, [1, 1, 2, 2, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(Histogram::range(0), (0, 1));
        assert_eq!(Histogram::range(3), (4, 8));
        assert_eq!(Histogram::range(10), (512, 1024));
        assert_eq!(Histogram::range(64), (1 << 63, u64::MAX));
        assert_eq!(h.count(), 8);
    }

    #[test]
    fn latency_matches_returns_by_stack_depth() {
        let mut l = Latency::default();
        // Nested calls: outer at sp 1000, inner at sp 900.
        l.enter(1, 1000, 10);
        l.enter(1, 900, 20);
        l.exit(1, 900, 25);
        l.exit(1, 1000, 40);
        assert_eq!(l.histogram.count(), 2);
        // A longjmp skips the inner return: the outer return drops the inner call.
        l.enter(1, 1000, 100);
        l.enter(1, 900, 110);
        l.enter(1, 800, 120);
        l.exit(1, 1000, 164);
        assert_eq!(l.histogram.count(), 3);
        assert_eq!(
            l.histogram.buckets[7], 1,
            "64 instructions: bucket [64, 128)"
        );
        assert!(l.stacks[&1].is_empty());
        // A return on another thread, or with no matching call, counts nothing.
        l.exit(2, 1000, 200);
        l.enter(1, 700, 300);
        l.exit(1, 750, 310);
        assert_eq!(l.histogram.count(), 3);
    }
}

//! Attaching probes to a machine: specs resolved against a program's symbols into sites,
//! registering and unregistering (also in the middle of a run), the sites a spec would
//! probe and what each costs ([`Machine::sites`]), and the memory reads of fetch arguments.

use ruprobes::decode::{self, Class};
use ruprobes::Consumer;
use ruprobes_trace::{FetchType, ProbeSpec, Target};
use serde::Serialize;
use std::sync::Arc;

use crate::error::SimError;
use crate::kernel::image::Image;
use crate::kernel::{Pid, ProcState};
use crate::machine::{Engine, Machine};
use crate::probes::{
    finish, Fetch, ProbeId, ProbeRecord, ProbeReport, ProbeRole, Stats, TraceOptions, Tracer,
};
use crate::space::SimSpace;
use crate::symbols::NotFunction;
use crate::trace::Value;

/// The longest string a `:string` fetch reads.
const MAX_STRING: usize = 256;

/// What the core would do with a probe at one site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteClass {
    /// Executed by the core in the trap (pc-relative: branches, jumps, auipc): one trap.
    Simulated,
    /// Executed by the core in the trap (register-only integer ops): one trap.
    Emulated,
    /// Stepped out of line in an XOL slot: two traps.
    OutOfLine,
    /// The core refuses it, for this reason.
    Refused(String),
}

impl SiteClass {
    /// Breakpoint traps per hit of an entry probe here (`None`: refused).
    pub fn traps(&self) -> Option<u64> {
        match self {
            SiteClass::Simulated | SiteClass::Emulated => Some(1),
            SiteClass::OutOfLine => Some(2),
            SiteClass::Refused(_) => None,
        }
    }
}

/// One site a spec names.
#[derive(Clone, Debug, Serialize)]
pub struct Site {
    /// The address.
    pub addr: u64,
    /// The address as traces print it.
    pub location: String,
    /// The instruction's bytes, as a hex word (`-` when unreadable).
    pub insn: String,
    /// What the core does with a probe here.
    pub class: SiteClass,
}

/// A spec resolved against its program.
struct Resolved<'s> {
    spec: ProbeSpec<'s>,
    image: Arc<Image>,
    addrs: Vec<u64>,
    /// Several sites: refused instructions are skipped, not errors.
    wildcard: bool,
}

fn bad_spec(spec: &str, e: ruprobes_trace::SpecError) -> SimError {
    SimError::BadSpec {
        spec: spec.to_string(),
        why: e.to_string(),
    }
}

/// The instruction starts of `[lo, hi)` (stopping at the first unreadable parcel).
fn instructions(image: &Image, lo: u64, hi: u64) -> Vec<u64> {
    let mut sites = Vec::new();
    let mut pc = lo;
    while pc < hi {
        let Some(parcel) = image.initial_bytes(pc, 2) else {
            break;
        };
        sites.push(pc);
        let len = decode::insn_len(u16::from_le_bytes([parcel[0], parcel[1]])).unwrap_or(2);
        pc += len as u64;
    }
    sites
}

/// The class of the instruction at `addr` of `image`, decoded from its initial bytes.
fn classify(image: &Image, addr: u64) -> (String, SiteClass) {
    let Some(parcel) = image.initial_bytes(addr, 2) else {
        return ("-".into(), SiteClass::Refused("not in the program".into()));
    };
    let len = decode::insn_len(u16::from_le_bytes([parcel[0], parcel[1]])).unwrap_or(2);
    let Some(bytes) = image.initial_bytes(addr, len) else {
        return ("-".into(), SiteClass::Refused("truncated".into()));
    };
    let word = bytes
        .iter()
        .rev()
        .fold(0u32, |w, &b| (w << 8) | u32::from(b));
    let shown = if len == 2 {
        format!("{word:04x}")
    } else {
        format!("{word:08x}")
    };
    let class = match decode::decode(&bytes) {
        Ok(insn) => match insn.class() {
            Class::Simulate => SiteClass::Simulated,
            Class::Emulate => SiteClass::Emulated,
            Class::Xol => SiteClass::OutOfLine,
        },
        Err(why) => SiteClass::Refused(why.to_string()),
    };
    (shown, class)
}

impl Machine {
    /// Sets how the probes added from now on trace (post lines, filters, histograms).
    pub fn set_trace_options(&mut self, options: TraceOptions) {
        self.trace_options = options;
    }

    fn tracer(&self) -> Tracer {
        Tracer {
            sink: self.trace.clone(),
            clock: self.clock.clone(),
            fetches: self.fetches.clone(),
            options: self.trace_options,
        }
    }

    /// The image a spec's program component names (`None`: the main program).
    fn spec_image(&mut self, spec: &str, prog: Option<&str>) -> Result<Arc<Image>, SimError> {
        let main = self.main_image.clone().ok_or(SimError::NoProcess)?;
        match prog {
            None => Ok(main),
            Some(name) if name == main.name => Ok(main),
            Some(name) => self.image(name).map_err(|_| SimError::UnknownProgram {
                spec: spec.to_string(),
                prog: name.to_string(),
            }),
        }
    }

    fn resolve<'s>(&mut self, spec: &'s str) -> Result<Resolved<'s>, SimError> {
        let parsed = ProbeSpec::parse(spec).map_err(|e| bad_spec(spec, e))?;
        let image = self.spec_image(spec, parsed.prog)?;
        let symbols = &image.symbols;
        let needs_symbols = matches!(parsed.target, Target::Symbol(..) | Target::EveryInsn(_));
        if needs_symbols && symbols.is_empty() {
            return Err(SimError::Stripped {
                spec: spec.to_string(),
            });
        }
        let unknown = |symbol: &str| SimError::UnknownSymbol {
            spec: spec.to_string(),
            symbol: symbol.to_string(),
        };
        // Functions by name or `prefix*`, each address once.
        let functions = |name: &str| -> Result<Vec<(u64, u64)>, SimError> {
            let mut found: Vec<(u64, u64)> = match name.strip_suffix('*') {
                Some(prefix) => symbols
                    .with_prefix(prefix)
                    .filter(|s| s.is_func)
                    .map(|s| (s.addr, s.size))
                    .collect(),
                None => match symbols.resolve_function(name) {
                    Ok(addr) => symbols
                        .symbols()
                        .iter()
                        .filter(|s| s.addr == addr && s.is_func)
                        .map(|s| (s.addr, s.size))
                        .max_by_key(|&(_, size)| size)
                        .into_iter()
                        .collect(),
                    Err(NotFunction::Unknown) => return Err(unknown(name)),
                    Err(NotFunction::Other(what, addr)) => {
                        return Err(SimError::NotAFunction {
                            spec: spec.to_string(),
                            symbol: name.to_string(),
                            what,
                            addr,
                        })
                    }
                },
            };
            found.sort_unstable();
            found.dedup_by_key(|f| f.0);
            if found.is_empty() {
                return Err(unknown(name));
            }
            Ok(found)
        };
        let (addrs, wildcard) = match parsed.target {
            Target::Addr(addr) => (vec![addr], false),
            Target::Range(lo, hi) => (instructions(&image, lo, hi), true),
            Target::Symbol(name, off) => {
                let wildcard = name.ends_with('*');
                let mut addrs = Vec::new();
                for (addr, _) in functions(name)? {
                    addrs.push(addr.checked_add(off).ok_or_else(|| SimError::BadSpec {
                        spec: spec.to_string(),
                        why: "offset overflows".into(),
                    })?);
                }
                (addrs, wildcard)
            }
            Target::EveryInsn(name) => {
                let mut addrs = Vec::new();
                for (addr, size) in functions(name)? {
                    addrs.extend(instructions(&image, addr, addr + size.max(2)));
                }
                addrs.sort_unstable();
                addrs.dedup();
                (addrs, true)
            }
        };
        if addrs.is_empty() {
            return Err(SimError::BadSpec {
                spec: spec.to_string(),
                why: "the range holds no instruction of the program".into(),
            });
        }
        Ok(Resolved {
            spec: parsed,
            image,
            addrs,
            wildcard,
        })
    }

    /// Adds the probe of a spec that names one site (`uprobe:fib`, `uprobe:main+8`,
    /// `uprobe:0x10074`, `uretprobe:fib %a0`), tracing per the shared trace semantics.
    pub fn add_probe(&mut self, spec: &str) -> Result<ProbeId, SimError> {
        let resolved = self.resolve(spec)?;
        match resolved.addrs.as_slice() {
            [addr] if !resolved.wildcard => self.add_resolved(spec, &resolved, *addr),
            _ => Err(SimError::BadSpec {
                spec: spec.to_string(),
                why: "names several sites (use add_probes)".into(),
            }),
        }
    }

    /// Adds a probe on every site a spec names, in address order: a prefix (`zoo_*`),
    /// every instruction of functions (`crc16+*`, `*+*`) or of a range (`0x10000-0x10400`).
    /// Of several sites, those whose instruction cannot be probed
    /// ([`ruprobes::Error::Unsupported`]) are skipped.
    pub fn add_probes(&mut self, spec: &str) -> Result<Vec<ProbeId>, SimError> {
        let resolved = self.resolve(spec)?;
        let mut ids = Vec::with_capacity(resolved.addrs.len());
        for &addr in &resolved.addrs {
            match self.add_resolved(spec, &resolved, addr) {
                Ok(id) => ids.push(id),
                Err(SimError::Probe {
                    error: ruprobes::Error::Unsupported { .. },
                    ..
                }) if resolved.wildcard => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ids)
    }

    /// The sites a spec names, with their instruction and what the core does with each.
    pub fn sites(&mut self, spec: &str) -> Result<Vec<Site>, SimError> {
        let resolved = self.resolve(spec)?;
        Ok(resolved
            .addrs
            .iter()
            .map(|&addr| {
                let (insn, mut class) = classify(&resolved.image, addr);
                if let Some(start) = resolved.image.inside_instruction(addr) {
                    class = SiteClass::Refused(format!(
                        "inside the instruction at {}",
                        resolved.image.location(start)
                    ));
                }
                Site {
                    addr,
                    location: resolved.image.location(addr).to_string(),
                    insn,
                    class,
                }
            })
            .collect())
    }

    fn add_resolved(
        &mut self,
        spec: &str,
        resolved: &Resolved<'_>,
        addr: u64,
    ) -> Result<ProbeId, SimError> {
        let image = &resolved.image;
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
        let mut args = Vec::new();
        for arg in resolved.spec.fetch_args() {
            args.push(Fetch::from(arg.map_err(|e| bad_spec(spec, e))?));
        }
        let value_label = resolved
            .spec
            .fetch_args()
            .next()
            .and_then(Result::ok)
            .map(|a| a.label.to_string());
        let loc = image.location(addr);
        let (consumer, role, aggregate) =
            self.tracer()
                .consumer(resolved.spec.kind, loc.clone(), args);
        let id = self.register_consumer(spec, &image.name, addr, consumer)?;
        self.probes.push(ProbeRecord {
            spec: spec.to_string(),
            path: image.name.clone(),
            addr,
            location: loc,
            role,
            consumer: Some(id),
            frozen: None,
            aggregate: Some(aggregate),
            value_label: value_label.filter(|_| self.trace_options.value_histogram.is_some()),
        });
        Ok(ProbeId(self.probes.len() - 1))
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
        self.register_custom(label.to_string(), &path, addr, consumer)
    }

    /// Adds a caller-made consumer at `addr` of the program `path` (e.g. a program that a
    /// child `exec`s).
    pub fn register_at(
        &mut self,
        path: &str,
        addr: u64,
        consumer: Consumer,
    ) -> Result<ProbeId, SimError> {
        self.register_custom(format!("{addr:#x}"), path, addr, consumer)
    }

    fn register_custom(
        &mut self,
        spec: String,
        path: &str,
        addr: u64,
        consumer: Consumer,
    ) -> Result<ProbeId, SimError> {
        let id = self.register_consumer(&spec, path, addr, consumer)?;
        let location = match self.images.get(path) {
            Some(image) => image.location(addr),
            None => crate::trace::Loc { addr, symbol: None },
        };
        self.probes.push(ProbeRecord {
            spec,
            path: path.to_string(),
            addr,
            location,
            role: ProbeRole::Custom,
            consumer: Some(id),
            frozen: None,
            aggregate: None,
            value_label: None,
        });
        Ok(ProbeId(self.probes.len() - 1))
    }

    fn register_consumer(
        &mut self,
        spec: &str,
        path: &str,
        addr: u64,
        consumer: Consumer,
    ) -> Result<ruprobes::ConsumerId, SimError> {
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
        Ok(id)
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
                let stats = self.stats(ProbeId(i)).unwrap_or_default();
                self.probes[i].report(ProbeId(i), stats)
            })
            .collect()
    }

    /// Reads the memory that fetch arguments asked for in the last trap, and writes their
    /// events.
    pub(crate) fn complete_fetches(&mut self) {
        for mut pending in self.fetches.take() {
            let pid = pending.pid as Pid;
            for read in &pending.reads {
                let value = match read.ty {
                    FetchType::Str => self.read_string(pid, read.addr),
                    FetchType::Unsigned(n) | FetchType::Signed(n) | FetchType::Hex(n) => {
                        match self.read_user(pid, read.addr, usize::from(n)) {
                            Ok(bytes) => {
                                let raw = bytes
                                    .iter()
                                    .rev()
                                    .fold(0u64, |w, &b| (w << 8) | u64::from(b));
                                crate::probes::typed_value(raw, read.ty)
                            }
                            Err(_) => Value::Fault(read.addr),
                        }
                    }
                };
                if let Some(slot) = pending.fetched.get_mut(read.index) {
                    slot.1 = value;
                }
            }
            finish(
                &self.trace,
                pending.event,
                &pending.fetched,
                &pending.aggregate,
            );
        }
    }

    fn read_string(&self, pid: Pid, addr: u64) -> Value {
        let mut bytes = Vec::new();
        while bytes.len() < MAX_STRING {
            match self.read_user(pid, addr + bytes.len() as u64, 1) {
                Ok(b) if b[0] == 0 => break,
                Ok(b) => bytes.push(b[0]),
                Err(_) if bytes.is_empty() => return Value::Fault(addr),
                Err(_) => break,
            }
        }
        Value::Str(String::from_utf8_lossy(&bytes).into_owned())
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

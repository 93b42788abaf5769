//! The engine: the probe registry, arming in processes, and the trap path.

use alloc::boxed::Box;
use alloc::sync::{Arc, Weak};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::addr_map::AddrMap;
use crate::array::{Array, Text};
use crate::decode::{self, Class, Insn, C_EBREAK, EBREAK};
use crate::error::Fault;
use crate::error::{Error, Unsupported};
use crate::probe::{
    Consumer, ConsumerId, Consumers, Hit, Probe, ProbeStats, ProbeStatus, Retired, Return,
};
use crate::regs::{abi, UserRegs};
use crate::space::{ImageReader, Pid, Tid, UserSpace, NO_PID};
use crate::uretprobe::{ReturnInstance, ReturnStack};
use crate::xol::Xol;

/// What the kernel should do after [`Uprobes::handle_breakpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Trap {
    /// The breakpoint was ours; return to user mode with the updated registers.
    Handled,
    /// Not a breakpoint of ruprobes (e.g. the program's own `ebreak`): deliver SIGTRAP.
    NotOurs,
}

/// A probe armed in one process: the breakpoint is in its memory.
#[derive(Clone)]
struct Armed {
    probe: Arc<Probe>,
    /// The original instruction the breakpoint replaced.
    insn: Insn,
    /// The XOL slot, for instructions stepped out of line.
    slot: Option<usize>,
}

/// What a hit takes from its armed entry under the read lock, to go on with unlocked.
struct ArmedHit {
    addr: usize,
    /// The original instruction.
    insn: Insn,
    consumers: Consumers,
    /// The XOL slot it steps in (pinned for this hit), for an instruction run out of line.
    slot: Option<usize>,
    /// A consumer wants the function's return.
    wants_return: bool,
    /// The probe, when a step or a return instance must keep it (`None` otherwise: an
    /// emulated hit without return handlers changes no reference count of the probe).
    probe: Option<Arc<Probe>>,
}

impl ArmedHit {
    /// The hit on `armed`, whose consumer list is `consumers` (taken under the lock).
    fn new(armed: &Armed, consumers: Consumers) -> Self {
        let slot = step_slot(armed);
        let wants_return = consumers.iter().any(|(_, c)| c.has_return());
        let probe = (slot.is_some() || wants_return).then(|| armed.probe.clone());
        ArmedHit {
            addr: armed.probe.addr,
            insn: armed.insn,
            consumers,
            slot,
            wants_return,
            probe,
        }
    }
}

/// An instruction being stepped out of line by one thread. Its probe is referred to
/// weakly, as in [`ReturnInstance`]: a step dropped on the trap path (a stale one, a
/// fault, a thread's exit) never drops a probe's last reference.
#[derive(Clone)]
struct Step {
    probe: Weak<Probe>,
    /// The probed address.
    addr: usize,
    slot: usize,
    len: usize,
}

struct ThreadState {
    returns: ReturnStack,
    /// What this thread is stepping in an XOL slot. Kept here rather than looked up in the
    /// armed set, so a step finishes even if its probe is unregistered meanwhile.
    stepping: Option<Step>,
}

/// A thread's state behind its own lock, on the heap and on cache lines of its own: the
/// locks of threads hitting on different harts do not share a line, and the table moves
/// 8-byte values when it grows.
type PerThread = Box<CacheLine<spin::Mutex<ThreadState>>>;

/// The state of a thread with `returns` pending and no step.
fn per_thread(returns: ReturnStack) -> PerThread {
    Box::new(CacheLine(spin::Mutex::new(ThreadState {
        returns,
        stepping: None,
    })))
}

/// The state of a thread that has not trapped yet.
fn new_thread() -> PerThread {
    per_thread(ReturnStack::new())
}

/// Per-process state: which image it runs, what is armed, its XOL area, its threads.
struct Process {
    path: Text,
    armed: AddrMap<Armed>,
    xol: Xol,
    /// Each behind a lock of its own: the trap path, which holds only the registry's read
    /// lock, changes the state of its own thread.
    threads: AddrMap<PerThread>,
    /// Breakpoints are `c.ebreak` on 32-bit instructions too (see
    /// [`Uprobes::set_compressed_breakpoints`]).
    compressed_breakpoints: bool,
}

/// The engine's state. Every map is an [`AddrMap`] (or a short list), not a `BTreeMap`:
/// the tree's rebalancing code, compiled into this crate at the kernel's opt-level, has
/// frames of over 1 KiB in debug builds, and the engine must fit a small kernel stack.
struct Registry {
    /// Every probe, by path (a kernel probes few programs: a list) and address.
    probes: Array<(Text, AddrMap<Arc<Probe>>)>,
    /// Which probe each consumer belongs to, by [`ConsumerId`].
    consumers: AddrMap<Arc<Probe>>,
    /// Per-process state, by pid; boxed so that growing the table moves 8-byte values.
    procs: AddrMap<Box<Process>>,
    next_id: usize,
    /// Reads a program's bytes before it runs, to check probes at registration.
    image_reader: Option<ImageReader>,
    /// Whether processes exec'd from now on get `c.ebreak` on 32-bit instructions too.
    compressed_breakpoints: bool,
    /// What the current call let go of, dropped once the lock is released ([`unlock`]).
    retired: Retired,
}

impl Registry {
    const fn new() -> Self {
        Registry {
            probes: Array::new(),
            consumers: AddrMap::new(),
            procs: AddrMap::new(),
            next_id: 1,
            image_reader: None,
            compressed_breakpoints: false,
            retired: Retired::new(),
        }
    }

    fn probes_of(&self, path: &str) -> Option<&AddrMap<Arc<Probe>>> {
        self.probes
            .iter()
            .find(|(p, _)| p.as_str() == path)
            .map(|(_, m)| m)
    }

    /// [`Uprobes::sync`] under the lock.
    fn sync(&mut self, space: &mut dyn UserSpace) -> Result<(), Error> {
        let pid = space.pid();
        let Some(proc) = self.procs.get_mut(pid) else {
            return Err(Error::UnknownProcess(pid));
        };
        let mut first_error = proc.disarm_removed(space, &mut self.retired);
        let Some(probes) = self.probes.iter().find(|(p, _)| *p == proc.path) else {
            return match first_error {
                Some(e) => Err(e),
                None => Ok(()),
            };
        };
        // Arms every probe of the path and records each outcome in its status. The loop
        // is here, not in a helper: one frame less above the arming.
        for i in 0..probes.1.slot_count() {
            let Some(probe) = probes.1.value_at(i) else {
                continue;
            };
            let armed = proc.arm(space, probe, probe.wants_return(), &mut self.retired);
            if let Some(e) = record_status(probe, armed) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Arms `probe` at once if `current` runs its program; else, for a new probe, checks
    /// the instruction in the program's image if the kernel can read it, so that a refused
    /// probe fails now and not at every exec. (Called by [`Uprobes::register`] next to
    /// [`probe_for`](Self::probe_for), not under it: one frame less above the arming.)
    fn arm_or_check(
        &mut self,
        probe: &Arc<Probe>,
        is_new: bool,
        wants_return: bool,
        current: Option<&mut dyn UserSpace>,
    ) -> Result<(), Error> {
        let Some((proc, space)) = running(&mut self.procs, current, &probe.path) else {
            return if is_new {
                self.check_image(probe.path.as_str(), probe.addr)
            } else {
                Ok(())
            };
        };
        let armed = proc.arm(space, probe, wants_return, &mut self.retired);
        if armed.is_ok() {
            probe.set_status(ProbeStatus::Armed);
        }
        armed
    }

    /// The probe at (`path`, `addr`) and whether it is new; refuses a consumer that is
    /// registered there already.
    fn probe_for(
        &self,
        path: &str,
        addr: usize,
        consumer: &Consumer,
    ) -> Result<(Arc<Probe>, bool), Error> {
        match self.probes_of(path).and_then(|m| m.get(addr)) {
            // SAFETY: `&self` is the registry, reached only through its lock.
            Some(probe) if unsafe { probe.has_consumer(consumer) } => Err(Error::AlreadyRegistered),
            Some(probe) => Ok((probe.clone(), false)),
            None => Ok((Probe::new_shared(path, addr), true)),
        }
    }

    /// Records `consumer` on `probe` (entered in the tables if new); its id.
    fn add_consumer(&mut self, probe: Arc<Probe>, is_new: bool, consumer: &Consumer) -> ConsumerId {
        let id = ConsumerId(self.next_id);
        self.next_id += 1;
        let old = add_consumer(self, &probe, id, consumer.clone());
        self.retired.list(old);
        if is_new {
            self.add_probe(&probe);
        }
        // A fresh id: nothing is replaced.
        if let Some(old) = self.consumers.insert(id.0, probe) {
            self.retired.probe(old);
        }
        id
    }

    /// Checks the instruction at `addr` in the image of `path`, when the kernel can read it.
    fn check_image(&self, path: &str, addr: usize) -> Result<(), Error> {
        if let Some(read_image) = self.image_reader {
            decode_at(addr, &mut |at, buf| read_image(path, at, buf))?;
        }
        Ok(())
    }

    /// Adds a new probe to the by-path table.
    fn add_probe(&mut self, probe: &Arc<Probe>) {
        if !self.probes.iter().any(|(p, _)| *p == probe.path) {
            self.probes.push((probe.path.clone(), AddrMap::new()));
        }
        if let Some((_, by_addr)) = self.probes.iter_mut().find(|(p, _)| *p == probe.path) {
            // A new probe: its address is not in the table. Reserved, then inserted with
            // `insert_reserved`, which never replaces (so never drops) a probe: the drop
            // glue of one would be this frame's deepest call.
            by_addr.reserve(1);
            by_addr.insert_reserved(probe.addr, || probe.clone());
        }
    }

    /// Removes a probe from the by-path table.
    fn remove_probe(&mut self, probe: &Probe) {
        let Some(i) = self.probes.iter().position(|(p, _)| *p == probe.path) else {
            return;
        };
        let Some((_, by_addr)) = self.probes.get_mut(i) else {
            return;
        };
        if let Some(gone) = by_addr.remove(probe.addr) {
            self.retired.probe(gone);
        }
        if by_addr.is_empty() {
            if let Some((_, by_addr)) = self.probes.swap_remove(i) {
                by_addr.free_empty();
            }
        }
    }

    /// [`Uprobes::unregister`] under the lock.
    fn unregister(
        &mut self,
        id: ConsumerId,
        current: Option<&mut dyn UserSpace>,
    ) -> Result<(), Error> {
        let Some(probe) = self.consumers.get(id.0).cloned() else {
            return Err(Error::NotRegistered);
        };
        let list = consumers_without(self, &probe, id);
        if list.is_empty() {
            // Restore first: if that fails, nothing has changed and the call can be retried.
            if let Some(space) = current {
                if let Err(e) = self.disarm_in(space, &probe) {
                    self.retired.probe(probe);
                    return Err(e);
                }
            }
            probe.mark_removed();
            self.remove_probe(&probe);
        }
        // SAFETY: `&mut self` is the registry: its write side is held.
        let old = unsafe { probe.set_consumers(Arc::new(list)) };
        self.retired.list(old);
        if let Some(entry) = self.consumers.remove(id.0) {
            self.retired.probe(entry);
        }
        self.retired.probe(probe);
        Ok(())
    }

    /// Restores the original instruction of `probe` in `space`, if it is armed there.
    fn disarm_in(&mut self, space: &mut dyn UserSpace, probe: &Arc<Probe>) -> Result<(), Error> {
        let Some(proc) = self.procs.get_mut(space.pid()) else {
            return Ok(());
        };
        if proc
            .armed
            .get(probe.addr)
            .is_some_and(|a| Arc::ptr_eq(&a.probe, probe))
        {
            if let Some(gone) = proc.disarm(space, probe.addr)? {
                self.retired.probe(gone);
            }
        }
        Ok(())
    }
}

/// The state of the process `current` (if any) when it runs `path`, with `current`.
fn running<'p, 's>(
    procs: &'p mut AddrMap<Box<Process>>,
    current: Option<&'s mut dyn UserSpace>,
    path: &Text,
) -> Option<(&'p mut Process, &'s mut dyn UserSpace)> {
    let space = current?;
    let pid = space.pid();
    if pid == NO_PID {
        return None;
    }
    let proc = procs.get_mut(pid)?;
    if proc.path != *path {
        return None;
    }
    Some((proc, space))
}

/// Releases the registry lock `reg`, then drops what the call retired under it.
fn unlock(mut reg: spin::RwLockWriteGuard<'_, Registry>) {
    let retired = reg.retired.take();
    drop(reg);
    drop(retired);
}

/// Appends `consumer` with `id` to the consumers of `probe`; the old list, to retire.
/// `_locked` (the registry, held through its write side) is the proof
/// [`Probe::set_consumers`] asks for.
fn add_consumer(
    _locked: &mut Registry,
    probe: &Probe,
    id: ConsumerId,
    consumer: Consumer,
) -> Consumers {
    // SAFETY: `_locked` is the registry, borrowed mutably: its write side is held.
    let mut list = Array::clone(&*unsafe { probe.consumers() });
    list.push((id, consumer));
    // SAFETY: as above.
    unsafe { probe.set_consumers(Arc::new(list)) }
}

/// The consumers of `probe` but `id`; `_locked` (the registry) proves its lock is held.
fn consumers_without(
    _locked: &Registry,
    probe: &Probe,
    id: ConsumerId,
) -> Array<(ConsumerId, Consumer)> {
    let mut list = Array::new();
    // SAFETY: `_locked` is the registry, reached only through its lock.
    for (cid, consumer) in unsafe { probe.consumers() }.iter() {
        if *cid != id {
            list.push((*cid, consumer.clone()));
        }
    }
    list
}

/// The uprobes engine. Keep one per kernel (in a `static`: [`Uprobes::new`] is `const`).
///
/// All state sits behind one reader-writer spin lock that is never held while a handler
/// runs, so handlers may register and unregister probes. Breakpoint traps take only its
/// read side (hits on several harts run side by side), except a thread's first trap that
/// needs per-thread state (it allocates) and the lazy restore of a removed probe.
/// Everything that writes user memory (register, unregister, sync, exec) takes the write
/// side, which new readers wait for: a writer gets in under a constant stream of hits.
pub struct Uprobes {
    registry: spin::RwLock<Registry>,
    /// Probed instructions executed in the trap (see [`Uprobes::executed_in_trap`]); on a
    /// cache line of its own, away from the lock word every trap changes.
    executed_in_trap: CacheLine<AtomicU64>,
    /// See [`TrapStats`].
    trap_counters: CacheLine<TrapCounters>,
}

/// A value on a cache line of its own (64 bytes, the line of common RISC-V cores), so that
/// counters every hart bumps do not also bounce the registry lock's line.
#[repr(align(64))]
struct CacheLine<T>(T);

impl<T> core::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// How the trap path met the registry lock, and how often a trap outlived its probe: for
/// a kernel to see whether hits on several harts serialise on the lock (see
/// [`Uprobes::trap_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapStats {
    /// Registry lock acquisitions on the trap path (one to three per breakpoint trap; the
    /// read side but for a thread's first trap and the lazy restore of a removed probe).
    pub lock_acquisitions: u64,
    /// Of those, how many had to wait: a writer (registration, exec...) held the lock or
    /// was waiting for it, or (for a write-side acquisition) other traps held it.
    pub lock_contended: u64,
    /// Spin-loop iterations spent waiting for it.
    pub lock_spins: u64,
    /// Breakpoint traps that found no probe at their pc any more (removed meanwhile, or a
    /// stale copy of a breakpoint) and restarted the instruction.
    pub restarted: u64,
}

struct TrapCounters {
    lock_acquisitions: AtomicU64,
    lock_contended: AtomicU64,
    lock_spins: AtomicU64,
    restarted: AtomicU64,
}

impl Default for Uprobes {
    fn default() -> Self {
        Self::new()
    }
}

/// Spin iterations a trap waits between two attempts at the read side while a writer waits
/// for the readers to leave.
const READ_BACKOFF: u64 = 64;

/// The bytes of `insn` as they were in memory.
fn insn_bytes(insn: &Insn) -> ([u8; 4], usize) {
    (insn.raw().to_le_bytes(), insn.len())
}

/// Reads `buf.len()` bytes at a user address: a process's memory or a program's image.
type ReadFn<'a> = dyn FnMut(usize, &mut [u8]) -> Result<(), Fault> + 'a;

/// Reads (through `read`) and decodes the instruction at `addr`; a refusal names `addr`.
/// Reading is a sibling of decoding, each with its own small frame in unoptimised builds.
fn decode_at(addr: usize, read: &mut ReadFn<'_>) -> Result<Insn, Error> {
    let decoded = match read_raw(addr, read) {
        Ok((raw, Some(2))) => decode::decode_raw(raw, 2),
        Ok((raw, Some(4))) => decode::decode_raw(raw, 4),
        Ok(_) => Err(Unsupported::Illegal), // longer than 32 bits
        Err(e) => return Err(e),
    };
    match decoded {
        Ok(insn) => Ok(insn),
        Err(why) => Err(Error::Unsupported { addr, why }),
    }
}

/// Reads (through `read`) the instruction at `addr`: its bits and length (`None`: an
/// encoding longer than 32 bits). The second parcel only when the first says there is one
/// (the next page may be unmapped).
fn read_raw(addr: usize, read: &mut ReadFn<'_>) -> Result<(u32, Option<usize>), Error> {
    // One array per parcel: sub-slices of one would bring the slice indexing code and its
    // checks (about 300 bytes of stack in unoptimised builds).
    let mut low = [0u8; 2];
    if let Err(fault) = read(addr, &mut low) {
        return Err(Error::ReadFault(fault));
    }
    let low = u16::from_le_bytes(low);
    let len = decode::insn_len(low);
    let mut high = [0u8; 2];
    if len == Some(4) {
        if let Err(fault) = read(addr.wrapping_add(2), &mut high) {
            return Err(Error::ReadFault(fault));
        }
    }
    Ok((
        u32::from(low) | u32::from(u16::from_le_bytes(high)) << 16,
        len,
    ))
}

/// Writes the breakpoint over the `len`-byte instruction at `addr`: `c.ebreak` over a
/// 16-bit one, or over any with `compressed`; else `ebreak`.
fn write_breakpoint(
    space: &mut dyn UserSpace,
    addr: usize,
    len: usize,
    compressed: bool,
) -> Result<(), Error> {
    let result = if len == 2 || compressed {
        space.write(addr, &C_EBREAK.to_le_bytes())
    } else {
        space.write(addr, &EBREAK.to_le_bytes())
    };
    result.map_err(Error::WriteFault)?;
    space.flush_icache(addr, len);
    Ok(())
}

fn is_breakpoint_at(space: &mut dyn UserSpace, pc: usize) -> bool {
    let mut bytes = [0u8; 4];
    if space.read(pc, &mut bytes[..2]).is_err() {
        return true; // cannot tell: never re-execute blindly
    }
    if u16::from_le_bytes([bytes[0], bytes[1]]) == C_EBREAK {
        return true;
    }
    space.read(pc.wrapping_add(2), &mut bytes[2..]).is_err() || u32::from_le_bytes(bytes) == EBREAK
}

impl Process {
    /// The state of a process that has just loaded `path`, on the heap (built there in a
    /// function of its own: the value is big for a stack frame).
    fn boxed(path: &str) -> Box<Self> {
        Box::new(Process {
            path: Text::new(path),
            armed: AddrMap::new(),
            xol: Xol::default(),
            threads: AddrMap::new(),
            compressed_breakpoints: false,
        })
    }

    /// The state of the child of a fork by thread `parent_tid`, whose first thread
    /// `child_tid` inherits that thread's pending returns.
    fn forked(&self, parent_tid: Tid, child_tid: Tid) -> Box<Process> {
        let mut state = Box::new(Process {
            path: self.path.clone(),
            armed: self.armed.clone(),
            xol: self.xol.clone(),
            threads: AddrMap::new(),
            compressed_breakpoints: self.compressed_breakpoints,
        });
        state.xol.forget_steppers();
        if let Some(parent) = self.threads.get(parent_tid) {
            // Made in place (the closure owns nothing a missed call would drop).
            state.threads.reserve(1);
            state
                .threads
                .insert_reserved(child_tid, || per_thread(parent.lock().returns.clone()));
        }
        state
    }

    /// Arms `probe` (or refreshes an armed entry left by a removed probe object). On error
    /// nothing has changed in memory or in `self`.
    /// A probe object replaced in an armed entry goes to `retired`.
    fn arm(
        &mut self,
        space: &mut dyn UserSpace,
        probe: &Arc<Probe>,
        wants_return: bool,
        retired: &mut Retired,
    ) -> Result<(), Error> {
        // Already a breakpoint here: keep the recorded original (never re-read: it is the
        // breakpoint now) and point the entry at `probe`. Else read and check the original.
        let addr = probe.addr;
        let mut original = None;
        if !self.armed.contains(addr) {
            let (raw, len) = match self.read_original(space, addr) {
                Ok(read) => read,
                Err(e) => return Err(e),
            };
            if let Err(e) = self.decode_original(raw, len, addr, &mut original) {
                return Err(e);
            }
        }
        // The XOL pages it needs are mapped before anything is written. Reading, mapping
        // and writing are sibling calls, so their frames do not add up in unoptimised
        // builds.
        let stepped = original.is_some_and(|insn| insn.class() == Class::Xol);
        if stepped {
            // Slots retired under a thread that has stepped since are free again.
            self.xol.reclaim_retired();
        }
        if self.xol.needs_page(wants_return, stepped) {
            if let Err(e) = self.xol.add_page(space) {
                return Err(e);
            }
        }
        let Some(insn) = original else {
            if let Some(armed) = self.armed.get_mut(addr) {
                retired.probe(core::mem::replace(&mut armed.probe, probe.clone()));
            }
            return Ok(());
        };
        // The room for its entry is made here, so that growing the table is not nested
        // deeper.
        self.armed.reserve(1);
        self.arm_insn(space, probe, &insn)
    }

    /// Reads the instruction at `addr` (its bits and length), refusing an address that
    /// cannot carry a probe. (Reading and [`decode_original`](Self::decode_original) are
    /// siblings under [`arm`](Self::arm): each keeps its own small frame.)
    fn read_original(&self, space: &mut dyn UserSpace, addr: usize) -> Result<(u32, u8), Error> {
        if let Err(e) = self.check_armable(space, addr) {
            return Err(e);
        }
        match read_raw(addr, &mut |at, buf| space.read(at, buf)) {
            Ok((raw, Some(2))) => Ok((raw, 2)),
            Ok((raw, Some(4))) => Ok((raw, 4)),
            Ok(_) => Err(Error::Unsupported {
                addr,
                why: Unsupported::Illegal, // longer than 32 bits
            }),
            Err(e) => Err(e),
        }
    }

    /// Decodes the instruction `raw` (`len` bytes) read at `addr` into `original`,
    /// refusing one that overlaps an armed instruction. (Written in place, not returned
    /// in a `Result`: one copy less in the caller's frame.)
    fn decode_original(
        &self,
        raw: u32,
        len: u8,
        addr: usize,
        original: &mut Option<Insn>,
    ) -> Result<(), Error> {
        let insn = match decode::decode_raw(raw, len) {
            Ok(insn) => insn,
            Err(why) => return Err(Error::Unsupported { addr, why }),
        };
        // A probe armed on this instruction's second half: its breakpoint is in the bytes
        // just read, and recording them as the original would corrupt the text later.
        if insn.len() == 4 && self.armed.contains(addr.wrapping_add(2)) {
            return Err(Error::Conflict(addr));
        }
        *original = Some(insn);
        Ok(())
    }

    /// Arms `probe` on its original instruction `insn`: takes an XOL slot if it needs one
    /// (mapped by [`arm`](Self::arm)), writes the breakpoint, records the armed entry.
    fn arm_insn(
        &mut self,
        space: &mut dyn UserSpace,
        probe: &Arc<Probe>,
        insn: &Insn,
    ) -> Result<(), Error> {
        let mut slot = None;
        if insn.class() == Class::Xol {
            match self.xol.alloc(space, probe.addr, insn) {
                Ok(taken) => slot = Some(taken),
                Err(e) => return Err(e),
            }
        }
        let compressed = self.compressed_breakpoints;
        if let Err(e) = write_breakpoint(space, probe.addr, insn.len(), compressed) {
            if let Some(slot) = slot {
                self.xol.release(slot);
            }
            return Err(e);
        }
        self.record_armed(probe, insn, slot);
        Ok(())
    }

    /// Enters the armed `probe` (original `insn`, XOL `slot`) in the room [`arm`](Self::arm)
    /// made for it; its address was not armed.
    fn record_armed(&mut self, probe: &Arc<Probe>, insn: &Insn, slot: Option<usize>) {
        self.armed.insert_reserved(probe.addr, || Armed {
            probe: probe.clone(),
            insn: *insn,
            slot,
        });
    }

    /// Whether a probe may go at `addr`, before reading it.
    fn check_armable(&self, space: &mut dyn UserSpace, addr: usize) -> Result<(), Error> {
        if addr % 2 != 0 {
            return Err(Error::Misaligned(addr));
        }
        // A 32-bit instruction armed just before: `addr` is its second half.
        if self
            .armed
            .get(addr.wrapping_sub(2))
            .is_some_and(|a| a.insn.len() == 4)
        {
            return Err(Error::Conflict(addr));
        }
        if !space.is_executable(addr) {
            return Err(Error::NotExecutable(addr));
        }
        Ok(())
    }

    /// Restores the instructions of removed probes, whose objects go to `retired`; the
    /// first error after trying all.
    fn disarm_removed(
        &mut self,
        space: &mut dyn UserSpace,
        retired: &mut Retired,
    ) -> Option<Error> {
        let mut first_error = None;
        for &addr in self.removed_addrs().iter() {
            match self.disarm(space, addr) {
                Ok(Some(gone)) => retired.probe(gone),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error
    }

    /// The addresses armed for probes that have been unregistered since.
    fn removed_addrs(&self) -> Array<usize> {
        let mut addrs = Array::new();
        for (addr, armed) in self.armed.iter() {
            if armed.probe.is_removed() {
                addrs.push(addr);
            }
        }
        addrs
    }

    /// Restores the original instruction at `addr` and forgets the armed entry; returns
    /// its probe, for the caller to drop outside the lock.
    fn disarm(
        &mut self,
        space: &mut dyn UserSpace,
        addr: usize,
    ) -> Result<Option<Arc<Probe>>, Error> {
        let Some(armed) = self.armed.get(addr) else {
            return Ok(None);
        };
        let (bytes, len) = insn_bytes(&armed.insn);
        space
            .write(addr, &bytes[..len])
            .map_err(Error::WriteFault)?;
        space.flush_icache(addr, len);
        if let Some(slot) = armed.slot {
            // Threads about to step or stepping there keep the slot until they are done.
            self.xol.release(slot);
        }
        Ok(self.armed.remove(addr).map(|armed| armed.probe))
    }

    /// Thread `tid` is done with the slot it was to step in, if any.
    fn end_step(&mut self, tid: Tid) {
        if let Some(step) = self
            .threads
            .get_mut(tid)
            .and_then(|t| t.0.get_mut().stepping.take())
        {
            self.xol.unpin(step.slot);
        }
    }
}

/// Records the outcome of arming `probe` in its status; a new failure is logged once per
/// probe and error, not at every exec. Returns the error.
fn record_status(probe: &Probe, armed: Result<(), Error>) -> Option<Error> {
    let status = match armed {
        Ok(()) => ProbeStatus::Armed,
        Err(e) => ProbeStatus::Failed(e),
    };
    let previous = probe.set_status(status);
    match status {
        ProbeStatus::Failed(e) => {
            if previous != status {
                warn_arm_failed(probe, e);
            }
            Some(e)
        }
        _ => None,
    }
}

/// Logs that `probe` could not be armed (its own function: formatting has a big frame).
fn warn_arm_failed(probe: &Probe, e: Error) {
    log::warn!(
        "ruprobes: cannot arm {}:{:#x}: {}",
        probe.path,
        probe.addr,
        e
    );
}

/// Calls the entry (`post == false`) or post handlers of every consumer.
fn run_entry_handlers(consumers: &Consumers, regs: &mut dyn UserRegs, hit: &Hit, post: bool) {
    for (_, consumer) in consumers.iter() {
        let handler = if post {
            &consumer.post
        } else {
            &consumer.entry
        };
        if let Some(handler) = handler {
            handler(regs, hit);
        }
    }
}

impl Uprobes {
    /// An engine with no probes and no processes.
    pub const fn new() -> Self {
        // Built at compile time even when called at run time: a copy of a constant needs
        // no frame for the nested temporaries.
        const {
            Uprobes {
                registry: spin::RwLock::new(Registry::new()),
                executed_in_trap: CacheLine(AtomicU64::new(0)),
                trap_counters: CacheLine(TrapCounters {
                    lock_acquisitions: AtomicU64::new(0),
                    lock_contended: AtomicU64::new(0),
                    lock_spins: AtomicU64::new(0),
                    restarted: AtomicU64::new(0),
                }),
            }
        }
    }

    /// The registry's write side, for calls that change the registry. Taken through an
    /// upgradeable read: its flag stops new readers at once, so the writer only waits for
    /// the traps already inside, however many harts keep hitting (spin's plain `write`
    /// waits for a moment with no reader at all, which constant hits may never leave). A
    /// function of its own: the spin loop, inlined into each caller, would sit in every
    /// entry point's frame in unoptimised builds.
    fn write(&self) -> spin::RwLockWriteGuard<'_, Registry> {
        self.registry.upgradeable_read().upgrade()
    }

    /// The registry's read side, for the trap path: counts acquisitions, waits and spins.
    #[inline]
    fn trap_read(&self) -> spin::RwLockReadGuard<'_, Registry> {
        let counters = &self.trap_counters;
        counters.lock_acquisitions.fetch_add(1, Ordering::Relaxed);
        if let Some(reg) = self.registry.try_read() {
            return reg;
        }
        counters.lock_contended.fetch_add(1, Ordering::Relaxed);
        let mut spins = 0;
        let reg = loop {
            // Plain loads while a writer works; a failed `try_read` briefly counts itself
            // as a reader, which would delay a writer waiting for the readers to drain.
            while self.registry.writer_count() != 0 {
                spins += 1;
                core::hint::spin_loop();
            }
            if let Some(reg) = self.registry.try_read() {
                break reg;
            }
            for _ in 0..READ_BACKOFF {
                spins += 1;
                core::hint::spin_loop();
            }
        };
        counters.lock_spins.fetch_add(spins, Ordering::Relaxed);
        reg
    }

    /// The registry's write side, for the trap path (a thread's first trap, the lazy
    /// restore of a removed probe): counted as [`trap_read`](Self::trap_read) is.
    fn trap_write(&self) -> spin::RwLockWriteGuard<'_, Registry> {
        let counters = &self.trap_counters;
        counters.lock_acquisitions.fetch_add(1, Ordering::Relaxed);
        if let Some(upgradeable) = self.registry.try_upgradeable_read() {
            if let Ok(reg) = upgradeable.try_upgrade() {
                return reg;
            }
        }
        counters.lock_contended.fetch_add(1, Ordering::Relaxed);
        self.write()
    }

    /// Counters of the trap path since the engine was made (see [`TrapStats`]).
    pub fn trap_stats(&self) -> TrapStats {
        let c = &self.trap_counters;
        TrapStats {
            lock_acquisitions: c.lock_acquisitions.load(Ordering::Relaxed),
            lock_contended: c.lock_contended.load(Ordering::Relaxed),
            lock_spins: c.lock_spins.load(Ordering::Relaxed),
            restarted: c.restarted.load(Ordering::Relaxed),
        }
    }

    /// Adds `consumer` to the probe at (`path`, `addr`), creating the probe if needed.
    ///
    /// If `current` is given and runs `path` (as told by [`on_exec`](Self::on_exec)), the
    /// probe is armed there at once and every error is reported now, with user memory left
    /// byte-identical. Otherwise the probe waits for the next `exec` of `path`.
    ///
    /// The engine sees bytes, not instruction boundaries: an address in the middle of a
    /// 32-bit instruction is refused only if that instruction is armed. Callers that know the
    /// code (a symbol table, as `ruprobes-sim` does) should check boundaries first.
    pub fn register(
        &self,
        path: &str,
        addr: usize,
        consumer: Consumer,
        current: Option<&mut dyn UserSpace>,
    ) -> Result<ConsumerId, Error> {
        if addr % 2 != 0 {
            return Err(Error::Misaligned(addr));
        }
        let mut reg = self.write();
        let result = match reg.probe_for(path, addr, &consumer) {
            Ok((probe, is_new)) => {
                let wants_return = consumer.has_return() || probe.wants_return();
                match reg.arm_or_check(&probe, is_new, wants_return, current) {
                    // A clone (three reference counts): moving the consumer would copy it
                    // in this frame, which is under the whole arming.
                    Ok(()) => Ok(reg.add_consumer(probe, is_new, &consumer)),
                    Err(e) => {
                        reg.retired.probe(probe);
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        };
        unlock(reg);
        result // the caller's consumer (a clone was added) is dropped here, outside the lock
    }

    /// Removes a consumer. When it was the probe's last, the probe goes away and the original
    /// instruction is restored in `current` (other processes restore it at their next hit,
    /// or at once through [`sync`](Self::sync)). If that restore fails, the consumer stays
    /// registered and the error is returned, so the call can be retried.
    pub fn unregister(
        &self,
        id: ConsumerId,
        current: Option<&mut dyn UserSpace>,
    ) -> Result<(), Error> {
        let mut reg = self.write();
        let result = reg.unregister(id, current);
        unlock(reg);
        result
    }

    /// Brings the memory of `space`'s process in line with the registry: arms the probes of
    /// its path that are not armed yet, restores the instructions of removed probes. Returns
    /// the first error after trying every probe.
    pub fn sync(&self, space: &mut dyn UserSpace) -> Result<(), Error> {
        let mut reg = self.write();
        let result = reg.sync(space);
        unlock(reg);
        result
    }

    /// Call when `space`'s process has loaded a new image from `path` (in `exec`, after the
    /// image is mapped): forgets the old image's state and arms every probe of `path`. On an
    /// error the process still runs, with the probes that could be armed.
    pub fn on_exec(&self, space: &mut dyn UserSpace, path: &str) -> Result<(), Error> {
        if space.pid() == NO_PID {
            return Err(Error::UnknownProcess(NO_PID));
        }
        let mut fresh = Process::boxed(path);
        let mut reg = self.write();
        fresh.compressed_breakpoints = reg.compressed_breakpoints;
        let old = reg.procs.insert(space.pid(), fresh);
        let result = reg.sync(space);
        unlock(reg);
        drop(old); // the old image's state, freed outside the lock
        result
    }

    /// Call when `parent` forked `child` with a copy of its address space (breakpoints and
    /// XOL pages included). The child's first thread inherits the pending returns of the
    /// forking thread.
    pub fn on_fork(&self, parent: Pid, parent_tid: Tid, child: Pid, child_tid: Tid) {
        let mut reg = self.write();
        let Some(state) = reg
            .procs
            .get(parent)
            .map(|p| p.forked(parent_tid, child_tid))
        else {
            return;
        };
        let old = reg.procs.insert(child, state);
        drop(reg);
        drop(old); // a stale state of `child`, freed outside the lock
    }

    /// Call when a process exits: drops its state.
    pub fn on_exit(&self, pid: Pid) {
        let gone = self.write().procs.remove(pid);
        drop(gone); // freed outside the lock
    }

    /// Call when one thread of a process exits while the process goes on (a killed thread
    /// included): drops its pending returns and any out-of-line step it was in.
    pub fn on_thread_exit(&self, pid: Pid, tid: Tid) {
        let mut reg = self.write();
        let Some(proc) = reg.procs.get_mut(pid) else {
            return;
        };
        proc.end_step(tid);
        let gone = proc.threads.remove(tid);
        drop(reg);
        drop(gone); // freed outside the lock
    }

    /// How many threads of process `pid` the engine keeps state for (pending return
    /// probes, an out-of-line step); 0 for an unknown process. A thread gets its state at
    /// its first return-probe or out-of-line hit and keeps it until
    /// [`on_thread_exit`](Self::on_thread_exit) or [`on_exit`](Self::on_exit): a kernel
    /// checks with this that it calls them (never more than its live threads).
    pub fn threads_tracked(&self, pid: Pid) -> usize {
        self.registry
            .read()
            .procs
            .get(pid)
            .map_or(0, |p| p.threads.len())
    }

    /// Counters of the probe at (`path`, `addr`), while it is registered.
    pub fn stats(&self, path: &str, addr: usize) -> Option<ProbeStats> {
        let reg = self.registry.read();
        reg.probes_of(path)?.get(addr).map(|p| p.stats())
    }

    /// Whether the probe of consumer `id` is armed, waits for its program, or failed to arm
    /// (the typed error of the last attempt). [`Error::NotRegistered`] for an unknown id.
    ///
    /// A probe registered before its program runs is checked against the program's image
    /// when the kernel gave an [`ImageReader`] ([`set_image_reader`](Self::set_image_reader));
    /// otherwise the first `exec` arms it, and this status is where a refusal shows.
    pub fn status(&self, id: ConsumerId) -> Result<ProbeStatus, Error> {
        let reg = self.registry.read();
        let probe = reg.consumers.get(id.0).ok_or(Error::NotRegistered)?;
        Ok(probe.status())
    }

    /// Lets [`register`](Self::register) check probes on programs that are not running:
    /// `reader` reads the bytes a program's image holds at a user address.
    pub fn set_image_reader(&self, reader: Option<ImageReader>) {
        self.write().image_reader = reader;
    }

    /// Breakpoints on 32-bit instructions are the 2-byte `c.ebreak` in their first parcel
    /// (as Linux does on harts with the C extension), for processes exec'd after this
    /// call; otherwise the 4-byte `ebreak`. Only the first 16-bit parcel then ever changes,
    /// so another hart fetching the instruction while it is armed or restored sees either
    /// the whole original or the breakpoint, even where 32-bit fetches are not atomic (QEMU
    /// fetches a 32-bit instruction as two 16-bit parcels: a 4-byte `ebreak` written over
    /// `addi sp, sp, -16` was seen as `addi sp, zero, 1`). Only for harts with the C
    /// extension.
    pub fn set_compressed_breakpoints(&self, on: bool) {
        self.write().compressed_breakpoints = on;
    }

    /// The trampoline address of a process, once it has one.
    pub fn trampoline(&self, pid: Pid) -> Option<usize> {
        self.registry.read().procs.get(pid)?.xol.trampoline()
    }

    /// Call on every user fault other than a breakpoint (page fault, illegal instruction…).
    /// If the thread faulted while stepping a probed instruction out of line, moves the pc
    /// back to the probed address (so the fault is reported where the program sees it) and
    /// returns `true`.
    pub fn fixup_fault(&self, space: &mut dyn UserSpace, regs: &mut dyn UserRegs) -> bool {
        match self.take_faulted_step(space.pid(), space.tid(), regs.pc()) {
            Some(step) => {
                regs.set_pc(step.addr);
                true
            }
            None => false,
        }
    }

    /// The out-of-line step thread `tid` was in if it faulted at `pc` in its slot, taken
    /// out of its state and its slot unpinned, under the read lock.
    fn take_faulted_step(&self, pid: Pid, tid: Tid, pc: usize) -> Option<Step> {
        let reg = self.trap_read();
        let proc = reg.procs.get(pid)?;
        let thread = proc.threads.get(tid)?;
        let step = thread.lock().stepping.take_if(|s| s.slot == pc);
        if let Some(step) = &step {
            proc.xol.unpin(step.slot);
        }
        step
    }

    /// How many probed instructions this engine has executed itself in a trap (simulated
    /// or emulated) since it was made. They retire without the CPU, so a kernel that keeps
    /// an instruction count (`instret`, a cycle or time clock) adds them to it: the program
    /// then reads the same clock probed and unprobed. Breakpoints, the trampoline and
    /// instructions stepped out of line (which the CPU retires) are not counted; neither
    /// is an instruction skipped because a handler moved the pc.
    pub fn executed_in_trap(&self) -> u64 {
        self.executed_in_trap.load(Ordering::Relaxed)
    }

    /// The breakpoint trap of a user thread; `regs.pc()` is the breakpoint's address.
    ///
    /// Never panics and never claims a breakpoint it does not own; allocates nothing once
    /// the thread has trapped here before.
    pub fn handle_breakpoint(&self, space: &mut dyn UserSpace, regs: &mut dyn UserRegs) -> Trap {
        let pc = regs.pc();
        let pid = space.pid();
        let reg = self.trap_read();
        let Some(proc) = reg.procs.get(pid) else {
            return Trap::NotOurs;
        };
        if let Some(armed) = proc.armed.get(pc) {
            if armed.probe.is_removed() {
                drop(reg);
                return self.restore_removed(space, pc);
            }
            armed.probe.count_hit();
            // SAFETY: `reg` holds the read side of the registry lock.
            let hit = ArmedHit::new(armed, unsafe { armed.probe.consumers() });
            // The handlers run unlocked, and the probe may go meanwhile: its slot must
            // stay this instruction's until the thread is done with it.
            if let Some(slot) = hit.slot {
                proc.xol.pin(slot);
            }
            drop(reg);
            // Dropped here, after the hit: this frame is shallow enough for the drop glue
            // of a probe (or consumer list) whose last reference it may hold.
            let trap = self.probe_hit(space, regs, pid, &hit);
            drop(hit);
            return trap;
        }
        if proc.xol.trampoline() == Some(pc) {
            drop(reg);
            return self.trampoline_hit(space, regs);
        }
        step_end_or_other(reg, space, regs, pc, &self.trap_counters.restarted)
    }

    /// A hit on a probe unregistered while armed here: restores the original (user memory
    /// is written under the write lock only) and runs it. Decided again under that lock:
    /// another trap may have restored it, or a new probe armed it, meanwhile.
    fn restore_removed(&self, space: &mut dyn UserSpace, pc: usize) -> Trap {
        let mut reg = self.trap_write();
        let Some(proc) = reg.procs.get_mut(space.pid()) else {
            return Trap::NotOurs;
        };
        match proc.armed.get(pc) {
            // Restore lazily and run the original.
            Some(armed) if armed.probe.is_removed() => {
                let restored = proc.disarm(space, pc);
                drop(reg);
                match restored {
                    Ok(gone) => {
                        drop(gone); // the probe's last reference, maybe: outside the lock
                        Trap::Handled
                    }
                    Err(_) => Trap::NotOurs,
                }
            }
            // Armed again meanwhile: the restarted instruction traps on the new probe.
            Some(_) => Trap::Handled,
            // Restored meanwhile, unless the bytes are a breakpoint of the program's own.
            None if is_breakpoint_at(space, pc) => Trap::NotOurs,
            None => Trap::Handled,
        }
    }

    /// The rest of a hit, unlocked: entry handlers, then the return hijack and the step
    /// (out of line, or executed here) and the post handlers.
    fn probe_hit(
        &self,
        space: &mut dyn UserSpace,
        regs: &mut dyn UserRegs,
        pid: Pid,
        armed: &ArmedHit,
    ) -> Trap {
        let addr = armed.addr;
        let tid = space.tid();
        let hit = Hit { pid, tid, addr };
        run_entry_handlers(&armed.consumers, regs, &hit, false);
        if regs.pc() != addr {
            // A handler redirected the thread: skip the instruction, and its slot.
            if let Some(slot) = armed.slot {
                if let Some(proc) = self.trap_read().procs.get(pid) {
                    proc.xol.unpin(slot);
                }
            }
            return Trap::Handled;
        }
        if let Some(probe) = &armed.probe {
            let mut prepared = self.prepare_step(pid, tid, regs, armed, probe);
            if prepared == Prepared::NoThreadState {
                // A sibling call, not nested: small stack in unoptimised builds.
                prepared = self.prepare_first_step(pid, tid, regs, armed, probe);
            }
            match prepared {
                Prepared::Stepping => return Trap::Handled,
                Prepared::InTrap => {}
                // The process is gone (or, cannot happen, still no thread state).
                Prepared::Gone | Prepared::NoThreadState => return Trap::NotOurs,
            }
        }
        if !armed.insn.execute(regs) {
            return Trap::NotOurs; // an out-of-line instruction without a slot: cannot happen
        }
        self.executed_in_trap.fetch_add(1, Ordering::Relaxed);
        run_entry_handlers(&armed.consumers, regs, &hit, true);
        Trap::Handled
    }

    /// Records the return (for return probes) and starts the out-of-line step (for XOL
    /// instructions, in the slot pinned at the hit), in the thread's own state under the
    /// read lock. A thread without state yet is left to
    /// [`prepare_first_step`](Self::prepare_first_step).
    fn prepare_step(
        &self,
        pid: Pid,
        tid: Tid,
        regs: &mut dyn UserRegs,
        armed: &ArmedHit,
        probe: &Arc<Probe>,
    ) -> Prepared {
        let reg = self.trap_read();
        let Some(proc) = reg.procs.get(pid) else {
            return Prepared::Gone;
        };
        let Some(thread) = proc.threads.get(tid) else {
            return Prepared::NoThreadState;
        };
        let mut thread = thread.lock();
        if armed.wants_return {
            hijack_return(&mut thread, regs, probe, proc.xol.trampoline());
        }
        start_step(&proc.xol, &mut thread, regs, armed, probe)
    }

    /// [`prepare_step`](Self::prepare_step) for a thread with no state yet: creates it
    /// under the write lock (this allocates, once per thread).
    fn prepare_first_step(
        &self,
        pid: Pid,
        tid: Tid,
        regs: &mut dyn UserRegs,
        armed: &ArmedHit,
        probe: &Arc<Probe>,
    ) -> Prepared {
        let mut reg = self.trap_write();
        let Some(proc) = reg.procs.get_mut(pid) else {
            return Prepared::Gone;
        };
        // The state is made here, a sibling of the insertion (through `get_or_insert_with`
        // its allocation would nest under the map's frames: too deep for an unoptimised
        // build). The insert replaces nothing: `tid` has no state.
        if !proc.threads.contains(tid) {
            let fresh = new_thread();
            if let Some(replaced) = proc.threads.insert(tid, fresh) {
                drop(replaced);
            }
        }
        // `None` cannot happen (the map always finds what it just inserted) but is not a
        // panic on the trap path.
        let Some(thread) = proc.threads.get_mut(tid) else {
            return Prepared::NoThreadState;
        };
        let thread = thread.0.get_mut();
        if armed.wants_return {
            hijack_return(thread, regs, probe, proc.xol.trampoline());
        }
        start_step(&proc.xol, thread, regs, armed, probe)
    }

    fn trampoline_hit(&self, space: &mut dyn UserSpace, regs: &mut dyn UserRegs) -> Trap {
        let (pid, tid) = (space.pid(), space.tid());
        let mut sp = Some(regs.reg(abi::SP));
        let mut orig_ra = None;
        // Each popped instance (and the strong reference it may carry) is dropped in this
        // frame, shallow enough for the drop glue of a probe's last reference.
        while let Some(Popped { ri, probe }) = self.pop_return(pid, tid, sp.take()) {
            orig_ra = Some(ri.orig_ra);
            // As in Linux: return handlers see the pc the thread returns to.
            regs.set_pc(ri.orig_ra);
            if let Some((probe, consumers)) = probe {
                probe.count_return();
                let ret = Return {
                    pid,
                    tid,
                    func: probe.addr,
                    ret_addr: ri.orig_ra,
                };
                run_return_handlers(&consumers, regs, &ret);
                // One at a time: each drop glue then starts right at this frame.
                drop(consumers);
                drop(probe);
            }
            if !ri.chained {
                break;
            }
        }
        match orig_ra {
            Some(ra) => {
                regs.set_pc(ra);
                Trap::Handled
            }
            None => Trap::NotOurs, // a jump to the trampoline with no pending return
        }
    }

    /// Under the read lock: the innermost return instance of thread `tid`, taken off its
    /// stack, with its probe (if it still exists) and a snapshot of its consumers. With
    /// `sp` (the first of a trampoline hit), only if that instance is the innermost live
    /// one's once the dead frames are dropped: a callee returns with the sp it was entered
    /// with. Anything else (a second return from setjmp, a forged jump) is not a return we
    /// recorded.
    fn pop_return(&self, pid: Pid, tid: Tid, sp: Option<usize>) -> Option<Popped> {
        let reg = self.trap_read();
        let mut thread = reg.procs.get(pid)?.threads.get(tid)?.lock();
        if let Some(sp) = sp {
            thread.returns.drop_dead_frames(sp);
            if thread.returns.top().is_none_or(|ri| ri.sp != sp) {
                return None;
            }
        }
        let ri = thread.returns.pop()?;
        let probe = ri.probe.upgrade().map(|probe| {
            // SAFETY: `reg` holds the read side of the registry lock.
            let consumers = unsafe { probe.consumers() };
            (probe, consumers)
        });
        Some(Popped { ri, probe })
    }
}

/// A return instance taken off a thread's stack by [`Uprobes::pop_return`].
struct Popped {
    ri: ReturnInstance,
    /// Its probe, unless it is gone (a probe is freed only once unregistered, with no
    /// consumers left), and a snapshot of its consumers.
    probe: Option<(Arc<Probe>, Consumers)>,
}

/// Calls the return handlers of every consumer.
fn run_return_handlers(consumers: &Consumers, regs: &mut dyn UserRegs, ret: &Return) {
    for (_, consumer) in consumers.iter() {
        if let Some(handler) = &consumer.ret {
            handler(regs, ret);
        }
    }
}

/// What [`Uprobes::prepare_step`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prepared {
    /// The pc is in the XOL slot: the thread steps there.
    Stepping,
    /// The instruction is to be executed in the trap.
    InTrap,
    /// The thread has no state yet (its first return or out-of-line hit).
    NoThreadState,
    /// The process is gone.
    Gone,
}

/// Moves the pc into the slot of an out-of-line instruction, recording the step in the
/// thread's state.
fn start_step(
    xol: &Xol,
    thread: &mut ThreadState,
    regs: &mut dyn UserRegs,
    armed: &ArmedHit,
    probe: &Arc<Probe>,
) -> Prepared {
    let Some(slot) = armed.slot else {
        return Prepared::InTrap;
    };
    let stale = thread.stepping.replace(Step {
        probe: Arc::downgrade(probe),
        addr: armed.addr,
        slot,
        len: armed.insn.len(),
    });
    if let Some(stale) = stale {
        xol.unpin(stale.slot); // a step the kernel never finished
    }
    regs.set_pc(slot);
    Prepared::Stepping
}

/// The slot a hit on `armed` steps in, if its instruction runs out of line.
fn step_slot(armed: &Armed) -> Option<usize> {
    armed.slot.filter(|_| armed.insn.class() == Class::Xol)
}

/// The rest of [`Uprobes::handle_breakpoint`] under its read lock `reg`, in a function of
/// its own (small frames in unoptimised builds): the end of an out-of-line step, or a
/// breakpoint that is not (or no longer) a probe's.
fn step_end_or_other(
    reg: spin::RwLockReadGuard<'_, Registry>,
    space: &mut dyn UserSpace,
    regs: &mut dyn UserRegs,
    pc: usize,
    restarted: &AtomicU64,
) -> Trap {
    let Some(proc) = reg.procs.get(space.pid()) else {
        return Trap::NotOurs;
    };
    let step = proc.threads.get(space.tid()).and_then(|t| {
        t.lock()
            .stepping
            .take_if(|s| s.slot.wrapping_add(s.len) == pc)
    });
    if let Some(step) = step {
        proc.xol.unpin(step.slot);
        // Upgraded here, not in `finish_step`: the probe's last reference (or the consumer
        // list's) may be dropped with it, and this frame is shallow enough for that glue.
        let probe = step.probe.upgrade();
        // SAFETY: `reg` holds the read side of the registry lock.
        let consumers = probe.as_ref().map(|p| unsafe { p.consumers() });
        drop(reg);
        finish_step(space, regs, &step, consumers.as_ref());
        return Trap::Handled;
    }
    // No probe here (any more): a probe removed between the trap and the lock left
    // the original instruction behind (or this hart ran a stale copy of the
    // breakpoint): run it again. Any other breakpoint (the program's own, a jump into
    // a slot) is not ours. Decided under the read lock: every write of a breakpoint holds
    // the write side, so a probe armed here again just now cannot pass for the program's own.
    let restart = !is_breakpoint_at(space, pc);
    drop(reg);
    if restart {
        restarted.fetch_add(1, Ordering::Relaxed);
        space.flush_icache(pc, 4);
        Trap::Handled
    } else {
        Trap::NotOurs
    }
}

/// The breakpoint after an instruction stepped out of line: back to the probed code, then
/// the post handlers of its probe's `consumers` (if the probe still exists: a probe is
/// freed only once unregistered, when it has no consumers left).
fn finish_step(
    space: &mut dyn UserSpace,
    regs: &mut dyn UserRegs,
    step: &Step,
    consumers: Option<&Consumers>,
) {
    regs.set_pc(step.addr.wrapping_add(step.len));
    let Some(consumers) = consumers else {
        return;
    };
    let hit = Hit {
        pid: space.pid(),
        tid: space.tid(),
        addr: step.addr,
    };
    run_entry_handlers(consumers, regs, &hit, true);
}

/// Records the return of the call entering at `probe` and points `ra` at the trampoline.
fn hijack_return(
    thread: &mut ThreadState,
    regs: &mut dyn UserRegs,
    probe: &Arc<Probe>,
    trampoline: Option<usize>,
) {
    let Some(trampoline) = trampoline else {
        probe.count_missed();
        return;
    };
    let sp = regs.reg(abi::SP);
    thread.returns.drop_dead_frames(sp);
    if thread.returns.is_full() {
        probe.count_missed();
        return;
    }
    let ra = regs.reg(abi::RA);
    let (orig_ra, chained) = if ra == trampoline {
        match thread.returns.top() {
            Some(top) => (top.orig_ra, true),
            None => {
                probe.count_missed();
                return;
            }
        }
    } else {
        (ra, false)
    };
    thread.returns.push(ReturnInstance {
        probe: Arc::downgrade(probe),
        orig_ra,
        sp,
        chained,
    });
    regs.set_reg(abi::RA, trampoline);
}

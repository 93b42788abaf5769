//! Probes and their consumers: what a user registers, and what the engine counts.

use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::array::{Array, Text};
use crate::error::Error;
use crate::regs::UserRegs;
use crate::space::{Pid, Tid};

/// What an entry or post handler learns about the hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The process that hit the probe.
    pub pid: Pid,
    /// The thread that hit the probe.
    pub tid: Tid,
    /// The probed address.
    pub addr: usize,
}

/// What a return handler learns about the return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Return {
    /// The process.
    pub pid: Pid,
    /// The thread whose call returned.
    pub tid: Tid,
    /// The probed function (the probe address).
    pub func: usize,
    /// Where the function returns to (the caller's original `ra`).
    pub ret_addr: usize,
}

/// An entry or post handler. It may change registers; an entry handler that changes the pc
/// makes the engine skip the probed instruction (and the return probe of this call).
pub type EntryFn = dyn Fn(&mut dyn UserRegs, &Hit) + Send + Sync;
/// A return handler: runs when the probed function returns, with `a0` = the return value.
pub type ReturnFn = dyn Fn(&mut dyn UserRegs, &Return) + Send + Sync;

/// One user of a probe: up to three handlers. Build with [`Consumer::new`] and the `on_*`
/// methods.
#[derive(Clone, Default)]
pub struct Consumer {
    pub(crate) entry: Option<Arc<EntryFn>>,
    pub(crate) post: Option<Arc<EntryFn>>,
    pub(crate) ret: Option<Arc<ReturnFn>>,
}

impl Consumer {
    /// A consumer with no handlers (it still counts hits).
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` when the probed instruction is hit, before it executes.
    pub fn on_entry(mut self, f: impl Fn(&mut dyn UserRegs, &Hit) + Send + Sync + 'static) -> Self {
        self.entry = Some(Arc::new(f));
        self
    }

    /// Runs `f` after the probed instruction executed (the pc is the next instruction).
    pub fn on_post(mut self, f: impl Fn(&mut dyn UserRegs, &Hit) + Send + Sync + 'static) -> Self {
        self.post = Some(Arc::new(f));
        self
    }

    /// Runs `f` when the function whose first instruction is probed returns (uretprobe).
    pub fn on_return(
        mut self,
        f: impl Fn(&mut dyn UserRegs, &Return) + Send + Sync + 'static,
    ) -> Self {
        self.ret = Some(Arc::new(f));
        self
    }

    /// Whether this consumer wants the function's return.
    pub fn has_return(&self) -> bool {
        self.ret.is_some()
    }

    /// The same handlers (not merely equal ones) as `other`.
    pub(crate) fn same_as(&self, other: &Consumer) -> bool {
        fn same<T: ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        let any = self.entry.is_some() || self.post.is_some() || self.ret.is_some();
        any && same(&self.entry, &other.entry)
            && same(&self.post, &other.post)
            && same(&self.ret, &other.ret)
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("entry", &self.entry.is_some())
            .field("post", &self.post.is_some())
            .field("ret", &self.ret.is_some())
            .finish()
    }
}

/// The handle of one registered consumer, for [`Uprobes::unregister`](crate::Uprobes::unregister).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsumerId(pub(crate) usize);

/// Counters of one probe (all consumers together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Times the probed instruction was hit.
    pub hits: u64,
    /// Times a return handler chain ran.
    pub returns: u64,
    /// Returns not hijacked because the thread already had
    /// [`MAX_RETURN_DEPTH`](crate::MAX_RETURN_DEPTH) pending return instances.
    pub missed: u64,
}

/// Whether a probe made it into memory, as [`Uprobes::status`](crate::Uprobes::status)
/// reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeStatus {
    /// Registered; no process runs its program yet (checked against the image if the
    /// kernel set an [`ImageReader`](crate::ImageReader)).
    Pending,
    /// The last attempt to arm it succeeded.
    Armed,
    /// The last attempt to arm it (at an `exec` or [`sync`](crate::Uprobes::sync)) failed.
    Failed(Error),
}

/// The consumers of one probe, replaced as a whole on change so that the trap path takes a
/// snapshot with one reference-count increment.
pub(crate) type Consumers = Arc<Array<(ConsumerId, Consumer)>>;

/// A probe: one (path, address) with its consumers and counters.
///
/// Its consumer list has no lock of its own: the engine's registry lock guards it (read
/// side to read it, write side to replace it), so a hit, which holds the read side
/// anyway, reads it with no atomic operation but the snapshot's reference count.
pub(crate) struct Probe {
    pub path: Text,
    pub addr: usize,
    /// Read through [`consumers`](Self::consumers) and replaced through
    /// [`set_consumers`](Self::set_consumers) only, under the registry lock.
    consumers: UnsafeCell<Consumers>,
    /// Whether a consumer has a return handler (kept by `set_consumers`), for callers that
    /// do not hold the registry lock.
    wants_return: AtomicBool,
    hits: AtomicU64,
    returns: AtomicU64,
    missed: AtomicU64,
    /// Set when the last consumer left; processes still armed restore lazily.
    removed: AtomicBool,
    status: spin::Mutex<ProbeStatus>,
}

// SAFETY: every field but `consumers` is `Sync`; `consumers` is only reached under the
// engine's registry lock (see `consumers` and `set_consumers`), which makes its shared
// reads and exclusive writes exclusive of each other.
unsafe impl Sync for Probe {}

impl Probe {
    pub fn new(path: &str, addr: usize) -> Self {
        Probe {
            path: Text::new(path),
            addr,
            consumers: UnsafeCell::new(Arc::new(Array::new())),
            wants_return: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            returns: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            status: spin::Mutex::new(ProbeStatus::Pending),
        }
    }

    /// A new probe, shared (built in a function of its own: the value is big for a stack
    /// frame).
    pub fn new_shared(path: &str, addr: usize) -> Arc<Self> {
        Arc::new(Probe::new(path, addr))
    }

    /// Whether `consumer` (the same handlers) is registered on this probe.
    ///
    /// # Safety
    /// As for [`consumers`](Self::consumers).
    pub unsafe fn has_consumer(&self, consumer: &Consumer) -> bool {
        // SAFETY: the caller holds the registry lock.
        let list = unsafe { &*self.consumers.get() };
        list.iter().any(|(_, c)| c.same_as(consumer))
    }

    pub fn status(&self) -> ProbeStatus {
        *self.status.lock()
    }

    /// Records the outcome of an arming attempt; returns the previous status.
    pub fn set_status(&self, status: ProbeStatus) -> ProbeStatus {
        core::mem::replace(&mut *self.status.lock(), status)
    }

    /// A snapshot of the consumer list.
    ///
    /// # Safety
    /// The caller holds the registry lock of the engine this probe belongs to (either
    /// side) for the whole call: only its write side replaces the list.
    pub unsafe fn consumers(&self) -> Consumers {
        // SAFETY: the caller holds the registry lock, so no `set_consumers` runs now.
        unsafe { (*self.consumers.get()).clone() }
    }

    /// Replaces the consumer list; returns the old one, for the caller to retire.
    ///
    /// # Safety
    /// The caller holds the write side of the registry lock of the engine this probe
    /// belongs to: no other reference to the list exists.
    #[must_use]
    pub unsafe fn set_consumers(&self, list: Consumers) -> Consumers {
        let wants_return = list.iter().any(|(_, c)| c.has_return());
        self.wants_return.store(wants_return, Ordering::Relaxed);
        // SAFETY: the caller holds the write side: nobody reads the list meanwhile.
        unsafe { core::mem::replace(&mut *self.consumers.get(), list) }
    }

    pub fn wants_return(&self) -> bool {
        self.wants_return.load(Ordering::Relaxed)
    }

    pub fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_return(&self) {
        self.returns.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_missed(&self) {
        self.missed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> ProbeStats {
        ProbeStats {
            hits: self.hits.load(Ordering::Relaxed),
            returns: self.returns.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
        }
    }
}

/// What the engine let go of under its lock, for the entry point to drop once the lock is
/// released. Dropping the last reference of a probe or of a consumer list runs handler
/// destructors, the kernel's code, which must not run under the registry lock; and that
/// drop glue (probe, list, consumer, handler) is deep in an unoptimised build, so it must
/// start from an entry point's frame, not from the bottom of a call chain.
pub(crate) struct Retired(Array<Gone>);

/// One value [`Retired`] holds.
enum Gone {
    Probe(#[allow(dead_code)] Arc<Probe>), // held only to be dropped
    List(#[allow(dead_code)] Consumers),
}

impl Retired {
    pub const fn new() -> Self {
        Retired(Array::new())
    }

    pub fn probe(&mut self, probe: Arc<Probe>) {
        self.0.push(Gone::Probe(probe));
    }

    pub fn list(&mut self, list: Consumers) {
        self.0.push(Gone::List(list));
    }

    /// Everything retired so far, leaving this empty (allocates nothing).
    pub fn take(&mut self) -> Retired {
        core::mem::replace(self, Retired::new())
    }
}

//! Return instances: what a thread must restore when a probed function returns.

use alloc::sync::Weak;

use crate::array::Array;
use crate::probe::Probe;

/// Pending return probes per thread, as in Linux. A call deeper than this is counted as
/// missed instead of being hijacked.
pub const MAX_RETURN_DEPTH: usize = 64;

/// One hijacked call.
///
/// It refers to its probe weakly: an instance dropped on the trap path (a dead frame, a
/// thread's exit) then never drops a probe's last reference, whose drop glue (consumers,
/// handlers) is deep and runs handler destructors. Nothing is lost: a probe is freed only
/// once it is unregistered, when its consumer list is empty anyway.
#[derive(Clone)]
pub(crate) struct ReturnInstance {
    pub probe: Weak<Probe>,
    /// The caller's real return address.
    pub orig_ra: usize,
    /// `sp` at the function entry: the frame is gone once `sp` rises above it.
    pub sp: usize,
    /// Entered with `ra` already pointing at the trampoline (a tail call from another
    /// probed function): returning from it also returns from the instance below.
    pub chained: bool,
}

/// One thread's stack of return instances, innermost last. Its capacity is reserved once,
/// so pushes on the trap path never allocate.
#[derive(Clone)]
pub(crate) struct ReturnStack {
    stack: Array<ReturnInstance>,
}

impl ReturnStack {
    pub fn new() -> Self {
        ReturnStack {
            stack: Array::with_capacity(MAX_RETURN_DEPTH),
        }
    }

    pub fn is_full(&self) -> bool {
        self.stack.len() >= MAX_RETURN_DEPTH
    }

    pub fn top(&self) -> Option<&ReturnInstance> {
        self.stack.last()
    }

    pub fn push(&mut self, ri: ReturnInstance) {
        self.stack.push(ri);
    }

    pub fn pop(&mut self) -> Option<ReturnInstance> {
        self.stack.pop()
    }

    /// Drops the instances whose frames are gone (a longjmp-style exit skipped their
    /// returns): those entered with a lower stack pointer than `sp`.
    pub fn drop_dead_frames(&mut self, sp: usize) {
        while self.stack.last().is_some_and(|ri| ri.sp < sp) {
            self.stack.pop();
        }
    }
}

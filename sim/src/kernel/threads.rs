//! Threads and process lifetimes: blocking and waking, `clone` of a thread, `futex`,
//! thread exit (with the `CLONE_CHILD_CLEARTID` wake) and process exit.

use ruprobes::abi;

use crate::kernel::signals::{Disposition, SIGKILL};
use crate::kernel::syscall::{Outcome, EFAULT};
use crate::kernel::{time, ExitStatus, Pid, ProcState, ThreadState, Tid, Wait};
use crate::machine::Machine;

/// The thread pointer register (`tp`, x4).
const TP: usize = 4;
use crate::trace::{Loc, TraceEvent};

/// `EAGAIN`.
const EAGAIN: i64 = -11;
/// `ETIMEDOUT`.
const ETIMEDOUT: i64 = -110;
/// `EINVAL`.
const EINVAL: i64 = -22;

/// `clone` flags.
pub const CLONE_VM: u64 = 0x100;
/// Shares the thread group (a thread, not a process).
pub const CLONE_THREAD: u64 = 0x10000;
/// Sets `tp`.
pub const CLONE_SETTLS: u64 = 0x80000;
/// Stores the child's tid in the parent.
pub const CLONE_PARENT_SETTID: u64 = 0x100000;
/// Zeroes and wakes the child's tid word when it exits.
pub const CLONE_CHILD_CLEARTID: u64 = 0x200000;
/// Stores the child's tid in the child.
pub const CLONE_CHILD_SETTID: u64 = 0x1000000;

impl Machine {
    /// Kernel time now, in nanoseconds: the instruction clock plus idle jumps. Every time
    /// call reads this one function.
    pub(crate) fn now_ns(&self) -> u64 {
        time::now_ns(self.instruction_clock(), self.kernel.idle_ns)
    }

    /// Takes the current thread off the CPU, blocked on `wait`.
    pub(crate) fn block(&mut self, wait: Wait) {
        self.deschedule(ThreadState::Blocked(wait));
    }

    /// Wakes threads whose futex wait or sleep is over. When nothing can run but somebody
    /// sleeps, first jumps the clock to the earliest deadline. Returns whether any woke.
    pub(crate) fn wake_expired(&mut self, idle: bool) -> bool {
        let deadline = |state: ThreadState| match state {
            ThreadState::Blocked(Wait::Futex {
                deadline: Some(d), ..
            }) => Some(d),
            ThreadState::Blocked(Wait::Sleep { until }) => Some(until),
            _ => None,
        };
        if idle {
            let earliest = self
                .kernel
                .threads
                .values()
                .filter_map(|t| deadline(t.state))
                .min();
            match earliest {
                Some(d) if d > self.now_ns() => self.kernel.idle_ns += d - self.now_ns(),
                Some(_) => {}
                None => return false,
            }
        }
        let now = self.now_ns();
        let due: Vec<(Tid, i64)> = self
            .kernel
            .threads
            .values()
            .filter(|t| deadline(t.state).is_some_and(|d| d <= now))
            .map(|t| {
                let value = match t.state {
                    ThreadState::Blocked(Wait::Futex { .. }) => ETIMEDOUT,
                    _ => 0,
                };
                (t.tid, value)
            })
            .collect();
        for &(tid, value) in &due {
            self.kernel.wake(tid, value);
        }
        !due.is_empty()
    }

    /// `clone` of a thread in the current process: `flags` decide `tp` and the tid words.
    pub(crate) fn clone_thread(
        &mut self,
        pid: Pid,
        flags: u64,
        stack: u64,
        ptid: u64,
        tls: u64,
        ctid: u64,
    ) -> i64 {
        let mut regs = self.cpu_regs();
        regs.x[abi::A0] = 0;
        if stack != 0 {
            regs.x[abi::SP] = stack;
        }
        if flags & CLONE_SETTLS != 0 {
            regs.x[TP] = tls;
        }
        let tid = self.kernel.spawn_thread(pid, regs);
        let id = (tid as u32).to_le_bytes();
        if flags & CLONE_PARENT_SETTID != 0 && self.copy_out(pid, ptid, &id).is_err()
            || flags & CLONE_CHILD_SETTID != 0 && self.copy_out(pid, ctid, &id).is_err()
        {
            self.kernel.remove_thread(tid);
            return EFAULT;
        }
        if flags & CLONE_CHILD_CLEARTID != 0 {
            if let Some(t) = self.kernel.threads.get_mut(&tid) {
                t.clear_child_tid = ctid;
            }
        }
        tid as i64
    }

    /// `futex(addr, op, val, timeout, ...)`: WAIT / WAIT_BITSET and WAKE / WAKE_BITSET
    /// (the bitset is taken as "all"), private or not (processes share no memory here).
    pub(crate) fn sys_futex(&mut self, pid: Pid, args: [u64; 6]) -> Outcome {
        let [addr, op, val, timeout, _, _] = args;
        let realtime = op & 256 != 0;
        match op & 0x7f {
            // FUTEX_WAIT, FUTEX_WAIT_BITSET
            cmd @ (0 | 9) => {
                let word = match self.copy_in(pid, addr, 4) {
                    Ok(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    Err(e) => return Outcome::Return(e),
                };
                if word != val as u32 {
                    return Outcome::Return(EAGAIN);
                }
                let deadline = if timeout == 0 {
                    None
                } else {
                    let Some(ns) = self
                        .copy_in(pid, timeout, 16)
                        .ok()
                        .and_then(|b| time::from_timespec(b.try_into().ok()?))
                    else {
                        return Outcome::Return(EINVAL);
                    };
                    // FUTEX_WAIT's timeout is relative; WAIT_BITSET's is absolute on the
                    // monotonic clock (or the realtime one with FUTEX_CLOCK_REALTIME).
                    Some(if cmd == 0 {
                        self.now_ns().saturating_add(ns)
                    } else if realtime {
                        ns.saturating_sub(time::clock_ns(time::CLOCK_REALTIME, 0))
                    } else {
                        ns
                    })
                };
                self.block(Wait::Futex { addr, deadline });
                Outcome::Switched
            }
            // FUTEX_WAKE, FUTEX_WAKE_BITSET
            1 | 10 => Outcome::Return(self.futex_wake(pid, addr, val as usize) as i64),
            _ => self.unknown_call(pid, 98, Some("futex op")),
        }
    }

    /// Wakes up to `n` threads of `pid` waiting on the futex at `addr`; returns how many.
    pub(crate) fn futex_wake(&mut self, pid: Pid, addr: u64, n: usize) -> usize {
        let waiting: Vec<Tid> = self
            .kernel
            .threads
            .values()
            .filter(|t| {
                t.pid == pid
                    && matches!(t.state, ThreadState::Blocked(Wait::Futex { addr: a, .. }) if a == addr)
            })
            .map(|t| t.tid)
            .take(n)
            .collect();
        for &tid in &waiting {
            self.kernel.wake(tid, 0);
        }
        waiting.len()
    }

    /// Linux `exit`: ends the current thread; the last one ends its process.
    pub(crate) fn exit_thread(&mut self, pid: Pid, tid: Tid, code: i32) {
        let alone = self
            .kernel
            .procs
            .get(&pid)
            .is_none_or(|p| p.threads.len() <= 1);
        if alone {
            self.end_process(pid, ExitStatus::Exited(code));
            return;
        }
        let clear = self
            .kernel
            .threads
            .get(&tid)
            .map_or(0, |t| t.clear_child_tid);
        if clear != 0 && self.copy_out(pid, clear, &0u32.to_le_bytes()).is_ok() {
            self.futex_wake(pid, clear, 1);
        }
        self.thread_exit_hook(pid, tid);
        self.kernel.remove_thread(tid);
    }

    /// Kills the current process with `signal`; the trace names its pc as the place.
    pub(crate) fn kill(&mut self, signal: i32) {
        if let Some(pid) = self.kernel.current_pid() {
            self.end_process(pid, ExitStatus::Killed(signal));
        }
    }

    /// Sends `signal` to process `pid` (0: just check it exists). Returns 0 or -ESRCH.
    pub(crate) fn send_signal(&mut self, pid: Pid, signal: u64) -> i64 {
        let Some(proc) = self
            .kernel
            .procs
            .get(&pid)
            .filter(|p| p.state == ProcState::Alive)
        else {
            return -3; // ESRCH
        };
        if signal == 0 {
            return 0;
        }
        if signal > 64 {
            return EINVAL;
        }
        match proc.signals.disposition(signal as usize) {
            Disposition::Ignore => 0,
            Disposition::Kill => {
                self.end_process(pid, ExitStatus::Killed(signal as i32));
                0
            }
            Disposition::HandlerNotRun => {
                self.diagnostics.push(format!(
                    "pid {pid}: signal {signal} has a handler, which the simulator does not run: default action"
                ));
                let status = if signal == SIGKILL as u64 {
                    SIGKILL
                } else {
                    signal as i32
                };
                self.end_process(pid, ExitStatus::Killed(status));
                0
            }
        }
    }

    /// Ends process `pid` (every thread): trace, engine hook, wake a waiting parent.
    pub(crate) fn end_process(&mut self, pid: Pid, status: ExitStatus) {
        let Some(proc) = self.kernel.procs.get(&pid) else {
            return;
        };
        if proc.state != ProcState::Alive {
            return;
        }
        let threads = proc.threads.clone();
        let running_here = self
            .kernel
            .current
            .is_some_and(|tid| threads.contains(&tid));
        let regs = if running_here {
            self.cpu_regs()
        } else {
            threads
                .first()
                .and_then(|t| self.kernel.threads.get(t))
                .map(|t| t.regs)
                .unwrap_or_default()
        };
        if running_here {
            self.last_exit_regs = Some(regs);
        }
        // Where a killed process stopped, named in its own (possibly exec'd) image.
        let at = match self.kernel.procs.get(&pid) {
            Some(proc) => proc.image.location(regs.pc),
            None => Loc {
                addr: regs.pc,
                symbol: None,
            },
        };
        for tid in threads {
            self.kernel.remove_thread(tid);
        }
        if let Some(p) = self.kernel.procs.get_mut(&pid) {
            p.state = ProcState::Zombie(status);
        }
        self.trace.push(match status {
            ExitStatus::Exited(code) => TraceEvent::Exit {
                pid: pid as u64,
                code,
            },
            ExitStatus::Killed(signal) => TraceEvent::Killed {
                pid: pid as u64,
                signal,
                at: at.clone(),
            },
        });
        self.exit_hook(pid);
        if pid == 1 {
            self.main_status = Some(status);
            if let ExitStatus::Killed(signal) = status {
                let name = ruprobes_trace::signal_name(signal)
                    .map_or_else(|| format!("signal {signal}"), str::to_string);
                self.kill_note = Some(format!("killed by {name} at pc={:#x} ({at})", regs.pc));
            }
        }
        self.wake_parent(pid, status);
    }

    /// Reaps `child` for a parent thread blocked waiting for it, if there is one.
    fn wake_parent(&mut self, child: Pid, status: ExitStatus) {
        let Some(parent) = self.kernel.procs.get(&child).and_then(|p| p.parent) else {
            return;
        };
        let waiter = self.kernel.threads.values().find_map(|t| match t.state {
            ThreadState::Blocked(Wait::Child { target, status_ptr })
                if t.pid == parent && (target == -1 || target == child as i64) =>
            {
                Some((t.tid, status_ptr))
            }
            _ => None,
        });
        if let Some((tid, status_ptr)) = waiter {
            let value = self.reap(parent, child, status, status_ptr);
            self.kernel.wake(tid, value);
        }
    }
}

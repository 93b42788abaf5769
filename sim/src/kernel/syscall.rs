//! The system calls (rCore-Tutorial-v3 numbering) and process exit.

use ruprobes::abi;

use crate::kernel::aspace::{Access, AddressSpace};
use crate::kernel::{initial_regs, ExitStatus, Pid, ProcState, Regs};
use crate::machine::Machine;
use crate::mem::PAGE_SIZE;
use crate::trace::{Loc, TraceEvent};

/// `write(fd, buf, len)`.
pub const SYS_WRITE: u64 = 64;
/// `exit(code)`.
pub const SYS_EXIT: u64 = 93;
/// `yield()`.
pub const SYS_YIELD: u64 = 124;
/// `get_time()`: milliseconds.
pub const SYS_GET_TIME: u64 = 169;
/// `getpid()`.
pub const SYS_GETPID: u64 = 172;
/// `fork()`.
pub const SYS_FORK: u64 = 220;
/// `exec(path)`.
pub const SYS_EXEC: u64 = 221;
/// `waitpid(pid, status)`.
pub const SYS_WAITPID: u64 = 260;

/// The answer to an unknown call.
const ENOSYS: i64 = -38;
/// A bad user pointer.
const EFAULT: i64 = -14;
/// A file descriptor other than 1 and 2.
const EBADF: i64 = -9;
/// Longest `exec` path.
const MAX_PATH: usize = 256;
/// Simulated time runs at this many instructions per millisecond (100 MIPS).
const INSNS_PER_MS: u64 = 100_000;

/// What a call does to the caller.
enum Outcome {
    /// Continue with this value in `a0`.
    Return(i64),
    /// The process left the CPU (yield, block, exit) or its registers were replaced (exec).
    Switched,
}

impl Machine {
    /// Performs the `ecall` the current process stopped at (`pc` is at the `ecall`).
    pub(crate) fn syscall(&mut self) {
        let Some(pid) = self.kernel.current else {
            return;
        };
        let nr = self.cpu.x[17];
        let [a0, a1, a2] = [
            self.cpu.x[abi::A0],
            self.cpu.x[abi::A0 + 1],
            self.cpu.x[abi::A0 + 2],
        ];
        self.trace.push(TraceEvent::Syscall {
            pid: pid as u64,
            nr,
        });
        let at_ecall = self.cpu.pc;
        self.cpu.pc += 4;
        let outcome = match nr {
            SYS_WRITE => Outcome::Return(self.sys_write(pid, a0, a1, a2)),
            SYS_EXIT => {
                self.cpu.pc = at_ecall;
                self.exit_current(ExitStatus::Exited(a0 as i32));
                Outcome::Switched
            }
            SYS_YIELD => {
                self.cpu.x[abi::A0] = 0;
                self.deschedule(ProcState::Ready);
                Outcome::Switched
            }
            SYS_GET_TIME => Outcome::Return((self.cpu.instret() / INSNS_PER_MS) as i64),
            SYS_GETPID => Outcome::Return(pid as i64),
            SYS_FORK => Outcome::Return(self.sys_fork(pid)),
            SYS_EXEC => self.sys_exec(pid, a0),
            SYS_WAITPID => self.sys_waitpid(pid, a0 as i64, a1),
            _ => {
                self.diagnostics.push(format!(
                    "pid {pid}: unknown system call {nr} at pc={at_ecall:#x}"
                ));
                Outcome::Return(ENOSYS)
            }
        };
        if let Outcome::Return(value) = outcome {
            self.cpu.x[abi::A0] = value as u64;
        }
    }

    fn sys_write(&mut self, pid: Pid, fd: u64, buf: u64, len: u64) -> i64 {
        if fd != 1 && fd != 2 {
            return EBADF;
        }
        let Some(proc) = self.kernel.procs.get(&pid) else {
            return EFAULT;
        };
        // Copy page by page, so a huge length costs nothing until it is really mapped.
        let mut bytes = Vec::new();
        let mut chunk = [0u8; PAGE_SIZE as usize];
        while (bytes.len() as u64) < len {
            let at = buf.wrapping_add(bytes.len() as u64);
            let n = ((PAGE_SIZE - at % PAGE_SIZE).min(len - bytes.len() as u64)) as usize;
            if proc
                .aspace
                .read(&self.mem, at, &mut chunk[..n], Access::UserRead)
                .is_err()
            {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        if bytes.is_empty() && len > 0 {
            return EFAULT;
        }
        self.output(&bytes);
        bytes.len() as i64
    }

    fn sys_fork(&mut self, parent: Pid) -> i64 {
        let Some(proc) = self.kernel.procs.get(&parent) else {
            return -1;
        };
        let image = proc.image.clone();
        let aspace = match proc.aspace.fork(&mut self.mem) {
            Ok(aspace) => aspace,
            Err(e) => {
                self.diagnostics
                    .push(format!("pid {parent}: fork failed: {e}"));
                return -1;
            }
        };
        let mut regs = Regs::of(&self.cpu);
        regs.x[abi::A0] = 0;
        let child = self.kernel.spawn(Some(parent), image, aspace, regs);
        self.fork_hook(parent, child);
        child as i64
    }

    fn sys_exec(&mut self, pid: Pid, path_ptr: u64) -> Outcome {
        let Some(name) = self.user_string(pid, path_ptr) else {
            return Outcome::Return(-1);
        };
        let image = match self.image(&name) {
            Ok(image) => image,
            Err(e) => {
                self.diagnostics.push(format!("pid {pid}: exec: {e}"));
                return Outcome::Return(-1);
            }
        };
        let aspace = match AddressSpace::with_image(&mut self.mem, &image) {
            Ok(aspace) => aspace,
            Err(e) => {
                self.diagnostics
                    .push(format!("pid {pid}: exec {name}: {e}"));
                return Outcome::Return(-1);
            }
        };
        let Some(proc) = self.kernel.procs.get_mut(&pid) else {
            return Outcome::Return(-1);
        };
        let old = std::mem::replace(&mut proc.aspace, aspace);
        proc.image = image.clone();
        old.free(&mut self.mem);
        let regs = initial_regs(image.entry);
        regs.load_into(&mut self.cpu);
        self.cpu.set_page_table(proc.aspace.root);
        self.exec_hook(pid);
        Outcome::Switched
    }

    /// A NUL-terminated string of at most [`MAX_PATH`] bytes from user memory.
    fn user_string(&self, pid: Pid, addr: u64) -> Option<String> {
        let proc = self.kernel.procs.get(&pid)?;
        let mut bytes = Vec::new();
        for i in 0..MAX_PATH as u64 {
            let mut b = [0u8];
            proc.aspace
                .read(&self.mem, addr.wrapping_add(i), &mut b, Access::UserRead)
                .ok()?;
            if b[0] == 0 {
                return String::from_utf8(bytes).ok();
            }
            bytes.push(b[0]);
        }
        None
    }

    fn sys_waitpid(&mut self, pid: Pid, target: i64, status_ptr: u64) -> Outcome {
        let matching: Vec<(Pid, ProcState)> = self
            .kernel
            .children(pid, target)
            .map(|c| (c.pid, c.state))
            .collect();
        if matching.is_empty() {
            return Outcome::Return(-1);
        }
        let exited = matching.into_iter().find_map(|(child, state)| match state {
            ProcState::Zombie(status) => Some((child, status)),
            _ => None,
        });
        match exited {
            Some((child, status)) => Outcome::Return(self.reap(pid, child, status, status_ptr)),
            None => {
                self.deschedule(ProcState::Blocked { target, status_ptr });
                Outcome::Switched
            }
        }
    }

    /// Removes the exited `child` of `parent`, storing its code at `status_ptr` (if not
    /// null) in the parent's memory. Returns the child's pid (or -14 if the store faulted).
    fn reap(&mut self, parent: Pid, child: Pid, status: ExitStatus, status_ptr: u64) -> i64 {
        if let Some(proc) = self.kernel.procs.remove(&child) {
            proc.aspace.free(&mut self.mem);
        }
        if status_ptr != 0 {
            let code = status.wait_code().to_le_bytes();
            let stored = self.kernel.procs.get(&parent).map(|p| {
                p.aspace
                    .write(&mut self.mem, status_ptr, &code, Access::UserWrite)
            });
            if !matches!(stored, Some(Ok(()))) {
                return EFAULT;
            }
        }
        child as i64
    }

    /// Kills the current process with `signal`; the trace names its pc as the place.
    pub(crate) fn kill(&mut self, signal: i32) {
        self.exit_current(ExitStatus::Killed(signal));
    }

    /// Ends the current process: trace, engine hook, wake a waiting parent.
    pub(crate) fn exit_current(&mut self, status: ExitStatus) {
        let Some(pid) = self.kernel.current else {
            return;
        };
        let pc = self.cpu.pc;
        self.last_exit_regs = Some(Regs::of(&self.cpu));
        // Where a killed process stopped, named in its own (possibly exec'd) image.
        let at = match self.kernel.procs.get(&pid) {
            Some(proc) => proc.image.location(pc),
            None => Loc {
                addr: pc,
                symbol: None,
            },
        };
        self.deschedule(ProcState::Zombie(status));
        self.trace.push(match status {
            ExitStatus::Exited(code) => TraceEvent::Exit {
                pid: pid as u64,
                code,
            },
            ExitStatus::Killed(signal) => TraceEvent::Killed {
                pid: pid as u64,
                signal,
                at,
            },
        });
        self.exit_hook(pid);
        if pid == 1 {
            self.main_status = Some(status);
        }
        let parent = self.kernel.procs.get(&pid).and_then(|p| p.parent);
        let Some(parent) = parent else { return };
        let Some(waiting) = self.kernel.procs.get(&parent) else {
            return;
        };
        if let ProcState::Blocked { target, status_ptr } = waiting.state {
            if target == -1 || target == pid as i64 {
                let value = self.reap(parent, pid, status, status_ptr);
                if let Some(p) = self.kernel.procs.get_mut(&parent) {
                    p.regs.x[abi::A0] = value as u64;
                    p.state = ProcState::Ready;
                    self.kernel.ready.push_back(parent);
                }
            }
        }
    }
}

//! The teaching-kernel personality: rCore-Tutorial-v3's system-call numbers.
//!
//! `exec(path, args)` finds apps by name (see [`Machine::image`]); `args`, when not null, is
//! a null-terminated array of string pointers that the new program gets as `a0` = argc and
//! `a1` = argv. `waitpid` blocks until the child exits and stores its exit code (128 +
//! signal if it was killed). Calls Linux shares the numbers of behave alike: write 64,
//! read 63 (stdin), exit 93, getpid 172.

use crate::kernel::syscall::Outcome;
use crate::kernel::{ExitStatus, Pid, ThreadState};
use crate::machine::Machine;

/// `read(fd, buf, len)`.
pub const SYS_READ: u64 = 63;
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
/// `exec(path, args)`.
pub const SYS_EXEC: u64 = 221;
/// `waitpid(pid, status)`.
pub const SYS_WAITPID: u64 = 260;

impl Machine {
    /// One call of the teaching personality.
    pub(crate) fn teaching_call(&mut self, pid: Pid, nr: u64, args: [u64; 6]) -> Outcome {
        let [a0, a1, a2, ..] = args;
        match nr {
            SYS_READ => Outcome::Return(self.sys_read(pid, a0, a1, a2)),
            SYS_WRITE => Outcome::Return(self.sys_write(pid, a0, a1, a2)),
            SYS_EXIT => {
                self.cpu.pc -= 4;
                self.end_process(pid, ExitStatus::Exited(a0 as i32));
                Outcome::Switched
            }
            SYS_YIELD => {
                self.cpu.x[ruprobes::abi::A0] = 0;
                self.deschedule(ThreadState::Ready);
                Outcome::Switched
            }
            SYS_GET_TIME => Outcome::Return((self.now_ns() / 1_000_000) as i64),
            SYS_GETPID => Outcome::Return(pid as i64),
            SYS_FORK => {
                let tid = self.kernel.current.unwrap_or(pid);
                Outcome::Return(self.fork_current(pid, tid, 0).map_or(-1, |c| c as i64))
            }
            SYS_EXEC => self.teaching_exec(pid, a0, a1),
            SYS_WAITPID => self.sys_wait(pid, a0 as i64, a1, false, false),
            _ => self.unknown_call(pid, nr, None),
        }
    }

    fn teaching_exec(&mut self, pid: Pid, path: u64, args: u64) -> Outcome {
        let Ok(name) = self.user_string(pid, path) else {
            return Outcome::Return(-1);
        };
        let args = match self.user_strings(pid, args) {
            Ok(args) => args,
            Err(_) => return Outcome::Return(-1),
        };
        let image = match self.exec_image(&name) {
            Ok(image) => image,
            Err(e) => {
                self.diagnostics.push(format!("pid {pid}: exec: {e}"));
                return Outcome::Return(-1);
            }
        };
        match self.exec_current(pid, image, None, &args) {
            Ok(()) => Outcome::Switched,
            Err(e) => {
                self.diagnostics.push(format!("pid {pid}: {e}"));
                Outcome::Return(-1)
            }
        }
    }
}

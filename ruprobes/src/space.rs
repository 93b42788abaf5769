//! The kernel side of the engine: one process's user space.

use crate::error::Fault;

/// A process identifier, as the kernel numbers them.
pub type Pid = usize;
/// A thread identifier, unique across the kernel.
pub type Tid = usize;

/// The pid that means "no process": what [`UserSpace::pid`] (and the seed face's
/// `os_current_pid`) return when no user process is current. Every other value, 0
/// included, is a real process (rCore's initproc is pid 0).
pub const NO_PID: Pid = usize::MAX;

/// Reads the bytes that the image of the program at `path` holds at user address `addr`
/// (what the process would see after `exec`), without a process running it: lets
/// registration refuse a probe on an instruction the engine cannot take before the program
/// runs. Set with [`Uprobes::set_image_reader`](crate::Uprobes::set_image_reader).
///
/// Must not panic: return a [`Fault`] for an unknown path or an address outside the image.
pub type ImageReader = fn(path: &str, addr: usize, buf: &mut [u8]) -> Result<(), Fault>;

/// What the kernel provides to the engine for one process (the current one, on a trap or a
/// register call). Every call may fail; the engine rolls back and reports, never panics.
///
/// A kernel implements this over its page tables; the host simulator over emulated Sv39
/// tables; the unit tests over a `Vec<u8>`.
pub trait UserSpace {
    /// The process whose memory this is, or [`NO_PID`] when there is none.
    fn pid(&self) -> Pid;
    /// The thread that trapped or called (return probes are tracked per thread).
    fn tid(&self) -> Tid;
    /// Copies user memory at `addr` into `buf`.
    fn read(&mut self, addr: usize, buf: &mut [u8]) -> Result<(), Fault>;
    /// Copies `data` to user memory at `addr` with kernel privilege: it must also succeed
    /// on read-only text pages (the way a debugger writes a breakpoint).
    fn write(&mut self, addr: usize, data: &[u8]) -> Result<(), Fault>;
    /// Whether `addr` lies in a user-executable mapping. Kernels that cannot tell keep the
    /// default; reading the instruction still has to succeed.
    fn is_executable(&mut self, _addr: usize) -> bool {
        true
    }
    /// Maps one fresh 4 KiB page, user readable and executable (not writable by the user),
    /// in this process and returns its user address. Called at most once per 511 probes
    /// that need out-of-line stepping, plus once for the return trampoline.
    fn map_xol_page(&mut self) -> Result<usize, Fault>;
    /// Makes instruction fetch of `addr..addr + len` see the bytes just written, on every
    /// hart that runs this process (`fence.i`, and a remote fence on SMP). Also called for a
    /// breakpoint that memory no longer holds, before it is restarted: the thread traps
    /// again until fetch sees memory. Under QEMU with several harts `fence.i` is not
    /// enough; store the bytes again unchanged first (docs/PORTING.md §2).
    fn flush_icache(&mut self, addr: usize, len: usize);
}

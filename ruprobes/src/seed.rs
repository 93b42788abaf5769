//! The original ruprobes face: free functions over one global engine, reaching user memory
//! through functions the kernel exports with `#[unsafe(no_mangle)] extern "C"`.
//!
//! The kernel defines (all FFI-safe):
//!
//! ```text
//! #[unsafe(no_mangle)] pub extern "C" fn os_copy_from_user(usr_addr: usize, kern_buf: *mut u8, len: usize) -> i32;
//! #[unsafe(no_mangle)] pub extern "C" fn os_copy_to_user(usr_addr: usize, kern_buf: *const u8, len: usize) -> i32;
//! #[unsafe(no_mangle)] pub extern "C" fn os_current_pid() -> usize;
//! #[unsafe(no_mangle)] pub extern "C" fn os_current_tid() -> usize;
//! #[unsafe(no_mangle)] pub extern "C" fn os_current_exec_path(buf: *mut u8, cap: usize) -> isize;
//! #[unsafe(no_mangle)] pub extern "C" fn os_map_xol_page() -> usize;
//! #[unsafe(no_mangle)] pub extern "C" fn os_flush_icache(addr: usize, len: usize);
//! ```
//!
//! The copy functions return 0 on success and non-zero on a fault, and must never panic on
//! an unmapped address (check the page tables; do not unwrap a translation);
//! `os_copy_to_user` must also write read-only text pages. `os_current_exec_path` writes
//! the current process's executable path (UTF-8, no NUL) and returns its length, or a
//! negative value if there is none. `os_map_xol_page` maps a fresh user R+X page and
//! returns its address, or 0. When no user process is current, `os_current_pid` returns
//! [`NO_PID`] (`usize::MAX`); every other value, 0 included, is a process.
//!
//! Handlers are built with [`seed_handler`]. A return handler (`ProbeType::SyncFunc`'s
//! `post_handler`) gets the function's address as its `usize` argument, and `cx.sepc` holds
//! the address the function returns to (the caller's original `ra`), where the thread
//! resumes; `cx.x[10]` is the return value.
//!
//! Nothing fails silently: [`uprobe_register`] checks a probe on a program that is not
//! running against its image when the kernel set a reader ([`uprobes_set_image_reader`]),
//! and [`uprobe_status`] reports whether a probe is armed, waiting, or failed and why.

use alloc::string::String;
use alloc::sync::Arc;

use crate::array::{Array, Text};
use crate::engine::{Trap, Uprobes};
use crate::error::{Error, Fault};
use crate::probe::{Consumer, ConsumerId, ProbeStatus};
use crate::regs::{TrapContext, UserRegs};
#[cfg(doc)]
use crate::space::NO_PID;
use crate::space::{ImageReader, Pid, Tid, UserSpace};

extern "C" {
    fn os_copy_from_user(usr_addr: usize, kern_buf: *mut u8, len: usize) -> i32;
    fn os_copy_to_user(usr_addr: usize, kern_buf: *const u8, len: usize) -> i32;
    fn os_current_pid() -> usize;
    fn os_current_tid() -> usize;
    fn os_current_exec_path(buf: *mut u8, cap: usize) -> isize;
    fn os_map_xol_page() -> usize;
    fn os_flush_icache(addr: usize, len: usize);
}

static ENGINE: Uprobes = Uprobes::new();

/// `(path, address, consumer)` of every registration made through this face.
static REGISTRATIONS: spin::Mutex<Array<(String, usize, ConsumerId)>> =
    spin::Mutex::new(Array::new());

/// The global engine behind the free functions, for kernels that mix both faces.
pub fn engine() -> &'static Uprobes {
    &ENGINE
}

/// How the seed registered a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeType {
    /// Any instruction: `handler` before it, `post_handler` after it.
    Insn,
    /// A function entry: `handler` at the entry, `post_handler` when the function returns.
    SyncFunc,
}

/// A seed handler: called with the trap frame and the probed address. Build one with
/// [`seed_handler`] (the kernel then needs no `spin` of its own).
///
/// The type is the original crate's: an `FnMut` behind its own mutex, which each call
/// takes. So hits of one probe on several harts run its handler one at a time (they wait
/// for the handler, never for the engine, whose trap path only reads shared state), and a
/// handler must not hit a probe with the same handler itself. Handlers that should run
/// side by side on every hart are `Fn` consumers of the trait face, registered on
/// [`engine()`] ([`Consumer`]): they take no lock.
pub type SeedHandler = Arc<spin::Mutex<dyn FnMut(&mut TrapContext, usize) + Send>>;

/// Wraps a function or closure as a [`SeedHandler`].
pub fn seed_handler(f: impl FnMut(&mut TrapContext, usize) + Send + 'static) -> SeedHandler {
    Arc::new(spin::Mutex::new(f))
}

/// The longest executable path [`uprobes_init`] reads.
const PATH_MAX: usize = 4096;

/// The current process, through the kernel's exported functions.
struct KernelSpace;

impl UserSpace for KernelSpace {
    fn pid(&self) -> Pid {
        // SAFETY: a plain query the kernel exports with this signature.
        unsafe { os_current_pid() }
    }
    fn tid(&self) -> Tid {
        // SAFETY: a plain query the kernel exports with this signature.
        unsafe { os_current_tid() }
    }
    fn read(&mut self, addr: usize, buf: &mut [u8]) -> Result<(), Fault> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        match unsafe { os_copy_from_user(addr, buf.as_mut_ptr(), buf.len()) } {
            0 => Ok(()),
            _ => Err(Fault { addr }),
        }
    }
    fn write(&mut self, addr: usize, data: &[u8]) -> Result<(), Fault> {
        // SAFETY: `data` is valid for reads of `data.len()` bytes.
        match unsafe { os_copy_to_user(addr, data.as_ptr(), data.len()) } {
            0 => Ok(()),
            _ => Err(Fault { addr }),
        }
    }
    fn map_xol_page(&mut self) -> Result<usize, Fault> {
        // SAFETY: the kernel maps a page in the current process and returns its address.
        match unsafe { os_map_xol_page() } {
            0 => Err(Fault { addr: 0 }),
            page => Ok(page),
        }
    }
    fn flush_icache(&mut self, addr: usize, len: usize) {
        // SAFETY: a cache maintenance call with no memory effects on our side.
        unsafe { os_flush_icache(addr, len) }
    }
}

/// Calls a seed handler on `regs`, without a copy when they are a [`TrapContext`].
fn call(handler: &SeedHandler, regs: &mut dyn UserRegs, addr: usize) {
    let mut handler = handler.lock();
    match regs.as_trap_context() {
        Some(cx) => handler(cx, addr),
        None => call_on_copy(&mut *handler, regs, addr),
    }
}

/// Calls `handler` on a [`TrapContext`] copy of `regs`, stored back after (its own
/// function: the copy is a big value).
fn call_on_copy(
    handler: &mut (dyn FnMut(&mut TrapContext, usize) + Send),
    regs: &mut dyn UserRegs,
    addr: usize,
) {
    let mut cx = TrapContext::from_regs(regs);
    handler(&mut cx, addr);
    cx.store_into(regs);
}

/// Registers a probe on `addr` of the program at `path`; arms it in the current process if
/// that process runs `path`, and in every later `exec` of it. Returns 0, or a negative errno
/// ([`Error::errno`](crate::Error::errno)).
pub fn uprobe_register(
    path: String,
    addr: usize,
    handler: SeedHandler,
    post_handler: Option<SeedHandler>,
    ptype: ProbeType,
) -> isize {
    let consumer = seed_consumer(handler, post_handler, ptype);
    let registered = ENGINE.register(&path, addr, consumer, Some(&mut KernelSpace));
    // The outcome is handled in a sibling call: this frame is under the whole arming.
    outcome(path, addr, registered)
}

/// What [`uprobe_register`] returns for `registered`; remembers a registration, logs a
/// refusal.
fn outcome(path: String, addr: usize, registered: Result<ConsumerId, Error>) -> isize {
    match registered {
        Ok(id) => {
            remember(path, addr, id);
            0
        }
        Err(e) => {
            warn_register_failed(&path, addr, e);
            e.errno()
        }
    }
}

/// Records a registration made through this face, for [`uprobe_unregister`].
fn remember(path: String, addr: usize, id: ConsumerId) {
    REGISTRATIONS.lock().push((path, addr, id));
}

/// The consumer that calls a seed probe's handlers.
fn seed_consumer(
    handler: SeedHandler,
    post_handler: Option<SeedHandler>,
    ptype: ProbeType,
) -> Consumer {
    let consumer = Consumer::new().on_entry(move |regs, hit| call(&handler, regs, hit.addr));
    match (post_handler, ptype) {
        (None, _) => consumer,
        (Some(post), ProbeType::Insn) => {
            consumer.on_post(move |regs, hit| call(&post, regs, hit.addr))
        }
        (Some(post), ProbeType::SyncFunc) => {
            consumer.on_return(move |regs, ret| call(&post, regs, ret.func))
        }
    }
}

/// Logs a refused registration (its own function: formatting has a big frame).
fn warn_register_failed(path: &str, addr: usize, e: crate::Error) {
    log::warn!("ruprobes: uprobe_register {path}:{addr:#x}: {e}");
}

/// Removes every probe registered through [`uprobe_register`] on `addr` of `path`, restoring
/// the instruction in the current process. Returns 0, or a negative errno.
pub fn uprobe_unregister(path: &str, addr: usize) -> isize {
    let ids = take_registrations(path, addr);
    if ids.is_empty() {
        return crate::Error::NotRegistered.errno();
    }
    let mut result = 0;
    for &id in ids.iter() {
        if let Err(e) = ENGINE.unregister(id, Some(&mut KernelSpace)) {
            result = e.errno();
        }
    }
    result
}

/// Forgets the registrations on `addr` of `path`; their consumers.
fn take_registrations(path: &str, addr: usize) -> Array<ConsumerId> {
    let mut ids = Array::new();
    let mut regs = REGISTRATIONS.lock();
    let mut i = 0;
    while let Some((p, a, id)) = regs.get(i) {
        if p == path && *a == addr {
            ids.push(*id);
            regs.remove(i);
        } else {
            i += 1;
        }
    }
    ids
}

/// Call in `sys_exec` once the new image is mapped (and for the first process): arms the
/// probes of the new program.
pub fn uprobes_init() {
    let Some(path) = exec_path() else {
        warn_no_exec_path();
        return;
    };
    if let Err(e) = ENGINE.on_exec(&mut KernelSpace, path.as_str()) {
        warn_exec_failed(path.as_str(), e);
    }
}

/// The current process's executable path. Read in a function of its own, into a buffer on
/// the heap: a path buffer on the stack would be the biggest frame of the exec path, and
/// the reading would add to the frame above `on_exec`.
fn exec_path() -> Option<Text> {
    let mut buf = Array::filled(PATH_MAX, 0u8);
    current_exec_path(&mut buf).map(Text::new)
}

/// Logs that the current process has no executable path (its own function: formatting
/// has a big frame).
fn warn_no_exec_path() {
    log::warn!("ruprobes: uprobes_init: no executable path for the current process");
}

/// The current process's executable path, read into `buf`.
fn current_exec_path(buf: &mut [u8]) -> Option<&str> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let len = unsafe { os_current_exec_path(buf.as_mut_ptr(), buf.len()) };
    let bytes = buf.get(..usize::try_from(len).ok()?)?;
    core::str::from_utf8(bytes).ok()
}

/// Logs a failed exec hook (its own function: formatting has a big frame).
fn warn_exec_failed(path: &str, e: Error) {
    log::warn!("ruprobes: uprobes_init {path}: {e}");
}

/// Call on a breakpoint trap (`scause` = 3) from user mode. Returns `false` if the
/// breakpoint is not ruprobes' (deliver SIGTRAP).
pub fn uprobes_trap_handler(cx: &mut TrapContext) -> bool {
    uprobes_trap_handler_regs(cx)
}

/// [`uprobes_trap_handler`] on the kernel's own trap frame, through [`UserRegs`]: for a
/// kernel whose frame is not [`TrapContext`] (rCore's has `sstatus: riscv::Sstatus`).
/// Handlers then get a [`TrapContext`] copy of the registers, stored back after each.
pub fn uprobes_trap_handler_regs(regs: &mut dyn UserRegs) -> bool {
    ENGINE.handle_breakpoint(&mut KernelSpace, regs) == Trap::Handled
}

/// Call on any other user fault before delivering it: moves the pc of a thread that faulted
/// in an out-of-line slot back to the probed address. Returns whether it did.
pub fn uprobes_fixup_fault(cx: &mut TrapContext) -> bool {
    uprobes_fixup_fault_regs(cx)
}

/// [`uprobes_fixup_fault`] on the kernel's own trap frame, through [`UserRegs`].
pub fn uprobes_fixup_fault_regs(regs: &mut dyn UserRegs) -> bool {
    ENGINE.fixup_fault(&mut KernelSpace, regs)
}

/// Whether the probes registered on `addr` of `path` are in memory: 0 when armed, 1 when
/// waiting for the program to run, or the negative errno of why arming failed (-ENOENT
/// when nothing is registered there). See [`Uprobes::status`].
pub fn uprobe_status(path: &str, addr: usize) -> isize {
    let id = REGISTRATIONS
        .lock()
        .iter()
        .find(|(p, a, _)| p == path && *a == addr)
        .map(|r| r.2);
    match id.map(|id| ENGINE.status(id)) {
        Some(Ok(ProbeStatus::Armed)) => 0,
        Some(Ok(ProbeStatus::Pending)) => 1,
        Some(Ok(ProbeStatus::Failed(e))) | Some(Err(e)) => e.errno(),
        None => Error::NotRegistered.errno(),
    }
}

/// Lets [`uprobe_register`] check probes on programs that are not running yet, by reading
/// their images (see [`ImageReader`]). Without one, such probes are checked at the first
/// `exec` and a refusal shows in [`uprobe_status`] (and in one log warning).
pub fn uprobes_set_image_reader(reader: Option<ImageReader>) {
    ENGINE.set_image_reader(reader);
}

/// Call in `fork` after the child's address space is a copy of the parent's.
pub fn uprobes_fork(parent: Pid, parent_tid: Tid, child: Pid, child_tid: Tid) {
    ENGINE.on_fork(parent, parent_tid, child, child_tid);
}

/// Call when a process exits.
pub fn uprobes_exit(pid: Pid) {
    ENGINE.on_exit(pid);
}

/// Call when one thread of process `pid` exits (or is killed) while the process goes on:
/// drops the thread's pending return probes and out-of-line step. See
/// [`Uprobes::on_thread_exit`].
pub fn uprobes_thread_exit(pid: Pid, tid: Tid) {
    ENGINE.on_thread_exit(pid, tid);
}

/// Brings the current process's memory in line with the registry now: restores the
/// instructions of probes unregistered while another process was current (which it would
/// otherwise restore at their next hit) and arms what is missing. Returns 0, or the
/// negative errno of the first failure. See [`Uprobes::sync`].
pub fn uprobes_sync() -> isize {
    match ENGINE.sync(&mut KernelSpace) {
        Ok(()) => 0,
        Err(e) => e.errno(),
    }
}

/// How many threads of process `pid` hold per-thread state (pending return probes, an
/// out-of-line step). See [`Uprobes::threads_tracked`].
pub fn uprobes_threads_tracked(pid: Pid) -> usize {
    ENGINE.threads_tracked(pid)
}

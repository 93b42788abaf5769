//! The original ruprobes face: free functions over one global engine, reaching user memory
//! through functions the kernel exports with `#[no_mangle] extern "C"`.
//!
//! The kernel defines (all FFI-safe):
//!
//! ```text
//! #[no_mangle] pub extern "C" fn os_copy_from_user(usr_addr: usize, kern_buf: *mut u8, len: usize) -> i32;
//! #[no_mangle] pub extern "C" fn os_copy_to_user(usr_addr: usize, kern_buf: *const u8, len: usize) -> i32;
//! #[no_mangle] pub extern "C" fn os_current_pid() -> usize;
//! #[no_mangle] pub extern "C" fn os_current_tid() -> usize;
//! #[no_mangle] pub extern "C" fn os_current_exec_path(buf: *mut u8, cap: usize) -> isize;
//! #[no_mangle] pub extern "C" fn os_map_xol_page() -> usize;
//! #[no_mangle] pub extern "C" fn os_flush_icache(addr: usize, len: usize);
//! ```
//!
//! The copy functions return 0 on success and non-zero on a fault; `os_copy_to_user` must
//! also write read-only text pages. `os_current_exec_path` writes the current process's
//! executable path (UTF-8, no NUL) and returns its length, or a negative value if there is
//! none. `os_map_xol_page` maps a fresh user R+X page and returns its address, or 0. When
//! no user process is current, `os_current_pid` returns a pid no process has.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::engine::{Trap, Uprobes};
use crate::error::Fault;
use crate::probe::{Consumer, ConsumerId};
use crate::regs::{TrapContext, UserRegs};
use crate::space::{Pid, Tid, UserSpace};

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
static REGISTRATIONS: spin::Mutex<Vec<(String, usize, ConsumerId)>> = spin::Mutex::new(Vec::new());

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

/// A seed handler: called with the trap frame and the probed address.
pub type SeedHandler = Arc<spin::Mutex<dyn FnMut(&mut TrapContext, usize) + Send>>;

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
        None => {
            let mut cx = TrapContext::from_regs(regs);
            handler(&mut cx, addr);
            cx.store_into(regs);
        }
    }
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
    let entry = handler;
    let mut consumer = Consumer::new().on_entry(move |regs, hit| call(&entry, regs, hit.addr));
    if let Some(post) = post_handler {
        consumer = match ptype {
            ProbeType::Insn => consumer.on_post(move |regs, hit| call(&post, regs, hit.addr)),
            ProbeType::SyncFunc => consumer.on_return(move |regs, ret| call(&post, regs, ret.func)),
        };
    }
    match ENGINE.register(&path, addr, consumer, Some(&mut KernelSpace)) {
        Ok(id) => {
            REGISTRATIONS.lock().push((path, addr, id));
            0
        }
        Err(e) => {
            log::warn!("ruprobes: uprobe_register {path}:{addr:#x}: {e}");
            e.errno()
        }
    }
}

/// Removes every probe registered through [`uprobe_register`] on `addr` of `path`, restoring
/// the instruction in the current process. Returns 0, or a negative errno.
pub fn uprobe_unregister(path: &str, addr: usize) -> isize {
    let ids: Vec<ConsumerId> = {
        let mut regs = REGISTRATIONS.lock();
        let ids = regs
            .iter()
            .filter(|(p, a, _)| p == path && *a == addr)
            .map(|r| r.2)
            .collect();
        regs.retain(|(p, a, _)| !(p == path && *a == addr));
        ids
    };
    if ids.is_empty() {
        return crate::Error::NotRegistered.errno();
    }
    let mut result = 0;
    for id in ids {
        if let Err(e) = ENGINE.unregister(id, Some(&mut KernelSpace)) {
            result = e.errno();
        }
    }
    result
}

/// Call in `sys_exec` once the new image is mapped (and for the first process): arms the
/// probes of the new program.
pub fn uprobes_init() {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let len = unsafe { os_current_exec_path(buf.as_mut_ptr(), buf.len()) };
    let Some(path) = usize::try_from(len)
        .ok()
        .and_then(|len| buf.get(..len))
        .and_then(|bytes| core::str::from_utf8(bytes).ok())
    else {
        log::warn!("ruprobes: uprobes_init: no executable path for the current process");
        return;
    };
    if let Err(e) = ENGINE.on_exec(&mut KernelSpace, path) {
        log::warn!("ruprobes: uprobes_init {path}: {e}");
    }
}

/// Call on a breakpoint trap (`scause` = 3) from user mode. Returns `false` if the
/// breakpoint is not ruprobes' (deliver SIGTRAP).
pub fn uprobes_trap_handler(cx: &mut TrapContext) -> bool {
    ENGINE.handle_breakpoint(&mut KernelSpace, cx) == Trap::Handled
}

/// Call on any other user fault before delivering it: moves the pc of a thread that faulted
/// in an out-of-line slot back to the probed address. Returns whether it did.
pub fn uprobes_fixup_fault(cx: &mut TrapContext) -> bool {
    ENGINE.fixup_fault(&mut KernelSpace, cx)
}

/// Call in `fork` after the child's address space is a copy of the parent's.
pub fn uprobes_fork(parent: Pid, parent_tid: Tid, child: Pid, child_tid: Tid) {
    ENGINE.on_fork(parent, parent_tid, child, child_tid);
}

/// Call when a process exits.
pub fn uprobes_exit(pid: Pid) {
    ENGINE.on_exit(pid);
}

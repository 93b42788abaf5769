//! The kernel functions the seed face of ruprobes calls (`#[no_mangle] extern "C"`), routed
//! to the machine that is handling a trap on the calling thread.
//!
//! A seed-mode [`crate::machine::Machine`] calls the seed functions inside
//! [`with_current`], which publishes the current process's user space in a thread-local for
//! the duration of the call. Outside of it there is no current process: the copy functions
//! fail, `os_current_pid` returns `usize::MAX` and `os_current_exec_path` returns -1.

use std::cell::Cell;
use std::ptr;

use ruprobes::UserSpace;

/// What the hooks reach while a seed call runs.
struct Current<'a> {
    space: &'a mut dyn UserSpace,
    path: &'a str,
}

thread_local! {
    /// The `Current` of the innermost [`with_current`] on this thread, type-erased.
    static CURRENT: Cell<*mut ()> = const { Cell::new(ptr::null_mut()) };
}

/// Resets the thread-local when `with_current` ends, even by unwinding.
struct Restore(*mut ());

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// Runs `f` with `space` (running the program `path`) as the current process of the
/// `extern "C"` hooks on this thread.
pub fn with_current<R>(space: &mut dyn UserSpace, path: &str, f: impl FnOnce() -> R) -> R {
    let mut current = Current { space, path };
    let erased = (&mut current as *mut Current<'_>).cast::<()>();
    let _restore = Restore(CURRENT.with(|c| c.replace(erased)));
    f()
}

/// Runs `f` on the current process, if there is one.
fn current<R>(f: impl FnOnce(&mut Current<'_>) -> R) -> Option<R> {
    // Taking the pointer out makes a nested call see "no process" instead of aliasing.
    let erased = CURRENT.with(|c| c.replace(ptr::null_mut()));
    if erased.is_null() {
        return None;
    }
    let _restore = Restore(erased);
    // SAFETY: a non-null pointer was stored by `with_current`, whose `Current` lives on its
    // stack frame until `Restore` clears it again; `with_current` lends it exclusively to
    // us (it only runs `f`, which reaches it solely through this function), and we took it
    // out of the cell, so no other reference exists while `f` runs.
    let current = unsafe { &mut *erased.cast::<Current<'_>>() };
    Some(f(current))
}

/// Reads the current process's memory, for probe handlers (eBPF helpers) that run inside
/// [`with_current`]; `false` on a fault or without a current process.
pub fn read_current(addr: usize, buf: &mut [u8]) -> bool {
    current(|cur| cur.space.read(addr, buf).is_ok()) == Some(true)
}

/// The current process's space, reached through [`with_current`]: lets an engine and its
/// handlers share one space, each call borrowing it only for its own duration.
pub struct CurrentSpace;

impl UserSpace for CurrentSpace {
    fn pid(&self) -> ruprobes::Pid {
        os_current_pid()
    }
    fn tid(&self) -> ruprobes::Tid {
        os_current_tid()
    }
    fn read(&mut self, addr: usize, buf: &mut [u8]) -> Result<(), ruprobes::Fault> {
        current(|cur| cur.space.read(addr, buf)).unwrap_or(Err(ruprobes::Fault { addr }))
    }
    fn write(&mut self, addr: usize, data: &[u8]) -> Result<(), ruprobes::Fault> {
        current(|cur| cur.space.write(addr, data)).unwrap_or(Err(ruprobes::Fault { addr }))
    }
    fn is_executable(&mut self, addr: usize) -> bool {
        current(|cur| cur.space.is_executable(addr)).unwrap_or(false)
    }
    fn map_xol_page(&mut self) -> Result<usize, ruprobes::Fault> {
        current(|cur| cur.space.map_xol_page()).unwrap_or(Err(ruprobes::Fault { addr: 0 }))
    }
    fn flush_icache(&mut self, addr: usize, len: usize) {
        current(|cur| cur.space.flush_icache(addr, len));
    }
}

/// Copies `len` bytes of the current process's memory at `usr_addr` to `kern_buf`.
/// Returns 0, or -1 on a fault or without a current process.
///
/// # Safety
/// `kern_buf` must be valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn os_copy_from_user(usr_addr: usize, kern_buf: *mut u8, len: usize) -> i32 {
    if kern_buf.is_null() && len > 0 {
        return -1;
    }
    let result = current(|cur| {
        let mut buf = vec![0u8; len];
        cur.space.read(usr_addr, &mut buf).map(|()| buf)
    });
    match result {
        Some(Ok(buf)) => {
            // SAFETY: the caller passes a buffer valid for `len` bytes of writes (checked
            // non-null above); `buf` holds exactly `len` bytes.
            unsafe { ptr::copy_nonoverlapping(buf.as_ptr(), kern_buf, len) };
            0
        }
        _ => -1,
    }
}

/// Copies `len` bytes from `kern_buf` to the current process's memory at `usr_addr`, with
/// kernel privilege (read-only text too). Returns 0, or -1 on a fault.
///
/// # Safety
/// `kern_buf` must be valid for reads of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn os_copy_to_user(usr_addr: usize, kern_buf: *const u8, len: usize) -> i32 {
    if kern_buf.is_null() && len > 0 {
        return -1;
    }
    let data: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the caller passes a buffer valid for `len` bytes of reads (non-null).
        unsafe { std::slice::from_raw_parts(kern_buf, len) }
    };
    match current(|cur| cur.space.write(usr_addr, data)) {
        Some(Ok(())) => 0,
        _ => -1,
    }
}

/// The current process's pid, or `usize::MAX` when none is current.
#[no_mangle]
pub extern "C" fn os_current_pid() -> usize {
    current(|cur| cur.space.pid()).unwrap_or(usize::MAX)
}

/// The current thread's id, or `usize::MAX` when none is current.
#[no_mangle]
pub extern "C" fn os_current_tid() -> usize {
    current(|cur| cur.space.tid()).unwrap_or(usize::MAX)
}

/// Writes the current program's path (no NUL) to `buf` and returns its length; -1 when
/// no process is current or the path does not fit in `cap` bytes.
///
/// # Safety
/// `buf` must be valid for writes of `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn os_current_exec_path(buf: *mut u8, cap: usize) -> isize {
    let path = current(|cur| cur.path.as_bytes().to_vec());
    match path {
        Some(path) if path.len() <= cap && !buf.is_null() => {
            // SAFETY: the caller passes a buffer valid for `cap` bytes of writes, and the
            // path is no longer than `cap`.
            unsafe { ptr::copy_nonoverlapping(path.as_ptr(), buf, path.len()) };
            path.len() as isize
        }
        _ => -1,
    }
}

/// Maps a fresh user R+X page in the current process; returns its address, or 0.
#[no_mangle]
pub extern "C" fn os_map_xol_page() -> usize {
    current(|cur| cur.space.map_xol_page().ok())
        .flatten()
        .unwrap_or(0)
}

/// Nothing to do in the simulator: every write through the kernel is coherent with fetch.
#[no_mangle]
pub extern "C" fn os_flush_icache(addr: usize, len: usize) {
    current(|cur| cur.space.flush_icache(addr, len));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruprobes::{Fault, Pid, Tid};

    struct Fake(Vec<u8>);

    impl UserSpace for Fake {
        fn pid(&self) -> Pid {
            42
        }
        fn tid(&self) -> Tid {
            43
        }
        fn read(&mut self, addr: usize, buf: &mut [u8]) -> Result<(), Fault> {
            let src = self.0.get(addr..addr + buf.len()).ok_or(Fault { addr })?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write(&mut self, addr: usize, data: &[u8]) -> Result<(), Fault> {
            self.0
                .get_mut(addr..addr + data.len())
                .ok_or(Fault { addr })?
                .copy_from_slice(data);
            Ok(())
        }
        fn map_xol_page(&mut self) -> Result<usize, Fault> {
            Ok(0x3000_0000)
        }
        fn flush_icache(&mut self, _addr: usize, _len: usize) {}
    }

    // SAFETY (every `unsafe` below): the buffers passed are live locals at least `len`
    // (or `cap`) bytes long.
    #[test]
    fn hooks_reach_the_current_space_only_inside_with_current() {
        assert_eq!(os_current_pid(), usize::MAX);
        let mut byte = 0u8;
        assert_eq!(unsafe { os_copy_from_user(0, &mut byte, 1) }, -1);
        let mut fake = Fake(vec![1, 2, 3, 4]);
        with_current(&mut fake, "fib", || {
            assert_eq!(os_current_pid(), 42);
            assert_eq!(os_current_tid(), 43);
            let mut buf = [0u8; 2];
            assert_eq!(unsafe { os_copy_from_user(1, buf.as_mut_ptr(), 2) }, 0);
            assert_eq!(buf, [2, 3]);
            assert_eq!(unsafe { os_copy_to_user(3, [9u8].as_ptr(), 1) }, 0);
            assert_eq!(unsafe { os_copy_to_user(4, [9u8].as_ptr(), 1) }, -1);
            let mut path = [0u8; 8];
            assert_eq!(unsafe { os_current_exec_path(path.as_mut_ptr(), 8) }, 3);
            assert_eq!(&path[..3], b"fib");
            assert_eq!(unsafe { os_current_exec_path(path.as_mut_ptr(), 2) }, -1);
            assert_eq!(os_map_xol_page(), 0x3000_0000);
        });
        assert_eq!(fake.0, [1, 2, 3, 9]);
        assert_eq!(os_current_pid(), usize::MAX);
    }
}

//! The seed-compatible free functions, with the kernel's `extern "C"` hooks defined here
//! over an in-memory process.
// The hooks keep the seed README's safe `extern "C"` signatures, which take raw pointers.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod common;

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use common::*;
use ruprobes::seed::{self, ProbeType, SeedHandler};
use ruprobes::{TrapContext, UserSpace};

thread_local! {
    static CURRENT: RefCell<Option<FakeSpace>> = const { RefCell::new(None) };
}

fn with_current<R>(f: impl FnOnce(&mut FakeSpace) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow_mut().as_mut().map(f))
}

#[no_mangle]
pub extern "C" fn os_copy_from_user(usr_addr: usize, kern_buf: *mut u8, len: usize) -> i32 {
    // SAFETY: the engine passes a buffer valid for `len` bytes of writes.
    let buf = unsafe { std::slice::from_raw_parts_mut(kern_buf, len) };
    match with_current(|s| s.read(usr_addr, buf)) {
        Some(Ok(())) => 0,
        _ => -1,
    }
}

#[no_mangle]
pub extern "C" fn os_copy_to_user(usr_addr: usize, kern_buf: *const u8, len: usize) -> i32 {
    // SAFETY: the engine passes a buffer valid for `len` bytes of reads.
    let data = unsafe { std::slice::from_raw_parts(kern_buf, len) };
    match with_current(|s| s.write(usr_addr, data)) {
        Some(Ok(())) => 0,
        _ => -1,
    }
}

#[no_mangle]
pub extern "C" fn os_current_pid() -> usize {
    with_current(|s| s.pid).unwrap_or(usize::MAX)
}

#[no_mangle]
pub extern "C" fn os_current_tid() -> usize {
    with_current(|s| s.tid).unwrap_or(usize::MAX)
}

#[no_mangle]
pub extern "C" fn os_current_exec_path(buf: *mut u8, cap: usize) -> isize {
    let path = b"/bin/seed";
    if cap < path.len() {
        return -1;
    }
    // SAFETY: the engine passes a buffer valid for `cap` bytes of writes.
    unsafe { std::ptr::copy_nonoverlapping(path.as_ptr(), buf, path.len()) };
    path.len() as isize
}

#[no_mangle]
pub extern "C" fn os_map_xol_page() -> usize {
    with_current(|s| s.map_xol_page().unwrap_or(0)).unwrap_or(0)
}

#[no_mangle]
pub extern "C" fn os_flush_icache(_addr: usize, _len: usize) {}

// addi sp, sp, -16 ; sd ra, 8(sp) ; ebreak (the program's own)
const CODE: [u32; 3] = [0xff01_0113, 0x0011_3423, 0x0010_0073];

fn code() -> Vec<u8> {
    assemble(&CODE.map(|w| (w, 4)))
}

fn handler(log: &Arc<Mutex<Vec<String>>>, name: &'static str) -> SeedHandler {
    let log = log.clone();
    Arc::new(spin::Mutex::new(
        move |cx: &mut TrapContext, addr: usize| {
            log.lock().unwrap().push(format!(
                "{name} {addr:#x} sepc={:#x} a0={}",
                cx.sepc, cx.x[10]
            ));
        },
    ))
}

#[test]
fn seed_functions_drive_the_global_engine() {
    CURRENT.with(|c| *c.borrow_mut() = Some(FakeSpace::with_text(7, &code())));
    seed::uprobes_init();
    let log = Arc::new(Mutex::new(Vec::new()));

    // An instruction probe (entry + post) on the out-of-line `sd`.
    let r = seed::uprobe_register(
        "/bin/seed".into(),
        TEXT + 4,
        handler(&log, "insn"),
        Some(handler(&log, "post")),
        ProbeType::Insn,
    );
    assert_eq!(r, 0);
    // A function probe (entry + return) on the first instruction.
    let r = seed::uprobe_register(
        "/bin/seed".into(),
        TEXT,
        handler(&log, "func"),
        Some(handler(&log, "ret")),
        ProbeType::SyncFunc,
    );
    assert_eq!(r, 0);
    // Rejected: ebreak. Negative errno, nothing written.
    let r = seed::uprobe_register(
        "/bin/seed".into(),
        TEXT + 8,
        handler(&log, "x"),
        None,
        ProbeType::Insn,
    );
    assert_eq!(r, -22);
    assert_eq!(
        with_current(|s| s.peek(TEXT + 8, 4)).unwrap(),
        0x0010_0073u32.to_le_bytes()
    );

    // Run the function: entry hit, out-of-line step of `sd`, return through the trampoline.
    let mut cx = TrapContext {
        sepc: TEXT,
        ..Default::default()
    };
    cx.x[1] = 0x5000;
    cx.x[2] = 0x8000;
    assert!(seed::uprobes_trap_handler(&mut cx));
    assert_eq!(cx.sepc, TEXT + 4);
    assert!(seed::uprobes_trap_handler(&mut cx)); // sd: to its slot
    let slot = cx.sepc;
    cx.sepc = slot + 4; // the slot's breakpoint
    assert!(seed::uprobes_trap_handler(&mut cx));
    assert_eq!(cx.sepc, TEXT + 8);
    cx.sepc = cx.x[1]; // return: ra is the trampoline
    cx.x[2] = 0x8000;
    cx.x[10] = 77;
    assert!(seed::uprobes_trap_handler(&mut cx));
    assert_eq!(cx.sepc, 0x5000);
    let got = log.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            format!("func {TEXT:#x} sepc={TEXT:#x} a0=0"),
            format!("insn {:#x} sepc={:#x} a0=0", TEXT + 4, TEXT + 4),
            format!("post {:#x} sepc={:#x} a0=0", TEXT + 4, TEXT + 8),
            format!("ret {TEXT:#x} sepc={:#x} a0=77", cx.x[1]),
        ]
    );

    // The program's own breakpoint is not ours.
    let mut own = TrapContext {
        sepc: TEXT + 8,
        ..Default::default()
    };
    assert!(!seed::uprobes_trap_handler(&mut own));

    assert_eq!(seed::uprobe_unregister("/bin/seed", TEXT + 4), 0);
    assert_eq!(seed::uprobe_unregister("/bin/seed", TEXT), 0);
    assert_eq!(seed::uprobe_unregister("/bin/seed", TEXT), -2);
    assert_eq!(
        with_current(|s| s.text(12)).unwrap(),
        code(),
        "memory byte-identical"
    );
    seed::uprobes_exit(7);
}

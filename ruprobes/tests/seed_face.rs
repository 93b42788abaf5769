//! The seed-compatible free functions, with the kernel's `extern "C"` hooks defined here
//! over an in-memory process.
// The hooks keep the seed README's safe `extern "C"` signatures, which take raw pointers.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod common;

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex, MutexGuard};

use common::*;
use ruprobes::seed::{self, ProbeType, SeedHandler};
use ruprobes::{Fault, TrapContext, UserRegs, UserSpace, NO_PID};

thread_local! {
    static CURRENT: RefCell<Option<FakeSpace>> = const { RefCell::new(None) };
    static EXEC_PATH: Cell<&'static str> = const { Cell::new("/bin/seed") };
    /// Calls of the copy hooks so far.
    static COPIES: Cell<usize> = const { Cell::new(0) };
}

/// The seed face has one global engine: the tests take turns.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn with_current<R>(f: impl FnOnce(&mut FakeSpace) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow_mut().as_mut().map(f))
}

fn set_current(space: Option<FakeSpace>, path: &'static str) -> Option<FakeSpace> {
    EXEC_PATH.with(|p| p.set(path));
    CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), space))
}

#[unsafe(no_mangle)]
pub extern "C" fn os_copy_from_user(usr_addr: usize, kern_buf: *mut u8, len: usize) -> i32 {
    COPIES.with(|c| c.set(c.get() + 1));
    // SAFETY: the engine passes a buffer valid for `len` bytes of writes.
    let buf = unsafe { std::slice::from_raw_parts_mut(kern_buf, len) };
    match with_current(|s| s.read(usr_addr, buf)) {
        Some(Ok(())) => 0,
        _ => -1,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn os_copy_to_user(usr_addr: usize, kern_buf: *const u8, len: usize) -> i32 {
    COPIES.with(|c| c.set(c.get() + 1));
    // SAFETY: the engine passes a buffer valid for `len` bytes of reads.
    let data = unsafe { std::slice::from_raw_parts(kern_buf, len) };
    match with_current(|s| s.write(usr_addr, data)) {
        Some(Ok(())) => 0,
        _ => -1,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn os_current_pid() -> usize {
    with_current(|s| s.pid).unwrap_or(NO_PID)
}

#[unsafe(no_mangle)]
pub extern "C" fn os_current_tid() -> usize {
    with_current(|s| s.tid).unwrap_or(NO_PID)
}

#[unsafe(no_mangle)]
pub extern "C" fn os_current_exec_path(buf: *mut u8, cap: usize) -> isize {
    if with_current(|_| ()).is_none() {
        return -1;
    }
    let path = EXEC_PATH.with(|p| p.get()).as_bytes();
    if cap < path.len() {
        return -1;
    }
    // SAFETY: the engine passes a buffer valid for `cap` bytes of writes.
    unsafe { std::ptr::copy_nonoverlapping(path.as_ptr(), buf, path.len()) };
    path.len() as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn os_map_xol_page() -> usize {
    with_current(|s| s.map_xol_page().unwrap_or(0)).unwrap_or(0)
}

#[unsafe(no_mangle)]
pub extern "C" fn os_flush_icache(_addr: usize, _len: usize) {}

// addi sp, sp, -16 ; sd ra, 8(sp) ; ebreak (the program's own)
const CODE: [u32; 3] = [0xff01_0113, 0x0011_3423, 0x0010_0073];

fn code() -> Vec<u8> {
    assemble(&CODE.map(|w| (w, 4)))
}

/// A handler that logs its calls, built without naming `spin`.
fn handler(log: &Arc<Mutex<Vec<String>>>, name: &'static str) -> SeedHandler {
    let log = log.clone();
    seed::seed_handler(move |cx: &mut TrapContext, addr: usize| {
        log.lock().unwrap().push(format!(
            "{name} {addr:#x} sepc={:#x} a0={}",
            cx.sepc, cx.x[10]
        ));
    })
}

#[test]
fn seed_functions_drive_the_global_engine() {
    let _turn = serial();
    set_current(Some(FakeSpace::with_text(7, &code())), "/bin/seed");
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
            // The return handler: sepc is where the function returns to.
            "ret 0x10000 sepc=0x5000 a0=77".to_string(),
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

#[test]
fn return_handler_gets_the_return_address_in_sepc() {
    let _turn = serial();
    set_current(Some(FakeSpace::with_text(8, &code())), "/bin/ret");
    seed::uprobes_init();
    let log = Arc::new(Mutex::new(Vec::new()));
    let ret = handler(&log, "ret");
    let entry = seed::seed_handler(|_, _| {});
    assert_eq!(
        seed::uprobe_register(
            "/bin/ret".into(),
            TEXT,
            entry,
            Some(ret),
            ProbeType::SyncFunc
        ),
        0
    );
    let mut cx = TrapContext {
        sepc: TEXT,
        ..Default::default()
    };
    (cx.x[1], cx.x[2]) = (0x7770, 0x8000);
    assert!(seed::uprobes_trap_handler(&mut cx));
    let trampoline = cx.x[1];
    assert_ne!(trampoline, 0x7770);
    // The function returns: its `addi sp, sp, -16` undone, `ret` to the trampoline.
    (cx.sepc, cx.x[2], cx.x[10]) = (trampoline, 0x8000, 5);
    assert!(seed::uprobes_trap_handler(&mut cx));
    assert_eq!(cx.sepc, 0x7770);
    assert_eq!(
        *log.lock().unwrap(),
        [format!("ret {TEXT:#x} sepc=0x7770 a0=5")]
    );
    assert_eq!(seed::uprobe_unregister("/bin/ret", TEXT), 0);
    seed::uprobes_exit(8);
}

#[test]
fn pid_zero_is_a_process_and_no_pid_is_none() {
    let _turn = serial();
    // rCore's initproc: pid 0. Its probes arm like any other's.
    set_current(Some(FakeSpace::with_text(0, &code())), "/bin/init");
    seed::uprobes_init();
    let log = Arc::new(Mutex::new(Vec::new()));
    assert_eq!(
        seed::uprobe_register(
            "/bin/init".into(),
            TEXT,
            handler(&log, "i"),
            None,
            ProbeType::Insn
        ),
        0
    );
    assert_eq!(seed::uprobe_status("/bin/init", TEXT), 0, "armed in pid 0");
    assert_eq!(
        with_current(|s| s.peek(TEXT, 4)).unwrap(),
        0x0010_0073u32.to_le_bytes()
    );
    // No process current (os_current_pid says NO_PID): registering touches no memory and
    // waits; a trap is not ours.
    let init = set_current(None, "/bin/init");
    let copies = COPIES.with(|c| c.get());
    assert_eq!(
        seed::uprobe_register(
            "/bin/init".into(),
            TEXT + 4,
            handler(&log, "j"),
            None,
            ProbeType::Insn
        ),
        0
    );
    assert_eq!(COPIES.with(|c| c.get()), copies, "no copy hook called");
    assert_eq!(seed::uprobe_status("/bin/init", TEXT + 4), 1, "waiting");
    let mut cx = TrapContext {
        sepc: TEXT,
        ..Default::default()
    };
    assert!(!seed::uprobes_trap_handler(&mut cx));
    set_current(init, "/bin/init");
    assert_eq!(seed::uprobe_unregister("/bin/init", TEXT), 0);
    assert_eq!(seed::uprobe_unregister("/bin/init", TEXT + 4), 0);
    assert_eq!(with_current(|s| s.text(12)).unwrap(), code());
    seed::uprobes_exit(0);
}

/// A kernel's own trap frame, laid out differently from `ruprobes::TrapContext` and with a
/// typed `sstatus` (as rCore's `riscv::register::sstatus::Sstatus`).
struct KernelFrame {
    sstatus: Sstatus,
    sepc: usize,
    x: [usize; 32],
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Sstatus(usize);

impl UserRegs for KernelFrame {
    fn pc(&self) -> usize {
        self.sepc
    }
    fn set_pc(&mut self, pc: usize) {
        self.sepc = pc;
    }
    fn reg(&self, n: usize) -> usize {
        if (1..32).contains(&n) {
            self.x[n]
        } else {
            0
        }
    }
    fn set_reg(&mut self, n: usize, value: usize) {
        if (1..32).contains(&n) {
            self.x[n] = value;
        }
    }
}

#[test]
fn trap_entries_take_the_kernels_own_frame() {
    let _turn = serial();
    set_current(Some(FakeSpace::with_text(9, &code())), "/bin/frame");
    seed::uprobes_init();
    let log = Arc::new(Mutex::new(Vec::new()));
    // The handler gets a TrapContext copy and its writes reach the kernel's frame.
    let l = log.clone();
    let entry = seed::seed_handler(move |cx: &mut TrapContext, addr| {
        l.lock()
            .unwrap()
            .push(format!("{addr:#x} sp={:#x}", cx.x[2]));
        cx.x[10] = 99;
    });
    assert_eq!(
        seed::uprobe_register("/bin/frame".into(), TEXT, entry, None, ProbeType::Insn),
        0
    );
    assert_eq!(
        seed::uprobe_register(
            "/bin/frame".into(),
            TEXT + 4,
            handler(&log, "sd"),
            None,
            ProbeType::Insn
        ),
        0
    );
    let mut frame = KernelFrame {
        sstatus: Sstatus(0x22),
        sepc: TEXT,
        x: [0; 32],
    };
    frame.x[2] = 0x8000;
    assert!(seed::uprobes_trap_handler_regs(&mut frame));
    assert_eq!(
        (frame.sepc, frame.x[2], frame.x[10]),
        (TEXT + 4, 0x8000 - 16, 99)
    );
    assert_eq!(frame.sstatus, Sstatus(0x22));
    assert_eq!(log.lock().unwrap()[0], format!("{TEXT:#x} sp=0x8000"));
    // The out-of-line `sd`: to its slot; a fault there is moved back to the probe.
    assert!(seed::uprobes_trap_handler_regs(&mut frame));
    assert_ne!(frame.sepc, TEXT + 4);
    assert!(seed::uprobes_fixup_fault_regs(&mut frame));
    assert_eq!(frame.sepc, TEXT + 4);
    assert!(!seed::uprobes_fixup_fault_regs(&mut frame), "only once");
    assert_eq!(seed::uprobe_unregister("/bin/frame", TEXT), 0);
    assert_eq!(seed::uprobe_unregister("/bin/frame", TEXT + 4), 0);
    seed::uprobes_exit(9);
}

/// The image of "/bin/later": the test code at TEXT.
fn read_image(path: &str, addr: usize, buf: &mut [u8]) -> Result<(), Fault> {
    let code = code();
    let off = addr.wrapping_sub(TEXT);
    match code.get(off..off.wrapping_add(buf.len())) {
        Some(bytes) if path == "/bin/later" => {
            buf.copy_from_slice(bytes);
            Ok(())
        }
        _ => Err(Fault { addr }),
    }
}

#[test]
fn refused_probe_on_a_program_not_yet_running_is_reported() {
    let _turn = serial();
    set_current(None, "/bin/later");
    let log = Arc::new(Mutex::new(Vec::new()));
    // Without an image reader: accepted (it cannot be checked), waiting...
    assert_eq!(
        seed::uprobe_register(
            "/bin/later".into(),
            TEXT + 8,
            handler(&log, "e"),
            None,
            ProbeType::Insn
        ),
        0
    );
    assert_eq!(seed::uprobe_status("/bin/later", TEXT + 8), 1);
    // ...and the exec that cannot arm it says so in the status, with the typed errno.
    set_current(Some(FakeSpace::with_text(10, &code())), "/bin/later");
    seed::uprobes_init();
    assert_eq!(seed::uprobe_status("/bin/later", TEXT + 8), -22);
    assert_eq!(seed::uprobe_unregister("/bin/later", TEXT + 8), 0);
    assert_eq!(seed::uprobe_status("/bin/later", TEXT + 8), -2);
    seed::uprobes_exit(10);

    // With an image reader: refused at registration, before the program runs.
    set_current(None, "/bin/later");
    seed::uprobes_set_image_reader(Some(read_image));
    assert_eq!(
        seed::uprobe_register(
            "/bin/later".into(),
            TEXT + 8,
            handler(&log, "e"),
            None,
            ProbeType::Insn
        ),
        -22
    );
    assert_eq!(
        seed::uprobe_status("/bin/later", TEXT + 8),
        -2,
        "not registered"
    );
    assert_eq!(
        seed::uprobe_register(
            "/bin/later".into(),
            TEXT + 4,
            handler(&log, "sd"),
            None,
            ProbeType::Insn
        ),
        0
    );
    seed::uprobes_set_image_reader(None);
    assert_eq!(seed::uprobe_unregister("/bin/later", TEXT + 4), 0);
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn thread_exit_sync_and_tracked_threads_through_the_seed_face() {
    let _turn = serial();
    set_current(Some(FakeSpace::with_text(9, &code())), "/bin/threads");
    seed::uprobes_init();
    let log = Arc::new(Mutex::new(Vec::new()));
    let r = seed::uprobe_register(
        "/bin/threads".into(),
        TEXT,
        handler(&log, "func"),
        Some(handler(&log, "ret")),
        ProbeType::SyncFunc,
    );
    assert_eq!(r, 0);
    // Thread 3 of process 9 enters the function and exits inside it.
    with_current(|s| s.tid = 3);
    let mut cx = TrapContext {
        sepc: TEXT,
        ..Default::default()
    };
    cx.x[1] = 0x5000;
    cx.x[2] = 0x8000;
    assert!(seed::uprobes_trap_handler(&mut cx));
    assert_eq!(seed::uprobes_threads_tracked(9), 1);
    seed::uprobes_thread_exit(9, 3);
    assert_eq!(seed::uprobes_threads_tracked(9), 0);

    // A fork child keeps the breakpoint after the parent unregistered it: sync restores it.
    let parent = set_current(None, "/bin/threads").unwrap();
    let mut child = parent.clone();
    child.pid = 10;
    child.tid = 10;
    seed::uprobes_fork(9, 9, 10, 10);
    set_current(Some(parent), "/bin/threads");
    assert_eq!(seed::uprobe_unregister("/bin/threads", TEXT), 0);
    assert_eq!(with_current(|s| s.text(12)).unwrap(), code());
    let parent = set_current(Some(child), "/bin/threads").unwrap();
    assert_ne!(with_current(|s| s.text(12)).unwrap(), code(), "still armed");
    assert_eq!(seed::uprobes_sync(), 0);
    assert_eq!(with_current(|s| s.text(12)).unwrap(), code(), "restored");
    seed::uprobes_exit(10);
    set_current(Some(parent), "/bin/threads");
    seed::uprobes_exit(9);
    set_current(None, "/bin/seed");
}

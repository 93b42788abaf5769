//! Helpers of the engine tests.
#![allow(dead_code)]

use std::sync::Arc;

use ruprobes::{TrapContext, UserRegs};

#[allow(unused_imports)]
pub use ruprobes::testing::{MemSpace as FakeSpace, DATA, PAGE, TEXT, XOL_BASE};

/// Registers at a trap: pc and sp set, everything else zero.
pub fn regs_at(pc: usize, sp: usize) -> TrapContext {
    let mut cx = TrapContext {
        sepc: pc,
        ..TrapContext::default()
    };
    cx.set_reg(2, sp);
    cx
}

/// A shared log of handler calls.
pub type Log = Arc<std::sync::Mutex<Vec<String>>>;

pub fn new_log() -> Log {
    Arc::new(std::sync::Mutex::new(Vec::new()))
}

pub fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Little-endian bytes of a sequence of instructions given as (word, length) pairs.
pub fn assemble(insns: &[(u32, usize)]) -> Vec<u8> {
    insns
        .iter()
        .flat_map(|&(w, len)| w.to_le_bytes()[..len].to_vec())
        .collect()
}

/// One hart's view of a process whose memory several threads share. `on_read` runs before
/// every read (with the address), outside the memory's lock: a test's way to let another
/// thread act at an exact point of the trap path.
pub struct SharedSpace {
    pub mem: Arc<std::sync::Mutex<FakeSpace>>,
    pub tid: ruprobes::Tid,
    pub on_read: Option<Box<dyn FnMut(usize) + Send>>,
}

impl SharedSpace {
    pub fn new(mem: &Arc<std::sync::Mutex<FakeSpace>>, tid: ruprobes::Tid) -> Self {
        SharedSpace {
            mem: mem.clone(),
            tid,
            on_read: None,
        }
    }
}

impl ruprobes::UserSpace for SharedSpace {
    fn pid(&self) -> ruprobes::Pid {
        1
    }
    fn tid(&self) -> ruprobes::Tid {
        self.tid
    }
    fn read(&mut self, addr: usize, buf: &mut [u8]) -> Result<(), ruprobes::Fault> {
        if let Some(hook) = self.on_read.as_mut() {
            hook(addr);
        }
        self.mem.lock().unwrap().read(addr, buf)
    }
    fn write(&mut self, addr: usize, data: &[u8]) -> Result<(), ruprobes::Fault> {
        self.mem.lock().unwrap().write(addr, data)
    }
    fn is_executable(&mut self, addr: usize) -> bool {
        self.mem.lock().unwrap().is_executable(addr)
    }
    fn map_xol_page(&mut self) -> Result<usize, ruprobes::Fault> {
        self.mem.lock().unwrap().map_xol_page()
    }
    fn flush_icache(&mut self, _addr: usize, _len: usize) {}
}

//! An in-memory user space for the engine tests: sparse 4 KiB pages with permissions, an
//! XOL page allocator and fault injection.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use ruprobes::{Fault, Pid, Tid, TrapContext, UserRegs, UserSpace};

pub const PAGE: usize = 4096;
pub const TEXT: usize = 0x1_0000;
pub const DATA: usize = 0x2_0000;
pub const XOL_BASE: usize = 0x3000_0000;

#[derive(Clone)]
struct Page {
    bytes: Box<[u8; PAGE]>,
    exec: bool,
}

/// One process's memory.
#[derive(Clone)]
pub struct FakeSpace {
    pub pid: Pid,
    pub tid: Tid,
    pages: BTreeMap<usize, Page>,
    next_xol: usize,
    /// Reads of this address fail.
    pub fail_read_at: Option<usize>,
    /// Writes fail once this many more have succeeded.
    pub writes_left: Option<usize>,
    /// `map_xol_page` fails.
    pub fail_map: bool,
    pub flushes: usize,
}

impl FakeSpace {
    pub fn new(pid: Pid) -> Self {
        FakeSpace {
            pid,
            tid: pid,
            pages: BTreeMap::new(),
            next_xol: XOL_BASE,
            fail_read_at: None,
            writes_left: None,
            fail_map: false,
            flushes: 0,
        }
    }

    /// A space with `code` at TEXT (executable) and a zeroed data page at DATA.
    pub fn with_text(pid: Pid, code: &[u8]) -> Self {
        let mut s = Self::new(pid);
        s.map(TEXT, code.len().max(1), true);
        s.poke(TEXT, code);
        s.map(DATA, PAGE, false);
        s
    }

    pub fn map(&mut self, addr: usize, len: usize, exec: bool) {
        let first = addr / PAGE * PAGE;
        for page in (first..addr + len).step_by(PAGE) {
            self.pages.insert(
                page,
                Page {
                    bytes: Box::new([0; PAGE]),
                    exec,
                },
            );
        }
    }

    fn byte_mut(&mut self, addr: usize) -> Option<&mut u8> {
        let page = self.pages.get_mut(&(addr / PAGE * PAGE))?;
        Some(&mut page.bytes[addr % PAGE])
    }

    /// Writes without fault injection (test setup).
    pub fn poke(&mut self, addr: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            *self.byte_mut(addr + i).expect("poke into unmapped memory") = *b;
        }
    }

    pub fn peek(&self, addr: usize, len: usize) -> Vec<u8> {
        (addr..addr + len)
            .map(|a| {
                self.pages
                    .get(&(a / PAGE * PAGE))
                    .map_or(0, |p| p.bytes[a % PAGE])
            })
            .collect()
    }

    pub fn text(&self, len: usize) -> Vec<u8> {
        self.peek(TEXT, len)
    }
}

impl UserSpace for FakeSpace {
    fn pid(&self) -> Pid {
        self.pid
    }
    fn tid(&self) -> Tid {
        self.tid
    }
    fn read(&mut self, addr: usize, buf: &mut [u8]) -> Result<(), Fault> {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i;
            if self.fail_read_at == Some(a) {
                return Err(Fault { addr: a });
            }
            *b = *self.byte_mut(a).ok_or(Fault { addr: a })?;
        }
        Ok(())
    }
    fn write(&mut self, addr: usize, data: &[u8]) -> Result<(), Fault> {
        if let Some(left) = self.writes_left.as_mut() {
            if *left == 0 {
                return Err(Fault { addr });
            }
            *left -= 1;
        }
        if (addr..addr + data.len()).any(|a| self.byte_mut(a).is_none()) {
            return Err(Fault { addr });
        }
        self.poke(addr, data);
        Ok(())
    }
    fn is_executable(&mut self, addr: usize) -> bool {
        self.pages
            .get(&(addr / PAGE * PAGE))
            .is_some_and(|p| p.exec)
    }
    fn map_xol_page(&mut self) -> Result<usize, Fault> {
        if self.fail_map {
            return Err(Fault {
                addr: self.next_xol,
            });
        }
        let page = self.next_xol;
        self.next_xol += PAGE;
        self.map(page, PAGE, true);
        Ok(page)
    }
    fn flush_icache(&mut self, _addr: usize, _len: usize) {
        self.flushes += 1;
    }
}

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

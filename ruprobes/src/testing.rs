//! An in-memory [`UserSpace`] for unit tests, fuzzing and benchmarks of code that drives
//! the engine: sparse 4 KiB pages with an executable bit, an XOL page allocator and fault
//! injection. Not for kernels.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use crate::addr_map::AddrMap;
use crate::error::Fault;
use crate::space::{Pid, Tid, UserSpace};

/// Page size of [`MemSpace`].
pub const PAGE: usize = 4096;
/// Where [`MemSpace::with_text`] puts the code.
pub const TEXT: usize = 0x1_0000;
/// Where [`MemSpace::with_text`] puts a zeroed data page.
pub const DATA: usize = 0x2_0000;
/// Where [`MemSpace`] maps its XOL pages, upward.
pub const XOL_BASE: usize = 0x3000_0000;

#[derive(Clone)]
struct Page {
    bytes: Box<[u8]>,
    exec: bool,
}

/// One process's memory, in a map of pages.
#[derive(Clone)]
pub struct MemSpace {
    /// The process id it reports.
    pub pid: Pid,
    /// The thread id it reports.
    pub tid: Tid,
    /// By page address (a hash map: a tree's code has big frames in debug builds).
    pages: AddrMap<Page>,
    next_xol: usize,
    /// Reads of this address fail.
    pub fail_read_at: Option<usize>,
    /// Writes fail once this many more have succeeded.
    pub writes_left: Option<usize>,
    /// `map_xol_page` fails.
    pub fail_map: bool,
    /// Calls to `flush_icache` so far.
    pub flushes: usize,
}

impl MemSpace {
    /// An empty address space.
    pub fn new(pid: Pid) -> Self {
        MemSpace {
            pid,
            tid: pid,
            pages: AddrMap::new(),
            next_xol: XOL_BASE,
            fail_read_at: None,
            writes_left: None,
            fail_map: false,
            flushes: 0,
        }
    }

    /// `code` at [`TEXT`] (executable) and a zeroed data page at [`DATA`].
    pub fn with_text(pid: Pid, code: &[u8]) -> Self {
        let mut s = Self::new(pid);
        s.map(TEXT, code.len().max(1), true);
        s.poke(TEXT, code);
        s.map(DATA, PAGE, false);
        s
    }

    /// Maps zeroed pages covering `addr..addr + len`.
    pub fn map(&mut self, addr: usize, len: usize, exec: bool) {
        let first = addr / PAGE * PAGE;
        for page in (first..addr.saturating_add(len)).step_by(PAGE) {
            self.pages.insert(
                page,
                Page {
                    // Zeroed on the heap, never a page-sized temporary on the stack.
                    bytes: vec![0; PAGE].into_boxed_slice(),
                    exec,
                },
            );
        }
    }

    fn byte_mut(&mut self, addr: usize) -> Option<&mut u8> {
        let page = self.pages.get_mut(addr / PAGE * PAGE)?;
        page.bytes.get_mut(addr % PAGE)
    }

    /// Writes without fault injection (test set-up); bytes outside any page are dropped.
    pub fn poke(&mut self, addr: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(byte) = self.byte_mut(addr.wrapping_add(i)) {
                *byte = *b;
            }
        }
    }

    /// Reads without fault injection; unmapped bytes read as 0.
    pub fn peek(&self, addr: usize, len: usize) -> Vec<u8> {
        (addr..addr.saturating_add(len))
            .map(|a| {
                self.pages
                    .get(a / PAGE * PAGE)
                    .map_or(0, |p| p.bytes[a % PAGE])
            })
            .collect()
    }

    /// The first `len` bytes at [`TEXT`].
    pub fn text(&self, len: usize) -> Vec<u8> {
        self.peek(TEXT, len)
    }
}

impl UserSpace for MemSpace {
    fn pid(&self) -> Pid {
        self.pid
    }
    fn tid(&self) -> Tid {
        self.tid
    }
    fn read(&mut self, addr: usize, buf: &mut [u8]) -> Result<(), Fault> {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr.wrapping_add(i);
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
        if let Some(a) = (0..data.len())
            .map(|i| addr.wrapping_add(i))
            .find(|&a| self.byte_mut(a).is_none())
        {
            return Err(Fault { addr: a });
        }
        self.poke(addr, data);
        Ok(())
    }
    fn is_executable(&mut self, addr: usize) -> bool {
        self.pages.get(addr / PAGE * PAGE).is_some_and(|p| p.exec)
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

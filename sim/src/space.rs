//! [`ruprobes::UserSpace`] over a simulated process: the engine's window on user memory,
//! with switches that make it fail on purpose (for the bad-input tests).

use ruprobes::{Fault, Pid, Tid, UserSpace};

use crate::kernel::aspace::{Access, AddressSpace};
use crate::mem::PhysMem;

/// Failures to inject into the engine's user-memory accesses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultInjection {
    /// Every read fails.
    pub fail_reads: bool,
    /// `Some(n)`: the first `n` writes (counted from when the switch was set) succeed, every
    /// later one fails. `Some(0)` fails every write.
    pub fail_writes_after: Option<u64>,
    /// Mapping an XOL page fails.
    pub fail_xol_map: bool,
    /// Writes that succeeded since the switches were set.
    writes_done: u64,
}

impl FaultInjection {
    /// No failures.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every read fails.
    pub fn fail_reads() -> Self {
        FaultInjection {
            fail_reads: true,
            ..Self::default()
        }
    }

    /// Writes fail after `n` successful ones.
    pub fn fail_writes_after(n: u64) -> Self {
        FaultInjection {
            fail_writes_after: Some(n),
            ..Self::default()
        }
    }

    /// XOL page mapping fails.
    pub fn fail_xol_map() -> Self {
        FaultInjection {
            fail_xol_map: true,
            ..Self::default()
        }
    }

    /// Whether the next write must fail; counts it otherwise.
    fn take_write(&mut self) -> bool {
        match self.fail_writes_after {
            Some(n) if self.writes_done >= n => true,
            _ => {
                self.writes_done += 1;
                false
            }
        }
    }
}

/// One process's user space as the engine sees it (kernel privilege).
pub struct SimSpace<'a> {
    mem: &'a mut PhysMem,
    aspace: &'a mut AddressSpace,
    pid: Pid,
    tid: Tid,
    faults: &'a mut FaultInjection,
    /// Set when the page table changed, so the machine flushes the CPU's TLB.
    mapped: bool,
}

impl<'a> SimSpace<'a> {
    /// The user space of process `pid`.
    pub fn new(
        mem: &'a mut PhysMem,
        aspace: &'a mut AddressSpace,
        pid: Pid,
        faults: &'a mut FaultInjection,
    ) -> Self {
        SimSpace {
            mem,
            aspace,
            pid,
            tid: pid,
            faults,
            mapped: false,
        }
    }

    /// The same space as seen from thread `tid` of the process (the main thread's tid is
    /// the pid).
    pub fn with_tid(mut self, tid: Tid) -> Self {
        self.tid = tid;
        self
    }

    /// Whether a page was mapped through this space (the CPU's TLB must be flushed).
    pub fn page_table_changed(&self) -> bool {
        self.mapped
    }
}

impl UserSpace for SimSpace<'_> {
    fn pid(&self) -> Pid {
        self.pid
    }

    fn tid(&self) -> Tid {
        self.tid
    }

    fn read(&mut self, addr: usize, buf: &mut [u8]) -> Result<(), Fault> {
        if self.faults.fail_reads {
            return Err(Fault { addr });
        }
        self.aspace.read(self.mem, addr as u64, buf, Access::Kernel)
    }

    fn write(&mut self, addr: usize, data: &[u8]) -> Result<(), Fault> {
        if self.faults.take_write() {
            return Err(Fault { addr });
        }
        // PhysMem::write invalidates decoded copies of the frame: the next fetch sees it.
        self.aspace
            .write(self.mem, addr as u64, data, Access::Kernel)
    }

    fn is_executable(&mut self, addr: usize) -> bool {
        self.aspace.is_executable(self.mem, addr as u64)
    }

    fn map_xol_page(&mut self) -> Result<usize, Fault> {
        if self.faults.fail_xol_map {
            return Err(Fault { addr: 0 });
        }
        let va = self
            .aspace
            .map_xol_page(self.mem)
            .map_err(|_| Fault { addr: 0 })?;
        self.mapped = true;
        Ok(va as usize)
    }

    /// Nothing to do: every write goes through [`PhysMem::write`], which already
    /// invalidates the CPU's decoded copy of the frame.
    fn flush_icache(&mut self, _addr: usize, _len: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::aspace::pte_flags;
    use crate::kernel::image::Perms;
    use crate::sv39;

    fn setup() -> (PhysMem, AddressSpace) {
        let mut mem = PhysMem::new(64);
        let aspace = AddressSpace::new(&mut mem).unwrap_or_else(|e| panic!("{e}"));
        let frame = mem.alloc_frame().unwrap_or_default();
        let text = pte_flags(Perms {
            read: true,
            write: false,
            exec: true,
        });
        assert!(sv39::map_page(&mut mem, aspace.root, 0x10000, frame, text).is_ok());
        (mem, aspace)
    }

    #[test]
    fn writes_text_with_kernel_privilege_and_injects_faults() {
        let (mut mem, mut aspace) = setup();
        let mut faults = FaultInjection::fail_writes_after(1);
        let mut space = SimSpace::new(&mut mem, &mut aspace, 1, &mut faults);
        assert_eq!(space.write(0x10ffe, &[1, 2]), Ok(()));
        assert_eq!(space.write(0x10000, &[3]), Err(Fault { addr: 0x10000 }));
        let mut buf = [0u8; 2];
        assert_eq!(space.read(0x10ffe, &mut buf), Ok(()));
        assert_eq!(buf, [1, 2]);
        assert_eq!(
            space.read(0x10fff, &mut buf),
            Err(Fault { addr: 0x11000 }),
            "crosses into an unmapped page"
        );
        assert!(space.is_executable(0x10000));
        assert!(!space.is_executable(0x11000));
        assert!(!space.page_table_changed());
        let xol = space.map_xol_page();
        assert_eq!(xol, Ok(0x3000_0000));
        assert!(space.page_table_changed());
        assert!(space.is_executable(0x3000_0000));
    }

    #[test]
    fn failing_reads_and_xol_map() {
        let (mut mem, mut aspace) = setup();
        let mut faults = FaultInjection {
            fail_reads: true,
            fail_xol_map: true,
            ..FaultInjection::none()
        };
        let mut space = SimSpace::new(&mut mem, &mut aspace, 7, &mut faults);
        assert_eq!(space.pid(), 7);
        assert_eq!(
            space.read(0x10000, &mut [0u8; 4]),
            Err(Fault { addr: 0x10000 })
        );
        assert!(space.map_xol_page().is_err());
    }
}

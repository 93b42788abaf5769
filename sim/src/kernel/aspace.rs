//! One process's address space: an Sv39 page table in emulated physical memory plus the
//! kernel's view of it (user-checked and kernel-privileged copies, XOL pages, fork) and its
//! areas ([`Vma`]s, managed by [`crate::kernel::memory`]).

use std::collections::BTreeMap;

use ruprobes::Fault;

use crate::error::SimError;
use crate::kernel::image::{Image, Perms};
use crate::mem::{PhysMem, PAGE_SIZE};
use crate::sv39::{self, MapError, PTE_A, PTE_D, PTE_R, PTE_U, PTE_W, PTE_X};

/// The user stack ends here (exclusive); `sp` starts at this address.
pub const STACK_TOP: u64 = 0x4000_0000;
/// Pages of user stack.
pub const STACK_PAGES: u64 = 16;
/// The first XOL page; later ones follow upward.
pub const XOL_BASE: u64 = 0x3000_0000;
/// How far the stack may grow down on demand (when the address space has a stack area).
pub const STACK_MAX: u64 = 8 << 20;
/// XOL pages may not grow into the stack.
const XOL_LIMIT: u64 = STACK_TOP - STACK_MAX;

/// One area of the address space: pages in it that are not mapped yet are mapped (zeroed)
/// when first touched, if `perms` allow the access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    /// End (exclusive, page-aligned); the start is the key in [`AddressSpace::vmas`].
    pub end: u64,
    /// What user accesses may do (all false: `PROT_NONE`).
    pub perms: Perms,
}

/// What an access needs from the page's PTE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Kernel privilege: any mapped page.
    Kernel,
    /// A user read (`U` and `R`), e.g. a `write` syscall's buffer.
    UserRead,
    /// A user write (`U` and `W`), e.g. `waitpid`'s status.
    UserWrite,
}

impl Access {
    fn allowed(self, flags: u64) -> bool {
        match self {
            Access::Kernel => true,
            Access::UserRead => flags & (PTE_U | PTE_R) == PTE_U | PTE_R,
            Access::UserWrite => flags & (PTE_U | PTE_W) == PTE_U | PTE_W,
        }
    }
}

fn map_error(e: MapError) -> SimError {
    match e {
        MapError::OutOfFrames => SimError::OutOfMemory,
        other => SimError::BadElf {
            name: "address space".into(),
            why: other.to_string(),
        },
    }
}

/// A process's page table and the bookkeeping the kernel keeps beside it.
#[derive(Debug)]
pub struct AddressSpace {
    /// Physical address of the root table (what `satp` would point to).
    pub root: u64,
    /// Where the next XOL page goes.
    xol_next: u64,
    /// The areas, by start address (empty for a teaching-kernel process: nothing is mapped
    /// on demand).
    pub vmas: BTreeMap<u64, Vma>,
    /// Where the program break started and where it is now.
    pub brk_start: u64,
    /// The current program break.
    pub brk: u64,
}

impl AddressSpace {
    /// An empty address space.
    pub fn new(mem: &mut PhysMem) -> Result<Self, SimError> {
        let root = sv39::new_root(mem).map_err(map_error)?;
        Ok(AddressSpace {
            root,
            xol_next: XOL_BASE,
            vmas: BTreeMap::new(),
            brk_start: 0,
            brk: 0,
        })
    }

    /// A fresh address space holding `image` and an empty user stack of [`STACK_PAGES`].
    /// With `areas`, the image, the stack (growing on demand to [`STACK_MAX`]) and the
    /// program break (at the image's end) are also areas, as the Linux personality needs.
    pub fn with_image(mem: &mut PhysMem, image: &Image, areas: bool) -> Result<Self, SimError> {
        let mut space = Self::new(mem)?;
        if areas {
            for page in &image.pages {
                space.add_area(page.va, page.va + PAGE_SIZE, page.perms);
            }
            let stack = Perms {
                read: true,
                write: true,
                exec: false,
            };
            space.add_area(STACK_TOP - STACK_MAX, STACK_TOP, stack);
            space.brk_start = image.end;
            space.brk = image.end;
        }
        let result = space.populate(mem, image);
        if let Err(e) = result {
            space.free(mem);
            return Err(e);
        }
        Ok(space)
    }

    fn populate(&mut self, mem: &mut PhysMem, image: &Image) -> Result<(), SimError> {
        for page in &image.pages {
            self.map_new(mem, page.va, pte_flags(page.perms), Some(&page.bytes))?;
        }
        let stack = Perms {
            read: true,
            write: true,
            exec: false,
        };
        for i in 1..=STACK_PAGES {
            self.map_new(mem, STACK_TOP - i * PAGE_SIZE, pte_flags(stack), None)?;
        }
        Ok(())
    }

    /// Maps a freshly allocated frame at `va` (with `bytes` copied in, zeros otherwise).
    pub(crate) fn map_new(
        &mut self,
        mem: &mut PhysMem,
        va: u64,
        flags: u64,
        bytes: Option<&[u8]>,
    ) -> Result<(), SimError> {
        let frame = mem.alloc_frame().ok_or(SimError::OutOfMemory)?;
        if let Some(bytes) = bytes {
            mem.write(frame, bytes);
        }
        sv39::map_page(mem, self.root, va, frame, flags).map_err(|e| {
            mem.free_frame(frame);
            map_error(e)
        })
    }

    /// Maps one new user R+X page for out-of-line stepping and returns its address.
    pub fn map_xol_page(&mut self, mem: &mut PhysMem) -> Result<u64, SimError> {
        if self.xol_next >= XOL_LIMIT {
            return Err(SimError::OutOfMemory);
        }
        let va = self.xol_next;
        self.map_new(mem, va, PTE_U | PTE_R | PTE_X | PTE_A, None)?;
        self.xol_next += PAGE_SIZE;
        Ok(va)
    }

    /// The end of the XOL pages mapped so far.
    pub(crate) fn xol_end(&self) -> u64 {
        self.xol_next
    }

    /// A copy of this address space: every page (XOL pages included) copied to new frames.
    pub fn fork(&self, mem: &mut PhysMem) -> Result<Self, SimError> {
        let mut child = Self::new(mem)?;
        child.xol_next = self.xol_next;
        child.vmas = self.vmas.clone();
        child.brk_start = self.brk_start;
        child.brk = self.brk;
        let mut page = vec![0u8; PAGE_SIZE as usize];
        for (va, pa, flags) in sv39::leaves(mem, self.root) {
            mem.read(pa, &mut page);
            if let Err(e) = child.map_new(mem, va, flags, Some(&page)) {
                child.free(mem);
                return Err(e);
            }
        }
        Ok(child)
    }

    /// Returns every frame (data and tables) to the allocator.
    pub fn free(self, mem: &mut PhysMem) {
        for (_, pa, _) in sv39::leaves(mem, self.root) {
            mem.free_frame(pa);
        }
        sv39::free_tables(mem, self.root);
    }

    /// Whether `addr` is in a user-executable page.
    pub fn is_executable(&self, mem: &PhysMem, addr: u64) -> bool {
        sv39::translate(mem, self.root, addr)
            .is_some_and(|(_, flags)| flags & (PTE_U | PTE_X) == PTE_U | PTE_X)
    }

    /// Copies user memory at `addr` into `buf`, page by page through the page table.
    pub fn read(
        &self,
        mem: &PhysMem,
        addr: u64,
        buf: &mut [u8],
        access: Access,
    ) -> Result<(), Fault> {
        let mut done = 0;
        while done < buf.len() {
            let va = addr.wrapping_add(done as u64);
            let chunk = chunk_len(va, buf.len() - done);
            let pa = self.physical(mem, va, access)?;
            if !mem.read(pa, &mut buf[done..done + chunk]) {
                return Err(fault(va));
            }
            done += chunk;
        }
        Ok(())
    }

    /// Copies `data` to user memory at `addr`. Nothing is written unless every page is
    /// accessible.
    pub fn write(
        &self,
        mem: &mut PhysMem,
        addr: u64,
        data: &[u8],
        access: Access,
    ) -> Result<(), Fault> {
        let mut chunks = Vec::with_capacity(2);
        let mut done = 0;
        while done < data.len() {
            let va = addr.wrapping_add(done as u64);
            let chunk = chunk_len(va, data.len() - done);
            chunks.push((self.physical(mem, va, access)?, done..done + chunk));
            done += chunk;
        }
        for (pa, range) in chunks {
            if !mem.write(pa, &data[range]) {
                return Err(fault(pa));
            }
        }
        Ok(())
    }

    pub(crate) fn physical(&self, mem: &PhysMem, va: u64, access: Access) -> Result<u64, Fault> {
        match sv39::translate(mem, self.root, va) {
            Some((pa, flags)) if access.allowed(flags) => Ok(pa),
            _ => Err(fault(va)),
        }
    }
}

fn fault(addr: u64) -> Fault {
    Fault {
        addr: addr as usize,
    }
}

/// Bytes from `va` to the end of its page, at most `left`.
fn chunk_len(va: u64, left: usize) -> usize {
    let to_page_end = (PAGE_SIZE - va % PAGE_SIZE) as usize;
    to_page_end.min(left)
}

/// The leaf PTE flags of a user page with `perms` (`A` and `D` preset: the CPU does not set them).
pub fn pte_flags(perms: Perms) -> u64 {
    let mut flags = PTE_U | PTE_A;
    // Sv39 has no write-only page, and a leaf needs at least one of R/X.
    if perms.read || perms.write || !perms.exec {
        flags |= PTE_R;
    }
    if perms.write {
        flags |= PTE_W | PTE_D;
    }
    if perms.exec {
        flags |= PTE_X;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_copies_every_page_and_frees_cleanly() {
        let mut mem = PhysMem::new(256);
        let free_at_start = mem.free_frames();
        let mut parent = AddressSpace::new(&mut mem).unwrap_or_else(|e| panic!("{e}"));
        let data = Perms {
            read: true,
            write: true,
            exec: false,
        };
        assert!(parent
            .map_new(&mut mem, 0x10000, pte_flags(data), Some(&[7; 4096]))
            .is_ok());
        let xol = parent
            .map_xol_page(&mut mem)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(xol, XOL_BASE);
        assert!(parent.write(&mut mem, xol, &[1, 2], Access::Kernel).is_ok());
        assert!(
            parent
                .write(&mut mem, xol, &[1, 2], Access::UserWrite)
                .is_err(),
            "XOL is not user-writable"
        );
        let child = parent.fork(&mut mem).unwrap_or_else(|e| panic!("{e}"));
        // The child has its own copy.
        assert!(parent
            .write(&mut mem, 0x10000, &[9], Access::UserWrite)
            .is_ok());
        let mut buf = [0u8; 2];
        assert!(child
            .read(&mem, 0x10000, &mut buf[..1], Access::UserRead)
            .is_ok());
        assert_eq!(buf[0], 7);
        assert!(child.read(&mem, xol, &mut buf, Access::UserRead).is_ok());
        assert_eq!(buf, [1, 2], "XOL pages are copied too");
        assert_eq!(child.xol_next, XOL_BASE + PAGE_SIZE);
        parent.free(&mut mem);
        child.free(&mut mem);
        assert_eq!(mem.free_frames(), free_at_start, "every frame returned");
    }
}

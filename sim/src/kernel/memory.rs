//! Memory management of the Linux personality: areas, demand paging, the program break
//! and `mmap`/`munmap`/`mremap`/`mprotect`.
//!
//! Areas ([`Vma`]) say what may be mapped; frames are only allocated when a page is first
//! touched (by the guest, or by a system call copying into it), so a program that reserves
//! 128 MiB of `PROT_NONE` address space, as glibc's malloc arenas do, costs nothing. Anonymous
//! mappings are private and zeroed; `mmap` of a file is refused (`-ENODEV`). A page made
//! `PROT_NONE` by `mprotect` loses its frame (and contents): Sv39 cannot map a page with no
//! permission, and the programs we run only do it to fresh guard pages.
//!
//! New mappings go top-down in [`MMAP_BASE`]..[`MMAP_TOP`], far above the image, the XOL
//! pages and the stack, so each program gets the same addresses on every run.
//! A request that needs more frames than are free fails with `-ENOMEM` instead of
//! overcommitting; a demand fault that still finds no frame kills the process (SIGKILL).

use crate::error::SimError;
use crate::kernel::aspace::{pte_flags, AddressSpace, Vma};
use crate::kernel::image::Perms;
use crate::mem::{PhysMem, PAGE_SIZE};
use crate::sv39;

/// Lowest address `mmap` hands out.
pub const MMAP_BASE: u64 = 0x10_0000_0000;
/// `mmap` hands out addresses below this one, highest first.
pub const MMAP_TOP: u64 = 0x3f_0000_0000;

/// `ENOMEM`.
pub const ENOMEM: i64 = -12;
/// `EINVAL`.
pub const EINVAL: i64 = -22;

/// `PROT_*` bits as page permissions.
pub fn prot_perms(prot: u64) -> Perms {
    Perms {
        read: prot & 1 != 0,
        write: prot & 2 != 0,
        exec: prot & 4 != 0,
    }
}

fn accessible(perms: Perms) -> bool {
    perms.read || perms.write || perms.exec
}

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE - 1).map(|v| v & !(PAGE_SIZE - 1))
}

impl AddressSpace {
    /// Adds the area `start..end` (page-aligned), merging it with equal neighbours. The
    /// range must not overlap an existing area.
    pub fn add_area(&mut self, start: u64, end: u64, perms: Perms) {
        let mut start = start;
        let mut end = end;
        if let Some((&s, v)) = self.vmas.range(..start).next_back() {
            if v.end == start && v.perms == perms {
                start = s;
                self.vmas.remove(&s);
            }
        }
        if let Some(v) = self.vmas.get(&end).copied() {
            if v.perms == perms {
                self.vmas.remove(&end);
                end = v.end;
            }
        }
        self.vmas.insert(start, Vma { end, perms });
    }

    /// The area holding `va`, as `(start, area)`.
    pub fn area_at(&self, va: u64) -> Option<(u64, Vma)> {
        let (&start, vma) = self.vmas.range(..=va).next_back()?;
        (va < vma.end).then_some((start, *vma))
    }

    /// Cuts the areas at `at`, so that no area spans it.
    fn split_at(&mut self, at: u64) {
        if let Some((start, vma)) = self.area_at(at) {
            if start < at {
                self.vmas.insert(start, Vma { end: at, ..vma });
                self.vmas.insert(at, vma);
            }
        }
    }

    /// Removes the areas in `start..end` and unmaps (and frees) their pages.
    fn remove_range(&mut self, mem: &mut PhysMem, start: u64, end: u64) {
        self.split_at(start);
        self.split_at(end);
        let inside: Vec<u64> = self.vmas.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            self.vmas.remove(&s);
        }
        for (va, pa, _) in sv39::leaves_in(mem, self.root, start, end) {
            if self.is_xol(va) {
                continue;
            }
            sv39::unmap_page(mem, self.root, va);
            mem.free_frame(pa);
        }
    }

    /// Whether `va` is one of the engine's XOL pages (which the guest cannot unmap).
    fn is_xol(&self, va: u64) -> bool {
        (super::aspace::XOL_BASE..self.xol_end()).contains(&va)
    }

    /// Whether `start..end` overlaps no area and no XOL page.
    fn is_free(&self, start: u64, end: u64) -> bool {
        let xol = super::aspace::XOL_BASE..self.xol_end();
        if start < xol.end && xol.start < end {
            return false;
        }
        match self.vmas.range(..end).next_back() {
            Some((_, v)) => v.end <= start,
            None => true,
        }
    }

    /// Maps the page at `va` on demand if an area allows `write` (else a read or fetch).
    /// `Ok(false)` when no area covers it or the access is not allowed, or it is mapped.
    pub fn demand_page(
        &mut self,
        mem: &mut PhysMem,
        va: u64,
        write: bool,
        exec: bool,
    ) -> Result<bool, SimError> {
        let Some((_, vma)) = self.area_at(va) else {
            return Ok(false);
        };
        let allowed = if write {
            vma.perms.write
        } else if exec {
            vma.perms.exec
        } else {
            vma.perms.read
        };
        let page = va & !(PAGE_SIZE - 1);
        if !allowed || sv39::translate(mem, self.root, page).is_some() {
            return Ok(false);
        }
        self.map_new(mem, page, pte_flags(vma.perms), None)?;
        Ok(true)
    }

    /// Maps every unmapped page of `addr..addr + len` that an area allows, before the kernel
    /// copies user memory there. Fails only when frames run out.
    pub fn fault_in(
        &mut self,
        mem: &mut PhysMem,
        addr: u64,
        len: u64,
        write: bool,
    ) -> Result<(), SimError> {
        if self.vmas.is_empty() || len == 0 {
            return Ok(());
        }
        let mut page = addr & !(PAGE_SIZE - 1);
        let end = addr.saturating_add(len);
        while page < end {
            match self.area_at(page) {
                Some(_) => {
                    self.demand_page(mem, page, write, false)?;
                    page += PAGE_SIZE;
                }
                // Skip to the next area, if any.
                None => match self.vmas.range(page..).next() {
                    Some((&s, _)) => page = s,
                    None => break,
                },
            }
        }
        Ok(())
    }

    /// `brk(new)`: moves the program break (never below its start) and returns where it is.
    pub fn set_brk(&mut self, mem: &mut PhysMem, new: u64) -> u64 {
        if self.brk_start == 0 || new < self.brk_start {
            return self.brk;
        }
        let (Some(old_top), Some(new_top)) = (page_up(self.brk), page_up(new)) else {
            return self.brk;
        };
        let heap = Perms {
            read: true,
            write: true,
            exec: false,
        };
        if new_top > old_top {
            let pages = (new_top - old_top) / PAGE_SIZE;
            if new_top > super::aspace::XOL_BASE
                || !self.is_free(old_top, new_top)
                || pages > mem.free_frames() as u64
            {
                return self.brk;
            }
            self.add_area(old_top, new_top, heap);
        } else if new_top < old_top {
            self.remove_range(mem, new_top, old_top);
        }
        self.brk = new;
        self.brk
    }

    /// `mmap` of anonymous private memory: returns the address or a negative errno.
    /// `fixed`: exactly at `hint`, replacing what was there.
    pub fn mmap(
        &mut self,
        mem: &mut PhysMem,
        hint: u64,
        len: u64,
        perms: Perms,
        fixed: bool,
    ) -> i64 {
        let Some(len) = page_up(len).filter(|&l| l > 0 && l <= MMAP_TOP - MMAP_BASE) else {
            return if len == 0 { EINVAL } else { ENOMEM };
        };
        if accessible(perms) && len / PAGE_SIZE > mem.free_frames() as u64 {
            return ENOMEM;
        }
        let start = if fixed {
            if hint % PAGE_SIZE != 0 || hint.checked_add(len).is_none_or(|e| e > 1 << 38) {
                return EINVAL;
            }
            self.remove_range(mem, hint, hint + len);
            hint
        } else if hint % PAGE_SIZE == 0
            && hint >= MMAP_BASE
            && hint.checked_add(len).is_some_and(|e| e <= MMAP_TOP)
            && self.is_free(hint, hint + len)
        {
            hint
        } else {
            match self.find_gap(len) {
                Some(start) => start,
                None => return ENOMEM,
            }
        };
        self.add_area(start, start + len, perms);
        start as i64
    }

    /// The highest free `len` bytes below [`MMAP_TOP`] and above [`MMAP_BASE`].
    fn find_gap(&self, len: u64) -> Option<u64> {
        let mut top = MMAP_TOP;
        for (&start, vma) in self.vmas.range(..MMAP_TOP).rev() {
            if vma.end <= top && top - vma.end >= len && top - len >= MMAP_BASE {
                return Some(top - len);
            }
            top = top.min(start);
            if top < MMAP_BASE + len {
                return None;
            }
        }
        (top >= MMAP_BASE + len).then(|| top - len)
    }

    /// `munmap(addr, len)`.
    pub fn munmap(&mut self, mem: &mut PhysMem, addr: u64, len: u64) -> i64 {
        let Some(end) = page_up(len).and_then(|l| addr.checked_add(l)) else {
            return EINVAL;
        };
        if addr % PAGE_SIZE != 0 || len == 0 {
            return EINVAL;
        }
        self.remove_range(mem, addr, end);
        0
    }

    /// `mprotect(addr, len, prot)`: new permissions for the areas and mapped pages there.
    pub fn mprotect(&mut self, mem: &mut PhysMem, addr: u64, len: u64, perms: Perms) -> i64 {
        let Some(end) = page_up(len).and_then(|l| addr.checked_add(l)) else {
            return ENOMEM;
        };
        if addr % PAGE_SIZE != 0 {
            return EINVAL;
        }
        // Every page must be in some area, as Linux requires.
        let mut at = addr;
        while at < end {
            match self.area_at(at) {
                Some((_, v)) => at = v.end,
                None => return ENOMEM,
            }
        }
        self.split_at(addr);
        self.split_at(end);
        let inside: Vec<u64> = self.vmas.range(addr..end).map(|(&s, _)| s).collect();
        for s in inside {
            if let Some(v) = self.vmas.get_mut(&s) {
                v.perms = perms;
            }
        }
        self.merge_around(addr, end);
        for (va, pa, _) in sv39::leaves_in(mem, self.root, addr, end) {
            sv39::unmap_page(mem, self.root, va);
            if accessible(perms) {
                // Cannot fail: the tables exist and the slot was just cleared.
                let _ = sv39::map_page(mem, self.root, va, pa, pte_flags(perms));
            } else {
                mem.free_frame(pa);
            }
        }
        0
    }

    /// Merges equal neighbouring areas in and next to `start..end`.
    fn merge_around(&mut self, start: u64, end: u64) {
        let from = self
            .vmas
            .range(..start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        let starts: Vec<u64> = self.vmas.range(from..=end).map(|(&s, _)| s).collect();
        for s in starts {
            while let Some(v) = self.vmas.get(&s).copied() {
                match self.vmas.get(&v.end).copied() {
                    Some(next) if next.perms == v.perms => {
                        self.vmas.remove(&v.end);
                        self.vmas.insert(s, Vma { end: next.end, ..v });
                    }
                    _ => break,
                }
            }
        }
    }

    /// `mremap(old, old_len, new_len, flags)` (`MREMAP_MAYMOVE` = 1): shrinks in place,
    /// grows in place when the space after is free, or moves the pages.
    pub fn mremap(
        &mut self,
        mem: &mut PhysMem,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
    ) -> i64 {
        let (Some(old_len), Some(new_len)) = (page_up(old_len), page_up(new_len)) else {
            return ENOMEM;
        };
        if old % PAGE_SIZE != 0 || new_len == 0 || flags & !1 != 0 {
            return EINVAL;
        }
        let Some((_, vma)) = self.area_at(old).filter(|(_, v)| v.end >= old + old_len) else {
            return -14; // EFAULT
        };
        if new_len <= old_len {
            self.remove_range(mem, old + new_len, old + old_len);
            return old as i64;
        }
        let extra = new_len - old_len;
        if accessible(vma.perms) && extra / PAGE_SIZE > mem.free_frames() as u64 {
            return ENOMEM;
        }
        if old + new_len <= MMAP_TOP && self.is_free(old + old_len, old + new_len) {
            self.add_area(old + old_len, old + new_len, vma.perms);
            return old as i64;
        }
        if flags & 1 == 0 {
            return ENOMEM;
        }
        let Some(new) = self.find_gap(new_len) else {
            return ENOMEM;
        };
        self.add_area(new, new + new_len, vma.perms);
        for (va, pa, flags) in sv39::leaves_in(mem, self.root, old, old + old_len) {
            sv39::unmap_page(mem, self.root, va);
            let _ = sv39::map_page(mem, self.root, va - old + new, pa, flags);
        }
        self.remove_range(mem, old, old + old_len);
        new as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::aspace::Access;

    const RW: Perms = Perms {
        read: true,
        write: true,
        exec: false,
    };

    #[test]
    fn mmap_is_lazy_and_munmap_frees() {
        let mut mem = PhysMem::new(64);
        let mut a = AddressSpace::new(&mut mem).unwrap_or_else(|e| panic!("{e}"));
        let free = mem.free_frames();
        let addr = a.mmap(&mut mem, 0, 1 << 30, Perms::default(), false);
        assert_eq!(addr as u64, MMAP_TOP - (1 << 30), "top-down");
        assert_eq!(mem.free_frames(), free, "PROT_NONE costs no frame");
        assert_eq!(
            a.mmap(&mut mem, 0, 1 << 30, RW, false),
            ENOMEM,
            "more than memory"
        );
        let p = a.mmap(&mut mem, 0, 3 * PAGE_SIZE, RW, false) as u64;
        assert_eq!(p, addr as u64 - 3 * PAGE_SIZE);
        assert_eq!(mem.free_frames(), free, "lazy");
        assert_eq!(a.demand_page(&mut mem, p + 5, true, false).ok(), Some(true));
        assert!(a.write(&mut mem, p, &[1], Access::UserWrite).is_ok());
        assert_eq!(
            a.demand_page(&mut mem, addr as u64, false, false).ok(),
            Some(false)
        );
        assert_eq!(a.munmap(&mut mem, p, 3 * PAGE_SIZE), 0);
        assert!(a.write(&mut mem, p, &[1], Access::UserWrite).is_err());
        assert_eq!(a.mprotect(&mut mem, p, PAGE_SIZE, RW), ENOMEM, "unmapped");
        // The freed range is reused.
        assert_eq!(
            a.mmap(&mut mem, 0, PAGE_SIZE, RW, false) as u64,
            p + 2 * PAGE_SIZE
        );
    }

    #[test]
    fn mprotect_splits_and_brk_grows() {
        let mut mem = PhysMem::new(64);
        let mut a = AddressSpace::new(&mut mem).unwrap_or_else(|e| panic!("{e}"));
        let p = a.mmap(&mut mem, 0, 4 * PAGE_SIZE, Perms::default(), false) as u64;
        assert_eq!(a.mprotect(&mut mem, p + PAGE_SIZE, PAGE_SIZE, RW), 0);
        assert_eq!(a.vmas.len(), 3);
        assert_eq!(a.demand_page(&mut mem, p, true, false).ok(), Some(false));
        assert_eq!(
            a.demand_page(&mut mem, p + PAGE_SIZE, true, false).ok(),
            Some(true)
        );
        assert_eq!(
            a.mprotect(&mut mem, p + PAGE_SIZE, PAGE_SIZE, Perms::default()),
            0
        );
        assert_eq!(a.vmas.len(), 1, "merged back");
        a.brk_start = 0x20000;
        a.brk = 0x20000;
        assert_eq!(a.set_brk(&mut mem, 0), 0x20000);
        assert_eq!(a.set_brk(&mut mem, 0x21010), 0x21010);
        assert!(a.fault_in(&mut mem, 0x21000, 16, true).is_ok());
        assert!(a.write(&mut mem, 0x21008, &[7], Access::UserWrite).is_ok());
        assert_eq!(a.set_brk(&mut mem, 0x20000), 0x20000);
        assert!(a.write(&mut mem, 0x21008, &[7], Access::UserWrite).is_err());
    }

    #[test]
    fn mremap_grows_in_place_or_moves() {
        let mut mem = PhysMem::new(64);
        let mut a = AddressSpace::new(&mut mem).unwrap_or_else(|e| panic!("{e}"));
        let p = a.mmap(&mut mem, 0, PAGE_SIZE, RW, false) as u64;
        let q = a.mmap(&mut mem, 0, PAGE_SIZE, RW, false) as u64;
        assert!(a.fault_in(&mut mem, q, 1, true).is_ok());
        assert!(a.write(&mut mem, q, &[42], Access::UserWrite).is_ok());
        // q is right below p: it cannot grow in place.
        assert_eq!(a.mremap(&mut mem, q, PAGE_SIZE, 2 * PAGE_SIZE, 0), ENOMEM);
        let moved = a.mremap(&mut mem, q, PAGE_SIZE, 2 * PAGE_SIZE, 1) as u64;
        assert_ne!(moved, q);
        let mut b = [0u8];
        assert!(a.read(&mem, moved, &mut b, Access::UserRead).is_ok());
        assert_eq!(b[0], 42, "contents move along");
        assert_eq!(a.mremap(&mut mem, p, PAGE_SIZE, PAGE_SIZE, 0), p as i64);
    }
}

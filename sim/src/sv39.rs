//! Sv39 page tables living in emulated physical memory: building, tearing down, walking.
//!
//! Tables are ordinary frames of a [`PhysMem`], so the CPU's hardware-style walk and the
//! kernel's bookkeeping see the same bytes. Fork is left to the kernel: [`leaves`] lists every
//! mapping, and [`map_page`] rebuilds them in a new table.
//!
//! The CPU treats a leaf without `A` (or without `D`, for a store) as a page fault instead of
//! setting the bit (the Svade behaviour), so the kernel should set `A | D` on every leaf.

use crate::mem::{PhysMem, PAGE_SIZE};

/// Valid.
pub const PTE_V: u64 = 1 << 0;
/// Readable.
pub const PTE_R: u64 = 1 << 1;
/// Writable.
pub const PTE_W: u64 = 1 << 2;
/// Executable.
pub const PTE_X: u64 = 1 << 3;
/// Accessible from user mode.
pub const PTE_U: u64 = 1 << 4;
/// Global.
pub const PTE_G: u64 = 1 << 5;
/// Accessed.
pub const PTE_A: u64 = 1 << 6;
/// Dirty.
pub const PTE_D: u64 = 1 << 7;

/// The low ten flag bits of a PTE.
pub const PTE_FLAGS: u64 = 0x3ff;

/// Why a mapping could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// No free frame for an intermediate table.
    OutOfFrames,
    /// The virtual address is not canonical Sv39 (bits 63..39 must equal bit 38) or not
    /// page aligned.
    BadVirtAddr(u64),
    /// The physical address is not a page-aligned address inside memory.
    BadPhysAddr(u64),
    /// The page is already mapped (unmap it first).
    AlreadyMapped(u64),
    /// A table entry on the walk is not a valid pointer (a superpage or a corrupt table).
    BadTable(u64),
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::OutOfFrames => write!(f, "out of physical frames"),
            MapError::BadVirtAddr(va) => write!(f, "bad virtual address {va:#x}"),
            MapError::BadPhysAddr(pa) => write!(f, "bad physical address {pa:#x}"),
            MapError::AlreadyMapped(va) => write!(f, "page {va:#x} is already mapped"),
            MapError::BadTable(va) => write!(f, "page table walk for {va:#x} hit a leaf"),
        }
    }
}

impl std::error::Error for MapError {}

/// Whether `va` is a canonical Sv39 address.
pub fn is_canonical(va: u64) -> bool {
    ((va as i64) << 25 >> 25) as u64 == va
}

fn vpn(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * level)) & 0x1ff
}

fn pte_addr(pte: u64) -> u64 {
    ((pte >> 10) & ((1 << 44) - 1)) << 12
}

/// Allocates an empty root table.
pub fn new_root(mem: &mut PhysMem) -> Result<u64, MapError> {
    mem.alloc_frame().ok_or(MapError::OutOfFrames)
}

/// Physical address of the level-0 PTE for `va`, creating intermediate tables if `create`.
fn leaf_slot(mem: &mut PhysMem, root: u64, va: u64, create: bool) -> Result<Option<u64>, MapError> {
    let mut table = root;
    for level in [2, 1] {
        let slot = table + vpn(va, level) * 8;
        let pte = mem.read_u64(slot).ok_or(MapError::BadPhysAddr(slot))?;
        if pte & PTE_V == 0 {
            if !create {
                return Ok(None);
            }
            let next = mem.alloc_frame().ok_or(MapError::OutOfFrames)?;
            mem.write_u64(slot, (next >> 12) << 10 | PTE_V);
            table = next;
        } else if pte & (PTE_R | PTE_W | PTE_X) != 0 {
            return Err(MapError::BadTable(va));
        } else {
            table = pte_addr(pte);
        }
    }
    Ok(Some(table + vpn(va, 0) * 8))
}

/// Maps the 4 KiB page at `va` to the frame at `pa` with `flags` (`PTE_V` is added),
/// allocating intermediate tables. The caller flushes the CPU's TLB afterwards.
pub fn map_page(
    mem: &mut PhysMem,
    root: u64,
    va: u64,
    pa: u64,
    flags: u64,
) -> Result<(), MapError> {
    if !is_canonical(va) || va % PAGE_SIZE != 0 {
        return Err(MapError::BadVirtAddr(va));
    }
    if pa % PAGE_SIZE != 0 || mem.frame_of(pa).is_none() {
        return Err(MapError::BadPhysAddr(pa));
    }
    let slot = leaf_slot(mem, root, va, true)?.ok_or(MapError::BadTable(va))?;
    if mem.read_u64(slot).is_some_and(|pte| pte & PTE_V != 0) {
        return Err(MapError::AlreadyMapped(va));
    }
    mem.write_u64(slot, (pa >> 12) << 10 | (flags & PTE_FLAGS) | PTE_V);
    Ok(())
}

/// Removes the mapping of the page at `va` and returns its old `(pa, flags)`, or `None` if it
/// was not mapped. The frame itself is not freed. The caller flushes the CPU's TLB afterwards.
pub fn unmap_page(mem: &mut PhysMem, root: u64, va: u64) -> Option<(u64, u64)> {
    let slot = leaf_slot(mem, root, va & !(PAGE_SIZE - 1), false).ok()??;
    let pte = mem.read_u64(slot)?;
    if pte & PTE_V == 0 {
        return None;
    }
    mem.write_u64(slot, 0);
    Some((pte_addr(pte), pte & PTE_FLAGS))
}

/// Walks the table like the MMU does (4 KiB pages or aligned superpages) and returns the
/// physical address `va` maps to and the leaf's flags, ignoring permissions. `None` if
/// unmapped, non-canonical, or the walk meets a malformed entry.
pub fn translate(mem: &PhysMem, root: u64, va: u64) -> Option<(u64, u64)> {
    if !is_canonical(va) {
        return None;
    }
    let mut table = root;
    for level in (0..3).rev() {
        let pte = mem.read_u64(table + vpn(va, level) * 8)?;
        if pte & PTE_V == 0 || (pte & PTE_R == 0 && pte & PTE_W != 0) {
            return None;
        }
        if pte & (PTE_R | PTE_X) != 0 {
            let span = 1u64 << (12 + 9 * level);
            let base = pte_addr(pte);
            if base % span != 0 {
                return None; // misaligned superpage
            }
            return Some((base + (va & (span - 1)), pte & PTE_FLAGS));
        }
        table = pte_addr(pte);
    }
    None
}

/// The next-level tables of `table`: `(index, table address)` of every valid non-leaf entry.
fn subtables(mem: &PhysMem, table: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    (0..512u64)
        .map_while(move |i| mem.read_u64(table + i * 8).map(|pte| (i, pte)))
        .filter(|(_, pte)| pte & PTE_V != 0 && pte & (PTE_R | PTE_W | PTE_X) == 0)
        .map(|(i, pte)| (i, pte_addr(pte)))
}

/// Every 4 KiB leaf mapping under `root` as `(va, pa, flags)`, in address order.
/// Superpages (which [`map_page`] never creates) are skipped.
pub fn leaves(mem: &PhysMem, root: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for (i2, l1) in subtables(mem, root) {
        for (i1, l0) in subtables(mem, l1) {
            for i0 in 0..512u64 {
                let Some(pte) = mem.read_u64(l0 + i0 * 8) else {
                    break;
                };
                if pte & PTE_V == 0 {
                    continue;
                }
                let va = (i2 << 30 | i1 << 21 | i0 << 12) as i64;
                let va = (va << 25 >> 25) as u64;
                out.push((va, pte_addr(pte), pte & PTE_FLAGS));
            }
        }
    }
    out
}

/// The 4 KiB leaf mappings with `start <= va < end` (user half, below 2^38) as
/// `(va, pa, flags)`, in address order. Absent subtables are skipped whole, so a huge range
/// costs what is mapped in it, not its size.
pub fn leaves_in(mem: &PhysMem, root: u64, start: u64, end: u64) -> Vec<(u64, u64, u64)> {
    const GIB: u64 = 1 << 30;
    const MIB2: u64 = 1 << 21;
    let end = end.min(1 << 38);
    let mut out = Vec::new();
    let mut va = start & !(PAGE_SIZE - 1);
    while va < end {
        let Some(l2) = mem.read_u64(root + vpn(va, 2) * 8) else {
            break;
        };
        if l2 & PTE_V == 0 || l2 & (PTE_R | PTE_W | PTE_X) != 0 {
            va = (va | (GIB - 1)) + 1;
            continue;
        }
        let l1_table = pte_addr(l2);
        let Some(l1) = mem.read_u64(l1_table + vpn(va, 1) * 8) else {
            break;
        };
        if l1 & PTE_V == 0 || l1 & (PTE_R | PTE_W | PTE_X) != 0 {
            va = (va | (MIB2 - 1)) + 1;
            continue;
        }
        let l0_table = pte_addr(l1);
        let stop = ((va | (MIB2 - 1)) + 1).min(end);
        while va < stop {
            if let Some(pte) = mem.read_u64(l0_table + vpn(va, 0) * 8) {
                if pte & PTE_V != 0 {
                    out.push((va, pte_addr(pte), pte & PTE_FLAGS));
                }
            }
            va += PAGE_SIZE;
        }
    }
    out
}

/// Frees the table frames under `root` (root included), not the mapped frames.
pub fn free_tables(mem: &mut PhysMem, root: u64) {
    let l1: Vec<u64> = subtables(mem, root).map(|(_, t)| t).collect();
    for table in l1 {
        let l0: Vec<u64> = subtables(mem, table).map(|(_, t)| t).collect();
        for leaf_table in l0 {
            mem.free_frame(leaf_table);
        }
        mem.free_frame(table);
    }
    mem.free_frame(root);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_translate_unmap_roundtrip() {
        let mut mem = PhysMem::new(16);
        let root = new_root(&mut mem).unwrap();
        let frame = mem.alloc_frame().unwrap();
        let va = 0xffff_ffff_c000_0000; // canonical, high half
        let flags = PTE_R | PTE_W | PTE_U | PTE_A | PTE_D;
        map_page(&mut mem, root, va, frame, flags).unwrap();
        assert_eq!(
            translate(&mem, root, va + 0x123),
            Some((frame + 0x123, flags | PTE_V))
        );
        assert_eq!(
            map_page(&mut mem, root, va, frame, flags),
            Err(MapError::AlreadyMapped(va))
        );
        assert_eq!(leaves(&mem, root), vec![(va, frame, flags | PTE_V)]);
        assert_eq!(unmap_page(&mut mem, root, va), Some((frame, flags | PTE_V)));
        assert_eq!(translate(&mem, root, va), None);
        assert_eq!(unmap_page(&mut mem, root, va), None);
    }

    #[test]
    fn rejects_bad_addresses() {
        let mut mem = PhysMem::new(4);
        let root = new_root(&mut mem).unwrap();
        let frame = mem.alloc_frame().unwrap();
        let bad = 0x0000_0040_0000_0000;
        assert_eq!(
            map_page(&mut mem, root, bad, frame, PTE_R),
            Err(MapError::BadVirtAddr(bad))
        );
        assert_eq!(
            map_page(&mut mem, root, 0x1001, frame, PTE_R),
            Err(MapError::BadVirtAddr(0x1001))
        );
        assert_eq!(
            map_page(&mut mem, root, 0x1000, 0x1000, PTE_R),
            Err(MapError::BadPhysAddr(0x1000))
        );
        assert_eq!(translate(&mem, root, bad), None);
    }

    #[test]
    fn leaves_in_skips_holes_and_stays_in_range() {
        let mut mem = PhysMem::new(16);
        let root = new_root(&mut mem).unwrap();
        let frame = mem.alloc_frame().unwrap();
        for va in [0x10000, 0x11000, 0x4000_0000, 0x20_0000_0000] {
            map_page(&mut mem, root, va, frame, PTE_R).unwrap();
        }
        let vas = |s, e| -> Vec<u64> { leaves_in(&mem, root, s, e).iter().map(|l| l.0).collect() };
        assert_eq!(
            vas(0, 1 << 38),
            [0x10000, 0x11000, 0x4000_0000, 0x20_0000_0000]
        );
        assert_eq!(vas(0x11000, 0x4000_0001), [0x11000, 0x4000_0000]);
        assert_eq!(vas(0x12000, 0x4000_0000), Vec::<u64>::new());
    }

    #[test]
    fn free_tables_returns_every_table_frame() {
        let mut mem = PhysMem::new(16);
        let before = mem.free_frames();
        let root = new_root(&mut mem).unwrap();
        let frame = mem.alloc_frame().unwrap();
        map_page(&mut mem, root, 0x10000, frame, PTE_R).unwrap();
        map_page(&mut mem, root, 0x4000_0000, frame, PTE_R).unwrap();
        free_tables(&mut mem, root);
        assert_eq!(
            mem.free_frames(),
            before - 1,
            "only the data frame stays allocated"
        );
    }
}

//! The out-of-line execution (XOL) area of one process: user pages of 8-byte slots.
//!
//! Slot 0 of the first page is the return trampoline (a breakpoint). Every other slot holds
//! one probed instruction followed by a breakpoint; the slot is written once when the probe
//! is armed, so any number of threads can step through it at the same time.
//!
//! A slot is reused only when nothing refers to it: neither its armed probe nor a thread
//! that hit the probe and is about to step, or is stepping, there (as Linux keeps a uprobe
//! alive by reference while a thread uses it). Removing the probe meanwhile only retires
//! the slot; the next slot allocation after the last such thread is done takes it back.
//!
//! Locking: the engine changes the area (allocation, release) only under its registry's
//! write lock; the trap path pins and unpins slots under the read lock, so the count of
//! threads on a slot is an atomic, and a retired slot is taken back by the writer (which
//! sees every count settled) rather than by the thread that unpins it.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::array::Array;
use crate::decode::{Insn, EBREAK};
use crate::error::Error;
use crate::space::UserSpace;

/// Bytes per slot: a 16- or 32-bit instruction and a 32-bit `ebreak`.
pub const SLOT_SIZE: usize = 8;
/// Size of one XOL page.
pub const PAGE_SIZE: usize = 4096;
/// Probe slots per page (slot 0 is reserved: the trampoline on the first page).
pub const SLOTS_PER_PAGE: usize = PAGE_SIZE / SLOT_SIZE - 1;

/// Who refers to one slot.
#[derive(Default)]
struct Slot {
    /// The address of the armed probe that steps here; `None` once disarmed (or free).
    owner: Option<usize>,
    /// Threads that hit the probe and will step, or are stepping, here (changed on the
    /// trap path, under the registry's read lock).
    steppers: AtomicU32,
}

impl Clone for Slot {
    fn clone(&self) -> Self {
        Slot {
            owner: self.owner,
            steppers: AtomicU32::new(self.steppers.load(Ordering::Relaxed)),
        }
    }
}

#[derive(Clone)]
struct Page {
    base: usize,
    /// Its slots. Built on the heap: as an array value it would be a 4 KiB temporary on the
    /// kernel stack.
    slots: Array<Slot>,
}

impl Page {
    fn new(base: usize) -> Self {
        Page {
            base,
            slots: Array::with_len(PAGE_SIZE / SLOT_SIZE, Slot::default),
        }
    }
}

#[derive(Default)]
pub(crate) struct Xol {
    pages: Array<Page>,
    /// Room for every slot of the area is kept reserved ([`reserve_every_slot`](
    /// Xol::reserve_every_slot)), so putting a slot back ([`free_slot`]) never allocates.
    free: Array<usize>,
    /// Slots whose probe went while threads were on them: free once none is left (taken
    /// back by [`reclaim_retired`](Xol::reclaim_retired)). Room for every slot is kept
    /// reserved here too.
    retired: Array<usize>,
}

impl Clone for Xol {
    fn clone(&self) -> Self {
        let mut copy = Xol {
            pages: self.pages.clone(),
            free: self.free.clone(),
            retired: self.retired.clone(),
        };
        copy.reserve_every_slot();
        copy
    }
}

impl Xol {
    /// Gives the free list room for every probe slot of the mapped pages.
    fn reserve_every_slot(&mut self) {
        let slots = self.pages.len() * SLOTS_PER_PAGE;
        self.free.reserve(slots.saturating_sub(self.free.len()));
        self.retired
            .reserve(slots.saturating_sub(self.retired.len()));
    }

    /// The trampoline address, once the first page exists.
    pub fn trampoline(&self) -> Option<usize> {
        self.pages.first().map(|p| p.base)
    }

    /// Maps a page, the first with the trampoline; puts its probe slots on the free list,
    /// lowest address on top (here, not in a helper: one frame less above the allocations).
    pub fn add_page(&mut self, space: &mut dyn UserSpace) -> Result<usize, Error> {
        let base = match map_page(space, self.pages.is_empty()) {
            Ok(base) => base,
            Err(e) => return Err(e),
        };
        self.pages.push(Page::new(base));
        self.reserve_every_slot();
        // A plain loop: an iterator's state would sit in this frame.
        let mut i = PAGE_SIZE / SLOT_SIZE;
        while i > 1 {
            i -= 1;
            free_slot(&mut self.free, base + i * SLOT_SIZE);
        }
        Ok(base)
    }

    /// Whether arming a probe needs a new page first: the first (with the trampoline) for a
    /// return probe (`trampoline`), or one with a free slot for an instruction stepped out
    /// of line (`slot`). One page is enough: the first brings free slots.
    pub fn needs_page(&self, trampoline: bool, slot: bool) -> bool {
        (self.pages.is_empty() && (trampoline || slot)) || (slot && self.free.is_empty())
    }

    /// Frees the retired slots no thread is on any more. Call before
    /// [`needs_page`](Self::needs_page) for a slot (a sibling of it, not nested in it or in
    /// [`alloc`](Self::alloc): small frames in unoptimised builds).
    pub fn reclaim_retired(&mut self) {
        let mut i = 0;
        while let Some(&slot) = self.retired.get(i) {
            let unpinned = self
                .slot(slot)
                .is_none_or(|e| e.steppers.load(Ordering::Relaxed) == 0);
            if unpinned {
                self.retired.swap_remove(i);
                free_slot(&mut self.free, slot);
            } else {
                i += 1;
            }
        }
    }

    /// Takes a free slot (see [`needs_page`](Self::needs_page)) for the probe at
    /// `owner`, writes `insn` and a breakpoint into it.
    pub fn alloc(
        &mut self,
        space: &mut dyn UserSpace,
        owner: usize,
        insn: &Insn,
    ) -> Result<usize, Error> {
        let Some(slot) = self.free.pop() else {
            return Err(Error::XolMapFailed);
        };
        if let Err(e) = write_slot(space, slot, insn) {
            free_slot(&mut self.free, slot);
            return Err(e);
        }
        if let Some(entry) = self.slot_mut(slot) {
            *entry = Slot {
                owner: Some(owner),
                steppers: AtomicU32::new(0),
            };
        }
        Ok(slot)
    }

    /// The armed probe of `slot` is gone: the slot is free once no thread is left to step
    /// in it. The bytes stay until it is taken again.
    pub fn release(&mut self, slot: usize) {
        if let Some(entry) = self.slot_mut(slot) {
            if entry.owner.take().is_some() {
                if *entry.steppers.get_mut() == 0 {
                    free_slot(&mut self.free, slot);
                } else {
                    // Room reserved for every slot: never allocates.
                    let _ = self.retired.push_within_capacity(slot);
                }
            }
        }
    }

    /// A thread will step in `slot` (it hit the slot's probe): the slot stays until
    /// [`unpin`](Self::unpin). Needs only the registry's read lock.
    pub fn pin(&self, slot: usize) {
        if let Some(entry) = self.slot(slot) {
            // Saturating: a count stuck at the top keeps the slot forever, never frees it
            // under a thread.
            let _ = entry
                .steppers
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
        }
    }

    /// A thread is done with `slot` (stepped, faulted, exited, or skipped the step). Needs
    /// only the registry's read lock: a slot whose probe is gone is taken back by the next
    /// allocation (under the write lock) once its count is 0.
    pub fn unpin(&self, slot: usize) {
        if let Some(entry) = self.slot(slot) {
            let _ = entry
                .steppers
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// For a fork child, which has none of the parent's threads: no slot is pinned (those
    /// only pinned are free at the next allocation).
    pub fn forget_steppers(&mut self) {
        for page in self.pages.iter_mut() {
            for entry in page.slots.iter_mut() {
                *entry.steppers.get_mut() = 0;
            }
        }
    }

    fn slot(&self, slot: usize) -> Option<&Slot> {
        let page = self.pages.get(self.page_of(slot))?;
        page.slots.get(slot.wrapping_sub(page.base) / SLOT_SIZE)
    }

    fn slot_mut(&mut self, slot: usize) -> Option<&mut Slot> {
        let page = self.pages.get_mut(self.page_of(slot))?;
        page.slots.get_mut(slot.wrapping_sub(page.base) / SLOT_SIZE)
    }

    /// The index of the page holding `slot` (`pages.len()` if none does). By index, with
    /// the array's own `get`, not a slice iterator: in unoptimised builds the slice's
    /// precondition checks would add about 250 bytes of stack under every slot lookup.
    fn page_of(&self, slot: usize) -> usize {
        let mut i = 0;
        while let Some(page) = self.pages.get(i) {
            if slot.wrapping_sub(page.base) < PAGE_SIZE {
                break;
            }
            i += 1;
        }
        i
    }
}

/// Puts `slot` on the free list `free`, which has room for every slot of the area
/// ([`Xol::reserve_every_slot`]): never allocates, also on the trap path. (Were there no
/// room, the slot would not be reused: never handed out twice.)
fn free_slot(free: &mut Array<usize>, slot: usize) {
    let _ = free.push_within_capacity(slot);
}

/// Maps a fresh XOL page; the first (`first`) gets the trampoline in its slot 0.
fn map_page(space: &mut dyn UserSpace, first: bool) -> Result<usize, Error> {
    let base = match space.map_xol_page() {
        Ok(base) if base % PAGE_SIZE == 0 => base,
        _ => return Err(Error::XolMapFailed),
    };
    if first {
        if let Err(fault) = space.write(base, &EBREAK.to_le_bytes()) {
            return Err(Error::WriteFault(fault));
        }
        space.flush_icache(base, SLOT_SIZE);
    }
    Ok(base)
}

/// Writes `insn` and a breakpoint into the slot at `slot`.
fn write_slot(space: &mut dyn UserSpace, slot: usize, insn: &Insn) -> Result<(), Error> {
    // Built from the little-endian value, written as a whole array: no `copy_from_slice`
    // or sub-slice, whose debug checks add hundreds of bytes of stack in unoptimised
    // builds.
    let len = insn.len();
    let insn_bits = u64::from(insn.raw()) & (u64::MAX >> (64 - 8 * len));
    let b = (insn_bits | (u64::from(EBREAK) << (8 * len))).to_le_bytes();
    let written = if len == 2 {
        space.write(slot, &[b[0], b[1], b[2], b[3], b[4], b[5]])
    } else {
        space.write(slot, &b)
    };
    if let Err(fault) = written {
        return Err(Error::WriteFault(fault));
    }
    space.flush_icache(slot, SLOT_SIZE);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Xol, SLOTS_PER_PAGE};
    use crate::decode::decode;
    use crate::testing::MemSpace;

    /// Every slot of two pages (and of a fork's copy) can be taken, given back and taken
    /// again: the free list never runs out of room for a slot put back.
    #[test]
    fn every_slot_comes_back_in_the_area_and_in_a_copy() {
        let mut space = MemSpace::new(1);
        let insn = decode(&0x0000_0013u32.to_le_bytes()).unwrap(); // nop
        let mut xol = Xol::default();
        let mut taken = alloc::vec::Vec::new();
        for owner in 0..2 * SLOTS_PER_PAGE {
            if xol.needs_page(false, true) {
                xol.add_page(&mut space).unwrap();
            }
            taken.push(xol.alloc(&mut space, owner, &insn).unwrap());
        }
        assert_eq!(xol.pages.len(), 2);
        assert!(xol.free.is_empty());
        let mut copy = xol.clone();
        for &slot in &taken {
            xol.release(slot);
            copy.release(slot);
        }
        for area in [&mut xol, &mut copy] {
            assert_eq!(area.free.len(), 2 * SLOTS_PER_PAGE);
            assert!(!area.needs_page(false, true));
        }
    }
}

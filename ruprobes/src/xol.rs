//! The out-of-line execution (XOL) area of one process: user pages of 8-byte slots.
//!
//! Slot 0 of the first page is the return trampoline (a breakpoint). Every other slot holds
//! one probed instruction followed by a breakpoint; the slot is written once when the probe
//! is armed, so any number of threads can step through it at the same time.
//!
//! A slot is reused only when nothing refers to it: neither its armed probe nor a thread
//! that hit the probe and is about to step, or is stepping, there (as Linux keeps a uprobe
//! alive by reference while a thread uses it). Removing the probe meanwhile only retires
//! the slot; the last such thread frees it.

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
#[derive(Clone, Copy, Default)]
struct Slot {
    /// The address of the armed probe that steps here; `None` once disarmed (or free).
    owner: Option<usize>,
    /// Threads that hit the probe and will step, or are stepping, here.
    steppers: u32,
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
            slots: Array::filled(PAGE_SIZE / SLOT_SIZE, Slot::default()),
        }
    }
}

#[derive(Clone, Default)]
pub(crate) struct Xol {
    pages: Array<Page>,
    free: Array<usize>,
}

impl Xol {
    /// The trampoline address, once the first page exists.
    pub fn trampoline(&self) -> Option<usize> {
        self.pages.first().map(|p| p.base)
    }

    /// Maps the first page (with its trampoline) if there is none yet.
    pub fn ensure_trampoline(&mut self, space: &mut dyn UserSpace) -> Result<usize, Error> {
        match self.trampoline() {
            Some(t) => Ok(t),
            None => self.add_page(space),
        }
    }

    fn add_page(&mut self, space: &mut dyn UserSpace) -> Result<usize, Error> {
        let base = match map_page(space, self.pages.is_empty()) {
            Ok(base) => base,
            Err(e) => return Err(e),
        };
        self.pages.push(Page::new(base));
        self.add_free_slots(base);
        Ok(base)
    }

    /// Puts the probe slots of the page at `base` on the free list, lowest address on top.
    fn add_free_slots(&mut self, base: usize) {
        self.free.reserve(SLOTS_PER_PAGE);
        for i in (1..PAGE_SIZE / SLOT_SIZE).rev() {
            self.free.push(base + i * SLOT_SIZE);
        }
    }

    /// Makes sure a free slot exists, mapping the first page (with the trampoline) or one
    /// more page as needed. Separate from [`alloc`](Self::alloc) so the page mapping and
    /// the slot write are not nested on the stack.
    pub fn reserve_slot(&mut self, space: &mut dyn UserSpace) -> Result<(), Error> {
        // The first page brings free slots, so this maps at most one page.
        while self.pages.is_empty() || self.free.is_empty() {
            if let Err(e) = self.add_page(space) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes a free slot (see [`reserve_slot`](Self::reserve_slot)) for the probe at
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
            self.free.push(slot);
            return Err(e);
        }
        if let Some(entry) = self.slot_mut(slot) {
            *entry = Slot {
                owner: Some(owner),
                steppers: 0,
            };
        }
        Ok(slot)
    }

    /// The armed probe of `slot` is gone: the slot is free once no thread is left to step
    /// in it. The bytes stay until it is taken again.
    pub fn release(&mut self, slot: usize) {
        if let Some(entry) = self.slot_mut(slot) {
            if entry.owner.take().is_some() && entry.steppers == 0 {
                self.free.push(slot);
            }
        }
    }

    /// A thread will step in `slot` (it hit the slot's probe): the slot stays until
    /// [`unpin`](Self::unpin).
    pub fn pin(&mut self, slot: usize) {
        if let Some(entry) = self.slot_mut(slot) {
            entry.steppers = entry.steppers.saturating_add(1);
        }
    }

    /// A thread is done with `slot` (stepped, faulted, exited, or skipped the step); the
    /// last one frees a slot whose probe is gone.
    pub fn unpin(&mut self, slot: usize) {
        if let Some(entry) = self.slot_mut(slot) {
            if entry.steppers == 0 {
                return;
            }
            entry.steppers -= 1;
            if entry.steppers == 0 && entry.owner.is_none() {
                self.free.push(slot);
            }
        }
    }

    /// For a fork child, which has none of the parent's threads: no slot is pinned, and
    /// those only pinned are free.
    pub fn forget_steppers(&mut self) {
        let Xol { pages, free } = self;
        for page in pages.iter_mut() {
            for (i, entry) in page.slots.iter_mut().enumerate() {
                if entry.steppers != 0 {
                    entry.steppers = 0;
                    if entry.owner.is_none() {
                        free.push(page.base + i * SLOT_SIZE);
                    }
                }
            }
        }
    }

    fn slot_mut(&mut self, slot: usize) -> Option<&mut Slot> {
        let page = self
            .pages
            .iter_mut()
            .find(|p| slot.wrapping_sub(p.base) < PAGE_SIZE)?;
        page.slots.get_mut(slot.wrapping_sub(page.base) / SLOT_SIZE)
    }
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
    // Built from the little-endian value (no `copy_from_slice`: its debug precondition
    // checks add some 500 bytes of stack in unoptimised builds).
    let len = insn.len();
    let insn_bits = u64::from(insn.raw()) & (u64::MAX >> (64 - 8 * len));
    let bytes = (insn_bits | (u64::from(EBREAK) << (8 * len))).to_le_bytes();
    space
        .write(slot, &bytes[..len + 4])
        .map_err(Error::WriteFault)?;
    space.flush_icache(slot, SLOT_SIZE);
    Ok(())
}

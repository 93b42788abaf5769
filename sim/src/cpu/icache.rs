//! The decode cache: predecoded instructions per physical frame.
//!
//! A page holds one slot per 2-byte parcel, filled lazily on first execution. Coherence with
//! writes comes from [`PhysMem`]: decoding a frame marks it, any later write to a marked
//! frame bumps its generation, and [`DecodeCache::sync`] (called at the start of every run
//! and after guest stores into marked frames) drops pages whose generation moved. Moving
//! the CPU to another [`PhysMem`] drops everything.

use super::decode::Insn;
use crate::mem::{PhysMem, PAGE_SIZE};

/// Slots per page: one per 16-bit parcel.
pub const SLOTS: usize = PAGE_SIZE as usize / 2;
const NONE: u32 = u32::MAX;

/// Which frame a decoded page holds, and the frame generation it was decoded at.
struct DecodedPage {
    frame: usize,
    gen: u32,
}

/// Predecoded pages, indexed by frame.
#[derive(Default)]
pub struct DecodeCache {
    /// frame index -> index into `pages`, or `NONE`.
    by_frame: Vec<u32>,
    /// Pages in use or recycled (listed in `spare`).
    pages: Vec<DecodedPage>,
    /// `SLOTS` instructions per page, one per parcel offset, all pages back to back (one
    /// flat array keeps the fetch path to a single indexed load).
    pub slots: Vec<Insn>,
    spare: Vec<u32>,
    seen_code_gen: u64,
    /// The [`PhysMem`] the pages were decoded from (0: none yet).
    mem_id: u64,
}

impl DecodeCache {
    /// Index of the decoded page for `frame` (its slots start at `index * SLOTS`),
    /// creating an empty one.
    pub fn page_for(&mut self, mem: &mut PhysMem, frame: usize) -> usize {
        if frame >= self.by_frame.len() {
            self.by_frame.resize(frame + 1, NONE);
        }
        let existing = self.by_frame[frame];
        if existing != NONE {
            return existing as usize;
        }
        let gen = mem.mark_decoded(frame);
        let index = match self.spare.pop() {
            Some(i) => {
                let page = &mut self.pages[i as usize];
                page.frame = frame;
                page.gen = gen;
                i as usize
            }
            None => {
                self.pages.push(DecodedPage { frame, gen });
                self.slots.resize(self.pages.len() * SLOTS, Insn::UNDECODED);
                self.pages.len() - 1
            }
        };
        self.by_frame[frame] = index as u32;
        index
    }

    /// Whether every decoded page still describes `mem` (no code written since the last
    /// [`sync`](Self::sync)).
    #[inline]
    pub fn in_sync(&self, mem: &PhysMem) -> bool {
        mem.id() == self.mem_id && mem.code_gen() == self.seen_code_gen
    }

    /// Drops pages whose frame was written since they were decoded. Returns whether any
    /// page was dropped.
    pub fn sync(&mut self, mem: &PhysMem) -> bool {
        if mem.id() != self.mem_id {
            // Another memory: nothing decoded so far describes it.
            self.clear();
            self.by_frame.clear();
            self.mem_id = mem.id();
            self.seen_code_gen = mem.code_gen();
            return true;
        }
        if mem.code_gen() == self.seen_code_gen {
            return false;
        }
        self.seen_code_gen = mem.code_gen();
        let mut dropped = false;
        for index in 0..self.pages.len() {
            let (frame, gen) = (self.pages[index].frame, self.pages[index].gen);
            if self.by_frame[frame] == index as u32 && mem.frame_gen(frame) != Some(gen) {
                self.release(frame, index as u32);
                dropped = true;
            }
        }
        dropped
    }

    /// Drops every page.
    pub fn clear(&mut self) {
        for index in 0..self.pages.len() {
            let frame = self.pages[index].frame;
            if self.by_frame[frame] == index as u32 {
                self.release(frame, index as u32);
            }
        }
    }

    fn release(&mut self, frame: usize, index: u32) {
        let start = index as usize * SLOTS;
        self.slots[start..start + SLOTS].fill(Insn::UNDECODED);
        self.by_frame[frame] = NONE;
        self.spare.push(index);
    }
}

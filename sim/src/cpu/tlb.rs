//! A direct-mapped software TLB caching virtual page -> frame byte offset.
//!
//! One instance per access kind (fetch, load, store), so a hit already implies the
//! permission check that filled it passed. Entries are only ever filled from a full
//! permission-checked walk and dropped wholesale by [`Tlb::flush`].

const ENTRIES: usize = 64;
const INVALID: u64 = u64::MAX;

/// A direct-mapped TLB.
pub struct Tlb {
    tags: [u64; ENTRIES],
    /// Byte offset of the frame inside physical memory (physical address - PHYS_BASE).
    frames: [usize; ENTRIES],
}

impl Default for Tlb {
    fn default() -> Self {
        Self::new()
    }
}

impl Tlb {
    /// An empty TLB.
    pub fn new() -> Self {
        Tlb {
            tags: [INVALID; ENTRIES],
            frames: [0; ENTRIES],
        }
    }

    /// The frame offset cached for virtual page number `vpn`.
    #[inline]
    pub fn get(&self, vpn: u64) -> Option<usize> {
        let i = vpn as usize % ENTRIES;
        (self.tags[i] == vpn).then(|| self.frames[i])
    }

    /// Caches `vpn -> frame`.
    #[inline]
    pub fn insert(&mut self, vpn: u64, frame: usize) {
        let i = vpn as usize % ENTRIES;
        self.tags[i] = vpn;
        self.frames[i] = frame;
    }

    /// Drops every entry.
    pub fn flush(&mut self) {
        self.tags = [INVALID; ENTRIES];
    }
}

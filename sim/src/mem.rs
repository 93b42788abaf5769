//! Emulated physical memory and its frame allocator.
//!
//! Memory is one flat byte vector of 4 KiB frames starting at [`PHYS_BASE`]. Besides the
//! bytes, it tracks which frames hold instructions that some [`crate::cpu::Cpu`] has
//! predecoded: every write through this type (the kernel's, or a guest store) to such a
//! frame bumps that frame's generation, so the CPU drops the stale decoded page before its
//! next fetch. That is what keeps breakpoints written by ruprobes visible at once.

/// Size of a page / frame in bytes.
pub const PAGE_SIZE: u64 = 4096;

/// Physical address of the first frame.
pub const PHYS_BASE: u64 = 0x8000_0000;

/// Emulated physical memory: `frames` frames of 4 KiB at [`PHYS_BASE`], with a frame
/// allocator and the bookkeeping that keeps CPU decode caches coherent.
pub struct PhysMem {
    data: Vec<u8>,
    /// Frames never handed out yet start at this index.
    next_unused: usize,
    /// Frames returned by [`PhysMem::free_frame`], reused first.
    free: Vec<usize>,
    /// One bit per frame: currently allocated.
    allocated: Vec<u64>,
    /// One bit per frame: some CPU holds predecoded instructions of this frame.
    decoded: Vec<u64>,
    /// Per-frame generation, bumped when a decoded frame is written.
    frame_gen: Vec<u32>,
    /// Bumped whenever any `frame_gen` changes, so CPUs can cheaply notice.
    code_gen: u64,
    /// Unique per instance, so a CPU notices it was moved to another memory.
    id: u64,
}

/// Source of [`PhysMem`] ids.
static NEXT_ID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

fn bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set_bit(bits: &mut [u64], i: usize, on: bool) {
    if on {
        bits[i / 64] |= 1 << (i % 64);
    } else {
        bits[i / 64] &= !(1 << (i % 64));
    }
}

impl PhysMem {
    /// Creates zeroed memory of `frames` 4 KiB frames, all free.
    pub fn new(frames: usize) -> Self {
        let words = frames.div_ceil(64);
        PhysMem {
            data: vec![0; frames * PAGE_SIZE as usize],
            next_unused: 0,
            free: Vec::new(),
            allocated: vec![0; words],
            decoded: vec![0; words],
            frame_gen: vec![0; frames],
            code_gen: 0,
            id: NEXT_ID.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Number of frames.
    pub fn frames(&self) -> usize {
        self.frame_gen.len()
    }

    /// Number of frames currently free.
    pub fn free_frames(&self) -> usize {
        self.frames() - self.next_unused + self.free.len()
    }

    /// Allocates a zeroed frame and returns its physical address, or `None` when memory is
    /// exhausted.
    pub fn alloc_frame(&mut self) -> Option<u64> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.next_unused < self.frames() => {
                self.next_unused += 1;
                self.next_unused - 1
            }
            None => return None,
        };
        set_bit(&mut self.allocated, index, true);
        let pa = PHYS_BASE + index as u64 * PAGE_SIZE;
        self.fill_frame(index, 0);
        Some(pa)
    }

    /// Returns a frame to the allocator. Returns `false` (and does nothing) if `pa` is not
    /// the start of a currently allocated frame.
    pub fn free_frame(&mut self, pa: u64) -> bool {
        match self.frame_of(pa) {
            Some(i) if pa % PAGE_SIZE == 0 && bit(&self.allocated, i) => {
                set_bit(&mut self.allocated, i, false);
                self.free.push(i);
                true
            }
            _ => false,
        }
    }

    /// Copies `buf.len()` bytes at physical address `pa` into `buf`. Returns `false` (buf
    /// untouched) if the range is not entirely inside memory.
    pub fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        match self.range(pa, buf.len()) {
            Some(r) => {
                buf.copy_from_slice(&self.data[r]);
                true
            }
            None => false,
        }
    }

    /// Writes `data` at physical address `pa`, ignoring page permissions (this is the
    /// kernel's view). Returns `false` (nothing written) if the range is not inside memory.
    /// Decode caches see the new bytes before their next fetch.
    pub fn write(&mut self, pa: u64, data: &[u8]) -> bool {
        let Some(r) = self.range(pa, data.len()) else {
            return false;
        };
        if !data.is_empty() {
            let first = r.start / PAGE_SIZE as usize;
            let last = (r.end - 1) / PAGE_SIZE as usize;
            for frame in first..=last {
                self.note_write(frame);
            }
        }
        self.data[r].copy_from_slice(data);
        true
    }

    /// Reads a little-endian `u64` at `pa`.
    pub fn read_u64(&self, pa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(pa, &mut b).then(|| u64::from_le_bytes(b))
    }

    /// Writes a little-endian `u64` at `pa`. Returns `false` if out of range.
    pub fn write_u64(&mut self, pa: u64, value: u64) -> bool {
        self.write(pa, &value.to_le_bytes())
    }

    /// Reads a little-endian `u32` at `pa`.
    pub fn read_u32(&self, pa: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(pa, &mut b).then(|| u32::from_le_bytes(b))
    }

    /// Writes a little-endian `u32` at `pa`. Returns `false` if out of range.
    pub fn write_u32(&mut self, pa: u64, value: u32) -> bool {
        self.write(pa, &value.to_le_bytes())
    }

    /// Frame index of physical address `pa`, if inside memory.
    pub(crate) fn frame_of(&self, pa: u64) -> Option<usize> {
        let off = pa.checked_sub(PHYS_BASE)?;
        let i = usize::try_from(off / PAGE_SIZE).ok()?;
        (i < self.frames()).then_some(i)
    }

    fn range(&self, pa: u64, len: usize) -> Option<core::ops::Range<usize>> {
        let start = usize::try_from(pa.checked_sub(PHYS_BASE)?).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.data.len()).then_some(start..end)
    }

    fn fill_frame(&mut self, frame: usize, byte: u8) {
        self.note_write(frame);
        let start = frame * PAGE_SIZE as usize;
        self.data[start..start + PAGE_SIZE as usize].fill(byte);
    }

    /// Invalidates decoded copies of `frame` before its bytes change.
    #[inline]
    pub(crate) fn note_write(&mut self, frame: usize) {
        if bit(&self.decoded, frame) {
            set_bit(&mut self.decoded, frame, false);
            self.frame_gen[frame] = self.frame_gen[frame].wrapping_add(1);
            self.code_gen = self.code_gen.wrapping_add(1);
        }
    }

    /// Whether a CPU holds decoded instructions of `frame` (stores there need care).
    #[inline]
    pub(crate) fn is_decoded(&self, frame: usize) -> bool {
        bit(&self.decoded, frame)
    }

    /// Marks `frame` as decoded by a CPU and returns its current generation.
    pub(crate) fn mark_decoded(&mut self, frame: usize) -> u32 {
        set_bit(&mut self.decoded, frame, true);
        self.frame_gen[frame]
    }

    /// Generation of `frame`; `None` for a frame this memory does not have (a decode cache
    /// carried over from a larger memory), which callers treat as changed.
    pub(crate) fn frame_gen(&self, frame: usize) -> Option<u32> {
        self.frame_gen.get(frame).copied()
    }

    pub(crate) fn code_gen(&self) -> u64 {
        self.code_gen
    }

    /// This memory's unique id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The raw bytes; offsets are physical addresses minus [`PHYS_BASE`].
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The raw bytes for a guest store; the caller has already called
    /// [`PhysMem::note_write`] for the frame if [`PhysMem::is_decoded`] said so.
    #[inline]
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_zeroes_and_reuses_frames() {
        let mut m = PhysMem::new(2);
        let a = m.alloc_frame();
        let b = m.alloc_frame();
        assert_eq!(a, Some(PHYS_BASE));
        assert_eq!(b, Some(PHYS_BASE + PAGE_SIZE));
        assert_eq!(m.alloc_frame(), None);
        assert!(m.write_u64(PHYS_BASE + 8, 0xdead_beef));
        assert!(m.free_frame(PHYS_BASE));
        assert!(!m.free_frame(PHYS_BASE), "double free is refused");
        assert!(!m.free_frame(PHYS_BASE + 1), "unaligned free is refused");
        assert_eq!(m.free_frames(), 1);
        assert_eq!(m.alloc_frame(), Some(PHYS_BASE));
        assert_eq!(
            m.read_u64(PHYS_BASE + 8),
            Some(0),
            "reallocated frame is zeroed"
        );
    }

    #[test]
    fn out_of_range_access_is_refused() {
        let mut m = PhysMem::new(1);
        let mut buf = [0u8; 8];
        assert!(!m.read(PHYS_BASE + PAGE_SIZE - 4, &mut buf));
        assert!(!m.write(PHYS_BASE - 1, &[1]));
        assert!(m.read(PHYS_BASE + PAGE_SIZE - 8, &mut buf));
        assert_eq!(m.read_u32(0), None);
    }
}

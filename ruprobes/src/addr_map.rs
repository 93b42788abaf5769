//! A map from user addresses to values with O(1) lookups: what the trap path uses to find
//! the probe at the trapping pc, so a hit costs the same with one probe or 100 000.
//!
//! Open addressing with linear probing and Fibonacci hashing; removal shifts the following
//! entries back instead of leaving tombstones. Only inserts allocate (when the table grows),
//! and the engine inserts only when it arms a probe, never on a hit.

use crate::array::Array;

/// Smallest table, in slots.
const MIN_SLOTS: usize = 16;

#[derive(Clone)]
pub(crate) struct AddrMap<V> {
    slots: Array<Option<(usize, V)>>,
    len: usize,
}

impl<V> AddrMap<V> {
    pub const fn new() -> Self {
        AddrMap {
            slots: Array::new(),
            len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slot where the search for `addr` starts: the top bits of a multiplicative hash
    /// (Fibonacci hashing), rotated down. (A rotation and a mask, not a variable shift: no
    /// overflow check, and so no panic path under every lookup, in unoptimised builds.)
    fn home(&self, addr: usize) -> usize {
        ((addr as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .rotate_left(self.slots.len().trailing_zeros()) as usize
            & self.mask()
    }

    fn find(&self, addr: usize) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.home(addr);
        loop {
            match self.slots.get(i)? {
                Some((key, _)) if *key == addr => return Some(i),
                Some(_) => i = (i + 1) & self.mask(),
                None => return None,
            }
        }
    }

    pub fn get(&self, addr: usize) -> Option<&V> {
        let i = self.find(addr)?;
        self.slots.get(i)?.as_ref().map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, addr: usize) -> Option<&mut V> {
        let i = self.find(addr)?;
        self.slots.get_mut(i)?.as_mut().map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn contains(&self, addr: usize) -> bool {
        self.find(addr).is_some()
    }

    /// Inserts or replaces; returns the value replaced, for the caller to drop. Keeps the
    /// table at most half full.
    ///
    /// No function of the map drops a value (see [`fill`](Self::fill)): a `V` such as an
    /// `Arc<Probe>` has a deep drop glue, and where it runs is the caller's choice.
    pub fn insert(&mut self, addr: usize, value: V) -> Option<V> {
        if let Some(slot) = self.get_mut(addr) {
            return Some(core::mem::replace(slot, value));
        }
        self.reserve(1);
        // There is a free slot now (`fill` forgets the value if not: cannot happen).
        Self::fill(self.vacant(addr), Some((addr, value)));
        self.len += 1;
        None
    }

    /// Makes room for `additional` more keys without growing: for callers that insert
    /// deep in a call chain ([`insert_reserved`](Self::insert_reserved)), so that growing
    /// the table (which allocates and moves every entry) is not nested under it.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.len.saturating_add(additional).saturating_mul(2);
        if needed > self.slots.len() {
            self.grow(needed);
        }
    }

    /// Inserts `addr`, which is not in the table, with the value `make` returns, in room
    /// made by [`reserve`](Self::reserve): never grows the table. `false` (and `make` not
    /// called) if there is no free slot.
    pub fn insert_reserved(&mut self, addr: usize, make: impl FnOnce() -> V) -> bool {
        let Some(slot) = self.vacant(addr) else {
            return false;
        };
        Self::fill(Some(slot), Some((addr, make())));
        self.len += 1;
        true
    }

    /// The first free slot of the search for `addr` (not in the table); `None` if the
    /// table has no free slot.
    fn vacant(&mut self, addr: usize) -> Option<&mut Option<(usize, V)>> {
        if self.len >= self.slots.len() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(addr);
        while self.slots.get(i).is_some_and(Option::is_some) {
            i = (i + 1) & mask;
        }
        self.slots.get_mut(i)
    }

    /// Writes `entry` into a free slot. A plain assignment would call the drop glue of the
    /// old `None`: nothing at run time, but its call tree (that of dropping a `V`) would
    /// count as this function's stack. Forgetting a `None` leaks nothing.
    fn fill(slot: Option<&mut Option<(usize, V)>>, entry: Option<(usize, V)>) {
        match slot {
            Some(slot) => core::mem::forget(core::mem::replace(slot, entry)),
            // Cannot happen (callers pass a slot inside the table); forgotten rather
            // than dropped for the same reason.
            None => core::mem::forget(entry),
        }
    }

    /// Grows the table to the smallest power of two of at least `needed` (and
    /// [`MIN_SLOTS`]) slots and moves every entry into it, one swap per entry: no entry
    /// is copied through this function's frame.
    fn grow(&mut self, needed: usize) {
        let mut size = MIN_SLOTS;
        while size < needed {
            size = size.saturating_mul(2);
        }
        // The new table is made, and the entries moved, in sibling calls: the frame above
        // the allocation stays small in unoptimised builds.
        let old = self.replace_slots(size);
        self.move_entries(old);
    }

    /// Puts a table of `size` empty slots in place; the old one.
    fn replace_slots(&mut self, size: usize) -> Array<Option<(usize, V)>> {
        core::mem::replace(&mut self.slots, Array::with_len(size, || None))
    }

    /// Moves every entry of `old` into the table, then frees `old`.
    fn move_entries(&mut self, mut old: Array<Option<(usize, V)>>) {
        for i in 0..old.len() {
            let Some(from) = old.get_mut(i) else { break };
            let Some(addr) = from.as_ref().map(|(key, _)| *key) else {
                continue;
            };
            if let Some(to) = self.vacant(addr) {
                core::mem::swap(from, to);
            }
        }
        // Every slot of `old` is `None` now: free it without its drop glue.
        old.free_without_drop();
    }

    pub fn remove(&mut self, addr: usize) -> Option<V> {
        // Plain branches, no `?`: each would add a copy of the entry to this frame in
        // unoptimised builds.
        let Some(hole) = self.find(addr) else {
            return None;
        };
        let entry = match self.slots.get_mut(hole) {
            Some(slot) => slot.take(),
            None => None,
        };
        let Some((_, value)) = entry else {
            return None;
        };
        self.len -= 1;
        self.close_hole(hole);
        Some(value)
    }

    /// Shifts back every entry after the free slot `hole` whose home is not between the
    /// hole and itself, so that no search stops early at the hole.
    fn close_hole(&mut self, mut hole: usize) {
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some(key) = self.key_at(j) else {
                break;
            };
            let home = self.home(key);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                let moved = self.slots.get_mut(j).and_then(Option::take);
                Self::fill(self.slots.get_mut(hole), moved);
                hole = j;
            }
        }
    }

    /// The key in slot `i`, if it holds one.
    fn key_at(&self, i: usize) -> Option<usize> {
        match self.slots.get(i) {
            Some(Some((key, _))) => Some(*key),
            _ => None,
        }
    }

    /// Frees a map that holds nothing ([`is_empty`](Self::is_empty)) without the drop
    /// glue of its values, whose call tree would count as the caller's stack. A map that
    /// still held values would leak them, never free them twice: callers check first.
    pub fn free_empty(self) {
        self.slots.free_without_drop();
    }

    /// How many slots the table has, for [`value_at`](Self::value_at).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The value in slot `i`, if it holds one: with [`slot_count`](Self::slot_count), a
    /// walk over the map without iterator adaptors, whose state is big in unoptimised
    /// builds.
    pub fn value_at(&self, i: usize) -> Option<&V> {
        match self.slots.get(i) {
            Some(Some((_, value))) => Some(value),
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &V)> {
        self.slots.iter().flatten().map(|(k, v)| (*k, v))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::AddrMap;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    #[test]
    fn behaves_like_a_btreemap_under_random_operations() {
        let mut map = AddrMap::new();
        let mut model = BTreeMap::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..200_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Few distinct keys, clustered like code addresses, so probes collide.
            let addr = 0x1_0000 + 2 * (state % 3000) as usize;
            match state >> 62 {
                0 => assert_eq!(map.insert(addr, step), model.insert(addr, step)),
                1 => {
                    // Into reserved room, as the engine's deep inserts do.
                    if !map.contains(addr) {
                        map.reserve(1);
                        assert!(map.insert_reserved(addr, || step));
                    }
                    assert_eq!(map.get(addr), Some(&*model.entry(addr).or_insert(step)));
                }
                2 => assert_eq!(map.remove(addr), model.remove(&addr)),
                _ => assert_eq!(map.get(addr), model.get(&addr)),
            }
            assert_eq!(map.len, model.len());
        }
        let mut all: Vec<_> = map.iter().map(|(k, v)| (k, *v)).collect();
        all.sort();
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn empty_map_finds_nothing() {
        let mut map: AddrMap<u8> = AddrMap::new();
        assert_eq!(map.get(0), None);
        assert_eq!(map.remove(0), None);
        assert!(!map.contains(usize::MAX));
    }
}

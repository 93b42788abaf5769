//! The map kinds: hash, array and ring buffer. Values live in one flat buffer per map, one
//! slot of `value_size` bytes per entry, so a value's address is stable while its entry
//! exists (the interpreter hands it to the program as a pointer).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::btf::MapDef;

/// `BPF_MAP_TYPE_HASH`.
pub const TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_RINGBUF`.
pub const TYPE_RINGBUF: u32 = 27;

/// Largest key or value accepted (the BPF stack's size: a program builds them there).
pub const MAX_KEY_VALUE: u32 = 512;
/// Largest `max_entries` of a hash or array map, and the byte size of a ring buffer.
pub const MAX_ENTRIES: u32 = 1 << 16;

const ENOENT: i64 = 2;
const E2BIG: i64 = 7;
const EAGAIN: i64 = 11;
const EEXIST: i64 = 17;
const EINVAL: i64 = 22;

/// `BPF_NOEXIST`: create only.
const NOEXIST: u64 = 1;
/// `BPF_EXIST`: update only.
const EXIST: u64 = 2;

/// The storage of one map.
#[derive(Clone, Debug)]
pub enum Store {
    /// Key to slot; free slots are reused.
    Hash {
        index: BTreeMap<Vec<u8>, u32>,
        free: Vec<u32>,
    },
    /// Slot `i` is key `i` (a `u32`).
    Array,
    /// Records in submission order and the bytes they take (Linux's 8-byte header and
    /// 8-byte alignment).
    RingBuf { records: Vec<Vec<u8>>, used: usize },
}

/// A map: its definition, values and key index.
#[derive(Clone, Debug)]
pub struct Map {
    /// The definition from BTF.
    pub def: MapDef,
    /// `max_entries * value_size` bytes of value slots (empty for a ring buffer).
    pub values: Vec<u8>,
    /// The kind-specific part.
    pub store: Store,
}

impl Map {
    /// An empty map, or why the definition is refused.
    pub fn new(def: MapDef) -> Result<Map, alloc::string::String> {
        let why = |w: &str| Err(alloc::format!("map {}: {w}", def.name));
        if def.max_entries == 0 || def.max_entries > MAX_ENTRIES {
            return why("max_entries must be 1..=65536");
        }
        let store = match def.map_type {
            TYPE_HASH | TYPE_ARRAY => {
                if def.value_size == 0 || def.value_size > MAX_KEY_VALUE {
                    return why("value size must be 1..=512 bytes");
                }
                if def.map_type == TYPE_ARRAY && def.key_size != 4 {
                    return why("an array map's key must be 4 bytes");
                }
                if def.key_size == 0 || def.key_size > MAX_KEY_VALUE {
                    return why("key size must be 1..=512 bytes");
                }
                if def.map_type == TYPE_HASH {
                    Store::Hash {
                        index: BTreeMap::new(),
                        free: (0..def.max_entries).rev().collect(),
                    }
                } else {
                    Store::Array
                }
            }
            TYPE_RINGBUF => {
                if def.key_size != 0 || def.value_size != 0 {
                    return why("a ring buffer has no key or value");
                }
                Store::RingBuf {
                    records: Vec::new(),
                    used: 0,
                }
            }
            other => {
                return Err(alloc::format!(
                    "map {}: unsupported map type {other}",
                    def.name
                ))
            }
        };
        let slots = match store {
            Store::RingBuf { .. } => 0,
            _ => def.max_entries as usize * def.value_size as usize,
        };
        Ok(Map {
            values: alloc::vec![0; slots],
            def,
            store,
        })
    }

    /// The slot holding `key`'s value.
    pub fn lookup(&self, key: &[u8]) -> Option<u32> {
        match &self.store {
            Store::Hash { index, .. } => index.get(key).copied(),
            Store::Array => {
                let i = u32::from_le_bytes(key.try_into().ok()?);
                (i < self.def.max_entries).then_some(i)
            }
            Store::RingBuf { .. } => None,
        }
    }

    /// Stores `value` under `key` (`flags`: `BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`); 0 or a
    /// negative errno, as the helper returns.
    pub fn update(&mut self, key: &[u8], value: &[u8], flags: u64) -> i64 {
        if flags > EXIST {
            return -EINVAL;
        }
        let existing = self.lookup(key);
        let slot = match (&mut self.store, existing) {
            (Store::RingBuf { .. }, _) => return -EINVAL,
            (Store::Array, None) => return -E2BIG,
            (Store::Array, Some(_)) if flags == NOEXIST => return -EEXIST,
            (Store::Hash { .. }, Some(_)) if flags == NOEXIST => return -EEXIST,
            (Store::Hash { .. }, None) if flags == EXIST => return -ENOENT,
            (_, Some(slot)) => slot,
            (Store::Hash { index, free }, None) => {
                let Some(slot) = free.pop() else {
                    return -E2BIG;
                };
                index.insert(key.to_vec(), slot);
                slot
            }
        };
        let size = self.def.value_size as usize;
        let at = slot as usize * size;
        self.values[at..at + size].copy_from_slice(value);
        0
    }

    /// Removes `key`; 0 or a negative errno.
    pub fn delete(&mut self, key: &[u8]) -> i64 {
        match &mut self.store {
            Store::Hash { index, free } => match index.remove(key) {
                Some(slot) => {
                    free.push(slot);
                    0
                }
                None => -ENOENT,
            },
            // Array entries always exist (Linux: -EINVAL).
            _ => -EINVAL,
        }
    }

    /// Appends a ring buffer record; 0, or -EAGAIN when it does not fit.
    pub fn output(&mut self, data: &[u8]) -> i64 {
        let capacity = self.def.max_entries as usize;
        let Store::RingBuf { records, used } = &mut self.store else {
            return -EINVAL;
        };
        let cost = 8 + data.len().next_multiple_of(8);
        if *used + cost > capacity {
            return -EAGAIN;
        }
        *used += cost;
        records.push(data.to_vec());
        0
    }

    /// The value bytes of slot `slot`.
    pub fn value(&self, slot: u32) -> &[u8] {
        let size = self.def.value_size as usize;
        &self.values[slot as usize * size..][..size]
    }

    /// Every entry as (key, value), in key order (array: index order).
    pub fn entries(&self) -> Vec<(Vec<u8>, &[u8])> {
        match &self.store {
            Store::Hash { index, .. } => index
                .iter()
                .map(|(k, &slot)| (k.clone(), self.value(slot)))
                .collect(),
            Store::Array => (0..self.def.max_entries)
                .map(|i| (i.to_le_bytes().to_vec(), self.value(i)))
                .collect(),
            Store::RingBuf { .. } => Vec::new(),
        }
    }

    /// The ring buffer's records (empty for other kinds).
    pub fn records(&self) -> &[Vec<u8>] {
        match &self.store {
            Store::RingBuf { records, .. } => records,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn def(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef {
            name: "m".to_string(),
            map_type,
            key_size,
            value_size,
            max_entries,
        }
    }

    #[test]
    fn hash_updates_by_flags_and_reuses_slots() {
        let mut m = Map::new(def(TYPE_HASH, 4, 8, 2)).unwrap();
        let (k1, k2, k3) = (1u32.to_le_bytes(), 2u32.to_le_bytes(), 3u32.to_le_bytes());
        assert_eq!(m.update(&k1, &7u64.to_le_bytes(), EXIST), -ENOENT);
        assert_eq!(m.update(&k1, &7u64.to_le_bytes(), NOEXIST), 0);
        assert_eq!(m.update(&k1, &8u64.to_le_bytes(), NOEXIST), -EEXIST);
        assert_eq!(m.update(&k1, &9u64.to_le_bytes(), 0), 0);
        assert_eq!(m.update(&k2, &1u64.to_le_bytes(), 0), 0);
        assert_eq!(m.update(&k3, &1u64.to_le_bytes(), 0), -E2BIG, "full");
        let slot = m.lookup(&k1).unwrap();
        assert_eq!(m.value(slot), 9u64.to_le_bytes());
        assert_eq!(m.delete(&k1), 0);
        assert_eq!(m.delete(&k1), -ENOENT);
        assert_eq!(m.lookup(&k1), None);
        assert_eq!(m.update(&k3, &3u64.to_le_bytes(), 0), 0, "the freed slot");
        assert_eq!(m.entries().len(), 2);
        assert_eq!(m.update(&k3, &3u64.to_le_bytes(), 9), -EINVAL, "bad flags");
    }

    #[test]
    fn array_keys_are_indices() {
        let mut m = Map::new(def(TYPE_ARRAY, 4, 8, 4)).unwrap();
        assert_eq!(m.lookup(&3u32.to_le_bytes()), Some(3));
        assert_eq!(m.lookup(&4u32.to_le_bytes()), None);
        assert_eq!(m.update(&4u32.to_le_bytes(), &[0; 8], 0), -E2BIG);
        assert_eq!(m.update(&2u32.to_le_bytes(), &[5; 8], NOEXIST), -EEXIST);
        assert_eq!(m.update(&2u32.to_le_bytes(), &[5; 8], 0), 0);
        assert_eq!(m.delete(&2u32.to_le_bytes()), -EINVAL);
        assert_eq!(m.entries()[2].1, [5; 8]);
        assert!(Map::new(def(TYPE_ARRAY, 8, 8, 4)).is_err());
    }

    #[test]
    fn ring_buffer_keeps_records_until_full() {
        let mut m = Map::new(def(TYPE_RINGBUF, 0, 0, 32)).unwrap();
        assert_eq!(m.output(b"hello"), 0); // 8 + 8
        assert_eq!(m.output(b"world!!!"), 0); // 8 + 8
        assert_eq!(m.output(b"x"), -EAGAIN);
        assert_eq!(m.records(), [b"hello".to_vec(), b"world!!!".to_vec()]);
    }

    #[test]
    fn bad_definitions_are_refused() {
        assert!(Map::new(def(99, 4, 8, 4)).is_err());
        assert!(Map::new(def(TYPE_HASH, 4, 8, 0)).is_err());
        assert!(Map::new(def(TYPE_HASH, 4, 1024, 4)).is_err());
        assert!(Map::new(def(TYPE_RINGBUF, 4, 8, 4)).is_err());
    }
}

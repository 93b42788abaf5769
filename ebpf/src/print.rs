//! The maps as text, printed at exit the same way by every kernel, after bpftrace:
//! `@name[key]: value` per entry, a log2 histogram for an array map whose name ends in
//! `hist`, and the records of a ring buffer.
//!
//! Keys and values of 4 or 8 bytes are unsigned integers (keys of 8 bytes in hex: they are
//! usually addresses), NUL-padded printable bytes are strings, anything else is hex bytes.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use crate::maps::{Map, Store, TYPE_ARRAY};

/// Writes every map of `maps`, in order.
pub fn write_maps(out: &mut impl Write, maps: &[Map]) -> fmt::Result {
    for map in maps {
        write_map(out, map)?;
    }
    Ok(())
}

/// Writes one map.
pub fn write_map(out: &mut impl Write, map: &Map) -> fmt::Result {
    let name = &map.def.name;
    if let Store::RingBuf { records, .. } = &map.store {
        writeln!(out, "@{name}: {} records", records.len())?;
        for (i, r) in records.iter().enumerate() {
            writeln!(out, "  [{i}] {}", Bytes(r, false))?;
        }
        return Ok(());
    }
    if map.def.map_type == TYPE_ARRAY && name.ends_with("hist") && map.def.value_size == 8 {
        writeln!(out, "@{name}:")?;
        let counts: Vec<u64> = map.entries().iter().map(|(_, v)| uint(v)).collect();
        return write_histogram(out, &counts);
    }
    let mut entries = map.entries();
    if map.def.map_type == TYPE_ARRAY {
        entries.retain(|(_, v)| v.iter().any(|&b| b != 0));
    }
    if matches!(map.def.key_size, 4 | 8) {
        entries.sort_by_key(|(k, _)| uint(k));
    }
    if entries.is_empty() {
        return writeln!(out, "@{name}: (empty)");
    }
    for (key, value) in entries {
        writeln!(
            out,
            "@{name}[{}]: {}",
            Bytes(&key, true),
            Bytes(value, false)
        )?;
    }
    Ok(())
}

/// Draws log2 buckets: bucket 0 counts 0, bucket `i` counts `[2^(i-1), 2^i)`; from the
/// first to the last non-empty bucket, bars scaled to the largest.
pub fn write_histogram(out: &mut impl Write, counts: &[u64]) -> fmt::Result {
    let Some(first) = counts.iter().position(|&c| c > 0) else {
        return writeln!(out, "(empty)");
    };
    let last = counts.iter().rposition(|&c| c > 0).unwrap_or(first);
    let max = counts.iter().copied().max().unwrap_or(1).max(1);
    for (i, &count) in counts.iter().enumerate().take(last + 1).skip(first) {
        let range = match i {
            0 => String::from("[0]"),
            1 => String::from("[1]"),
            _ => {
                let lo = 1u64 << (i - 1);
                match 1u64.checked_shl(i as u32) {
                    Some(hi) => alloc::format!("[{}, {})", Size(lo), Size(hi)),
                    None => alloc::format!("[{}, ...)", Size(lo)),
                }
            }
        };
        let width = (count * 40).div_ceil(max) as usize;
        writeln!(out, "{range:<20} {count:>8} |{:<40}|", Bar(width))?;
    }
    Ok(())
}

/// bpftrace's compact sizes: 1024 is `1K`, 1048576 is `1M`.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = ["", "K", "M", "G", "T", "P", "E"];
        let mut v = self.0;
        let mut u = 0;
        while v >= 1024 && v % 1024 == 0 && u + 1 < units.len() {
            v /= 1024;
            u += 1;
        }
        write!(f, "{v}{}", units[u])
    }
}

struct Bar(usize);

impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        for _ in 0..self.0 {
            s.push('@');
        }
        f.pad(&s)
    }
}

fn uint(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(word)
}

/// A key or value as text; `key` prints 8-byte integers in hex.
struct Bytes<'a>(&'a [u8], bool);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        match bytes.len() {
            8 if self.1 => return write!(f, "{:#x}", uint(bytes)),
            4 | 8 => return write!(f, "{}", uint(bytes)),
            _ => {}
        }
        let text_len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let is_text = text_len > 0
            && bytes[..text_len]
                .iter()
                .all(|b| b.is_ascii_graphic() || *b == b' ')
            && bytes[text_len..].iter().all(|&b| b == 0);
        if is_text {
            // Printable ASCII: valid UTF-8.
            return f.write_str(core::str::from_utf8(&bytes[..text_len]).unwrap_or("?"));
        }
        for b in bytes {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::MapDef;
    use crate::maps::{TYPE_HASH, TYPE_RINGBUF};
    use alloc::string::ToString;

    fn map(name: &str, map_type: u32, key_size: u32, value_size: u32, n: u32) -> Map {
        Map::new(MapDef {
            name: name.to_string(),
            map_type,
            key_size,
            value_size,
            max_entries: n,
        })
        .unwrap()
    }

    #[test]
    fn entries_histograms_and_records() {
        let mut calls = map("calls", TYPE_HASH, 8, 8, 8);
        calls.update(&0x10200u64.to_le_bytes(), &3u64.to_le_bytes(), 0);
        calls.update(&0x10100u64.to_le_bytes(), &12u64.to_le_bytes(), 0);
        let mut names = map("names", TYPE_HASH, 16, 4, 8);
        names.update(b"ann\0\0\0\0\0\0\0\0\0\0\0\0\0", &2u32.to_le_bytes(), 0);
        let mut hist = map("lat_hist", TYPE_ARRAY, 4, 8, 64);
        hist.update(&0u32.to_le_bytes(), &1u64.to_le_bytes(), 0);
        hist.update(&3u32.to_le_bytes(), &4u64.to_le_bytes(), 0);
        hist.update(&11u32.to_le_bytes(), &2u64.to_le_bytes(), 0);
        let mut events = map("events", TYPE_RINGBUF, 0, 0, 64);
        events.output(b"bobby\0");
        events.output(&[1, 2, 0xff]);
        let empty = map("none", TYPE_ARRAY, 4, 8, 4);
        let mut out = String::new();
        write_maps(&mut out, &[calls, names, hist, events, empty]).unwrap();
        let bar = |n: usize| "@".repeat(n);
        let expected = [
            "@calls[0x10100]: 12".to_string(),
            "@calls[0x10200]: 3".to_string(),
            "@names[ann]: 2".to_string(),
            "@lat_hist:".to_string(),
            alloc::format!("{:<20} {:>8} |{:<40}|", "[0]", 1, bar(10)),
            alloc::format!("{:<20} {:>8} |{:<40}|", "[1]", 0, ""),
            alloc::format!("{:<20} {:>8} |{:<40}|", "[2, 4)", 0, ""),
            alloc::format!("{:<20} {:>8} |{:<40}|", "[4, 8)", 4, bar(40)),
        ];
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[..8],
            expected.iter().map(|s| s.as_str()).collect::<Vec<_>>()[..]
        );
        assert!(
            lines.contains(
                &"[1K, 2K)                    2 |@@@@@@@@@@@@@@@@@@@@                    |"
            ),
            "{out}"
        );
        assert!(lines.contains(&"@events: 2 records"));
        assert!(lines.contains(&"  [0] bobby"));
        assert!(lines.contains(&"  [1] 0102ff"));
        assert_eq!(lines.last(), Some(&"@none: (empty)"));
    }
}

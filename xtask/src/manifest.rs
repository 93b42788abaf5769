//! `fixtures/bin/MANIFEST`: one line per fixture, `name sha256 exit_code linux|ours|bench`.
//!
//! `linux` fixtures use only syscalls Linux shares (they run under `qemu-riscv64`); `ours`
//! fixtures use fork/exec/waitpid and only run in our kernels; `bench` fixtures are
//! Linux-compatible benchmarks too long for the per-fixture tests. The expected stdout of each
//! fixture is `fixtures/bin/NAME.stdout`.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where a fixture can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Linux-compatible syscalls only: also runs under `qemu-riscv64`.
    Linux,
    /// Uses fork/exec/waitpid: our kernels only.
    Ours,
    /// Linux-compatible and long (a benchmark): left out of the per-fixture tests.
    Bench,
}

impl Kind {
    fn parse(word: &str) -> Option<Kind> {
        match word {
            "linux" => Some(Kind::Linux),
            "ours" => Some(Kind::Ours),
            "bench" => Some(Kind::Bench),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Linux => "linux",
            Kind::Ours => "ours",
            Kind::Bench => "bench",
        })
    }
}

/// One manifest line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Fixture name: `fixtures/bin/NAME.elf`.
    pub name: String,
    /// Lowercase hex SHA-256 of the ELF.
    pub sha256: String,
    /// Expected exit status (128 + signal when killed by a signal under Linux).
    pub exit_code: i32,
    /// Where it can run.
    pub kind: Kind,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.name, self.sha256, self.exit_code, self.kind
        )
    }
}

/// `fixtures/bin` of the repository at `root`.
pub fn bin_dir(root: &Path) -> PathBuf {
    root.join("fixtures").join("bin")
}

/// Parses manifest text.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let bad = || {
                format!(
                    "MANIFEST line {}: expected `name sha256 exit_code linux|ours|bench`, got `{line}`",
                    i + 1
                )
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let [name, sha256, exit_code, kind] = words[..] else {
                return Err(bad());
            };
            Ok(Entry {
                name: name.to_string(),
                sha256: sha256.to_string(),
                exit_code: exit_code.parse().map_err(|_| bad())?,
                kind: Kind::parse(kind).ok_or_else(bad)?,
            })
        })
        .collect()
}

/// Formats entries as manifest text.
pub fn format(entries: &[Entry]) -> String {
    entries.iter().map(|e| format!("{e}\n")).collect()
}

/// Reads and parses the committed manifest.
pub fn load(root: &Path) -> Result<Vec<Entry>, String> {
    let path = bin_dir(root).join("MANIFEST");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text)
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips() {
        let text = "hello 00ff 0 linux\nforker abcd 0 ours\ntrap_self 1234 133 linux\n";
        let entries = parse(text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].kind, Kind::Ours);
        assert_eq!(entries[2].exit_code, 133);
        assert_eq!(format(&entries), text);
    }

    #[test]
    fn malformed_lines_are_rejected() {
        assert!(parse("hello 00ff 0\n").is_err());
        assert!(parse("hello 00ff zero linux\n").is_err());
        assert!(parse("hello 00ff 0 windows\n").is_err());
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

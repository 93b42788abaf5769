//! Every fixture of `fixtures/bin/MANIFEST` runs in the simulator with the manifest's
//! output and exit code (the same ones `qemu-riscv64` gives for the Linux-compatible ones).

use std::path::Path;

use ruprobes_sim::machine::{Config, Machine, FIXTURES_DIR};

struct Entry {
    name: String,
    exit_code: i32,
}

fn manifest() -> Vec<Entry> {
    let path = Path::new(FIXTURES_DIR).join("MANIFEST");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        // Benchmarks run in `cargo xtask perf` (and under qemu-riscv64), not here.
        .filter(|l| l.split_whitespace().nth(3) != Some("bench"))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 3, "malformed manifest line: {line}");
            Entry {
                name: fields[0].to_string(),
                exit_code: fields[2].parse().unwrap_or_else(|e| panic!("{line}: {e}")),
            }
        })
        .collect()
}

#[test]
fn every_fixture_matches_the_manifest() {
    let entries = manifest();
    assert!(entries.len() >= 10, "the manifest lists the fixtures");
    for entry in entries {
        let dir = Path::new(FIXTURES_DIR);
        let elf = std::fs::read(dir.join(format!("{}.elf", entry.name)))
            .unwrap_or_else(|e| panic!("{}: {e}", entry.name));
        let expected = std::fs::read(dir.join(format!("{}.stdout", entry.name)))
            .unwrap_or_else(|e| panic!("{}: {e}", entry.name));
        let mut machine = Machine::new(Config::default());
        machine.set_image_dir(dir);
        machine
            .load(&entry.name, &elf)
            .unwrap_or_else(|e| panic!("{}: {e}", entry.name));
        let result = machine
            .run()
            .unwrap_or_else(|e| panic!("{}: {e}", entry.name));
        assert_eq!(
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&expected),
            "{}: output",
            entry.name
        );
        assert_eq!(
            result.status.shell_code(),
            entry.exit_code,
            "{}: exit code ({:?})",
            entry.name,
            result.status
        );
        assert!(result.instructions > 0);
    }
}

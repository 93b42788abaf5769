//! Malformed programs: random mutations and truncations of every fixture are either
//! rejected by the loader with an error or run to some end, never a panic.

use std::path::Path;

use ruprobes_sim::machine::{Config, Machine, FIXTURES_DIR};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let names = ["hello", "fib", "forker", "insn_zoo"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut rejected, mut ran) = (0, 0);
    for name in names {
        let original =
            std::fs::read(Path::new(FIXTURES_DIR).join(format!("{name}.elf"))).unwrap_or_default();
        assert!(!original.is_empty(), "{name}.elf");
        for case in 0..300 {
            let mut elf = original.clone();
            if case % 10 == 0 {
                elf.truncate(rng.below(elf.len()));
            } else {
                // Mostly hit the headers, where the loader's decisions are.
                for _ in 0..1 + rng.below(4) {
                    let at = if rng.below(2) == 0 {
                        rng.below(elf.len().min(256))
                    } else {
                        rng.below(elf.len())
                    };
                    elf[at] = rng.next() as u8;
                }
            }
            let mut m = Machine::new(Config {
                max_insns: 200_000,
                mem_bytes: 16 << 20,
                ..Config::default()
            });
            match m.load(name, &elf) {
                Err(_) => rejected += 1,
                Ok(_) => {
                    // Whatever the mutated code does, the machine ends it cleanly.
                    let _ = m.add_probe("uprobe:main");
                    let _ = m.run();
                    ran += 1;
                }
            }
        }
    }
    assert!(
        rejected > 0 && ran > 0,
        "both outcomes occur: {rejected} rejected, {ran} ran"
    );
}

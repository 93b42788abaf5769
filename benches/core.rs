//! What a probe costs in the core, through the public trap API with an in-memory user space.
//!
//! Groups:
//! - `per_hit`: every trap of one hit, by instruction class, with the floor of the trap path
//!   (a breakpoint that is not ours) in the same group.
//! - `scaling`: one hit (emulated; out of line) with 1, 1 000 and 100 000 probes of its
//!   class registered and armed in the one process: `*_hit` always at the same (middle)
//!   probe, `*_hit_spread` at a different probe each time, walking over all of them.
//! - `register`: register + arm, and unregister + restore, of one probe, with 1 and 100 000
//!   other probes registered.
//!
//! `cargo bench --bench core`; `cargo test --benches` runs each once (smoke mode).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

#[path = "support/hits.rs"]
#[allow(dead_code)]
mod hits;

use hits::{entry_consumer, Hits, Many, Site, PATH};

/// Probe counts of the scaling group.
const SCALES: [usize; 3] = [1, 1_000, 100_000];

fn per_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_hit");
    for site in Site::ALL {
        let Ok(mut hits) = Hits::new() else {
            eprintln!("per_hit: cannot arm the probes; skipped");
            return;
        };
        assert!(
            hits.hit(site),
            "{} is not handled as it must be",
            site.name()
        );
        group.bench_function(site.name(), |b| {
            b.iter(|| black_box(hits.hit(black_box(site))))
        });
    }
    group.finish();
}

fn scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("scaling");
    for (name, xol, spread) in [
        ("emulate_hit", false, false),
        ("emulate_hit_spread", false, true),
        ("xol_hit", true, false),
        ("xol_hit_spread", true, true),
    ] {
        for n in SCALES {
            let Ok(mut many) = Many::new(n, 0, xol) else {
                eprintln!("scaling: cannot arm {n} probes; skipped");
                continue;
            };
            let mut hit = move || {
                if spread {
                    many.hit_spread()
                } else {
                    many.hit()
                }
            };
            assert!(hit(), "a probe among {n} is not handled");
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(hit()))
            });
        }
    }
    group.finish();
}

/// Spare instructions the register group cycles through.
const SPARE: usize = 1024;

fn register(c: &mut Criterion) {
    let mut group = c.benchmark_group("register");
    for n in [1, 100_000] {
        let Ok(mut many) = Many::new(n, SPARE, false) else {
            eprintln!("register: cannot arm {n} probes; skipped");
            continue;
        };
        // Each iteration registers (arming) and unregisters (restoring) one probe on a spare
        // instruction; the two halves are timed apart.
        let mut cycle = |iters: u64, time_register: bool| {
            let mut spent = Duration::ZERO;
            for i in 0..iters {
                let addr = many.spare[i as usize % SPARE];
                let start = Instant::now();
                let id = many
                    .engine
                    .register(PATH, addr, entry_consumer(), Some(&mut many.space));
                let registered = start.elapsed();
                let Ok(id) = id else {
                    panic!("register at {addr:#x} failed")
                };
                let start = Instant::now();
                let removed = many.engine.unregister(id, Some(&mut many.space));
                let unregistered = start.elapsed();
                assert!(removed.is_ok(), "unregister at {addr:#x} failed");
                spent += if time_register {
                    registered
                } else {
                    unregistered
                };
            }
            spent
        };
        group.bench_with_input(BenchmarkId::new("register_arm", n), &n, |b, _| {
            b.iter_custom(|iters| cycle(iters, true))
        });
        group.bench_with_input(BenchmarkId::new("unregister_restore", n), &n, |b, _| {
            b.iter_custom(|iters| cycle(iters, false))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30)
}

criterion_group! {
    name = core;
    config = config();
    targets = per_hit, scaling, register
}
criterion_main!(core);

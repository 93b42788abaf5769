//! The simulator running a fixture workload: guest instructions per second unprobed, with a
//! probe on the hottest function's entry and return, and with a probe on every instruction
//! the core accepts. Throughput is the unprobed run's instruction count per second in all
//! three, so the numbers compare directly (the slowdown is their ratio).
//!
//! `cargo bench --bench sim`; `cargo test --benches` runs each once (smoke mode).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

#[path = "support/workload.rs"]
#[allow(dead_code)]
mod workload;

use workload::{add_probes, fixture_elf, hottest_function, machine, sites, Kind};

/// The fixture measured: sorting (loads, stores, branches, calls).
const WORKLOAD: &str = "sort";

fn sim(c: &mut Criterion) {
    let elf = match fixture_elf(WORKLOAD) {
        Ok(elf) => elf,
        Err(e) => panic!("fixture {WORKLOAD}: {e}"),
    };
    let load = || match machine(WORKLOAD, &elf) {
        Ok(m) => m,
        Err(e) => panic!("loading {WORKLOAD}: {e}"),
    };
    let unprobed = match load().run() {
        Ok(result) => result,
        Err(e) => panic!("running {WORKLOAD}: {e}"),
    };
    let (hottest, _) = match hottest_function(WORKLOAD, &elf) {
        Ok(found) => found,
        Err(e) => panic!("finding the hottest function of {WORKLOAD}: {e}"),
    };
    let all_sites: Vec<u64> = load()
        .main_image()
        .map(|image| sites(image).accepted.iter().map(|s| s.addr).collect())
        .unwrap_or_default();
    assert!(!all_sites.is_empty(), "{WORKLOAD} has no probe sites");

    let mut group = c.benchmark_group(format!("sim_{WORKLOAD}"));
    group.throughput(Throughput::Elements(unprobed.instructions));
    let run = |mut m: ruprobes_sim::Machine| match m.run() {
        Ok(result) => black_box(result.instructions),
        Err(e) => panic!("running {WORKLOAD}: {e}"),
    };
    group.bench_function("unprobed", |b| {
        b.iter_batched(load, run, BatchSize::PerIteration)
    });
    eprintln!(
        "sim_{WORKLOAD}: the hottest function is {} ({:#x})",
        hottest.name, hottest.addr
    );
    group.bench_function("hottest_entry_return", |b| {
        let setup = || {
            let mut m = load();
            add_probes(&mut m, [hottest.addr], Kind::Entry);
            add_probes(&mut m, [hottest.addr], Kind::Return);
            m
        };
        b.iter_batched(setup, run, BatchSize::PerIteration)
    });
    group.bench_function("every_instruction", |b| {
        let setup = || {
            let mut m = load();
            add_probes(&mut m, all_sites.iter().copied(), Kind::Entry);
            m
        };
        b.iter_batched(setup, run, BatchSize::PerIteration)
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10)
}

criterion_group! {
    name = simulator;
    config = config();
    targets = sim
}
criterion_main!(simulator);

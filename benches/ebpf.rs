//! The per-hit cost of an eBPF handler (interpreted, `fixtures/bpf/count.bpf.o`: a hash-map
//! call counter keyed by the probed address) next to closure handlers, on the same hit: an
//! emulated `addi` through the public trap API with an in-memory user space.
//!
//! - `closure_noop`: a handler that only reads a register (the floor of a hit);
//! - `closure_count`: a closure doing the program's work in Rust (a `HashMap` counter);
//! - `ebpf_count`: the program, run by `ruprobes-ebpf` with the hit's `UProbeBPFContext`.
//!
//! `cargo bench --bench ebpf`; `cargo test --benches` runs each once (smoke mode).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ruprobes::bpf::UProbeBPFContext;
use ruprobes::testing::{MemSpace, TEXT};
use ruprobes::{abi, Consumer, Trap, TrapContext, Uprobes, UserRegs};
use ruprobes_ebpf::{Env, Object, Runtime};

const PATH: &str = "/bin/bench";

/// `addi a0, a0, 1`: emulated in the trap.
const ADDI: u32 = (1 << 20) | (10 << 15) | (10 << 7) | 0x13;

/// A kernel that gives programs nothing but a clock and ids.
struct BenchEnv;

impl Env for BenchEnv {
    fn read_user(&mut self, _addr: u64, _buf: &mut [u8]) -> bool {
        false
    }
    fn pid_tgid(&self) -> u64 {
        (1 << 32) | 1
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn print(&mut self, _line: &str) {}
}

/// One probe on the `addi` with `consumer`; every call of `hit` is one hit.
struct Bench {
    engine: Uprobes,
    space: MemSpace,
    regs: TrapContext,
}

impl Bench {
    fn new(consumer: Consumer) -> Bench {
        let engine = Uprobes::new();
        let mut space = MemSpace::with_text(1, &ADDI.to_le_bytes());
        engine.on_exec(&mut space, PATH).expect("exec");
        engine
            .register(PATH, TEXT, consumer, Some(&mut space))
            .expect("register");
        Bench {
            engine,
            space,
            regs: TrapContext::default(),
        }
    }

    fn hit(&mut self) -> bool {
        self.regs.set_pc(TEXT);
        self.engine
            .handle_breakpoint(&mut self.space, &mut self.regs)
            == Trap::Handled
    }
}

fn count_object() -> Runtime {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/bpf/count.bpf.o");
    let bytes = std::fs::read(path).expect("fixtures/bpf/count.bpf.o");
    Runtime::new(Object::load(&bytes).expect("count.bpf.o loads"))
}

fn per_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("ebpf_per_hit");
    let noop = Consumer::new().on_entry(|regs, hit| {
        black_box((regs.reg(abi::A0), hit.addr));
    });
    let counts: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
    let map = counts.clone();
    let count = Consumer::new().on_entry(move |_, hit| {
        *map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(hit.addr)
            .or_insert(0) += 1;
    });
    let runtime = Arc::new(Mutex::new(count_object()));
    let rt = runtime.clone();
    let ebpf = Consumer::new().on_entry(move |regs, hit| {
        let ctx = UProbeBPFContext::from_regs(&*regs, hit.addr, 0);
        let mut rt = rt.lock().unwrap_or_else(|e| e.into_inner());
        black_box(rt.run(0, &ctx, &mut BenchEnv)).ok();
    });
    for (name, consumer) in [
        ("closure_noop", noop),
        ("closure_count", count),
        ("ebpf_count", ebpf),
    ] {
        let mut bench = Bench::new(consumer);
        assert!(bench.hit(), "{name}: the hit is not handled");
        group.bench_function(name, |b| b.iter(|| black_box(bench.hit())));
    }
    group.finish();
    // The program really counted every hit (no error, one key).
    let rt = runtime.lock().unwrap_or_else(|e| e.into_inner());
    let stats = rt.stats(0).expect("program 0");
    assert_eq!(stats.errors, 0, "{:?}", stats.first_error);
    assert_eq!(rt.object.map("calls").map(|m| m.entries().len()), Some(1));
    assert!(counts.lock().map(|c| c[&TEXT] > 0).unwrap_or(false));
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30)
}

criterion_group! {
    name = ebpf;
    config = config();
    targets = per_hit
}
criterion_main!(ebpf);

//! The runtime on the committed clang-built objects of fixtures/bpf (no clang needed): each
//! helper, each map kind, attach names, and every bad object giving one clear error.

use ruprobes::bpf::{TracepointType, UProbeBPFContext};
use ruprobes::TrapContext;
use ruprobes_ebpf::{Env, Object, Runtime, VmError};

fn object(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../fixtures/bpf/{name}.bpf.o",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load(name: &str) -> Runtime {
    Runtime::new(Object::load(&object(name)).unwrap_or_else(|e| panic!("{name}: {e}")))
}

/// User memory (address, bytes) and a clock, ids and the printed lines.
#[derive(Default)]
struct TestEnv {
    user: Vec<(u64, Vec<u8>)>,
    now: u64,
    pid_tgid: u64,
    lines: Vec<String>,
}

impl Env for TestEnv {
    fn read_user(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        for (base, bytes) in &self.user {
            let off = addr.wrapping_sub(*base) as usize;
            if addr >= *base && off + buf.len() <= bytes.len() {
                buf.copy_from_slice(&bytes[off..off + buf.len()]);
                return true;
            }
        }
        false
    }
    fn pid_tgid(&self) -> u64 {
        self.pid_tgid
    }
    fn now_ns(&self) -> u64 {
        self.now
    }
    fn print(&mut self, line: &str) {
        self.lines.push(line.to_string());
    }
}

fn page(text: &[u8]) -> Vec<u8> {
    let mut page = vec![0xee; 4096];
    page[..text.len()].copy_from_slice(text);
    page
}

fn ctx(paddr: usize, a0: usize, ra: usize, ptype: usize) -> UProbeBPFContext {
    let mut tf = TrapContext::default();
    tf.x[10] = a0;
    tf.x[1] = ra;
    tf.sepc = paddr;
    UProbeBPFContext::new(&tf, paddr, ptype)
}

fn index(rt: &Runtime, name: &str) -> usize {
    rt.object
        .programs
        .iter()
        .position(|p| p.name == name)
        .unwrap_or_else(|| panic!("no program {name}"))
}

fn summary(rt: &Runtime) -> String {
    let mut out = String::new();
    rt.write_summary(&mut out).unwrap();
    out
}

#[test]
fn call_counter_in_a_hash_map() {
    let mut rt = load("count");
    let names: Vec<(&str, &str, TracepointType)> = rt
        .object
        .programs
        .iter()
        .map(|p| (p.name.as_str(), p.attach.symbol.as_str(), p.attach.kind))
        .collect();
    assert_eq!(
        names,
        [
            (
                "count_insertion_sort",
                "insertion_sort",
                TracepointType::UProbeSyncFunc
            ),
            (
                "count_quick_sort",
                "quick_sort",
                TracepointType::UProbeSyncFunc
            ),
            (
                "count_sift_down",
                "sift_down",
                TracepointType::UProbeSyncFunc
            ),
            (
                "count_merge_sort",
                "merge_sort",
                TracepointType::UProbeSyncFunc
            ),
        ]
    );
    let mut env = TestEnv::default();
    let quick = index(&rt, "count_quick_sort");
    let sift = index(&rt, "count_sift_down");
    for _ in 0..3 {
        rt.run(quick, &ctx(0x10100, 0, 0, 0), &mut env).unwrap();
    }
    rt.run(sift, &ctx(0x10200, 0, 0, 0), &mut env).unwrap();
    let out = summary(&rt);
    assert!(
        out.starts_with("@calls[0x10100]: 3\n@calls[0x10200]: 1\n"),
        "{out}"
    );
    assert!(out.contains("prog count_quick_sort (uprobe/quick_sort): 3 runs, 0 errors\n"));
}

#[test]
fn latency_histogram_from_entry_return_pairs_by_tid() {
    let mut rt = load("latency");
    let entry = index(&rt, "sift_down_entry");
    let ret = index(&rt, "sift_down_return");
    assert_eq!(
        rt.object.programs[ret].attach.kind,
        TracepointType::URetProbeExitSyncFunc
    );
    let mut env = TestEnv {
        pid_tgid: (1 << 32) | 7,
        ..TestEnv::default()
    };
    // Two threads interleaved: tid 7 takes 1000 ns, tid 8 takes 3 ns.
    env.now = 100;
    rt.run(entry, &ctx(0x10000, 0, 0, 0), &mut env).unwrap();
    env.pid_tgid = (1 << 32) | 8;
    env.now = 200;
    rt.run(entry, &ctx(0x10000, 0, 0, 0), &mut env).unwrap();
    env.now = 203;
    rt.run(ret, &ctx(0x10000, 0, 0, 0), &mut env).unwrap();
    env.pid_tgid = (1 << 32) | 7;
    env.now = 1100;
    rt.run(ret, &ctx(0x10000, 0, 0, 0), &mut env).unwrap();
    // A return without an entry is ignored; the start map is empty again (delete).
    rt.run(ret, &ctx(0x10000, 0, 0, 0), &mut env).unwrap();
    let start = rt.object.map("start").unwrap();
    assert!(start.entries().is_empty());
    let hist = rt.object.map("sift_down_hist").unwrap();
    let counts: Vec<u64> = hist
        .entries()
        .iter()
        .map(|(_, v)| u64::from_le_bytes(v[..8].try_into().unwrap()))
        .collect();
    assert_eq!(counts[2], 1, "3 ns: [2, 4)");
    assert_eq!(counts[10], 1, "1000 ns: [512, 1K)");
    assert_eq!(counts.iter().sum::<u64>(), 2);
    let total = rt.object.map("sift_down_total_ns").unwrap();
    assert_eq!(total.entries()[0].1, 1003u64.to_le_bytes(), "1000 + 3 ns");
    let out = summary(&rt);
    assert!(out.contains("@sift_down_hist:\n[2, 4)"), "{out}");
    assert!(out.contains("[512, 1K)                   1 |"), "{out}");
}

#[test]
fn get_func_ret_gives_a0_at_returns_and_eopnotsupp_elsewhere() {
    let mut rt = load("ret");
    let entry = index(&rt, "fib_entry");
    let ret = index(&rt, "fib_return");
    let mut env = TestEnv::default();
    for v in [55, 1, 1] {
        rt.run(ret, &ctx(0x10074, v, 0, 0), &mut env).unwrap();
    }
    rt.run(entry, &ctx(0x10074, 5, 0, 0), &mut env).unwrap();
    let out = summary(&rt);
    assert!(
        out.starts_with(
            "@fib_returns[0x1]: 2\n@fib_returns[0x37]: 1\n@get_func_ret[0]: 3\n@get_func_ret[2]: 1\n"
        ),
        "{out}"
    );
}

#[test]
fn filter_on_an_argument_and_trace_printk() {
    let mut rt = load("filter");
    let filter = index(&rt, "fib_filter");
    let result = index(&rt, "fib_result");
    let mut env = TestEnv::default();
    for n in [7, 5, 3, 5] {
        rt.run(filter, &ctx(0x10074, n, 0x100aa, 0), &mut env)
            .unwrap();
    }
    for v in [1, 55] {
        rt.run(result, &ctx(0x10074, v, 0, 0), &mut env).unwrap();
    }
    assert_eq!(
        env.lines,
        [
            "fib(5) from ra 100aa",
            "fib(5) from ra 100aa",
            "fib returned 55"
        ]
    );
    let out = summary(&rt);
    assert!(
        out.starts_with("@fib_calls[0]: 2\n@fib_calls[1]: 2\n"),
        "{out}"
    );
}

#[test]
fn user_strings_ring_buffer_and_faults() {
    let mut rt = load("greet");
    let greet = index(&rt, "greet_entry");
    let mut env = TestEnv {
        // Whole pages, as in a process: a string read may look past the NUL.
        user: vec![
            (0x2000, page(b"ann\0")),
            (0x3000, page(b"a-very-long-name-indeed\0")),
        ],
        ..TestEnv::default()
    };
    for addr in [0x2000, 0x3000, 0x2000, 0xdead_0000] {
        rt.run(greet, &ctx(0x10014, addr, 0, 0), &mut env).unwrap();
    }
    assert_eq!(
        env.lines,
        [
            "greet: first byte a",
            "greet ann (4 bytes)",
            "greet: first byte a",
            "greet a-very-long-nam (16 bytes)",
            "greet: first byte a",
            "greet ann (4 bytes)",
            "greet: bad name pointer (-14)",
        ]
    );
    let out = summary(&rt);
    assert!(
        out.starts_with(
            "@greetings[a-very-long-nam]: 1\n@greetings[ann]: 2\n@events: 3 records\n  [0] ann\n"
        ),
        "{out}"
    );
}

#[test]
fn bad_objects_are_refused_with_one_line() {
    let cases = [
        (
            "bad/unknown_helper",
            "program call_unknown: insn 0: unknown helper 999",
        ),
        (
            "bad/unknown_section",
            "unknown section 'kprobe/do_sys_open'",
        ),
        ("bad/bpf_call", "bpf-to-bpf calls are not supported"),
    ];
    for (name, expected) in cases {
        let e = Object::load(&object(name))
            .err()
            .unwrap_or_else(|| panic!("{name} loaded"));
        let line = e.to_string();
        assert!(line.contains(expected), "{name}: {line}");
        assert!(!line.contains('\n'), "{name}: {line}");
    }
    let good = object("count");
    for cut in [0, 10, 64, good.len() / 2, good.len() - 1] {
        let e = Object::load(&good[..cut]).expect_err("truncated object loaded");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    assert!(Object::load(b"\x7fELF not really").is_err());
}

#[test]
fn run_time_errors_stop_the_program_and_are_counted() {
    let cases = [
        (
            "bad/oob_read",
            "out-of-bounds load of 8 bytes at ctx+0x1000 (insn 0)",
        ),
        ("bad/ctx_write", "store to read-only ctx+0x60 (insn 1)"),
        ("bad/infinite_loop", "instruction budget of 10000 exhausted"),
    ];
    for (name, expected) in cases {
        let mut rt = load(name);
        rt.budget = 10_000;
        let mut env = TestEnv::default();
        let c = ctx(0x10074, 5, 0, 0);
        for _ in 0..3 {
            let e = rt.run(0, &c, &mut env).unwrap_err();
            assert_eq!(e, expected, "{name}");
        }
        let stats = rt.stats(0).unwrap();
        assert_eq!((stats.runs, stats.errors), (3, 3));
        assert!(summary(&rt).ends_with(&format!("3 runs, 3 errors; first: {expected}\n")));
    }
}

#[test]
fn context_layout_matches_the_header() {
    let c = ctx(0x1234, 0xaa, 0xbb, 1);
    let bytes = ruprobes_ebpf::context_bytes(&c);
    let word = |off: usize| u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap());
    assert_eq!(word(0), 1, "ptype");
    assert_eq!(word(8), 0x1234, "paddr");
    assert_eq!(word(16 + 8), 0xbb, "x1");
    assert_eq!(word(16 + 80), 0xaa, "x10");
    assert_eq!(word(280), 0x1234, "sepc");
    assert_eq!(
        core::mem::size_of::<UProbeBPFContext>(),
        ruprobes_ebpf::CONTEXT_SIZE
    );
    let _ = VmError::Budget { limit: 1 };
}

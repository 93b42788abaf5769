//! `ruprobes-sim trace PROG --bpf OBJ.o` on the committed clang-built objects of
//! fixtures/bpf: maps at exit, trace_printk lines in the trace, and bad objects.

use std::path::Path;
use std::process::{Command, Output};

use ruprobes_sim::machine::FIXTURES_DIR;

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ruprobes-sim"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start ruprobes-sim: {e}"))
}

fn fixture(name: &str) -> String {
    Path::new(FIXTURES_DIR)
        .join(format!("{name}.elf"))
        .display()
        .to_string()
}

fn object(name: &str) -> String {
    Path::new(FIXTURES_DIR)
        .join(format!("../bpf/{name}.bpf.o"))
        .display()
        .to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `--- bpf OBJ` section of a report, up to the next `---` line.
fn section(out: &str) -> String {
    let start = out.find("--- bpf ").expect("a bpf section");
    let body = &out[start..];
    let body = &body[body.find('\n').map_or(0, |i| i + 1)..];
    let end = body.find("\n---").map_or(body.len(), |i| i + 1);
    body[..end].to_string()
}

#[test]
fn call_counter_per_function() {
    let o = sim(&["trace", &fixture("sort"), "--bpf", &object("count"), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        section(&stdout(&o)),
        "@calls[0x100d2]: 2\n@calls[0x1041a]: 2\n@calls[0x10596]: 503\n@calls[0x1074c]: 1534\n\
         prog count_insertion_sort (uprobe/insertion_sort): 2 runs, 0 errors\n\
         prog count_quick_sort (uprobe/quick_sort): 503 runs, 0 errors\n\
         prog count_sift_down (uprobe/sift_down): 1534 runs, 0 errors\n\
         prog count_merge_sort (uprobe/merge_sort): 2 runs, 0 errors\n"
    );
    // The same counts as the simulator's own entry probes.
    let probes = sim(&["trace", &fixture("sort"), "-q", "-p", "uprobe:quick_sort"]);
    let row = stdout(&probes)
        .lines()
        .find(|l| l.starts_with("uprobe:quick_sort "))
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(row.get(3).map(String::as_str), Some("503"), "{row:?}");
}

#[test]
fn latency_histogram_is_drawn() {
    let o = sim(&["trace", &fixture("sort"), "--bpf", &object("latency"), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = section(&stdout(&o));
    assert!(
        s.starts_with("@start: (empty)\n"),
        "every entry matched: {s}"
    );
    // `{range:<20} {count:>8} |{bar}|`
    let rows: Vec<(String, u64)> = s
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| {
            let range = l[..20].trim().to_string();
            (range, l[21..29].trim().parse::<u64>().unwrap_or(0))
        })
        .collect();
    let calls: u64 = rows.iter().map(|(_, n)| n).sum();
    assert_eq!(calls, 1534, "every sift_down call measured once: {s}");
    assert!(
        s.contains("|@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|"),
        "{s}"
    );
    // The same buckets as the simulator's own entry-to-return latency of sift_down: the
    // program's clock is the instruction clock.
    let own = stdout(&sim(&[
        "trace",
        &fixture("sort"),
        "-q",
        "-p",
        "uretprobe:sift_down",
    ]));
    let own_rows: Vec<(String, u64)> = own
        .lines()
        .skip_while(|l| !l.starts_with("--- latency of uretprobe:sift_down"))
        .skip(1)
        .take_while(|l| l.starts_with('['))
        .filter_map(|l| {
            let (range, rest) = l.split_once(")")?;
            let count = rest.split_whitespace().next()?.parse().ok()?;
            Some((format!("{range})"), count))
        })
        .collect();
    assert_eq!(rows, own_rows, "{s}\n{own}");
    // The exact total lies within the buckets' bounds.
    let total: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("@sift_down_total_ns[0]: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no total: {s}"));
    let bounds = |(range, n): &(String, u64)| -> Option<(u64, u64)> {
        let (lo, hi) = range.trim_matches(['[', ')']).split_once(", ")?;
        Some((lo.parse::<u64>().ok()? * n, hi.parse::<u64>().ok()? * n))
    };
    let (lo, hi) = rows
        .iter()
        .filter_map(bounds)
        .fold((0, 0), |(a, b), (lo, hi)| (a + lo, b + hi));
    assert!(lo <= total && total < hi, "{lo} <= {total} < {hi}: {s}");
}

#[test]
fn filter_prints_into_the_trace() {
    let o = sim(&["trace", &fixture("fib"), "--bpf", &object("filter")]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let prints: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("bpf_trace_printk"))
        .collect();
    assert_eq!(prints.len(), 6, "{out}");
    assert!(prints[..5].iter().all(
        |l| l.starts_with("pid 1 bpf_trace_printk: fib(5) from ra 0x")
            || l.starts_with("pid 1 bpf_trace_printk: fib(5) from ra ")
    ));
    assert_eq!(prints[5], "pid 1 bpf_trace_printk: fib returned 55");
    assert!(section(&out).starts_with("@fib_calls[0]: 84\n@fib_calls[1]: 5\n"));
}

#[test]
fn return_values_by_get_func_ret_and_the_context() {
    let o = sim(&["trace", &fixture("fib"), "--bpf", &object("ret"), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = section(&stdout(&o));
    // fib(10) = 55 from 89 calls: 55 of them return 1 (n < 2), one returns 55.
    assert!(
        s.starts_with("@fib_returns[0x1]: 55\n@fib_returns[0x2]: 13\n"),
        "{s}"
    );
    assert!(s.contains("@fib_returns[0x37]: 1\n"), "{s}");
    // Every return: the helper's value is a0; every entry: -EOPNOTSUPP; nothing else.
    assert!(
        s.contains("@get_func_ret[0]: 89\n@get_func_ret[2]: 89\nprog fib_entry"),
        "{s}"
    );
    // 89 returns, as the simulator's own return probe counts them.
    let own = stdout(&sim(&[
        "trace",
        &fixture("fib"),
        "-q",
        "-p",
        "uretprobe:fib",
    ]));
    let row = own
        .lines()
        .find(|l| l.starts_with("uretprobe:fib "))
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(row.get(4).map(String::as_str), Some("89"), "{own}");
}

#[test]
fn user_strings_and_ring_buffer() {
    let o = sim(&["trace", &fixture("greet"), "--bpf", &object("greet")]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.contains(
        "pid 1 bpf_trace_printk: greet: first byte a\npid 1 bpf_trace_printk: greet ann (4 bytes)\n"
    ));
    assert!(out.contains("pid 1 bpf_trace_printk: greet a-very-long-nam (16 bytes)\n"));
    assert!(section(&out).starts_with(
        "@greetings[a-very-long-nam]: 1\n@greetings[ann]: 3\n@greetings[bob]: 1\n@greetings[cyd]: 1\n\
         @events: 6 records\n  [0] ann\n  [1] bob\n"
    ));
    let json = sim(&[
        "trace",
        &fixture("greet"),
        "--bpf",
        &object("greet"),
        "--json",
    ]);
    // JSON Lines: the events as they happen, the summary (with the bpf section) last.
    let lines: Vec<serde_json::Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let doc = lines.last().cloned().unwrap_or_default();
    assert_eq!(doc["event"], "summary");
    assert!(
        doc["sections"][format!("bpf {}", object("greet"))]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("@greetings[ann]: 3"))
    );
    let first = lines.iter().find(|l| l["event"] != "output");
    assert_eq!(first.map(|l| l["event"].clone()), Some("print".into()));
}

#[test]
fn failing_programs_are_stopped_and_counted_and_the_program_goes_on() {
    let plain = sim(&["trace", &fixture("fib"), "-p", "uprobe:fib"]);
    let cases = [
        (
            "bad/oob_read",
            "out-of-bounds load of 8 bytes at ctx+0x1000 (insn 0)",
        ),
        ("bad/ctx_write", "store to read-only ctx+0x60 (insn 1)"),
        (
            "bad/infinite_loop",
            "instruction budget of 1048576 exhausted",
        ),
    ];
    for (name, error) in cases {
        let o = sim(&[
            "trace",
            &fixture("fib"),
            "-p",
            "uprobe:fib",
            "--bpf",
            &object(name),
        ]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(
            out.contains(&format!("89 runs, 89 errors; first: {error}\n")),
            "{name}: {out}"
        );
        // The probed program's output, trace (arguments seen by the other probe) and exit
        // are those of a run without the program.
        let trace = |s: &str| -> Vec<String> {
            s.lines()
                .take_while(|l| !l.starts_with("--- probes"))
                .map(String::from)
                .collect()
        };
        assert_eq!(trace(&out), trace(&stdout(&plain)), "{name}");
    }
}

#[test]
fn bad_objects_are_one_error_line() {
    let truncated = std::env::temp_dir().join(format!("ruprobes-bpf-cli-{}.o", std::process::id()));
    let bytes = std::fs::read(object("count")).expect("count.bpf.o");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).expect("write a truncated object");
    let truncated = truncated.display().to_string();
    let cases = [
        (object("bad/unknown_helper"), "unknown helper 999"),
        (
            object("bad/unknown_section"),
            "unknown section 'kprobe/do_sys_open'",
        ),
        (object("bad/bpf_call"), "bpf-to-bpf calls are not supported"),
        (object("greet"), "no symbol 'greet' in fib"),
        (truncated.clone(), "not an ELF object"),
        (fixture("hello"), "not a little-endian BPF object"),
        ("no/such/file.o".to_string(), "no/such/file.o"),
    ];
    for (path, needle) in cases {
        let o = sim(&["trace", &fixture("fib"), "--bpf", &path]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{path}: {err}");
        assert_eq!(err.lines().count(), 1, "{path}: {err:?}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{path}: {err}"
        );
        assert!(stdout(&o).is_empty(), "nothing ran: {}", stdout(&o));
    }
    let _ = std::fs::remove_file(truncated);
}

#[test]
fn ebpf_scenarios_print_their_maps_in_the_block() {
    let o = sim(&["scenarios", "bpf_count_sort", "bpf_oob_read_stopped"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.starts_with("=== scenario bpf_count_sort\n"), "{out}");
    assert!(out.contains(
        "--- bpf\n@calls[0x100d2]: 2\n@calls[0x1041a]: 2\n@calls[0x10596]: 503\n@calls[0x1074c]: 1534\n"
    ));
    assert!(out.contains(
        "prog read_past_ctx (uprobe/fib): 89 runs, 89 errors; first: out-of-bounds load of 8 bytes at ctx+0x1000 (insn 0)\n--- output\nfib(10) = 55\n=== end bpf_oob_read_stopped\n"
    ));
    let all = stdout(&sim(&["scenarios"]));
    for s in ruprobes_trace::BPF_SCENARIOS {
        assert!(all.contains(&format!("=== end {}\n", s.name)), "{}", s.name);
    }
}

#[test]
fn a_failed_attach_registers_nothing_and_leaves_memory_identical() {
    use ruprobes_sim::machine::{Config, Machine};
    let elf = std::fs::read(fixture("fib")).expect("fib.elf");
    let mut machine = Machine::new(Config::default());
    let pid = machine.load("fib", &elf).expect("fib loads");
    let fib = machine
        .main_image()
        .and_then(|i| i.symbols.resolve("fib"))
        .expect("fib symbol");
    let before = machine.read_user(pid, fib, 16).expect("text");
    let bytes = std::fs::read(object("bad/odd_offset")).expect("odd_offset.bpf.o");
    let err = machine
        .attach_bpf(&bytes, "odd_offset.bpf.o")
        .err()
        .expect("an odd address is refused");
    assert!(
        err.to_string()
            .starts_with("odd_offset.bpf.o: attaching at "),
        "{err}"
    );
    assert_eq!(machine.read_user(pid, fib, 16).expect("text"), before);
    let result = machine.run().expect("fib runs");
    assert_eq!(String::from_utf8_lossy(&result.stdout), "fib(10) = 55\n");
    assert!(
        result.probes.iter().all(|p| p.stats.hits == 0),
        "the first program's probe was removed: {:?}",
        result.probes
    );
    // And on the command line: one error line, nothing run.
    let o = sim(&["trace", &fixture("fib"), "--bpf", &object("bad/odd_offset")]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

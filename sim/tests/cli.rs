//! The `ruprobes-sim` command line: the examples of the README / issue, and every bad input
//! (one `error:` line on stderr, a non-zero exit, never a panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ruprobes_sim::kernel::image::Image;
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exactly one line on stderr, starting with `error:`, and the given exit code.
fn assert_error(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(
        err.starts_with("error: "),
        "stderr starts with 'error: ': {err:?}"
    );
    assert!(err.contains(needle), "stderr mentions {needle:?}: {err:?}");
    assert!(!err.contains("panicked"), "no panic: {err}");
}

#[test]
fn trace_fib_entry_and_return() {
    let o = sim(&[
        "trace",
        &fixture("fib"),
        "-p",
        "uprobe:fib",
        "-p",
        "uretprobe:fib",
        "--post",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        out.starts_with("pid 1 hit fib pc=0x10014 a0=0xa a1=0x0\npid 1 post fib next=0x10016\n"),
        "events as they happen: {out}"
    );
    assert!(
        out.contains("\nfib(10) = 55\n"),
        "the program's output lines stay whole among the events: {out}"
    );
    assert!(
        out.contains("pid 1 ret fib a0=0x37\n"),
        "fib(10) returns 55: {out}"
    );
    // fib(10) makes 89 calls (one recursive call per loop step): both probes count them,
    // the return probe sees every return.
    let row = |spec: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{spec} ")))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    let ret = row("uretprobe:fib").unwrap_or_default();
    assert_eq!(ret[1..], ["0x10014", "fib", "89", "89", "0"], "{out}");
    let entry = row("uprobe:fib").unwrap_or_default();
    assert_eq!(
        entry[1..],
        ["0x10014", "fib", "89", "-", "-"],
        "hit table row: {out}"
    );
    assert!(out.contains("--- latency of uretprobe:fib at fib (instructions, entry to return)"));
    let histogram_total: u64 = out
        .lines()
        .filter(|l| l.starts_with('[') && l.contains('|'))
        .filter_map(|l| {
            l.split(" |")
                .next()?
                .split_whitespace()
                .last()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(histogram_total, 89, "every call has a latency: {out}");
    assert!(out.trim_end().ends_with("instructions"));
    assert!(out.contains("--- exit 0 after "));
}

#[test]
fn trace_by_address_and_offset() {
    let o = sim(&["trace", &fixture("fib"), "-p", "uprobe:0x10074"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("pid 1 hit main+0x20 pc=0x10074"),
        "{}",
        stdout(&o)
    );
    let o = sim(&["trace", &fixture("fib"), "-p", "uprobe:main+8"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("pid 1 hit main+0x8 pc=0x1005c"),
        "{}",
        stdout(&o)
    );
    assert!(
        !stdout(&o).contains(" post "),
        "post lines only with --post"
    );
}

#[test]
fn quiet_omits_the_trace_and_json_is_json_lines() {
    let o = sim(&["trace", &fixture("fib"), "-p", "uretprobe:fib", "--quiet"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0));
    assert!(!out.contains("pid 1 "), "{out}");
    assert!(out.starts_with("fib(10) = 55\n--- probes\n"), "{out}");

    let o = sim(&[
        "trace",
        &fixture("fib"),
        "-p",
        "uprobe:fib",
        "-p",
        "uretprobe:fib",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines[0]["event"], "hit");
    assert_eq!(lines[0]["at"]["symbol"][0], "fib");
    let output: String = lines
        .iter()
        .filter(|l| l["event"] == "output")
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert_eq!(output, "fib(10) = 55\n");
    let doc = lines.last().cloned().unwrap_or_default();
    assert_eq!(doc["event"], "summary", "the summary is the last line");
    let events = lines
        .iter()
        .filter(|l| l["event"] != "output" && l["event"] != "summary")
        .count() as u64;
    assert_eq!(Some(events), doc["events"]["written"].as_u64());
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["ending"]["how"], "finished");
    assert_eq!(doc["probes"][0]["hits"], 89);
    assert_eq!(
        doc["probes"][0].get("returns"),
        None,
        "an entry probe carries no returns"
    );
    assert_eq!(doc["probes"][1]["returns"], 89);
    let buckets = doc["probes"][1]["latency_histogram"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["count"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        89
    );
}

#[test]
fn run_exits_like_qemu_riscv64() {
    let o = sim(&["run", &fixture("hello")]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "hello, world\n")
    );
    let o = sim(&["run", &fixture("trap_self")]);
    assert_eq!(o.status.code(), Some(128 + 5), "killed by SIGTRAP");
    assert_eq!(stdout(&o), "before ebreak\n");
    let o = sim(&["trace", &fixture("trap_self"), "-p", "uprobe:main"]);
    assert_eq!(o.status.code(), Some(133));
    assert!(
        stdout(&o).contains("pid 1 killed SIGTRAP at main+0x1a pc=0x1002e\n"),
        "killed at trap_self's own ebreak"
    );
}

#[test]
fn no_arguments_trace_the_bundled_demo() {
    let o = sim(&[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.contains("fib(10) = 55\n"));
    assert!(out.contains("pid 1 hit fib pc=0x10014 a0=0xa a1=0x0"));
    assert!(out.contains("pid 1 ret fib a0=0x37"));
    assert!(out.contains("--- latency of uretprobe:fib"));
}

#[test]
fn scenarios_print_blocks() {
    let o = sim(&["scenarios", "hello_main", "trap_self"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("=== scenario hello_main\npid 1 hit main pc="),
        "{out}"
    );
    assert!(out.contains("--- output\nhello, world\n=== end hello_main\n=== scenario trap_self\n"));
    assert!(
        out.ends_with(
            "pid 1 killed SIGTRAP at main+0x1a pc=0x1002e\n--- output\nbefore ebreak\n=== end trap_self\n"
        ),
        "{out}"
    );
    assert_error(&sim(&["scenarios", "nope"]), 2, "no scenario named 'nope'");
}

#[test]
fn max_insns_stops_a_runaway() {
    let o = sim(&["run", &fixture("fib"), "--max-insns", "1000"]);
    assert_error(
        &o,
        1,
        "instruction budget exhausted after 1000 instructions",
    );
}

#[test]
fn bad_inputs_are_one_error_line() {
    assert_error(&sim(&["run", "no/such/file.elf"]), 1, "no/such/file.elf");
    let not_elf = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let not_elf = not_elf.display().to_string();
    assert_error(
        &sim(&["run", &not_elf]),
        1,
        &format!("{not_elf}: not an ELF file"),
    );
    // The simulator itself is an ELF file, but not a RISC-V one (on an ELF host).
    let host = env!("CARGO_BIN_EXE_ruprobes-sim");
    if std::fs::read(host).is_ok_and(|b| b.starts_with(b"\x7fELF")) {
        assert_error(
            &sim(&["trace", host, "-p", "uprobe:main"]),
            1,
            "not a RISC-V 64 executable",
        );
    }
    let fib = fixture("fib");
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:nosuchfn"]),
        1,
        "no function symbol 'nosuchfn'",
    );
    // crc32+0xc is a 32-bit instruction: +0xe is its second half.
    assert_error(
        &sim(&["trace", &fixture("crc"), "-p", "uprobe:crc32+14"]),
        1,
        "0x10144 is inside the instruction at crc32+0xc, not at its start",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "kprobe:fib"]),
        2,
        "bad probe spec 'kprobe:fib'",
    );
    assert_error(&sim(&["trace", &fib, "-p", "uprobe:"]), 2, "bad probe spec");
    assert_error(&sim(&["trace", &fib, "-p", "uprobe:0xzz"]), 2, "bad number");
    assert_error(
        &sim(&["trace", &fib, "-p", "uretprobe:fib+4"]),
        2,
        "without +OFFSET",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:0x10015"]),
        1,
        "not 2-byte aligned",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:0x11000"]),
        1,
        "not in executable memory",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:0x2000000"]),
        1,
        "0x2000000",
    );
    let zoo = fixture("insn_zoo");
    assert_error(
        &sim(&["trace", &zoo, "-p", "uprobe:bad_ecall"]),
        1,
        "a system instruction",
    );
    assert_error(&sim(&["trace", &zoo, "-p", "uprobe:bad_lr_d"]), 1, "lr/sc");
    assert_error(
        &sim(&["trace", &zoo, "-p", "uprobe:bad_csrrw"]),
        1,
        "a CSR instruction",
    );
    assert_error(&sim(&["trace", &fib, "--bogus"]), 2, "--bogus");
    assert_error(&sim(&["trace"]), 2, "required");
    assert_error(&sim(&["frobnicate"]), 2, "frobnicate");
}

/// Every decodable instruction start of an image's executable pages (from the text
/// symbols), as `uprobe:0xADDR` specs.
fn every_site(image: &Image) -> Vec<String> {
    let mut sites = Vec::new();
    for sym in image
        .symbols
        .symbols()
        .iter()
        .filter(|s| s.is_func && s.size > 0)
    {
        let mut addr = sym.addr;
        while addr < sym.addr + sym.size {
            let Some(bytes) = image
                .initial_bytes(addr, 4)
                .or_else(|| image.initial_bytes(addr, 2))
            else {
                break;
            };
            let Ok(insn) = ruprobes::decode::decode(&bytes) else {
                break;
            };
            sites.push(format!("uprobe:{addr:#x}"));
            addr += insn.len() as u64;
        }
    }
    sites.sort();
    sites.dedup();
    sites
}

#[test]
fn thousands_of_probes_on_one_command_line() {
    let path: PathBuf = Path::new(FIXTURES_DIR).join("interp.elf");
    let elf = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let image = Image::parse("interp", &elf).unwrap_or_else(|e| panic!("{e}"));
    let mut specs = every_site(&image);
    assert!(
        specs.len() >= 500,
        "interp has many instruction sites: {}",
        specs.len()
    );
    // Repeat to well over a thousand probes (several consumers per address).
    let sites = specs.clone();
    while specs.len() < 3000 {
        specs.extend(sites.iter().cloned());
    }
    let mut args = vec![
        "trace".to_string(),
        path.display().to_string(),
        "--quiet".into(),
    ];
    for spec in &specs {
        args.push("-p".into());
        args.push(spec.clone());
    }
    let expected = std::fs::read(Path::new(FIXTURES_DIR).join("interp.stdout")).unwrap_or_default();
    let start = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_ruprobes-sim"))
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let elapsed = start.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        o.stdout.starts_with(&expected),
        "the program's output is unchanged under {} probes",
        specs.len()
    );
    let rows = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("uprobe:0x"))
        .count();
    assert_eq!(rows, specs.len(), "one table row per probe");
    assert!(
        elapsed < Duration::from_secs(60),
        "{} probes took {elapsed:?}",
        specs.len()
    );
}

#[test]
fn help_shows_the_examples() {
    let o = sim(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o)
        .contains("ruprobes-sim trace fixtures/bin/fib.elf -p uprobe:fib -p uretprobe:fib"));
    assert!(stderr(&o).is_empty());
}

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

/// The histogram lines (`[lo, hi)  count  |@@@|`) of a text summary, in order.
fn histogram_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with('[') && l.contains('|'))
        .map(str::to_string)
        .collect()
}

#[test]
fn latency_is_the_same_with_every_instruction_probed() {
    let fib = fixture("fib");
    let alone = sim(&["trace", &fib, "-q", "-p", "uretprobe:fib"]);
    let crowded = sim(&[
        "trace",
        &fib,
        "-q",
        "-p",
        "uretprobe:fib",
        "-p",
        "uprobe:*+*",
    ]);
    assert_eq!(alone.status.code(), Some(0), "{}", stderr(&alone));
    assert_eq!(crowded.status.code(), Some(0), "{}", stderr(&crowded));
    let (a, c) = (stdout(&alone), stdout(&crowded));
    assert!(!histogram_lines(&a).is_empty(), "{a}");
    assert_eq!(histogram_lines(&a), histogram_lines(&c), "{a}\n{c}");
    let last = |s: &str| s.lines().last().unwrap_or_default().to_string();
    assert_eq!(last(&a), "--- exit 0 after 2379 instructions");
    assert_eq!(last(&a), last(&c), "the same instruction clock");
    assert!(c.contains("--- hits per function\n"), "{c}");
}

#[test]
fn fetch_arguments_filters_and_limits() {
    let fib = fixture("fib");
    let o = sim(&[
        "trace",
        &fib,
        "-p",
        "uprobe:fib n=%a0:u32 %sp +0(%sp):x64 %a0:s8",
        "-p",
        "uretprobe:fib $retval:u64",
        "--max-events",
        "2",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let events: Vec<&str> = out.lines().filter(|l| l.starts_with("pid ")).collect();
    assert_eq!(events.len(), 2, "{out}");
    assert!(
        events[0].starts_with("pid 1 hit fib pc=0x10014 a0=0xa a1=0x0 n=10 %sp=0x"),
        "{out}"
    );
    assert!(events[0].contains(" +0(%sp)=0x") && events[0].ends_with(" %a0=10"));
    // fib ends before the run's next check (every 2^20 instructions); the rest is dropped.
    assert!(out.contains("; 2 events written, "), "{out}");

    let o = sim(&["trace", &fib, "-p", "uretprobe:fib r=$retval:u64", "--hist"]);
    let out = stdout(&o);
    assert!(out.contains("pid 1 ret fib a0=0x37 r=55\n"), "{out}");
    assert!(out.contains("--- values of r of uretprobe:fib r=$retval:u64 at fib\n"));
    let o = sim(&[
        "trace",
        &fib,
        "-q",
        "-p",
        "uretprobe:fib",
        "--lhist",
        "0,100,25",
    ]);
    assert!(stdout(&o).contains("[0, 25) "), "{}", stdout(&o));
    assert!(stdout(&o).contains("[100, ...) "), "{}", stdout(&o));

    // Process filters: fib is pid 1.
    let o = sim(&["trace", &fib, "-p", "uprobe:fib", "--pid", "2"]);
    assert!(!stdout(&o).contains("pid 1 "), "{}", stdout(&o));
    let o = sim(&["trace", &fib, "-p", "uprobe:fib", "--tid", "1"]);
    assert!(stdout(&o).contains("pid 1 hit fib"), "{}", stdout(&o));
    let o = sim(&["trace", &fib, "-p", "uprobe:fib", "--tid", "7"]);
    assert!(!stdout(&o).contains("hit fib"), "{}", stdout(&o));
}

#[test]
fn ranges_lists_output_file_and_probes_from() {
    let crc = fixture("crc");
    let o = sim(&["trace", &crc, "--list", "uprobe:crc32+*"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.starts_with("ADDRESS  LOCATION"), "{out}");
    assert!(
        out.contains(" emulated ") || out.contains(" simulated "),
        "{out}"
    );
    assert!(out.contains(" out of line "), "{out}");
    assert!(out.contains("--- "), "{out}");
    let zoo = fixture("insn_zoo");
    let o = sim(&["trace", &zoo, "-l", "uprobe:bad_ecall"]);
    assert!(
        stdout(&o).contains("refused: a system instruction"),
        "{}",
        stdout(&o)
    );

    let dir = std::env::temp_dir().join(format!("ruprobes-cli-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let specs = dir.join("probes.txt");
    let _ = std::fs::write(&specs, "# comment\n\nuprobe:0x10014-0x10020\n");
    let trace = dir.join("trace.txt");
    let o = sim(&[
        "trace",
        &fixture("fib"),
        "--probes-from",
        &specs.display().to_string(),
        "--output",
        &trace.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "fib(10) = 55\n",
        "only the program's output on stdout"
    );
    let written = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(written.contains("pid 1 hit fib pc=0x10014"), "{written}");
    assert!(
        written.contains("pid 1 hit fib+0x2 pc=0x10016"),
        "{written}"
    );
    assert!(written.contains("--- exit 0 after 2379 instructions"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_summary_survives_a_budget_and_a_closed_pipe() {
    let o = sim(&[
        "trace",
        &fixture("fib"),
        "-p",
        "uprobe:fib",
        "--max-insns",
        "1000",
    ]);
    assert_error(
        &o,
        1,
        "instruction budget exhausted after 1000 instructions",
    );
    assert!(stdout(&o).contains("--- probes\n"), "{}", stdout(&o));
    assert!(stdout(&o)
        .trim_end()
        .ends_with("--- instruction budget exhausted after 1000 instructions"));

    // A reader that goes away after one line: the summary goes to stderr, exit 141.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ruprobes-sim"))
        .args(["trace", &fixture("sort"), "-p", "uprobe:*+*"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut first = [0u8; 16];
    if let Some(out) = child.stdout.as_mut() {
        let _ = std::io::Read::read_exact(out, &mut first);
    }
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(141), "{err}");
    assert!(err.contains("--- probes\n"), "{err}");
    assert!(err.contains("--- output closed after "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_tracing_options_are_one_error_line() {
    let fib = fixture("fib");
    assert_error(&sim(&["trace", &fib]), 2, "no probes");
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:fib %q9"]),
        2,
        "unknown register",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:fib %a0:u12"]),
        2,
        "unknown type",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:fib $retval"]),
        2,
        "$retval needs a uretprobe",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:0x10020-0x10010"]),
        2,
        "end must be above its start",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "uretprobe:fib+*"]),
        2,
        "without +OFFSET",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:nosuch:main"]),
        1,
        "no program 'nosuch'",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:fib", "--lhist", "5,1,1"]),
        2,
        "bad --lhist",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:fib", "--lhist", "x"]),
        2,
        "bad --lhist",
    );
    assert_error(
        &sim(&["trace", &fib, "-p", "uprobe:fib", "--pid", "x"]),
        2,
        "--pid",
    );
    assert_error(
        &sim(&["trace", &fib, "--probes-from", "no/such/specs.txt"]),
        1,
        "no/such/specs.txt",
    );
    assert_error(
        &sim(&[
            "trace",
            &fib,
            "-p",
            "uprobe:fib",
            "--output",
            "no/such/dir/t.txt",
        ]),
        1,
        "no/such/dir/t.txt",
    );
    assert_error(
        &sim(&["trace", &fib, "-l", "uprobe:nosuchfn"]),
        1,
        "nosuchfn",
    );
}

#[test]
fn stripped_programs_take_addresses_only() {
    let dir = std::env::temp_dir().join(format!("ruprobes-strip-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let stripped = dir.join("fib.elf");
    let elf = std::fs::read(fixture("fib")).unwrap_or_default();
    let _ = std::fs::write(&stripped, strip_symtab(&elf));
    let path = stripped.display().to_string();
    for spec in [
        "uprobe:fib",
        "uprobe:*+*",
        "uretprobe:*",
        "uprobe:fib*",
        "uprobe:main+8",
    ] {
        assert_error(
            &sim(&["trace", &path, "-p", spec]),
            1,
            &format!("probe '{spec}': the program has no symbol table (stripped): use an address"),
        );
    }
    assert_error(
        &sim(&["trace", &path, "-l", "uprobe:fib"]),
        1,
        "no symbol table (stripped)",
    );
    // Addresses and ranges work, for return probes too.
    let o = sim(&["trace", &path, "-p", "uretprobe:0x10014"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("pid 1 ret 0x10014 a0=0x37\n"),
        "{}",
        stdout(&o)
    );
    let o = sim(&["trace", &path, "-q", "-p", "uprobe:0x10014-0x10020"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("0x10016"), "{}", stdout(&o));
    let o = sim(&["trace", &path, "-p", "uprobe:0x10014"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("pid 1 hit 0x10014 pc=0x10014"),
        "{}",
        stdout(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `elf` with its symbol table's section type changed to SHT_NULL (as if stripped).
fn strip_symtab(elf: &[u8]) -> Vec<u8> {
    let mut out = elf.to_vec();
    let word = |at: usize, n: usize| {
        let mut v = 0u64;
        for i in (0..n).rev() {
            v = (v << 8) | u64::from(elf[at + i]);
        }
        v as usize
    };
    let (shoff, shentsize, shnum) = (word(0x28, 8), word(0x3a, 2), word(0x3c, 2));
    for i in 0..shnum {
        let at = shoff + i * shentsize;
        if word(at + 4, 4) == 2 {
            out[at + 4..at + 8].copy_from_slice(&0u32.to_le_bytes());
        }
    }
    out
}

#[test]
fn ctrl_c_ends_the_run_with_its_summary() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ruprobes-sim"))
        .args(["trace", &fixture("sort"), "-p", "uprobe:*+*"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    // The first event means the run (and its SIGINT handler) has started.
    let mut first = [0u8; 4];
    let _ = std::io::Read::read_exact(&mut out, &mut first);
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(kill.is_ok_and(|s| s.success()), "kill -INT");
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut out, &mut rest);
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&rest).into_owned();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(text.contains("--- probes\n"), "{text}");
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("--- interrupted (SIGINT) after "),
        "{text}"
    );
}

/// Runs the simulator with `input` on its stdin.
fn sim_with_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ruprobes-sim"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    stdin
        .write_all(input)
        .unwrap_or_else(|e| panic!("write: {e}"));
    drop(stdin);
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait: {e}"))
}

#[test]
fn a_teaching_program_reads_stdin_from_a_pipe() {
    // More than one 64-byte read, so the program loops over read (63) until end of input.
    let input: Vec<u8> = (0..300).map(|i| b'a' + (i % 26) as u8).collect();
    let out = sim_with_stdin(&["run", &fixture("cat")], &input);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, input);

    let traced = sim_with_stdin(&["trace", &fixture("cat"), "-p", "uprobe:main"], b"ls\n");
    assert_eq!(traced.status.code(), Some(0), "{}", stderr(&traced));
    let text = stdout(&traced);
    // The program's output stays whole among the streamed events.
    assert!(text.lines().any(|l| l == "ls"), "{text}");
    assert!(text.contains("hit main"), "{text}");
    assert!(text.contains("syscall read"), "{text}");
}

/// `elf` with the type of its symbol `name` set to `ty` (STT_NOTYPE 0, STT_OBJECT 1), as
/// an assembler leaves a label or a data object placed inside `.text`.
fn retype_symbol(elf: &[u8], name: &str, ty: u8) -> Vec<u8> {
    let word = |at: usize, n: usize| {
        (0..n)
            .rev()
            .fold(0u64, |v, i| (v << 8) | u64::from(elf[at + i])) as usize
    };
    let (shoff, shentsize, shnum) = (word(0x28, 8), word(0x3a, 2), word(0x3c, 2));
    let header = |i: usize| shoff + i * shentsize;
    let mut out = elf.to_vec();
    let mut found = 0;
    for i in (0..shnum).filter(|&i| word(header(i) + 4, 4) == 2) {
        let (off, size) = (word(header(i) + 0x18, 8), word(header(i) + 0x20, 8));
        let strtab = word(header(word(header(i) + 0x28, 4)) + 0x18, 8);
        for sym in (off..off + size).step_by(24) {
            let start = strtab + word(sym, 4);
            let end = start + elf[start..].iter().position(|&b| b == 0).unwrap_or(0);
            if &elf[start..end] == name.as_bytes() {
                out[sym + 4] = (elf[sym + 4] & 0xf0) | ty;
                found += 1;
            }
        }
    }
    assert_eq!(found, 1, "one symbol {name}");
    out
}

#[test]
fn labels_and_data_in_the_text_are_refused_unless_given_as_an_address() {
    let dir = std::env::temp_dir().join(format!("ruprobes-retype-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let elf = std::fs::read(fixture("fib")).unwrap_or_default();
    for (ty, what) in [
        (0, "a label (STT_NOTYPE)"),
        (1, "a data object (STT_OBJECT)"),
    ] {
        let path = dir.join(format!("fib{ty}.elf"));
        let _ = std::fs::write(&path, retype_symbol(&elf, "fib", ty));
        let path = path.display().to_string();
        for spec in ["uprobe:fib", "uretprobe:fib", "uprobe:fib+*"] {
            let message = format!(
                "probe '{spec}': 'fib' is {what}, not a function (probe it by address: 0x10014)"
            );
            assert_error(&sim(&["trace", &path, "-p", spec]), 1, &message);
            assert_error(&sim(&["trace", &path, "-l", spec]), 1, &message);
        }
        // The address still works, and wildcards pass over it.
        let o = sim(&["trace", &path, "-p", "uprobe:0x10014"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(
            stdout(&o).contains(" hit ") && stdout(&o).contains("pc=0x10014 a0=0xa"),
            "{}",
            stdout(&o)
        );
        let o = sim(&["trace", &path, "-l", "uretprobe:*"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(!stdout(&o).contains("0x10014"), "{}", stdout(&o));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_return_probe_on_every_function_probes_a_shared_address_once() {
    // fib.elf has two function symbols at 0x1064c (core's Display of u64 and of usize).
    let fib = fixture("fib");
    let shared = "0x1064c";
    let o = sim(&["trace", &fib, "-l", "uretprobe:*"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed = stdout(&o);
    assert_eq!(
        listed.lines().filter(|l| l.contains(shared)).count(),
        1,
        "{listed}"
    );
    let o = sim(&["trace", &fib, "-q", "-p", "uretprobe:*"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("uretprobe:* ") && l.contains(shared))
        .collect();
    assert_eq!(rows.len(), 1, "{table}");
    let o = sim(&["trace", &fib, "-q", "--json", "-p", "uretprobe:*"]);
    let out = stdout(&o);
    let summary: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap_or_default();
    let probes = summary["probes"].as_array().cloned().unwrap_or_default();
    assert!(probes.len() > 10, "{out}");
    let mut addrs: Vec<u64> = probes.iter().filter_map(|p| p["addr"].as_u64()).collect();
    assert_eq!(addrs.len(), probes.len());
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), probes.len(), "one probe per address: {out}");
    assert!(addrs.contains(&0x1064c));
}

#[test]
fn every_option_refuses_a_bad_value_with_one_error_line() {
    let fib = fixture("fib");
    let hello = fixture("hello");
    let trace = |extra: &[&str]| {
        let mut args = vec!["trace", fib.as_str(), "-p", "uprobe:fib"];
        args.extend_from_slice(extra);
        sim(&args)
    };
    assert_error(&trace(&["--tid", "x"]), 2, "--tid");
    assert_error(&trace(&["--max-events", "x"]), 2, "--max-events");
    assert_error(&trace(&["--max-events", "-1"]), 2, "-1");
    assert_error(&trace(&["--max-insns", "x"]), 2, "--max-insns");
    assert_error(&trace(&["--lhist", "0,10,0"]), 2, "STEP > 0");
    assert_error(&trace(&["--lhist", "1,2"]), 2, "expected MIN,MAX,STEP");
    assert_error(
        &trace(&["--hist", "--lhist", "0,10,1"]),
        2,
        "cannot be used with",
    );
    assert_error(&trace(&["-p"]), 2, "a value is required");
    assert_error(&trace(&["--output"]), 2, "a value is required");
    assert_error(&trace(&["--env", "NOEQUALS"]), 2, "KEY=VALUE");
    assert_error(&trace(&["--personality", "dos"]), 2, "dos");
    assert_error(&trace(&["--root", "no/such/dir"]), 1, "not a directory");
    assert_error(
        &sim(&["trace", &fib, "-l", "kprobe:fib"]),
        2,
        "bad probe spec 'kprobe:fib'",
    );
    assert_error(&sim(&["run", &fib, "--max-insns", "x"]), 2, "--max-insns");
    assert_error(&sim(&["run", &hello, "--personality", "dos"]), 2, "dos");
    assert_error(&sim(&["run", &hello, "--env", "NOEQUALS"]), 2, "KEY=VALUE");
    assert_error(
        &sim(&["run", &hello, "--root", "no/such/dir"]),
        1,
        "not a directory",
    );
    // A bad line in a specs file is a bad spec, named.
    let specs = std::env::temp_dir().join(format!("ruprobes-specs-{}.txt", std::process::id()));
    let _ = std::fs::write(&specs, "uprobe:fib\nbogus:spec\n");
    assert_error(
        &sim(&["trace", &fib, "--probes-from", &specs.display().to_string()]),
        2,
        "bad probe spec 'bogus:spec'",
    );
    let _ = std::fs::remove_file(&specs);
    // --list --json is one JSON document of the sites.
    let o = sim(&["trace", &fib, "-l", "uprobe:fib", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_default();
    assert_eq!(doc["sites"][0]["addr"], 0x10014, "{}", stdout(&o));
    assert_eq!(doc["sites"][0]["location"], "fib");
}

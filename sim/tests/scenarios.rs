//! Every canonical scenario renders in the block format, with a plausible trace: the probes
//! of the scenario fired, and the run ended the way the fixture manifest says.

use std::path::Path;

use ruprobes::decode::{decode, Class};
use ruprobes_sim::kernel::ExitStatus;
use ruprobes_sim::machine::{Config, Machine, FIXTURES_DIR};
use ruprobes_sim::scenario;
use ruprobes_trace::{SCENARIOS, SIGSEGV};

#[test]
fn every_scenario_renders_a_complete_block() {
    for s in SCENARIOS {
        let block = scenario::render(s).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        let lines: Vec<&str> = block.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some(format!("=== scenario {}", s.name).as_str())
        );
        assert_eq!(
            lines.last().copied(),
            Some(format!("=== end {}", s.name).as_str())
        );
        assert!(block.ends_with('\n'));
        let output_at = lines
            .iter()
            .position(|l| *l == "--- output")
            .unwrap_or_else(|| panic!("{}: no output", s.name));
        let trace = &lines[1..output_at];
        assert!(
            trace
                .iter()
                .any(|l| l.starts_with("pid 1 exit ") || l.starts_with("pid 1 killed ")),
            "{}: the first process ends in the trace",
            s.name
        );
        assert!(
            trace
                .iter()
                .any(|l| l.contains(" hit ") || l.contains(" ret ")),
            "{}: some probe fired: {trace:?}",
            s.name
        );
    }
}

#[test]
fn rendering_is_deterministic() {
    let fib = SCENARIOS.iter().find(|s| s.name == "fib_entry_return");
    let fib = fib.unwrap_or_else(|| panic!("fib_entry_return is a canonical scenario"));
    assert_eq!(scenario::render(fib).ok(), scenario::render(fib).ok());
}

#[test]
fn selecting_unknown_names_fails() {
    assert_eq!(
        scenario::select(&["nope".into()]).err(),
        Some("nope".to_string())
    );
    assert_eq!(
        scenario::select(&[]).map(|v| v.len()).ok(),
        Some(SCENARIOS.len())
    );
}

#[test]
fn a_fault_in_the_xol_slot_is_killed_at_the_probed_load() {
    let s = SCENARIOS.iter().find(|s| s.name == "xol_fault_fixup");
    let s = s.unwrap_or_else(|| panic!("xol_fault_fixup is a canonical scenario"));
    let path = Path::new(FIXTURES_DIR).join("xol_fault.elf");
    let elf = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut machine = Machine::new(Config::default());
    machine
        .load("xol_fault", &elf)
        .unwrap_or_else(|e| panic!("{e}"));
    let image = machine.main_image().unwrap_or_else(|| panic!("no image"));
    let load = image.symbols.resolve("fault_load");
    let load = load.unwrap_or_else(|| panic!("no symbol fault_load"));
    let insn = image.initial_bytes(load, 4).unwrap_or_default();
    assert_eq!(
        decode(&insn).ok().map(|i| i.class()),
        Some(Class::Xol),
        "fault_load starts with an instruction stepped out of line"
    );
    let result = scenario::run(s).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.status, ExitStatus::Killed(SIGSEGV));
    assert_eq!(
        result.trace.last().map(ToString::to_string),
        Some(format!("pid 1 killed SIGSEGV at fault_load pc={load:#x}")),
        "reported at the probed load, not in its slot"
    );
    assert!(
        result
            .diagnostics
            .iter()
            .any(|d| d.contains("faulted in XOL slot 0x3000")),
        "the fault did happen in the slot: {:?}",
        result.diagnostics
    );
}

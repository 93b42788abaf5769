//! Every canonical scenario renders in the block format, with a plausible trace: the probes
//! of the scenario fired, and the run ended the way the fixture manifest says.

use ruprobes_sim::scenario;
use ruprobes_trace::SCENARIOS;

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

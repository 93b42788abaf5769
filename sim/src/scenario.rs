//! The canonical scenarios of `ruprobes_trace::SCENARIOS`, rendered in the block format the
//! QEMU test kernel prints, so the two can be compared byte for byte:
//!
//! ```text
//! === scenario NAME
//! <one trace line per event>
//! --- output
//! <the program's output; a newline is added if it does not end with one>
//! === end NAME
//! ```
//!
//! Probes are registered in the listed order after the program is loaded and before its
//! first instruction; `SYM*` expands to every matching symbol in address order, skipping
//! those whose instruction cannot be probed.

use std::fmt::Write;
use std::path::Path;

use ruprobes_trace::Scenario;

use crate::error::SimError;
use crate::machine::{Config, Machine, RunResult, FIXTURES_DIR};

/// Runs one scenario in a fresh machine.
pub fn run(scenario: &Scenario) -> Result<RunResult, SimError> {
    let path = Path::new(FIXTURES_DIR).join(format!("{}.elf", scenario.fixture));
    let elf = std::fs::read(&path).map_err(|e| SimError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut machine = Machine::new(Config::default());
    machine.load(scenario.fixture, &elf)?;
    for spec in scenario.probes {
        machine.add_probes(spec)?;
    }
    machine.run()
}

/// Runs one scenario and renders its block.
pub fn render(scenario: &Scenario) -> Result<String, SimError> {
    Ok(block(scenario.name, &run(scenario)?))
}

/// The block of a finished run.
pub fn block(name: &str, result: &RunResult) -> String {
    let mut out = format!("=== scenario {name}\n");
    for event in &result.trace {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{event}");
    }
    out.push_str("--- output\n");
    out.push_str(&String::from_utf8_lossy(&result.stdout));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let _ = writeln!(out, "=== end {name}");
    out
}

/// The scenarios called `names` (all of them when empty), or the first unknown name.
pub fn select(names: &[String]) -> Result<Vec<&'static Scenario>, String> {
    if names.is_empty() {
        return Ok(ruprobes_trace::SCENARIOS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            ruprobes_trace::SCENARIOS
                .iter()
                .find(|s| s.name == n)
                .ok_or_else(|| n.clone())
        })
        .collect()
}

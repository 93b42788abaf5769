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

use ruprobes_trace::{BpfScenario, Scenario};

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
    machine.set_image_dir(Path::new(FIXTURES_DIR));
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

/// Where the committed BPF objects live.
pub const BPF_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/bpf");

/// Runs one eBPF scenario in a fresh machine and renders its block.
pub fn render_bpf(scenario: &BpfScenario) -> Result<String, SimError> {
    let read = |path: std::path::PathBuf| {
        std::fs::read(&path).map_err(|e| SimError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    };
    let elf = read(Path::new(FIXTURES_DIR).join(format!("{}.elf", scenario.fixture)))?;
    let object = read(Path::new(BPF_DIR).join(format!("{}.bpf.o", scenario.object)))?;
    let mut machine = Machine::new(Config::default());
    machine.load(scenario.fixture, &elf)?;
    let attached = machine.attach_bpf(&object, scenario.object)?;
    let result = machine.run()?;
    let summary = format!("--- bpf\n{}", attached.summary());
    Ok(block_with(scenario.name, &result, &summary))
}

/// The block of a finished run.
pub fn block(name: &str, result: &RunResult) -> String {
    block_with(name, result, "")
}

/// The block of a finished run, with `extra` lines between the trace and the output.
fn block_with(name: &str, result: &RunResult, extra: &str) -> String {
    let mut out = format!("=== scenario {name}\n");
    for event in &result.trace {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{event}");
    }
    out.push_str(extra);
    out.push_str("--- output\n");
    out.push_str(&String::from_utf8_lossy(&result.stdout));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let _ = writeln!(out, "=== end {name}");
    out
}

/// The eBPF scenarios called `names` (all of them when `names` is empty), skipping names
/// that are not eBPF scenarios.
pub fn select_bpf(names: &[String]) -> Vec<&'static BpfScenario> {
    ruprobes_trace::BPF_SCENARIOS
        .iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s.name))
        .collect()
}

/// The scenarios called `names` (all of them when empty; eBPF scenario names are skipped,
/// see [`select_bpf`]), or the first unknown name.
pub fn select(names: &[String]) -> Result<Vec<&'static Scenario>, String> {
    if names.is_empty() {
        return Ok(ruprobes_trace::SCENARIOS.iter().collect());
    }
    names
        .iter()
        .filter(|n| {
            !ruprobes_trace::BPF_SCENARIOS
                .iter()
                .any(|s| s.name == n.as_str())
        })
        .map(|n| {
            ruprobes_trace::SCENARIOS
                .iter()
                .find(|s| s.name == n)
                .ok_or_else(|| n.clone())
        })
        .collect()
}

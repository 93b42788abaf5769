//! Text traces of every canonical scenario (`ruprobes_trace::SCENARIOS`), rendered by the
//! simulator in the block format the QEMU test kernel prints, pinned as insta snapshots.
//!
//! Review a change with `cargo insta review` (or rerun with `INSTA_UPDATE=always` and read
//! the diff of `tests/snapshots/`); CI (`CI=true`) fails on any mismatch.

use ruprobes_sim::scenario;
use ruprobes_trace::SCENARIOS;

#[test]
fn every_scenario_has_a_snapshot() {
    assert!(SCENARIOS.len() >= 9, "the scenario list is complete");
    for s in SCENARIOS {
        let text = scenario::render(s).unwrap_or_else(|e| panic!("scenario {}: {e}", s.name));
        insta::assert_snapshot!(s.name, text);
    }
}

//! The summary of a traced run, printed however the run ended: the hit table, hits per
//! function, histograms, extra sections (e.g. BPF maps), kernel messages, what the probe
//! machinery cost, and how the run ended. Text for people, one JSON object for programs
//! (the last line of a JSON Lines trace).
//!
//! Tables size their columns to their content. Other parts of the simulator add sections
//! of their own with [`Summary::sections`].

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::attach::Site;
use crate::error::SimError;
use crate::kernel::ExitStatus;
use crate::machine::{Machine, ProbeCost};
use crate::probes::{Histogram, ProbeReport, ProbeRole};
use crate::trace::SinkCounts;

/// How a traced run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The first process exited or was killed.
    Finished(ExitStatus),
    /// SIGINT (Ctrl-C) stopped the run.
    Interrupted,
    /// The trace's writer went away (a closed pipe, as with `| head`).
    OutputClosed,
    /// `--max-events` events were written.
    MaxEvents(u64),
    /// The run failed (an exhausted `--max-insns` budget, a deadlock, ...).
    Failed(SimError),
}

impl Ending {
    /// The exit code of the command: the program's (128 + N if killed by signal N), 130
    /// for SIGINT and 141 (SIGPIPE) for a closed output like a shell reports them, 0 at
    /// the event limit, 1 for a failed run.
    pub fn exit_code(&self) -> u8 {
        match self {
            Ending::Finished(status) => status.shell_code() as u8,
            Ending::Interrupted => 130,
            Ending::OutputClosed => 141,
            Ending::MaxEvents(_) => 0,
            Ending::Failed(_) => 1,
        }
    }

    fn text(&self) -> String {
        match self {
            Ending::Finished(ExitStatus::Exited(code)) => format!("exit {code}"),
            Ending::Finished(ExitStatus::Killed(signal)) => {
                match ruprobes_trace::signal_name(*signal) {
                    Some(name) => format!("killed by {name}"),
                    None => format!("killed by signal {signal}"),
                }
            }
            Ending::Interrupted => "interrupted (SIGINT)".into(),
            Ending::OutputClosed => "output closed".into(),
            Ending::MaxEvents(n) => format!("stopped at --max-events {n}"),
            Ending::Failed(SimError::BudgetExhausted { .. }) => {
                "instruction budget exhausted".into()
            }
            Ending::Failed(e) => format!("stopped: {e}"),
        }
    }

    fn json(&self) -> Json {
        match self {
            Ending::Finished(status) => json!({ "how": "finished", "status": status }),
            Ending::Interrupted => json!({ "how": "interrupted" }),
            Ending::OutputClosed => json!({ "how": "output_closed" }),
            Ending::MaxEvents(n) => json!({ "how": "max_events", "max_events": n }),
            Ending::Failed(e) => json!({ "how": "failed", "error": e.to_string() }),
        }
    }
}

/// An extra part of the summary, from another part of the simulator.
#[derive(Clone, Debug)]
pub struct Section {
    /// Its title (the text header is `--- TITLE`; the JSON key).
    pub title: String,
    /// Its text lines.
    pub lines: Vec<String>,
    /// Its JSON form.
    pub json: Json,
}

/// The summary of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The program's name.
    pub program: String,
    /// How the run ended.
    pub ending: Ending,
    /// Instructions the programs executed (the machine's clock).
    pub instructions: u64,
    /// Every probe.
    pub probes: Vec<ProbeReport>,
    /// What the probe machinery cost.
    pub cost: ProbeCost,
    /// Events written and dropped.
    pub events: SinkCounts,
    /// Kernel messages.
    pub diagnostics: Vec<String>,
    /// Extra sections, printed after the histograms.
    pub sections: Vec<Section>,
}

impl Summary {
    /// The summary of `machine`'s run so far.
    pub fn of(machine: &Machine, program: &str, ending: Ending) -> Self {
        Summary {
            program: program.to_string(),
            ending,
            instructions: machine.instructions(),
            probes: machine.probe_reports(),
            cost: machine.probe_cost(),
            events: machine.trace_sink().counts(),
            diagnostics: machine.diagnostics().to_vec(),
            sections: Vec::new(),
        }
    }
}

/// Rows of cells printed with columns as wide as their widest cell; `right[i]` aligns
/// column `i` right.
fn write_table(out: &mut dyn Write, rows: &[Vec<String>], right: &[bool]) -> io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = widths[c].saturating_sub(cell.chars().count());
            if right.get(c).copied().unwrap_or(false) {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if c + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Sites and hits of entry probes per function, for functions probed at several sites.
fn per_function(probes: &[ProbeReport]) -> BTreeMap<String, (u64, u64)> {
    let mut functions: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for p in probes.iter().filter(|p| p.role == ProbeRole::Entry) {
        // Counters belong to the address: count each address once.
        if !seen.insert((p.path.as_str(), p.addr)) {
            continue;
        }
        let name = p.function.clone().unwrap_or_else(|| "?".into());
        let entry = functions.entry(name).or_default();
        entry.0 += 1;
        entry.1 += p.stats.hits;
    }
    functions
}

fn write_histogram(out: &mut dyn Write, histogram: &Histogram) -> io::Result<()> {
    if histogram.count() == 0 {
        return writeln!(out, "(no values)");
    }
    let max = histogram.buckets.iter().copied().max().unwrap_or(1).max(1);
    let first = histogram.buckets.iter().position(|&c| c > 0).unwrap_or(0);
    let rows: Vec<Vec<String>> = histogram
        .buckets
        .iter()
        .enumerate()
        .skip(first)
        .map(|(i, &count)| {
            let (lo, hi) = histogram.range(i);
            let range = match (lo, hi) {
                (lo, hi) if hi == lo + 1 => format!("[{lo}]"),
                (lo, u64::MAX) => format!("[{lo}, ...)"),
                (lo, hi) => format!("[{lo}, {hi})"),
            };
            let bar = "@".repeat(((count * 40).div_ceil(max)) as usize);
            vec![range, count.to_string(), format!("|{bar:<40}|")]
        })
        .collect();
    write_table(out, &rows, &[false, true, false])
}

/// Writes the text summary.
pub fn write_text(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    writeln!(out, "--- probes")?;
    let mut rows = vec![vec![
        "SPEC".to_string(),
        "ADDRESS".into(),
        "LOCATION".into(),
        "HITS".into(),
        "RETURNS".into(),
        "MISSED".into(),
    ]];
    for p in &s.probes {
        // Counters belong to the address; returns only mean something for return probes.
        let (returns, missed) = match p.role {
            ProbeRole::Entry => ("-".to_string(), "-".to_string()),
            _ => (p.stats.returns.to_string(), p.stats.missed.to_string()),
        };
        rows.push(vec![
            p.spec.clone(),
            format!("{:#x}", p.addr),
            p.location.clone(),
            p.stats.hits.to_string(),
            returns,
            missed,
        ]);
    }
    write_table(out, &rows, &[false, false, false, true, true, true])?;
    let functions = per_function(&s.probes);
    if functions.values().any(|&(sites, _)| sites > 1) {
        writeln!(out, "--- hits per function")?;
        let mut rows = vec![vec!["FUNCTION".to_string(), "SITES".into(), "HITS".into()]];
        rows.extend(
            functions
                .iter()
                .map(|(f, (sites, hits))| vec![f.clone(), sites.to_string(), hits.to_string()]),
        );
        write_table(out, &rows, &[false, true, true])?;
    }
    for p in &s.probes {
        if let Some(histogram) = &p.latency {
            writeln!(
                out,
                "--- latency of {} at {} (instructions, entry to return)",
                p.spec, p.location
            )?;
            write_histogram(out, histogram)?;
        }
        if let (Some(histogram), Some(label)) = (&p.values, &p.value_label) {
            writeln!(out, "--- values of {label} of {} at {}", p.spec, p.location)?;
            write_histogram(out, histogram)?;
        }
    }
    for section in &s.sections {
        writeln!(out, "--- {}", section.title)?;
        for line in &section.lines {
            writeln!(out, "{line}")?;
        }
    }
    for line in &s.diagnostics {
        writeln!(out, "--- kernel: {line}")?;
    }
    let c = &s.cost;
    let per_trap = c.host_ns.checked_div(c.traps).unwrap_or(0);
    writeln!(
        out,
        "--- probe machinery: {} traps, {} probed instructions run in the trap, {:.3} ms host time ({per_trap} ns per trap); {} events written, {} dropped",
        c.traps,
        c.executed_in_trap,
        c.host_ns as f64 / 1e6,
        s.events.written,
        s.events.dropped
    )?;
    writeln!(
        out,
        "--- {} after {} instructions",
        s.ending.text(),
        s.instructions
    )
}

fn histogram_json(h: &Histogram) -> Json {
    let buckets: Vec<Json> = h
        .buckets
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(i, &count)| {
            let (lo, hi) = h.range(i);
            json!({ "lo": lo, "hi": hi, "count": count })
        })
        .collect();
    Json::Array(buckets)
}

fn probe_json(p: &ProbeReport) -> Json {
    let mut object = json!({
        "spec": p.spec,
        "path": p.path,
        "addr": p.addr,
        "location": p.location,
        "role": p.role,
        "hits": p.stats.hits,
    });
    // Returns belong to return probes: an entry probe at the same address has none.
    if p.role != ProbeRole::Entry {
        object["returns"] = json!(p.stats.returns);
        object["missed"] = json!(p.stats.missed);
    }
    if let Some(h) = &p.latency {
        object["latency_histogram"] = histogram_json(h);
    }
    if let (Some(h), Some(label)) = (&p.values, &p.value_label) {
        object["value_label"] = json!(label);
        object["value_histogram"] = histogram_json(h);
    }
    object
}

/// The summary as one JSON object (`"event": "summary"`).
pub fn to_json(s: &Summary) -> Json {
    let functions: Vec<Json> = per_function(&s.probes)
        .into_iter()
        .map(|(f, (sites, hits))| json!({ "function": f, "sites": sites, "hits": hits }))
        .collect();
    let sections: serde_json::Map<String, Json> = s
        .sections
        .iter()
        .map(|sec| (sec.title.clone(), sec.json.clone()))
        .collect();
    let exit_code = match &s.ending {
        Ending::Finished(status) => Some(status.shell_code()),
        _ => None,
    };
    json!({
        "event": "summary",
        "program": s.program,
        "ending": s.ending.json(),
        "exit_code": exit_code,
        "instructions": s.instructions,
        "probes": s.probes.iter().map(probe_json).collect::<Vec<_>>(),
        "functions": functions,
        "sections": sections,
        "probe_cost": s.cost,
        "events": s.events,
        "diagnostics": s.diagnostics,
    })
}

/// Writes the summary as one JSON line.
pub fn write_json(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &to_json(s))?;
    writeln!(out)
}

/// Writes the sites a spec names (`--list`), with what a probe on each costs.
pub fn write_sites(out: &mut dyn Write, sites: &[Site], is_return: bool) -> io::Result<()> {
    let mut rows = vec![vec![
        "ADDRESS".to_string(),
        "LOCATION".into(),
        "INSN".into(),
        "CLASS".into(),
        "TRAPS".into(),
    ]];
    let mut counts = [0usize; 4];
    for site in sites {
        use crate::attach::SiteClass;
        let (class, i) = match &site.class {
            SiteClass::Simulated => ("simulated".to_string(), 0),
            SiteClass::Emulated => ("emulated".to_string(), 1),
            SiteClass::OutOfLine => ("out of line".to_string(), 2),
            SiteClass::Refused(why) => (format!("refused: {why}"), 3),
        };
        counts[i] += 1;
        // A return probe adds the trap of the return trampoline.
        let traps = site
            .class
            .traps()
            .map_or_else(|| "-".into(), |t| (t + u64::from(is_return)).to_string());
        rows.push(vec![
            format!("{:#x}", site.addr),
            site.location.clone(),
            site.insn.clone(),
            class,
            traps,
        ]);
    }
    write_table(out, &rows, &[false, false, false, false, true])?;
    writeln!(
        out,
        "--- {} sites: {} simulated, {} emulated, {} out of line, {} refused",
        sites.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    )
}

/// The serialisable form of a site list (`--list --json`).
#[derive(Serialize)]
pub struct SiteList<'a> {
    /// The sites.
    pub sites: &'a [Site],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_fit_their_content() {
        let rows = vec![
            vec!["SPEC".to_string(), "HITS".into()],
            vec!["uprobe:a_very_long_symbol_name".into(), "1".into()],
            vec!["u:x".into(), "12345".into()],
        ];
        let mut out = Vec::new();
        write_table(&mut out, &rows, &[false, true]).unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "SPEC                             HITS\n\
             uprobe:a_very_long_symbol_name      1\n\
             u:x                             12345\n"
        );
    }
}

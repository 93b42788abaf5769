//! Fixture programs as simulator workloads, for the `sim` benchmarks and `cargo xtask perf`:
//! where the probe sites of a program are, which function is the hottest, and machines
//! loaded with do-nothing probes (so what is measured is the probe machinery, not a tracer).

use std::path::Path;

use ruprobes::decode::{decode, insn_len, Class};
use ruprobes::Consumer;
use ruprobes_sim::kernel::image::Image;
use ruprobes_sim::machine::{Config, Machine, ProbeId, FIXTURES_DIR};
use ruprobes_sim::SimError;

/// The bytes of the committed fixture `name` (`fixtures/bin/NAME.elf`).
pub fn fixture_elf(name: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(Path::new(FIXTURES_DIR).join(format!("{name}.elf")))
}

/// The fixture names, in the order of `fixtures/bin/MANIFEST`, except the benchmarks (kind
/// `bench`), which are measured on their own.
pub fn fixture_names() -> std::io::Result<Vec<String>> {
    let manifest = std::fs::read_to_string(Path::new(FIXTURES_DIR).join("MANIFEST"))?;
    Ok(manifest
        .lines()
        .filter(|line| line.split_whitespace().nth(3) != Some("bench"))
        .filter_map(|line| line.split_whitespace().next())
        .map(String::from)
        .collect())
}

/// A function of a program: a sized `STT_FUNC` symbol.
#[derive(Clone, Debug)]
pub struct Function {
    /// Its name.
    pub name: String,
    /// Its entry.
    pub addr: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// The functions of `image`, in address order, one per address.
pub fn functions(image: &Image) -> Vec<Function> {
    let mut out: Vec<Function> = Vec::new();
    for sym in image
        .symbols
        .symbols()
        .iter()
        .filter(|s| s.is_func && s.size > 0)
    {
        if out.last().is_some_and(|f| f.addr == sym.addr) {
            continue; // the table lists the winning symbol of an address first
        }
        out.push(Function {
            name: sym.name.to_string(),
            addr: sym.addr,
            size: sym.size,
        });
    }
    out
}

/// One instruction of a program that the core accepts as a probe site.
#[derive(Clone, Copy, Debug)]
pub struct Site {
    /// Its address.
    pub addr: u64,
    /// How the core executes it.
    pub class: Class,
}

/// The instruction starts of every function, found by decoding from the function symbols.
#[derive(Clone, Debug, Default)]
pub struct Sites {
    /// The instructions the core accepts.
    pub accepted: Vec<Site>,
    /// Instructions the core rejects (ecall, csr*, lr/sc, …) or cannot decode.
    pub rejected: usize,
}

/// Decodes every function of `image` from its entry.
pub fn sites(image: &Image) -> Sites {
    let mut sites = Sites::default();
    for f in functions(image) {
        let mut addr = f.addr;
        while addr < f.addr + f.size {
            let parcel = image
                .initial_bytes(addr, 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]));
            let Some(len) = parcel.and_then(insn_len) else {
                sites.rejected += 1;
                addr += 2;
                continue;
            };
            match image.initial_bytes(addr, len).map(|bytes| decode(&bytes)) {
                Some(Ok(insn)) => sites.accepted.push(Site {
                    addr,
                    class: insn.class(),
                }),
                _ => sites.rejected += 1,
            }
            addr += len as u64;
        }
    }
    sites
}

/// A quiet machine with the fixture `name` loaded.
pub fn machine(name: &str, elf: &[u8]) -> Result<Machine, SimError> {
    let mut m = Machine::new(Config::default());
    m.set_image_dir(std::path::Path::new(ruprobes_sim::machine::FIXTURES_DIR));
    m.load(name, elf)?;
    Ok(m)
}

/// What a do-nothing probe observes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Entry and post handlers (a `uprobe`).
    Entry,
    /// An entry handler only (a `uprobe` traced without `--post`).
    EntryOnly,
    /// A return handler (a `uretprobe`).
    Return,
}

fn consumer(kind: Kind) -> Consumer {
    match kind {
        Kind::Entry => Consumer::new().on_entry(|_, _| {}).on_post(|_, _| {}),
        Kind::EntryOnly => Consumer::new().on_entry(|_, _| {}),
        Kind::Return => Consumer::new().on_return(|_, _| {}),
    }
}

/// Adds a do-nothing probe of `kind` at each address; addresses the core refuses are
/// skipped. Returns the probes added and the number skipped.
pub fn add_probes(
    m: &mut Machine,
    addrs: impl IntoIterator<Item = u64>,
    kind: Kind,
) -> (Vec<ProbeId>, usize) {
    let (mut ids, mut skipped) = (Vec::new(), 0);
    for addr in addrs {
        match m.register(addr, consumer(kind)) {
            Ok(id) => ids.push(id),
            Err(_) => skipped += 1,
        }
    }
    (ids, skipped)
}

/// Total hits of some probes of a finished run.
pub fn hits(m: &Machine, ids: &[ProbeId]) -> u64 {
    ids.iter()
        .filter_map(|&id| m.stats(id))
        .map(|s| s.hits)
        .sum()
}

/// The most-called function of the fixture (the one with the most entries in one run) and
/// its number of calls.
pub fn hottest_function(name: &str, elf: &[u8]) -> Result<(Function, u64), SimError> {
    let mut m = machine(name, elf)?;
    let image = m.main_image().cloned().ok_or(SimError::NoProcess)?;
    let mut counted = Vec::new();
    for f in functions(&image) {
        if let (ids, 0) = add_probes(&mut m, [f.addr], Kind::Entry) {
            counted.push((f, ids));
        }
    }
    m.run()?;
    counted
        .into_iter()
        .map(|(f, ids)| {
            let calls = hits(&m, &ids);
            (f, calls)
        })
        .max_by_key(|(f, calls)| (*calls, std::cmp::Reverse(f.addr)))
        .ok_or(SimError::Unavailable(
            "a program without sized function symbols",
        ))
}

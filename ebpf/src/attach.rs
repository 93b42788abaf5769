//! Where a program attaches, from its ELF section name: libbpf's `uprobe/SYM`,
//! `uprobe/SYM+OFF` and `uretprobe/SYM`, or a seed tracepoint name (`uprobe_syncfunc/SYM`,
//! `uretprobe_insn@exit/SYM+OFF`, ... see [`TracepointType::name`]).

use alloc::string::{String, ToString};
use ruprobes::bpf::TracepointType;

/// An attach point: a tracepoint kind at `symbol + offset` of the traced program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attach {
    /// The tracepoint kind (the context's `ptype` follows from it).
    pub kind: TracepointType,
    /// The function symbol.
    pub symbol: String,
    /// Bytes into the function.
    pub offset: u64,
}

impl Attach {
    /// Parses a section name; `None` if it is not a uprobe section.
    pub fn parse(section: &str) -> Option<Attach> {
        let (prefix, target) = section.split_once('/')?;
        let (symbol, offset) = match target.split_once('+') {
            Some((symbol, off)) => (symbol, parse_offset(off)?),
            None => (target, 0),
        };
        if symbol.is_empty() || symbol.contains(['/', ' ']) {
            return None;
        }
        let kind = match prefix {
            "uprobe" if offset == 0 => TracepointType::UProbeSyncFunc,
            "uprobe" => TracepointType::UProbeInsn,
            "uretprobe" if offset == 0 => TracepointType::URetProbeExitSyncFunc,
            "uretprobe" => return None,
            other => TracepointType::from_name(other)?,
        };
        // A function tracepoint is at the function's first instruction.
        if kind.ptype() == 0 && offset != 0 {
            return None;
        }
        Some(Attach {
            kind,
            symbol: symbol.to_string(),
            offset,
        })
    }

    /// Whether the program runs when the function returns (uretprobe) or after the probed
    /// instruction (`uretprobe_insn@exit`), not at the hit.
    pub fn is_exit(&self) -> bool {
        matches!(
            self.kind,
            TracepointType::URetProbeExitInsn | TracepointType::URetProbeExitSyncFunc
        )
    }
}

fn parse_offset(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach(kind: TracepointType, symbol: &str, offset: u64) -> Option<Attach> {
        Some(Attach {
            kind,
            symbol: symbol.to_string(),
            offset,
        })
    }

    #[test]
    fn libbpf_and_seed_names() {
        use TracepointType::*;
        assert_eq!(
            Attach::parse("uprobe/fib"),
            attach(UProbeSyncFunc, "fib", 0)
        );
        assert_eq!(
            Attach::parse("uprobe/main+8"),
            attach(UProbeInsn, "main", 8)
        );
        assert_eq!(
            Attach::parse("uprobe/main+0x10"),
            attach(UProbeInsn, "main", 16)
        );
        assert_eq!(
            Attach::parse("uretprobe/fib"),
            attach(URetProbeExitSyncFunc, "fib", 0)
        );
        assert_eq!(
            Attach::parse("uretprobe_syncfunc@exit/fib"),
            attach(URetProbeExitSyncFunc, "fib", 0)
        );
        assert_eq!(
            Attach::parse("uretprobe_insn@exit/main+4"),
            attach(URetProbeExitInsn, "main", 4)
        );
        assert_eq!(
            Attach::parse("UPROBE_INSN/main"),
            attach(UProbeInsn, "main", 0)
        );
        for bad in [
            "kprobe/fib",
            "uprobe",
            "uprobe/",
            "uretprobe/fib+4",
            "uprobe_syncfunc/fib+4",
            "uprobe/fib+zz",
            ".text",
        ] {
            assert_eq!(Attach::parse(bad), None, "{bad}");
        }
    }
}

//! Probe specs in the bpftrace style: `uprobe:SYMBOL[+OFF]`, `uprobe:0xADDR`,
//! `uretprobe:SYMBOL`, `uretprobe:0xADDR`.

use core::fmt;

/// Entry (with post-step) or return probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// `uprobe:` — entry handler before, post handler after the probed instruction.
    Entry,
    /// `uretprobe:` — return handler when the function at the address returns.
    Return,
}

/// Where a probe goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A function symbol plus a byte offset.
    Symbol(&'a str, u64),
    /// An absolute virtual address.
    Addr(u64),
}

/// A parsed probe spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSpec<'a> {
    /// Entry or return.
    pub kind: ProbeKind,
    /// Where.
    pub target: Target<'a>,
}

/// Why a probe spec does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecError {
    /// The part before `:` is not `uprobe` or `uretprobe`.
    UnknownKind,
    /// Nothing after the `:`.
    MissingTarget,
    /// An address or offset is not a number.
    BadNumber,
    /// `uretprobe:` takes a function, not a function plus offset.
    OffsetOnReturn,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecError::UnknownKind => "expected uprobe:TARGET or uretprobe:TARGET",
            SpecError::MissingTarget => "missing the symbol or address after ':'",
            SpecError::BadNumber => "bad number (use decimal or 0x-prefixed hex)",
            SpecError::OffsetOnReturn => "a uretprobe goes on a function entry, without +OFFSET",
        })
    }
}

fn parse_number(s: &str) -> Result<u64, SpecError> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| SpecError::BadNumber)
}

impl<'a> ProbeSpec<'a> {
    /// Parses one spec.
    pub fn parse(spec: &'a str) -> Result<Self, SpecError> {
        let (kind, rest) = spec.split_once(':').ok_or(SpecError::UnknownKind)?;
        let kind = match kind {
            "uprobe" | "u" => ProbeKind::Entry,
            "uretprobe" | "ur" => ProbeKind::Return,
            _ => return Err(SpecError::UnknownKind),
        };
        if rest.is_empty() {
            return Err(SpecError::MissingTarget);
        }
        let target = if rest.as_bytes()[0].is_ascii_digit() {
            Target::Addr(parse_number(rest)?)
        } else {
            match rest.split_once('+') {
                Some((name, off)) if !name.is_empty() => Target::Symbol(name, parse_number(off)?),
                Some(_) => return Err(SpecError::MissingTarget),
                None => Target::Symbol(rest, 0),
            }
        };
        if kind == ProbeKind::Return && matches!(target, Target::Symbol(_, off) if off != 0) {
            return Err(SpecError::OffsetOnReturn);
        }
        Ok(ProbeSpec { kind, target })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let p = |s| ProbeSpec::parse(s);
        assert_eq!(
            p("uprobe:fib"),
            Ok(ProbeSpec {
                kind: ProbeKind::Entry,
                target: Target::Symbol("fib", 0)
            })
        );
        assert_eq!(
            p("uprobe:main+8"),
            Ok(ProbeSpec {
                kind: ProbeKind::Entry,
                target: Target::Symbol("main", 8)
            })
        );
        assert_eq!(
            p("uprobe:main+0x10"),
            Ok(ProbeSpec {
                kind: ProbeKind::Entry,
                target: Target::Symbol("main", 16)
            })
        );
        assert_eq!(
            p("uprobe:0x10074"),
            Ok(ProbeSpec {
                kind: ProbeKind::Entry,
                target: Target::Addr(0x10074)
            })
        );
        assert_eq!(
            p("uretprobe:fib"),
            Ok(ProbeSpec {
                kind: ProbeKind::Return,
                target: Target::Symbol("fib", 0)
            })
        );
        assert_eq!(p("kprobe:fib"), Err(SpecError::UnknownKind));
        assert_eq!(p("fib"), Err(SpecError::UnknownKind));
        assert_eq!(p("uprobe:"), Err(SpecError::MissingTarget));
        assert_eq!(p("uprobe:+4"), Err(SpecError::MissingTarget));
        assert_eq!(p("uprobe:0xzz"), Err(SpecError::BadNumber));
        assert_eq!(p("uprobe:main+x"), Err(SpecError::BadNumber));
        assert_eq!(p("uretprobe:main+4"), Err(SpecError::OffsetOnReturn));
    }
}

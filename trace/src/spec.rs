//! Probe specs, bpftrace style with tracefs fetch arguments:
//!
//! ```text
//! KIND:[PROG:]TARGET [FETCH ...]
//! KIND    uprobe (u) | uretprobe (ur)
//! TARGET  SYM | SYM+OFF | SYM* (every symbol with the prefix) | SYM+* (every instruction of
//!         SYM; *+* every instruction of every function) | 0xADDR | 0xLO-0xHI (every
//!         instruction in [LO, HI))
//! FETCH   [NAME=]SOURCE[:TYPE]
//! SOURCE  %REG (ABI name: %a0, %sp, %ra, %t0, %s1, ...) | $retval (uretprobe) |
//!         [+|-]OFF(%REG) (memory at REG + OFF)
//! TYPE    u8 u16 u32 u64 s8 s16 s32 s64 x8 x16 x32 x64 (default) string
//! ```
//!
//! `PROG` names the program a probe is for (the file stem), for programs that are exec'd;
//! without it, the main program.

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
    /// A function symbol plus a byte offset (a name ending in `*` is a prefix).
    Symbol(&'a str, u64),
    /// Every instruction of a function (`SYM+*`; a name ending in `*` is a prefix).
    EveryInsn(&'a str),
    /// An absolute virtual address.
    Addr(u64),
    /// Every instruction in `[lo, hi)`.
    Range(u64, u64),
}

/// A parsed probe spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSpec<'a> {
    /// Entry or return.
    pub kind: ProbeKind,
    /// The program the probe is for (`None`: the main program).
    pub prog: Option<&'a str>,
    /// Where.
    pub target: Target<'a>,
    /// The fetch arguments, unparsed (see [`ProbeSpec::fetch_args`]); checked by `parse`.
    pub args: &'a str,
}

/// Where a fetch argument's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A register (x0..x31).
    Reg(u8),
    /// The return value (a0 at the return of a uretprobe).
    Retval,
    /// Memory at a register plus an offset.
    Mem {
        /// The base register.
        base: u8,
        /// The byte offset.
        off: i64,
    },
}

/// How a fetched value is read and printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchType {
    /// Unsigned decimal of this many bytes.
    Unsigned(u8),
    /// Signed decimal of this many bytes.
    Signed(u8),
    /// Hexadecimal of this many bytes.
    Hex(u8),
    /// A NUL-terminated string at the address the source gives.
    Str,
}

/// One fetch argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchArg<'a> {
    /// Its label in the trace: `NAME` of `NAME=...`, else the source as written.
    pub label: &'a str,
    /// Where the value comes from.
    pub source: Source,
    /// How it is read and printed.
    pub ty: FetchType,
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
    /// A range whose end is not above its start.
    EmptyRange,
    /// A fetch argument that is not `%REG`, `$retval` or `OFF(%REG)`.
    BadFetch,
    /// An unknown register name.
    BadRegister,
    /// An unknown type after `:`.
    BadType,
    /// `$retval` on an entry probe.
    RetvalOnEntry,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecError::UnknownKind => "expected uprobe:TARGET or uretprobe:TARGET",
            SpecError::MissingTarget => "missing the symbol or address after ':'",
            SpecError::BadNumber => "bad number (use decimal or 0x-prefixed hex)",
            SpecError::OffsetOnReturn => {
                "a uretprobe goes on a function entry, without +OFFSET or a range"
            }
            SpecError::EmptyRange => "the range's end must be above its start",
            SpecError::BadFetch => "bad fetch argument (use %REG, $retval or OFF(%REG))",
            SpecError::BadRegister => "unknown register (use ABI names: %a0, %sp, %ra, ...)",
            SpecError::BadType => "unknown type (use u8..u64, s8..s64, x8..x64 or string)",
            SpecError::RetvalOnEntry => "$retval needs a uretprobe",
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

/// The ABI register names, by number.
const REGS: [&str; 32] = [
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4",
    "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4",
    "t5", "t6",
];

fn parse_reg(s: &str) -> Result<u8, SpecError> {
    let name = s.strip_prefix('%').ok_or(SpecError::BadFetch)?;
    if name == "fp" {
        return Ok(8);
    }
    if let Some(n) = name.strip_prefix('x').and_then(|n| n.parse::<u8>().ok()) {
        return if n < 32 {
            Ok(n)
        } else {
            Err(SpecError::BadRegister)
        };
    }
    REGS.iter()
        .position(|&r| r == name)
        .map(|n| n as u8)
        .ok_or(SpecError::BadRegister)
}

fn parse_type(s: &str) -> Result<FetchType, SpecError> {
    if s == "string" {
        return Ok(FetchType::Str);
    }
    let (make, bits): (fn(u8) -> FetchType, &str) = match s.split_at_checked(1) {
        Some(("u", bits)) => (FetchType::Unsigned, bits),
        Some(("s", bits)) => (FetchType::Signed, bits),
        Some(("x", bits)) => (FetchType::Hex, bits),
        _ => return Err(SpecError::BadType),
    };
    match bits {
        "8" => Ok(make(1)),
        "16" => Ok(make(2)),
        "32" => Ok(make(4)),
        "64" => Ok(make(8)),
        _ => Err(SpecError::BadType),
    }
}

impl<'a> FetchArg<'a> {
    /// Parses one fetch argument.
    pub fn parse(text: &'a str) -> Result<Self, SpecError> {
        let (label, rest) = match text.split_once('=') {
            Some((name, rest)) if !name.is_empty() => (Some(name), rest),
            Some(_) => return Err(SpecError::BadFetch),
            None => (None, text),
        };
        // A type suffix follows the last ':' (none of the sources contains one).
        let (source_text, ty) = match rest.rsplit_once(':') {
            Some((source, ty)) => (source, parse_type(ty)?),
            None => (rest, FetchType::Hex(8)),
        };
        let source = if source_text == "$retval" {
            Source::Retval
        } else if source_text.starts_with('%') {
            Source::Reg(parse_reg(source_text)?)
        } else if let Some((off, reg)) = source_text
            .strip_suffix(')')
            .and_then(|s| s.split_once('('))
        {
            let (negative, digits) = match off.as_bytes().first() {
                Some(b'-') => (true, &off[1..]),
                Some(b'+') => (false, &off[1..]),
                _ => (false, off),
            };
            let magnitude = if digits.is_empty() {
                0
            } else {
                parse_number(digits)?
            };
            let off = i64::try_from(magnitude).map_err(|_| SpecError::BadNumber)?;
            Source::Mem {
                base: parse_reg(reg)?,
                off: if negative { -off } else { off },
            }
        } else {
            return Err(SpecError::BadFetch);
        };
        Ok(FetchArg {
            label: label.unwrap_or(source_text),
            source,
            ty,
        })
    }
}

impl<'a> ProbeSpec<'a> {
    /// Parses one spec, fetch arguments included.
    pub fn parse(spec: &'a str) -> Result<Self, SpecError> {
        let spec = spec.trim();
        let (head, args) = spec
            .split_once(char::is_whitespace)
            .map_or((spec, ""), |(h, a)| (h, a.trim_start()));
        let (kind, rest) = head.split_once(':').ok_or(SpecError::UnknownKind)?;
        let kind = match kind {
            "uprobe" | "u" => ProbeKind::Entry,
            "uretprobe" | "ur" => ProbeKind::Return,
            _ => return Err(SpecError::UnknownKind),
        };
        let (prog, rest) = match rest.split_once(':') {
            Some((prog, rest)) if !prog.is_empty() => (Some(prog), rest),
            Some(_) => return Err(SpecError::MissingTarget),
            None => (None, rest),
        };
        if rest.is_empty() {
            return Err(SpecError::MissingTarget);
        }
        let target = if rest.as_bytes()[0].is_ascii_digit() {
            match rest.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse_number(lo)?, parse_number(hi)?);
                    if hi <= lo {
                        return Err(SpecError::EmptyRange);
                    }
                    Target::Range(lo, hi)
                }
                None => Target::Addr(parse_number(rest)?),
            }
        } else {
            match rest.split_once('+') {
                Some((name, "*")) if !name.is_empty() => Target::EveryInsn(name),
                Some((name, off)) if !name.is_empty() => Target::Symbol(name, parse_number(off)?),
                Some(_) => return Err(SpecError::MissingTarget),
                None => Target::Symbol(rest, 0),
            }
        };
        let whole_function = matches!(target, Target::Symbol(_, 0) | Target::Addr(_));
        if kind == ProbeKind::Return && !whole_function {
            return Err(SpecError::OffsetOnReturn);
        }
        let parsed = ProbeSpec {
            kind,
            prog,
            target,
            args,
        };
        for arg in parsed.fetch_args() {
            if arg?.source == Source::Retval && kind == ProbeKind::Entry {
                return Err(SpecError::RetvalOnEntry);
            }
        }
        Ok(parsed)
    }

    /// The fetch arguments, in order.
    pub fn fetch_args(&self) -> impl Iterator<Item = Result<FetchArg<'a>, SpecError>> + 'a {
        self.args.split_whitespace().map(FetchArg::parse)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn spec(kind: ProbeKind, target: Target<'_>) -> ProbeSpec<'_> {
        ProbeSpec {
            kind,
            prog: None,
            target,
            args: "",
        }
    }

    #[test]
    fn parses_every_form() {
        use ProbeKind::{Entry, Return};
        let p = |s| ProbeSpec::parse(s);
        assert_eq!(p("uprobe:fib"), Ok(spec(Entry, Target::Symbol("fib", 0))));
        assert_eq!(
            p("uprobe:main+8"),
            Ok(spec(Entry, Target::Symbol("main", 8)))
        );
        assert_eq!(
            p("uprobe:main+0x10"),
            Ok(spec(Entry, Target::Symbol("main", 16)))
        );
        assert_eq!(p("uprobe:0x10074"), Ok(spec(Entry, Target::Addr(0x10074))));
        assert_eq!(
            p("uretprobe:fib"),
            Ok(spec(Return, Target::Symbol("fib", 0)))
        );
        assert_eq!(
            p("uprobe:crc16+*"),
            Ok(spec(Entry, Target::EveryInsn("crc16")))
        );
        assert_eq!(p("uprobe:*+*"), Ok(spec(Entry, Target::EveryInsn("*"))));
        assert_eq!(
            p("uprobe:0x10000-0x10400"),
            Ok(spec(Entry, Target::Range(0x10000, 0x10400)))
        );
        assert_eq!(
            p("uprobe:hello:main"),
            Ok(ProbeSpec {
                prog: Some("hello"),
                ..spec(Entry, Target::Symbol("main", 0))
            })
        );
        assert_eq!(p("kprobe:fib"), Err(SpecError::UnknownKind));
        assert_eq!(p("fib"), Err(SpecError::UnknownKind));
        assert_eq!(p("uprobe:"), Err(SpecError::MissingTarget));
        assert_eq!(p("uprobe::fib"), Err(SpecError::MissingTarget));
        assert_eq!(p("uprobe:+4"), Err(SpecError::MissingTarget));
        assert_eq!(p("uprobe:0xzz"), Err(SpecError::BadNumber));
        assert_eq!(p("uprobe:main+x"), Err(SpecError::BadNumber));
        assert_eq!(p("uretprobe:main+4"), Err(SpecError::OffsetOnReturn));
        assert_eq!(p("uretprobe:main+*"), Err(SpecError::OffsetOnReturn));
        assert_eq!(p("uprobe:0x20-0x10"), Err(SpecError::EmptyRange));
    }

    #[test]
    fn parses_fetch_arguments() {
        let s = ProbeSpec::parse("uprobe:fib %a0 n=%a1:s32 +8(%sp):u8 -16(%s0):string %x5")
            .unwrap_or_else(|e| panic!("{e}"));
        let args: Result<Vec<_>, _> = s.fetch_args().collect();
        let args = args.unwrap_or_default();
        assert_eq!(
            args,
            [
                FetchArg {
                    label: "%a0",
                    source: Source::Reg(10),
                    ty: FetchType::Hex(8)
                },
                FetchArg {
                    label: "n",
                    source: Source::Reg(11),
                    ty: FetchType::Signed(4)
                },
                FetchArg {
                    label: "+8(%sp)",
                    source: Source::Mem { base: 2, off: 8 },
                    ty: FetchType::Unsigned(1)
                },
                FetchArg {
                    label: "-16(%s0)",
                    source: Source::Mem { base: 8, off: -16 },
                    ty: FetchType::Str
                },
                FetchArg {
                    label: "%x5",
                    source: Source::Reg(5),
                    ty: FetchType::Hex(8)
                },
            ]
        );
        let r = ProbeSpec::parse("uretprobe:fib $retval:u64").map(|s| s.fetch_args().count());
        assert_eq!(r, Ok(1));
        let p = |s| ProbeSpec::parse(s).map(|_| ());
        assert_eq!(p("uprobe:fib $retval"), Err(SpecError::RetvalOnEntry));
        assert_eq!(p("uprobe:fib a0"), Err(SpecError::BadFetch));
        assert_eq!(p("uprobe:fib %q9"), Err(SpecError::BadRegister));
        assert_eq!(p("uprobe:fib %x32"), Err(SpecError::BadRegister));
        assert_eq!(p("uprobe:fib %a0:u12"), Err(SpecError::BadType));
        assert_eq!(p("uprobe:fib 8(%sp"), Err(SpecError::BadFetch));
        assert_eq!(p("uprobe:fib =%a0"), Err(SpecError::BadFetch));
        assert_eq!(p("uprobe:fib 0xq(%sp)"), Err(SpecError::BadNumber));
    }
}

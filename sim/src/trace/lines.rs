//! The text and JSON lines of events pushed whole (not as [`super::SiteEvent`]s), written
//! into buffers kept from event to event.
//!
//! With a probe on every instruction, writing the events is most of a traced run's cost, and
//! most of that was `core::fmt` and serde (a formatter per field, padding logic, a virtual
//! call per fragment). The three events of hits (hit, post, return) are therefore written
//! here by hand, in both forms, on a buffer that lives as long as the sink, and the line goes
//! to the writer in one piece; every other event, every fetched value but plain numbers, and
//! symbol names that are very long or that JSON escapes take the formatting path of the
//! shared event crate. The bytes are those of [`Display`](std::fmt::Display) and serde,
//! which the tests below check. [`Buf`] also writes the numbers of site lines
//! ([`super::sites`]).

use std::io::{self, Write};
use std::sync::Arc;

use ruprobes_trace::Event;

use super::{Loc, TraceEvent, Value};

/// Where lines are built, kept from event to event.
pub(super) struct Lines {
    /// The line of a hit, post or return event without fetched values: built in place,
    /// never cleared (only its first bytes are the line).
    scratch: Box<[u8; Buf::SIZE]>,
    /// Any other line.
    spill: Vec<u8>,
}

impl Lines {
    pub(super) fn new() -> Self {
        Lines {
            scratch: Box::new([0; Buf::SIZE]),
            spill: Vec::new(),
        }
    }

    /// The text line of `event` and its fetched values, newline included.
    pub(super) fn text(&mut self, event: &TraceEvent, fetched: &[(Arc<str>, Value)]) -> &[u8] {
        let mut buf = Buf::new(&mut self.scratch[..]);
        let fast = buf.event(event);
        if fast && fetched.is_empty() {
            buf.put(b"\n");
            let len = buf.len;
            return &self.scratch[..len];
        }
        let line = &mut self.spill;
        line.clear();
        if fast {
            line.extend_from_slice(buf.line());
        } else {
            // Writing into a Vec cannot fail.
            drop(write!(line, "{event}"));
        }
        for (label, value) in fetched {
            line.push(b' ');
            line.extend_from_slice(label.as_bytes());
            line.push(b'=');
            buf.len = 0;
            match value {
                Value::Unsigned(v) => buf.decimal(*v),
                Value::Hex(v) => buf.hex(*v),
                other => drop(write!(line, "{other}")),
            }
            line.extend_from_slice(buf.line());
        }
        line.push(b'\n');
        line
    }

    /// The JSON line of `event` (the serde form of [`Event`], with a `fetch` object when
    /// values were fetched), newline included.
    pub(super) fn json(
        &mut self,
        event: &TraceEvent,
        fetched: &[(Arc<str>, Value)],
    ) -> io::Result<&[u8]> {
        let mut buf = Buf::new(&mut self.scratch[..]);
        if fetched.is_empty() && buf.json_event(event) {
            buf.put(b"\n");
            let len = buf.len;
            return Ok(&self.scratch[..len]);
        }
        let line = &mut self.spill;
        line.clear();
        if fetched.is_empty() {
            serde_json::to_writer(&mut *line, event)?;
        } else {
            let mut object = serde_json::to_value(event)?;
            let values: serde_json::Map<String, serde_json::Value> = fetched
                .iter()
                .map(|(label, value)| {
                    let v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
                    (label.to_string(), v)
                })
                .collect();
            object["fetch"] = serde_json::Value::Object(values);
            serde_json::to_writer(&mut *line, &object)?;
        }
        line.push(b'\n');
        Ok(line)
    }
}

/// A line built in place (on the sink's scratch buffer or in the writer's buffer):
/// fixed-size copies instead of a capacity check and a copy call per piece.
pub(super) struct Buf<'a> {
    bytes: &'a mut [u8],
    pub(super) len: usize,
}

impl<'a> Buf<'a> {
    /// The room a line needs.
    pub(super) const SIZE: usize = 512;
    /// Room for a hit, post or return line but its symbol name: `pid P tid T hit `,
    /// `+0xOFF`, three ` NAME=0xVALUE` and the newline come to at most 140 bytes, and
    /// [`hex`](Self::hex) writes up to 7 bytes past its digits.
    const FIXED: usize = 176;
    /// The same for the JSON line: at most 190 bytes with five 20-digit numbers.
    const JSON_FIXED: usize = 224;

    /// A line at the start of `bytes` (at least [`Buf::SIZE`] of them).
    pub(super) fn new(bytes: &'a mut [u8]) -> Self {
        debug_assert!(bytes.len() >= Self::SIZE);
        Buf { bytes, len: 0 }
    }

    fn line(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Writes a hit, post or return event; `false` for other events and for symbol names
    /// too long for the buffer.
    fn event(&mut self, event: &TraceEvent) -> bool {
        match event {
            Event::Hit { pid, tid, at, args } if Self::fits(at) => {
                self.who(*pid, *tid);
                self.put(b" hit ");
                self.location(at);
                self.put(b" pc=");
                self.hex(at.addr);
                self.put(b" a0=");
                self.hex(args[0]);
                self.put(b" a1=");
                self.hex(args[1]);
            }
            Event::Post { pid, tid, at, next } if Self::fits(at) => {
                self.who(*pid, *tid);
                self.put(b" post ");
                self.location(at);
                self.put(b" next=");
                self.hex(*next);
            }
            Event::Return {
                pid,
                tid,
                func,
                value,
            } if Self::fits(func) => {
                self.who(*pid, *tid);
                self.put(b" ret ");
                self.location(func);
                self.put(b" a0=");
                self.hex(*value);
            }
            _ => return false,
        }
        true
    }

    /// Whether an event at `at` fits (symbol names are not bounded).
    fn fits(at: &Loc) -> bool {
        at.symbol.as_ref().map_or(0, |(name, _)| name.len()) + Self::FIXED <= Self::SIZE
    }

    /// Writes the JSON object of a hit, post or return event (the serde form of
    /// [`Event`]); `false` (nothing written) for other events, and for symbol names too
    /// long for the buffer or with a character JSON escapes.
    fn json_event(&mut self, event: &TraceEvent) -> bool {
        let (kind, pid, tid, at) = match event {
            Event::Hit { pid, tid, at, .. } => (&b"hit"[..], pid, tid, at),
            Event::Post { pid, tid, at, .. } => (&b"post"[..], pid, tid, at),
            Event::Return { pid, tid, func, .. } => (&b"return"[..], pid, tid, func),
            _ => return false,
        };
        let plain = at.symbol.as_ref().is_none_or(|(name, _)| {
            name.len() + Self::JSON_FIXED <= Self::SIZE
                && name
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        });
        if !plain {
            return false;
        }
        self.put(b"{\"event\":\"");
        self.put(kind);
        self.put(b"\",\"pid\":");
        self.decimal(*pid);
        self.put(b",\"tid\":");
        self.decimal(*tid);
        self.put(if matches!(event, Event::Return { .. }) {
            b",\"func\":{\"addr\":"
        } else {
            b",\"at\":{\"addr\":"
        });
        self.decimal(at.addr);
        match &at.symbol {
            Some((name, off)) => {
                self.put(b",\"symbol\":[\"");
                self.put(name.as_bytes());
                self.put(b"\",");
                self.decimal(*off);
                self.put(b"]}");
            }
            None => self.put(b",\"symbol\":null}"),
        }
        match event {
            Event::Hit { args, .. } => {
                self.put(b",\"args\":[");
                self.decimal(args[0]);
                self.put(b",");
                self.decimal(args[1]);
                self.put(b"]}");
            }
            Event::Post { next, .. } => {
                self.put(b",\"next\":");
                self.decimal(*next);
                self.put(b"}");
            }
            Event::Return { value, .. } => {
                self.put(b",\"value\":");
                self.decimal(*value);
                self.put(b"}");
            }
            _ => {}
        }
        true
    }

    pub(super) fn put(&mut self, s: &[u8]) {
        self.bytes[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }

    /// `pid P`, or `pid P tid T` for a thread other than the process's first.
    fn who(&mut self, pid: u64, tid: u64) {
        self.put(b"pid ");
        self.decimal(pid);
        if tid != pid {
            self.put(b" tid ");
            self.decimal(tid);
        }
    }

    /// `name`, `name+0xOFF`, or `0xADDR` without a symbol.
    fn location(&mut self, at: &Loc) {
        match &at.symbol {
            Some((name, off)) => {
                self.put(name.as_bytes());
                if *off != 0 {
                    self.put(b"+");
                    self.hex(*off);
                }
            }
            None => self.hex(at.addr),
        }
    }

    /// `{v:#x}`: 8 digits at a time (each nibble spread into a byte, then made ASCII),
    /// shifted so that the significant ones come first, written as 8-byte blocks.
    #[inline(always)]
    pub(super) fn hex(&mut self, v: u64) {
        let digits = (16 - v.leading_zeros() as usize / 4).max(1);
        self.put(b"0x");
        let at = self.len;
        let low = ascii_nibbles(v as u32);
        if digits <= 8 {
            let block = (low << (8 * (8 - digits))).to_be_bytes();
            self.bytes[at..at + 8].copy_from_slice(&block);
        } else {
            let high = ascii_nibbles((v >> 32) as u32) << (8 * (16 - digits));
            self.bytes[at..at + 8].copy_from_slice(&high.to_be_bytes());
            let at = at + digits - 8;
            self.bytes[at..at + 8].copy_from_slice(&low.to_be_bytes());
        }
        self.len += digits;
    }

    /// `{v}`.
    pub(super) fn decimal(&mut self, v: u64) {
        if v < 10 {
            return self.put(&[b'0' + v as u8]);
        }
        let mut digits = [0u8; 20];
        let (mut v, mut i) = (v, digits.len());
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }
}

/// The 8 hex digits of `x` as ASCII bytes, the most significant in the highest byte.
fn ascii_nibbles(x: u32) -> u64 {
    let mut n = u64::from(x);
    n = (n | (n << 16)) & 0x0000_ffff_0000_ffff;
    n = (n | (n << 8)) & 0x00ff_00ff_00ff_00ff;
    n = (n | (n << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // Byte i holds nibble i; 10..15 need 'a' - '0' - 10 = 39 more than 0..9.
    let letters = ((n + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    n + 0x3030_3030_3030_3030 + letters * 39
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const NUMBERS: [u64; 12] = [
        0,
        1,
        9,
        10,
        0xf,
        0x10,
        0x10074,
        0x3fff_ffe0,
        0x0123_4567_89ab_cdef,
        0xfedc_ba98_7654_3210,
        u64::MAX - 1,
        u64::MAX,
    ];

    pub(in crate::trace) fn locations() -> Vec<Loc> {
        let mut out = vec![];
        for addr in NUMBERS {
            out.push(Loc { addr, symbol: None });
            for off in NUMBERS {
                out.push(Loc {
                    addr,
                    symbol: Some((Arc::from("crc16"), off)),
                });
            }
            out.push(Loc {
                addr,
                symbol: Some((Arc::from("_ZN2rt3Rng5below17h291815577419b326E"), 4)),
            });
            // JSON escapes these.
            out.push(Loc {
                addr,
                symbol: Some((Arc::from("a\"b\\c\u{1}d"), 2)),
            });
            out.push(Loc {
                addr,
                symbol: Some((Arc::from("größe"), 0)),
            });
            // Too long for the line on the stack: the Display path.
            out.push(Loc {
                addr,
                symbol: Some((Arc::from("x".repeat(Buf::SIZE).as_str()), addr)),
            });
            // Just fitting, and just not, in either form.
            for len in [
                Buf::SIZE - Buf::FIXED,
                Buf::SIZE - Buf::FIXED + 1,
                Buf::SIZE - Buf::JSON_FIXED,
                Buf::SIZE - Buf::JSON_FIXED + 1,
            ] {
                out.push(Loc {
                    addr,
                    symbol: Some((Arc::from("y".repeat(len).as_str()), u64::MAX)),
                });
            }
        }
        out
    }

    /// Every event kind over edge numbers, with and without a thread id.
    pub(in crate::trace) fn events() -> Vec<TraceEvent> {
        let mut out = vec![];
        for at in locations() {
            for (pid, tid) in [(1, 1), (1, 2), (0, u64::MAX), (12345, 12345)] {
                for v in NUMBERS {
                    out.push(Event::Hit {
                        pid,
                        tid,
                        at: at.clone(),
                        args: [v, u64::MAX - v],
                    });
                    out.push(Event::Post {
                        pid,
                        tid,
                        at: at.clone(),
                        next: v,
                    });
                    out.push(Event::Return {
                        pid,
                        tid,
                        func: at.clone(),
                        value: v,
                    });
                }
            }
            out.push(Event::Killed {
                pid: 3,
                signal: 5,
                at: at.clone(),
            });
        }
        out.push(Event::Syscall { pid: 1, nr: 64 });
        out.push(Event::Syscall { pid: 1, nr: 9999 });
        out.push(Event::Exit { pid: 1, code: -1 });
        out.push(Event::Print {
            pid: 1,
            text: Arc::from("greet \"ann\"\n"),
        });
        out
    }

    fn fetched() -> Vec<(Arc<str>, Value)> {
        let mut out: Vec<(Arc<str>, Value)> = vec![];
        for v in NUMBERS {
            out.push((Arc::from("n"), Value::Unsigned(v)));
            out.push((Arc::from("%a0"), Value::Hex(v)));
            out.push((Arc::from("+8(%sp)"), Value::Signed(v as i64)));
            out.push((Arc::from("f"), Value::Fault(v)));
        }
        out.push((Arc::from("s"), Value::Str("a \"quoted\"\tstring".into())));
        out
    }

    #[test]
    fn text_lines_are_the_display_form() {
        let fetched = fetched();
        // One sink's buffers for every line too: nothing of a longer line is left.
        let mut shared = Lines::new();
        for event in &events() {
            let expected = format!("{event}\n");
            let line = shared.text(event, &[]);
            assert_eq!(String::from_utf8_lossy(line), expected);
        }
        for event in events() {
            for values in [&fetched[..0], &fetched[..]] {
                let mut expected = event.to_string();
                for (label, value) in values {
                    expected.push_str(&format!(" {label}={value}"));
                }
                expected.push('\n');
                let mut lines = Lines::new();
                let line = lines.text(&event, values);
                assert_eq!(String::from_utf8_lossy(line), expected);
                // Again on the same buffers: nothing of the previous line is left.
                let again = lines.text(&event, values).to_vec();
                assert_eq!(String::from_utf8_lossy(&again), expected);
            }
        }
    }

    #[test]
    fn json_lines_are_the_serde_form() {
        for event in events() {
            let mut lines = Lines::new();
            let expected = serde_json::to_string(&event).unwrap_or_default() + "\n";
            for _ in 0..2 {
                let line = lines
                    .json(&event, &[])
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                assert_eq!(String::from_utf8_lossy(&line), expected);
            }
        }
    }
}

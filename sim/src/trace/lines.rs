//! The text and JSON lines of trace events, written into a reused buffer.
//!
//! With a probe on every instruction, writing the events is most of a traced run's cost, and
//! most of that was `core::fmt` (a formatter per field, padding logic, a virtual call per
//! fragment). The three events of hits (hit, post, return) are therefore written here by
//! hand, digit by digit, and the line goes to the writer in one piece; every other event,
//! and every fetched value but plain numbers, takes the formatting path of the shared event
//! crate. The bytes are those of [`Display`](std::fmt::Display) and serde, which the tests
//! below check.

use std::io::{self, Write};
use std::sync::Arc;

use ruprobes_trace::Event;

use super::{Loc, TraceEvent, Value};

/// Appends the text line of `event` and its fetched values, newline included.
pub(super) fn text(line: &mut Vec<u8>, event: &TraceEvent, fetched: &[(Arc<str>, Value)]) {
    match event {
        Event::Hit { pid, tid, at, args } => {
            who(line, *pid, *tid);
            line.extend_from_slice(b" hit ");
            location(line, at);
            line.extend_from_slice(b" pc=");
            hex(line, at.addr);
            line.extend_from_slice(b" a0=");
            hex(line, args[0]);
            line.extend_from_slice(b" a1=");
            hex(line, args[1]);
        }
        Event::Post { pid, tid, at, next } => {
            who(line, *pid, *tid);
            line.extend_from_slice(b" post ");
            location(line, at);
            line.extend_from_slice(b" next=");
            hex(line, *next);
        }
        Event::Return {
            pid,
            tid,
            func,
            value,
        } => {
            who(line, *pid, *tid);
            line.extend_from_slice(b" ret ");
            location(line, func);
            line.extend_from_slice(b" a0=");
            hex(line, *value);
        }
        // Writing into a Vec cannot fail.
        other => drop(write!(line, "{other}")),
    }
    for (label, value) in fetched {
        line.push(b' ');
        line.extend_from_slice(label.as_bytes());
        line.push(b'=');
        match value {
            Value::Unsigned(v) => decimal(line, *v),
            Value::Hex(v) => hex(line, *v),
            other => drop(write!(line, "{other}")),
        }
    }
    line.push(b'\n');
}

/// Appends the JSON line of `event` (the serde form of [`Event`], with a `fetch` object
/// when values were fetched), newline included.
pub(super) fn json(
    line: &mut Vec<u8>,
    event: &TraceEvent,
    fetched: &[(Arc<str>, Value)],
) -> io::Result<()> {
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
    Ok(())
}

/// `pid P`, or `pid P tid T` for a thread other than the process's first.
fn who(line: &mut Vec<u8>, pid: u64, tid: u64) {
    line.extend_from_slice(b"pid ");
    decimal(line, pid);
    if tid != pid {
        line.extend_from_slice(b" tid ");
        decimal(line, tid);
    }
}

/// `name`, `name+0xOFF`, or `0xADDR` without a symbol.
fn location(line: &mut Vec<u8>, at: &Loc) {
    match &at.symbol {
        Some((name, off)) => {
            line.extend_from_slice(name.as_bytes());
            if *off != 0 {
                line.push(b'+');
                hex(line, *off);
            }
        }
        None => hex(line, at.addr),
    }
}

/// `{v:#x}`.
fn hex(line: &mut Vec<u8>, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    line.extend_from_slice(b"0x");
    line.extend_from_slice(&buf[i..]);
}

/// `{v}`.
fn decimal(line: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    line.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMBERS: [u64; 9] = [0, 1, 9, 10, 0xf, 0x10, 0x10074, u64::MAX - 1, u64::MAX];

    fn locations() -> Vec<Loc> {
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
        }
        out
    }

    /// Every event kind over edge numbers, with and without a thread id.
    fn events() -> Vec<TraceEvent> {
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
        for event in events() {
            for values in [&fetched[..0], &fetched[..]] {
                let mut expected = event.to_string();
                for (label, value) in values {
                    expected.push_str(&format!(" {label}={value}"));
                }
                expected.push('\n');
                let mut line = Vec::new();
                text(&mut line, &event, values);
                assert_eq!(String::from_utf8_lossy(&line), expected);
            }
        }
    }

    #[test]
    fn json_lines_are_the_serde_form() {
        for event in events() {
            let mut line = Vec::new();
            assert!(json(&mut line, &event, &[]).is_ok());
            let expected = serde_json::to_string(&event).unwrap_or_default() + "\n";
            assert_eq!(String::from_utf8_lossy(&line), expected);
        }
    }
}

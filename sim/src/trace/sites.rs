//! Probe sites: locations registered with a sink once, so that the hit, post and return
//! events of a probe need neither carry (clone) their location nor be built as an
//! [`Event`] to be written.
//!
//! A site also keeps the fixed start of its recent lines, per event kind: everything up to
//! the last varying field (`pid P hit LOC pc=0xADDR a0=`, `pid P post LOC next=`,
//! `pid P ret LOC a0=`, and the JSON objects up to `"args":[`, `"next":`, `"value":`),
//! for the thread that wrote it last. With a probe on every instruction the same few
//! (site, thread) pairs come back millions of times; their line is then one fixed-size copy
//! and one or two numbers, written straight into the writer's buffer. The prefix is cut
//! from the line that [`Display`](std::fmt::Display) or serde writes for the event, so it
//! is theirs byte for byte. Memory grows with the number of probes, never with hits.

use std::io;

use ruprobes_trace::Event;

use super::lines::Buf;
use super::out::Out;
use super::{Format, Loc, TraceEvent};

/// A site of a sink ([`TraceSink::site`](super::TraceSink::site)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SiteId(usize);

/// The events of a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SiteKind {
    /// A hit: `values` are a0 and a1.
    Hit = 0,
    /// After the probed instruction: `values[0]` is the next pc.
    Post = 1,
    /// A return of the probed function: `values[0]` is a0.
    Return = 2,
}

/// A hit, post or return event at a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SiteEvent {
    pub(crate) site: SiteId,
    pub(crate) kind: SiteKind,
    pub(crate) pid: u64,
    pub(crate) tid: u64,
    pub(crate) values: [u64; 2],
}

/// The sites of a sink.
#[derive(Default)]
pub(super) struct Sites {
    sites: Vec<Site>,
}

struct Site {
    at: Loc,
    /// One per [`SiteKind`].
    prefixes: [Prefix; 3],
}

/// The start of a line of one thread at a site, in one format.
struct Prefix {
    /// What it was written for; `None`: nothing yet.
    key: Option<(Format, u64, u64)>,
    /// The first `len` bytes are the prefix, when it fits; copied whole.
    text: [u8; Prefix::SIZE],
    len: usize,
}

impl Prefix {
    /// The longest prefix kept; longer ones (long names) are written with the event.
    const SIZE: usize = 192;
    /// Prefixes up to this long are copied as this many bytes.
    const SHORT: usize = 64;

    const EMPTY: Prefix = Prefix {
        key: None,
        text: [0; Prefix::SIZE],
        len: 0,
    };
}

impl Sites {
    pub(super) fn add(&mut self, at: Loc) -> SiteId {
        self.sites.push(Site {
            at,
            prefixes: [Prefix::EMPTY, Prefix::EMPTY, Prefix::EMPTY],
        });
        SiteId(self.sites.len() - 1)
    }

    /// The event as an [`Event`] (its location cloned).
    pub(super) fn event(&self, e: &SiteEvent) -> TraceEvent {
        let at = self.sites[e.site.0].at.clone();
        let (pid, tid) = (e.pid, e.tid);
        match e.kind {
            SiteKind::Hit => Event::Hit {
                pid,
                tid,
                at,
                args: e.values,
            },
            SiteKind::Post => Event::Post {
                pid,
                tid,
                at,
                next: e.values[0],
            },
            SiteKind::Return => Event::Return {
                pid,
                tid,
                func: at,
                value: e.values[0],
            },
        }
    }

    /// Writes the line of `e` into `out`: its prefix (written first if this thread did
    /// not write the last one), then its numbers. `Ok(false)`, nothing written, when the
    /// prefix is too long to keep.
    #[inline]
    pub(super) fn write(
        &mut self,
        out: &mut Out,
        format: Format,
        e: &SiteEvent,
    ) -> io::Result<bool> {
        let key = Some((format, e.pid, e.tid));
        let index = e.site.0;
        let prefix = &self.sites[index].prefixes[e.kind as usize];
        if prefix.key != key {
            let line = self.line_with_zeros(format, e);
            let site = &mut self.sites[index];
            let prefix = &mut site.prefixes[e.kind as usize];
            let len = line.len() - tail(format, e.kind).len();
            debug_assert_eq!(&line[len..], tail(format, e.kind));
            if len <= Prefix::SIZE {
                prefix.text[..len].copy_from_slice(&line[..len]);
            }
            prefix.len = len;
            prefix.key = key;
        }
        let prefix = &self.sites[index].prefixes[e.kind as usize];
        if prefix.len > Prefix::SIZE {
            return Ok(false);
        }
        let room = out.room()?;
        let mut line = Buf::new(room);
        // Short prefixes (most text ones) in a copy short enough to be inlined.
        match prefix.len <= Prefix::SHORT {
            true => line.put(&prefix.text[..Prefix::SHORT]),
            false => line.put(&prefix.text),
        }
        line.len = prefix.len;
        let [v0, v1] = e.values;
        match (format, e.kind) {
            (Format::Text, SiteKind::Hit) => {
                line.hex(v0);
                line.put(b" a1=");
                line.hex(v1);
            }
            (Format::Text, _) => line.hex(v0),
            (Format::Json, SiteKind::Hit) => {
                line.decimal(v0);
                line.put(b",");
                line.decimal(v1);
                line.put(b"]}");
            }
            (Format::Json, _) => {
                line.decimal(v0);
                line.put(b"}");
            }
        }
        line.put(b"\n");
        let len = line.len;
        out.advance(len);
        Ok(true)
    }

    /// The whole line of `e` with its numbers 0, without the newline, as `Display` or
    /// serde writes it.
    #[cold]
    fn line_with_zeros(&self, format: Format, e: &SiteEvent) -> Vec<u8> {
        let event = self.event(&SiteEvent {
            values: [0, 0],
            ..*e
        });
        match format {
            Format::Text => event.to_string().into_bytes(),
            // Serialising an event into a Vec cannot fail.
            Format::Json => serde_json::to_vec(&event).unwrap_or_default(),
        }
    }
}

/// What follows the prefix in the line of a zero event.
fn tail(format: Format, kind: SiteKind) -> &'static [u8] {
    match (format, kind) {
        (Format::Text, SiteKind::Hit) => b"0x0 a1=0x0",
        (Format::Text, _) => b"0x0",
        (Format::Json, SiteKind::Hit) => b"0,0]}",
        (Format::Json, _) => b"0}",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::lines::tests::{events, locations};
    use super::super::lines::Lines;
    use super::super::tests::Shared;
    use super::*;

    /// The event of a site at `at`, if it is a hit, post or return.
    fn site_event(sites: &[(Loc, SiteId)], event: &TraceEvent) -> Option<SiteEvent> {
        let (kind, pid, tid, at, values) = match event {
            Event::Hit { pid, tid, at, args } => (SiteKind::Hit, pid, tid, at, *args),
            Event::Post { pid, tid, at, next } => (SiteKind::Post, pid, tid, at, [*next, 0]),
            Event::Return {
                pid,
                tid,
                func,
                value,
            } => (SiteKind::Return, pid, tid, func, [*value, 0]),
            _ => return None,
        };
        let site = sites.iter().find(|(loc, _)| loc == at)?.1;
        Some(SiteEvent {
            site,
            kind,
            pid: *pid,
            tid: *tid,
            values,
        })
    }

    #[test]
    fn site_lines_are_the_display_and_serde_forms() {
        let mut sites = Sites::default();
        let ids: Vec<(Loc, SiteId)> = locations()
            .into_iter()
            .map(|loc| (loc.clone(), sites.add(loc)))
            .collect();
        for format in [Format::Text, Format::Json] {
            let shared = Shared::default();
            let mut out = Out::new(Box::new(shared.clone()));
            let mut lines = Lines::new();
            let mut expected = Vec::new();
            let (mut prefixed, mut all) = (0, 0);
            // Twice: the second time every kept prefix is there (but for the thread that
            // was written last at each site and kind).
            for event in events().iter().chain(&events()) {
                let Some(e) = site_event(&ids, event) else {
                    continue;
                };
                assert_eq!(&sites.event(&e), event);
                all += 1;
                let line = match format {
                    Format::Text => format!("{event}\n"),
                    Format::Json => serde_json::to_string(event).unwrap_or_default() + "\n",
                };
                expected.extend_from_slice(line.as_bytes());
                match sites.write(&mut out, format, &e) {
                    Ok(true) => prefixed += 1,
                    Ok(false) => {
                        let line = match format {
                            Format::Text => lines.text(event, &[]),
                            Format::Json => lines.json(event, &[]).unwrap_or_default(),
                        };
                        assert!(out.write_all(line).is_ok());
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(
                prefixed * 4 > all * 3,
                "most lines have a prefix: {prefixed} of {all}"
            );
            drop(out);
            let written = shared.bytes();
            let (written, expected) = (
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&expected),
            );
            for (a, b) in written.lines().zip(expected.lines()) {
                assert_eq!(a, b);
            }
            assert_eq!(written, expected);
        }
    }
}

//! The simulator's trace events and where they go.
//!
//! An event is the shared [`ruprobes_trace::Event`] with shared (`Arc<str>`) symbol names, so
//! it outlives the image whose symbols it names. Its text form is the QEMU test kernel's,
//! byte for byte; it serialises as JSON. Probes that fetch arguments add named values after
//! it ([`Fetched`]): ` name=value` in text, a `"fetch"` object in JSON.
//!
//! A [`TraceSink`] either collects events (the library default: [`RunResult::trace`]) or
//! streams them to a writer as they happen ([`TraceSink::streaming`]: text lines or JSON
//! Lines), so that a run's memory does not grow with its events. A streaming sink filters by
//! process, stops accepting events after a limit, and notices a writer that went away (a
//! closed pipe): it stops writing and says so ([`TraceSink::closed`]) so the run can end.
//!
//! [`RunResult::trace`]: crate::machine::RunResult::trace

mod lines;
mod out;
mod sites;

pub(crate) use sites::{SiteEvent, SiteId, SiteKind};

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ruprobes_trace::{Event, Location};
use serde::Serialize;

/// A code address with the symbol it falls in.
pub type Loc = Location<Arc<str>>;

/// One event of a traced run.
pub type TraceEvent = Event<Arc<str>>;

/// The longest partial line of program output held back before it is written anyway.
const MAX_PARTIAL: usize = 4096;

/// A value a probe fetched (a register, memory, a string), typed as the spec asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// Unsigned, printed in decimal.
    Unsigned(u64),
    /// Signed, printed in decimal.
    Signed(i64),
    /// Printed in hex.
    Hex(#[serde(serialize_with = "hex")] u64),
    /// A NUL-terminated string (lossy UTF-8).
    Str(String),
    /// The memory could not be read.
    Fault(#[serde(serialize_with = "fault")] u64),
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

fn fault<S: serde::Serializer>(addr: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("(fault at {addr:#x})"))
}

impl Value {
    /// The value as a number for histograms (strings and faults have none).
    pub fn number(&self) -> Option<u64> {
        match *self {
            Value::Unsigned(v) | Value::Hex(v) => Some(v),
            Value::Signed(v) => Some(v as u64),
            Value::Str(_) | Value::Fault(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Unsigned(v) => write!(f, "{v}"),
            Value::Signed(v) => write!(f, "{v}"),
            Value::Hex(v) => write!(f, "{v:#x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Fault(addr) => write!(f, "(fault@{addr:#x})"),
        }
    }
}

/// The fetched values of one event, in spec order: (label, value).
pub type Fetched = Vec<(Arc<str>, Value)>;

/// How a streaming sink writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One text line per event (the program's output inline when it shares the writer).
    Text,
    /// JSON Lines: one object per event (the program's output as `output` objects).
    Json,
}

/// What a streaming sink accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only events of this process.
    pub pid: Option<u64>,
    /// At most this many events; the run should stop at the limit ([`TraceSink::full`]).
    pub max_events: Option<u64>,
    /// Write no event at all (`--quiet`): counters and histograms still count.
    pub quiet: bool,
}

/// Event counts of a sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkCounts {
    /// Events accepted (written, or collected).
    pub written: u64,
    /// Events not written: other processes, `--quiet`, beyond the limit, after the writer
    /// closed.
    pub dropped: u64,
}

enum Target {
    Collect(Vec<TraceEvent>),
    Stream {
        out: out::Out,
        format: Format,
        /// The program's output goes to this writer too (text to the same stream).
        inline_output: bool,
        /// Program output after its last newline, held back (text) so that events do not
        /// split its lines.
        partial: Vec<u8>,
        /// Where event lines are built, reused from event to event.
        lines: Box<lines::Lines>,
    },
}

struct Inner {
    target: Target,
    filter: Filter,
    counts: SinkCounts,
    /// The writer failed (e.g. EPIPE): nothing more is written to it.
    closed: bool,
    /// The probe sites whose events are pushed as [`SiteEvent`]s.
    sites: sites::Sites,
}

impl Inner {
    /// Whether an event of `pid` is written (or collected); counts it either way.
    #[inline]
    fn accept(&mut self, pid: u64) -> bool {
        let full = self
            .filter
            .max_events
            .is_some_and(|max| self.counts.written >= max);
        let other = self.filter.pid.is_some_and(|p| p != pid);
        if self.filter.quiet || full || other || self.closed {
            self.counts.dropped += 1;
            return false;
        }
        self.counts.written += 1;
        true
    }
}

/// The shared, ordered event log of one machine. Probe handlers (which the engine calls
/// with no access to the machine) and the kernel both append to it.
#[derive(Clone)]
pub struct TraceSink {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// `--quiet`: every event is dropped, counted in `quiet_dropped` without the lock.
    quiet: AtomicBool,
    quiet_dropped: AtomicU64,
}

impl Default for TraceSink {
    fn default() -> Self {
        Self::with(Target::Collect(Vec::new()), Filter::default())
    }
}

impl fmt::Debug for TraceSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceSink")
            .field("counts", &self.counts())
            .finish()
    }
}

impl TraceSink {
    fn with(target: Target, filter: Filter) -> Self {
        TraceSink {
            shared: Arc::new(Shared {
                quiet: AtomicBool::new(filter.quiet),
                quiet_dropped: AtomicU64::new(0),
                inner: Mutex::new(Inner {
                    target,
                    filter,
                    counts: SinkCounts::default(),
                    closed: false,
                    sites: sites::Sites::default(),
                }),
            }),
        }
    }

    /// A sink that writes every event to `out` as it happens (see [`stream_to`]).
    ///
    /// [`stream_to`]: Self::stream_to
    pub fn streaming(
        out: Box<dyn Write + Send>,
        format: Format,
        filter: Filter,
        inline_output: bool,
    ) -> Self {
        let sink = Self::default();
        sink.stream_to(out, format, filter, inline_output);
        sink
    }

    /// From now on, writes every event to `out` as it happens instead of collecting it, for
    /// this sink and all its clones (the probes hold clones). With `inline_output`, the
    /// program's output is written there too ([`TraceSink::output`]), keeping the order of
    /// output and events.
    pub fn stream_to(
        &self,
        out: Box<dyn Write + Send>,
        format: Format,
        filter: Filter,
        inline_output: bool,
    ) {
        let mut inner = self.lock();
        inner.target = Target::Stream {
            out: out::Out::new(out),
            format,
            inline_output,
            partial: Vec::new(),
            lines: Box::new(lines::Lines::new()),
        };
        inner.filter = filter;
        self.shared.quiet.store(filter.quiet, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// If this sink writes no event at all (`--quiet`), counts one more dropped event and
    /// returns `true`: the caller need not build it. A probe on every instruction makes
    /// this the hottest question of a quiet run, so it takes no lock.
    pub fn drop_if_quiet(&self) -> bool {
        let quiet = self.shared.quiet.load(Ordering::Relaxed);
        if quiet {
            self.shared.quiet_dropped.fetch_add(1, Ordering::Relaxed);
        }
        quiet
    }

    /// Appends one event.
    pub fn push(&self, event: TraceEvent) {
        self.push_fetched(event, &[]);
    }

    /// Appends one event with the values its probe fetched.
    pub fn push_fetched(&self, event: TraceEvent, fetched: &[(Arc<str>, Value)]) {
        if self.drop_if_quiet() {
            return;
        }
        let mut inner = self.lock();
        if !inner.accept(event.pid()) {
            return;
        }
        let Inner { target, closed, .. } = &mut *inner;
        match target {
            Target::Collect(events) => events.push(event),
            Target::Stream {
                out, format, lines, ..
            } => {
                if write_event(out, *format, lines, &event, fetched).is_err() {
                    *closed = true;
                }
            }
        }
    }

    /// Registers a probe site at `at`, for [`push_site`](Self::push_site).
    pub(crate) fn site(&self, at: Loc) -> SiteId {
        self.lock().sites.add(at)
    }

    /// Appends a hit, post or return event of a site, with the values its probe fetched.
    pub(crate) fn push_site(&self, event: SiteEvent, fetched: &[(Arc<str>, Value)]) {
        if self.drop_if_quiet() {
            return;
        }
        let mut inner = self.lock();
        if !inner.accept(event.pid) {
            return;
        }
        let Inner {
            target,
            closed,
            sites,
            ..
        } = &mut *inner;
        let written = match target {
            Target::Collect(events) => {
                events.push(sites.event(&event));
                return;
            }
            Target::Stream {
                out, format, lines, ..
            } => match fetched.is_empty() {
                true => sites.write(out, *format, &event),
                false => Ok(false),
            }
            .and_then(|done| match done {
                true => Ok(()),
                false => write_event(out, *format, lines, &sites.event(&event), fetched),
            }),
        };
        if written.is_err() {
            *closed = true;
        }
    }

    /// Takes program output: writes it when it shares this sink's writer, and returns
    /// whether it did (else the caller echoes it wherever it goes).
    pub fn output(&self, bytes: &[u8]) -> bool {
        let mut inner = self.lock();
        let Inner { target, closed, .. } = &mut *inner;
        let Target::Stream {
            out,
            format,
            inline_output: true,
            partial,
            ..
        } = target
        else {
            return false;
        };
        if *closed || bytes.is_empty() {
            return true;
        }
        let written = match format {
            Format::Text => {
                partial.extend_from_slice(bytes);
                // Whole lines go out now; a long partial line too (its memory is bounded).
                let cut = match partial.iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    None if partial.len() >= MAX_PARTIAL => partial.len(),
                    None => 0,
                };
                let result = out.write_all(&partial[..cut]).and_then(|()| out.flush());
                partial.drain(..cut);
                result
            }
            Format::Json => {
                let text = String::from_utf8_lossy(bytes);
                let line = serde_json::json!({ "event": "output", "text": text });
                serde_json::to_writer(&mut *out, &line)
                    .map_err(io::Error::from)
                    .and_then(|()| out.write_all(b"\n"))
            }
        };
        if written.is_err() {
            *closed = true;
        }
        true
    }

    /// Writes a held-back partial line of program output (ending it with a newline) and
    /// flushes the writer; a failure marks the sink closed.
    pub fn flush(&self) {
        let mut inner = self.lock();
        let Inner { target, closed, .. } = &mut *inner;
        if let Target::Stream { out, partial, .. } = target {
            if *closed {
                return;
            }
            let mut result = Ok(());
            if !partial.is_empty() {
                partial.push(b'\n');
                result = out.write_all(partial);
                partial.clear();
            }
            if result.and_then(|()| out.flush()).is_err() {
                *closed = true;
            }
        }
    }

    /// Runs `f` on the writer of a streaming sink (after [`flush`](Self::flush)), e.g. to
    /// write the summary after the events. `None` for a collecting sink or a closed writer.
    pub fn with_writer<R>(&self, f: impl FnOnce(&mut dyn Write) -> io::Result<R>) -> Option<R> {
        self.flush();
        let mut inner = self.lock();
        let Inner { target, closed, .. } = &mut *inner;
        let Target::Stream { out, .. } = target else {
            return None;
        };
        if *closed {
            return None;
        }
        match f(out).and_then(|r| out.flush().map(|()| r)) {
            Ok(r) => Some(r),
            Err(_) => {
                *closed = true;
                None
            }
        }
    }

    /// Whether the writer went away (its writes failed): a closed pipe.
    pub fn closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether the event limit was reached.
    pub fn full(&self) -> bool {
        let inner = self.lock();
        inner
            .filter
            .max_events
            .is_some_and(|max| inner.counts.written >= max)
    }

    /// How many events were accepted and dropped.
    pub fn counts(&self) -> SinkCounts {
        let mut counts = self.lock().counts;
        counts.dropped += self.shared.quiet_dropped.load(Ordering::Relaxed);
        counts
    }

    /// Removes and returns every event collected so far (none when streaming).
    pub fn take(&self) -> Vec<TraceEvent> {
        match &mut self.lock().target {
            Target::Collect(events) => std::mem::take(events),
            Target::Stream { .. } => Vec::new(),
        }
    }

    /// How many events are collected (none when streaming).
    pub fn len(&self) -> usize {
        match &self.lock().target {
            Target::Collect(events) => events.len(),
            Target::Stream { .. } => 0,
        }
    }

    /// Whether no event is collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes the line of `event` (and its fetched values) to `out`.
fn write_event(
    out: &mut out::Out,
    format: Format,
    lines: &mut lines::Lines,
    event: &TraceEvent,
    fetched: &[(Arc<str>, Value)],
) -> io::Result<()> {
    let line = match format {
        Format::Text => lines.text(event, fetched),
        Format::Json => lines.json(event, fetched)?,
    };
    out.write_all(line)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A writer whose bytes the test can read, failing once `fail_after` bytes were taken.
    /// A writer into shared bytes, for tests to read what was written; with a byte cap
    /// past which it fails as a closed pipe does.
    #[derive(Clone, Default)]
    pub(crate) struct Shared(pub Arc<Mutex<Vec<u8>>>, pub Option<usize>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if self.1.is_some_and(|max| bytes.len() + buf.len() > max) {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        pub(crate) fn bytes(&self) -> Vec<u8> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.bytes()).into_owned()
        }
    }

    fn hit(pid: u64) -> TraceEvent {
        TraceEvent::Hit {
            pid,
            tid: pid,
            at: Loc {
                addr: 0x10074,
                symbol: Some((Arc::from("fib"), 0)),
            },
            args: [5, 0],
        }
    }

    #[test]
    fn text_and_json_follow_the_shared_event() {
        let hit = hit(1);
        assert_eq!(hit.to_string(), "pid 1 hit fib pc=0x10074 a0=0x5 a1=0x0");
        let post = TraceEvent::Post {
            pid: 2,
            tid: 2,
            at: Loc {
                addr: 0x1007c,
                symbol: Some((Arc::from("main"), 8)),
            },
            next: 0x10080,
        };
        assert_eq!(post.to_string(), "pid 2 post main+0x8 next=0x10080");
        let json = serde_json::to_value(&hit).unwrap_or_default();
        assert_eq!(json["event"], "hit");
        assert_eq!(json["at"]["addr"], 0x10074);
        assert_eq!(json["at"]["symbol"][0], "fib");
        assert_eq!(json["args"][0], 5);
        let killed = TraceEvent::Killed {
            pid: 3,
            signal: 5,
            at: Loc {
                addr: 0x1003c,
                symbol: Some((Arc::from("main"), 0x1c)),
            },
        };
        assert_eq!(
            killed.to_string(),
            "pid 3 killed SIGTRAP at main+0x1c pc=0x1003c"
        );
        let json = serde_json::to_value(&killed).unwrap_or_default();
        assert_eq!(json["event"], "killed");
        assert_eq!(json["signal"], 5);
        assert_eq!(json["at"]["symbol"][1], 0x1c);
    }

    #[test]
    fn sink_keeps_order_across_clones() {
        let sink = TraceSink::default();
        let other = sink.clone();
        sink.push(TraceEvent::Syscall { pid: 1, nr: 64 });
        other.push(TraceEvent::Exit { pid: 1, code: 0 });
        assert_eq!(sink.len(), 2);
        let events = sink.take();
        assert_eq!(events[0], TraceEvent::Syscall { pid: 1, nr: 64 });
        assert_eq!(events[1], TraceEvent::Exit { pid: 1, code: 0 });
        assert!(other.is_empty());
    }

    #[test]
    fn streaming_text_interleaves_output_and_fetched_values() {
        let out = Shared::default();
        let sink =
            TraceSink::streaming(Box::new(out.clone()), Format::Text, Filter::default(), true);
        assert!(sink.output(b"one\npartial"));
        sink.push_fetched(
            hit(1),
            &[
                (Arc::from("n"), Value::Signed(-3)),
                (Arc::from("s"), Value::Str("hi".into())),
            ],
        );
        assert!(sink.output(b"rest\n"));
        sink.push(TraceEvent::Exit { pid: 1, code: 0 });
        sink.flush();
        assert_eq!(
            out.text(),
            "one\npid 1 hit fib pc=0x10074 a0=0x5 a1=0x0 n=-3 s=\"hi\"\npartialrest\npid 1 exit 0\n",
            "lines of output stay whole"
        );
        sink.output(b"no newline");
        sink.flush();
        assert!(out.text().ends_with("pid 1 exit 0\nno newline\n"));
        assert!(sink.take().is_empty(), "nothing is kept");
    }

    #[test]
    fn streaming_json_lines_filter_limit_and_closed_pipe() {
        let out = Shared::default();
        let filter = Filter {
            pid: Some(2),
            max_events: Some(2),
            quiet: false,
        };
        let sink = TraceSink::streaming(Box::new(out.clone()), Format::Json, filter, true);
        sink.push(hit(1));
        sink.push_fetched(hit(2), &[(Arc::from("x"), Value::Hex(255))]);
        assert!(!sink.full());
        sink.output(b"out\n");
        sink.push(hit(2));
        assert!(sink.full());
        sink.push(hit(2));
        sink.flush();
        let text = out.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["fetch"]["x"], "0xff");
        assert_eq!(lines[1]["event"], "output");
        assert_eq!(lines[1]["text"], "out\n");
        assert_eq!(lines[2]["event"], "hit");
        assert_eq!(
            sink.counts(),
            SinkCounts {
                written: 2,
                dropped: 2
            }
        );

        let out = Shared(Arc::default(), Some(10));
        let sink = TraceSink::streaming(
            Box::new(out.clone()),
            Format::Text,
            Filter::default(),
            false,
        );
        assert!(!sink.output(b"not ours"), "output goes elsewhere");
        sink.push(hit(1));
        assert!(!sink.closed(), "buffered");
        sink.flush();
        assert!(sink.closed(), "a failed write closes the sink");
        sink.push(hit(1));
        assert_eq!(sink.with_writer(|w| w.write_all(b"x")), None);
        assert_eq!(sink.counts().dropped, 1);
    }
}

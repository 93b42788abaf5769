//! The simulator's trace events: the shared [`ruprobes_trace::Event`] with shared
//! (`Arc<str>`) symbol names, so an event outlives the image whose symbols it names. Its text
//! form is the QEMU test kernel's, byte for byte; it serialises as JSON.

use std::sync::{Arc, Mutex, PoisonError};

use ruprobes_trace::{Event, Location};

/// A code address with the symbol it falls in.
pub type Loc = Location<Arc<str>>;

/// One event of a traced run.
pub type TraceEvent = Event<Arc<str>>;

/// The shared, ordered event log of one machine. Probe handlers (which the engine calls
/// with no access to the machine) and the kernel both append to it.
#[derive(Clone, Debug, Default)]
pub struct TraceSink {
    events: Arc<Mutex<Vec<TraceEvent>>>,
}

impl TraceSink {
    /// Appends one event.
    pub fn push(&self, event: TraceEvent) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    /// Removes and returns every event recorded so far.
    pub fn take(&self) -> Vec<TraceEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// How many events are recorded.
    pub fn len(&self) -> usize {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no event is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_follow_the_shared_event() {
        let at = Loc {
            addr: 0x10074,
            symbol: Some((Arc::from("fib"), 0)),
        };
        let hit = TraceEvent::Hit {
            pid: 1,
            at: at.clone(),
            args: [5, 0],
        };
        assert_eq!(hit.to_string(), "pid 1 hit fib pc=0x10074 a0=0x5 a1=0x0");
        let post = TraceEvent::Post {
            pid: 2,
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
        assert_eq!(json["at"]["addr"], 0x1003c);
        assert_eq!(json["at"]["symbol"][0], "main");
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
}

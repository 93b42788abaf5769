//! Owned trace events: what a run records, printable exactly as [`ruprobes_trace::Event`]
//! (the form the QEMU test kernel prints too) and serialisable as JSON.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use ruprobes_trace::{Event, Location};
use serde::{Serialize, Serializer};

/// A code address with the symbol it falls in (owned form of [`Location`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    /// The address.
    pub addr: u64,
    /// The enclosing symbol and the offset into it.
    pub symbol: Option<(Arc<str>, u64)>,
}

impl Loc {
    /// Borrows this location as the shared [`Location`] type.
    pub fn as_location(&self) -> Location<'_> {
        Location {
            addr: self.addr,
            symbol: self.symbol.as_ref().map(|(name, off)| (&**name, *off)),
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_location().fmt(f)
    }
}

/// One event of a traced run; the owned mirror of [`Event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// An entry handler ran (`a0`, `a1` at the hit).
    Hit {
        /// Process id.
        pid: u64,
        /// The probed instruction.
        at: Loc,
        /// `a0` and `a1`.
        args: [u64; 2],
    },
    /// A post handler ran; `next` is the pc after the probed instruction.
    Post {
        /// Process id.
        pid: u64,
        /// The probed instruction.
        at: Loc,
        /// The new pc.
        next: u64,
    },
    /// A return handler ran: the probed function returned `value`.
    Return {
        /// Process id.
        pid: u64,
        /// The probed function.
        func: Loc,
        /// `a0` at the return.
        value: u64,
    },
    /// A system call, recorded before it is performed.
    Syscall {
        /// Process id.
        pid: u64,
        /// The call number (`a7`).
        nr: u64,
    },
    /// A process exited.
    Exit {
        /// Process id.
        pid: u64,
        /// The exit code.
        code: i32,
    },
    /// A process was killed by a signal.
    Killed {
        /// Process id.
        pid: u64,
        /// The signal number.
        signal: i32,
    },
}

impl TraceEvent {
    /// Borrows this event as the shared [`Event`] type.
    pub fn as_event(&self) -> Event<'_> {
        match self {
            TraceEvent::Hit { pid, at, args } => Event::Hit {
                pid: *pid,
                at: at.as_location(),
                args: *args,
            },
            TraceEvent::Post { pid, at, next } => Event::Post {
                pid: *pid,
                at: at.as_location(),
                next: *next,
            },
            TraceEvent::Return { pid, func, value } => Event::Return {
                pid: *pid,
                func: func.as_location(),
                value: *value,
            },
            TraceEvent::Syscall { pid, nr } => Event::Syscall { pid: *pid, nr: *nr },
            TraceEvent::Exit { pid, code } => Event::Exit {
                pid: *pid,
                code: *code,
            },
            TraceEvent::Killed { pid, signal } => Event::Killed {
                pid: *pid,
                signal: *signal,
            },
        }
    }

    /// The process the event belongs to.
    pub fn pid(&self) -> u64 {
        match self {
            TraceEvent::Hit { pid, .. }
            | TraceEvent::Post { pid, .. }
            | TraceEvent::Return { pid, .. }
            | TraceEvent::Syscall { pid, .. }
            | TraceEvent::Exit { pid, .. }
            | TraceEvent::Killed { pid, .. } => *pid,
        }
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_event().fmt(f)
    }
}

impl Serialize for TraceEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_event().serialize(serializer)
    }
}

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
        let killed = TraceEvent::Killed { pid: 3, signal: 5 };
        assert_eq!(killed.to_string(), "pid 3 killed SIGTRAP");
        assert_eq!(
            serde_json::to_value(&killed).unwrap_or_default()["signal"],
            5
        );
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

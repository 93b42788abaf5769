//! What the simulator and the QEMU test kernel agree on, byte for byte: the probe spec
//! syntax, the trace events with their one stable text form, and the scenario list.
//!
//! `no_std` and allocation-free so that the test kernel links it as it is.
#![no_std]

mod scenario;
mod spec;

pub use scenario::{BpfScenario, Scenario, BPF_SCENARIOS, SCENARIOS};
pub use spec::{FetchArg, FetchType, ProbeKind, ProbeSpec, Source, SpecError, Target};

use core::fmt;

/// The SIGTRAP number, reported for a breakpoint that no probe owns.
pub const SIGTRAP: i32 = 5;
/// The SIGSEGV number, reported for an access fault.
pub const SIGSEGV: i32 = 11;
/// The SIGILL number, reported for an illegal instruction.
pub const SIGILL: i32 = 4;

/// A code address with the symbol it falls in, when there is one.
///
/// `S` is the symbol name: `&str` where the names outlive the trace (the test kernel),
/// an owned or shared string where they must not (the simulator's `Arc<str>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Location<S> {
    /// The address.
    pub addr: u64,
    /// The enclosing function symbol and the offset into it.
    pub symbol: Option<(S, u64)>,
}

impl<S: fmt::Display> fmt::Display for Location<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.symbol {
            Some((name, 0)) => write!(f, "{name}"),
            Some((name, off)) => write!(f, "{name}+{off:#x}"),
            None => write!(f, "{:#x}", self.addr),
        }
    }
}

/// One event of a traced run, with symbol names of type `S` (see [`Location`]). Its
/// `Display` is the stable text form: one line, no newline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
pub enum Event<S> {
    /// An entry handler ran: the probe at `at` was hit with these argument registers.
    Hit {
        /// Process id.
        pid: u64,
        /// Thread id (the pid for a process's first thread).
        tid: u64,
        /// The probed instruction.
        at: Location<S>,
        /// `a0` and `a1` at the hit.
        args: [u64; 2],
    },
    /// A post handler ran: the probed instruction was executed and `next` is the new pc.
    Post {
        /// Process id.
        pid: u64,
        /// Thread id.
        tid: u64,
        /// The probed instruction.
        at: Location<S>,
        /// The pc after the instruction.
        next: u64,
    },
    /// A return handler ran: the probed function returned `value` (a0).
    Return {
        /// Process id.
        pid: u64,
        /// Thread id.
        tid: u64,
        /// The probed function.
        func: Location<S>,
        /// `a0` at the return.
        value: u64,
    },
    /// The process made system call number `nr` (named when the kernel knows it).
    Syscall {
        /// Process id.
        pid: u64,
        /// The call number (a7).
        nr: u64,
    },
    /// The process exited with `code`.
    Exit {
        /// Process id.
        pid: u64,
        /// The exit code.
        code: i32,
    },
    /// An eBPF program attached to a probe printed a line (`bpf_trace_printk`).
    Print {
        /// Process id.
        pid: u64,
        /// The line, without its newline.
        text: S,
    },
    /// The process was killed by `signal` (e.g. a breakpoint no probe owns: SIGTRAP) at `at`.
    Killed {
        /// Process id.
        pid: u64,
        /// The signal number.
        signal: i32,
        /// The instruction it was killed at: the breakpoint, or the faulting instruction
        /// (the probed address when the fault happened in its out-of-line copy).
        at: Location<S>,
    },
}

/// The name of a system call of the rCore-Tutorial-v3 numbering.
pub fn syscall_name(nr: u64) -> Option<&'static str> {
    Some(match nr {
        63 => "read",
        64 => "write",
        93 => "exit",
        124 => "yield",
        169 => "get_time",
        172 => "getpid",
        220 => "fork",
        221 => "exec",
        260 => "waitpid",
        _ => return None,
    })
}

/// The name of a signal number used in traces.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        SIGILL => "SIGILL",
        SIGTRAP => "SIGTRAP",
        SIGSEGV => "SIGSEGV",
        _ => return None,
    })
}

impl<S> Event<S> {
    /// The process the event belongs to.
    pub fn pid(&self) -> u64 {
        match *self {
            Event::Hit { pid, .. }
            | Event::Post { pid, .. }
            | Event::Return { pid, .. }
            | Event::Syscall { pid, .. }
            | Event::Exit { pid, .. }
            | Event::Killed { pid, .. }
            | Event::Print { pid, .. } => pid,
        }
    }
}

/// `pid P`, or `pid P tid T` for a thread other than the process's first (so traces of
/// single-threaded programs do not change).
struct Who(u64, u64);

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Who(pid, tid) if tid != pid => write!(f, "pid {pid} tid {tid}"),
            Who(pid, _) => write!(f, "pid {pid}"),
        }
    }
}

impl<S: fmt::Display> fmt::Display for Event<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Event::Hit {
                pid,
                tid,
                ref at,
                args,
            } => {
                write!(
                    f,
                    "{} hit {at} pc={:#x} a0={:#x} a1={:#x}",
                    Who(pid, tid),
                    at.addr,
                    args[0],
                    args[1]
                )
            }
            Event::Post {
                pid,
                tid,
                ref at,
                next,
            } => write!(f, "{} post {at} next={next:#x}", Who(pid, tid)),
            Event::Return {
                pid,
                tid,
                ref func,
                value,
            } => write!(f, "{} ret {func} a0={value:#x}", Who(pid, tid)),
            Event::Syscall { pid, nr } => match syscall_name(nr) {
                Some(name) => write!(f, "pid {pid} syscall {name}"),
                None => write!(f, "pid {pid} syscall {nr}"),
            },
            Event::Exit { pid, code } => write!(f, "pid {pid} exit {code}"),
            Event::Killed {
                pid,
                signal,
                ref at,
            } => {
                match signal_name(signal) {
                    Some(name) => write!(f, "pid {pid} killed {name}")?,
                    None => write!(f, "pid {pid} killed {signal}")?,
                }
                write!(f, " at {at} pc={:#x}", at.addr)
            }
            Event::Print { pid, ref text } => write!(f, "pid {pid} bpf_trace_printk: {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    /// The kernel's instance: names borrowed from its symbol table.
    type E = Event<&'static str>;

    #[test]
    fn text_form_is_stable() {
        let at = Location {
            addr: 0x10074,
            symbol: Some(("fib", 0)),
        };
        let e = Event::Hit {
            pid: 1,
            tid: 1,
            at,
            args: [5, 0],
        };
        assert_eq!(e.to_string(), "pid 1 hit fib pc=0x10074 a0=0x5 a1=0x0");
        let thread = Event::Hit {
            pid: 1,
            tid: 2,
            at,
            args: [5, 0],
        };
        assert_eq!(
            thread.to_string(),
            "pid 1 tid 2 hit fib pc=0x10074 a0=0x5 a1=0x0",
            "the tid only when it is not the pid"
        );
        let print: Event<&str> = Event::Print {
            pid: 3,
            text: "greet ann",
        };
        assert_eq!(print.to_string(), "pid 3 bpf_trace_printk: greet ann");
        assert_eq!(print.pid(), 3);
        let at = Location {
            addr: 0x1007c,
            symbol: Some(("main", 8)),
        };
        assert_eq!(
            Event::Post {
                pid: 2,
                tid: 2,
                at,
                next: 0x10080
            }
            .to_string(),
            "pid 2 post main+0x8 next=0x10080"
        );
        let func: Location<&str> = Location {
            addr: 0x10074,
            symbol: None,
        };
        assert_eq!(
            Event::Return {
                pid: 1,
                tid: 1,
                func,
                value: 8
            }
            .to_string(),
            "pid 1 ret 0x10074 a0=0x8"
        );
        assert_eq!(
            E::Syscall { pid: 1, nr: 64 }.to_string(),
            "pid 1 syscall write"
        );
        assert_eq!(
            E::Syscall { pid: 1, nr: 999 }.to_string(),
            "pid 1 syscall 999"
        );
        assert_eq!(E::Exit { pid: 1, code: -1 }.to_string(), "pid 1 exit -1");
        let at = Location {
            addr: 0x1003c,
            symbol: Some(("main", 0x1c)),
        };
        assert_eq!(
            E::Killed {
                pid: 3,
                signal: SIGTRAP,
                at
            }
            .to_string(),
            "pid 3 killed SIGTRAP at main+0x1c pc=0x1003c"
        );
        let at = Location {
            addr: 0x8,
            symbol: None,
        };
        assert_eq!(
            E::Killed {
                pid: 1,
                signal: 7,
                at
            }
            .to_string(),
            "pid 1 killed 7 at 0x8 pc=0x8"
        );
    }
}

//! The errors of the simulator: one clear line each (the CLI prints them after `error:`).

use std::fmt;

/// Everything that can go wrong when loading, probing or running a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// A file could not be read.
    Io {
        /// The path.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// The bytes are not a loadable RISC-V 64 executable.
    BadElf {
        /// The image name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A BPF object is refused (by the loader, or because a program cannot be attached).
    BadBpf {
        /// The object's path as given.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A probe spec does not parse.
    BadSpec {
        /// The spec as given.
        spec: String,
        /// Why.
        why: String,
    },
    /// A probe spec names a symbol the program does not have.
    UnknownSymbol {
        /// The spec as given.
        spec: String,
        /// The symbol (or `prefix*` pattern).
        symbol: String,
    },
    /// A probe spec names a symbol that is not a function (a label or data object).
    NotAFunction {
        /// The spec as given.
        spec: String,
        /// The symbol.
        symbol: String,
        /// What it is (`a label (STT_NOTYPE)`, `a data object (STT_OBJECT)`).
        what: &'static str,
        /// Its address, for a spec that probes it anyway.
        addr: u64,
    },
    /// A probe spec names a symbol, but the program has no symbol table.
    Stripped {
        /// The spec as given.
        spec: String,
    },
    /// A probe spec's program is not the one that runs, nor a program it can exec.
    UnknownProgram {
        /// The spec as given.
        spec: String,
        /// The program named.
        prog: String,
    },
    /// The engine refused a probe.
    Probe {
        /// The spec (or address) as given.
        spec: String,
        /// The engine's reason.
        error: ruprobes::Error,
    },
    /// A probe address inside an instruction (its second half), not at its start.
    InsideInstruction {
        /// The spec as given.
        spec: String,
        /// The probe address.
        addr: u64,
        /// Where the instruction it falls in starts.
        insn: String,
    },
    /// No probe with this id is registered.
    UnknownProbe(usize),
    /// The machine has no program loaded, or the operation needs a live process.
    NoProcess,
    /// `exec` or `load` named an image the machine does not know.
    UnknownImage(String),
    /// Emulated physical memory is exhausted.
    OutOfMemory,
    /// The instruction budget ran out before the last process exited.
    BudgetExhausted {
        /// Instructions executed.
        executed: u64,
    },
    /// Every remaining process is blocked in `waitpid`.
    Deadlock,
    /// The operation is not available in this mode (e.g. per-machine probes in seed mode).
    Unavailable(&'static str),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Io { path, message } => write!(f, "{path}: {message}"),
            SimError::BadElf { name, why } => write!(f, "{name}: {why}"),
            SimError::BadBpf { path, why } => write!(f, "{path}: {why}"),
            SimError::BadSpec { spec, why } => write!(f, "bad probe spec '{spec}': {why}"),
            SimError::InsideInstruction { spec, addr, insn } => write!(
                f,
                "probe '{spec}': {addr:#x} is inside the instruction at {insn}, not at its start"
            ),
            SimError::UnknownSymbol { spec, symbol } => {
                write!(
                    f,
                    "probe '{spec}': no function symbol '{symbol}' in the program"
                )
            }
            SimError::NotAFunction {
                spec,
                symbol,
                what,
                addr,
            } => write!(
                f,
                "probe '{spec}': '{symbol}' is {what}, not a function (probe it by address: {addr:#x})"
            ),
            SimError::Stripped { spec } => write!(
                f,
                "probe '{spec}': the program has no symbol table (stripped): use an address, e.g. uprobe:0x10000"
            ),
            SimError::UnknownProgram { spec, prog } => {
                write!(f, "probe '{spec}': no program '{prog}' (PROG is a file stem, e.g. fib)")
            }
            SimError::Probe { spec, error } => write!(f, "probe '{spec}': {error}"),
            SimError::UnknownProbe(id) => write!(f, "no probe with id {id}"),
            SimError::NoProcess => f.write_str("no program is loaded"),
            SimError::UnknownImage(name) => write!(f, "no program image named '{name}'"),
            SimError::OutOfMemory => f.write_str("the machine ran out of physical memory"),
            SimError::BudgetExhausted { executed } => {
                write!(f, "instruction budget exhausted after {executed} instructions (raise it with --max-insns)")
            }
            SimError::Deadlock => f.write_str("every remaining process is blocked in waitpid"),
            SimError::Unavailable(what) => write!(f, "not available: {what}"),
        }
    }
}

impl std::error::Error for SimError {}

//! The errors of the engine.

use core::fmt;

/// Why an instruction cannot carry a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// `ecall`, `ebreak`, `c.ebreak`, `wfi`, `sret`, `mret`, `sfence.vma` and other
    /// privileged or trapping `SYSTEM` instructions.
    System,
    /// `csrr*` / `csrw*` and friends.
    Csr,
    /// `fence.i`: stepping it out of line would synchronise the wrong address.
    FenceI,
    /// `cbo.*` cache-block operations.
    CacheBlock,
    /// `lr.*` / `sc.*`: a trap between them kills the reservation, so a probed loop
    /// would never make progress.
    LoadReserved,
    /// Not a valid rv64gc encoding (including reserved and 48-bit-or-longer encodings).
    Illegal,
}

/// A user memory access that the kernel could not perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The user address that failed.
    pub addr: usize,
}

/// Everything that can go wrong in a call to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The probe address is not 2-byte aligned.
    Misaligned(usize),
    /// The instruction at the address cannot be probed.
    Unsupported {
        /// The probe address.
        addr: usize,
        /// Why.
        why: Unsupported,
    },
    /// The address is not in an executable mapping of the process.
    NotExecutable(usize),
    /// Reading user memory failed.
    ReadFault(Fault),
    /// Writing user memory failed (the engine rolled back what it had written).
    WriteFault(Fault),
    /// The kernel could not map an out-of-line execution page.
    XolMapFailed,
    /// An already registered consumer was registered again.
    AlreadyRegistered,
    /// No probe or consumer matches the request.
    NotRegistered,
    /// The probe already holds a different instruction class at this address (another
    /// registration saw different original bytes).
    Conflict(usize),
    /// The process is not known to the engine (no `on_exec` / `on_fork` for it).
    UnknownProcess(usize),
}

impl Error {
    /// The negative errno a system call would return for this error (Linux numbering).
    pub fn errno(&self) -> isize {
        match self {
            Error::Misaligned(_)
            | Error::Unsupported { .. }
            | Error::NotExecutable(_)
            | Error::Conflict(_) => -22, // EINVAL
            Error::ReadFault(_) | Error::WriteFault(_) => -14, // EFAULT
            Error::XolMapFailed => -12,                        // ENOMEM
            Error::AlreadyRegistered => -17,                   // EEXIST
            Error::NotRegistered => -2,                        // ENOENT
            Error::UnknownProcess(_) => -3,                    // ESRCH
        }
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unsupported::System => "a system instruction (ecall/ebreak/wfi/xret/sfence)",
            Unsupported::Csr => "a CSR instruction",
            Unsupported::FenceI => "fence.i",
            Unsupported::CacheBlock => "a cache-block (cbo.*) instruction",
            Unsupported::LoadReserved => "lr/sc (a trap would break the reservation)",
            Unsupported::Illegal => "an illegal or unknown encoding",
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Misaligned(a) => write!(f, "probe address {a:#x} is not 2-byte aligned"),
            Error::Unsupported { addr, why } => {
                write!(f, "cannot probe the instruction at {addr:#x}: it is {why}")
            }
            Error::NotExecutable(a) => write!(f, "address {a:#x} is not in executable memory"),
            Error::ReadFault(Fault { addr }) => write!(f, "cannot read user memory at {addr:#x}"),
            Error::WriteFault(Fault { addr }) => write!(f, "cannot write user memory at {addr:#x}"),
            Error::XolMapFailed => f.write_str("the kernel could not map an XOL page"),
            Error::AlreadyRegistered => f.write_str("this consumer is already registered"),
            Error::NotRegistered => f.write_str("no such probe or consumer"),
            Error::Conflict(a) => write!(f, "conflicting original instruction at {a:#x}"),
            Error::UnknownProcess(p) => write!(f, "process {p} is not known to ruprobes"),
        }
    }
}

impl core::error::Error for Error {}

//! # ruprobes
//!
//! Uprobes for small RISC-V (rv64gc) kernels: dynamic breakpoints on any instruction or
//! function of a user program, with entry, post-step and return handlers.
//!
//! The kernel keeps one [`Uprobes`] engine (typically in a `static`) and calls it from four
//! places: `exec` ([`Uprobes::on_exec`]), `fork` / `exit` ([`Uprobes::on_fork`],
//! [`Uprobes::on_exit`]), the breakpoint trap ([`Uprobes::handle_breakpoint`]) and the
//! page-fault path ([`Uprobes::fixup_fault`]). It reaches user memory through the
//! [`UserSpace`] trait and registers through the [`UserRegs`] trait. Kernels ported from the
//! original ruprobes crate can use the seed-compatible free functions of the [`seed`] module
//! instead (feature `seed`).
//!
//! ```
//! use ruprobes::{Consumer, Uprobes};
//! static UPROBES: Uprobes = Uprobes::new();
//! let consumer = Consumer::new().on_entry(|regs, hit| {
//!     let _ = (regs.reg(ruprobes::abi::A0), hit.addr);
//! });
//! // Not armed yet: no process runs "/bin/app". `on_exec` arms it later.
//! let id = UPROBES.register("/bin/app", 0x10074, consumer, None).unwrap();
//! UPROBES.unregister(id, None).unwrap();
//! ```
//!
//! Module map (after Linux `arch/riscv/kernel/probes/`): [`decode`] classifies instructions,
//! [`simulate`] computes the simulated and emulated ones, `xol` lays out the out-of-line
//! page, `uretprobe` keeps return instances, `engine` ties them to the kernel.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;

mod addr_map;
pub mod bpf;
pub mod decode;
mod engine;
mod error;
mod probe;
pub mod regs;
#[cfg(feature = "seed")]
pub mod seed;
pub mod simulate;
mod space;
pub mod testing;
mod uretprobe;
mod xol;

pub use engine::{Trap, Uprobes};
pub use error::{Error, Fault, Unsupported};
pub use probe::{Consumer, ConsumerId, EntryFn, Hit, ProbeStats, Return, ReturnFn};
pub use regs::{abi, TrapContext, UserRegs};
pub use space::{Pid, Tid, UserSpace};
pub use uretprobe::MAX_RETURN_DEPTH;
pub use xol::{SLOTS_PER_PAGE, SLOT_SIZE};

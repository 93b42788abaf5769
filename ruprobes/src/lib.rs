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
//! original ruprobes crate can use the seed-compatible free functions of the `seed` module
//! instead (feature `seed`).
//!
//! ```
//! use ruprobes::testing::{MemSpace, TEXT};
//! use ruprobes::{abi, Consumer, Trap, TrapContext, Uprobes, UserRegs};
//!
//! static UPROBES: Uprobes = Uprobes::new();
//!
//! // exec: process 1 now runs "/bin/app", whose first instruction is `addi sp, sp, -16`.
//! let mut space = MemSpace::with_text(1, &0xff01_0113u32.to_le_bytes());
//! UPROBES.on_exec(&mut space, "/bin/app")?;
//!
//! let probe = Consumer::new().on_entry(|regs, hit| {
//!     log::info!("hit {:#x} with sp = {:#x}", hit.addr, regs.reg(abi::SP));
//! });
//! let id = UPROBES.register("/bin/app", TEXT, probe, Some(&mut space))?;
//!
//! // The breakpoint trap: the engine runs the handler and emulates the `addi`.
//! let mut cx = TrapContext { sepc: TEXT, ..TrapContext::default() };
//! cx.set_reg(abi::SP, 0x8000);
//! assert_eq!(UPROBES.handle_breakpoint(&mut space, &mut cx), Trap::Handled);
//! assert_eq!((cx.pc(), cx.reg(abi::SP)), (TEXT + 4, 0x8000 - 16));
//!
//! UPROBES.unregister(id, Some(&mut space))?; // the original bytes are back
//! assert_eq!(space.text(4), 0xff01_0113u32.to_le_bytes());
//! # Ok::<(), ruprobes::Error>(())
//! ```
//!
//! Module map (after Linux `arch/riscv/kernel/probes/`): [`decode`] classifies instructions,
//! [`simulate`] computes the simulated and emulated ones, `xol` lays out the out-of-line
//! page, `uretprobe` keeps return instances, `engine` ties them to the kernel.
#![no_std]
#![deny(missing_docs)]
// On the kernel-stack paths errors are passed on with explicit matches: at opt-level 0
// (a kernel's debug profile) each `?` costs about 48 bytes of frame for its `Try`
// temporaries, and `cargo xtask stack-check` holds every frame to a budget.
#![allow(clippy::question_mark)]

extern crate alloc;

mod addr_map;
mod array;
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

pub use engine::{Trap, TrapStats, Uprobes};
pub use error::{Error, Fault, Unsupported};
pub use probe::{Consumer, ConsumerId, EntryFn, Hit, ProbeStats, ProbeStatus, Return, ReturnFn};
pub use regs::{abi, TrapContext, UserRegs};
pub use space::{ImageReader, Pid, Tid, UserSpace, NO_PID};
/// The `spin` crate the core is built with, for kernels that name its types (the seed
/// face's `SeedHandler` is an `Arc<spin::Mutex<..>>`).
pub use spin;
pub use uretprobe::MAX_RETURN_DEPTH;
pub use xol::{SLOTS_PER_PAGE, SLOT_SIZE};

/// The crate README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

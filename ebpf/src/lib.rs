//! A `no_std` eBPF runtime for ruprobes: loads clang-built BPF objects (libbpf conventions:
//! `SEC("uprobe/SYM")`, BTF-defined maps in `.maps`), and runs their programs on uprobe hits
//! with the [`ruprobes::bpf::UProbeBPFContext`] as context.
//!
//! - [`object`]: the ELF loader, relocations and the instruction check;
//! - [`attach`]: section names to tracepoint kinds and symbols;
//! - [`vm`]: the interpreter over checked memory regions, with an instruction budget;
//! - [`helpers`]: the helpers, and [`Env`], what the kernel provides to them;
//! - [`maps`]: hash, array and ring buffer maps;
//! - [`print`]: the maps as text, the same in every kernel;
//! - [`runtime`]: an object as probe handlers, with per-program counters and the summary.
#![no_std]

extern crate alloc;

pub mod attach;
pub mod btf;
pub mod helpers;
pub mod maps;
pub mod object;
pub mod print;
pub mod runtime;
pub mod vm;

pub use attach::Attach;
pub use helpers::Env;
pub use object::{LoadError, Object, Program};
pub use runtime::{context_bytes, Runtime, CONTEXT_SIZE};
pub use vm::{VmError, DEFAULT_BUDGET};

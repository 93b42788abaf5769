//! An object attached as probe handlers: runs a program per hit with the uprobe context,
//! counts runs and errors per program (a failed run stops only the program; the probed
//! program goes on), and writes the summary a kernel prints at exit.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use ruprobes::bpf::UProbeBPFContext;

use crate::helpers::Env;
use crate::object::Object;
use crate::vm::DEFAULT_BUDGET;

/// Size of a [`UProbeBPFContext`] on RV64 (see `fixtures/bpf/ruprobes.h`).
pub const CONTEXT_SIZE: usize = 312;

/// The bytes a program sees as its context: the fields of `ctx` in `#[repr(C)]` order,
/// little-endian, with the kernel-owned fields (`kernel_satp`, `kernel_sp`,
/// `trap_handler`) reading 0 so no kernel address reaches a program.
pub fn context_bytes(ctx: &UProbeBPFContext) -> [u8; CONTEXT_SIZE] {
    let mut out = [0u8; CONTEXT_SIZE];
    write_context(ctx, &mut out);
    out
}

/// [`context_bytes`] into `out`, word by word (no temporaries: this runs on every hit, on
/// a kernel stack).
fn write_context(ctx: &UProbeBPFContext, out: &mut [u8; CONTEXT_SIZE]) {
    let mut put = |i: usize, word: usize| {
        out[i * 8..i * 8 + 8].copy_from_slice(&(word as u64).to_le_bytes());
    };
    put(0, ctx.ptype);
    put(1, ctx.paddr);
    for (i, &x) in ctx.tf.x.iter().enumerate() {
        put(2 + i, x);
    }
    put(34, ctx.tf.sstatus);
    put(35, ctx.tf.sepc);
    // 36..39: kernel_satp, kernel_sp, trap_handler read 0.
    out[36 * 8..].fill(0);
}

/// Runs and errors of one program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// Times it ran.
    pub runs: u64,
    /// Runs stopped by an error.
    pub errors: u64,
    /// The first error, as one line.
    pub first_error: Option<String>,
}

/// A loaded object and its programs' counters.
pub struct Runtime {
    /// The object (maps included).
    pub object: Object,
    /// Instructions one run may execute.
    pub budget: u64,
    stats: Vec<ProgramStats>,
    /// The context bytes of the current run (on the heap, reused: not on the trap stack).
    ctx: Box<[u8; CONTEXT_SIZE]>,
}

impl Runtime {
    /// Wraps a loaded object, with the default budget.
    pub fn new(object: Object) -> Runtime {
        let stats = alloc::vec![ProgramStats::default(); object.programs.len()];
        Runtime {
            object,
            budget: DEFAULT_BUDGET,
            stats,
            ctx: Box::new([0; CONTEXT_SIZE]),
        }
    }

    /// Runs program `index` for one hit; `r0`, or the error as one line (also counted).
    pub fn run(
        &mut self,
        index: usize,
        ctx: &UProbeBPFContext,
        env: &mut dyn Env,
    ) -> Result<u64, String> {
        write_context(ctx, &mut self.ctx);
        let result = self.object.run(index, &self.ctx[..], env, self.budget);
        let Some(stats) = self.stats.get_mut(index) else {
            return Err(String::from("no such program"));
        };
        stats.runs += 1;
        result.map_err(|e| {
            let line = self.object.describe(&e);
            stats.errors += 1;
            stats.first_error.get_or_insert_with(|| line.clone());
            line
        })
    }

    /// The counters of program `index`.
    pub fn stats(&self, index: usize) -> Option<&ProgramStats> {
        self.stats.get(index)
    }

    /// The summary: every map (see [`crate::print`]), then one line per program with its
    /// runs, errors and first error.
    pub fn write_summary(&self, out: &mut impl Write) -> fmt::Result {
        crate::print::write_maps(out, &self.object.maps)?;
        for (program, stats) in self.object.programs.iter().zip(&self.stats) {
            write!(
                out,
                "prog {} ({}): {} runs, {} errors",
                program.name, program.section, stats.runs, stats.errors
            )?;
            match &stats.first_error {
                Some(e) => writeln!(out, "; first: {e}")?,
                None => writeln!(out)?,
            }
        }
        Ok(())
    }
}

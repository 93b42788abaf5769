//! User register state, as the kernel's trap frame holds it.
//!
//! The engine reads and writes registers through [`UserRegs`], so a kernel hands over its
//! own trap frame without copying it. [`TrapContext`] is the rCore-Tutorial-v3 trap frame
//! (the `trap_context_riscv` layout) with the trait already implemented.

/// Access to the user registers of a trapped thread.
///
/// `reg(0)` always reads 0 and `set_reg(0, _)` is ignored, as on the hardware. Register
/// numbers above 31 read 0 and are ignored on write: the trait never panics.
pub trait UserRegs {
    /// The user program counter (`sepc`).
    fn pc(&self) -> usize;
    /// Sets the user program counter.
    fn set_pc(&mut self, pc: usize);
    /// Reads integer register `x{n}`.
    fn reg(&self, n: usize) -> usize;
    /// Writes integer register `x{n}`.
    fn set_reg(&mut self, n: usize, value: usize);
    /// The frame as a [`TrapContext`], when it is one: lets seed-style handlers, which take
    /// `&mut TrapContext`, work on the kernel's frame without a copy.
    fn as_trap_context(&mut self) -> Option<&mut TrapContext> {
        None
    }
}

/// ABI register numbers used by the engine.
pub mod abi {
    /// Return address.
    pub const RA: usize = 1;
    /// Stack pointer.
    pub const SP: usize = 2;
    /// First argument and return value.
    pub const A0: usize = 10;
}

/// The rCore-Tutorial-v3 trap frame, field for field (`#[repr(C)]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapContext {
    /// General purpose registers x0..x31.
    pub x: [usize; 32],
    /// Saved `sstatus`.
    pub sstatus: usize,
    /// Saved `sepc`: the user pc.
    pub sepc: usize,
    /// Kernel page table token.
    pub kernel_satp: usize,
    /// Kernel stack pointer of this thread.
    pub kernel_sp: usize,
    /// Address of the kernel's trap handler.
    pub trap_handler: usize,
}

impl UserRegs for TrapContext {
    fn pc(&self) -> usize {
        self.sepc
    }
    fn set_pc(&mut self, pc: usize) {
        self.sepc = pc;
    }
    fn reg(&self, n: usize) -> usize {
        match n {
            1..=31 => self.x[n],
            _ => 0,
        }
    }
    fn set_reg(&mut self, n: usize, value: usize) {
        if let 1..=31 = n {
            self.x[n] = value;
        }
    }
    fn as_trap_context(&mut self) -> Option<&mut TrapContext> {
        Some(self)
    }
}

impl TrapContext {
    /// A frame holding the registers and pc of `regs`.
    #[allow(clippy::field_reassign_with_default)] // see below
    pub fn from_regs(regs: &dyn UserRegs) -> Self {
        // Assigned after `default()`: a struct literal (with `..default()` or an `x: [0; 32]`)
        // is a second big temporary in the frame of an unoptimised build.
        let mut cx = TrapContext::default();
        cx.sepc = regs.pc();
        for n in 1..32 {
            cx.x[n] = regs.reg(n);
        }
        cx
    }

    /// Copies the registers and pc of this frame into `regs`.
    pub fn store_into(&self, regs: &mut dyn UserRegs) {
        for n in 1..32 {
            regs.set_reg(n, self.x[n]);
        }
        regs.set_pc(self.sepc);
    }
}

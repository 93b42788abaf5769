//! Executing simulated and emulated instructions on the trapped register state.

use crate::decode::Insn;
use crate::regs::UserRegs;

impl Insn {
    /// Executes a [`Class::Simulate`](crate::decode::Class::Simulate) or
    /// [`Class::Emulate`](crate::decode::Class::Emulate) instruction located at
    /// `regs.pc()`: updates the destination register and the pc. Returns `false` (and
    /// changes nothing) for an out-of-line instruction.
    pub fn execute(&self, regs: &mut dyn UserRegs) -> bool {
        let _ = regs;
        false
    }
}

//! Types for an eBPF implementation: the uprobe tracepoint kinds of the original crate and
//! the context an eBPF program attached to a uprobe receives.

use crate::regs::{TrapContext, UserRegs};

/// Uprobe tracepoint kinds, as an eBPF implementation names them (the seed's
/// `UProbe_Insn`, `URetProbeEntry_Insn`, ... variants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum TracepointType {
    /// `uprobe_insn`: any instruction, before it executes.
    UProbeInsn,
    /// `uretprobe_insn@entry`: an instruction probe's entry side.
    URetProbeEntryInsn,
    /// `uretprobe_insn@exit`: an instruction probe's post-step side.
    URetProbeExitInsn,
    /// `uprobe_syncfunc`: a function entry.
    UProbeSyncFunc,
    /// `uretprobe_syncfunc@entry`: a function's entry side of a return probe.
    URetProbeEntrySyncFunc,
    /// `uretprobe_syncfunc@exit`: a function's return.
    URetProbeExitSyncFunc,
}

impl TracepointType {
    /// Every kind, in declaration order.
    pub const ALL: [TracepointType; 6] = [
        TracepointType::UProbeInsn,
        TracepointType::URetProbeEntryInsn,
        TracepointType::URetProbeExitInsn,
        TracepointType::UProbeSyncFunc,
        TracepointType::URetProbeEntrySyncFunc,
        TracepointType::URetProbeExitSyncFunc,
    ];

    /// The name a user writes (`uprobe_insn`, `uretprobe_syncfunc@exit`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TracepointType::UProbeInsn => "uprobe_insn",
            TracepointType::URetProbeEntryInsn => "uretprobe_insn@entry",
            TracepointType::URetProbeExitInsn => "uretprobe_insn@exit",
            TracepointType::UProbeSyncFunc => "uprobe_syncfunc",
            TracepointType::URetProbeEntrySyncFunc => "uretprobe_syncfunc@entry",
            TracepointType::URetProbeExitSyncFunc => "uretprobe_syncfunc@exit",
        }
    }

    /// Parses a name, ignoring ASCII case as the seed's eBPF glue did.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The `ptype` field of [`UProbeBPFContext`]: 0 for function probes, 1 for instruction
    /// probes (the seed's numbering).
    pub fn ptype(self) -> usize {
        match self {
            TracepointType::UProbeSyncFunc
            | TracepointType::URetProbeEntrySyncFunc
            | TracepointType::URetProbeExitSyncFunc => 0,
            _ => 1,
        }
    }
}

/// What an eBPF program attached to a uprobe sees: probe kind, probed address, registers.
/// Laid out as in rcore-ebpf (`#[repr(C)]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UProbeBPFContext {
    /// 0 for function probes, 1 for instruction probes.
    pub ptype: usize,
    /// The probed address.
    pub paddr: usize,
    /// The user registers at the hit.
    pub tf: TrapContext,
}

impl UProbeBPFContext {
    /// The context for a hit of kind `ptype` at `probed_addr` with frame `tf`.
    pub fn new(tf: &TrapContext, probed_addr: usize, ptype: usize) -> Self {
        UProbeBPFContext {
            ptype,
            paddr: probed_addr,
            tf: *tf,
        }
    }

    /// The same from any register state.
    pub fn from_regs(regs: &dyn UserRegs, probed_addr: usize, ptype: usize) -> Self {
        Self::new(&TrapContext::from_regs(regs), probed_addr, ptype)
    }

    /// The context as the byte pointer an eBPF interpreter takes.
    pub fn as_ptr(&self) -> *const u8 {
        (self as *const Self).cast()
    }
}

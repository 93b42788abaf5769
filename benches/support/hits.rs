//! One probe hit of each instruction class, driven through the public trap API against an
//! in-memory user space, exactly as a kernel would: `handle_breakpoint` with a trap frame
//! whose pc is the breakpoint. Shared by the criterion benchmarks and `tests/alloc_free.rs`.

use std::hint::black_box;

use ruprobes::testing::{MemSpace, DATA, TEXT};
use ruprobes::{abi, Consumer, Trap, TrapContext, Uprobes, UserRegs};

/// The program path the probes are keyed by.
pub const PATH: &str = "/bin/bench";

/// Where a probed function "returns" to (any address: the return trap only sets the pc).
const CALLER: usize = TEXT + 0x100;
/// The stack pointer at the probed function's entry.
const STACK: usize = 0x8000;

const A0: u32 = 10;
const A1: u32 = 11;
const A2: u32 = 12;
const SP: u32 = 2;

fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (rd << 7) | 0x13
}
fn ld(rd: u32, rs1: u32) -> u32 {
    (rs1 << 15) | (3 << 12) | (rd << 7) | 0x03
}
/// `beq rs1, rs2, +8`.
fn beq8(rs1: u32, rs2: u32) -> u32 {
    (rs2 << 20) | (rs1 << 15) | (8 << 7) | 0x63
}

/// A kind of breakpoint trap the engine handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// A breakpoint that is not a probe's (the program's own `c.ebreak`): the floor.
    NotOurs,
    /// `beq` (not taken), simulated in the trap: one trap.
    Simulate,
    /// `addi`, emulated in the trap: one trap.
    Emulate,
    /// `ld`, stepped out of line: the probe trap and the slot's trap.
    Xol,
    /// A return probe on a function entry (`addi sp, sp, -16`): the entry trap and the
    /// return-trampoline trap.
    Uretprobe,
}

impl Site {
    /// Every kind, the baseline first.
    pub const ALL: [Site; 5] = [
        Site::NotOurs,
        Site::Simulate,
        Site::Emulate,
        Site::Xol,
        Site::Uretprobe,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Site::NotOurs => "not_ours",
            Site::Simulate => "simulate_beq",
            Site::Emulate => "emulate_addi",
            Site::Xol => "xol_ld_two_traps",
            Site::Uretprobe => "uretprobe_entry_return",
        }
    }

    /// Its address in the program.
    pub fn addr(self) -> usize {
        TEXT + match self {
            Site::Simulate => 0x0,
            Site::Emulate => 0x4,
            Site::Xol => 0x8,
            Site::Uretprobe => 0xc,
            Site::NotOurs => 0x10,
        }
    }
}

/// The program: one instruction per site.
fn program() -> Vec<u8> {
    let mut code = Vec::new();
    for word in [beq8(A0, A1), addi(A0, A0, 1), ld(A2, A1), addi(SP, SP, -16)] {
        code.extend_from_slice(&word.to_le_bytes());
    }
    code.extend_from_slice(&0x9002u16.to_le_bytes()); // c.ebreak
    code.extend_from_slice(&0x0001u16.to_le_bytes()); // c.nop
    code
}

/// An entry consumer like a tracer's: entry and post handlers that look at registers.
pub fn entry_consumer() -> Consumer {
    Consumer::new()
        .on_entry(|regs, hit| {
            black_box((regs.reg(abi::A0), hit.addr));
        })
        .on_post(|regs, hit| {
            black_box((regs.pc(), hit.addr));
        })
}

/// A return consumer like a tracer's: reads the return value.
pub fn return_consumer() -> Consumer {
    Consumer::new().on_return(|regs, ret| {
        black_box((regs.reg(abi::A0), ret.func));
    })
}

/// An engine with one probe per class armed in one process.
pub struct Hits {
    /// The engine.
    pub engine: Uprobes,
    /// The process's memory.
    pub space: MemSpace,
    /// The thread's trap frame.
    pub regs: TrapContext,
}

impl Hits {
    /// Arms a probe on every site except [`Site::NotOurs`].
    pub fn new() -> Result<Self, ruprobes::Error> {
        let engine = Uprobes::new();
        let mut space = MemSpace::with_text(1, &program());
        engine.on_exec(&mut space, PATH)?;
        for site in [Site::Simulate, Site::Emulate, Site::Xol] {
            engine.register(PATH, site.addr(), entry_consumer(), Some(&mut space))?;
        }
        engine.register(
            PATH,
            Site::Uretprobe.addr(),
            return_consumer(),
            Some(&mut space),
        )?;
        let mut regs = TrapContext::default();
        regs.set_reg(A1 as usize, DATA);
        Ok(Hits {
            engine,
            space,
            regs,
        })
    }

    /// One trap at `pc`; `true` if the engine answered `expect`.
    fn trap(&mut self, pc: usize, expect: Trap) -> bool {
        self.regs.set_pc(pc);
        self.engine
            .handle_breakpoint(&mut self.space, &mut self.regs)
            == expect
    }

    /// Every trap of one hit at `site`, as the CPU would raise them. Returns whether the
    /// engine handled them as it must (the thread ends up where the program continues).
    pub fn hit(&mut self, site: Site) -> bool {
        let pc = site.addr();
        match site {
            Site::NotOurs => self.trap(pc, Trap::NotOurs),
            Site::Simulate | Site::Emulate => {
                self.trap(pc, Trap::Handled) && self.regs.pc() == pc + 4
            }
            Site::Xol => {
                // The probe trap moves the thread into its slot; the slot's instruction runs
                // (here: not at all, the value does not matter) and its breakpoint traps.
                if !self.trap(pc, Trap::Handled) {
                    return false;
                }
                let slot_end = self.regs.pc() + 4;
                self.trap(slot_end, Trap::Handled) && self.regs.pc() == pc + 4
            }
            Site::Uretprobe => {
                self.regs.set_reg(abi::SP, STACK);
                self.regs.set_reg(abi::RA, CALLER);
                if !self.trap(pc, Trap::Handled) {
                    return false;
                }
                // The function body runs and returns through the hijacked ra.
                let trampoline = self.regs.reg(abi::RA);
                self.regs.set_reg(abi::SP, STACK);
                self.trap(trampoline, Trap::Handled) && self.regs.pc() == CALLER
            }
        }
    }
}

/// An engine with `n` probes of one class armed in one process, for per-hit cost as
/// probes multiply, and spare unprobed instructions for register costs.
pub struct Many {
    /// The engine.
    pub engine: Uprobes,
    /// The process's memory.
    pub space: MemSpace,
    /// The thread's trap frame.
    pub regs: TrapContext,
    /// The probe [`Many::hit`] hits: the middle one.
    pub probed: usize,
    /// Instructions with no probe, free for registering.
    pub spare: Vec<usize>,
    /// Whether the probes step out of line (two traps per hit, one slot each).
    xol: bool,
    /// How many probes are armed.
    n: usize,
    /// The index of the probe [`Many::hit_spread`] hits next.
    next: usize,
}

/// The step between the probes [`Many::hit_spread`] hits one after the other: a prime, so
/// the walk visits every probe of any count it does not divide (1, 1 000 and 100 000),
/// jumping far enough that neighbouring entries of the map or of memory do not help.
const SPREAD_STEP: usize = 7_919;

impl Many {
    /// `n` probes (n >= 1) on `n` consecutive instructions, then `spare` unprobed ones: all
    /// `addi a0, a0, 1` (emulated), or with `xol` all `ld a2, 0(a1)` (out of line).
    pub fn new(n: usize, spare: usize, xol: bool) -> Result<Self, ruprobes::Error> {
        let n = n.max(1);
        let insn = if xol { ld(A2, A1) } else { addi(A0, A0, 1) };
        let code: Vec<u8> = (0..n + spare).flat_map(|_| insn.to_le_bytes()).collect();
        let engine = Uprobes::new();
        // Not `with_text`: its data page would land inside this long text.
        let mut space = MemSpace::new(1);
        space.map(TEXT, code.len(), true);
        space.poke(TEXT, &code);
        engine.on_exec(&mut space, PATH)?;
        let site = |i: usize| TEXT + 4 * i;
        for i in 0..n {
            engine.register(PATH, site(i), entry_consumer(), Some(&mut space))?;
        }
        Ok(Many {
            engine,
            space,
            regs: TrapContext::default(),
            probed: site(n / 2),
            spare: (n..n + spare).map(site).collect(),
            xol,
            n,
            next: 0,
        })
    }

    /// Every trap of one hit of the middle probe, the same site every time; `true` if they
    /// were handled.
    pub fn hit(&mut self) -> bool {
        self.hit_at(self.probed)
    }

    /// Every trap of one hit of the next probe in a walk over all of them, a different
    /// site every time (as when every instruction is probed); `true` if they were handled.
    pub fn hit_spread(&mut self) -> bool {
        let pc = TEXT + 4 * self.next;
        self.next = (self.next + SPREAD_STEP) % self.n;
        self.hit_at(pc)
    }

    /// Every trap of one hit of the probe at `pc`.
    fn hit_at(&mut self, pc: usize) -> bool {
        self.regs.set_pc(pc);
        if self
            .engine
            .handle_breakpoint(&mut self.space, &mut self.regs)
            != Trap::Handled
        {
            return false;
        }
        if self.xol {
            let slot_end = self.regs.pc() + 4;
            self.regs.set_pc(slot_end);
            if self
                .engine
                .handle_breakpoint(&mut self.space, &mut self.regs)
                != Trap::Handled
            {
                return false;
            }
        }
        self.regs.pc() == pc + 4
    }
}

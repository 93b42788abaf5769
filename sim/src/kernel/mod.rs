//! The sim kernel: processes, their address spaces, the scheduler and the system calls.
//!
//! Scheduling is cooperative and deterministic (the QEMU test kernel does the same): one
//! FIFO ready queue; the running process keeps the CPU until it yields (back of the
//! queue), exits, or blocks in `waitpid`. `fork` appends the child and the parent goes on.

pub mod aspace;
pub mod image;
pub(crate) mod syscall;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::cpu::{Cpu, FpRegs};
use aspace::AddressSpace;
use image::Image;

/// A process id (pids start at 1).
pub type Pid = usize;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It called `exit(code)`.
    Exited(i32),
    /// It was killed by this signal (5 SIGTRAP, 11 SIGSEGV, 4 SIGILL).
    Killed(i32),
}

impl ExitStatus {
    /// The status a shell would report, as `qemu-riscv64` exits: the low 8 bits of the exit
    /// code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code & 0xff,
            ExitStatus::Killed(signal) => 128 + signal,
        }
    }

    /// The value `waitpid` stores for a child with this status (128 + signal when killed).
    pub fn wait_code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Killed(signal) => 128 + signal,
        }
    }
}

/// A user register file: `x0..x31`, the pc, and the F/D registers with `fcsr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Regs {
    /// Integer registers (`x[0]` is 0).
    pub x: [u64; 32],
    /// The program counter.
    pub pc: u64,
    /// `f0..f31` and `fcsr`.
    pub fp: FpRegs,
}

impl Regs {
    /// The registers `cpu` holds now.
    pub fn of(cpu: &Cpu) -> Regs {
        Regs {
            x: cpu.x,
            pc: cpu.pc,
            fp: cpu.fp,
        }
    }

    /// Puts these registers into `cpu`.
    pub fn load_into(&self, cpu: &mut Cpu) {
        cpu.x = self.x;
        cpu.pc = self.pc;
        cpu.fp = self.fp;
    }
}

/// What a process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// In the ready queue.
    Ready,
    /// On the CPU (its registers live in the CPU).
    Running,
    /// In `waitpid` for `target` (-1: any child), storing the status at `status_ptr`.
    Blocked {
        /// The awaited pid, or -1.
        target: i64,
        /// Where to store the exit code (0: nowhere).
        status_ptr: u64,
    },
    /// Ended; waiting to be reaped by its parent.
    Zombie(ExitStatus),
}

/// One process (single-threaded: its thread id is its pid).
#[derive(Debug)]
pub struct Process {
    /// Its id.
    pub pid: Pid,
    /// Its parent, if any.
    pub parent: Option<Pid>,
    /// The program it runs.
    pub image: Arc<Image>,
    /// Its memory.
    pub aspace: AddressSpace,
    /// Saved registers while not running.
    pub regs: Regs,
    /// Its state.
    pub state: ProcState,
}

/// The process table and the ready queue.
#[derive(Debug, Default)]
pub struct Kernel {
    /// Every process not yet reaped, by pid.
    pub procs: BTreeMap<Pid, Process>,
    /// Ready processes, in FIFO order.
    pub ready: VecDeque<Pid>,
    /// The running process.
    pub current: Option<Pid>,
    /// The pid the next process gets.
    pub next_pid: Pid,
}

impl Kernel {
    /// An empty kernel; the first process gets pid 1.
    pub fn new() -> Self {
        Kernel {
            next_pid: 1,
            ..Default::default()
        }
    }

    /// Adds a ready process running `image` in `aspace`, starting at the image's entry.
    pub fn spawn(
        &mut self,
        parent: Option<Pid>,
        image: Arc<Image>,
        aspace: AddressSpace,
        regs: Regs,
    ) -> Pid {
        let pid = self.next_pid;
        self.next_pid += 1;
        self.procs.insert(
            pid,
            Process {
                pid,
                parent,
                image,
                aspace,
                regs,
                state: ProcState::Ready,
            },
        );
        self.ready.push_back(pid);
        pid
    }

    /// The children of `parent` that match a `waitpid` target (-1: any).
    pub fn children(&self, parent: Pid, target: i64) -> impl Iterator<Item = &Process> + '_ {
        self.procs
            .values()
            .filter(move |p| p.parent == Some(parent) && (target == -1 || p.pid as i64 == target))
    }
}

/// Registers at process start: all zero except `sp` and `pc`.
pub fn initial_regs(entry: u64) -> Regs {
    let mut regs = Regs {
        pc: entry,
        ..Regs::default()
    };
    regs.x[ruprobes::abi::SP] = aspace::STACK_TOP;
    regs
}

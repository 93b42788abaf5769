//! The sim kernel: processes and their threads, address spaces, the scheduler and the
//! system calls of two personalities.
//!
//! Split by concern: [`image`] (ELF loading), [`aspace`] (page tables), [`memory`] (brk,
//! mmap and demand paging), [`files`] (the read-only `--root` view and file descriptors),
//! [`time`] (clocks from the instruction count), [`signals`] (recorded actions, self-kill),
//! [`startup`] (the Linux initial stack), `threads` (clone, futex, thread exit), `syscall`
//! (calls both personalities share: write, read, fork, exec, wait, exit) and the two tables
//! mapping numbers to them: `teaching` (rCore-Tutorial-v3 numbers) and `linux`.
//!
//! Scheduling is deterministic: one FIFO ready queue of threads. A thread keeps the CPU
//! until it yields (back of the queue), exits or blocks; under the Linux personality it is
//! also preempted after [`QUANTUM`] instructions when another thread is ready. `fork` and
//! `clone` append the child and the parent goes on. The teaching personality stays
//! cooperative, like the QEMU test kernel, so their traces agree.

pub mod aspace;
pub mod files;
pub mod image;
pub(crate) mod linux;
pub mod memory;
pub mod signals;
pub mod startup;
pub(crate) mod syscall;
pub(crate) mod teaching;
pub(crate) mod threads;
pub mod time;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::cpu::{Cpu, FpRegs};
use aspace::AddressSpace;
use files::FdTable;
use image::Image;
use signals::SignalActions;

/// A process id (pids start at 1). Threads share the id space: a process's first thread
/// has the process's id as its tid.
pub type Pid = usize;
/// A thread id.
pub type Tid = usize;

/// Instructions a thread may run while another is ready (Linux personality).
pub const QUANTUM: u64 = 20_000;

/// Which system-call interface the machine offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Personality {
    /// Choose from the first program's ELF ([`Image::linux_abi`]).
    #[default]
    Auto,
    /// Linux user ABI (static glibc, musl and Rust std programs).
    Linux,
    /// rCore-Tutorial-style teaching kernel (write 64, exit 93, yield 124, ... exec 221,
    /// waitpid 260).
    Teaching,
}

impl Personality {
    /// The personality for a first program `image` when this one is the setting.
    pub fn resolve(self, image: &Image) -> Personality {
        match self {
            Personality::Auto if image.linux_abi => Personality::Linux,
            Personality::Auto => Personality::Teaching,
            chosen => chosen,
        }
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It called `exit(code)`.
    Exited(i32),
    /// It was killed by this signal (5 SIGTRAP, 11 SIGSEGV, 4 SIGILL, 6 SIGABRT, 9 SIGKILL).
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

    /// The value the teaching kernel's `waitpid` stores (128 + signal when killed).
    pub fn wait_code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Killed(signal) => 128 + signal,
        }
    }

    /// The status word Linux's `wait4` stores: `code << 8`, or the signal number.
    pub fn linux_wait_status(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => (code & 0xff) << 8,
            ExitStatus::Killed(signal) => signal & 0x7f,
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

/// What a thread waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// A child of its process: `target` (-1: any), storing the status at `status_ptr`.
    Child {
        /// The awaited pid, or -1.
        target: i64,
        /// Where to store the status (0: nowhere).
        status_ptr: u64,
    },
    /// A `futex` wake at this user address, or the deadline (kernel nanoseconds).
    Futex {
        /// The futex word's address.
        addr: u64,
        /// When the wait times out, if ever.
        deadline: Option<u64>,
    },
    /// `nanosleep` until this kernel time (nanoseconds).
    Sleep {
        /// When it wakes.
        until: u64,
    },
}

/// What a thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// In the ready queue.
    Ready,
    /// On the CPU (its registers live in the CPU).
    Running,
    /// Off the CPU until woken.
    Blocked(Wait),
}

/// What a process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// Some thread of it still runs.
    Alive,
    /// Ended; waiting to be reaped by its parent.
    Zombie(ExitStatus),
}

/// One thread: its registers and scheduling state.
#[derive(Debug)]
pub struct Thread {
    /// Its id.
    pub tid: Tid,
    /// The process it belongs to.
    pub pid: Pid,
    /// Saved registers while not running.
    pub regs: Regs,
    /// Its state.
    pub state: ThreadState,
    /// `set_tid_address` / `CLONE_CHILD_CLEARTID`: zeroed and futex-woken at exit.
    pub clear_child_tid: u64,
    /// Its blocked-signal mask (recorded; see [`signals`]).
    pub sigmask: u64,
    /// Its `sigaltstack` (sp, flags, size), recorded.
    pub altstack: [u64; 3],
}

/// One process: an address space, its files and signal actions, and its threads.
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
    /// Its open files.
    pub files: FdTable,
    /// Its recorded signal actions.
    pub signals: SignalActions,
    /// Its live threads, in creation order (the first is the main thread).
    pub threads: Vec<Tid>,
    /// Its state.
    pub state: ProcState,
}

/// The process and thread tables and the ready queue.
#[derive(Debug, Default)]
pub struct Kernel {
    /// Every process not yet reaped, by pid.
    pub procs: BTreeMap<Pid, Process>,
    /// Every live thread, by tid.
    pub threads: BTreeMap<Tid, Thread>,
    /// Ready threads, in FIFO order.
    pub ready: VecDeque<Tid>,
    /// The running thread.
    pub current: Option<Tid>,
    /// The id the next process or thread gets.
    pub next_id: usize,
    /// Nanoseconds the clock jumped forward while every thread slept (see [`time`]).
    pub idle_ns: u64,
}

impl Kernel {
    /// An empty kernel; the first process gets pid 1.
    pub fn new() -> Self {
        Kernel {
            next_id: 1,
            ..Default::default()
        }
    }

    fn take_id(&mut self) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds a process running `image` in `aspace` with one ready thread of registers `regs`.
    pub fn spawn(
        &mut self,
        parent: Option<Pid>,
        image: Arc<Image>,
        aspace: AddressSpace,
        files: FdTable,
        signals: SignalActions,
        regs: Regs,
    ) -> Pid {
        let pid = self.take_id();
        self.procs.insert(
            pid,
            Process {
                pid,
                parent,
                image,
                aspace,
                files,
                signals,
                threads: Vec::new(),
                state: ProcState::Alive,
            },
        );
        self.add_thread(pid, pid, regs);
        pid
    }

    /// Adds a ready thread to process `pid` and returns its tid.
    pub fn spawn_thread(&mut self, pid: Pid, regs: Regs) -> Tid {
        let tid = self.take_id();
        self.add_thread(pid, tid, regs);
        tid
    }

    fn add_thread(&mut self, pid: Pid, tid: Tid, regs: Regs) {
        self.threads.insert(
            tid,
            Thread {
                tid,
                pid,
                regs,
                state: ThreadState::Ready,
                clear_child_tid: 0,
                sigmask: 0,
                altstack: [0, 2, 0], // SS_DISABLE
            },
        );
        if let Some(proc) = self.procs.get_mut(&pid) {
            proc.threads.push(tid);
        }
        self.ready.push_back(tid);
    }

    /// The process of the running thread.
    pub fn current_pid(&self) -> Option<Pid> {
        self.threads.get(&self.current?).map(|t| t.pid)
    }

    /// Makes a blocked thread ready, with `a0` as the result of the call it blocked in.
    pub fn wake(&mut self, tid: Tid, a0: i64) {
        if let Some(t) = self.threads.get_mut(&tid) {
            if matches!(t.state, ThreadState::Blocked(_)) {
                t.regs.x[ruprobes::abi::A0] = a0 as u64;
                t.state = ThreadState::Ready;
                self.ready.push_back(tid);
            }
        }
    }

    /// Removes thread `tid` from every table.
    pub fn remove_thread(&mut self, tid: Tid) {
        if let Some(t) = self.threads.remove(&tid) {
            if let Some(proc) = self.procs.get_mut(&t.pid) {
                proc.threads.retain(|&x| x != tid);
            }
        }
        self.ready.retain(|&x| x != tid);
        if self.current == Some(tid) {
            self.current = None;
        }
    }

    /// The children of `parent` that match a wait target (-1: any).
    pub fn children(&self, parent: Pid, target: i64) -> impl Iterator<Item = &Process> + '_ {
        self.procs
            .values()
            .filter(move |p| p.parent == Some(parent) && (target == -1 || p.pid as i64 == target))
    }
}

/// Registers at process start: all zero except `sp` and `pc`.
pub fn initial_regs(entry: u64, sp: u64) -> Regs {
    let mut regs = Regs {
        pc: entry,
        ..Regs::default()
    };
    regs.x[ruprobes::abi::SP] = sp;
    regs
}

//! Runs a fixture program on rvemu's CPU, for the interpreter-speed comparison of
//! `cargo xtask perf`.
//!
//! rvemu has no user processes or system calls of our kind, so this module plays the
//! kernel: it builds Sv39 page tables in rvemu's DRAM that map the program's pages, its
//! 64 KiB stack below `0x4000_0000`, enables paging with one `csrw satp` executed in
//! M-mode, drops the CPU to U-mode at the entry point and steps it with
//! `Cpu::execute()` (rvemu's own per-instruction function; no device ticks). An `ecall` comes
//! back as `EnvironmentCallFromUMode` and is served here: `write`, `exit`, `yield`,
//! `getpid`, `get_time` (always 0). A breakpoint ends the run, as the SIGTRAP kill of our
//! kernels does. Programs that fork or exec are not supported.
//!
//! The same instructions run as in our simulator; the caller checks that the output and
//! the instruction count agree.

use std::collections::HashMap;
use std::time::Instant;

use ruprobes_sim::kernel::image::Image;
use rvemu::bus::DRAM_BASE;
use rvemu::cpu::{Cpu, Mode, BYTE, DOUBLEWORD};
use rvemu::exception::Exception;

const PAGE: u64 = 4096;
/// The user stack, as in both kernels: 16 pages ending at `0x4000_0000`.
const STACK_TOP: u64 = 0x4000_0000;
const STACK_PAGES: u64 = 16;
/// `csrw satp, t0`.
const CSRW_SATP_T0: u32 = 0x1802_9073;
const T0: u64 = 5;
const SP: u64 = 2;
const A0: u64 = 10;
const A7: u64 = 17;

/// What one run on rvemu did.
#[derive(Debug)]
pub struct Run {
    /// Instructions retired: `ecall`s trap and are not counted, as in our simulator.
    pub instructions: u64,
    /// Wall time of the stepping loop alone.
    pub secs: f64,
    /// Everything written to fd 1 and 2.
    pub stdout: Vec<u8>,
    /// The exit code; `None` if the program's own `ebreak` ended it (our kernels kill it
    /// with SIGTRAP there).
    pub exit_code: Option<i64>,
}

/// Physical memory handed out page by page from DRAM, and the program's page table.
struct Kernel {
    cpu: Cpu,
    next_frame: u64,
    root: u64,
    /// Virtual page -> physical page.
    pages: HashMap<u64, u64>,
}

impl Kernel {
    fn frame(&mut self) -> u64 {
        let frame = self.next_frame;
        self.next_frame += PAGE;
        frame // DRAM reads as zeros until written
    }

    fn write_bytes(&mut self, pa: u64, bytes: &[u8]) -> Result<(), String> {
        for (i, &b) in bytes.iter().enumerate() {
            self.cpu
                .bus
                .write(pa + i as u64, u64::from(b), BYTE)
                .map_err(|e| format!("rvemu bus write: {e:?}"))?;
        }
        Ok(())
    }

    /// Maps `va` to a fresh frame (all permissions: rvemu does not check them).
    fn map(&mut self, va: u64) -> Result<u64, String> {
        if let Some(&pa) = self.pages.get(&va) {
            return Ok(pa);
        }
        let mut table = self.root;
        for level in [2u32, 1] {
            let index = (va >> (12 + 9 * level)) & 0x1ff;
            let entry_pa = table + index * 8;
            let pte = self
                .cpu
                .bus
                .read(entry_pa, DOUBLEWORD)
                .map_err(|e| format!("rvemu bus read: {e:?}"))?;
            table = if pte & 1 != 0 {
                (pte >> 10) << 12
            } else {
                let next = self.frame();
                self.cpu
                    .bus
                    .write(entry_pa, (next >> 12) << 10 | 1, DOUBLEWORD)
                    .map_err(|e| format!("{e:?}"))?;
                next
            };
        }
        let pa = self.frame();
        let leaf = (pa >> 12) << 10 | 0xdf; // V R W X U A D
        let entry_pa = table + ((va >> 12) & 0x1ff) * 8;
        self.cpu
            .bus
            .write(entry_pa, leaf, DOUBLEWORD)
            .map_err(|e| format!("{e:?}"))?;
        self.pages.insert(va, pa);
        Ok(pa)
    }

    /// Reads user memory through the mapping.
    fn read_user(&mut self, va: u64, len: u64) -> Result<Vec<u8>, String> {
        (va..va + len)
            .map(|a| {
                let pa = self
                    .pages
                    .get(&(a & !(PAGE - 1)))
                    .ok_or(format!("write from unmapped {a:#x}"))?;
                let byte = self
                    .cpu
                    .bus
                    .read(pa + (a & (PAGE - 1)), BYTE)
                    .map_err(|e| format!("{e:?}"))?;
                Ok(byte as u8)
            })
            .collect()
    }
}

/// Runs `image` to its exit on rvemu, at most `max_insns` instructions.
pub fn run(image: &Image, max_insns: u64) -> Result<Run, String> {
    // Frames from DRAM_BASE + 1 MiB; the bootstrap instruction sits at DRAM_BASE.
    let mut k = Kernel {
        cpu: Cpu::new(),
        next_frame: DRAM_BASE + (1 << 20),
        root: 0,
        pages: HashMap::new(),
    };
    k.root = k.frame();
    for page in &image.pages {
        let pa = k.map(page.va)?;
        k.write_bytes(pa, &page.bytes)?;
    }
    for i in 1..=STACK_PAGES {
        k.map(STACK_TOP - i * PAGE)?;
    }
    k.write_bytes(DRAM_BASE, &CSRW_SATP_T0.to_le_bytes())?;
    k.cpu.pc = DRAM_BASE;
    k.cpu.xregs.write(T0, 8 << 60 | k.root >> 12);
    k.cpu
        .execute()
        .map_err(|e| format!("enabling paging: {e:?}"))?;
    k.cpu.mode = Mode::User;
    for r in 1..32 {
        k.cpu.xregs.write(r, 0);
    }
    k.cpu.xregs.write(SP, STACK_TOP);
    k.cpu.pc = image.entry;

    let mut stdout = Vec::new();
    let mut instructions = 0u64;
    let start = Instant::now();
    let exit_code = loop {
        if instructions >= max_insns {
            return Err(format!("no exit after {max_insns} instructions"));
        }
        let pc = k.cpu.pc;
        match k.cpu.execute() {
            Ok(_) => instructions += 1,
            Err(Exception::EnvironmentCallFromUMode) => {
                let arg = |k: &Kernel, n: u64| k.cpu.xregs.read(A0 + n);
                let result = match k.cpu.xregs.read(A7) {
                    64 => {
                        let (buf, len) = (arg(&k, 1), arg(&k, 2));
                        stdout.extend(k.read_user(buf, len)?);
                        len
                    }
                    93 => break Some(arg(&k, 0) as i64),
                    124 | 169 => 0,
                    172 => 1,
                    other => return Err(format!("system call {other} is not supported on rvemu")),
                };
                k.cpu.xregs.write(A0, result);
            }
            Err(Exception::Breakpoint) => break None,
            Err(e) => return Err(format!("{e:?} at pc {pc:#x}")),
        }
    };
    let secs = start.elapsed().as_secs_f64();
    Ok(Run {
        instructions,
        secs,
        stdout,
        exit_code,
    })
}

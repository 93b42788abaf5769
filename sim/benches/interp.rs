//! Interpreter throughput, in millions of guest instructions per second:
//! - a loop of ordinary integer code (loads, stores, ALU, multiply, branches, a call and
//!   return per 64 loads) run by a bare [`Cpu`];
//! - the larger fixture programs (sort, crc, interp) run end to end by a [`Machine`]
//!   (ELF loading, syscalls and machine set-up included), repeated to get a measurable time;
//! - the same loop on `rvemu` (bare M-mode, stepped with `Cpu::execute`), for the
//!   sim-vs-rvemu ratio of DESIGN §5.
//!
//! Run with `cargo bench -p ruprobes-sim --bench interp`. Prints one line per round; no
//! assertions (benchmarks are benchmarks, not tests). Besides wall-clock MIPS it prints MIPS
//! per second of CPU time actually given to the thread (Linux `schedstat`), which is the
//! honest figure on a shared, busy machine.

use ruprobes_sim::cpu::{Cpu, Stop};
use ruprobes_sim::machine::{Config, Machine, FIXTURES_DIR};
use ruprobes_sim::mem::PhysMem;
use ruprobes_sim::sv39::{map_page, new_root, PTE_A, PTE_D, PTE_R, PTE_U, PTE_W, PTE_X};
use std::time::Instant;

fn i(imm: i32, rs1: u32, f3: u32, rd: u32, op: u32) -> u32 {
    (imm as u32) << 20 | rs1 << 15 | f3 << 12 | rd << 7 | op
}
fn r(f7: u32, rs2: u32, rs1: u32, f3: u32, rd: u32) -> u32 {
    f7 << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | rd << 7 | 0x33
}
fn sd(rs2: u32, rs1: u32) -> u32 {
    rs2 << 20 | rs1 << 15 | 3 << 12 | 0x23
}
fn bne(rs1: u32, off: i32) -> u32 {
    let m = off as u32;
    (m >> 12 & 1) << 31
        | (m >> 5 & 0x3f) << 25
        | rs1 << 15
        | 1 << 12
        | (m >> 1 & 0xf) << 8
        | (m >> 11 & 1) << 7
        | 0x63
}
fn jal(rd: u32, off: i32) -> u32 {
    let m = off as u32;
    (m >> 20 & 1) << 31
        | (m >> 1 & 0x3ff) << 21
        | (m >> 11 & 1) << 20
        | (m >> 12 & 0xff) << 12
        | rd << 7
        | 0x6f
}

const CODE: u64 = 0x10000;
const DATA: u64 = 0x20000;

fn main() {
    bare_loop();
    rvemu_loop();
    for name in ["sort", "crc", "interp"] {
        fixture(name);
    }
}

/// Runs fixture `name` repeatedly in fresh machines and prints the throughput.
fn fixture(name: &str) {
    let Ok(elf) = std::fs::read(format!("{FIXTURES_DIR}/{name}.elf")) else {
        println!("{name}: fixture not found");
        return;
    };
    let (mut insns, mut runs) = (0u64, 0u32);
    let cpu_before = thread_cpu_ns();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 2.0 {
        let mut machine = Machine::new(Config::default());
        let result = machine.load(name, &elf).and_then(|_| machine.run());
        match result {
            Ok(r) => insns += r.instructions,
            Err(e) => {
                println!("{name}: {e}");
                return;
            }
        }
        runs += 1;
    }
    report(
        &format!("{name} x{runs} (whole runs)"),
        insns,
        start,
        cpu_before,
    );
}

fn report(what: &str, n: u64, start: Instant, cpu_before: Option<u64>) {
    let secs = start.elapsed().as_secs_f64();
    let on_cpu = match (cpu_before, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => format!(
            ", {:.0} MIPS of CPU time",
            n as f64 / ((b - a) as f64 / 1e9) / 1e6
        ),
        _ => String::new(),
    };
    println!(
        "{what}: {n} instructions in {secs:.3} s: {:.0} MIPS wall{on_cpu}",
        n as f64 / secs / 1e6
    );
}

/// The hand-assembled loop on a bare CPU.
fn bare_loop() {
    let program = loop_program();
    let mut mem = PhysMem::new(64);
    let Some(root) = new_root(&mut mem).ok() else {
        return;
    };
    for (va, flags) in [(CODE, PTE_R | PTE_X), (DATA, PTE_R | PTE_W | PTE_D)] {
        let Some(frame) = mem.alloc_frame() else {
            return;
        };
        if map_page(&mut mem, root, va, frame, flags | PTE_U | PTE_A).is_err() {
            return;
        }
        if va == CODE {
            for (k, word) in program.iter().enumerate() {
                mem.write_u32(frame + 4 * k as u64, *word);
            }
        }
    }
    let mut cpu = Cpu::new();
    cpu.set_page_table(root);
    for round in 0..3 {
        cpu.pc = CODE;
        cpu.x = [0; 32];
        cpu.x[11] = DATA;
        cpu.x[14] = OUTER;
        let before = cpu.instret();
        let cpu_before = thread_cpu_ns();
        let start = Instant::now();
        let stop = cpu.run(&mut mem, u64::MAX);
        let n = cpu.instret() - before;
        report(
            &format!("loop round {round}: {stop:?}"),
            n,
            start,
            cpu_before,
        );
        if stop != Stop::Ecall {
            break;
        }
    }
}

/// Nanoseconds this thread has spent running on a CPU (Linux only).
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// The benchmark loop; a4 holds the outer iteration count, a1 the data address.
fn loop_program() -> [u32; 16] {
    let (a0, a1, a2, a3, a4, t0, t1, ra) = (10, 11, 12, 13, 14, 5, 6, 1);
    [
        i(64, 0, 0, a2, 0x13),  // 0: li a2, 64
        i(0, a1, 0, a3, 0x13),  // 4: mv a3, a1
        i(0, a3, 3, t0, 0x03),  // 8: ld t0, 0(a3)
        r(0, t0, a0, 0, a0),    // 12: add a0, a0, t0
        i(3, t0, 0, t0, 0x13),  // 16: addi t0, t0, 3
        sd(t0, a3),             // 20: sd t0, 0(a3)
        i(8, a3, 0, a3, 0x13),  // 24: addi a3, a3, 8
        i(-1, a2, 0, a2, 0x13), // 28: addi a2, a2, -1
        bne(a2, -24),           // 32: bne a2, x0, 8
        jal(ra, 16),            // 36: call 52
        i(-1, a4, 0, a4, 0x13), // 40: addi a4, a4, -1
        bne(a4, -44),           // 44: bne a4, x0, 0
        0x73,                   // 48: ecall
        r(1, a0, a0, 0, t1),    // 52: mul t1, a0, a0
        r(0, t1, a0, 4, a0),    // 56: xor a0, a0, t1
        i(0, ra, 0, 0, 0x67),   // 60: ret
    ]
}

/// Outer iterations of the loop on our CPU (each is 456 instructions).
const OUTER: u64 = 1_000_000;

/// The same loop on rvemu, with code and data at the same addresses in bare M-mode.
fn rvemu_loop() {
    use rvemu::cpu::{DOUBLEWORD, WORD};
    const BASE: u64 = 0x8000_0000;
    let mut cpu = rvemu::cpu::Cpu::new();
    for (k, word) in loop_program().iter().enumerate() {
        if cpu
            .bus
            .write(BASE + 4 * k as u64, *word as u64, WORD)
            .is_err()
        {
            return;
        }
    }
    for k in 0..64 {
        if cpu.bus.write(BASE + 0x1000 + 8 * k, 0, DOUBLEWORD).is_err() {
            return;
        }
    }
    cpu.pc = BASE;
    cpu.xregs.write(11, BASE + 0x1000);
    cpu.xregs.write(14, OUTER / 20);
    let ecall = BASE + 48;
    let cpu_before = thread_cpu_ns();
    let start = Instant::now();
    let mut n = 0u64;
    while cpu.pc != ecall {
        if let Err(e) = cpu.execute() {
            println!("rvemu: {e:?} at {:#x}", cpu.pc);
            return;
        }
        n += 1;
    }
    report("rvemu loop", n, start, cpu_before);
}

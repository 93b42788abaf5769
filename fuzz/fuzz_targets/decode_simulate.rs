//! Fuzzes the core's classifier and simulator: any bytes are an instruction (2 or 4 bytes),
//! a pc and a register file. Decoding must never panic; an instruction the core computes
//! itself must give the same registers and pc through the engine's trap path, through
//! `Insn::execute`, and in the simulator's interpreter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruprobes::decode::{decode, Class};
use ruprobes::testing::MemSpace;
use ruprobes::{Consumer, Trap, TrapContext, Uprobes, UserRegs};
use ruprobes_sim::cpu::{Cpu, Stop};
use ruprobes_sim::mem::PhysMem;
use ruprobes_sim::sv39::{self, PTE_A, PTE_R, PTE_U, PTE_X};

/// The page the instruction sits in (any canonical Sv39 user address works).
const PAGE: u64 = 0x8000_0000;

fn word(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (j, byte) in b.iter_mut().enumerate() {
        *byte = data.get(i * 8 + j).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let Some(insn_bytes) = data.get(..4) else {
        return;
    };
    let Ok(insn) = decode(insn_bytes) else { return };
    let _ = decode(&insn_bytes[..2]);
    if !matches!(insn.class(), Class::Simulate | Class::Emulate) {
        return;
    }
    let bytes = &insn_bytes[..insn.len()];
    let rest = &data[4..];
    let pc = PAGE + (word(rest, 0) % 2047) * 2;
    let mut x = [0u64; 32];
    for (i, v) in x.iter_mut().enumerate().skip(1) {
        *v = word(rest, i);
    }

    // The engine: probe the instruction, take the trap.
    let mut space = MemSpace::new(1);
    space.map(pc as usize, bytes.len(), true);
    space.poke(pc as usize, bytes);
    let engine = Uprobes::new();
    engine.on_exec(&mut space, "/fuzz").expect("on_exec");
    engine
        .register("/fuzz", pc as usize, Consumer::new(), Some(&mut space))
        .expect("register");
    let mut cx = TrapContext {
        x: x.map(|v| v as usize),
        sepc: pc as usize,
        ..TrapContext::default()
    };
    assert_eq!(engine.handle_breakpoint(&mut space, &mut cx), Trap::Handled);

    // The decoded instruction directly.
    let mut direct = TrapContext {
        x: x.map(|v| v as usize),
        sepc: pc as usize,
        ..TrapContext::default()
    };
    assert!(insn.execute(&mut direct));
    assert_eq!((direct.x, direct.pc()), (cx.x, cx.sepc), "{insn:?}");

    // The interpreter, one instruction under Sv39.
    let mut mem = PhysMem::new(8);
    let root = sv39::new_root(&mut mem).expect("root");
    let frame = mem.alloc_frame().expect("frame");
    sv39::map_page(&mut mem, root, PAGE, frame, PTE_U | PTE_R | PTE_X | PTE_A).expect("map");
    assert!(mem.write(frame + (pc - PAGE), bytes));
    let mut cpu = Cpu::new();
    cpu.set_page_table(root);
    cpu.x = x;
    cpu.pc = pc;
    assert_eq!(cpu.run(&mut mem, 1), Stop::BudgetExhausted, "{insn:?}");
    assert_eq!(
        (cpu.x.map(|v| v as usize), cpu.pc as usize),
        (cx.x, cx.sepc),
        "{insn:?}"
    );
});

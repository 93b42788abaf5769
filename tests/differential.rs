//! Differential tests of the core's simulation and emulation: for random valid encodings of
//! every simulated and emulated instruction and random register files, the core (through
//! its public API: a probe on the instruction in an in-memory user space, then the
//! breakpoint trap) ≡ the simulator's interpreter executing the instruction in place ≡
//! rvemu executing it. Random 16/32-bit words never panic the classifier, and the ones it
//! computes itself agree with the interpreter.

use std::cell::RefCell;

use proptest::prelude::*;
use ruprobes::decode::{decode, Class, Insn, Op};
use ruprobes::testing::MemSpace;
use ruprobes::{Consumer, Trap, TrapContext, Uprobes, UserRegs};
use ruprobes_sim::cpu::{Cpu, Stop};
use ruprobes_sim::mem::PhysMem;
use ruprobes_sim::sv39::{self, PTE_A, PTE_R, PTE_U, PTE_X};
use ruprobes_suite::cases;

/// Where the instruction sits: inside rvemu's DRAM (bare M-mode), which the interpreter
/// maps through Sv39 and the in-memory space maps directly, so all three see one pc.
const DRAM: u64 = 0x8000_0000;

/// A register file and pc after one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    x: [u64; 32],
    pc: u64,
}

/// The core: probe the instruction, take the breakpoint trap, return the registers.
fn core(bytes: &[u8], pc: u64, x: &[u64; 32]) -> State {
    let mut space = MemSpace::new(1);
    space.map(pc as usize, bytes.len(), true);
    space.poke(pc as usize, bytes);
    let engine = Uprobes::new();
    engine
        .on_exec(&mut space, "/diff")
        .unwrap_or_else(|e| panic!("on_exec: {e}"));
    engine
        .register("/diff", pc as usize, Consumer::new(), Some(&mut space))
        .unwrap_or_else(|e| panic!("register {bytes:02x?}: {e}"));
    let mut cx = TrapContext {
        x: x.map(|v| v as usize),
        sepc: pc as usize,
        ..TrapContext::default()
    };
    cx.x[0] = 0;
    assert_eq!(
        engine.handle_breakpoint(&mut space, &mut cx),
        Trap::Handled,
        "{bytes:02x?}"
    );
    // The probe is armed: a breakpoint sits where the instruction was.
    assert_ne!(
        space.peek(pc as usize, bytes.len()),
        bytes.to_vec(),
        "armed"
    );
    State {
        x: cx.x.map(|v| v as u64),
        pc: cx.sepc as u64,
    }
}

/// The core's decoded instruction executed directly ([`Insn::execute`]).
fn core_execute(insn: &Insn, pc: u64, x: &[u64; 32]) -> State {
    let mut cx = TrapContext {
        x: x.map(|v| v as usize),
        sepc: pc as usize,
        ..TrapContext::default()
    };
    cx.x[0] = 0;
    assert!(insn.execute(&mut cx), "{insn:?} is computed by the core");
    State {
        x: cx.x.map(|v| v as u64),
        pc: cx.pc() as u64,
    }
}

/// The simulator's interpreter: one instruction under a real Sv39 mapping.
fn interpreter(bytes: &[u8], pc: u64, x: &[u64; 32]) -> Result<State, Stop> {
    let mut mem = PhysMem::new(8);
    let root = sv39::new_root(&mut mem).unwrap_or_else(|e| panic!("{e:?}"));
    let frame = mem.alloc_frame().unwrap_or_else(|| panic!("frame"));
    let page = pc & !0xfff;
    sv39::map_page(&mut mem, root, page, frame, PTE_U | PTE_R | PTE_X | PTE_A)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(mem.write(frame + (pc - page), bytes));
    let mut cpu = Cpu::new();
    cpu.set_page_table(root);
    cpu.x = *x;
    cpu.x[0] = 0;
    cpu.pc = pc;
    match cpu.run(&mut mem, 1) {
        Stop::BudgetExhausted => Ok(State {
            x: cpu.x,
            pc: cpu.pc,
        }),
        stop => Err(stop),
    }
}

thread_local! {
    /// One rvemu CPU per test thread: creating one writes `rvemu.dts`, runs `dtc` and
    /// maps 1 GiB, far too slow per case.
    static RVEMU: RefCell<rvemu::cpu::Cpu> = RefCell::new(rvemu::cpu::Cpu::new());
}

/// rvemu in bare M-mode.
fn rvemu(bytes: &[u8], pc: u64, x: &[u64; 32]) -> State {
    RVEMU.with(|cpu| {
        let mut cpu = cpu.borrow_mut();
        for (i, b) in bytes.iter().enumerate() {
            cpu.bus
                .write(pc + i as u64, u64::from(*b), rvemu::cpu::BYTE)
                .unwrap_or_else(|e| panic!("{e:?}"));
        }
        for (i, v) in x.iter().enumerate() {
            cpu.xregs.write(i as u64, *v);
        }
        cpu.pc = pc;
        cpu.execute()
            .unwrap_or_else(|e| panic!("rvemu {bytes:02x?}: {e:?}"));
        let mut out = [0u64; 32];
        for (i, v) in out.iter_mut().enumerate() {
            *v = cpu.xregs.read(i as u64);
        }
        State { x: out, pc: cpu.pc }
    })
}

/// rvemu 0.0.11 with its known deviations from the ISA undone: `c.jr` and `c.jalr` do
/// not clear bit 0 of the target (the ISA expands them to `jalr`, which does).
fn rvemu_fixed(insn: &Insn, mut state: State) -> State {
    if insn.len() == 2 && matches!(insn.op(), Op::Jalr { .. }) {
        state.pc &= !1;
    }
    state
}

/// Proptest settings: `cases` (see [`cases`]) and no regression files.
fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        failure_persistence: None,
        max_local_rejects: u32::MAX,
        ..ProptestConfig::default()
    }
}

/// Major opcodes whose instructions the core simulates or emulates.
const OPCODES: [u32; 9] = [0x37, 0x17, 0x6f, 0x67, 0x63, 0x13, 0x33, 0x1b, 0x3b];

/// Random encodings of simulated and emulated instructions, 16- and 32-bit.
fn computed_insn() -> impl Strategy<Value = Vec<u8>> {
    let wide = (prop::sample::select(&OPCODES[..]), any::<u32>())
        .prop_map(|(op, r)| (r & !0x7f | op).to_le_bytes().to_vec());
    let narrow = (0u16..3, any::<u16>()).prop_map(|(q, r)| (r & !3 | q).to_le_bytes().to_vec());
    prop_oneof![wide, narrow].prop_filter("simulated or emulated", |bytes| {
        decode(bytes).is_ok_and(|i| matches!(i.class(), Class::Simulate | Class::Emulate))
    })
}

/// Register files with a bias to the values where arithmetic has edge cases.
fn regs() -> impl Strategy<Value = [u64; 32]> {
    let value = prop_oneof![
        4 => any::<u64>(),
        1 => prop::sample::select(&[0, 1, 2, u64::MAX, i64::MIN as u64, i64::MAX as u64, 0xffff_ffff, 0x8000_0000, 31, 32, 63, 64][..]),
        1 => (-64i64..64).prop_map(|v| v as u64),
    ];
    prop::collection::vec(value, 32).prop_map(|v| {
        let mut x = [0u64; 32];
        x.copy_from_slice(&v);
        x[0] = 0;
        x
    })
}

/// A pc in rvemu's DRAM where a 4-byte instruction does not cross a page.
fn pc() -> impl Strategy<Value = u64> {
    (0u64..1 << 18, 0u64..2047).prop_map(|(page, half)| DRAM + page * 0x1000 + half * 2)
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn core_equals_interpreter_equals_rvemu(bytes in computed_insn(), x in regs(), pc in pc()) {
        let insn = decode(&bytes).unwrap_or_else(|e| panic!("{e:?}"));
        let by_core = core(&bytes, pc, &x);
        prop_assert_eq!(by_core, core_execute(&insn, pc, &x), "{:?} {:02x?}", insn.op(), bytes);
        let by_interpreter = interpreter(&bytes, pc, &x);
        prop_assert_eq!(Ok(by_core), by_interpreter, "{:?} {:02x?}", insn.op(), bytes);
        prop_assert_eq!(by_core, rvemu_fixed(&insn, rvemu(&bytes, pc, &x)), "{:?} {:02x?}", insn.op(), bytes);
    }

    #[test]
    fn random_words_never_panic_and_computed_ones_match_the_interpreter(
        word in any::<u32>(), x in regs(), pc in pc(),
    ) {
        for bytes in [word.to_le_bytes().to_vec(), (word as u16).to_le_bytes().to_vec(), word.to_le_bytes()[..3].to_vec()] {
            let Ok(insn) = decode(&bytes) else { continue };
            prop_assert!(insn.len() <= bytes.len());
            let bytes = &bytes[..insn.len()];
            if matches!(insn.class(), Class::Simulate | Class::Emulate) {
                let by_core = core(bytes, pc, &x);
                prop_assert_eq!(Ok(by_core), interpreter(bytes, pc, &x), "{:?} {:02x?}", insn.op(), bytes);
            }
        }
    }
}

/// Every kind of operation the core computes shows up in the generated instructions, so
/// the differential test above covers each class (a strategy bug cannot hide one).
#[test]
fn the_generator_covers_every_computed_operation() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = computed_insn();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20_000 {
        let bytes = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("{e}"))
            .current();
        if let Ok(insn) = decode(&bytes) {
            let kind = match insn.op() {
                Op::Alu { alu, .. } => format!("{alu:?}/{}", insn.len()),
                Op::Branch { cond, .. } => format!("{cond:?}/{}", insn.len()),
                other => format!(
                    "{}/{}",
                    format!("{other:?}").split([' ', '{']).next().unwrap_or(""),
                    insn.len()
                ),
            };
            seen.insert(kind);
        }
    }
    for kind in [
        "Lui/4", "Lui/2", "Auipc/4", "Jal/4", "Jal/2", "Jalr/4", "Jalr/2", "Eq/4", "Ne/4", "Lt/4",
        "Ge/4", "Ltu/4", "Geu/4", "Eq/2", "Ne/2",
    ] {
        assert!(
            seen.contains(kind),
            "{kind} never generated; seen: {seen:?}"
        );
    }
    assert!(
        seen.iter().filter(|k| k.ends_with("/4")).count() > 30,
        "{seen:?}"
    );
}

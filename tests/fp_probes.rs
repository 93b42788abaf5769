//! Probes on every F/D instruction of the `fp` fixture (C, built by riscv64-linux-gnu-gcc;
//! the committed ELF, so no toolchain is needed): the core steps them out of line, and the
//! probed run must equal the unprobed one in output, exit status, syscalls and final
//! registers, F/D registers and `fcsr` included; each probe hits exactly as often as its
//! instruction ran. (The `fcsr`/`frm`/`fflags` accesses are CSR instructions, which the core
//! refuses to probe like every CSR access: checked too.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ruprobes::Consumer;
use ruprobes_sim::cpu::decode::{decode16, decode32, Op};
use ruprobes_sim::cpu::fp::FpOp;
use ruprobes_sim::machine::Config;
use ruprobes_suite::{finish, fixture, sites};

/// The F/D operation at a site, if it is one (`Op::CsrFp` counts as F/D too).
fn fp_op(bytes: &[u8]) -> Option<(Op, Option<FpOp>)> {
    let insn = match *bytes {
        [a, b] => decode16(u16::from_le_bytes([a, b])),
        [a, b, c, d] => decode32(u32::from_le_bytes([a, b, c, d])),
        _ => return None,
    };
    match insn.op {
        Op::FpS(op) | Op::FpD(op) => Some((insn.op, Some(op))),
        Op::CsrFp => Some((insn.op, None)),
        _ => None,
    }
}

#[test]
fn every_fp_instruction_probed_changes_nothing() {
    let fx = fixture("fp");
    let image = fx.image();
    let fp_sites: Vec<(u64, Op, bool)> = sites(&image)
        .into_iter()
        .filter_map(|s| {
            let bytes = image.initial_bytes(s.addr, s.len)?;
            fp_op(&bytes).map(|(op, _)| (s.addr, op, s.probeable()))
        })
        .collect();
    for &(addr, op, probeable) in &fp_sites {
        assert_eq!(probeable, op != Op::CsrFp, "{addr:#x} {op:?}");
    }

    // The fixture has every F/D operation in both formats (fcvt.s.d and fcvt.d.s are the
    // two `CvtFromOther`s), the compressed loads and stores, and the CSR accesses.
    let all = [
        FpOp::Load,
        FpOp::Store,
        FpOp::Madd,
        FpOp::Msub,
        FpOp::Nmsub,
        FpOp::Nmadd,
        FpOp::Add,
        FpOp::Sub,
        FpOp::Mul,
        FpOp::Div,
        FpOp::Sqrt,
        FpOp::Sgnj,
        FpOp::Sgnjn,
        FpOp::Sgnjx,
        FpOp::Min,
        FpOp::Max,
        FpOp::CvtFromOther,
        FpOp::CvtW,
        FpOp::CvtWu,
        FpOp::CvtL,
        FpOp::CvtLu,
        FpOp::CvtFromW,
        FpOp::CvtFromWu,
        FpOp::CvtFromL,
        FpOp::CvtFromLu,
        FpOp::MvToX,
        FpOp::MvFromX,
        FpOp::Eq,
        FpOp::Lt,
        FpOp::Le,
        FpOp::Class,
    ];
    for op in all {
        for wanted in [Op::FpS(op), Op::FpD(op)] {
            assert!(
                fp_sites.iter().any(|&(_, o, _)| o == wanted),
                "the fp fixture has a {wanted:?}"
            );
        }
    }
    assert!(fp_sites.iter().any(|&(_, o, _)| o == Op::CsrFp));
    let compressed = sites(&image)
        .into_iter()
        .filter(|s| s.len == 2)
        .filter(|s| {
            image
                .initial_bytes(s.addr, 2)
                .and_then(|b| fp_op(&b))
                .is_some()
        })
        .count();
    assert!(
        compressed >= 4,
        "c.fld, c.fsd, c.fldsp, c.fsdsp: {compressed}"
    );

    let reference = finish(&mut fx.machine(Config::default()));
    let mut counting = fx.machine(Config {
        count_pcs: true,
        ..Config::default()
    });
    assert_eq!(
        finish(&mut counting),
        reference,
        "counting pcs changes nothing"
    );
    let counts = counting.pc_counts().clone();
    let regs = reference.final_regs.expect("final registers");
    assert_eq!(regs.fp.fcsr >> 5, 5, "the run ends with frm = 5");

    let mut probed = fx.machine(Config::default());
    let mut probes = Vec::new();
    for &(addr, op, probeable) in &fp_sites {
        if !probeable {
            assert!(probed.register(addr, Consumer::new()).is_err(), "{addr:#x}");
            continue;
        }
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        let consumer = Consumer::new().on_entry(move |_, _| {
            h.fetch_add(1, Ordering::Relaxed);
        });
        let id = probed
            .register(addr, consumer)
            .unwrap_or_else(|e| panic!("{addr:#x} ({op:?}): {e}"));
        probes.push((addr, op, id, hits));
    }
    let outcome = finish(&mut probed);
    assert_eq!(
        String::from_utf8_lossy(&outcome.stdout),
        String::from_utf8_lossy(&reference.stdout)
    );
    assert_eq!(outcome, reference, "every F/D site probed");
    let mut executed = 0;
    for (addr, op, id, hits) in &probes {
        let want = counts.get(addr).copied().unwrap_or(0);
        assert_eq!(hits.load(Ordering::Relaxed), want, "{addr:#x} ({op:?})");
        assert_eq!(probed.stats(*id).map_or(0, |s| s.hits), want);
        executed += want;
    }
    assert!(
        executed > 50_000,
        "the probes saw the F/D work: {executed} hits"
    );
}

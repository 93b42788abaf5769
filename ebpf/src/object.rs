//! The loader: a clang-built BPF ELF object (`clang -target bpf -O2 -g`, libbpf conventions)
//! into programs with resolved map and data relocations, checked instruction by
//! instruction before anything runs.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use goblin::elf::section_header::{SHF_EXECINSTR, SHF_WRITE, SHT_NOBITS, SHT_REL};
use goblin::elf::sym::STT_FUNC;
use goblin::elf::Elf;

use ruprobes::bpf::TracepointType;

use crate::attach::Attach;
use crate::btf::Btf;
use crate::helpers::{self, Env};
use crate::maps::Map;
use crate::vm::{self, Global, Insn, Memory, VmError, SCRATCH_SIZE, STACK_SIZE};
use crate::vm::{ALU_END, ALU_NEG, ATOMIC_CMPXCHG, ATOMIC_FETCH, ATOMIC_XCHG, JMP_CALL, JMP_EXIT};
use crate::vm::{CLASS_ALU, CLASS_ALU64, CLASS_JMP, CLASS_JMP32, CLASS_LD, CLASS_LDX};
use crate::vm::{CLASS_ST, CLASS_STX, MODE_ATOMIC, MODE_IMM, MODE_MEM, SIZE_DW, SRC_X};
use crate::vm::{MAP_HANDLE, REGION_GLOBAL, REGION_SHIFT};

/// `EM_BPF`.
const EM_BPF: u16 = 247;
/// `R_BPF_64_64`: a 64-bit immediate (lddw) naming a symbol.
const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_32`: a call to a BPF function (bpf-to-bpf call).
const R_BPF_64_32: u32 = 10;
/// Longest program accepted, in instruction slots (Linux's limit for unprivileged loads).
pub const MAX_INSNS: usize = 4096;

/// Why an object was refused: one line, naming the section, program or instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError(pub String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! refuse {
    ($($arg:tt)*) => { LoadError(alloc::format!($($arg)*)) };
}

/// One program of the object.
#[derive(Clone, Debug)]
pub struct Program {
    /// Its function name.
    pub name: String,
    /// Its section name.
    pub section: String,
    /// Where it attaches (from the section name).
    pub attach: Attach,
    /// Instruction words with relocations resolved.
    insns: Vec<u64>,
}

impl Program {
    /// Its length in instruction slots.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Whether it has no instructions (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }
}

/// A loaded object: its programs, maps and data sections.
#[derive(Clone, Debug)]
pub struct Object {
    /// The programs, in section order.
    pub programs: Vec<Program>,
    /// The maps, in `.maps` order.
    pub maps: Vec<Map>,
    /// `.rodata`, `.data` and `.bss` sections.
    pub globals: Vec<Global>,
    stack: alloc::boxed::Box<[u8; STACK_SIZE]>,
    scratch: alloc::boxed::Box<[u8; SCRATCH_SIZE]>,
}

impl Object {
    /// Loads and checks an object.
    pub fn load(bytes: &[u8]) -> Result<Object, LoadError> {
        let elf = Elf::parse(bytes).map_err(|e| refuse!("not an ELF object: {e}"))?;
        if elf.header.e_machine != EM_BPF || !elf.is_64 || !elf.little_endian {
            return Err(refuse!(
                "not a little-endian BPF object (machine {})",
                elf.header.e_machine
            ));
        }
        let section_name = |i: usize| {
            elf.section_headers
                .get(i)
                .and_then(|sh| elf.shdr_strtab.get_at(sh.sh_name))
                .unwrap_or("")
        };
        let section_bytes = |i: usize| -> Result<&[u8], LoadError> {
            let sh = &elf.section_headers[i];
            if sh.sh_type == SHT_NOBITS {
                return Ok(&[]);
            }
            let start = sh.sh_offset as usize;
            start
                .checked_add(sh.sh_size as usize)
                .and_then(|end| bytes.get(start..end))
                .ok_or_else(|| refuse!("section {} lies outside the file", section_name(i)))
        };

        // Maps, from BTF.
        let mut maps = Vec::new();
        let maps_index = (0..elf.section_headers.len()).find(|&i| section_name(i) == ".maps");
        if (0..elf.section_headers.len()).any(|i| section_name(i) == "maps") {
            return Err(refuse!(
                "legacy 'maps' section: define maps in '.maps' with BTF"
            ));
        }
        if maps_index.is_some() {
            let btf_index = (0..elf.section_headers.len())
                .find(|&i| section_name(i) == ".BTF")
                .ok_or_else(|| refuse!("'.maps' without '.BTF' (compile with -g)"))?;
            let btf = Btf::parse(section_bytes(btf_index)?).map_err(|e| refuse!("{e}"))?;
            // (clang leaves the data section's offsets to the loader: match by name.)
            for (def, _) in btf.maps().map_err(|e| refuse!("{e}"))? {
                maps.push(Map::new(def).map_err(|e| refuse!("{e}"))?);
            }
        }

        // Data sections.
        let mut globals = Vec::new();
        let mut global_sections = Vec::new();
        for (i, sh) in elf.section_headers.iter().enumerate() {
            let name = section_name(i);
            if [".rodata", ".data", ".bss"]
                .iter()
                .any(|p| name == *p || name.starts_with(&alloc::format!("{p}.")))
            {
                let bytes = match sh.sh_type {
                    SHT_NOBITS => alloc::vec![0; sh.sh_size as usize],
                    _ => section_bytes(i)?.to_vec(),
                };
                if bytes.len() > u32::MAX as usize {
                    return Err(refuse!("section {name} is too large"));
                }
                global_sections.push(i);
                globals.push(Global {
                    name: name.to_string(),
                    bytes,
                    writable: sh.sh_flags & u64::from(SHF_WRITE) != 0,
                });
            }
        }

        // Programs: every function symbol of an executable section.
        let mut programs = Vec::new();
        for (i, sh) in elf.section_headers.iter().enumerate() {
            if sh.sh_flags & u64::from(SHF_EXECINSTR) == 0 || sh.sh_size == 0 {
                continue;
            }
            let section = section_name(i);
            let attach = Attach::parse(section).ok_or_else(|| {
                if section == ".text" {
                    refuse!("functions in .text: bpf-to-bpf calls are not supported (make them __always_inline)")
                } else {
                    refuse!("unknown section '{section}' (expected uprobe/SYM, uprobe/SYM+OFF, uretprobe/SYM or a uprobe tracepoint name)")
                }
            })?;
            let code = section_bytes(i)?;
            if code.len() % 8 != 0 {
                return Err(refuse!(
                    "section {section}: size is not a whole number of instructions"
                ));
            }
            let mut words: Vec<u64> = code
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            relocate(
                &elf,
                i,
                section,
                &mut words,
                maps_index,
                &maps,
                &global_sections,
            )?;
            let mut funcs: Vec<_> = elf
                .syms
                .iter()
                .filter(|s| s.st_type() == STT_FUNC && s.st_shndx == i)
                .collect();
            funcs.sort_by_key(|s| s.st_value);
            if funcs.is_empty() {
                return Err(refuse!("section {section}: no function symbol"));
            }
            for sym in funcs {
                let name = elf.strtab.get_at(sym.st_name).unwrap_or("?").to_string();
                let (start, len) = (sym.st_value as usize / 8, sym.st_size as usize / 8);
                let insns = words
                    .get(start..start + len)
                    .ok_or_else(|| refuse!("program {name}: outside its section"))?
                    .to_vec();
                check(&insns).map_err(|e| refuse!("program {name}: {e}"))?;
                programs.push(Program {
                    name,
                    section: section.to_string(),
                    attach: attach.clone(),
                    insns,
                });
            }
        }
        if programs.is_empty() {
            return Err(refuse!("no programs (no uprobe/... section with code)"));
        }
        Ok(Object {
            programs,
            maps,
            globals,
            stack: alloc::boxed::Box::new([0; STACK_SIZE]),
            scratch: alloc::boxed::Box::new([0; SCRATCH_SIZE]),
        })
    }

    /// Runs program `index` on a context (the bytes of a
    /// [`UProbeBPFContext`](ruprobes::bpf::UProbeBPFContext)) within `budget` instructions;
    /// returns `r0`.
    pub fn run(
        &mut self,
        index: usize,
        ctx: &[u8],
        env: &mut dyn Env,
        budget: u64,
    ) -> Result<u64, VmError> {
        let Some(program) = self.programs.get(index) else {
            return Err(VmError::PcOutOfRange { insn: 0 });
        };
        self.stack.fill(0);
        let mut mem = Memory {
            ctx,
            stack: &mut self.stack,
            globals: &mut self.globals,
            maps: &mut self.maps,
            scratch: &mut self.scratch,
            at_return: program.attach.kind == TracepointType::URetProbeExitSyncFunc,
        };
        vm::run(&program.insns, &mut mem, env, budget)
    }

    /// A run error as one line, addresses named after this object's regions.
    pub fn describe(&self, error: &VmError) -> String {
        error.display(&self.maps, &self.globals).to_string()
    }

    /// The map called `name`.
    pub fn map(&self, name: &str) -> Option<&Map> {
        self.maps.iter().find(|m| m.def.name == name)
    }
}

/// Resolves the relocations of section `target` into `words`.
fn relocate(
    elf: &Elf<'_>,
    target: usize,
    section: &str,
    words: &mut [u64],
    maps_index: Option<usize>,
    maps: &[Map],
    global_sections: &[usize],
) -> Result<(), LoadError> {
    for (_, relocs) in elf.shdr_relocs.iter().filter(|(ri, _)| {
        elf.section_headers
            .get(*ri)
            .is_some_and(|sh| sh.sh_type == SHT_REL && sh.sh_info as usize == target)
    }) {
        for rel in relocs.iter() {
            let slot = (rel.r_offset / 8) as usize;
            let sym = elf
                .syms
                .get(rel.r_sym)
                .ok_or_else(|| refuse!("section {section}: relocation to a missing symbol"))?;
            let sym_name = elf.strtab.get_at(sym.st_name).unwrap_or("?");
            if rel.r_type == R_BPF_64_32 {
                return Err(refuse!(
                    "section {section}: call to {sym_name}: bpf-to-bpf calls are not supported (make it __always_inline)"
                ));
            }
            if rel.r_type != R_BPF_64_64 || rel.r_offset % 8 != 0 || slot + 1 >= words.len() {
                return Err(refuse!(
                    "section {section}: unsupported relocation type {} at {:#x}",
                    rel.r_type,
                    rel.r_offset
                ));
            }
            if Insn::decode(words[slot]).opc != CLASS_LD | MODE_IMM | SIZE_DW {
                return Err(refuse!(
                    "section {section}: relocation at {:#x} is not on a 64-bit load",
                    rel.r_offset
                ));
            }
            let value = if Some(sym.st_shndx) == maps_index {
                let m = maps
                    .iter()
                    .position(|m| m.def.name == sym_name)
                    .ok_or_else(|| {
                        refuse!("section {section}: {sym_name} is not a map of .maps")
                    })?;
                (MAP_HANDLE + m as u64) << REGION_SHIFT
            } else if let Some(g) = global_sections.iter().position(|&s| s == sym.st_shndx) {
                let addend = Insn::decode(words[slot]).imm as u32 as u64;
                ((REGION_GLOBAL + g as u64) << REGION_SHIFT) + sym.st_value + addend
            } else {
                return Err(refuse!(
                    "section {section}: reference to '{sym_name}', which is neither a map nor data"
                ));
            };
            words[slot] = (words[slot] & 0xffff_ffff & !0xf000) | ((value & 0xffff_ffff) << 32);
            words[slot + 1] = (words[slot + 1] & 0xffff_ffff) | ((value >> 32) << 32);
        }
    }
    Ok(())
}

/// Checks every instruction: known opcode, registers in range, `r10` never written, jumps
/// inside the program and onto instruction starts, known helpers, an `exit` at the end.
fn check(insns: &[u64]) -> Result<(), String> {
    if insns.len() > MAX_INSNS {
        return Err(alloc::format!(
            "{} instructions, over the limit of {MAX_INSNS}",
            insns.len()
        ));
    }
    // Slots that are the second half of a lddw.
    let mut second = alloc::vec![false; insns.len()];
    let mut pc = 0;
    while pc < insns.len() {
        if Insn::decode(insns[pc]).opc == CLASS_LD | MODE_IMM | SIZE_DW {
            if pc + 1 >= insns.len() {
                return Err(alloc::format!("insn {pc}: lddw without its second half"));
            }
            second[pc + 1] = true;
            pc += 1;
        }
        pc += 1;
    }
    let mut pc = 0;
    while pc < insns.len() {
        let i = Insn::decode(insns[pc]);
        let at = pc;
        pc += 1;
        let bad = |why: &str| Err(alloc::format!("insn {at}: {why} (opcode {:#04x})", i.opc));
        if i.dst > 10 || i.src > 10 {
            return bad("register out of range");
        }
        let writes_dst = match i.opc & 0x07 {
            CLASS_LD => {
                if i.opc != CLASS_LD | MODE_IMM | SIZE_DW || i.src != 0 {
                    return bad("unsupported load (only lddw of a constant, map or data)");
                }
                pc += 1;
                true
            }
            CLASS_LDX => {
                if i.opc & 0xe0 != MODE_MEM {
                    return bad("unsupported load mode");
                }
                true
            }
            CLASS_ST | CLASS_STX => {
                let mode = i.opc & 0xe0;
                let atomic_ok = i.opc & 0x07 == CLASS_STX
                    && mode == MODE_ATOMIC
                    && matches!(i.opc & 0x18, 0x00 | SIZE_DW)
                    && matches!(i.imm, 0x00 | 0x40 | 0x50 | 0xa0 | 0x01 | 0x41 | 0x51 | 0xa1)
                        | (i.imm == ATOMIC_XCHG)
                        | (i.imm == ATOMIC_CMPXCHG);
                if mode != MODE_MEM && !atomic_ok {
                    return bad("unsupported store mode or atomic operation");
                }
                let _ = ATOMIC_FETCH;
                false
            }
            CLASS_ALU | CLASS_ALU64 => {
                let op = i.opc & 0xf0;
                if op > ALU_END
                    || (op == ALU_END
                        && (i.opc & 0x07 == CLASS_ALU64 || !matches!(i.imm, 16 | 32 | 64)))
                {
                    return bad("unsupported arithmetic");
                }
                if op == ALU_NEG && i.opc & SRC_X != 0 {
                    return bad("unsupported arithmetic");
                }
                if i.off != 0 {
                    return bad("signed division and sign-extending moves are not supported");
                }
                true
            }
            class @ (CLASS_JMP | CLASS_JMP32) => {
                let op = i.opc & 0xf0;
                match op {
                    JMP_EXIT if class == CLASS_JMP => false,
                    JMP_CALL if class == CLASS_JMP => {
                        if i.src != 0 {
                            return bad("bpf-to-bpf calls are not supported");
                        }
                        if helpers::name(i.imm as u32).is_none() {
                            return Err(alloc::format!(
                                "insn {at}: unknown helper {}",
                                i.imm as u32
                            ));
                        }
                        false
                    }
                    0x00 if class == CLASS_JMP32 => return bad("unsupported jump"),
                    0x00..=0x70 | 0xa0..=0xd0 => {
                        let target = pc as i64 + i.off as i64;
                        if target < 0 || target as usize >= insns.len() || second[target as usize] {
                            return bad("jump out of the program");
                        }
                        false
                    }
                    _ => return bad("unknown jump"),
                }
            }
            _ => return bad("unknown instruction class"),
        };
        if writes_dst && i.dst == 10 {
            return bad("r10 (the frame pointer) is read-only");
        }
    }
    let last = Insn::decode(insns[insns.len().saturating_sub(1)]);
    if insns.is_empty() || (last.opc != CLASS_JMP | JMP_EXIT && last.opc & 0xf0 != 0x00) {
        return Err("does not end with exit or a jump".to_string());
    }
    Ok(())
}

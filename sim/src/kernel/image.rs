//! Program images: a RISC-V 64 ELF executable checked and cut into the pages the kernel
//! maps, with its symbols kept for probe specs and traces.
//!
//! Both static executables (`ET_EXEC`) and static position-independent ones (`ET_DYN`
//! without `PT_INTERP`, `-static-pie`) load; the latter at [`DYN_BASE`], with their symbols
//! relocated by it. A dynamically linked program (`PT_INTERP`) is refused: it needs the
//! dynamic loader.
//!
//! Which ABI the image was built for ([`Image::linux_abi`]) decides the machine's automatic
//! personality: it is Linux when any of these marks is there (each is put by the C library or
//! the Linux toolchain, never by a freestanding teaching-kernel app): `EI_OSABI` is GNU/Linux,
//! a `.note.ABI-tag` section (glibc's start files), a `__libc_start_main` symbol (glibc, musl,
//! and so every Rust std program), a `PT_TLS` segment (thread-local storage needs a libc), or
//! the image is `ET_DYN` (static-pie). Anything else is a teaching-kernel app.

use std::collections::BTreeMap;
use std::sync::Arc;

use goblin::elf::header::{EI_OSABI, ELFOSABI_GNU, EM_RISCV, ET_DYN, ET_EXEC};
use goblin::elf::program_header::{PF_R, PF_W, PF_X, PT_INTERP, PT_LOAD, PT_PHDR, PT_TLS};
use goblin::elf::Elf;

use crate::error::SimError;
use crate::mem::PAGE_SIZE;
use crate::symbols::SymbolTable;
use crate::trace::Loc;

/// Lowest address a program may load at (page 0 stays unmapped to catch null pointers).
pub const USER_MIN: u64 = PAGE_SIZE;
/// Programs must load below this address (XOL pages and the stack live above).
pub const USER_LOAD_LIMIT: u64 = 0x3000_0000;
/// Largest total size of a program's loadable segments.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;
/// Where a position-independent (`ET_DYN`) image is loaded.
pub const DYN_BASE: u64 = 0x0100_0000;

/// Page permissions of a loaded segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

impl Perms {
    fn union(self, other: Perms) -> Perms {
        Perms {
            read: self.read || other.read,
            write: self.write || other.write,
            exec: self.exec || other.exec,
        }
    }
}

/// One page of a program as loaded: its address, permissions and initial bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePage {
    /// Page-aligned virtual address.
    pub va: u64,
    /// Union of the permissions of the segments touching the page.
    pub perms: Perms,
    /// The 4 KiB of initial contents (file bytes, zeros for `.bss`).
    pub bytes: Box<[u8]>,
}

/// A checked program image.
#[derive(Debug)]
pub struct Image {
    /// The name processes know it by (the exec path and probe key, e.g. `fib`).
    pub name: String,
    /// The entry point.
    pub entry: u64,
    /// Every page to map, in address order.
    pub pages: Vec<ImagePage>,
    /// The text symbols (relocated by `base`).
    pub symbols: SymbolTable,
    /// What the image's addresses were moved by (0 for `ET_EXEC`).
    pub base: u64,
    /// Where the program headers are in memory (0 if no segment maps them), for `AT_PHDR`.
    pub phdr: u64,
    /// Size of one program header (`AT_PHENT`).
    pub phent: u64,
    /// Number of program headers (`AT_PHNUM`).
    pub phnum: u64,
    /// The end of the highest segment, page-aligned up: where the program break starts.
    pub end: u64,
    /// Whether the image carries a Linux/libc mark (see the module documentation).
    pub linux_abi: bool,
}

impl Image {
    /// Parses and checks an ELF executable. Never panics on malformed input.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Arc<Image>, SimError> {
        let bad = |why: String| SimError::BadElf {
            name: name.to_string(),
            why,
        };
        if bytes.get(..4) != Some(b"\x7fELF") {
            return Err(bad("not an ELF file".into()));
        }
        // Class and machine first, from the raw header, so that a 32-bit or foreign ELF gets
        // that answer rather than whatever a 64-bit parse makes of it.
        if let (Some(&class), Some(machine)) = (bytes.get(4), bytes.get(18..20)) {
            let machine = u16::from_le_bytes([machine[0], machine[1]]);
            if class != 2 || machine != EM_RISCV || bytes.get(5) != Some(&1) {
                let bits = if class == 1 { 32 } else { 64 };
                return Err(bad(format!(
                    "not a RISC-V 64 executable (machine {machine}, {bits}-bit): the simulator runs RV64 (little-endian ELFCLASS64, EM_RISCV) programs only"
                )));
            }
        }
        let elf = Elf::parse(bytes).map_err(|e| bad(format!("malformed ELF: {e}")))?;
        if !elf.is_64 || elf.header.e_machine != EM_RISCV || !elf.little_endian {
            return Err(bad(format!(
                "not a RISC-V 64 executable (machine {}, {}-bit)",
                elf.header.e_machine,
                if elf.is_64 { 64 } else { 32 }
            )));
        }
        if elf.program_headers.iter().any(|ph| ph.p_type == PT_INTERP) {
            return Err(bad(
                "dynamically linked (PT_INTERP): it needs the dynamic loader, which the simulator does not provide; link it statically (-static)".into(),
            ));
        }
        let base = match elf.header.e_type {
            ET_EXEC => 0,
            ET_DYN => DYN_BASE,
            other => {
                return Err(bad(format!(
                    "not an executable (ELF type {other}; ET_EXEC or static-pie ET_DYN needed)"
                )))
            }
        };
        let mut pages: BTreeMap<u64, ImagePage> = BTreeMap::new();
        let mut total = 0u64;
        let mut image_end = 0u64;
        for ph in elf
            .program_headers
            .iter()
            .filter(|ph| ph.p_type == PT_LOAD && ph.p_memsz > 0)
        {
            let vaddr = ph.p_vaddr.wrapping_add(base);
            let end = vaddr
                .checked_add(ph.p_memsz)
                .filter(|&end| end <= USER_LOAD_LIMIT);
            let Some(end) = end.filter(|_| vaddr >= USER_MIN) else {
                return Err(bad(format!(
                    "segment at {:#x} lies outside the user load area",
                    vaddr
                )));
            };
            if ph.p_filesz > ph.p_memsz {
                return Err(bad(format!("segment at {:#x} has filesz > memsz", vaddr)));
            }
            let file = usize::try_from(ph.p_offset)
                .ok()
                .zip(usize::try_from(ph.p_filesz).ok())
                .and_then(|(off, len)| bytes.get(off..off.checked_add(len)?))
                .ok_or_else(|| bad(format!("segment at {:#x} lies outside the file", vaddr)))?;
            total += ph.p_memsz;
            if total > MAX_IMAGE_BYTES {
                return Err(bad("loadable segments exceed 64 MiB".into()));
            }
            let perms = Perms {
                read: ph.p_flags & PF_R != 0,
                write: ph.p_flags & PF_W != 0,
                exec: ph.p_flags & PF_X != 0,
            };
            image_end = image_end.max(end);
            let mut va = vaddr & !(PAGE_SIZE - 1);
            while va < end {
                let page = pages.entry(va).or_insert_with(|| ImagePage {
                    va,
                    perms: Perms::default(),
                    bytes: vec![0; PAGE_SIZE as usize].into_boxed_slice(),
                });
                page.perms = page.perms.union(perms);
                // Copy the part of the file bytes that falls in this page.
                let lo = va.max(vaddr);
                let hi = (va + PAGE_SIZE).min(vaddr + ph.p_filesz);
                if lo < hi {
                    let src = &file[(lo - vaddr) as usize..(hi - vaddr) as usize];
                    page.bytes[(lo - va) as usize..(hi - va) as usize].copy_from_slice(src);
                }
                va += PAGE_SIZE;
            }
        }
        let entry = elf.entry.wrapping_add(base);
        let entry_ok = pages
            .get(&(entry & !(PAGE_SIZE - 1)))
            .is_some_and(|p| p.perms.exec);
        if !entry_ok {
            return Err(bad(format!(
                "entry point {entry:#x} is not in an executable segment"
            )));
        }
        let phdr = program_headers_address(&elf).map_or(0, |a| a.wrapping_add(base));
        Ok(Arc::new(Image {
            name: name.to_string(),
            entry,
            pages: pages.into_values().collect(),
            symbols: SymbolTable::from_elf(&elf).relocated(base),
            base,
            phdr,
            phent: u64::from(elf.header.e_phentsize),
            phnum: elf.program_headers.len() as u64,
            end: image_end.next_multiple_of(PAGE_SIZE),
            linux_abi: linux_marks(&elf),
        }))
    }

    /// Whether the page holding `addr` belongs to the image.
    pub fn maps(&self, addr: u64) -> bool {
        let va = addr & !(PAGE_SIZE - 1);
        self.pages.binary_search_by_key(&va, |p| p.va).is_ok()
    }

    /// The initial bytes of `len` bytes at `addr`, if every byte lies in a loaded page.
    pub fn initial_bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        for a in addr..addr.checked_add(len as u64)? {
            let va = a & !(PAGE_SIZE - 1);
            let i = self.pages.binary_search_by_key(&va, |p| p.va).ok()?;
            out.push(self.pages[i].bytes[(a - va) as usize]);
        }
        Some(out)
    }

    /// The start of the instruction that `addr` lies inside of (not at the start of), by
    /// decoding instruction lengths from the start of the function symbol covering `addr`.
    /// `None` when `addr` starts an instruction or no function symbol covers it.
    pub fn inside_instruction(&self, addr: u64) -> Option<u64> {
        let func = self
            .symbols
            .symbols()
            .iter()
            .filter(|s| s.is_func && s.addr <= addr && addr < s.addr.saturating_add(s.size))
            .max_by_key(|s| s.addr)?;
        let mut pc = func.addr;
        while pc < addr {
            let parcel = self.initial_bytes(pc, 2)?;
            let len = ruprobes::decode::insn_len(u16::from_le_bytes([parcel[0], parcel[1]]))?;
            let next = pc.checked_add(len as u64)?;
            if next > addr {
                return Some(pc);
            }
            pc = next;
        }
        None
    }

    /// `addr` with the symbol of this image it falls in, as traces print it.
    pub fn location(&self, addr: u64) -> Loc {
        Loc {
            addr,
            symbol: self
                .symbols
                .lookup(addr)
                .map(|(name, off)| (name.clone(), off)),
        }
    }
}

/// The (unrelocated) address of the program headers: `PT_PHDR`, or where a `PT_LOAD` that
/// covers them in the file maps them.
fn program_headers_address(elf: &Elf<'_>) -> Option<u64> {
    if let Some(ph) = elf.program_headers.iter().find(|ph| ph.p_type == PT_PHDR) {
        return Some(ph.p_vaddr);
    }
    let off = elf.header.e_phoff;
    elf.program_headers
        .iter()
        .find(|ph| ph.p_type == PT_LOAD && ph.p_offset <= off && off < ph.p_offset + ph.p_filesz)
        .map(|ph| ph.p_vaddr + (off - ph.p_offset))
}

/// Whether `elf` carries a mark of the Linux ABI (see the module documentation).
fn linux_marks(elf: &Elf<'_>) -> bool {
    elf.header.e_ident[EI_OSABI] == ELFOSABI_GNU
        || elf.header.e_type == ET_DYN
        || elf.program_headers.iter().any(|ph| ph.p_type == PT_TLS)
        || elf
            .section_headers
            .iter()
            .any(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(".note.ABI-tag"))
        || elf
            .syms
            .iter()
            .any(|sym| elf.strtab.get_at(sym.st_name) == Some("__libc_start_main"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fib() -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/bin/fib.elf");
        std::fs::read(path).unwrap_or_default()
    }

    fn why(result: Result<Arc<Image>, SimError>) -> String {
        match result {
            Err(SimError::BadElf { why, .. }) => why,
            other => panic!("expected a BadElf error, got {other:?}"),
        }
    }

    #[test]
    fn loads_text_and_data_with_their_permissions() {
        let image = Image::parse("fib", &fib()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(image.entry, 0x10000);
        let text = &image.pages[0];
        assert_eq!(text.va, 0x10000);
        assert_eq!(
            text.perms,
            Perms {
                read: true,
                write: false,
                exec: true
            }
        );
        assert!(
            image.pages.iter().all(|p| !(p.perms.write && p.perms.exec)),
            "W^X"
        );
        assert_eq!(image.symbols.resolve("fib"), Some(0x10014));
        assert!(
            !image.linux_abi,
            "a freestanding fixture is a teaching-kernel app"
        );
        // `addi sp, sp, -48` (c.addi16sp) starts fib.
        assert_eq!(image.initial_bytes(0x10014, 2), Some(vec![0x79, 0x71]));
        assert_eq!(image.initial_bytes(0x2000_0000, 1), None);
    }

    #[test]
    fn rejects_what_it_cannot_load() {
        let elf = fib();
        assert_eq!(why(Image::parse("x", b"#!/bin/sh\n")), "not an ELF file");
        let mut x86 = elf.clone();
        x86[18] = 62; // e_machine = EM_X86_64
        assert!(why(Image::parse("x", &x86)).starts_with("not a RISC-V 64 executable"));
        let mut relocatable = elf.clone();
        relocatable[16] = 1; // e_type = ET_REL
        assert!(why(Image::parse("x", &relocatable)).contains("ET_EXEC"));
        let mut class32 = elf.clone();
        class32[4] = 1; // EI_CLASS = ELFCLASS32
        assert!(Image::parse("x", &class32).is_err());
        let mut entry = elf.clone();
        entry[24..32].copy_from_slice(&0x2000_0000u64.to_le_bytes());
        assert!(why(Image::parse("x", &entry)).contains("entry point"));
        let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap_or_default()) as usize;
        let mut dynamic = elf.clone();
        dynamic[phoff..phoff + 4].copy_from_slice(&PT_INTERP.to_le_bytes());
        assert!(why(Image::parse("x", &dynamic)).contains("link it statically"));
        let mut pie = elf.clone();
        pie[16] = 3; // e_type = ET_DYN: loaded at DYN_BASE, symbols relocated
        let pie = Image::parse("x", &pie).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pie.entry, 0x10000 + DYN_BASE);
        assert_eq!(pie.symbols.resolve("fib"), Some(0x10014 + DYN_BASE));
        assert!(pie.linux_abi, "static-pie is a Linux mark");
        let truncated = &elf[..elf.len() / 3];
        assert!(Image::parse("x", truncated).is_err());
    }
}

//! The Linux initial stack, as `fs/binfmt_elf.c` (`create_elf_tables`) builds it: at `sp`
//! (16-byte aligned) `argc`, the `argv` pointers and a null, the `envp` pointers and a null,
//! then the auxiliary vector; above it the 16 `AT_RANDOM` bytes and the strings (`argv`,
//! `envp`, and at the very top the `AT_EXECFN` name).

use crate::error::SimError;
use crate::kernel::aspace::{Access, AddressSpace, STACK_TOP};
use crate::kernel::image::Image;
use crate::mem::{PhysMem, PAGE_SIZE};

/// The user and group id every process has (`getuid` and `AT_UID` agree).
pub const UID: u64 = 1000;
/// `AT_HWCAP`: one bit per single-letter extension, RV64IMAFDC.
pub const HWCAP: u64 = {
    let mut bits = 0;
    let letters = b"imafdc";
    let mut i = 0;
    while i < letters.len() {
        bits |= 1 << (letters[i] - b'a');
        i += 1;
    }
    bits
};
/// Most bytes of strings (arguments and environment) a program may start with.
pub const MAX_ARG_BYTES: usize = 1 << 20;

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_EXECFN: u64 = 31;

/// What a program starts with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartInfo {
    /// Its arguments (`argv[0]` first).
    pub argv: Vec<Vec<u8>>,
    /// Its environment (`KEY=VALUE`).
    pub envp: Vec<Vec<u8>>,
    /// The 16 `AT_RANDOM` bytes.
    pub random: [u8; 16],
}

/// Builds the initial stack of `image` with `info` in `aspace` (below [`STACK_TOP`]) and
/// returns the initial `sp`.
pub fn build(
    mem: &mut PhysMem,
    aspace: &mut AddressSpace,
    image: &Image,
    info: &StartInfo,
) -> Result<u64, SimError> {
    let strings: usize = info
        .argv
        .iter()
        .chain(&info.envp)
        .map(|s| s.len() + 1)
        .sum();
    let execfn = info.argv.first().cloned().unwrap_or_default();
    if strings + execfn.len() > MAX_ARG_BYTES {
        return Err(SimError::Unavailable(
            "arguments and environment exceed 1 MiB",
        ));
    }
    // Strings from the top: AT_EXECFN, then the argv and envp strings.
    let mut blob: Vec<u8> = Vec::with_capacity(strings + execfn.len() + 1);
    let top = STACK_TOP - 8; // a null word at the very top, like Linux's end marker
    let mut pointers = Vec::with_capacity(info.argv.len() + info.envp.len());
    let base = top - (strings + execfn.len() + 1) as u64;
    for s in info.argv.iter().chain(&info.envp) {
        pointers.push(base + blob.len() as u64);
        blob.extend_from_slice(s);
        blob.push(0);
    }
    let execfn_at = base + blob.len() as u64;
    blob.extend_from_slice(&execfn);
    blob.push(0);
    let random_at = (base - 16) & !15;
    let auxv: [(u64, u64); 17] = [
        (AT_PHDR, image.phdr),
        (AT_PHENT, image.phent),
        (AT_PHNUM, image.phnum),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, image.entry),
        (AT_UID, UID),
        (AT_EUID, UID),
        (AT_GID, UID),
        (AT_EGID, UID),
        (AT_HWCAP, HWCAP),
        (AT_CLKTCK, 100),
        (AT_SECURE, 0),
        (AT_RANDOM, random_at),
        (AT_EXECFN, execfn_at),
        (AT_NULL, 0),
    ];
    let argc = info.argv.len();
    let mut words: Vec<u64> = Vec::with_capacity(3 + pointers.len() + 2 * auxv.len());
    words.push(argc as u64);
    words.extend_from_slice(&pointers[..argc]);
    words.push(0);
    words.extend_from_slice(&pointers[argc..]);
    words.push(0);
    for (key, value) in auxv {
        words.extend([key, value]);
    }
    let sp = (random_at - 8 * words.len() as u64) & !15;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    aspace.fault_in(mem, sp, STACK_TOP - sp, true)?;
    let stored = aspace
        .write(mem, base, &blob, Access::UserWrite)
        .and_then(|()| aspace.write(mem, random_at, &info.random, Access::UserWrite))
        .and_then(|()| aspace.write(mem, sp, &bytes, Access::UserWrite));
    stored.map_err(|_| SimError::OutOfMemory)?;
    Ok(sp)
}

/// The deterministic `AT_RANDOM` bytes of the process `pid` (SplitMix64 of the pid).
pub fn random_bytes(pid: u64) -> [u8; 16] {
    let mut state = 0x5eed_0000_0000_0000 ^ pid;
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    out
}

/// One step of SplitMix64 (the deterministic source of `getrandom` and `AT_RANDOM`).
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_stack_has_argv_envp_and_auxv() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/bin/fib.elf");
        let elf = std::fs::read(path).unwrap_or_default();
        let image = Image::parse("fib", &elf).unwrap_or_else(|e| panic!("{e}"));
        let mut mem = PhysMem::new(256);
        let mut aspace =
            AddressSpace::with_image(&mut mem, &image, true).unwrap_or_else(|e| panic!("{e}"));
        let info = StartInfo {
            argv: vec![b"prog".to_vec(), b"one".to_vec()],
            envp: vec![b"K=V".to_vec()],
            random: [7; 16],
        };
        let sp = build(&mut mem, &mut aspace, &image, &info).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sp % 16, 0);
        let word = |at: u64| {
            let mut b = [0u8; 8];
            assert!(aspace.read(&mem, at, &mut b, Access::UserRead).is_ok());
            u64::from_le_bytes(b)
        };
        let string = |at: u64| {
            let mut out = Vec::new();
            let mut b = [0u8];
            let mut a = at;
            while aspace.read(&mem, a, &mut b, Access::UserRead).is_ok() && b[0] != 0 {
                out.push(b[0]);
                a += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        assert_eq!(word(sp), 2, "argc");
        assert_eq!(string(word(sp + 8)), "prog");
        assert_eq!(string(word(sp + 16)), "one");
        assert_eq!(word(sp + 24), 0);
        assert_eq!(string(word(sp + 32)), "K=V");
        assert_eq!(word(sp + 40), 0);
        let mut aux = std::collections::BTreeMap::new();
        let mut at = sp + 48;
        loop {
            let (k, v) = (word(at), word(at + 8));
            if k == AT_NULL {
                break;
            }
            aux.insert(k, v);
            at += 16;
        }
        assert_eq!(aux[&AT_PAGESZ], 4096);
        assert_eq!(aux[&AT_ENTRY], image.entry);
        assert_eq!(aux[&AT_PHNUM], image.phnum);
        assert_eq!(aux[&AT_PHDR], image.phdr);
        // fib maps no program headers (its first PT_LOAD starts at offset 0x1000).
        assert_eq!(image.phdr, 0);
        assert_eq!(aux[&AT_UID], UID);
        assert_eq!(aux[&AT_SECURE], 0);
        assert_eq!(aux[&AT_HWCAP], 0x112d);
        assert_eq!(string(aux[&AT_EXECFN]), "prog");
        let mut random = [0u8; 16];
        assert!(aspace
            .read(&mem, aux[&AT_RANDOM], &mut random, Access::UserRead)
            .is_ok());
        assert_eq!(random, [7; 16]);
        for key in [
            AT_PHENT, AT_EUID, AT_GID, AT_EGID, AT_CLKTCK, AT_BASE, AT_FLAGS,
        ] {
            assert!(aux.contains_key(&key), "auxv has {key}");
        }
    }
}

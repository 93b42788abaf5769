//! The helpers a program may call, numbered as Linux numbers them. What they need from the
//! kernel (user memory, ids, time, output) comes through [`Env`].

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::vm::{Memory, VmError, MAP_HANDLE, REGION_CTX, REGION_MAP, REGION_SHIFT};

/// What a kernel provides to a running program.
pub trait Env {
    /// Copies user memory of the probed process at `addr` into `buf`; `false` on a fault
    /// (which must never be a kernel fault).
    fn read_user(&mut self, addr: u64, buf: &mut [u8]) -> bool;
    /// `bpf_get_current_pid_tgid`: the process id in the high 32 bits, the thread id in the
    /// low 32 bits.
    fn pid_tgid(&self) -> u64;
    /// `bpf_ktime_get_ns`: the kernel's clock in nanoseconds.
    fn now_ns(&self) -> u64;
    /// One `bpf_trace_printk` line (no newline).
    fn print(&mut self, line: &str);
}

/// Helper ids the runtime implements, with their names.
pub const HELPERS: &[(u32, &str)] = &[
    (MAP_LOOKUP_ELEM, "map_lookup_elem"),
    (MAP_UPDATE_ELEM, "map_update_elem"),
    (MAP_DELETE_ELEM, "map_delete_elem"),
    (KTIME_GET_NS, "ktime_get_ns"),
    (TRACE_PRINTK, "trace_printk"),
    (GET_CURRENT_PID_TGID, "get_current_pid_tgid"),
    (PROBE_READ_USER, "probe_read_user"),
    (PROBE_READ_USER_STR, "probe_read_user_str"),
    (RINGBUF_OUTPUT, "ringbuf_output"),
    (GET_FUNC_RET, "get_func_ret"),
];

const MAP_LOOKUP_ELEM: u32 = 1;
const MAP_UPDATE_ELEM: u32 = 2;
const MAP_DELETE_ELEM: u32 = 3;
const KTIME_GET_NS: u32 = 5;
const TRACE_PRINTK: u32 = 6;
const GET_CURRENT_PID_TGID: u32 = 14;
const PROBE_READ_USER: u32 = 112;
const PROBE_READ_USER_STR: u32 = 114;
const RINGBUF_OUTPUT: u32 = 130;
const GET_FUNC_RET: u32 = 184;

const EFAULT: i64 = 14;
const EINVAL: i64 = 22;
const EOPNOTSUPP: i64 = 95;
/// Where the context holds a0 (`tf.x[10]`, see `fixtures/bpf/ruprobes.h`): the return value
/// at a return.
const CTX_A0: u64 = 16 + 10 * 8;
/// Longest `bpf_probe_read_user`/`_str` copy and `%s` argument.
const MAX_COPY: u64 = 4096;
/// Longest `trace_printk` format and line (Linux's).
const MAX_PRINTK: usize = 1024;

/// The name of helper `id`, if the runtime implements it.
pub fn name(id: u32) -> Option<&'static str> {
    HELPERS.iter().find(|(i, _)| *i == id).map(|(_, n)| *n)
}

fn map_index(
    handle: u64,
    mem: &Memory<'_>,
    insn: usize,
    helper: &'static str,
) -> Result<usize, VmError> {
    let bad = VmError::BadArgument {
        insn,
        helper,
        why: "r1 is not a map",
    };
    let m = (handle >> REGION_SHIFT)
        .checked_sub(MAP_HANDLE)
        .filter(|_| handle & 0xffff_ffff == 0)
        .ok_or(bad.clone())? as usize;
    if m < mem.maps.len() {
        Ok(m)
    } else {
        Err(bad)
    }
}

/// Runs helper `id` for the call at `insn` with the program's registers.
pub(crate) fn call(
    id: u32,
    insn: usize,
    reg: &[u64; 11],
    mem: &mut Memory<'_>,
    env: &mut dyn Env,
) -> Result<u64, VmError> {
    let name = name(id).unwrap_or("unknown");
    let r = |n: usize| reg[n];
    let result: i64 = match id {
        MAP_LOOKUP_ELEM => {
            let m = map_index(r(1), mem, insn, name)?;
            let ks = mem.maps[m].def.key_size as usize;
            mem.fetch(insn, r(2), ks, 0)?;
            let map = &mem.maps[m];
            return Ok(match map.lookup(&mem.scratch[..ks]) {
                Some(slot) => {
                    ((REGION_MAP + m as u64) << REGION_SHIFT)
                        + slot as u64 * map.def.value_size as u64
                }
                None => 0,
            });
        }
        MAP_UPDATE_ELEM => {
            let m = map_index(r(1), mem, insn, name)?;
            let def = &mem.maps[m].def;
            let (ks, vs) = (def.key_size as usize, def.value_size as usize);
            mem.fetch(insn, r(2), ks, 0)?;
            mem.fetch(insn, r(3), vs, ks)?;
            let (key, value) = mem.scratch[..ks + vs].split_at(ks);
            mem.maps[m].update(key, value, r(4))
        }
        MAP_DELETE_ELEM => {
            let m = map_index(r(1), mem, insn, name)?;
            let ks = mem.maps[m].def.key_size as usize;
            mem.fetch(insn, r(2), ks, 0)?;
            mem.maps[m].delete(&mem.scratch[..ks])
        }
        KTIME_GET_NS => return Ok(env.now_ns()),
        GET_CURRENT_PID_TGID => return Ok(env.pid_tgid()),
        TRACE_PRINTK => {
            let size = (r(2) as usize).min(MAX_PRINTK);
            let fmt = mem.load(insn, r(1), size)?.to_vec();
            let line = printk(&fmt, [r(3), r(4), r(5)], mem, insn)?;
            env.print(line.trim_end_matches('\n'));
            line.len() as i64
        }
        PROBE_READ_USER | PROBE_READ_USER_STR => {
            let (dst, size, src) = (r(1), r(2), r(3));
            if size > MAX_COPY {
                return Err(VmError::BadArgument {
                    insn,
                    helper: name,
                    why: "size over 4096",
                });
            }
            // Straight into the program's buffer (checked first: a bad one is an error).
            let buf = mem.store(insn, dst, size as usize)?;
            if id == PROBE_READ_USER {
                if env.read_user(src, buf) {
                    0
                } else {
                    buf.fill(0);
                    -EFAULT
                }
            } else {
                read_user_str(env, src, buf)
            }
        }
        RINGBUF_OUTPUT => {
            let m = map_index(r(1), mem, insn, name)?;
            if r(3) > MAX_COPY {
                return Err(VmError::BadArgument {
                    insn,
                    helper: name,
                    why: "size over 4096",
                });
            }
            let len = r(3) as usize;
            mem.fetch(insn, r(2), len, 0)?;
            if r(4) & !3 != 0 {
                -EINVAL
            } else {
                mem.maps[m].output(&mem.scratch[..len])
            }
        }
        GET_FUNC_RET => {
            if r(1) != REGION_CTX << REGION_SHIFT {
                return Err(VmError::BadArgument {
                    insn,
                    helper: name,
                    why: "r1 is not the context",
                });
            }
            // Checked first: a bad pointer is an error even where the helper is refused.
            mem.store(insn, r(2), 8)?;
            if mem.at_return {
                let value = mem.load(insn, r(1) + CTX_A0, 8)?;
                let mut word = [0u8; 8];
                word.copy_from_slice(value);
                mem.store(insn, r(2), 8)?.copy_from_slice(&word);
                0
            } else {
                -EOPNOTSUPP
            }
        }
        // The loader refuses unknown helpers; this keeps a loader bug off the trap path.
        _ => {
            return Err(VmError::BadArgument {
                insn,
                helper: name,
                why: "no such helper",
            })
        }
    };
    Ok(result as u64)
}

/// `bpf_probe_read_user_str`: copies up to `buf.len() - 1` bytes and a NUL; returns the
/// length with the NUL, or -EFAULT (and an empty string) if the first bytes fault.
fn read_user_str(env: &mut dyn Env, src: u64, buf: &mut [u8]) -> i64 {
    if buf.is_empty() {
        return 0;
    }
    let limit = buf.len() - 1;
    let mut done = 0;
    while done < limit {
        // Never read across a page the string may not reach.
        let addr = src.wrapping_add(done as u64);
        let chunk = ((4096 - addr % 4096) as usize).min(limit - done);
        if !env.read_user(addr, &mut buf[done..done + chunk]) {
            buf.fill(0);
            return -EFAULT;
        }
        if let Some(nul) = buf[done..done + chunk].iter().position(|&b| b == 0) {
            let len = done + nul;
            buf[len..].fill(0);
            return len as i64 + 1;
        }
        done += chunk;
    }
    buf[limit] = 0;
    buf.len() as i64
}

/// Formats a `trace_printk` line: `%d %i %u %x %X %p %s %c %%` with `l`/`ll`/`h` modifiers
/// and a width; at most three arguments.
fn printk(fmt: &[u8], args: [u64; 3], mem: &Memory<'_>, insn: usize) -> Result<String, VmError> {
    let fmt = match fmt.iter().position(|&b| b == 0) {
        Some(end) => &fmt[..end],
        None => fmt,
    };
    let mut out = String::new();
    let mut next = 0;
    let mut i = 0;
    let bad = |why| VmError::BadArgument {
        insn,
        helper: "trace_printk",
        why,
    };
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        if c != b'%' {
            out.push(c as char);
            continue;
        }
        let mut zero = false;
        let mut width = 0usize;
        if fmt.get(i) == Some(&b'0') {
            zero = true;
            i += 1;
        }
        while let Some(d @ b'0'..=b'9') = fmt.get(i) {
            width = width * 10 + (d - b'0') as usize;
            i += 1;
        }
        let mut long = 0;
        while let Some(b'l' | b'h' | b'z') = fmt.get(i) {
            long += usize::from(fmt[i] == b'l');
            i += 1;
        }
        let Some(&conv) = fmt.get(i) else {
            return Err(bad("format ends inside a conversion"));
        };
        i += 1;
        if conv == b'%' {
            out.push('%');
            continue;
        }
        let arg = *args.get(next).ok_or(bad("more than three conversions"))?;
        next += 1;
        // Without `l`, integers are 32-bit like C's int.
        let int = |signed: bool| -> i128 {
            match (long, signed) {
                (0, true) => arg as u32 as i32 as i128,
                (0, false) => arg as u32 as i128,
                (_, true) => arg as i64 as i128,
                (_, false) => arg as i128,
            }
        };
        let text = match conv {
            b'd' | b'i' => alloc::format!("{}", int(true)),
            b'u' => alloc::format!("{}", int(false)),
            b'x' => alloc::format!("{:x}", int(false)),
            b'X' => alloc::format!("{:X}", int(false)),
            b'p' => alloc::format!("{arg:#x}"),
            b'c' => String::from(arg as u8 as char),
            b's' => {
                let mut s = Vec::new();
                for k in 0..MAX_COPY {
                    let b = mem.load(insn, arg.wrapping_add(k), 1)?[0];
                    if b == 0 {
                        break;
                    }
                    s.push(b);
                }
                String::from_utf8_lossy(&s).into_owned()
            }
            _ => return Err(bad("unsupported conversion")),
        };
        for _ in text.len()..width {
            out.push(if zero { '0' } else { ' ' });
        }
        let _ = out.write_str(&text);
        if out.len() > MAX_PRINTK {
            let mut end = MAX_PRINTK;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            break;
        }
    }
    Ok(out)
}

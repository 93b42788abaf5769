//! The Linux personality: the riscv64 (asm-generic) system-call numbers that static glibc,
//! musl and Rust std programs use. Anything else returns `-ENOSYS` with one diagnostic
//! per call number. riscv64 has no `time` system call (libc's `time()` calls
//! `clock_gettime`).

use ruprobes::abi;

use crate::kernel::files::{self, Open, EBADF};
use crate::kernel::memory::prot_perms;
use crate::kernel::signals::SigAction;
use crate::kernel::startup::{splitmix, StartInfo, UID};
use crate::kernel::syscall::{Outcome, EFAULT};
use crate::kernel::threads::{CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID, CLONE_PARENT_SETTID};
use crate::kernel::threads::{CLONE_SETTLS, CLONE_THREAD, CLONE_VM};
use crate::kernel::{time, ExitStatus, Pid, ThreadState, Tid, Wait};
use crate::machine::Machine;

/// The thread pointer register (`tp`, x4).
const TP: usize = 4;
use crate::sv39;

/// `AT_FDCWD`.
const AT_FDCWD: u64 = -100i64 as u64;
/// `EINVAL`.
const EINVAL: i64 = -22;
/// `ENOTTY`.
const ENOTTY: i64 = -25;
/// `ESPIPE`.
const ESPIPE: i64 = -29;

/// Names of the calls a diagnostic may mention (the ones not implemented here included).
fn call_name(nr: u64) -> Option<&'static str> {
    Some(match nr {
        17 => "getcwd",
        23 => "dup",
        24 => "dup3",
        25 => "fcntl",
        29 => "ioctl",
        46 => "ftruncate",
        48 => "faccessat",
        56 => "openat",
        59 => "pipe2",
        73 => "ppoll",
        78 => "readlinkat",
        98 => "futex",
        99 => "set_robust_list",
        122 => "sched_setaffinity",
        123 => "sched_getaffinity",
        134 => "rt_sigaction",
        139 => "rt_sigreturn",
        153 => "times",
        165 => "getrusage",
        167 => "prctl",
        179 => "sysinfo",
        198 => "socket",
        233 => "madvise",
        283 => "membarrier",
        291 => "statx",
        293 => "rseq",
        435 => "clone3",
        439 => "faccessat2",
        _ => return None,
    })
}

impl Machine {
    /// One call of the Linux personality.
    pub(crate) fn linux_call(&mut self, pid: Pid, tid: Tid, nr: u64, args: [u64; 6]) -> Outcome {
        let [a0, a1, a2, a3, a4, _a5] = args;
        let ret = match nr {
            17 => self
                .copy_out(pid, a0, b"/\0")
                .map_or_else(|e| e, |()| a0 as i64),
            23 => self.sys_dup(pid, a0),
            25 => self.sys_fcntl(pid, a0, a1),
            29 => match self.kernel.procs.get(&pid).and_then(|p| p.files.get(a0)) {
                Some(_) => ENOTTY,
                None => EBADF,
            },
            48 | 439 => self.sys_access(pid, a0, a1, a2),
            56 => self.sys_openat(pid, a0, a1, a2),
            57 => self.proc_files(pid, |f| f.close(a0)),
            61 => self.sys_getdents(pid, a0, a1, a2),
            62 => self.sys_lseek(pid, a0, a1 as i64, a2),
            63 => self.sys_read(pid, a0, a1, a2),
            64 => self.sys_write(pid, a0, a1, a2),
            65 | 66 => self.sys_iov(pid, nr == 66, a0, a1, a2),
            67 => self.sys_pread(pid, a0, a1, a2, a3),
            73 => self.sys_ppoll(pid, a0, a1),
            78 => self.sys_readlinkat(pid, a1, a2, a3),
            79 => self.sys_fstatat(pid, a0, a1, a2, a3),
            80 => self.sys_fstat(pid, a0, a1),
            93 => {
                self.cpu.pc -= 4;
                self.exit_thread(pid, tid, a0 as i32);
                return Outcome::Switched;
            }
            94 => {
                self.cpu.pc -= 4;
                self.end_process(pid, ExitStatus::Exited(a0 as i32));
                return Outcome::Switched;
            }
            96 => {
                if let Some(t) = self.kernel.threads.get_mut(&tid) {
                    t.clear_child_tid = a0;
                }
                tid as i64
            }
            98 => return self.sys_futex(pid, args),
            99 => 0, // set_robust_list: recorded nowhere; nothing here walks robust lists
            101 => return self.sys_sleep(pid, 1, 0, a0),
            113 => {
                let ns = time::clock_ns(a0, self.now_ns());
                self.copy_out(pid, a1, &time::timespec(ns))
                    .map_or_else(|e| e, |()| 0)
            }
            114 => {
                if a1 == 0 {
                    0
                } else {
                    let res = time::timespec(time::NS_PER_INSN);
                    self.copy_out(pid, a1, &res).map_or_else(|e| e, |()| 0)
                }
            }
            115 => return self.sys_sleep(pid, a0, a1, a2),
            123 => {
                // One CPU.
                let mut mask = vec![0u8; (a1 as usize).min(128)];
                if mask.is_empty() {
                    EINVAL
                } else {
                    mask[0] = 1;
                    self.copy_out(pid, a2, &mask)
                        .map_or_else(|e| e, |()| mask.len() as i64)
                }
            }
            124 => {
                self.cpu.x[abi::A0] = 0;
                self.deschedule(ThreadState::Ready);
                return Outcome::Switched;
            }
            129 => {
                let target = a0 as i64;
                let to = if target <= 0 { pid } else { target as Pid };
                self.send_signal_from(pid, to, a1)
            }
            130 | 131 => {
                let (tgid, t) = if nr == 130 {
                    (None, a0)
                } else {
                    (Some(a0), a1)
                };
                let sig = if nr == 130 { a1 } else { a2 };
                match self.kernel.threads.get(&(t as Tid)) {
                    Some(th) if tgid.is_none_or(|g| g as Pid == th.pid) => {
                        let to = th.pid;
                        self.send_signal_from(pid, to, sig)
                    }
                    _ => -3, // ESRCH
                }
            }
            132 => self.sys_sigaltstack(pid, tid, a0, a1),
            134 => self.sys_sigaction(pid, a0, a1, a2),
            135 => self.sys_sigprocmask(pid, tid, a0, a1, a2),
            160 => self.sys_uname(pid, a0),
            163 => self.write_rlimit(pid, a0, a1),
            169 => {
                let ns = time::clock_ns(time::CLOCK_REALTIME, self.now_ns());
                let mut tv = [0u8; 16];
                tv[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
                tv[8..].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
                if a0 == 0 {
                    0
                } else {
                    self.copy_out(pid, a0, &tv).map_or_else(|e| e, |()| 0)
                }
            }
            172 => pid as i64,
            173 => self
                .kernel
                .procs
                .get(&pid)
                .and_then(|p| p.parent)
                .unwrap_or(0) as i64,
            174..=177 => UID as i64,
            178 => tid as i64,
            214 => {
                let mem = &mut self.mem;
                match self.kernel.procs.get_mut(&pid) {
                    Some(p) => p.aspace.set_brk(mem, a0) as i64,
                    None => EFAULT,
                }
            }
            215 => self.with_aspace(pid, |a, mem| a.munmap(mem, a0, a1)),
            216 => self.with_aspace(pid, |a, mem| a.mremap(mem, a0, a1, a2, a3)),
            220 => self.sys_clone(pid, tid, a0, a1, a2, a3, a4),
            221 => return self.sys_execve(pid, a0, a1, a2),
            222 => self.sys_mmap(pid, args),
            226 => self.with_aspace(pid, |a, mem| a.mprotect(mem, a0, a1, prot_perms(a2))),
            233 => self.sys_madvise(pid, a0, a1, a2),
            260 => {
                let target = a0 as i64;
                let target = if target < -1 || target == 0 {
                    -1
                } else {
                    target
                };
                if a3 != 0 {
                    // struct rusage: all zero.
                    if let Err(e) = self.copy_out(pid, a3, &[0u8; 144]) {
                        return Outcome::Return(e);
                    }
                }
                return self.sys_wait(pid, target, a1, true, a2 & 1 != 0);
            }
            261 => {
                if a2 != 0 && a3 == 0 {
                    0 // setting a limit: accepted, not enforced
                } else if a3 != 0 {
                    self.write_rlimit(pid, a1, a3)
                } else {
                    0
                }
            }
            278 => self.sys_getrandom(pid, a0, a1),
            293 => -38, // rseq: -ENOSYS, as the issue asks; glibc then does without
            _ => return self.unknown_call(pid, nr, call_name(nr)),
        };
        Outcome::Return(ret)
    }

    /// Runs `f` on the process's address space.
    fn with_aspace(
        &mut self,
        pid: Pid,
        f: impl FnOnce(&mut crate::kernel::aspace::AddressSpace, &mut crate::mem::PhysMem) -> i64,
    ) -> i64 {
        let mem = &mut self.mem;
        let result = match self.kernel.procs.get_mut(&pid) {
            Some(p) => f(&mut p.aspace, mem),
            None => EFAULT,
        };
        self.cpu.flush_tlb();
        result
    }

    fn proc_files(&mut self, pid: Pid, f: impl FnOnce(&mut files::FdTable) -> i64) -> i64 {
        match self.kernel.procs.get_mut(&pid) {
            Some(p) => f(&mut p.files),
            None => EBADF,
        }
    }

    fn send_signal_from(&mut self, from: Pid, to: Pid, sig: u64) -> i64 {
        let r = self.send_signal(to, sig);
        if to == from && self.kernel.current.is_none() {
            // The caller itself ended: the pc of the kill is the one to report.
            self.cpu.pc -= 4;
        }
        r
    }

    fn sys_mmap(&mut self, pid: Pid, args: [u64; 6]) -> i64 {
        let [addr, len, prot, flags, _fd, _off] = args;
        const MAP_FIXED: u64 = 0x10;
        const MAP_ANONYMOUS: u64 = 0x20;
        const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
        if flags & MAP_ANONYMOUS == 0 {
            return -19; // ENODEV: file mappings are not supported
        }
        let perms = prot_perms(prot);
        if flags & MAP_FIXED_NOREPLACE != 0 {
            let r = self.with_aspace(pid, |a, mem| a.mmap(mem, addr, len, perms, false));
            if r >= 0 && r as u64 != addr {
                self.with_aspace(pid, |a, mem| a.munmap(mem, r as u64, len));
                return -17; // EEXIST
            }
            return r;
        }
        self.with_aspace(pid, |a, mem| {
            a.mmap(mem, addr, len, perms, flags & MAP_FIXED != 0)
        })
    }

    /// `madvise`: `MADV_DONTNEED` (4) drops the pages (they read as zeros again); every
    /// other advice is accepted and ignored.
    fn sys_madvise(&mut self, pid: Pid, addr: u64, len: u64, advice: u64) -> i64 {
        if addr % crate::mem::PAGE_SIZE != 0 {
            return EINVAL;
        }
        if advice != 4 {
            return 0;
        }
        self.with_aspace(pid, |a, mem| {
            let end = addr.saturating_add(len);
            for (va, pa, _) in sv39::leaves_in(mem, a.root, addr, end) {
                if a.area_at(va).is_some() {
                    sv39::unmap_page(mem, a.root, va);
                    mem.free_frame(pa);
                }
            }
            0
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn sys_clone(
        &mut self,
        pid: Pid,
        tid: Tid,
        flags: u64,
        stack: u64,
        ptid: u64,
        tls: u64,
        ctid: u64,
    ) -> i64 {
        if flags & CLONE_THREAD != 0 {
            if flags & CLONE_VM == 0 {
                return EINVAL;
            }
            return self.clone_thread(pid, flags, stack, ptid, tls, ctid);
        }
        // A new process (fork, vfork, posix_spawn): always a copy of the memory.
        let child = match self.fork_current(pid, tid, stack) {
            Ok(child) => child,
            Err(e) => return e,
        };
        let id = (child as u32).to_le_bytes();
        if flags & CLONE_PARENT_SETTID != 0 {
            let _ = self.copy_out(pid, ptid, &id);
        }
        if flags & CLONE_CHILD_SETTID != 0 {
            let _ = self.copy_out(child, ctid, &id);
        }
        if let Some(t) = self.kernel.threads.get_mut(&child) {
            if flags & CLONE_SETTLS != 0 {
                t.regs.x[TP] = tls;
            }
            if flags & CLONE_CHILD_CLEARTID != 0 {
                t.clear_child_tid = ctid;
            }
        }
        child as i64
    }

    fn sys_execve(&mut self, pid: Pid, path: u64, argv: u64, envp: u64) -> Outcome {
        let strings = self.user_string(pid, path).and_then(|p| {
            Ok((
                p,
                self.user_strings(pid, argv)?,
                self.user_strings(pid, envp)?,
            ))
        });
        let (path, argv, envp) = match strings {
            Ok(s) => s,
            Err(e) => return Outcome::Return(e),
        };
        let image = match self.exec_image(&path) {
            Ok(image) => image,
            Err(e) => {
                self.diagnostics.push(format!("pid {pid}: execve: {e}"));
                return Outcome::Return(files::ENOENT);
            }
        };
        let info = StartInfo {
            argv,
            envp,
            random: self.random_bytes(),
        };
        match self.exec_current(pid, image, Some(info), &[]) {
            Ok(()) => Outcome::Switched,
            Err(e) => {
                self.diagnostics.push(format!("pid {pid}: {e}"));
                Outcome::Return(-12)
            }
        }
    }

    /// 16 bytes of the machine's deterministic random stream.
    pub(crate) fn random_bytes(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&splitmix(&mut self.rng).to_le_bytes());
        }
        out
    }

    fn sys_getrandom(&mut self, pid: Pid, buf: u64, len: u64) -> i64 {
        let len = len.min(1 << 16) as usize;
        let mut bytes = Vec::with_capacity(len + 8);
        while bytes.len() < len {
            bytes.extend_from_slice(&splitmix(&mut self.rng).to_le_bytes());
        }
        bytes.truncate(len);
        self.copy_out(pid, buf, &bytes)
            .map_or_else(|e| e, |()| len as i64)
    }

    /// `nanosleep` (clock 1, relative) and `clock_nanosleep(clock, flags, req, rem)`.
    fn sys_sleep(&mut self, pid: Pid, clock: u64, flags: u64, req: u64) -> Outcome {
        let Some(ns) = self
            .copy_in(pid, req, 16)
            .ok()
            .and_then(|b| time::from_timespec(b.try_into().ok()?))
        else {
            return Outcome::Return(EINVAL);
        };
        let now = self.now_ns();
        let until = if flags & 1 != 0 {
            // TIMER_ABSTIME on `clock`.
            ns.saturating_sub(time::clock_ns(clock, 0))
        } else {
            now.saturating_add(ns)
        };
        if until <= now {
            return Outcome::Return(0);
        }
        self.block(Wait::Sleep { until });
        Outcome::Switched
    }

    fn sys_sigaction(&mut self, pid: Pid, sig: u64, act: u64, old: u64) -> i64 {
        let Some(current) = self
            .kernel
            .procs
            .get(&pid)
            .and_then(|p| p.signals.get(sig as usize))
        else {
            return EINVAL;
        };
        let new = if act != 0 {
            match self.copy_in(pid, act, 24) {
                Ok(b) => Some(SigAction::from_bytes(b.try_into().unwrap_or([0; 24]))),
                Err(e) => return e,
            }
        } else {
            None
        };
        if old != 0 {
            if let Err(e) = self.copy_out(pid, old, &current.to_bytes()) {
                return e;
            }
        }
        if let Some(new) = new {
            let set = self
                .kernel
                .procs
                .get_mut(&pid)
                .is_some_and(|p| p.signals.set(sig as usize, new));
            if !set {
                return EINVAL;
            }
        }
        0
    }

    fn sys_sigprocmask(&mut self, pid: Pid, tid: Tid, how: u64, set: u64, old: u64) -> i64 {
        let mask = self.kernel.threads.get(&tid).map_or(0, |t| t.sigmask);
        if old != 0 {
            if let Err(e) = self.copy_out(pid, old, &mask.to_le_bytes()) {
                return e;
            }
        }
        if set == 0 {
            return 0;
        }
        let new = match self.read_word(pid, set) {
            Ok(w) => w,
            Err(e) => return e,
        };
        let mask = match how {
            0 => mask | new,
            1 => mask & !new,
            2 => new,
            _ => return EINVAL,
        };
        if let Some(t) = self.kernel.threads.get_mut(&tid) {
            t.sigmask = mask;
        }
        0
    }

    fn sys_sigaltstack(&mut self, pid: Pid, tid: Tid, ss: u64, old: u64) -> i64 {
        let cur = self
            .kernel
            .threads
            .get(&tid)
            .map_or([0, 2, 0], |t| t.altstack);
        if old != 0 {
            let bytes: Vec<u8> = cur.iter().flat_map(|w| w.to_le_bytes()).collect();
            if let Err(e) = self.copy_out(pid, old, &bytes) {
                return e;
            }
        }
        if ss != 0 {
            let b = match self.copy_in(pid, ss, 24) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let word =
                |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            if let Some(t) = self.kernel.threads.get_mut(&tid) {
                t.altstack = [word(0), word(1) & 0xffff_ffff, word(2)];
            }
        }
        0
    }

    fn sys_uname(&mut self, pid: Pid, buf: u64) -> i64 {
        let fields = [
            "Linux",
            "ruprobes-sim",
            "6.1.0",
            "#1 SMP ruprobes-sim",
            "riscv64",
            "(none)",
        ];
        let mut bytes = vec![0u8; 65 * fields.len()];
        for (i, f) in fields.iter().enumerate() {
            bytes[i * 65..i * 65 + f.len()].copy_from_slice(f.as_bytes());
        }
        self.copy_out(pid, buf, &bytes).map_or_else(|e| e, |()| 0)
    }

    /// Stores the limit of `resource` (`struct rlimit`): the stack is 8 MiB, files 1024,
    /// everything else unlimited.
    fn write_rlimit(&mut self, pid: Pid, resource: u64, out: u64) -> i64 {
        let (cur, max) = match resource {
            3 => (crate::kernel::aspace::STACK_MAX, u64::MAX),
            7 => (files::MAX_FDS as u64, files::MAX_FDS as u64),
            0..=15 => (u64::MAX, u64::MAX),
            _ => return EINVAL,
        };
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&cur.to_le_bytes());
        b[8..].copy_from_slice(&max.to_le_bytes());
        self.copy_out(pid, out, &b).map_or_else(|e| e, |()| 0)
    }

    // ---- files ----

    /// The guest directory a `*at` call's `dirfd` names.
    fn dir_of(&self, pid: Pid, dirfd: u64) -> Result<Vec<String>, i64> {
        if dirfd == AT_FDCWD {
            return Ok(Vec::new());
        }
        match self.kernel.procs.get(&pid).and_then(|p| p.files.get(dirfd)) {
            Some(Open::Dir { path, .. }) => Ok(path.clone()),
            Some(_) => Err(-20), // ENOTDIR
            None => Err(EBADF),
        }
    }

    fn user_path(&mut self, pid: Pid, addr: u64) -> Result<String, i64> {
        self.user_string(pid, addr)
            .map(|p| String::from_utf8_lossy(&p).into_owned())
    }

    fn sys_openat(&mut self, pid: Pid, dirfd: u64, path: u64, flags: u64) -> i64 {
        let opened = self.user_path(pid, path).and_then(|path| {
            let cwd = self.dir_of(pid, dirfd)?;
            self.root.open(&cwd, &path, flags)
        });
        match opened {
            Ok(open) => self.proc_files(pid, |f| f.insert(open, flags & 0o2000000 != 0)),
            Err(e) => e,
        }
    }

    fn sys_access(&mut self, pid: Pid, dirfd: u64, path: u64, mode: u64) -> i64 {
        let found = self.user_path(pid, path).and_then(|path| {
            let cwd = self.dir_of(pid, dirfd)?;
            self.root.resolve(&cwd, &path)
        });
        match found {
            Ok(_) if mode & 2 != 0 => -30, // EROFS
            Ok(_) => 0,
            Err(e) => e,
        }
    }

    fn sys_readlinkat(&mut self, pid: Pid, path: u64, buf: u64, size: u64) -> i64 {
        // No link is visible as such: the view resolves them. /proc does not exist.
        match self.user_path(pid, path) {
            Ok(p) => match self.root.resolve(&[], &p) {
                Ok(_) => EINVAL,
                Err(e) => {
                    let _ = (buf, size);
                    e
                }
            },
            Err(e) => e,
        }
    }

    fn sys_fstat(&mut self, pid: Pid, fd: u64, buf: u64) -> i64 {
        let Some(meta) = self
            .kernel
            .procs
            .get(&pid)
            .and_then(|p| p.files.get(fd))
            .map(Open::meta)
        else {
            return EBADF;
        };
        self.copy_out(pid, buf, &meta.stat_bytes())
            .map_or_else(|e| e, |()| 0)
    }

    fn sys_fstatat(&mut self, pid: Pid, dirfd: u64, path: u64, buf: u64, flags: u64) -> i64 {
        let path = match self.user_path(pid, path) {
            Ok(p) => p,
            Err(e) => return e,
        };
        if path.is_empty() && flags & 0x1000 != 0 {
            return self.sys_fstat(pid, dirfd, buf);
        }
        let meta = self
            .dir_of(pid, dirfd)
            .and_then(|cwd| self.root.resolve(&cwd, &path))
            .and_then(|c| self.root.meta(&c));
        match meta {
            Ok(meta) => self
                .copy_out(pid, buf, &meta.stat_bytes())
                .map_or_else(|e| e, |()| 0),
            Err(e) => e,
        }
    }

    fn sys_lseek(&mut self, pid: Pid, fd: u64, off: i64, whence: u64) -> i64 {
        let Some(open) = self
            .kernel
            .procs
            .get_mut(&pid)
            .and_then(|p| p.files.get_mut(fd))
        else {
            return EBADF;
        };
        match open {
            Open::File { data, pos, .. } => {
                let base = match whence {
                    0 => 0,
                    1 => *pos as i64,
                    2 => data.len() as i64,
                    _ => return EINVAL,
                };
                match base.checked_add(off).filter(|&p| p >= 0) {
                    Some(p) => {
                        *pos = p as u64;
                        p
                    }
                    None => EINVAL,
                }
            }
            Open::Dir { pos, .. } if whence == 0 && off >= 0 => {
                *pos = off as usize;
                off
            }
            Open::Dir { .. } => EINVAL,
            _ => ESPIPE,
        }
    }

    fn sys_pread(&mut self, pid: Pid, fd: u64, buf: u64, len: u64, off: u64) -> i64 {
        let data = match self.kernel.procs.get(&pid).and_then(|p| p.files.get(fd)) {
            Some(Open::File { data, .. }) => {
                let start = off.min(data.len() as u64) as usize;
                let end = (start as u64 + len.min(1 << 20)).min(data.len() as u64) as usize;
                data[start..end].to_vec()
            }
            Some(Open::Dir { .. }) => return -21,
            Some(_) => return ESPIPE,
            None => return EBADF,
        };
        self.copy_out(pid, buf, &data)
            .map_or_else(|e| e, |()| data.len() as i64)
    }

    fn sys_getdents(&mut self, pid: Pid, fd: u64, buf: u64, room: u64) -> i64 {
        let (bytes, next) = match self.kernel.procs.get(&pid).and_then(|p| p.files.get(fd)) {
            Some(Open::Dir { entries, pos, .. }) => {
                match files::dirents(entries, *pos, room.min(1 << 20) as usize) {
                    Ok(r) => r,
                    Err(e) => return e,
                }
            }
            Some(_) => return -20,
            None => return EBADF,
        };
        if let Err(e) = self.copy_out(pid, buf, &bytes) {
            return e;
        }
        if let Some(Open::Dir { pos, .. }) = self
            .kernel
            .procs
            .get_mut(&pid)
            .and_then(|p| p.files.get_mut(fd))
        {
            *pos = next;
        }
        bytes.len() as i64
    }

    /// `readv` / `writev`.
    fn sys_iov(&mut self, pid: Pid, write: bool, fd: u64, iov: u64, count: u64) -> i64 {
        if count > 1024 {
            return EINVAL;
        }
        let mut total = 0i64;
        for i in 0..count {
            let (base, len) = match self
                .read_word(pid, iov + 16 * i)
                .and_then(|b| Ok((b, self.read_word(pid, iov + 16 * i + 8)?)))
            {
                Ok(v) => v,
                Err(e) => return if total > 0 { total } else { e },
            };
            if len == 0 {
                continue;
            }
            let n = if write {
                self.sys_write(pid, fd, base, len)
            } else {
                self.sys_read(pid, fd, base, len)
            };
            if n < 0 {
                return if total > 0 { total } else { n };
            }
            total += n;
            if (n as u64) < len {
                break;
            }
        }
        total
    }

    fn sys_ppoll(&mut self, pid: Pid, fds: u64, n: u64) -> i64 {
        // Nothing is ever ready but all descriptors are valid: clear every `revents`.
        for i in 0..n.min(1024) {
            if let Err(e) = self.copy_out(pid, fds + 8 * i + 6, &[0, 0]) {
                return e;
            }
        }
        0
    }

    fn sys_dup(&mut self, pid: Pid, fd: u64) -> i64 {
        let Some(open) = self
            .kernel
            .procs
            .get(&pid)
            .and_then(|p| p.files.get(fd))
            .cloned()
        else {
            return EBADF;
        };
        self.proc_files(pid, |f| f.insert(open, false))
    }

    fn sys_fcntl(&mut self, pid: Pid, fd: u64, cmd: u64) -> i64 {
        let Some(open) = self.kernel.procs.get(&pid).and_then(|p| p.files.get(fd)) else {
            return EBADF;
        };
        match cmd {
            1 | 2 => 0, // F_GETFD, F_SETFD
            3 => match open {
                Open::Stdout | Open::Stderr => 1, // O_WRONLY
                _ => 0,
            },
            0 | 1030 => self.sys_dup(pid, fd), // F_DUPFD, F_DUPFD_CLOEXEC
            _ => EINVAL,
        }
    }
}

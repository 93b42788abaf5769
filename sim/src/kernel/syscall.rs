//! System-call entry, user-memory copies and the calls both personalities share (write,
//! read, fork, exec, wait). The numbers live in the two tables, `teaching` and `linux`.

use std::path::Path;
use std::sync::Arc;

use ruprobes::abi;

use crate::kernel::aspace::{Access, AddressSpace};
use crate::kernel::files::{Open, EBADF};
use crate::kernel::image::Image;
use crate::kernel::memory::ENOMEM;
use crate::kernel::startup::{self, StartInfo};
use crate::kernel::{initial_regs, ExitStatus, Personality, Pid, ProcState, Regs, Tid, Wait};
use crate::machine::Machine;
use crate::mem::PAGE_SIZE;
use crate::trace::TraceEvent;

/// A bad user pointer.
pub const EFAULT: i64 = -14;
/// No such process / child.
pub const ECHILD: i64 = -10;
/// The answer to an unknown call.
pub const ENOSYS: i64 = -38;
/// Longest path or argument string.
pub const MAX_STRING: usize = 4096;
/// Most arguments plus environment strings of an exec.
pub const MAX_ARGS: usize = 4096;

/// What a call does to the caller.
pub enum Outcome {
    /// Continue with this value in `a0`.
    Return(i64),
    /// The thread left the CPU (yield, block, exit) or its registers were replaced (exec).
    Switched,
}

impl Machine {
    /// Performs the `ecall` the current thread stopped at (`pc` is at the `ecall`).
    pub(crate) fn syscall(&mut self) {
        let Some(tid) = self.kernel.current else {
            return;
        };
        let Some(pid) = self.kernel.current_pid() else {
            return;
        };
        let nr = self.cpu.x[17];
        let args: [u64; 6] = std::array::from_fn(|i| self.cpu.x[abi::A0 + i]);
        self.trace.push(TraceEvent::Syscall {
            pid: pid as u64,
            nr,
        });
        self.cpu.pc += 4;
        let outcome = match self.personality {
            Personality::Linux => self.linux_call(pid, tid, nr, args),
            _ => self.teaching_call(pid, nr, args),
        };
        if let Outcome::Return(value) = outcome {
            self.cpu.x[abi::A0] = value as u64;
        }
    }

    /// Records one diagnostic per unknown call number and returns `-ENOSYS`.
    pub(crate) fn unknown_call(&mut self, pid: Pid, nr: u64, name: Option<&str>) -> Outcome {
        if self.unknown_calls.insert(nr) {
            let at = self.cpu.pc - 4;
            let what = name.map_or(String::new(), |n| format!(" ({n})"));
            let line = format!(
                "pid {pid}: system call {nr}{what} is not implemented (-ENOSYS), first at pc={at:#x}"
            );
            if self.config.echo_stdout {
                eprintln!("ruprobes-sim: {line}");
            }
            self.diagnostics.push(line);
        }
        Outcome::Return(ENOSYS)
    }

    // ---- user memory ----

    /// The address space of `pid` with `len` bytes at `addr` mapped in (demand pages are
    /// allocated now: ENOMEM when no frame is left).
    fn faulted_in(
        &mut self,
        pid: Pid,
        addr: u64,
        len: usize,
        write: bool,
    ) -> Result<(&mut AddressSpace, &mut crate::mem::PhysMem), i64> {
        let mem = &mut self.mem;
        let aspace = self
            .kernel
            .procs
            .get_mut(&pid)
            .map(|p| &mut p.aspace)
            .ok_or(EFAULT)?;
        aspace
            .fault_in(mem, addr, len as u64, write)
            .map_err(|_| ENOMEM)?;
        Ok((aspace, mem))
    }

    /// Copies `len` bytes of user memory at `addr` (pages mapped on demand first).
    pub(crate) fn copy_in(&mut self, pid: Pid, addr: u64, len: usize) -> Result<Vec<u8>, i64> {
        let (aspace, mem) = self.faulted_in(pid, addr, len, false)?;
        let mut buf = vec![0u8; len];
        aspace
            .read(mem, addr, &mut buf, Access::UserRead)
            .map_err(|_| EFAULT)?;
        Ok(buf)
    }

    /// Copies `bytes` to user memory at `addr` (pages mapped on demand first).
    pub(crate) fn copy_out(&mut self, pid: Pid, addr: u64, bytes: &[u8]) -> Result<(), i64> {
        let (aspace, mem) = self.faulted_in(pid, addr, bytes.len(), true)?;
        aspace
            .write(mem, addr, bytes, Access::UserWrite)
            .map_err(|_| EFAULT)
    }

    /// A little-endian `u64` of user memory.
    pub(crate) fn read_word(&mut self, pid: Pid, addr: u64) -> Result<u64, i64> {
        let b = self.copy_in(pid, addr, 8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| EFAULT)?))
    }

    /// A NUL-terminated string of at most [`MAX_STRING`] bytes.
    pub(crate) fn user_string(&mut self, pid: Pid, addr: u64) -> Result<Vec<u8>, i64> {
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < MAX_STRING {
            let n = (PAGE_SIZE - at % PAGE_SIZE).min((MAX_STRING - out.len()) as u64) as usize;
            let chunk = self.copy_in(pid, at, n)?;
            if let Some(end) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..end]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
            at += n as u64;
        }
        Err(-36) // ENAMETOOLONG
    }

    /// The strings of a null-terminated pointer array (`argv`, `envp`; 0: none).
    pub(crate) fn user_strings(&mut self, pid: Pid, array: u64) -> Result<Vec<Vec<u8>>, i64> {
        let mut out = Vec::new();
        if array == 0 {
            return Ok(out);
        }
        loop {
            let ptr = self.read_word(pid, array + 8 * out.len() as u64)?;
            if ptr == 0 {
                return Ok(out);
            }
            if out.len() >= MAX_ARGS {
                return Err(-7); // E2BIG
            }
            out.push(self.user_string(pid, ptr)?);
        }
    }

    // ---- calls both personalities have ----

    /// `write(fd, buf, len)`: fds 1 and 2 go to the machine's output.
    pub(crate) fn sys_write(&mut self, pid: Pid, fd: u64, buf: u64, len: u64) -> i64 {
        let writable = matches!(
            self.kernel.procs.get(&pid).and_then(|p| p.files.get(fd)),
            Some(Open::Stdout | Open::Stderr)
        );
        if !writable {
            return EBADF;
        }
        // Copy page by page, so a huge length costs nothing until it is really mapped.
        let mut bytes = Vec::new();
        while (bytes.len() as u64) < len {
            let at = buf.wrapping_add(bytes.len() as u64);
            let n = (PAGE_SIZE - at % PAGE_SIZE).min(len - bytes.len() as u64) as usize;
            match self.copy_in(pid, at, n) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(_) => break,
            }
        }
        if bytes.is_empty() && len > 0 {
            return EFAULT;
        }
        self.output(&bytes);
        bytes.len() as i64
    }

    /// `read(fd, buf, len)` from stdin or an open file of the root view.
    pub(crate) fn sys_read(&mut self, pid: Pid, fd: u64, buf: u64, len: u64) -> i64 {
        let len = len.min(1 << 20) as usize;
        let data = match self
            .kernel
            .procs
            .get_mut(&pid)
            .and_then(|p| p.files.get_mut(fd))
        {
            Some(Open::Stdin) => self.read_stdin(len),
            Some(Open::File { data, pos, .. }) => {
                let start = (*pos).min(data.len() as u64) as usize;
                let end = (start + len).min(data.len());
                *pos = end as u64;
                data[start..end].to_vec()
            }
            Some(Open::Dir { .. }) => return crate::kernel::files::EISDIR,
            _ => return EBADF,
        };
        match self.copy_out(pid, buf, &data) {
            Ok(()) => data.len() as i64,
            Err(e) => e,
        }
    }

    /// Up to `len` bytes of the machine's stdin (empty at its end).
    fn read_stdin(&mut self, len: usize) -> Vec<u8> {
        let Some(input) = self.stdin.as_mut() else {
            return Vec::new();
        };
        let mut buf = vec![0u8; len];
        match input.read(&mut buf) {
            Ok(n) => buf.truncate(n),
            Err(_) => buf.clear(),
        }
        buf
    }

    /// Forks the current thread's process: a copy of its memory, files and signal actions;
    /// the child's one thread continues from the same registers with `a0` = 0 (and `sp` =
    /// `stack` if not 0). Returns the child's pid, or a negative errno.
    pub(crate) fn fork_current(&mut self, parent: Pid, tid: Tid, stack: u64) -> Result<Pid, i64> {
        let proc = self.kernel.procs.get(&parent).ok_or(ECHILD)?;
        let image = proc.image.clone();
        let files = proc.files.clone();
        let signals = proc.signals.clone();
        let aspace = match proc.aspace.fork(&mut self.mem) {
            Ok(aspace) => aspace,
            Err(e) => {
                self.diagnostics
                    .push(format!("pid {parent}: fork failed: {e}"));
                return Err(-12);
            }
        };
        let mut regs = self.cpu_regs();
        regs.x[abi::A0] = 0;
        if stack != 0 {
            regs.x[abi::SP] = stack;
        }
        let child = self
            .kernel
            .spawn(Some(parent), image, aspace, files, signals, regs);
        self.fork_hook(parent, tid, child, child);
        Ok(child)
    }

    /// The image `exec` names: a path inside the root view, or an app name looked up as
    /// `NAME` and `NAME.elf` in the first program's directory and the root view's top.
    pub(crate) fn exec_image(&mut self, path: &[u8]) -> Result<Arc<Image>, String> {
        let name = String::from_utf8_lossy(path).into_owned();
        if let Some(image) = self.images.get(&name) {
            return Ok(image.clone());
        }
        if name.contains('/') {
            let found = self
                .root
                .resolve(&[], &name)
                .map_err(|e| format!("{name}: not found in the root directory ({e})"))?;
            let host = self
                .root
                .dir()
                .map(|d| d.join(found.join("/")))
                .ok_or_else(|| format!("{name}: no root directory"))?;
            let bytes = std::fs::read(&host).map_err(|e| format!("{name}: {e}"))?;
            let short = found.last().cloned().unwrap_or_else(|| name.clone());
            let stem = short.strip_suffix(".elf").unwrap_or(&short).to_string();
            return Image::parse(&stem, &bytes).map_err(|e| e.to_string());
        }
        self.image(&name).map_err(|e| e.to_string())
    }

    /// Replaces the process `pid`'s program with `image`. `start`: the Linux initial stack
    /// with these arguments; otherwise the teaching kernel's start (`sp` at the stack top,
    /// `a0` = argc and `a1` = argv when `args` are given).
    pub(crate) fn exec_current(
        &mut self,
        pid: Pid,
        image: Arc<Image>,
        start: Option<StartInfo>,
        teaching_args: &[Vec<u8>],
    ) -> Result<(), String> {
        let linux = start.is_some();
        let mut aspace = AddressSpace::with_image(&mut self.mem, &image, linux)
            .map_err(|e| format!("exec {}: {e}", image.name))?;
        let regs = match &start {
            Some(info) => startup::build(&mut self.mem, &mut aspace, &image, info)
                .map(|sp| initial_regs(image.entry, sp)),
            None => teaching_stack(&mut self.mem, &aspace, &image, teaching_args),
        };
        let regs = match regs {
            Ok(regs) => regs,
            Err(e) => {
                aspace.free(&mut self.mem);
                return Err(format!("exec {}: {e}", image.name));
            }
        };
        // Every other thread of the process ends (Linux's de_thread).
        let tid = self.kernel.current;
        let others: Vec<Tid> = self
            .kernel
            .procs
            .get(&pid)
            .map(|p| {
                p.threads
                    .iter()
                    .copied()
                    .filter(|&t| Some(t) != tid)
                    .collect()
            })
            .unwrap_or_default();
        for t in others {
            self.thread_exit_hook(pid, t);
            self.kernel.remove_thread(t);
        }
        let Some(proc) = self.kernel.procs.get_mut(&pid) else {
            aspace.free(&mut self.mem);
            return Err("exec: no process".into());
        };
        let old = std::mem::replace(&mut proc.aspace, aspace);
        proc.image = image;
        proc.files.close_on_exec();
        proc.signals.reset_handlers();
        old.free(&mut self.mem);
        regs.load_into(&mut self.cpu);
        self.cpu.set_page_table(proc.aspace.root);
        if let Some(t) = tid.and_then(|t| self.kernel.threads.get_mut(&t)) {
            t.clear_child_tid = 0;
        }
        self.exec_hook(pid);
        Ok(())
    }

    /// Waits for a child of `pid` matching `target` (-1: any). `linux`: Linux's status
    /// encoding and errors; `nohang`: return 0 instead of blocking.
    pub(crate) fn sys_wait(
        &mut self,
        pid: Pid,
        target: i64,
        status_ptr: u64,
        linux: bool,
        nohang: bool,
    ) -> Outcome {
        let matching: Vec<(Pid, ProcState)> = self
            .kernel
            .children(pid, target)
            .map(|c| (c.pid, c.state))
            .collect();
        if matching.is_empty() {
            return Outcome::Return(if linux { ECHILD } else { -1 });
        }
        let exited = matching.into_iter().find_map(|(child, state)| match state {
            ProcState::Zombie(status) => Some((child, status)),
            ProcState::Alive => None,
        });
        match exited {
            Some((child, status)) => Outcome::Return(self.reap(pid, child, status, status_ptr)),
            None if nohang => Outcome::Return(0),
            None => {
                self.block(Wait::Child { target, status_ptr });
                Outcome::Switched
            }
        }
    }

    /// Removes the exited `child` of `parent`, storing its status at `status_ptr` (if not
    /// null) in the parent's memory. Returns the child's pid (or -EFAULT if the store faulted).
    pub(crate) fn reap(
        &mut self,
        parent: Pid,
        child: Pid,
        status: ExitStatus,
        status_ptr: u64,
    ) -> i64 {
        if let Some(proc) = self.kernel.procs.remove(&child) {
            proc.aspace.free(&mut self.mem);
        }
        if status_ptr != 0 {
            let code = match self.personality {
                Personality::Linux => status.linux_wait_status(),
                _ => status.wait_code(),
            };
            if self
                .copy_out(parent, status_ptr, &code.to_le_bytes())
                .is_err()
            {
                return EFAULT;
            }
        }
        child as i64
    }

    /// The CPU's registers as a saved register file.
    pub(crate) fn cpu_regs(&self) -> Regs {
        Regs::of(&self.cpu)
    }

    /// The program called `name` for a teaching-kernel `exec`: added images first, then
    /// `NAME` or `NAME.elf` in the image directories.
    pub(crate) fn find_app(&mut self, name: &str) -> Option<Vec<u8>> {
        let dirs: Vec<&Path> = self
            .image_dirs
            .iter()
            .map(|d| d.as_path())
            .chain(self.root.dir())
            .collect();
        for dir in dirs {
            for file in [name.to_string(), format!("{name}.elf")] {
                let path = dir.join(&file);
                if path.is_file() {
                    if let Ok(bytes) = std::fs::read(&path) {
                        return Some(bytes);
                    }
                }
            }
        }
        None
    }
}

/// The teaching kernel's start registers: `sp` at the stack top, or with arguments (rCore's
/// `exec(path, args)`) the strings and the `argv` array pushed below it, `a0` = argc and
/// `a1` = argv.
fn teaching_stack(
    mem: &mut crate::mem::PhysMem,
    aspace: &AddressSpace,
    image: &Image,
    args: &[Vec<u8>],
) -> Result<Regs, crate::SimError> {
    let mut regs = initial_regs(image.entry, crate::kernel::aspace::STACK_TOP);
    if args.is_empty() {
        return Ok(regs);
    }
    let mut sp = crate::kernel::aspace::STACK_TOP;
    let mut pointers = Vec::new();
    for arg in args {
        sp -= arg.len() as u64 + 1;
        let mut bytes = arg.clone();
        bytes.push(0);
        aspace
            .write(mem, sp, &bytes, Access::UserWrite)
            .map_err(|_| crate::SimError::OutOfMemory)?;
        pointers.push(sp);
    }
    pointers.push(0);
    sp = (sp - 8 * pointers.len() as u64) & !15;
    let table: Vec<u8> = pointers.iter().flat_map(|p| p.to_le_bytes()).collect();
    aspace
        .write(mem, sp, &table, Access::UserWrite)
        .map_err(|_| crate::SimError::OutOfMemory)?;
    regs.x[abi::SP] = sp;
    regs.x[abi::A0] = args.len() as u64;
    regs.x[abi::A0 + 1] = sp;
    Ok(regs)
}

//! Files: the read-only view of a host directory given with `--root DIR`, and each
//! process's file descriptors (0, 1 and 2 are the machine's stdin, stdout and stderr).
//!
//! The guest's `/` is `DIR`. Paths resolve one component at a time on the host: `..` stops
//! at the root, and a symbolic link is followed *inside* the view (an absolute target starts
//! again at `DIR`), at most [`MAX_LINKS`] times, so nothing outside `DIR` can be reached.
//! Everything is read-only: opening for writing or creating fails with `-EROFS`. A file's
//! bytes are read when it is opened; metadata is made deterministic (inode numbers from the
//! path, owner 0, times 0), so runs do not depend on the host's clock or inode numbers.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Symbolic links followed in one lookup before `-ELOOP`.
pub const MAX_LINKS: usize = 40;
/// Largest file that can be opened (bigger ones fail with `-EFBIG`).
pub const MAX_FILE: u64 = 256 << 20;
/// Most descriptors a process may have open.
pub const MAX_FDS: usize = 1024;

/// `ENOENT`.
pub const ENOENT: i64 = -2;
/// `EBADF`.
pub const EBADF: i64 = -9;
/// `EACCES`.
const EACCES: i64 = -13;
/// `ENOTDIR`.
const ENOTDIR: i64 = -20;
/// `EISDIR`.
pub const EISDIR: i64 = -21;
/// `EINVAL`.
const EINVAL: i64 = -22;
/// `EMFILE`.
const EMFILE: i64 = -24;
/// `EFBIG`.
const EFBIG: i64 = -27;
/// `EROFS`.
const EROFS: i64 = -30;
/// `ELOOP`.
const ELOOP: i64 = -40;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// The guest's view of the host directory given as its root (none: no file exists).
#[derive(Clone, Debug, Default)]
pub struct RootView {
    dir: Option<PathBuf>,
}

/// Metadata of an open file, as `fstat` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Inode number (a hash of the guest path).
    pub ino: u64,
    /// `st_mode`.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
}

impl Meta {
    /// The riscv64 `struct stat` (128 bytes).
    pub fn stat_bytes(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..8].copy_from_slice(&1u64.to_le_bytes()); // st_dev
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16..20].copy_from_slice(&self.mode.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes()); // st_nlink
                                                        // st_uid, st_gid: 0.
        if self.mode & 0o170000 == S_IFCHR {
            b[32..40].copy_from_slice(&0x8800u64.to_le_bytes()); // st_rdev: a pty
        }
        b[48..56].copy_from_slice(&self.size.to_le_bytes());
        b[56..60].copy_from_slice(&4096u32.to_le_bytes()); // st_blksize
        b[64..72].copy_from_slice(&self.size.div_ceil(512).to_le_bytes()); // st_blocks
        b
    }

    /// The metadata of the terminal-like fds 0, 1 and 2.
    pub fn console() -> Meta {
        Meta {
            ino: 3,
            mode: S_IFCHR | 0o620,
            size: 0,
        }
    }
}

/// One directory entry for `getdents64`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub ino: u64,
    /// `d_type` (4 directory, 8 regular file, 10 link, 0 other).
    pub kind: u8,
    /// The name.
    pub name: String,
}

/// What a descriptor refers to.
#[derive(Clone, Debug)]
pub enum Open {
    /// fd 0: the machine's stdin.
    Stdin,
    /// fd 1: the machine's output.
    Stdout,
    /// fd 2: the machine's output too.
    Stderr,
    /// A regular file of the root view.
    File {
        /// Its bytes, read at open.
        data: Arc<[u8]>,
        /// The file position.
        pos: u64,
        /// Its metadata.
        meta: Meta,
    },
    /// A directory of the root view.
    Dir {
        /// Its guest path components (for `openat` relative to it).
        path: Vec<String>,
        /// Its entries, `.` and `..` first, then by name.
        entries: Arc<[DirEntry]>,
        /// The next entry `getdents64` returns.
        pos: usize,
        /// Its metadata.
        meta: Meta,
    },
}

impl Open {
    /// Its metadata.
    pub fn meta(&self) -> Meta {
        match self {
            Open::Stdin | Open::Stdout | Open::Stderr => Meta::console(),
            Open::File { meta, .. } | Open::Dir { meta, .. } => *meta,
        }
    }
}

/// A process's descriptor table.
#[derive(Clone, Debug)]
pub struct FdTable {
    fds: Vec<Option<(Open, bool)>>,
}

impl Default for FdTable {
    /// fds 0, 1 and 2 open.
    fn default() -> Self {
        FdTable {
            fds: vec![
                Some((Open::Stdin, false)),
                Some((Open::Stdout, false)),
                Some((Open::Stderr, false)),
            ],
        }
    }
}

impl FdTable {
    /// The open file of `fd`.
    pub fn get(&self, fd: u64) -> Option<&Open> {
        self.fds.get(fd as usize)?.as_ref().map(|(o, _)| o)
    }

    /// The open file of `fd`, to change its position.
    pub fn get_mut(&mut self, fd: u64) -> Option<&mut Open> {
        self.fds.get_mut(fd as usize)?.as_mut().map(|(o, _)| o)
    }

    /// Installs `open` at the lowest free descriptor; `cloexec`: closed by `execve`.
    pub fn insert(&mut self, open: Open, cloexec: bool) -> i64 {
        let slot = self.fds.iter().position(Option::is_none);
        match slot {
            Some(i) => {
                self.fds[i] = Some((open, cloexec));
                i as i64
            }
            None if self.fds.len() < MAX_FDS => {
                self.fds.push(Some((open, cloexec)));
                self.fds.len() as i64 - 1
            }
            None => EMFILE,
        }
    }

    /// Closes `fd`.
    pub fn close(&mut self, fd: u64) -> i64 {
        match self.fds.get_mut(fd as usize) {
            Some(slot @ Some(_)) => {
                *slot = None;
                0
            }
            _ => EBADF,
        }
    }

    /// Closes the close-on-exec descriptors (at `execve`).
    pub fn close_on_exec(&mut self) {
        for slot in &mut self.fds {
            if slot.as_ref().is_some_and(|(_, cloexec)| *cloexec) {
                *slot = None;
            }
        }
    }
}

/// FNV-1a of the guest path: a deterministic inode number.
fn inode(components: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in components {
        for b in b"/".iter().chain(c.as_bytes()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h | 1 << 20
}

impl RootView {
    /// The view of `dir` (`None`: an empty view).
    pub fn new(dir: Option<PathBuf>) -> Self {
        RootView { dir }
    }

    /// The host directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Resolves `path` (relative ones against the directory `cwd`, as components) to its
    /// guest path components, following links inside the view.
    pub fn resolve(&self, cwd: &[String], path: &str) -> Result<Vec<String>, i64> {
        let root = self.dir.as_ref().ok_or(ENOENT)?;
        if path.is_empty() {
            return Err(ENOENT);
        }
        let mut done: Vec<String> = if path.starts_with('/') {
            Vec::new()
        } else {
            cwd.to_vec()
        };
        let mut todo: VecDeque<String> = path.split('/').map(String::from).collect();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(c);
            let host = host_path(root, &done);
            let meta = std::fs::symlink_metadata(&host).map_err(|_| ENOENT)?;
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ELOOP);
                }
                let target = std::fs::read_link(&host).map_err(|_| ENOENT)?;
                let target = target.to_string_lossy().into_owned();
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for part in target.split('/').rev() {
                    todo.push_front(part.to_string());
                }
            } else if !todo.iter().all(|t| t.is_empty() || t == ".") && !meta.is_dir() {
                return Err(ENOTDIR);
            }
        }
        Ok(done)
    }

    /// Opens `path` with `openat` flags: `O_ACCMODE` must be `O_RDONLY` and `O_CREAT`
    /// (0o100) and `O_TRUNC` (0o1000) are refused, as on a read-only file system.
    pub fn open(&self, cwd: &[String], path: &str, flags: u64) -> Result<Open, i64> {
        let write = flags & 3 != 0 || flags & 0o1100 != 0;
        let found = self.resolve(cwd, path);
        if write {
            return Err(match found {
                Ok(_) | Err(ENOENT) => EROFS,
                Err(e) => e,
            });
        }
        let components = found?;
        let meta = self.meta(&components)?;
        let want_dir = flags & 0o200000 != 0; // O_DIRECTORY
        if meta.mode & S_IFDIR != 0 {
            let entries = self.entries(&components)?;
            return Ok(Open::Dir {
                path: components,
                entries,
                pos: 0,
                meta,
            });
        }
        if want_dir {
            return Err(ENOTDIR);
        }
        if meta.size > MAX_FILE {
            return Err(EFBIG);
        }
        let host = host_path(self.root()?, &components);
        let data = std::fs::read(host).map_err(|_| EACCES)?;
        Ok(Open::File {
            meta: Meta {
                size: data.len() as u64,
                ..meta
            },
            data: data.into(),
            pos: 0,
        })
    }

    fn root(&self) -> Result<&Path, i64> {
        self.dir.as_deref().ok_or(ENOENT)
    }

    /// The metadata of the resolved guest path `components`.
    pub fn meta(&self, components: &[String]) -> Result<Meta, i64> {
        let host = host_path(self.root()?, components);
        let m = std::fs::metadata(host).map_err(|_| ENOENT)?;
        let (kind, size) = if m.is_dir() {
            (S_IFDIR, 4096)
        } else if m.is_file() {
            (S_IFREG, m.len())
        } else {
            return Err(EACCES);
        };
        let perm = if m.is_dir() {
            0o755
        } else {
            0o644 | exec_bits(&m)
        };
        Ok(Meta {
            ino: inode(components),
            mode: kind | perm,
            size,
        })
    }

    fn entries(&self, components: &[String]) -> Result<Arc<[DirEntry]>, i64> {
        let host = host_path(self.root()?, components);
        let mut names: Vec<(String, u8)> = std::fs::read_dir(host)
            .map_err(|_| EACCES)?
            .filter_map(Result::ok)
            .map(|e| {
                let kind = match e.file_type() {
                    Ok(t) if t.is_dir() => 4,
                    Ok(t) if t.is_file() => 8,
                    Ok(t) if t.is_symlink() => 10,
                    _ => 0,
                };
                (e.file_name().to_string_lossy().into_owned(), kind)
            })
            .collect();
        names.sort();
        let mut parent = components.to_vec();
        parent.pop();
        let mut out = vec![
            DirEntry {
                ino: inode(components),
                kind: 4,
                name: ".".into(),
            },
            DirEntry {
                ino: inode(&parent),
                kind: 4,
                name: "..".into(),
            },
        ];
        for (name, kind) in names {
            let mut path = components.to_vec();
            path.push(name.clone());
            out.push(DirEntry {
                ino: inode(&path),
                kind,
                name,
            });
        }
        Ok(out.into())
    }
}

#[cfg(unix)]
fn exec_bits(m: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    if m.permissions().mode() & 0o111 != 0 {
        0o111
    } else {
        0
    }
}

#[cfg(not(unix))]
fn exec_bits(_: &std::fs::Metadata) -> u32 {
    0
}

fn host_path(root: &Path, components: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(components);
    p
}

/// Serialises entries from `pos` as `linux_dirent64` records into at most `room` bytes;
/// returns the bytes and the new position (`-EINVAL` if not even one fits).
pub fn dirents(entries: &[DirEntry], pos: usize, room: usize) -> Result<(Vec<u8>, usize), i64> {
    let mut out = Vec::new();
    let mut at = pos;
    while let Some(e) = entries.get(at) {
        let len = (19 + e.name.len() + 1).next_multiple_of(8);
        if out.len() + len > room {
            break;
        }
        out.extend_from_slice(&e.ino.to_le_bytes());
        out.extend_from_slice(&((at + 1) as i64).to_le_bytes());
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.push(e.kind);
        out.extend_from_slice(e.name.as_bytes());
        out.resize(out.len() + len - 19 - e.name.len(), 0);
        at += 1;
    }
    if out.is_empty() && at < entries.len() {
        return Err(EINVAL);
    }
    Ok((out, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ruprobes-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap_or_default();
        std::fs::write(root.join("etc/motd"), b"hi\n").unwrap_or_default();
        std::fs::write(dir.join("secret"), b"outside").unwrap_or_default();
        #[cfg(unix)]
        {
            let link = |to: &str, at: &str| {
                let _ = std::os::unix::fs::symlink(to, root.join(at));
            };
            link("../secret", "up");
            link("/etc/motd", "abs");
            link("/../../secret", "absup");
            link("loop", "loop");
        }
        root
    }

    #[test]
    fn nothing_outside_the_root_is_reachable() {
        let root = tree();
        let view = RootView::new(Some(root.clone()));
        let read = |p: &str| match view.open(&[], p, 0) {
            Ok(Open::File { data, .. }) => Ok(data.to_vec()),
            Ok(_) => Ok(b"<dir>".to_vec()),
            Err(e) => Err(e),
        };
        assert_eq!(read("/etc/motd"), Ok(b"hi\n".to_vec()));
        assert_eq!(read("etc/../etc/./motd"), Ok(b"hi\n".to_vec()));
        assert_eq!(read("/../../secret"), Err(ENOENT), "`..` stops at the root");
        assert_eq!(read("/../etc/motd"), Ok(b"hi\n".to_vec()));
        #[cfg(unix)]
        {
            assert_eq!(
                read("/up"),
                Err(ENOENT),
                "a link's `..` stops at the root too"
            );
            assert_eq!(
                read("/abs"),
                Ok(b"hi\n".to_vec()),
                "absolute targets are rooted"
            );
            assert_eq!(read("/absup"), Err(ENOENT));
            assert_eq!(read("/loop"), Err(ELOOP));
        }
        assert_eq!(read("/etc/motd/x"), Err(ENOTDIR));
        assert_eq!(view.open(&[], "/etc/motd", 1).err(), Some(EROFS));
        assert_eq!(view.open(&[], "/new", 0o101).err(), Some(EROFS));
        assert_eq!(
            RootView::default().open(&[], "/etc/motd", 0).err(),
            Some(ENOENT)
        );
        let Ok(Open::Dir { entries, .. }) = view.open(&[], "/etc", 0) else {
            panic!("/etc is a directory");
        };
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, [".", "..", "motd"]);
        let (bytes, next) = dirents(&entries, 0, 4096).unwrap_or_default();
        assert_eq!(next, 3);
        assert_eq!(bytes.len(), 24 + 24 + 24);
        assert_eq!(dirents(&entries, 0, 10), Err(EINVAL));
        let _ = std::fs::remove_dir_all(root.parent().unwrap_or(&root));
    }

    #[test]
    fn descriptors_reuse_the_lowest_slot() {
        let mut t = FdTable::default();
        assert_eq!(t.insert(Open::Stdin, true), 3);
        assert_eq!(t.insert(Open::Stdin, false), 4);
        assert_eq!(t.close(3), 0);
        assert_eq!(t.close(3), EBADF);
        assert_eq!(t.insert(Open::Stdin, true), 3);
        t.close_on_exec();
        assert!(t.get(3).is_none());
        assert!(t.get(4).is_some());
        assert_eq!(
            Meta::console().stat_bytes()[16..20],
            (S_IFCHR | 0o620).to_le_bytes()
        );
    }
}

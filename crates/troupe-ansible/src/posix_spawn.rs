//! `posix_spawn` with the file actions troupe needs and neither std nor nix offers together:
//! descriptors put on fixed numbers in the child (std can only do stdin/stdout/stderr without
//! `pre_exec`, which makes it fork) and a working directory (nix has no
//! `posix_spawn_file_actions_addchdir_np`). The only unsafe code of the crate; every call is a
//! plain libc call on values owned here.
#![allow(unsafe_code)]

use nix::sys::signal::{SigSet, Signal};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;

/// What to start.
pub(crate) struct SpawnRequest<'a> {
    /// Absolute path of the program (no `PATH` search).
    pub program: &'a CStr,
    /// `argv`, `argv[0]` included.
    pub argv: &'a [CString],
    /// The whole environment, as `KEY=value`.
    pub envp: &'a [CString],
    /// The child's working directory.
    pub cwd: &'a CStr,
    /// `(source, target)`: `source` (troupe's, close-on-exec) becomes `target` in the child.
    /// Every source must be above every target, so that no `dup2` overwrites a later source.
    /// Whatever is not a target is closed at exec (troupe opens everything close-on-exec).
    pub fds: &'a [(RawFd, RawFd)],
}

/// Starts the program with stdin on `/dev/null`, the descriptors of `fds`, in a new process
/// group, with no signal blocked and SIGPIPE at its default; returns its pid once it is
/// running the new program (or the reason the exec failed).
pub(crate) fn spawn(req: &SpawnRequest<'_>) -> io::Result<libc::pid_t> {
    let mut actions = FileActions::new()?;
    actions.open_dev_null(0)?;
    for &(source, target) in req.fds {
        actions.dup2(source, target)?;
    }
    actions.chdir(req.cwd)?;
    let attr = Attr::new()?;
    let argv = pointers(req.argv);
    let envp = pointers(req.envp);
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the strings and arrays outlive it and the
    // arrays end with a null pointer; the actions and attributes were initialised.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            req.program.as_ptr(),
            actions.as_ptr(),
            attr.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    check(rc)?;
    Ok(pid)
}

/// A null-terminated array of pointers into `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// An initialised `posix_spawn_file_actions_t`, boxed so that it never moves.
struct FileActions(Box<libc::posix_spawn_file_actions_t>);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: a zeroed C struct is a valid argument for init, which sets it up.
        let mut raw: Box<libc::posix_spawn_file_actions_t> =
            Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `raw` points to writable memory of the right type.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut *raw) })?;
        Ok(FileActions(raw))
    }

    fn as_ptr(&self) -> *const libc::posix_spawn_file_actions_t {
        &*self.0
    }

    fn open_dev_null(&mut self, fd: RawFd) -> io::Result<()> {
        // SAFETY: initialised actions; the path is a static C string (glibc copies it).
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut *self.0,
                fd,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            )
        })
    }

    fn dup2(&mut self, source: RawFd, target: RawFd) -> io::Result<()> {
        // SAFETY: initialised actions; plain integers.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut *self.0, source, target) })
    }

    fn chdir(&mut self, dir: &CStr) -> io::Result<()> {
        // SAFETY: initialised actions; glibc copies the path.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut *self.0, dir.as_ptr()) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut *self.0);
        }
    }
}

/// An initialised `posix_spawnattr_t`: new process group, empty signal mask, SIGPIPE default.
struct Attr(Box<libc::posix_spawnattr_t>);

impl Attr {
    fn new() -> io::Result<Self> {
        // SAFETY: a zeroed C struct is a valid argument for init, which sets it up.
        let mut raw: Box<libc::posix_spawnattr_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `raw` points to writable memory of the right type.
        check(unsafe { libc::posix_spawnattr_init(&mut *raw) })?;
        let mut attr = Attr(raw);
        // Rust ignores SIGPIPE; an ignored signal stays ignored across exec (std resets it too).
        let mut default = SigSet::empty();
        default.add(Signal::SIGPIPE);
        let empty = SigSet::empty();
        let flags = libc::POSIX_SPAWN_SETPGROUP
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF;
        // SAFETY: initialised attributes; the sets are valid `sigset_t`s that glibc copies.
        unsafe {
            check(libc::posix_spawnattr_setpgroup(&mut *attr.0, 0))?;
            check(libc::posix_spawnattr_setsigmask(
                &mut *attr.0,
                empty.as_ref(),
            ))?;
            check(libc::posix_spawnattr_setsigdefault(
                &mut *attr.0,
                default.as_ref(),
            ))?;
            check(libc::posix_spawnattr_setflags(
                &mut *attr.0,
                flags as libc::c_short,
            ))?;
        }
        Ok(attr)
    }

    fn as_ptr(&self) -> *const libc::posix_spawnattr_t {
        &*self.0
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe {
            libc::posix_spawnattr_destroy(&mut *self.0);
        }
    }
}

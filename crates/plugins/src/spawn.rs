//! Starting a checked plugin with no more work than it needs: a vfork-style
//! `clone` (the child borrows the hook's memory until it executes, so
//! nothing is copied), which in the child only enters a process group of its
//! own, puts the pipes on fds 0 to 2, resets the few signals a kvmroll
//! process changes, and executes the plugin's open file.
//!
//! std's spawn (glibc's `posix_spawn`) did the same and more on every
//! plugin, on libvirtd's critical path: it rebuilt the environment, asked
//! the file limit six times, opened a pidfd after the fact, and its child
//! asked and reset every one of the 64 signals' handlers, some 130 system
//! calls before the exec (glibc's `__spawni_child`). Here the pidfd comes
//! with the clone (`CLONE_PIDFD`), and the child resets only the signals a
//! kvmroll process ignores or handles (SIGPIPE, which the hook ignores;
//! SIGSEGV and SIGBUS, std's stack-overflow handlers; SIGINT and SIGTERM,
//! which a service may catch): the exec resets every other handler itself,
//! and every signal stays blocked in the child until it has reset those, so
//! no handler of the parent's runs on the child's borrowed stack.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::libc;

/// The child's stack, borrowed from the hook's heap until the exec: the
/// child calls a handful of thin system call wrappers.
const CHILD_STACK: usize = 64 << 10;

/// Signals a kvmroll process may ignore or handle, reset in the child (see
/// the module notes).
const RESET: [libc::c_int; 5] = [
    libc::SIGPIPE,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGINT,
    libc::SIGTERM,
];

/// A started plugin: its pid, a pidfd that becomes readable at its exit
/// (`None` on a kernel without `CLONE_PIDFD`), and the hook's ends of its
/// pipes.
pub(crate) struct Started {
    pub(crate) pid: libc::pid_t,
    pub(crate) exited: Option<OwnedFd>,
    pub(crate) stdin: File,
    pub(crate) stdout: File,
    pub(crate) stderr: File,
}

/// What the child needs, all made before the clone: the child must not
/// allocate (the allocator's lock may be held by the borrowed memory's
/// owner) nor touch anything but this.
struct ChildArgs {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// The checked file, close-on-exec in the hook: the child clears that
    /// flag on its own copy, since a script's interpreter opens the path.
    file: libc::c_int,
    stdin: libc::c_int,
    stdout: libc::c_int,
    stderr: libc::c_int,
    /// The errno of the step that failed in the child; 0 when it executed.
    error: AtomicI32,
}

/// A pipe whose two ends are close-on-exec: (read end, write end).
fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and are owned here only.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// The child's side, on its borrowed stack, until the exec.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildArgs the parent keeps alive and untouched
    // while it is suspended in the clone (CLONE_VFORK).
    let a = unsafe { &*(arg as *const ChildArgs) };
    let fail = || -> libc::c_int {
        a.error.store(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
            Ordering::Relaxed,
        );
        // SAFETY: _exit ends the child without running anything of the
        // parent's (no atexit handlers, no flushing of shared buffers).
        unsafe { libc::_exit(127) }
    };
    // SAFETY: each call takes plain integers or pointers into ChildArgs,
    // which outlives the child's use of them; none allocates.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            return fail();
        }
        for (fd, to) in [(a.stdin, 0), (a.stdout, 1), (a.stderr, 2)] {
            if libc::dup2(fd, to) != to {
                return fail();
            }
        }
        if libc::fcntl(a.file, libc::F_SETFD, 0) != 0 {
            return fail();
        }
        for sig in RESET {
            if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                return fail();
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(a.path.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr());
    }
    fail()
}

/// A C string of `bytes`; one with a NUL inside is an invalid argument.
fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in an argument or the environment",
        )
    })
}

/// Starts the open, checked `file` as `/proc/self/fd/N` with `argv` (its
/// first is the program's name) and the hook's environment changed by
/// `env`, in a process group of its own, its stdio three new pipes.
pub(crate) fn spawn(file: &OwnedFd, argv: &[&[u8]], env: &[(&str, &[u8])]) -> io::Result<Started> {
    let path = c_string(format!("/proc/self/fd/{}", file.as_raw_fd()).as_bytes())?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| c_string(a))
        .collect::<io::Result<_>>()?;
    let mut vars: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        if !env.iter().any(|(name, _)| name.as_bytes() == k.as_bytes()) {
            vars.push(c_string(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
    }
    for (k, v) in env {
        vars.push(c_string(&[k.as_bytes(), b"=", v].concat())?);
    }
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let nul = std::ptr::null::<libc::c_char>();
    let args_p = args.iter().map(|c| c.as_ptr()).chain([nul]).collect();
    let vars_p = vars.iter().map(|c| c.as_ptr()).chain([nul]).collect();
    let child_args = ChildArgs {
        path,
        argv: args_p,
        envp: vars_p,
        file: file.as_raw_fd(),
        stdin: stdin_r.as_raw_fd(),
        stdout: stdout_w.as_raw_fd(),
        stderr: stderr_w.as_raw_fd(),
        error: AtomicI32::new(0),
    };
    let mut stack = vec![0u128; CHILD_STACK / 16];
    let (pid, pidfd) = clone_child(&child_args, &mut stack)?;
    // The child executed or exited: its ends of the pipes are its own.
    drop((stdin_r, stdout_w, stderr_w));
    let error = child_args.error.load(Ordering::Relaxed);
    if error != 0 {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(Started {
        pid,
        exited: pidfd,
        stdin: stdin_w,
        stdout: stdout_r,
        stderr: stderr_r,
    })
}

/// The clone itself, with every signal blocked around it (see the module
/// notes); returns once the child executed or exited. A kernel without
/// `CLONE_PIDFD` (before 5.2) is asked again without it.
fn clone_child(args: &ChildArgs, stack: &mut [u128]) -> io::Result<(libc::pid_t, Option<OwnedFd>)> {
    // Every signal, glibc's own two included (pthread_sigmask would leave
    // those out), so the raw system call sets the mask.
    let all: u64 = !0;
    let mut old: u64 = 0;
    let mask = |set: &u64, old: *mut u64| {
        // SAFETY: rt_sigprocmask reads one 8-byte kernel sigset and writes
        // another where asked; it changes only this thread's mask.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                set as *const u64,
                old,
                std::mem::size_of::<u64>(),
            )
        }
    };
    mask(&all, &mut old);
    // The stack grows down from its end, 16-byte aligned (u128 elements).
    let top = stack.as_mut_ptr_range().end as *mut libc::c_void;
    let arg = args as *const ChildArgs as *mut libc::c_void;
    let mut pidfd: libc::c_int = -1;
    let base = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: the child runs `child` on `stack`, which, like `args`, stays
    // alive and unused by this thread until clone returns (CLONE_VFORK
    // suspends it until the child executes or exits); with CLONE_PIDFD the
    // kernel writes the pidfd into `pidfd`.
    let mut pid = unsafe {
        libc::clone(
            child,
            top,
            base | libc::CLONE_PIDFD,
            arg,
            &mut pidfd as *mut libc::c_int,
        )
    };
    if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        pidfd = -1;
        // SAFETY: as above, without the pidfd.
        pid = unsafe { libc::clone(child, top, base, arg) };
    }
    let err = io::Error::last_os_error();
    mask(&old, std::ptr::null_mut());
    if pid < 0 {
        return Err(err);
    }
    // SAFETY: a pidfd the kernel made for us alone, when it made one.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Ok((pid, pidfd))
}

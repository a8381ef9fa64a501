//! Running: spawns a command (a checked plugin, or any program) in a
//! process group of its own, hands it its input, collects its output, and
//! sees it to its end, at its exit or at its time limit, with nothing it
//! started left running.

use crate::discover::Plugin;
use crate::result::RunResult;
use crate::spawn::Started;
use crate::walk::owned;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

impl Plugin {
    /// Runs the plugin as `run` runs a command, executing the file opened
    /// and checked at discovery, whatever its path names now.
    ///
    /// It is executed as `/proc/self/fd/N`, N being the checked descriptor:
    /// the kernel follows that magic link to the open file, not to a path.
    /// The child clears close-on-exec on its own copy of N (the hook's stays
    /// as it is) because a script's interpreter is handed `/proc/self/fd/N`
    /// to open; a binary just inherits one read-only descriptor of itself.
    /// The start is a vfork-style clone (`spawn`), which every plugin pays
    /// for on libvirtd's critical path. The plugin's path is its `argv[0]`
    /// and `KVMROLL_PLUGIN`, since a script's `$0` is the descriptor's name.
    pub fn run(
        &self,
        args: &[String],
        env: &[(String, String)],
        stdin: &[u8],
        timeout: Duration,
    ) -> std::io::Result<RunResult> {
        let start = Instant::now();
        let path = self.path.as_os_str().as_bytes();
        let argv: Vec<&[u8]> = std::iter::once(path)
            .chain(args.iter().map(|a| a.as_bytes()))
            .collect();
        let env: Vec<(&str, &[u8])> = env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .chain([("KVMROLL_PLUGIN", path)])
            .collect();
        let started = crate::spawn::spawn(&self.file, &argv, &env)?;
        supervise(started, stdin, timeout, start)
    }
}

/// One plugin run to make.
#[derive(Debug)]
pub struct RunSpec<'a> {
    pub path: &'a Path,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: &'a [u8],
    pub timeout: Duration,
}

/// How much of a plugin's output is kept: a domain XML is far below this.
const MAX_OUTPUT: usize = 16 << 20;

/// Input this small fits in a pipe's buffer, so it is written at once rather
/// than from a thread.
const INLINE_INPUT: usize = 32 << 10;

/// How long a plugin's pipes are still read after it exited and its group
/// was killed: only a process that left the group can hold them longer.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Kills a whole process group; a group that is already gone is fine.
fn kill_group(pgid: u32) {
    let pgid = nix::unistd::Pid::from_raw(pgid as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
}

/// Reads what is ready on a pipe; false at end of file.
fn drain(pipe: &mut impl Read, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 << 10];
    match pipe.read(&mut chunk) {
        Ok(0) => false,
        Ok(n) => {
            if buf.len() < MAX_OUTPUT {
                buf.extend_from_slice(&chunk[..n]);
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
        Err(_) => false,
    }
}

/// A descriptor that becomes readable when the process exits (Linux 5.3+),
/// so its exit wakes the same poll as its output. `None` where the kernel
/// has no pidfd_open; then the exit is looked for every few milliseconds.
fn exit_fd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it reads and writes no memory of ours. The pid is our unreaped
    // child, so it cannot name another process.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    Some(owned(fd))
}

/// Hands a command its input. Input that fits a pipe's buffer is written at
/// once; more is written from a thread, which is not waited for: a process
/// that left the group may hold the pipe unread, and the write would never
/// end. A command that does not read its input is not an error.
fn feed(mut pipe: File, input: &[u8]) -> Option<JoinHandle<()>> {
    if input.len() <= INLINE_INPUT {
        let _ = pipe.write_all(input);
        return None;
    }
    let input = input.to_vec();
    Some(std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    }))
}

/// A running command's output pipes, while they are open, and what they
/// said so far.
struct Output {
    out: Option<File>,
    err: Option<File>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Output {
    fn open(&self) -> bool {
        self.out.is_some() || self.err.is_some()
    }

    /// Waits up to `wait` for output or, when `exit` is given, for it to
    /// become readable (the command exited); reads what came. Says whether
    /// the exit may have come: always, when it is not watched.
    fn wait(&mut self, wait: Duration, exit: Option<&OwnedFd>) -> std::io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let (ready_out, ready_err, ready_exit) = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
            for fd in [
                self.out.as_ref().map(|o| o.as_fd()),
                self.err.as_ref().map(|e| e.as_fd()),
                exit.map(|f| f.as_fd()),
            ]
            .into_iter()
            .flatten()
            {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX).max(1);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            let mut it = fds.iter();
            let o = self.out.is_some() && it.next().is_some_and(ready);
            let e = self.err.is_some() && it.next().is_some_and(ready);
            let x = exit.is_none() || it.next().is_some_and(ready);
            (o, e, x)
        };
        if ready_out
            && !self
                .out
                .as_mut()
                .is_some_and(|p| drain(p, &mut self.stdout))
        {
            self.out = None;
        }
        if ready_err
            && !self
                .err
                .as_mut()
                .is_some_and(|p| drain(p, &mut self.stderr))
        {
            self.err = None;
        }
        Ok(ready_exit)
    }
}

/// Runs a command by its path (`Plugin::run` runs a checked plugin) in a
/// process group of its own. At the time limit the whole group is killed;
/// when the plugin exits, whatever it left running in its group is killed
/// too, so nothing outlives the hook.
///
/// One thread does it all: one poll waits on the two output pipes and on the
/// plugin's exit (a pidfd), because a hook pays for every thread it starts
/// and every sleep it takes on every event.
pub fn run(spec: &RunSpec<'_>) -> std::io::Result<RunResult> {
    let start = Instant::now();
    let child = Command::new(spec.path)
        .args(spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pid = child.id() as nix::libc::pid_t;
    let pipe = |p: Option<OwnedFd>| p.map(File::from).ok_or(std::io::ErrorKind::BrokenPipe);
    // std's Child is dropped without a wait: the loop below reaps it.
    let started = Started {
        pid,
        exited: exit_fd(pid as u32),
        stdin: pipe(child.stdin.map(OwnedFd::from))?,
        stdout: pipe(child.stdout.map(OwnedFd::from))?,
        stderr: pipe(child.stderr.map(OwnedFd::from))?,
    };
    supervise(started, spec.stdin, spec.timeout, start)
}

/// Whether `pid` exited, leaving it unreaped (a zombie keeps its pid, and
/// its group's number, from being reused).
fn has_exited(pid: nix::libc::pid_t) -> std::io::Result<bool> {
    use nix::libc;
    loop {
        // SAFETY: a zeroed siginfo_t is valid; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `info`; WNOWAIT leaves the child
        // as it is.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: si_pid is set by waitid (0 when no child changed state).
        return Ok(unsafe { info.si_pid() } != 0);
    }
}

/// How a command ended: its exit code, or the signal that ended it.
type Ended = (Option<i32>, Option<i32>);

/// How `pid` ended, if it did (`block`: waiting for it). The raw status is
/// read here, so that any signal, a real-time one too, is reported.
fn reap(pid: nix::libc::pid_t, block: bool) -> std::io::Result<Option<Ended>> {
    use nix::libc;
    let flags = if block { 0 } else { libc::WNOHANG };
    let mut st = 0;
    loop {
        // SAFETY: waitpid writes the status into the one int given.
        let r = unsafe { libc::waitpid(pid, &mut st, flags) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        if libc::WIFEXITED(st) {
            return Ok(Some((Some(libc::WEXITSTATUS(st)), None)));
        }
        if libc::WIFSIGNALED(st) {
            return Ok(Some((None, Some(libc::WTERMSIG(st)))));
        }
    }
}

/// Sees a started command to its end, as `run` says.
fn supervise(
    started: Started,
    stdin: &[u8],
    timeout: Duration,
    start: Instant,
) -> std::io::Result<RunResult> {
    // A limit too large to add is no limit (a century, in practice).
    let deadline = start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400));
    let Started {
        pid,
        exited,
        stdin: input,
        stdout,
        stderr,
    } = started;
    let pgid = pid as u32;
    // Not joined: it is done or stuck, and goes with the hook.
    let _writer = feed(input, stdin);
    let mut output = Output {
        out: Some(stdout),
        err: Some(stderr),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let mut timed_out = false;
    let mut status = None;
    // Until the plugin exits, its time limit; then a short drain.
    let mut until = deadline;
    while status.is_none() || output.open() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = status.is_none();
            break;
        }
        // Without a pidfd the exit is looked for between short waits.
        let wait = match (&exited, status) {
            (None, None) => left.min(Duration::from_millis(2)),
            _ => left,
        };
        let watch = exited.as_ref().filter(|_| status.is_none());
        if output.wait(wait, watch)? && status.is_none() && has_exited(pid)? {
            // What it left running in its group goes (the pipes it held
            // then close), while the unreaped plugin still holds the
            // group's number: once it is reaped, the number may be a new
            // process's.
            kill_group(pgid);
            status = reap(pid, true)?;
            until = deadline.min(Instant::now() + DRAIN_AFTER_EXIT);
        }
    }
    let status = match status {
        Some(s) => s,
        None => {
            kill_group(pgid);
            reap(pid, true)?.unwrap_or((None, None))
        }
    };
    // Pipes still open here belong to a plugin killed at its limit (or to a
    // process that escaped its group): what they held was read already.
    let Output { stdout, stderr, .. } = output;
    let (code, signal) = status;
    Ok(RunResult {
        code,
        signal,
        timed_out,
        stdout,
        stderr,
        duration: start.elapsed(),
    })
}

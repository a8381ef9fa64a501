//! Running: spawns a command (a checked plugin, or any program) in a
//! process group of its own, hands it its input, collects its output, and
//! sees it to its end, at its exit or at its time limit, with nothing it
//! started left running.

use crate::discover::Plugin;
use crate::result::RunResult;
use crate::walk::owned;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

impl Plugin {
    /// Runs the plugin as `run` runs a command, executing the file opened
    /// and checked at discovery, whatever its path names now.
    ///
    /// It is executed as `/proc/self/fd/N`, N being a duplicate of the
    /// checked descriptor made inheritable just for the spawn: the kernel
    /// follows that magic link to the open file, not to a path. The
    /// duplicate must stay open across exec (not close-on-exec) because a
    /// script's interpreter is handed `/proc/self/fd/N` to open; a binary
    /// just inherits one read-only descriptor of itself. This keeps std's
    /// posix_spawn (a `pre_exec` calling `fexecve` would force a fork, which
    /// every plugin would pay for), and the hook spawns from one thread only,
    /// so no other child can inherit the duplicate meanwhile. The plugin's
    /// path is its `argv[0]` and `KVMROLL_PLUGIN`, since a script's `$0` is
    /// the descriptor's name.
    pub fn run(
        &self,
        args: &[String],
        env: &[(String, String)],
        stdin: &[u8],
        timeout: Duration,
    ) -> std::io::Result<RunResult> {
        let inherited = nix::fcntl::fcntl(self.file.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD(3))
            .map(owned)?;
        let mut cmd = Command::new(format!("/proc/self/fd/{}", inherited.as_raw_fd()));
        cmd.arg0(&self.path)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("KVMROLL_PLUGIN", &self.path);
        supervise(cmd, stdin, timeout, Some(inherited))
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
fn feed(pipe: Option<ChildStdin>, input: &[u8]) -> Option<JoinHandle<()>> {
    match pipe {
        Some(mut s) if input.len() <= INLINE_INPUT => {
            let _ = s.write_all(input);
            None
        }
        Some(mut s) => {
            let input = input.to_vec();
            Some(std::thread::spawn(move || {
                let _ = s.write_all(&input);
            }))
        }
        None => None,
    }
}

/// A running command's output pipes, while they are open, and what they
/// said so far.
struct Output {
    out: Option<ChildStdout>,
    err: Option<ChildStderr>,
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
    let mut cmd = Command::new(spec.path);
    cmd.args(spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    supervise(cmd, spec.stdin, spec.timeout, None)
}

/// Spawns `cmd` in a process group of its own and sees it to its end, as
/// `run` says. `held` is closed as soon as the child exists.
fn supervise(
    mut cmd: Command,
    stdin: &[u8],
    timeout: Duration,
    held: Option<OwnedFd>,
) -> std::io::Result<RunResult> {
    let start = Instant::now();
    // A limit too large to add is no limit (a century, in practice).
    let deadline = start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400));
    let spawned = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    drop(held);
    let mut child = spawned?;
    let pgid = child.id();
    let exited = exit_fd(pgid);
    // Not joined: it is done or stuck, and goes with the hook.
    let _writer = feed(child.stdin.take(), stdin);
    let mut output = Output {
        out: child.stdout.take(),
        err: child.stderr.take(),
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
        if output.wait(wait, watch)? && status.is_none() {
            if let Some(s) = child.try_wait()? {
                status = Some(s);
                // What it left running in its group goes; the pipes it
                // held then close.
                kill_group(pgid);
                until = deadline.min(Instant::now() + DRAIN_AFTER_EXIT);
            }
        }
    }
    let status = match status {
        Some(s) => s,
        None => {
            kill_group(pgid);
            child.wait()?
        }
    };
    kill_group(pgid);
    // Pipes still open here belong to a plugin killed at its limit (or to a
    // process that escaped its group): what they held was read already.
    let Output { stdout, stderr, .. } = output;
    Ok(RunResult {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout,
        stderr,
        duration: start.elapsed(),
    })
}

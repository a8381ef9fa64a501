//! Plugins: finding them, refusing the unsafe ones, and running each with its
//! input, a time limit and no process left behind.
//!
//! The hook runs as root, so a plugin that anyone but root could have written
//! is never run: the file and every folder from the plugin root down to it
//! must be owned by root and not writable by group or others. Plugins run in
//! byte order of their names, global ones first, as `run-parts` orders them;
//! names that are hidden or look like package-manager or editor leftovers are
//! skipped, as `run-parts` skips them.
//!
//! The shell dispatchers people wrote for libvirt hooks (e.g. the VFIO-Tools
//! `qemu` script) fed stdin to the first script only, ran scripts in `find`'s
//! unspecified order, `eval`ed file names and had no time limit: each of
//! those is a fault this module is written not to have.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What was found in a stage folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A plugin to run.
    Run(PathBuf),
    /// Not run, for a reason that must be reported (unsafe ownership or mode).
    Refused { path: PathBuf, why: String },
}

/// Names `run-parts` would not run either.
fn skipped_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [
            ".dpkg-",
            ".rpmsave",
            ".rpmnew",
            ".rpmorig",
            ".swp",
            ".disabled",
            ".bak",
        ]
        .iter()
        .any(|s| name.contains(s))
}

/// Why a file or folder is unsafe for root to run from, if it is.
fn unsafe_because(path: &Path, owner: u32) -> Option<String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot inspect {}: {e}", path.display())),
    };
    if meta.uid() != owner {
        return Some(format!(
            "{} is owned by uid {}, not {owner}",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Some(format!(
            "{} is writable by group or others (mode {:o})",
            path.display(),
            mode & 0o7777
        ));
    }
    None
}

/// The plugins of one folder, in byte order of their names. `chain` lists the
/// folders above it that must be safe too.
fn scan(dir: &Path, chain: &[PathBuf], owner: u32, out: &mut Vec<Found>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<(Vec<u8>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| !skipped_name(&e.file_name().to_string_lossy()))
        .map(|e| {
            use std::os::unix::ffi::OsStrExt;
            (e.file_name().as_bytes().to_vec(), e.path())
        })
        .collect();
    names.sort();
    let folder_fault = chain
        .iter()
        .chain(std::iter::once(&dir.to_path_buf()))
        .find_map(|d| unsafe_because(d, owner));
    for (_, path) in names {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            log::debug!("{}: not an executable file, skipped", path.display());
            continue;
        }
        let fault = folder_fault
            .clone()
            .or_else(|| unsafe_because(&path, owner));
        out.push(match fault {
            Some(why) => Found::Refused { path, why },
            None => Found::Run(path),
        });
    }
}

/// The plugins of a stage: `ROOT/plugins/STAGE.d/*` then
/// `ROOT/vms/VM/STAGE.d/*`. `owner` is the uid that must own them (root).
pub fn discover(root: &Path, stage: &str, vm: &str, owner: u32) -> Vec<Found> {
    let mut out = Vec::new();
    let folder = format!("{stage}.d");
    let plugins = root.join("plugins");
    scan(
        &plugins.join(&folder),
        &[root.to_path_buf(), plugins.clone()],
        owner,
        &mut out,
    );
    let vms = root.join("vms");
    let own = vms.join(vm);
    scan(
        &own.join(&folder),
        &[root.to_path_buf(), vms.clone(), own.clone()],
        owner,
        &mut out,
    );
    out
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

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
}

impl RunResult {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
}

/// How much of a plugin's output is kept: a domain XML is far below this.
const MAX_OUTPUT: usize = 16 << 20;

/// Input this small fits in a pipe's buffer, so it is written at once rather
/// than from a thread.
const INLINE_INPUT: usize = 32 << 10;

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
fn exit_fd(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it reads and writes no memory of ours. The pid is our unreaped
    // child, so it cannot name another process.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the descriptor was just returned to us and is owned by nothing else.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// How long a plugin's pipes are still read after it exited and its group
/// was killed: only a process that left the group can hold them longer.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Runs one plugin in a process group of its own. At the time limit the whole
/// group is killed; when the plugin exits, whatever it left running in its
/// group is killed too, so nothing outlives the hook.
///
/// One thread does it all: one poll waits on the two output pipes and on the
/// plugin's exit (a pidfd), because a hook pays for every thread it starts
/// and every sleep it takes on every event.
pub fn run(spec: &RunSpec<'_>) -> std::io::Result<RunResult> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;

    let start = Instant::now();
    // A limit too large to add is no limit (a century, in practice).
    let deadline = start
        .checked_add(spec.timeout)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400));
    let mut child = Command::new(spec.path)
        .args(spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pgid = child.id();
    let exited = exit_fd(pgid);
    let writer = match child.stdin.take() {
        // A plugin that does not read its input is not an error.
        Some(mut s) if spec.stdin.len() <= INLINE_INPUT => {
            let _ = s.write_all(spec.stdin);
            None
        }
        Some(mut s) => {
            let input = spec.stdin.to_vec();
            Some(std::thread::spawn(move || {
                let _ = s.write_all(&input);
            }))
        }
        None => None,
    };
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut timed_out = false;
    let mut status = None;
    // Until the plugin exits, its time limit; then a short drain.
    let mut until = deadline;
    while status.is_none() || out.is_some() || err.is_some() {
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
        let (ready_out, ready_err, ready_exit) = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
            let watch_exit = status.is_none() && exited.is_some();
            for fd in [
                out.as_ref().map(|o| o.as_fd()),
                err.as_ref().map(|e| e.as_fd()),
            ]
            .into_iter()
            .flatten()
            .chain(exited.as_ref().filter(|_| watch_exit).map(|f| f.as_fd()))
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
            let o = out.is_some() && it.next().is_some_and(ready);
            let e = err.is_some() && it.next().is_some_and(ready);
            let x = !watch_exit || it.next().is_some_and(ready);
            (o, e, x)
        };
        if ready_out && !out.as_mut().is_some_and(|p| drain(p, &mut stdout)) {
            out = None;
        }
        if ready_err && !err.as_mut().is_some_and(|p| drain(p, &mut stderr)) {
            err = None;
        }
        if status.is_none() && ready_exit {
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
    // A large input's writer is not waited for: a process that left the
    // group may hold the pipe unread, and the write would never end. It is
    // done or stuck, and goes with the hook.
    drop(writer);
    // Pipes still open here belong to a plugin killed at its limit (or to a
    // process that escaped its group): what they held was read already.
    drop((out, err));
    Ok(RunResult {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout,
        stderr,
        duration: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        t
    }

    #[test]
    fn global_first_then_the_vms_own_in_byte_order() {
        let t = tree();
        let g = t.path().join("plugins/preboot.d");
        let v = t.path().join("vms/vm1/preboot.d");
        script(&g, "20-b", "", 0o755);
        script(&g, "10-a", "", 0o755);
        script(&g, "B", "", 0o755);
        script(&g, "README", "", 0o644);
        script(&g, ".hidden", "", 0o755);
        script(&g, "x.dpkg-old", "", 0o755);
        script(&v, "00-own", "", 0o755);
        let found = discover(t.path(), "preboot", "vm1", me());
        let names: Vec<String> = found
            .iter()
            .map(|f| match f {
                Found::Run(p) => p.file_name().unwrap().to_string_lossy().into_owned(),
                Found::Refused { path, .. } => format!("refused {}", path.display()),
            })
            .collect();
        assert_eq!(names, ["10-a", "20-b", "B", "00-own"]);
        assert!(discover(t.path(), "allocate", "vm1", me()).is_empty());
    }

    #[test]
    fn writable_plugins_and_folders_are_refused() {
        let t = tree();
        let g = t.path().join("plugins/shutdown.d");
        script(&g, "ok", "", 0o755);
        let p = script(&g, "world", "", 0o757);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        let found = discover(t.path(), "shutdown", "vm", me());
        assert_eq!(found[0], Found::Run(g.join("ok")));
        assert!(matches!(&found[1], Found::Refused { why, .. } if why.contains("writable")));

        let v = t.path().join("vms/vm/shutdown.d");
        script(&v, "mine", "", 0o755);
        std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o777)).unwrap();
        let found = discover(t.path(), "shutdown", "vm", me());
        assert!(matches!(&found[2], Found::Refused { why, .. } if why.contains("shutdown.d")));
        // Another owner is refused too.
        let found = discover(t.path(), "shutdown", "vm", me() + 1);
        assert!(found.iter().all(|f| matches!(f, Found::Refused { .. })));
    }

    fn spec<'a>(path: &'a Path, stdin: &'a [u8], timeout: Duration) -> RunSpec<'a> {
        RunSpec {
            path,
            args: &[],
            env: &[],
            stdin,
            timeout,
        }
    }

    #[test]
    fn runs_with_stdin_and_captures_output() {
        let t = tree();
        let p = script(t.path(), "p", "cat; echo err >&2; exit 3", 0o755);
        let r = run(&spec(&p, b"<domain/>", Duration::from_secs(10))).unwrap();
        assert_eq!(r.code, Some(3));
        assert_eq!(r.stdout, b"<domain/>");
        assert_eq!(r.stderr, b"err\n");
        assert!(!r.success());
    }

    #[test]
    fn a_hung_plugin_and_its_children_are_killed_at_the_limit() {
        let t = tree();
        let marker = t.path().join("child.pid");
        let p = script(
            t.path(),
            "hang",
            &format!("sleep 300 & echo $! > {}; sleep 300", marker.display()),
            0o755,
        );
        // A limit long enough for the shell to record its child even on a
        // loaded machine.
        let r = run(&spec(&p, b"", Duration::from_millis(1500))).unwrap();
        assert!(r.timed_out);
        assert_eq!(r.signal, Some(9));
        assert!(r.duration < Duration::from_secs(5));
        let child: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background child got SIGKILL too. The kernel may still be
        // tearing it down when `run` returns (CI once saw it in state R,
        // already reparented), so allow it a moment to die; a process that
        // was never signalled would still be asleep after it.
        let gone = |state: &str| state.is_empty() || state.contains(") Z");
        let read = || std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let until = Instant::now() + Duration::from_secs(5);
        let mut state = read();
        while !gone(&state) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            state = read();
        }
        assert!(gone(&state), "{state}");
    }

    #[test]
    fn a_process_that_left_the_group_holding_the_pipes_does_not_hold_the_hook() {
        let t = tree();
        let marker = t.path().join("escaped.pid");
        // setsid puts the sleeper in a session (and group) of its own, out
        // of reach of the group kill, still holding stdout and stderr.
        let p = script(
            t.path(),
            "escape",
            &format!(
                "setsid sh -c 'echo $$ > {}; exec sleep 30' & sleep 0.2; echo done; exit 0",
                marker.display()
            ),
            0o755,
        );
        let r = run(&spec(&p, b"", Duration::from_secs(20))).unwrap();
        if let Ok(pid) = std::fs::read_to_string(&marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.trim().parse().unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(r.success(), "{r:?}");
        assert_eq!(r.stdout, b"done\n");
        assert!(r.duration < Duration::from_secs(5), "{:?}", r.duration);
    }

    #[test]
    fn a_limit_too_large_to_add_is_no_limit() {
        let t = tree();
        let p = script(t.path(), "p", "exit 0", 0o755);
        let r = run(&spec(&p, b"", Duration::MAX)).unwrap();
        assert!(r.success(), "{r:?}");
    }

    #[test]
    fn a_plugin_that_ignores_a_large_stdin_is_fine() {
        let t = tree();
        let p = script(t.path(), "p", "exit 0", 0o755);
        let big = vec![b'x'; 1 << 20];
        let r = run(&spec(&p, &big, Duration::from_secs(10))).unwrap();
        assert!(r.success());
    }
}

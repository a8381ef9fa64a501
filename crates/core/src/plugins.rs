//! Plugins: finding them, refusing the unsafe ones, and running each with its
//! input, a time limit and no process left behind.
//!
//! The hook runs as root, so a plugin that anyone but root could have written
//! or swapped is never run. Every folder on the real path to the file that
//! runs, from `/` down, symbolic links' targets and their folders included,
//! must be owned by root and not writable by group or others, and so must the
//! file. The path is resolved here one component at a time with `openat`
//! (`O_NOFOLLOW`), checking each open folder with `fstat`, so what is checked
//! is what was opened; a link is read with `readlinkat` from a folder that
//! was checked already (nobody else can change it there) and its target
//! resolved the same way. The file is opened once, at discovery, checked
//! through that descriptor, and executed through it (`Plugin::run`): a file
//! renamed over the plugin afterwards is not what runs.
//!
//! One exception, for fixtures and sites under `/tmp`: a folder that others
//! may write but that has the sticky bit and is root's may be passed through
//! (not listed) when the entry taken from it is root's too, since the sticky
//! bit lets nobody else rename or remove that entry. A stage folder, whose
//! listing decides what runs, is never writable by anyone but root.
//!
//! Plugins run in byte order of their names, global ones first, as
//! `run-parts` orders them; names that are hidden or look like
//! package-manager or editor leftovers are skipped, as `run-parts` skips them.
//!
//! The shell dispatchers people wrote for libvirt hooks (e.g. the VFIO-Tools
//! `qemu` script) fed stdin to the first script only, ran scripts in `find`'s
//! unspecified order, `eval`ed file names and had no time limit: each of
//! those is a fault this module is written not to have.

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A plugin that passed its checks, held open: what runs is this file.
#[derive(Debug)]
pub struct Plugin {
    /// Where it was found (in its stage folder, before any link).
    path: PathBuf,
    /// The file itself, opened read-only and checked through this descriptor.
    file: OwnedFd,
}

/// What was found in a stage folder.
#[derive(Debug)]
pub enum Found {
    /// A plugin to run.
    Run(Plugin),
    /// Not run, for a reason that must be reported (unsafe ownership or
    /// mode on its way, a name that is not a name).
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

/// How many symbolic links one resolution may follow: Linux's own bound
/// (MAXSYMLINKS), so a loop ends as it would for the kernel.
const MAX_LINKS: u32 = 40;

/// Why a file or folder is unsafe for root to run from, if it is. A sticky
/// folder that others may write is let through here; the walk decides
/// whether that is enough.
fn unsafe_because(st: &FileStat, path: &Path, owner: u32, sticky_ok: bool) -> Option<String> {
    if st.st_uid != owner {
        return Some(format!(
            "{} is owned by uid {}, not {owner}",
            path.display(),
            st.st_uid
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 && !(sticky_ok && mode & 0o1000 != 0) {
        return Some(format!(
            "{} is writable by group or others (mode {mode:o})",
            path.display()
        ));
    }
    None
}

/// A folder reached on the real path, held open.
#[derive(Debug)]
struct Folder {
    fd: OwnedFd,
    /// Its real path, for messages.
    path: PathBuf,
    /// Others may write it (it is sticky and root's, or it is refused).
    open: bool,
}

/// Where a resolution stopped short.
#[derive(Debug)]
enum Stop {
    /// Nothing there (or not a folder where one is needed): nothing to run.
    Absent,
    /// Something there that cannot be resolved safely; the reason.
    Broken(String),
}

/// A file reached by a walk, open.
#[derive(Debug)]
struct Opened {
    fd: OwnedFd,
    st: FileStat,
    path: PathBuf,
}

/// A walk down real paths: the open folders from `/` to where it stands (so
/// `..` returns to a folder already checked, never asks the file system),
/// the first reason it is unsafe, and the links it has followed.
#[derive(Debug, Clone)]
struct Walk {
    stack: Vec<Rc<Folder>>,
    fault: Option<String>,
    links: u32,
    owner: u32,
}

/// Takes ownership of a descriptor nix returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and is owned by
    // nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);
/// A plugin is opened without following a link, without blocking on a FIFO
/// and without becoming anyone's terminal; the flags stay on this descriptor,
/// the executed program opens its own.
const FILE_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

impl Walk {
    /// A walk standing at `/`.
    fn at_root(owner: u32) -> Result<Walk, Stop> {
        let fd = nix::fcntl::open("/", DIR_FLAGS, Mode::empty())
            .map_err(|e| Stop::Broken(format!("cannot open /: {e}")))?;
        let mut walk = Walk {
            stack: Vec::new(),
            fault: None,
            links: 0,
            owner,
        };
        walk.enter(owned(fd), PathBuf::from("/"))?;
        Ok(walk)
    }

    /// The folder the walk stands in.
    fn here(&self) -> Rc<Folder> {
        // The stack always holds `/` at least.
        Rc::clone(&self.stack[self.stack.len() - 1])
    }

    /// Checks an open folder and stands in it.
    fn enter(&mut self, fd: OwnedFd, path: PathBuf) -> Result<(), Stop> {
        let st = fstat(fd.as_raw_fd())
            .map_err(|e| Stop::Broken(format!("cannot inspect {}: {e}", path.display())))?;
        if let Some(why) = unsafe_because(&st, &path, self.owner, true) {
            self.fault.get_or_insert(why);
        }
        self.stack.push(Rc::new(Folder {
            fd,
            path,
            open: st.st_mode & 0o022 != 0,
        }));
        Ok(())
    }

    /// Follows `path` from where the walk stands (from `/` when absolute),
    /// one component at a time. Folders on the way are entered and checked;
    /// the last component is entered too, or, with `file`, opened as a file
    /// and returned.
    fn follow(&mut self, path: &Path, file: bool) -> Result<Option<Opened>, Stop> {
        let mut todo: VecDeque<OsString> = VecDeque::new();
        self.queue(path, &mut todo);
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                if self.stack.len() > 1 {
                    self.stack.pop();
                }
                continue;
            }
            let last = todo.is_empty();
            let dir = self.here();
            let shown = dir.path.join(&name);
            let flags = if last && file { FILE_FLAGS } else { DIR_FLAGS };
            match openat(
                Some(dir.fd.as_raw_fd()),
                name.as_os_str(),
                flags,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    let fd = owned(fd);
                    if last && file {
                        let st = fstat(fd.as_raw_fd()).map_err(|e| {
                            Stop::Broken(format!("cannot inspect {}: {e}", shown.display()))
                        })?;
                        return Ok(Some(Opened {
                            fd,
                            st,
                            path: shown,
                        }));
                    }
                    self.enter(fd, shown)?;
                }
                // O_NOFOLLOW met a link (ELOOP), or O_DIRECTORY a
                // non-folder (ENOTDIR): a link is read and followed.
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let target = match readlinkat(Some(dir.fd.as_raw_fd()), name.as_os_str()) {
                        Ok(t) => t,
                        Err(Errno::EINVAL) => return Err(Stop::Absent),
                        Err(e) => {
                            return Err(Stop::Broken(format!(
                                "cannot read the link {}: {e}",
                                shown.display()
                            )))
                        }
                    };
                    self.links += 1;
                    if self.links > MAX_LINKS {
                        return Err(Stop::Broken(format!(
                            "{}: more than {MAX_LINKS} symbolic links on the way",
                            shown.display()
                        )));
                    }
                    if target.is_empty() {
                        return Err(Stop::Absent);
                    }
                    // In a folder others may write (sticky), only a link of
                    // root's own cannot be replaced.
                    if dir.open {
                        self.check_entry(&dir, &name, &shown);
                    }
                    let mut rest = VecDeque::new();
                    self.queue(Path::new(&target), &mut rest);
                    rest.append(&mut todo);
                    todo = rest;
                }
                Err(Errno::ENOENT) => return Err(Stop::Absent),
                Err(e) => {
                    return Err(Stop::Broken(format!(
                        "cannot open {}: {e}",
                        shown.display()
                    )))
                }
            }
        }
        // The path ended on a folder (`.`, `..`, a link to a folder).
        if file {
            Err(Stop::Absent)
        } else {
            Ok(None)
        }
    }

    /// The components of `path` to resolve; an absolute path starts again
    /// from `/`.
    fn queue(&mut self, path: &Path, todo: &mut VecDeque<OsString>) {
        for c in path.components() {
            match c {
                Component::RootDir => self.stack.truncate(1),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => todo.push_back("..".into()),
                Component::Normal(n) => todo.push_back(n.to_os_string()),
            }
        }
    }

    /// Records a fault when an entry of a folder others may write is not
    /// root's (the sticky bit protects only root's own entries).
    fn check_entry(&mut self, dir: &Folder, name: &OsString, shown: &Path) {
        let lst = fstatat(
            Some(dir.fd.as_raw_fd()),
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        match lst {
            Ok(st) if st.st_uid == self.owner => {}
            Ok(st) => {
                self.fault.get_or_insert(format!(
                    "{} is owned by uid {}, not {}, in {}, which others may write",
                    shown.display(),
                    st.st_uid,
                    self.owner,
                    dir.path.display()
                ));
            }
            Err(e) => {
                self.fault
                    .get_or_insert(format!("cannot inspect {}: {e}", shown.display()));
            }
        }
    }
}

/// The plugins of one stage folder, `rel` below the walk's place, in byte
/// order of their names. `shown` is the folder's path for messages.
fn scan(base: &Walk, rel: &Path, shown: &Path, out: &mut Vec<Found>) {
    let mut walk = base.clone();
    match walk.follow(rel, false) {
        Ok(_) => {}
        Err(Stop::Absent) => return,
        Err(Stop::Broken(why)) => {
            out.push(Found::Refused {
                path: shown.to_path_buf(),
                why,
            });
            return;
        }
    }
    let dir = walk.here();
    // Its listing decides what runs: no sticky exception here.
    if dir.open {
        walk.fault.get_or_insert(format!(
            "{} is writable by group or others",
            dir.path.display()
        ));
    }
    if let Some(why) = walk.fault.take() {
        // A whole folder is refused when anyone else could add to it, or
        // swap it, even if it holds nothing to run yet.
        out.push(Found::Refused {
            path: shown.to_path_buf(),
            why,
        });
        return;
    }
    let listing = nix::dir::Dir::openat(
        Some(dir.fd.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    let mut listing = match listing {
        Ok(l) => l,
        Err(e) => {
            out.push(Found::Refused {
                path: shown.to_path_buf(),
                why: format!("cannot list {}: {e}", dir.path.display()),
            });
            return;
        }
    };
    use nix::dir::Type;
    let mut names: Vec<OsString> = listing
        .iter()
        .filter_map(Result::ok)
        // What cannot be a plugin is not even opened.
        .filter(|e| matches!(e.file_type(), None | Some(Type::File) | Some(Type::Symlink)))
        .map(|e| std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| !skipped_name(&n.to_string_lossy()))
        .collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let path = shown.join(&name);
        let mut entry = walk.clone();
        let opened = match entry.follow(Path::new(&name), true) {
            Ok(Some(o)) => o,
            Ok(None) | Err(Stop::Absent) => {
                log::debug!("{}: nothing to run there, skipped", path.display());
                continue;
            }
            Err(Stop::Broken(why)) => {
                out.push(Found::Refused { path, why });
                continue;
            }
        };
        let st = &opened.st;
        if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG || st.st_mode & 0o111 == 0 {
            log::debug!("{}: not an executable file, skipped", path.display());
            continue;
        }
        let fault = entry
            .fault
            .take()
            .or_else(|| unsafe_because(st, &opened.path, base.owner, false));
        out.push(match fault {
            Some(why) => Found::Refused { path, why },
            None => Found::Run(Plugin {
                path,
                file: opened.fd,
            }),
        });
    }
}

/// The plugins of a stage: `ROOT/plugins/STAGE.d/*` then
/// `ROOT/vms/VM/STAGE.d/*`, each opened and checked. `owner` is the uid
/// that must own them and every folder on their way (root).
///
/// No path is made of a VM name that is not a valid kvmroll name (one with
/// `/` or `..` would reach folders outside ROOT): the VM's own folder is
/// then not looked at, and a refusal comes first in the list, before any
/// global plugin, so that a stage that aborts on a refusal runs nothing.
pub fn discover(root: &Path, stage: &str, vm: &str, owner: u32) -> Vec<Found> {
    let mut out = Vec::new();
    let folder = format!("{stage}.d");
    let vm_ok = match crate::model::check_name("VM", vm) {
        Ok(()) => true,
        Err(e) => {
            out.push(Found::Refused {
                path: root.join("vms"),
                why: format!("{e}: the VM's own plugins are not looked for"),
            });
            false
        }
    };
    if stage.contains('/') {
        out.push(Found::Refused {
            path: root.to_path_buf(),
            why: format!("{stage:?} is not a stage name"),
        });
        return out;
    }
    // Folders above a relative root count too.
    let root = match std::env::current_dir() {
        Ok(cwd) if root.is_relative() => cwd.join(root),
        _ => root.to_path_buf(),
    };
    let mut base = match Walk::at_root(owner) {
        Ok(w) => w,
        Err(Stop::Absent) => return out,
        Err(Stop::Broken(why)) => {
            out.push(Found::Refused { path: root, why });
            return out;
        }
    };
    // The root is resolved once; both stage folders go on from there.
    match base.follow(&root, false) {
        Ok(_) => {}
        Err(Stop::Absent) => return out,
        Err(Stop::Broken(why)) => {
            out.push(Found::Refused { path: root, why });
            return out;
        }
    }
    let global = Path::new("plugins").join(&folder);
    scan(&base, &global, &root.join(&global), &mut out);
    if vm_ok {
        let own = Path::new("vms").join(vm).join(&folder);
        scan(&base, &own, &root.join(&own), &mut out);
    }
    out
}

impl Plugin {
    /// Where the plugin was found (its name in its stage folder).
    pub fn path(&self) -> &Path {
        &self.path
    }

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
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;

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
    let writer = match child.stdin.take() {
        // A plugin that does not read its input is not an error.
        Some(mut s) if stdin.len() <= INLINE_INPUT => {
            let _ = s.write_all(stdin);
            None
        }
        Some(mut s) => {
            let input = stdin.to_vec();
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

    /// What `discover` found, as names: `run NAME` or `refused PATH: WHY`.
    fn names(found: &[Found]) -> Vec<String> {
        found
            .iter()
            .map(|f| match f {
                Found::Run(p) => p.path().file_name().unwrap().to_string_lossy().into_owned(),
                Found::Refused { path, why } => format!("refused {}: {why}", path.display()),
            })
            .collect()
    }

    fn mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn output(found: &Found) -> String {
        let Found::Run(p) = found else {
            panic!("not run: {found:?}")
        };
        let r = p
            .run(&["a1".into()], &[], b"", Duration::from_secs(10))
            .unwrap();
        assert!(r.success(), "{r:?}");
        String::from_utf8(r.stdout).unwrap()
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
        std::fs::create_dir(g.join("a-folder")).unwrap();
        script(&v, "00-own", "", 0o755);
        let found = discover(t.path(), "preboot", "vm1", me());
        assert_eq!(names(&found), ["10-a", "20-b", "B", "00-own"]);
        assert!(discover(t.path(), "allocate", "vm1", me()).is_empty());
    }

    #[test]
    fn writable_plugins_and_folders_are_refused() {
        let t = tree();
        let g = t.path().join("plugins/shutdown.d");
        script(&g, "ok", "", 0o755);
        let p = script(&g, "world", "", 0o757);
        mode(&p, 0o777);
        let found = discover(t.path(), "shutdown", "vm", me());
        assert_eq!(names(&found)[0], "ok");
        assert!(matches!(&found[1], Found::Refused { why, .. } if why.contains("writable")));

        let v = t.path().join("vms/vm/shutdown.d");
        script(&v, "mine", "", 0o755);
        mode(&v, 0o777);
        let found = discover(t.path(), "shutdown", "vm", me());
        assert!(matches!(&found[2], Found::Refused { why, .. } if why.contains("shutdown.d")));
        // Another owner is refused too.
        let found = discover(t.path(), "shutdown", "vm", me() + 1);
        assert!(found.iter().all(|f| matches!(f, Found::Refused { .. })));
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn a_plugin_linked_into_a_folder_others_can_write_is_refused() {
        let t = tree();
        let open = t.path().join("open");
        let target = script(&open, "real", "echo ran", 0o755);
        mode(&open, 0o777);
        let g = t.path().join("plugins/preboot.d");
        std::fs::create_dir_all(&g).unwrap();
        std::os::unix::fs::symlink(&target, g.join("10-abs")).unwrap();
        std::os::unix::fs::symlink("../../open/real", g.join("20-rel")).unwrap();
        let found = discover(t.path(), "preboot", "vm", me());
        let why = format!(
            "{} is writable by group or others (mode 777)",
            open.display()
        );
        assert_eq!(
            names(&found),
            [
                format!("refused {}: {why}", g.join("10-abs").display()),
                format!("refused {}: {why}", g.join("20-rel").display()),
            ]
        );
        // A folder on the way to the target counts as much as its own.
        mode(&open, 0o755);
        let deep = t.path().join("open/deeper");
        script(&deep, "real", "echo ran", 0o755);
        mode(&open, 0o775);
        std::os::unix::fs::symlink(deep.join("real"), g.join("30-deep")).unwrap();
        let found = discover(t.path(), "preboot", "vm", me());
        assert!(
            matches!(&found[2], Found::Refused { why, .. } if why.contains("mode 775")),
            "{found:?}"
        );
    }

    #[test]
    fn a_stage_folder_linked_to_an_unsafe_place_is_refused() {
        let t = tree();
        let open = t.path().join("open");
        script(&open.join("preboot.d"), "10-x", "echo ran", 0o755);
        mode(&open, 0o757);
        std::fs::create_dir_all(t.path().join("plugins")).unwrap();
        std::os::unix::fs::symlink(open.join("preboot.d"), t.path().join("plugins/preboot.d"))
            .unwrap();
        let found = discover(t.path(), "preboot", "vm", me());
        assert_eq!(
            names(&found),
            [format!(
                "refused {}: {} is writable by group or others (mode 757)",
                t.path().join("plugins/preboot.d").display(),
                open.display()
            )]
        );
    }

    #[test]
    fn safe_links_run_what_they_point_to() {
        let t = tree();
        let lib = t.path().join("lib");
        script(&lib, "real", "echo \"$0 $1 $KVMROLL_PLUGIN\"", 0o755);
        script(&lib.join("preboot.d"), "10-global", "echo global", 0o755);
        std::fs::create_dir_all(t.path().join("plugins")).unwrap();
        std::os::unix::fs::symlink("../lib/preboot.d", t.path().join("plugins/preboot.d")).unwrap();
        let v = t.path().join("vms/vm/preboot.d");
        std::fs::create_dir_all(&v).unwrap();
        std::os::unix::fs::symlink("../../../lib/./real", v.join("20-own")).unwrap();
        // A binary through the system's own links (/bin -> usr/bin on a
        // merged-/usr system).
        std::os::unix::fs::symlink("/bin/echo", v.join("30-echo")).unwrap();
        let found = discover(t.path(), "preboot", "vm", me());
        assert_eq!(names(&found), ["10-global", "20-own", "30-echo"]);
        assert_eq!(output(&found[0]), "global\n");
        let own = v.join("20-own");
        let said = output(&found[1]);
        // A script reads itself from the descriptor it was started through.
        assert!(said.starts_with("/proc/self/fd/"), "{said}");
        assert!(
            said.ends_with(&format!(" a1 {}\n", own.display())),
            "{said}"
        );
        assert_eq!(output(&found[2]), "a1\n");
    }

    #[test]
    fn what_runs_is_the_file_that_was_checked() {
        let t = tree();
        let g = t.path().join("plugins/allocate.d");
        script(&g, "10-plugin", "echo checked", 0o755);
        let found = discover(t.path(), "allocate", "vm", me());
        // Swapped after the check: another file renamed over the name.
        let evil = script(t.path(), "evil", "echo swapped", 0o755);
        std::fs::rename(&evil, g.join("10-plugin")).unwrap();
        assert_eq!(output(&found[0]), "checked\n");
        // Binaries too.
        std::fs::copy("/bin/echo", g.join("20-bin")).unwrap();
        let found = discover(t.path(), "allocate", "vm", me());
        std::fs::rename(
            script(t.path(), "evil", "echo swapped", 0o755),
            g.join("20-bin"),
        )
        .unwrap();
        assert_eq!(output(&found[1]), "a1\n");
    }

    #[test]
    fn a_sticky_folder_is_passed_through_only_to_roots_own_entries() {
        // The fixtures live under /tmp (root's, mode 1777): a folder of
        // root's in it cannot be renamed by anyone else.
        let t = tree();
        let sticky = t.path().join("sticky");
        let target = script(&sticky.join("lib"), "real", "echo ran", 0o755);
        mode(&sticky, 0o1777);
        let g = t.path().join("plugins/preboot.d");
        std::fs::create_dir_all(&g).unwrap();
        std::os::unix::fs::symlink(&target, g.join("10-via-sticky")).unwrap();
        assert_eq!(
            names(&discover(t.path(), "preboot", "vm", me())),
            ["10-via-sticky"]
        );
        // A link of someone else's there could be replaced by them.
        let link = sticky.join("link");
        std::os::unix::fs::symlink("lib/real", &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(me() + 1), None).unwrap();
        std::os::unix::fs::symlink(&link, g.join("20-via-their-link")).unwrap();
        let found = discover(t.path(), "preboot", "vm", me());
        assert!(
            matches!(&found[1], Found::Refused { why, .. } if why.contains("which others may write")),
            "{found:?}"
        );
        // A stage folder others may write is refused even when sticky.
        mode(&g, 0o1777);
        let found = discover(t.path(), "preboot", "vm", me());
        assert!(
            matches!(&found[..], [Found::Refused { why, .. }] if why.contains("writable")),
            "{found:?}"
        );
    }

    #[test]
    fn link_loops_and_dangling_links_run_nothing() {
        let t = tree();
        let g = t.path().join("plugins/preboot.d");
        std::fs::create_dir_all(&g).unwrap();
        std::os::unix::fs::symlink("20-b", g.join("10-a")).unwrap();
        std::os::unix::fs::symlink("10-a", g.join("20-b")).unwrap();
        std::os::unix::fs::symlink("nowhere", g.join("30-dangling")).unwrap();
        let found = discover(t.path(), "preboot", "vm", me());
        let n = names(&found);
        assert_eq!(n.len(), 2, "{n:?}");
        assert!(
            n.iter().all(|s| s.contains("symbolic links on the way")),
            "{n:?}"
        );
    }

    #[test]
    fn a_vm_name_that_is_a_path_is_refused_first_and_not_followed() {
        let t = tree();
        script(&t.path().join("plugins/shutdown.d"), "10-global", "", 0o755);
        script(
            &t.path().join("outside/shutdown.d"),
            "10-outside",
            "",
            0o755,
        );
        std::fs::create_dir_all(t.path().join("vms")).unwrap();
        for vm in ["../outside", "a/../../outside", ".."] {
            let n = names(&discover(t.path(), "shutdown", vm, me()));
            assert_eq!(n.len(), 2, "{vm}: {n:?}");
            assert!(
                n[0].starts_with("refused ") && n[0].contains("invalid VM name"),
                "{n:?}"
            );
            assert_eq!(n[1], "10-global");
        }
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

//! A sandbox: one folder under /tmp and, once entered, a process tree in its
//! own namespaces; both end with the value that owns them, or with the test
//! process however it ends (a panic, or SIGKILL).
//!
//! Nothing here relies on the test process running a destructor:
//! - The namespaces' init (`init.sh`, PID 1 under `unshare --fork --pid`)
//!   blocks on its stdin, a pipe whose only writer is held by the test
//!   process (close-on-exec, so no other child inherits it). The kernel
//!   closes that writer when the test process ends in any way; init then
//!   returns, and the kernel kills every other process of the PID namespace
//!   (daemons, QEMU, PostgreSQL) and frees the mount, network, UTS and IPC
//!   namespaces, with every mount made in them. `--kill-child` ends init as
//!   well should `unshare` itself be killed.
//! - A watcher (`sh`, in its own process group so that a signal to the
//!   test's group spares it) blocks the same way on a second pipe; when it
//!   closes, the watcher waits for the namespaces' init to be gone and
//!   removes the folder.
//!
//! A parent-death signal (`PR_SET_PDEATHSIG`) on the sandbox's first process
//! would fire when the *thread* that spawned it ends, which breaks a rig
//! shared by the tests (threads) of one binary; a pipe's end belongs to the
//! process. Folders whose owner died and whose watcher did not finish (a
//! reboot) are removed by [`sweep_stale`] when the next rig starts.

use super::{io, run, RigError};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where every sandbox folder is made.
pub const TMP: &str = "/tmp";
/// How every sandbox folder's name begins.
pub const PREFIX: &str = "kvmroll-rig-";
/// The marker that makes a folder the rig's own: `OWNER_PID STARTTIME`.
const OWNER: &str = "kvmroll-rig-owner";
/// The host pids of the sandbox's `unshare` and init, one line per entry.
const PIDS: &str = "pids";

/// Removes the folder once the pipe on its stdin closes and the processes
/// listed in `DIR/pids` are gone (at most 30 s each: a pid may be reused).
const WATCHER: &str = r#"dir=$1
while read -r _; do :; done
if [ -e "$dir/pids" ]; then
    for pid in $(cat "$dir/pids"); do
        n=0
        while [ "$n" -lt 600 ]; do
            state=$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$pid/stat" 2>/dev/null) || break
            [ -n "$state" ] && [ "$state" != Z ] || break
            sleep 0.05
            n=$((n + 1))
        done
    done
fi
rm -rf "$dir"
"#;

/// Which namespaces a sandbox gets besides mount, PID and IPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spaces {
    /// A server on the machine's network (PostgreSQL on 127.0.0.1).
    Server,
    /// A machine of its own: its own host name and network (loopback only).
    Machine,
}

impl Spaces {
    fn kinds(self) -> &'static [&'static str] {
        match self {
            Spaces::Server => &["mnt", "pid", "ipc"],
            Spaces::Machine => &["mnt", "pid", "ipc", "uts", "net"],
        }
    }
}

/// A sandbox folder, its watcher and, once entered, its namespaces.
#[derive(Debug)]
pub struct Sandbox {
    dir: PathBuf,
    /// Closed to end the namespaces.
    lifeline: Option<OwnedFd>,
    unshare: Option<Child>,
    /// The namespaces' init, as the machine sees its pid.
    init: Option<u32>,
    /// `kind:[inode]` of each namespace, while entered.
    namespaces: Vec<String>,
    spaces: Spaces,
    /// Closed to let the watcher remove the folder.
    keep: Option<OwnedFd>,
    watcher: Option<Child>,
}

impl Sandbox {
    /// Makes `/tmp/kvmroll-rig-LABEL-PID-N` (mode 0755), marked as this
    /// process's, and its watcher.
    pub fn create(label: &str, spaces: Spaces) -> Result<Sandbox, RigError> {
        sweep_once();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = Path::new(TMP).join(format!("{PREFIX}{label}-{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => break dir,
                // A folder of an earlier process that had this pid.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("create", &dir)(e)),
            }
        };
        let mut sandbox = Sandbox {
            dir,
            lifeline: None,
            unshare: None,
            init: None,
            namespaces: Vec::new(),
            spaces,
            keep: None,
            watcher: None,
        };
        // From here on, dropping `sandbox` removes the folder.
        sandbox.watch()?;
        Ok(sandbox)
    }

    fn watch(&mut self) -> Result<(), RigError> {
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io("set the mode of", &self.dir))?;
        let (stdin, keep) = pipe().map_err(io("make a pipe for", &self.dir))?;
        let watcher = Command::new("sh")
            .arg("-c")
            .arg(WATCHER)
            .arg("kvmroll-rig-watcher")
            .arg(&self.dir)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| RigError::Spawn {
                program: "sh".into(),
                source,
            })?;
        self.keep = Some(keep);
        self.watcher = Some(watcher);
        let marker = self.dir.join(OWNER);
        let (pid, start) = owner_id();
        std::fs::write(&marker, format!("{pid} {start}\n")).map_err(io("write", &marker))
    }

    /// The sandbox's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespaces' init as the machine sees it, once entered.
    pub fn init_pid(&self) -> Option<u32> {
        self.init
    }

    /// Starts `init.sh` as PID 1 of new namespaces, with `hostname` for a
    /// [`Spaces::Machine`], and returns once its mounts (`DIR/mounts`) are
    /// made.
    pub fn enter(&mut self, hostname: Option<&str>) -> Result<(), RigError> {
        assert!(
            self.unshare.is_none(),
            "{} is entered already",
            self.dir.display()
        );
        let script = self.dir.join("init.sh");
        std::fs::write(&script, include_str!("init.sh")).map_err(io("write", &script))?;
        let log_path = self.dir.join("init.log");
        let log = File::create(&log_path).map_err(io("create", &log_path))?;
        let log2 = log.try_clone().map_err(io("open", &log_path))?;
        let (stdin, lifeline) = pipe().map_err(io("make a pipe for", &self.dir))?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--pid", "--ipc", "--fork", "--kill-child"])
            .args(["--mount-proc", "--propagation", "private"]);
        if self.spaces == Spaces::Machine {
            cmd.args(["--uts", "--net"]);
        }
        cmd.arg("bash").arg(&script).arg(&self.dir);
        cmd.args(hostname);
        let child = cmd
            .stdin(stdin)
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| RigError::Spawn {
                program: "unshare".into(),
                source,
            })?;
        drop(cmd);
        let unshare_pid = child.id();
        self.lifeline = Some(lifeline);
        self.unshare = Some(child);

        let init = poll(Duration::from_secs(5), || child_of(unshare_pid));
        let Some(init) = init else {
            return Err(self.failed("did not fork its init"));
        };
        self.init = Some(init);
        let pids = self.dir.join(PIDS);
        std::fs::write(&pids, format!("{unshare_pid}\n{init}\n")).map_err(io("write", &pids))?;
        let ready = self.dir.join("ready");
        let up = poll(Duration::from_secs(10), || {
            if ready.exists() {
                Some(true)
            } else if self.exited() {
                Some(false)
            } else {
                None
            }
        });
        if up != Some(true) {
            return Err(self.failed("did not make its mounts"));
        }
        for kind in self.spaces.kinds() {
            let link = format!("/proc/{init}/ns/{kind}");
            let ns = std::fs::read_link(&link).map_err(io("read", &link))?;
            self.namespaces.push(ns.to_string_lossy().into_owned());
        }
        Ok(())
    }

    /// Whether the sandbox's `unshare` has ended.
    pub fn exited(&self) -> bool {
        let Some(pid) = self.unshare.as_ref().map(Child::id) else {
            return true;
        };
        !alive(pid)
    }

    /// An error for a sandbox that failed to start, with its init's output.
    pub fn failed(&self, what: &str) -> RigError {
        let log = std::fs::read_to_string(self.dir.join("init.log")).unwrap_or_default();
        RigError::Ended {
            what: format!("{} {what}", self.dir.display()),
            log: log.trim().to_string(),
        }
    }

    /// A command that runs `program` inside the namespaces (`nsenter`, which
    /// forks into the PID namespace). Panics when not entered.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let init = self
            .init
            .unwrap_or_else(|| panic!("{} is not entered", self.dir.display()));
        let mut c = Command::new("nsenter");
        c.arg("-t").arg(init.to_string());
        c.args(["-m", "-p", "-i"]);
        if self.spaces == Spaces::Machine {
            c.args(["-u", "-n"]);
        }
        c.arg("--").arg(program);
        c
    }

    /// Runs `sh -c SCRIPT` inside; its stdout, or an error with its stderr.
    pub fn sh(&self, script: &str) -> Result<String, RigError> {
        let out = run(self.command("sh").arg("-c").arg(script))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What stays identifiable of this sandbox while it lives.
    pub fn footprint(&self) -> super::Footprint {
        super::Footprint {
            dir: self.dir.clone(),
            namespaces: self.namespaces.clone(),
        }
    }

    /// Ends the namespaces and every process in them; the folder stays.
    /// Returns once they are all gone.
    pub fn end(&mut self) {
        self.lifeline = None;
        if let Some(mut child) = self.unshare.take() {
            // `unshare` returns when its child, the init, is reaped, which
            // the kernel allows only after every other process of the PID
            // namespace has been killed and reaped.
            let waited = poll(Duration::from_secs(60), || child.try_wait().ok().flatten());
            if waited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.init = None;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.end();
        self.keep = None;
        if let Some(mut watcher) = self.watcher.take() {
            let _ = watcher.wait();
        }
    }
}

/// A pipe `(read end, write end)`, both close-on-exec: a child gets the
/// read end only as the stdin it is given, and no child inherits the write
/// end, so it closes when this process ends.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// Polls `f` every 10 ms until it returns `Some` or `limit` has passed.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `(state, ppid, starttime)` of a process, from `/proc/PID/stat`.
pub fn stat(pid: u32) -> Option<(char, u32, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<(char, u32, u64)> {
    // The command name is in parentheses and may hold anything; the fields
    // after its last ')' are plain: state ppid ... (starttime is the 20th).
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, ppid, start))
}

/// Whether the process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _, _)| state != 'Z')
}

/// The numeric entries of /proc.
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A child process of `parent`, if it has one.
fn child_of(parent: u32) -> Option<u32> {
    pids()
        .into_iter()
        .find(|&pid| stat(pid).is_some_and(|(_, ppid, _)| ppid == parent))
}

/// This process's pid and start time, which together name it even after
/// its pid is reused.
fn owner_id() -> (u32, u64) {
    let pid = std::process::id();
    (pid, stat(pid).map_or(0, |(_, _, start)| start))
}

fn sweep_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        sweep_stale(Path::new(TMP));
    });
}

/// Removes the sandbox folders under `base` that a process which has ended
/// left behind (it was killed, and its watcher too): a folder counts only
/// when it is named `kvmroll-rig-*`, is a real folder, holds the owner
/// marker, its owner is gone (no process with that pid and start time), and
/// no process it lists in `pids` still runs. Returns the folders removed.
pub fn sweep_stale(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_rig = name.to_str().is_some_and(|n| n.starts_with(PREFIX));
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_rig || !is_dir {
            continue;
        }
        let dir = entry.path();
        let Ok(owner) = std::fs::read_to_string(dir.join(OWNER)) else {
            continue;
        };
        let mut words = owner.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(pid)), Some(Ok(start))) = (words.next(), words.next()) else {
            continue;
        };
        let owner_runs = u32::try_from(pid)
            .ok()
            .and_then(stat)
            .is_some_and(|(state, _, s)| state != 'Z' && s == start);
        let listed = std::fs::read_to_string(dir.join(PIDS)).unwrap_or_default();
        let listed_run = listed
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .any(alive);
        if !owner_runs && !listed_run && std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_rig(base: &Path, name: &str, owner: Option<String>) -> PathBuf {
        let dir = base.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("data"), "x").unwrap();
        if let Some(owner) = owner {
            std::fs::write(dir.join(OWNER), owner).unwrap();
        }
        dir
    }

    #[test]
    fn sweep_removes_only_marked_folders_of_ended_owners() {
        let base = tempfile::tempdir().unwrap();
        // A process that has ended: its pid is free (or reused with another
        // start time).
        let mut done = Command::new("true").spawn().unwrap();
        let dead = done.id();
        done.wait().unwrap();
        let (me, my_start) = owner_id();

        let stale = fake_rig(
            base.path(),
            "kvmroll-rig-a-1-0",
            Some(format!("{dead} 1\n")),
        );
        let live = fake_rig(
            base.path(),
            "kvmroll-rig-b-1-0",
            Some(format!("{me} {my_start}\n")),
        );
        // This process's pid with another start time: an earlier owner.
        let reused = fake_rig(base.path(), "kvmroll-rig-c-1-0", Some(format!("{me} 1\n")));
        let unmarked = fake_rig(base.path(), "kvmroll-rig-d-1-0", None);
        let other = fake_rig(base.path(), "other-e", Some(format!("{dead} 1\n")));
        let running = fake_rig(
            base.path(),
            "kvmroll-rig-f-1-0",
            Some(format!("{dead} 1\n")),
        );
        std::fs::write(running.join(PIDS), format!("{me}\n")).unwrap();

        let mut removed = sweep_stale(base.path());
        removed.sort();
        assert_eq!(removed, vec![stale.clone(), reused.clone()]);
        assert!(!stale.exists() && !reused.exists());
        for kept in [live, unmarked, other, running] {
            assert!(kept.join("data").exists(), "{} was removed", kept.display());
        }
    }

    #[test]
    fn stat_reads_a_command_name_with_spaces_and_parentheses() {
        let line =
            "4242 (a) b (c) S 17 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0 987654 1 2";
        assert_eq!(parse_stat(line), Some(('S', 17, 987654)));
        let (state, ppid, _) = stat(std::process::id()).unwrap();
        assert_ne!(state, 'Z');
        assert_eq!(ppid, std::os::unix::process::parent_id());
    }
}

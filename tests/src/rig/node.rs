//! A VM container for tests: one virtlogd and one libvirtd in their own
//! mount, UTS, network, PID and IPC namespaces (see [`super::sandbox`]), with
//! their own host name and their own `/run`, `/etc/libvirt`,
//! `/var/lib/libvirt`, `/var/cache/libvirt`, `/var/log/libvirt`,
//! `/etc/kvmroll` and `/var/lib/kvmroll`: folders under the node's folder
//! (`DIR/fs/PATH`) bound over those paths inside the node only. The machine's
//! own libvirtd, `/etc/libvirt` and `/etc/kvmroll` are never read or
//! changed.
//!
//! The rest of the file system is the machine's: `/usr` (the binaries),
//! `/tmp` (shared with the test, on purpose), `/dev/kvm`.
//!
//! The node's `/etc/libvirt` is written here rather than copied from the
//! machine's, which another engineer's tests change (a hook, plugins): a
//! `host_uuid` of its own (libvirt refuses a migration between two daemons
//! that report the same one), QEMU run as root (`/dev/kvm` is root's here),
//! no cgroups (a node's libvirtd would make them in the machine's
//! hierarchy, and a killed node would leave them there) and no security
//! driver or remembered owners (no AppArmor profile or xattr outlives the
//! node).

use super::sandbox::{poll, Sandbox, Spaces};
use super::{io, Postgres, RigError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Where a node sees the PostgreSQL socket folder given with
/// [`NodeBuilder::postgres`].
pub const NODE_PG_SOCKET: &str = "/run/postgresql";

/// The folders private to every node, as the node sees them, in the order
/// they are bound.
const PRIVATE: [&str; 7] = [
    "/run",
    "/etc/libvirt",
    "/var/lib/libvirt",
    "/var/cache/libvirt",
    "/var/log/libvirt",
    "/etc/kvmroll",
    "/var/lib/kvmroll",
];

/// Starts the daemons; their output goes to the node's libvirt log folder,
/// not to a pipe of ours they would hold open.
const START_DAEMONS: &str = "exec >>/var/log/libvirt/rig-daemons.log 2>&1
virtlogd -d -p /run/libvirt/virtlogd.pid
libvirtd -d -p /run/libvirt/libvirtd.pid";

/// Ends libvirtd (its guests keep running) and starts it again.
const RESTART_LIBVIRTD: &str = "exec >>/var/log/libvirt/rig-daemons.log 2>&1
pid=$(cat /run/libvirt/libvirtd.pid)
kill \"$pid\"
n=0
while state=$(sed -n 's/.*) \\(.\\).*/\\1/p' \"/proc/$pid/stat\" 2>/dev/null) &&
    [ -n \"$state\" ] && [ \"$state\" != Z ]; do
    n=$((n + 1))
    [ \"$n\" -lt 600 ] || kill -9 \"$pid\"
    sleep 0.05
done
libvirtd -d -p /run/libvirt/libvirtd.pid";

/// A node's private paths: where each path inside the node is on the
/// machine.
#[derive(Debug)]
pub struct NodeFiles {
    name: String,
    /// `DIR/fs`: the node's private folders, at their paths inside it.
    fs: PathBuf,
    /// Folders bound into the node besides [`PRIVATE`]: (on the machine,
    /// inside the node), in order.
    binds: Vec<(PathBuf, PathBuf)>,
}

impl NodeFiles {
    /// The node's name, also its host name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where `inside`, a path inside the node, is on the machine. Panics
    /// for a path the node shares with the machine (`/usr`, `/tmp`): that
    /// one is the same path outside.
    pub fn outside(&self, inside: impl AsRef<Path>) -> PathBuf {
        let inside = inside.as_ref();
        self.try_outside(inside).unwrap_or_else(|| {
            panic!(
                "{} is not private to node {}: it is the machine's",
                inside.display(),
                self.name
            )
        })
    }

    fn try_outside(&self, inside: &Path) -> Option<PathBuf> {
        let private = PRIVATE
            .iter()
            .map(|p| (self.fs.join(&p[1..]), PathBuf::from(p)));
        let bound = self.binds.iter().cloned();
        // The deepest mount holding the path wins.
        private
            .chain(bound)
            .filter(|(_, target)| inside.starts_with(target))
            .max_by_key(|(_, target)| target.components().count())
            .map(|(source, target)| source.join(inside.strip_prefix(&target).unwrap_or(inside)))
    }

    /// The node's `/etc/libvirt`, on the machine.
    pub fn etc_libvirt(&self) -> PathBuf {
        self.outside("/etc/libvirt")
    }

    /// The node's `/etc/kvmroll`, on the machine.
    pub fn etc_kvmroll(&self) -> PathBuf {
        self.outside("/etc/kvmroll")
    }

    /// The node's `/var/lib/kvmroll`, on the machine.
    pub fn var_lib_kvmroll(&self) -> PathBuf {
        self.outside("/var/lib/kvmroll")
    }

    /// Writes a file at `inside` (a private path), making its folders;
    /// returns where it is on the machine.
    pub fn write(
        &self,
        inside: impl AsRef<Path>,
        contents: impl AsRef<[u8]>,
        mode: u32,
    ) -> Result<PathBuf, RigError> {
        let path = self.outside(inside);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("write", &path))?;
        }
        std::fs::write(&path, contents).map_err(io("write", &path))?;
        let mode = std::fs::Permissions::from_mode(mode);
        std::fs::set_permissions(&path, mode).map_err(io("write", &path))?;
        Ok(path)
    }

    /// `qemu+unix:///system?socket=DIR/fs/run/libvirt/libvirt-sock`: the
    /// node's libvirtd, from the machine.
    pub fn libvirt_uri(&self) -> String {
        format!(
            "qemu+unix:///system?socket={}",
            self.outside("/run/libvirt/libvirt-sock").display()
        )
    }

    /// `virsh -q -c LIBVIRT_URI ARGS`, from the machine.
    pub fn virsh(&self, args: &[&str]) -> Output {
        Command::new("virsh")
            .args(["-q", "-c", &self.libvirt_uri()])
            .args(args)
            .output()
            .expect("virsh runs")
    }
}

/// A node being prepared: its folders exist, its daemons do not run yet.
/// Put its hook, `kvmroll.conf` and plugins in place now: libvirtd reads
/// its hooks only when it starts.
#[derive(Debug)]
pub struct NodeBuilder {
    sandbox: Sandbox,
    files: NodeFiles,
}

impl std::ops::Deref for NodeBuilder {
    type Target = NodeFiles;
    fn deref(&self) -> &NodeFiles {
        &self.files
    }
}

impl NodeBuilder {
    /// Makes the folders of node `name` (also its host name: lower-case
    /// letters, digits and `-`) and its libvirt configuration.
    pub fn new(name: &str) -> Result<NodeBuilder, RigError> {
        let valid = !name.is_empty()
            && name.len() <= 40
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(RigError::Invalid {
                what: "node name",
                value: name.into(),
                why: "a host name: lower-case letters, digits and '-', at most 40",
            });
        }
        let sandbox = Sandbox::create(&format!("node-{name}"), Spaces::Machine)?;
        let files = NodeFiles {
            name: name.into(),
            fs: sandbox.dir().join("fs"),
            binds: Vec::new(),
        };
        for dir in PRIVATE
            .iter()
            .chain(&["/run/libvirt", "/run/lock", "/etc/libvirt/hooks"])
        {
            let path = files.outside(dir);
            std::fs::create_dir_all(&path).map_err(io("create", &path))?;
        }
        copy_capabilities(&files.outside("/var/cache/libvirt/qemu/capabilities"));
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map_err(io("read", "/proc/sys/kernel/random/uuid"))?;
        let header = format!("# node {name} of the kvmroll test rig\n");
        let libvirtd = format!(
            "{header}host_uuid = \"{}\"\nlog_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n",
            uuid.trim()
        );
        let qemu = format!(
            "{header}user = \"root\"\ngroup = \"root\"\ncgroup_controllers = [ ]\n\
             security_driver = \"none\"\nremember_owner = 0\n"
        );
        files.write("/etc/libvirt/libvirtd.conf", libvirtd, 0o644)?;
        files.write("/etc/libvirt/qemu.conf", qemu, 0o644)?;
        files.write("/etc/libvirt/virtlogd.conf", &header, 0o644)?;
        Ok(NodeBuilder { sandbox, files })
    }

    /// Installs `hook` (a file on the machine) as the node's
    /// `/etc/libvirt/hooks/qemu`, mode 0755.
    pub fn install_hook(&self, hook: &Path) -> Result<(), RigError> {
        let contents = std::fs::read(hook).map_err(io("read", &hook))?;
        self.write("/etc/libvirt/hooks/qemu", contents, 0o755)
            .map(drop)
    }

    /// Makes `inside` (a disk root such as `/state/partition1/kvm/disks`,
    /// say) a folder private to the node, at `DIR/fs/INSIDE` on the
    /// machine. A path under one of the node's private folders already is.
    pub fn private_dir(&mut self, inside: &str) -> Result<PathBuf, RigError> {
        let inside = checked_inside(inside)?;
        if self.files.try_outside(&inside).is_none() {
            let source = self
                .files
                .fs
                .join(inside.strip_prefix("/").unwrap_or(&inside));
            self.files.binds.push((source, inside.clone()));
        }
        let path = self.outside(&inside);
        std::fs::create_dir_all(&path).map_err(io("create", &path))?;
        Ok(path)
    }

    /// Binds the machine's folder `outside` at `inside` in the node.
    pub fn bind(&mut self, outside: &Path, inside: &str) -> Result<(), RigError> {
        let inside = checked_inside(inside)?;
        if !outside.is_dir() {
            return Err(RigError::Invalid {
                what: "folder to bind",
                value: outside.display().to_string(),
                why: "not a folder",
            });
        }
        self.files.binds.push((outside.to_path_buf(), inside));
        Ok(())
    }

    /// Binds the server's socket folder at [`NODE_PG_SOCKET`]: inside the
    /// node, `pg.url_socket_in(NODE_PG_SOCKET, ...)` reaches it.
    pub fn postgres(&mut self, pg: &Postgres) -> Result<(), RigError> {
        self.bind(&pg.socket_dir(), NODE_PG_SOCKET)
    }

    /// Starts the node: its mounts, then virtlogd and libvirtd; returns
    /// once libvirtd answers on [`NodeFiles::libvirt_uri`] with the node's
    /// host name.
    pub fn start(mut self) -> Result<Node, RigError> {
        let mounts = self.mount_table()?;
        let path = self.sandbox.dir().join("mounts");
        std::fs::write(&path, mounts).map_err(io("write", &path))?;
        self.sandbox.enter(Some(&self.files.name))?;
        let node = Node {
            sandbox: self.sandbox,
            files: self.files,
            address: None,
        };
        node.sandbox.sh(START_DAEMONS)?;
        node.wait_up()?;
        Ok(node)
    }

    /// `DIR/mounts` for init.sh: the overlays that make missing mount
    /// points, then the binds, in order.
    fn mount_table(&self) -> Result<String, RigError> {
        let fs = &self.files.fs;
        let mut binds: Vec<(PathBuf, PathBuf)> = PRIVATE
            .iter()
            .map(|p| (fs.join(&p[1..]), PathBuf::from(p)))
            .collect();
        binds.extend(self.files.binds.iter().cloned());
        let mut overlays: Vec<PathBuf> = Vec::new();
        let mut bound: Vec<&(PathBuf, PathBuf)> = Vec::new();
        let mut table = String::new();
        for bind in &binds {
            let (source, target) = bind;
            // The mount point: under a folder bound before it, it is made
            // there; else it must exist on the machine, or be made in an
            // overlay of its nearest existing parent, seen by the node only.
            let under = bound
                .iter()
                .filter(|(_, t)| target.starts_with(t))
                .max_by_key(|(_, t)| t.components().count());
            let point = match under {
                Some((s, t)) => Some(s.join(target.strip_prefix(t).unwrap_or(target))),
                None if target.is_dir() => None,
                None => {
                    let parent = target
                        .ancestors()
                        .skip(1)
                        .find(|a| a.is_dir())
                        .unwrap_or(Path::new("/"));
                    if parent == Path::new("/") {
                        return Err(RigError::MountPoint {
                            node: self.files.name.clone(),
                            target: target.clone(),
                        });
                    }
                    let n = match overlays.iter().position(|o| o == parent) {
                        Some(n) => n,
                        None => {
                            overlays.push(parent.to_path_buf());
                            overlays.len() - 1
                        }
                    };
                    let upper = self.sandbox.dir().join(format!("overlay{n}/upper"));
                    Some(upper.join(target.strip_prefix(parent).unwrap_or(target)))
                }
            };
            if let Some(point) = point {
                std::fs::create_dir_all(&point).map_err(io("create", &point))?;
            }
            table.push_str(&format!(
                "bind\t{}\t{}\n",
                source.display(),
                target.display()
            ));
            bound.push(bind);
        }
        let mut head = String::new();
        for (n, lower) in overlays.iter().enumerate() {
            let work = self.sandbox.dir().join(format!("overlay{n}/work"));
            std::fs::create_dir_all(&work).map_err(io("create", &work))?;
            let upper = self.sandbox.dir().join(format!("overlay{n}/upper"));
            head.push_str(&format!(
                "overlay\t{}\t{}\t{}\n",
                lower.display(),
                upper.display(),
                work.display()
            ));
        }
        checked(head + &table)
    }
}

/// The mount table, if init.sh can read it: tabs and newlines separate the
/// table; commas and colons the overlay's options.
fn checked(table: String) -> Result<String, RigError> {
    if table
        .lines()
        .any(|l| l.split('\t').any(|f| f.contains([',', ':'])))
    {
        return Err(RigError::Invalid {
            what: "mount table",
            value: table,
            why: "a path holds ',' or ':'",
        });
    }
    Ok(table)
}

/// A running node; ended, with its guests, and its folder removed when
/// dropped (or when the test process ends).
#[derive(Debug)]
pub struct Node {
    sandbox: Sandbox,
    files: NodeFiles,
    /// Its address on the rig's network, when the rig links its nodes.
    address: Option<std::net::Ipv4Addr>,
}

impl std::ops::Deref for Node {
    type Target = NodeFiles;
    fn deref(&self) -> &NodeFiles {
        &self.files
    }
}

impl Node {
    /// Starts a node with no hook, configuration or plugins.
    pub fn start(name: &str) -> Result<Node, RigError> {
        NodeBuilder::new(name)?.start()
    }

    /// A command that runs `program` inside the node (`nsenter -t INIT -m
    /// -u -n -p -i`), to give it arguments, environment or input.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.sandbox.command(program)
    }

    /// Runs `args` inside the node: its `virsh`, `kvmroll-guests`, `psql`.
    pub fn exec(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("a command");
        self.command(program)
            .args(rest)
            .output()
            .expect("nsenter runs")
    }

    /// The node's address on the rig's network ([`super::RigBuilder::network`]),
    /// which the other nodes reach; `None` when the rig has no network (the
    /// node has its loopback only).
    pub fn address(&self) -> Option<std::net::Ipv4Addr> {
        self.address
    }

    pub(super) fn set_address(&mut self, address: std::net::Ipv4Addr) {
        self.address = Some(address);
    }

    /// Runs `sh -c SCRIPT` inside the node as root; its stdout.
    pub(super) fn sh(&self, script: &str) -> Result<String, RigError> {
        self.sandbox.sh(script)
    }

    /// Ends libvirtd (its guests keep running) and starts it again; returns
    /// once it answers. Its hook is read anew.
    pub fn restart_libvirtd(&self) -> Result<(), RigError> {
        self.sandbox.sh(RESTART_LIBVIRTD)?;
        self.wait_up()
    }

    /// Ends the node: every process in it (daemons, guests) and its
    /// namespaces. Its folder stays until it is dropped.
    pub fn stop(&mut self) {
        self.sandbox.end();
    }

    /// The node's folder (`/tmp/kvmroll-rig-node-NAME-PID-N`).
    pub fn dir(&self) -> &Path {
        self.sandbox.dir()
    }

    /// The node's init (PID 1 inside), as the machine sees its pid; `None`
    /// once stopped.
    pub fn init_pid(&self) -> Option<u32> {
        self.sandbox.init_pid()
    }

    /// The node's folder and namespaces, to check later that nothing of it
    /// remains.
    pub fn footprint(&self) -> super::Footprint {
        self.sandbox.footprint()
    }

    /// The node's QEMU processes by guest name: each one's pid and whether
    /// it was started to receive a saved image (`-incoming`).
    pub fn qemus(&self) -> std::collections::BTreeMap<String, Vec<(u32, bool)>> {
        let mut by_vm: std::collections::BTreeMap<String, Vec<(u32, bool)>> = Default::default();
        for (pid, comm) in self.footprint().processes() {
            if !comm.starts_with("qemu-system") {
                continue;
            }
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            let name = args.iter().find_map(|a| {
                let a = std::str::from_utf8(a).ok()?;
                a.strip_prefix("guest=")?
                    .split(',')
                    .next()
                    .map(String::from)
            });
            if let Some(name) = name {
                let incoming = args.iter().any(|a| *a == b"-incoming");
                by_vm.entry(name).or_default().push((pid, incoming));
            }
        }
        by_vm
    }

    /// Waits for libvirtd to answer with the node's host name.
    fn wait_up(&self) -> Result<(), RigError> {
        let up = poll(Duration::from_secs(30), || {
            let out = self.virsh(&["hostname"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == self.name() {
                Some(true)
            } else if self.sandbox.exited() {
                Some(false)
            } else {
                None
            }
        });
        if up == Some(true) {
            return Ok(());
        }
        let log = ["rig-daemons.log", "libvirtd.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.outside("/var/log/libvirt").join(f)))
            .filter_map(Result::ok)
            .collect::<Vec<_>>()
            .join("\n");
        Err(RigError::NotUp {
            what: format!("libvirtd of node {}", self.name()),
            log: log.trim().to_string(),
        })
    }
}

/// Copies the machine's cache of QEMU's capabilities, if it has one, into
/// a node's: it saves the node a probe of QEMU (about 1 s) at its first
/// guest. libvirt checks the copy (QEMU's and libvirtd's change times, the
/// kernel, the microcode) and probes anew when it is stale; the machine's
/// cache is only read.
fn copy_capabilities(to: &Path) {
    const CACHE: &str = "/var/cache/libvirt/qemu/capabilities";
    let Ok(entries) = std::fs::read_dir(CACHE) else {
        return;
    };
    if std::fs::create_dir_all(to).is_err() {
        return;
    }
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with(".xml") {
            let _ = std::fs::copy(e.path(), to.join(e.file_name()));
        }
    }
}

/// An absolute path inside a node, without `..`.
fn checked_inside(inside: &str) -> Result<PathBuf, RigError> {
    let path = PathBuf::from(inside);
    let fine = path.is_absolute()
        && path != Path::new("/")
        && path
            .components()
            .all(|c| !matches!(c, std::path::Component::ParentDir));
    if !fine {
        return Err(RigError::Invalid {
            what: "path inside a node",
            value: inside.into(),
            why: "absolute, not '/', without '..'",
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests;

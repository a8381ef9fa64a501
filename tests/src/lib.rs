//! Fixtures shared by kvmroll's end-to-end tests: where the built binaries
//! are, whether a real libvirtd answers, `virsh`, and guards that remove the
//! domains a test made even when it fails; and [`rig`], the cluster rig (a
//! private PostgreSQL and VM containers, each its own libvirtd).

use kvmroll_core::error_chain;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod halting;
pub mod json;
pub mod rig;

/// The statically linked hook that `scripts/build.sh` builds beside the
/// workspace (`target/TRIPLE/PROFILE/kvmroll-hook`) and the scripts install;
/// it must have been built.
pub fn static_hook() -> PathBuf {
    let dir = bin_dir();
    let profile = dir.file_name().expect("profile folder").to_owned();
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let hook = dir
        .parent()
        .expect("target folder")
        .join(triple)
        .join(profile)
        .join("kvmroll-hook");
    assert!(
        hook.exists(),
        "{} is not built: run scripts/build.sh{}",
        hook.display(),
        if dir.ends_with("release") {
            " --release"
        } else {
            ""
        }
    );
    hook
}

/// Polls `what` every 10 ms until it holds (true) or `limit` has passed
/// (false).
pub fn wait_for(limit: std::time::Duration, mut what: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if what() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The folder holding the workspace's built binaries (`target/debug` or
/// `target/release`), found beside the running test executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/TEST-HASH -> target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable under target/PROFILE/deps")
        .to_path_buf();
    assert!(
        dir.join("kvmroll").exists(),
        "{} has no kvmroll binary: run `cargo build --workspace` first",
        dir.display()
    );
    dir
}

/// A command for one of the workspace's binaries.
pub fn bin(name: &str) -> Command {
    let mut c = Command::new(bin_dir().join(name));
    for var in ["KVMROLL_DB", "KVMROLL_DB_READONLY", "KVMROLL_STAGE"] {
        c.env_remove(var);
    }
    c
}

/// `virsh -c qemu:///system ARGS`.
pub fn virsh(args: &[&str]) -> Output {
    Command::new("virsh")
        .args(["-c", "qemu:///system", "-q"])
        .args(args)
        .output()
        .expect("virsh runs")
}

/// `virsh` that must succeed; its stdout.
pub fn virsh_ok(args: &[&str]) -> String {
    let out = virsh(args);
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a real libvirtd answers on qemu:///system. Where the suite must
/// run end to end (`KVMROLL_E2E=1`, as scripts/test.sh sets), a missing
/// daemon is a failure, not a skip.
pub fn libvirtd_available(test: &str) -> bool {
    let up = Command::new("virsh")
        .args(["-c", "qemu:///system", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        assert!(
            std::env::var_os("KVMROLL_E2E").is_none(),
            "{test}: KVMROLL_E2E is set but no libvirtd answers on qemu:///system (scripts/libvirtd.sh up)"
        );
        eprintln!("{test}: skipped: no libvirtd answers on qemu:///system (run scripts/test.sh)");
    }
    up
}

/// This machine's short host name: the container name that kvmroll maps to
/// qemu:///system.
pub fn local_host() -> String {
    let h = nix::unistd::gethostname()
        .expect("hostname")
        .into_string()
        .expect("utf-8 hostname");
    h.split('.').next().unwrap_or_default().to_string()
}

/// Destroys and undefines the named domains when dropped.
#[derive(Debug, Default)]
pub struct Domains(pub Vec<String>);

impl Drop for Domains {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = virsh(&["destroy", name]);
            let _ = virsh(&["undefine", name, "--managed-save"]);
        }
    }
}

/// The output's stdout, asserting success.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A unique prefix for this test process's domain names.
pub fn prefix(test: &str) -> String {
    format!("kvmroll-e2e-{test}-{}", std::process::id())
}

/// The CPU mode the test guests use: nested KVM on these machines cannot set
/// IA32_ARCH_CAPABILITIES, so the passed-through CPU goes without it.
pub const GUEST_CPU_MODE: &str =
    "host-passthrough: <feature policy='disable' name='arch-capabilities'/>";

/// Where the hook reads its configuration (`kvmroll-hook`'s default).
pub const HOOK_CONF: &str = "/etc/kvmroll/kvmroll.conf";

/// The database scripts/test.sh gives the installed hook for the end-to-end
/// tests.
pub const E2E_DB: &str = "/var/lib/kvmroll/e2e/kvmroll.db";

/// What an installed hook's kvmroll.conf says (the keys the tests need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConf {
    /// `db`: the cluster database the hook reads.
    pub db: PathBuf,
    /// `root`: holds `plugins/STAGE.d/` and `vms/VM/STAGE.d/`.
    pub root: PathBuf,
    /// `kvmroll`: the CLI plugins find first in PATH, if given.
    pub kvmroll: Option<PathBuf>,
}

/// Parses kvmroll.conf's `key = value` lines (`#` starts a comment); `None`
/// when `db` or `root` is missing.
pub fn parse_hook_conf(text: &str) -> Option<HookConf> {
    let (mut db, mut root, mut kvmroll) = (None, None, None);
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = PathBuf::from(value.trim());
        match key.trim() {
            "db" => db = Some(value),
            "root" => root = Some(value),
            "kvmroll" => kvmroll = Some(value),
            _ => {}
        }
    }
    Some(HookConf {
        db: db?,
        root: root?,
        kvmroll,
    })
}

/// Reads and parses [`HOOK_CONF`]; `None` when it is missing or incomplete.
pub fn hook_conf() -> Option<HookConf> {
    parse_hook_conf(&std::fs::read_to_string(HOOK_CONF).ok()?)
}

/// Where libvirtd runs its qemu hook from.
pub const INSTALLED_HOOK: &str = "/etc/libvirt/hooks/qemu";

/// Why the installed hook cannot be used by the end-to-end tests, if it
/// cannot: it must be this build's static hook, reading [`E2E_DB`].
fn hook_problem() -> Result<HookConf, String> {
    let built = static_hook();
    let built_bytes =
        std::fs::read(&built).map_err(|e| format!("cannot read {}: {e}", built.display()))?;
    let installed =
        std::fs::read(INSTALLED_HOOK).map_err(|e| format!("cannot read {INSTALLED_HOOK}: {e}"))?;
    if installed != built_bytes {
        return Err(format!(
            "{INSTALLED_HOOK} is not this build's {}",
            built.display()
        ));
    }
    let conf = hook_conf().ok_or_else(|| format!("{HOOK_CONF} is missing or has no db/root"))?;
    if conf.db != Path::new(E2E_DB) {
        return Err(format!(
            "{HOOK_CONF} names the database {}, not the end-to-end one {E2E_DB}",
            conf.db.display()
        ));
    }
    Ok(conf)
}

/// The installed hook's configuration, when a real libvirtd answers and runs
/// this build's hook over the end-to-end database; `None` when `test` must
/// be skipped, which `KVMROLL_E2E` turns into a failure.
pub fn installed_hook(test: &str) -> Option<HookConf> {
    if !libvirtd_available(test) {
        return None;
    }
    match hook_problem() {
        Ok(conf) => Some(conf),
        Err(why) => {
            assert!(
                std::env::var_os("KVMROLL_E2E").is_none(),
                "{test}: KVMROLL_E2E is set but {why} (run scripts/hook-setup.sh debug \
                 {E2E_DB} /var/lib/kvmroll/e2e/etc, as scripts/test.sh does)"
            );
            eprintln!("{test}: skipped: {why} (run scripts/test.sh)");
            None
        }
    }
}

/// `kvmroll --db DB ...` for one test's database.
#[derive(Debug, Clone)]
pub struct Kvmroll {
    pub db: PathBuf,
}

impl Kvmroll {
    pub fn new(db: impl Into<PathBuf>) -> Kvmroll {
        Kvmroll { db: db.into() }
    }

    /// Runs `kvmroll --db DB ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        bin("kvmroll")
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .output()
            .expect("kvmroll runs")
    }

    /// Runs it and asserts success; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        ok(self.run(args), &format!("kvmroll {args:?}"))
    }

    /// Adds a test guest's row: 64 MiB, one vCPU, on `container`.
    pub fn add_small_vm(&self, name: &str, container: &str) {
        self.ok(&[
            "vm",
            "add",
            name,
            "--container",
            container,
            "--mem",
            "64",
            "--cpus",
            "1",
        ]);
    }

    /// Adds each rig node as a VM container of `cpus` CPUs reached at its
    /// libvirt URI (and its `kvm_migrate_address` where the rig has a
    /// network), with the guest CPU mode and no graphics for every VM.
    pub fn rig_containers(&self, nodes: &[&rig::Node], cpus: u32) {
        for node in nodes {
            let add = ["host", "add", node.name(), "--appliance", "vm-container"];
            self.ok(&[&add[..], &["--cpus", &cpus.to_string()]].concat());
            self.ok(&[
                "attr",
                "set",
                node.name(),
                "libvirt_uri",
                &node.libvirt_uri(),
            ]);
            // Where the rig links its nodes, a native migration's stream
            // reaches the node at its address (its host name resolves
            // nowhere).
            if let Some(address) = node.address() {
                let address = address.to_string();
                self.ok(&["attr", "set", node.name(), "kvm_migrate_address", &address]);
            }
        }
        self.ok(&["attr", "set", "--global", "cpu_mode", GUEST_CPU_MODE]);
        self.ok(&["attr", "set", "--global", "kvm_graphics", "none"]);
    }

    /// A database of its own with `node`, a 2-CPU VM container whose
    /// libvirt answers at `uri` (a rig node's).
    pub fn init_with_container(&self, node: &str, uri: &str) {
        self.ok(&["db", "init"]);
        let add = ["host", "add", node, "--appliance", "vm-container"];
        self.ok(&[&add[..], &["--cpus", "2"]].concat());
        self.ok(&["attr", "set", node, "libvirt_uri", uri]);
    }

    /// Makes this machine a 2-CPU VM container (one that is there already is
    /// fine), with the guest CPU mode and no graphics for every VM. Returns
    /// the container's name.
    pub fn local_container(&self) -> String {
        let host = local_host();
        let out = self.run(&[
            "host",
            "add",
            &host,
            "--appliance",
            "vm-container",
            "--cpus",
            "2",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("already exists"),
            "kvmroll host add {host}: {err}"
        );
        self.ok(&[
            "attr",
            "set",
            "--appliance",
            "hosted-vm",
            "cpu_mode",
            GUEST_CPU_MODE,
        ]);
        self.ok(&["attr", "set", "--global", "kvm_graphics", "none"]);
        host
    }
}

/// A rig of the server, with the role `admin` owning a database `kvmroll`,
/// and one node, node-a, with this build's static hook installed.
pub fn one_node_rig(admin: &rig::Role) -> rig::Rig {
    let hook = static_hook();
    rig::Rig::builder()
        .postgres(
            rig::Postgres::builder()
                .role(admin.clone())
                .database("kvmroll", &admin.name),
        )
        .node("node-a", move |n| n.install_hook(&hook))
        .start()
        .unwrap_or_else(|e| panic!("the rig did not start: {}", rig::chain(&e)))
}

/// A rig made a one-container cluster: the frontend's `kvmroll` on the rig
/// server's database `kvmroll` over TCP as `admin`, which makes the
/// database and grants the containers' role `container` (its password);
/// and `node`'s `/etc/kvmroll/kvmroll.conf` reaching that database as that
/// role on the bound socket, naming this build's `kvmroll`. Returns the
/// frontend's `kvmroll`.
pub fn rig_cluster(
    rig: &rig::Rig,
    admin: &rig::Role,
    container: &rig::Role,
    node: &str,
) -> Kvmroll {
    use kvmroll_core::location::Location;
    use kvmroll_core::pg::{PgEnv, PgStore};
    let url = rig.pg.url_tcp(admin, "kvmroll");
    let k = Kvmroll::new(&url);
    k.ok(&["db", "init"]);
    let Ok(Location::Postgres(loc)) = Location::parse(&url, Path::new("/")) else {
        panic!("the rig's URL is not PostgreSQL's: {url}")
    };
    PgStore::open(
        &loc,
        kvmroll_core::OpenMode::ReadWrite,
        &PgEnv::from_process(),
    )
    .and_then(|mut pg| pg.grant_container_role(&container.name, Some(&container.password)))
    .unwrap_or_else(|e| panic!("the containers' role: {}", error_chain(&e)));
    node_conf(rig, container, node);
    k
}

/// `node`'s `/etc/kvmroll/kvmroll.conf`: the rig server's database
/// `kvmroll` as the containers' role `container`, on the bound socket,
/// and this build's `kvmroll`.
pub fn node_conf(rig: &rig::Rig, container: &rig::Role, node: &str) {
    let in_node = rig
        .pg
        .url_socket_in(rig::NODE_PG_SOCKET, container, "kvmroll");
    rig.node(node)
        .write(
            "/etc/kvmroll/kvmroll.conf",
            format!(
                "db = {in_node}\nhost = {node}\nkvmroll = {}\n",
                bin_dir().join("kvmroll").display()
            ),
            0o644,
        )
        .unwrap_or_else(|e| panic!("{node}'s kvmroll.conf: {}", rig::chain(&e)));
}

/// A rig test's VM: destroyed and undefined on every node of the rig, and
/// removed from the database, when dropped.
#[derive(Debug)]
pub struct RigVm<'r> {
    pub name: String,
    rig: &'r rig::Rig,
    k: &'r Kvmroll,
}

impl<'r> RigVm<'r> {
    pub fn new(rig: &'r rig::Rig, k: &'r Kvmroll, name: String) -> RigVm<'r> {
        RigVm { name, rig, k }
    }
}

impl Drop for RigVm<'_> {
    fn drop(&mut self) {
        for node in self.rig.nodes() {
            let _ = node.virsh(&["destroy", &self.name]);
            let _ = node.virsh(&["undefine", &self.name, "--managed-save"]);
        }
        let _ = self.k.run(&["--no-sync", "vm", "remove", &self.name]);
    }
}

/// The lines of the file `log` inside `node` that end with ` VM`, without
/// that ending: what a logging plugin wrote of `vm`.
pub fn lines_about(node: &rig::Node, log: &str, vm: &str) -> Vec<String> {
    std::fs::read_to_string(node.outside(log))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_suffix(&format!(" {vm}")))
        .map(str::to_string)
        .collect()
}

/// Fills the RAM of the guest `vm` running on `node`, `mib` MiB, but its
/// lowest 8 MiB and highest 16 MiB (the firmware's), with a byte other than
/// zero: QEMU's migration sends every page in full but a zero page. It
/// writes the largest writable anonymous mapping of the guest's QEMU
/// through /proc/PID/mem (root). A constant byte, not random ones: random
/// bytes there stopped these guests (paused, reason unknown), so the
/// firmware runs something in that range.
pub fn fill_guest_memory(node: &rig::Node, vm: &str, mib: u32) {
    use std::io::{Seek, SeekFrom, Write};
    let pid = node.qemus()[vm][0].0;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("QEMU's maps");
    let (start, len) = maps
        .lines()
        .filter(|l| l.split_whitespace().count() == 5 && l.contains(" rw"))
        .filter_map(|l| {
            let (lo, hi) = l.split_whitespace().next()?.split_once('-')?;
            let lo = u64::from_str_radix(lo, 16).ok()?;
            Some((lo, u64::from_str_radix(hi, 16).ok()? - lo))
        })
        .max_by_key(|(_, len)| *len)
        .expect("an anonymous mapping");
    assert!(
        len >= u64::from(mib) << 20,
        "the largest mapping is {len} bytes"
    );
    let mut mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .expect("QEMU's memory");
    mem.seek(SeekFrom::Start(start + (8 << 20))).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..(u64::from(mib).saturating_sub(24)) {
        mem.write_all(&chunk)
            .expect("a write into the guest's memory");
    }
}

/// A migration transport, for the benchmarks that time kvmroll's against
/// plain `virsh migrate` with the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Over the libvirtds' connection (`--p2p --tunnelled`).
    Tunnelled,
    /// QEMU's own stream over the rig's network ([`rig::RigBuilder::network`]).
    Native,
}

impl Transport {
    /// The value of `kvm_migrate_transport` that picks it.
    pub fn attr(self) -> &'static str {
        match self {
            Transport::Tunnelled => "tunnelled",
            Transport::Native => "native",
        }
    }

    /// `virsh migrate --live --p2p --persistent --undefinesource` of `vm`
    /// from `from` to `to` this way: `--tunnelled`, or `--migrateuri
    /// tcp://ADDRESS` with `to`'s address on the rig's network (as kvmroll
    /// with the destination's `kvm_migrate_address`).
    pub fn virsh_migrate(self, from: &rig::Node, to: &rig::Node, vm: &str) -> Output {
        let uri = to.libvirt_uri();
        let mut args = vec![
            "migrate",
            "--live",
            "--p2p",
            "--persistent",
            "--undefinesource",
        ];
        let stream;
        match self {
            Transport::Tunnelled => args.push("--tunnelled"),
            Transport::Native => {
                let address = to.address().expect("a rig with a network");
                stream = format!("tcp://{address}");
                args.extend(["--migrateuri", &stream]);
            }
        }
        args.extend([vm, &uri]);
        from.virsh(&args)
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.attr())
    }
}

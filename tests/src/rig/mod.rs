//! The cluster test rig: a frontend's PostgreSQL and VM containers (nodes),
//! each a real libvirtd in its own namespaces, all on this machine and all
//! started by the test: PostgreSQL by its own initdb and pg_ctl, no
//! systemd; each node's daemons under `unshare` with private mounts of the
//! libvirt folders, entered with `nsenter` (the recipes measured on these
//! machines; tests/README.md, "The cluster rig").
//!
//! - [`Postgres`]: a private server (a free port on 127.0.0.1 and a socket
//!   folder), its roles and databases, `stop`/`start` for an outage.
//! - [`Node`]: one virtlogd and one libvirtd with the node's own host name,
//!   `/etc/libvirt` (hook), `/etc/kvmroll`, `/var/lib/kvmroll`; reached from
//!   the machine at [`NodeFiles::libvirt_uri`], entered with [`Node::exec`].
//! - [`Rig`]: one server and named nodes, each node with the server's socket
//!   folder at [`NODE_PG_SOCKET`], started in parallel; [`Rig::shared`] keeps
//!   one per test binary.
//! - A network, where [`RigBuilder::network`] asks for one: a bridge in a
//!   namespace of the rig's own and a veth pair to each node, each node
//!   with an address on [`SUBNET`] ([`Node::address`]), for what libvirt's
//!   connection does not carry (a native migration's stream).
//!
//! Nothing outlives the test process: see [`sandbox`] for how, and
//! [`Footprint`] to check it.
//!
//! ```no_run
//! use kvmroll_tests::rig::{self, Postgres, Rig, Role, NODE_PG_SOCKET};
//!
//! let admin = Role::login("kvmroll", "secret").with("CREATEROLE");
//! let rig = Rig::builder()
//!     .postgres(Postgres::builder().role(admin.clone()).database("kvmroll", "kvmroll"))
//!     .node("node-a", |n| {
//!         // Before the daemons start: libvirtd reads its hooks only then.
//!         n.install_hook(&kvmroll_tests::static_hook())?;
//!         n.write("/etc/kvmroll/kvmroll.conf", "db = ...\n", 0o644)?;
//!         n.private_dir("/var/lib/kvmroll/disks").map(drop)
//!     })
//!     .node("node-b", |_| Ok(()))
//!     .start()
//!     .unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
//! let a = rig.node("node-a");
//! let url = rig.pg.url_socket_in(NODE_PG_SOCKET, &admin, "kvmroll");
//! let status = a
//!     .command(kvmroll_tests::bin_dir().join("kvmroll-guests"))
//!     .arg("status")
//!     .env("KVMROLL_DB", &url)
//!     .output();
//! ```

mod footprint;
mod network;
mod node;
mod postgres;
pub mod sandbox;

pub use footprint::Footprint;
pub use network::SUBNET;
pub use node::{Node, NodeBuilder, NodeFiles, NODE_PG_SOCKET};
pub use postgres::{Postgres, PostgresBuilder, Role, StopMode};

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Why a part of the rig could not be made or run.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what} ended while starting: {log}")]
    Ended { what: String, log: String },
    #[error("{what} did not answer within 30 s: {log}")]
    NotUp { what: String, log: String },
    #[error("bad {what} '{value}': {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(
        "node {node}: {} is missing on this machine and no parent of it but / exists: \
         choose a path under one of the node's private folders (/var/lib/kvmroll, ...)",
        target.display()
    )]
    MountPoint { node: String, target: PathBuf },
    #[error("{0} is missing (scripts/deps.sh installs it)")]
    Missing(String),
}

/// A frontend's PostgreSQL and named nodes; everything ends when it is
/// dropped, or with the test process.
#[derive(Debug)]
pub struct Rig {
    pub pg: Postgres,
    nodes: Vec<Node>,
    network: Option<network::Network>,
}

type NodeSetup = Box<dyn FnOnce(&mut NodeBuilder) -> Result<(), RigError> + Send>;

/// What a [`Rig`] holds.
pub struct RigBuilder {
    pg: PostgresBuilder,
    nodes: Vec<(String, NodeSetup)>,
    network: bool,
}

impl std::fmt::Debug for RigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RigBuilder")
            .field("pg", &self.pg)
            .field(
                "nodes",
                &self.nodes.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("network", &self.network)
            .finish()
    }
}

impl RigBuilder {
    /// The server's roles, databases and settings.
    pub fn postgres(mut self, pg: PostgresBuilder) -> Self {
        self.pg = pg;
        self
    }

    /// A node; `setup` puts its hook, configuration and plugins in place
    /// (or makes private folders) before its daemons start.
    pub fn node(
        mut self,
        name: &str,
        setup: impl FnOnce(&mut NodeBuilder) -> Result<(), RigError> + Send + 'static,
    ) -> Self {
        self.nodes.push((name.into(), Box::new(setup)));
        self
    }

    /// Links the nodes by a network of the rig's own (a bridge in a
    /// namespace of its own, a veth pair to each node; see [`SUBNET`]), so
    /// that a node's QEMU reaches another's ([`Node::address`]). Off by
    /// default: a node then has its loopback only.
    pub fn network(mut self) -> Self {
        self.network = true;
        self
    }

    /// Starts the server and the nodes, in parallel.
    pub fn start(self) -> Result<Rig, RigError> {
        let mut pg = self.pg.create()?;
        let mut builders = Vec::new();
        for (name, setup) in self.nodes {
            let mut b = NodeBuilder::new(&name)?;
            b.postgres(&pg)?;
            setup(&mut b)?;
            builders.push(b);
        }
        let pg_builder = &self.pg;
        let (pg_started, nodes) = std::thread::scope(|s| {
            let pg_started = s.spawn(|| pg_builder.launch(&mut pg));
            let nodes: Vec<_> = builders
                .into_iter()
                .map(|b| s.spawn(move || b.start()))
                .collect();
            let nodes: Vec<_> = nodes
                .into_iter()
                .map(|h| h.join().expect("node start panicked"))
                .collect();
            (pg_started.join().expect("postgres start panicked"), nodes)
        });
        pg_started?;
        let mut nodes = nodes.into_iter().collect::<Result<Vec<_>, _>>()?;
        let network = if self.network {
            Some(network::Network::link(&mut nodes)?)
        } else {
            None
        };
        Ok(Rig { pg, nodes, network })
    }
}

impl Rig {
    /// A rig with a server holding nothing and no node yet.
    pub fn builder() -> RigBuilder {
        RigBuilder {
            pg: PostgresBuilder::default(),
            nodes: Vec::new(),
            network: false,
        }
    }

    /// The rig of this test binary, built by `build` at first use and then
    /// shared by its tests (threads); give each test its own database
    /// ([`Postgres::fresh_database`]) and VM names ([`crate::prefix`]). A
    /// static is never dropped: the rig ends with the test process, as a
    /// killed one does (the lifelines close, the watchers remove the
    /// folders).
    pub fn shared(
        cell: &'static OnceLock<Rig>,
        build: impl FnOnce() -> RigBuilder,
    ) -> &'static Rig {
        cell.get_or_init(|| {
            build()
                .start()
                .unwrap_or_else(|e| panic!("the shared test rig: {}", chain(&e)))
        })
    }

    /// The node named `name`; panics when there is none.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("the rig has no node {name}"))
    }

    /// The node named `name`, to stop it; panics when there is none.
    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("the rig has no node {name}"))
    }

    /// Every node, in the order given.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The server's, the nodes' and the network's footprints.
    pub fn footprints(&self) -> Vec<Footprint> {
        std::iter::once(self.pg.footprint())
            .chain(self.nodes.iter().map(Node::footprint))
            .chain(self.network.as_ref().map(network::Network::footprint))
            .collect()
    }
}

/// An error and its sources, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// PostgreSQL's newest installed server bin folder
/// (`/usr/lib/postgresql/N/bin`), if any.
pub fn pg_bin_dir() -> Option<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    versions
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// What this machine lacks to run the rig; empty when it can.
pub fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    if !std::path::Path::new("/dev/kvm").exists() {
        missing.push("/dev/kvm".to_string());
    }
    let tools = [
        "unshare",
        "nsenter",
        "setpriv",
        "ip",
        "virsh",
        "libvirtd",
        "virtlogd",
        "qemu-system-x86_64",
    ];
    let path = std::env::var("PATH").unwrap_or_default();
    for tool in tools {
        let found = path
            .split(':')
            .chain(["/usr/sbin", "/sbin"])
            .any(|dir| std::path::Path::new(dir).join(tool).exists());
        if !found {
            missing.push(tool.to_string());
        }
    }
    if pg_bin_dir().is_none() {
        missing.push("a PostgreSQL server (/usr/lib/postgresql/N/bin)".to_string());
    }
    if nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .is_none()
    {
        missing.push("the user postgres".to_string());
    }
    missing
}

/// Whether the rig can run here. Where the suite must run end to end
/// (`KVMROLL_E2E=1`), a missing piece is a failure, not a skip.
pub fn available(test: &str) -> bool {
    let missing = missing();
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(", ");
    assert!(
        std::env::var_os("KVMROLL_E2E").is_none(),
        "{test}: KVMROLL_E2E is set but the cluster rig needs {missing} (scripts/deps.sh)"
    );
    eprintln!("{test}: skipped: the cluster rig needs {missing}");
    false
}

/// A server for a benchmark, its data on disk and synced as a frontend's
/// ([`PostgresBuilder::durable`]), with a database `kvmroll` owned by a
/// login role `kvmroll`, and that database's URL over TCP; `None`, said on
/// stdout, where this machine cannot run one (root and a PostgreSQL server
/// are needed).
pub fn bench_server(what: &str) -> Option<(Postgres, String)> {
    if !nix::unistd::geteuid().is_root() || pg_bin_dir().is_none() {
        println!("{what} skipped: it needs root and a PostgreSQL server (scripts/deps.sh)");
        return None;
    }
    let role = Role::login("kvmroll", "bench pass");
    let pg = Postgres::builder()
        .role(role.clone())
        .database("kvmroll", "kvmroll")
        .durable()
        .start()
        .unwrap_or_else(|e| panic!("PostgreSQL: {}", chain(&e)));
    let url = pg.url_tcp(&role, "kvmroll");
    Some((pg, url))
}

/// Makes an I/O error into [`RigError::Io`] about `path`.
pub(crate) fn io(
    what: &'static str,
    path: impl AsRef<std::path::Path>,
) -> impl FnOnce(std::io::Error) -> RigError {
    let path = path.as_ref().to_path_buf();
    move |source| RigError::Io { what, path, source }
}

/// Runs `cmd` with no input; its output, or an error with its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, RigError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RigError::Spawn {
            program: describe(cmd),
            source,
        })?;
    checked(cmd, out)
}

/// Runs `cmd` with `input` on its stdin.
pub(crate) fn run_with_input(cmd: &mut Command, input: &str) -> Result<Output, RigError> {
    let spawned = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = spawned.map_err(|source| RigError::Spawn {
        program: describe(cmd),
        source,
    })?;
    // A command that fails early closes its stdin: its stderr says why.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes());
    let out = child.wait_with_output().map_err(|source| RigError::Spawn {
        program: describe(cmd),
        source,
    })?;
    checked(cmd, out)
}

fn checked(cmd: &Command, out: Output) -> Result<Output, RigError> {
    if out.status.success() {
        return Ok(out);
    }
    Err(RigError::Command {
        command: describe(cmd),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

//! A libvirt in memory, for the tests of the code that drives one (cargo
//! feature `fake`; the binaries take it as a dev-dependency).
//!
//! Modelled on youki's system-call trait and its test implementation
//! (`crates/libcontainer/src/syscall/test.rs`): the real and the fake
//! backends answer the same trait, the fake keeps what it was asked, in
//! order, for a test to assert, and it can be told to fail. Here a domain
//! can be scripted to fail its save, to hang in it until the job is aborted,
//! to "lose" it (success said, no image left), to ignore a shutdown request,
//! to fail a destroy or a restore, to have its start refused by the hook,
//! to have a migration refused by the destination's hook, fail, or hang
//! until its job is aborted; and connections can be refused, or hang, to
//! one URI or all.
//!
//! One [`FakeLibvirt`] is one host, whatever URI reaches it. [`FakeHosts`]
//! is several, one per URI, sharing one world: a migration moves a domain
//! from one to another, and each host tells its own CPUs and free memory.
//!
//! Its errors carry a `virt::error::Error` made without libvirt (the only
//! constructor the `virt` crate offers without a call into libvirt), so
//! [`VirtError::is_no_domain`] is false for them: code that needs it is
//! tested against libvirt's `test:///default` driver instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod connection;

use crate::{Connector, DomainState, Hypervisor, NodeResources, VirtError};
use connection::Connection;

/// How long a hanging save waits for its `abort_job` at most, so that a
/// test whose code never aborts fails instead of hanging.
pub const HANG_CAP: Duration = Duration::from_secs(10);

/// A fault scripted on one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Reading its state fails (`domain`, and `list_domains` leaves it out).
    Inspect,
    /// A save fails (once it has taken its time); the domain keeps running.
    SaveFails,
    /// A save runs until its job is aborted (then fails, the domain still
    /// running) or [`HANG_CAP`] passes.
    SaveHangs,
    /// A save says it succeeded and the domain is off, but no image is left.
    SaveLost,
    /// A shutdown request is accepted and ignored: the guest runs on.
    ShutdownIgnored,
    /// A destroy fails; the domain keeps running.
    DestroyFails,
    /// An abort of its job is accepted and has no effect: the save runs its
    /// course (a save stuck in I/O, say).
    AbortIgnored,
    /// A start from a managed-save image fails (libvirt keeps the image).
    RestoreFails,
    /// Every start fails, restore, boot and force-boot alike.
    StartFails,
    /// Defining a domain of this name fails.
    DefineFails,
    /// A migration is refused by the destination's hook (its allocate
    /// plugins): the domain keeps running where it was.
    MigrateRefused,
    /// A migration fails; the domain keeps running where it was.
    MigrateFails,
    /// A migration runs until its job is aborted (then fails, the domain
    /// still running where it was) or [`HANG_CAP`] passes.
    MigrateHangs,
}

/// One call a [`FakeLibvirt`] was asked, as a test reads it. State queries
/// (`domain`, `xml`, `job_progress`) are polled, so they are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Connect(String),
    List,
    Define(String),
    Undefine(String),
    Start(String),
    StartForceBoot(String),
    Shutdown(String),
    Destroy(String),
    ManagedSave {
        name: String,
        bypass_cache: bool,
    },
    ManagedSaveRemove(String),
    AbortJob(String),
    ChangeMedia(String),
    GrowDisk {
        name: String,
        dev: String,
        bytes: u64,
    },
    DeleteImage(String),
    Migrate {
        name: String,
        to: String,
    },
}

impl std::fmt::Display for Call {
    /// A short line, e.g. `save vm1`, `shutdown vm2`, `connect test:///x`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::Connect(uri) => write!(f, "connect {uri}"),
            Call::List => write!(f, "list"),
            Call::Define(n) => write!(f, "define {n}"),
            Call::Undefine(n) => write!(f, "undefine {n}"),
            Call::Start(n) => write!(f, "start {n}"),
            Call::StartForceBoot(n) => write!(f, "force-boot {n}"),
            Call::Shutdown(n) => write!(f, "shutdown {n}"),
            Call::Destroy(n) => write!(f, "destroy {n}"),
            Call::ManagedSave { name, bypass_cache } => {
                write!(f, "save {name}")?;
                if *bypass_cache {
                    write!(f, " bypass-cache")?;
                }
                Ok(())
            }
            Call::ManagedSaveRemove(n) => write!(f, "remove-save {n}"),
            Call::AbortJob(n) => write!(f, "abort {n}"),
            Call::ChangeMedia(n) => write!(f, "change-media {n}"),
            Call::GrowDisk { name, dev, bytes } => write!(f, "grow {name} {dev} {bytes}"),
            Call::DeleteImage(p) => write!(f, "delete {p}"),
            Call::Migrate { name, to } => write!(f, "migrate {name} {to}"),
        }
    }
}

/// One domain of the fake.
#[derive(Debug, Clone)]
struct Domain {
    xml: String,
    state: DomainState,
    managed_save: bool,
    faults: BTreeSet<Fault>,
    /// How long a save of it takes.
    save_takes: Duration,
    /// A job (a save) runs; set back to false by `abort_job`.
    job: bool,
    aborted: bool,
    /// A save begun by a client gone since, which libvirtd finishes then.
    orphan_save_ends: Option<Instant>,
    /// How long the guest takes to power off when asked.
    shutdown_takes: Duration,
    /// When a guest asked to shut down powers off.
    powers_off_at: Option<Instant>,
    /// What the qemu hook says when it refuses each start.
    hook_refuses: Option<String>,
    /// The drive element of the last live medium change.
    live_media: Option<String>,
}

/// Everything the fake holds, behind one lock.
#[derive(Default)]
struct World {
    domains: BTreeMap<String, Domain>,
    calls: Vec<Call>,
    /// Told of each call as it is made (see [`FakeLibvirt::on_call`]).
    on_call: Option<Box<OnCall>>,
    connects: usize,
    refuse_connects_from: Option<usize>,
    /// URIs whose connections fail at once.
    unreachable: BTreeSet<String>,
    /// URIs whose connections hang this long, then fail.
    hanging: BTreeMap<String, Duration>,
    save_dir: Option<PathBuf>,
    saves_now: usize,
    most_saves_at_once: usize,
    images: BTreeSet<String>,
    disks: BTreeMap<(String, String), u64>,
    /// What `node` answers; `None`: 64 CPUs and 64 GiB free.
    node: Option<NodeResources>,
}

/// What [`FakeLibvirt::on_call`] takes.
type OnCall = dyn Fn(&Call) + Send + Sync;

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("domains", &self.domains)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl World {
    /// Keeps a call, after telling the test's observer of it.
    fn record(&mut self, call: Call) {
        if let Some(tell) = &self.on_call {
            tell(&call);
        }
        self.calls.push(call);
    }

    /// Ends the orphaned saves whose time has come, as libvirtd would have.
    fn settle(&mut self) {
        let now = Instant::now();
        let dir = self.save_dir.clone();
        for (name, d) in &mut self.domains {
            if d.orphan_save_ends.is_some_and(|t| now >= t) {
                d.orphan_save_ends = None;
                d.job = false;
                d.state = DomainState::ShutOff;
                d.managed_save = true;
                write_image(dir.as_deref(), name, &d.xml);
            }
            if d.powers_off_at.is_some_and(|t| now >= t) {
                d.powers_off_at = None;
                d.state = DomainState::ShutOff;
            }
        }
    }
}

/// A libvirt in memory: a [`Connector`] whose connections all see the same
/// domains, as a daemon's do. Clones share it, so a test keeps one to
/// script faults and read what was asked.
#[derive(Debug, Clone, Default)]
pub struct FakeLibvirt {
    world: Arc<(Mutex<World>, Condvar)>,
}

impl FakeLibvirt {
    pub fn new() -> FakeLibvirt {
        FakeLibvirt::default()
    }

    fn world(&self) -> MutexGuard<'_, World> {
        let mut w = self.world.0.lock().unwrap_or_else(|e| e.into_inner());
        w.settle();
        w
    }

    fn with_domain(&self, name: &str, f: impl FnOnce(&mut Domain)) -> &FakeLibvirt {
        let mut w = self.world();
        f(w.domains.get_mut(name).expect("a domain added to the fake"));
        self
    }

    /// Writes managed-save images into `dir` (under a test's root, where
    /// libvirt's QEMU driver keeps them: `var/lib/libvirt/qemu/save`), as
    /// `NAME.save` with a complete header, and removes them as libvirt does.
    pub fn save_images_in(&self, dir: &Path) -> &FakeLibvirt {
        self.world().save_dir = Some(dir.to_path_buf());
        self
    }

    /// Defines a domain in `state` with a minimal definition.
    pub fn add(&self, name: &str, state: DomainState) -> &FakeLibvirt {
        let xml = format!("<domain type='kvm'><name>{name}</name></domain>");
        self.add_xml(name, &xml, state)
    }

    /// Defines a domain with the definition `xml`, in `state`.
    pub fn add_xml(&self, name: &str, xml: &str, state: DomainState) -> &FakeLibvirt {
        self.world().domains.insert(
            name.to_owned(),
            Domain {
                xml: xml.to_owned(),
                state,
                managed_save: false,
                faults: BTreeSet::new(),
                save_takes: Duration::ZERO,
                job: false,
                aborted: false,
                orphan_save_ends: None,
                shutdown_takes: Duration::ZERO,
                powers_off_at: None,
                hook_refuses: None,
                live_media: None,
            },
        );
        self
    }

    /// Scripts a fault on a domain.
    pub fn fault(&self, name: &str, fault: Fault) -> &FakeLibvirt {
        self.with_domain(name, |d| {
            d.faults.insert(fault);
        })
    }

    /// Makes each save of `name` take `how_long`.
    pub fn save_takes(&self, name: &str, how_long: Duration) -> &FakeLibvirt {
        self.with_domain(name, |d| d.save_takes = how_long)
    }

    /// Makes the guest `name` take `how_long` to power off when asked.
    pub fn shutdown_takes(&self, name: &str, how_long: Duration) -> &FakeLibvirt {
        self.with_domain(name, |d| d.shutdown_takes = how_long)
    }

    /// Gives a shut-off domain a managed-save image (written when images
    /// are), as a completed save leaves.
    pub fn give_managed_save(&self, name: &str) -> &FakeLibvirt {
        let mut w = self.world();
        let dir = w.save_dir.clone();
        let d = w.domains.get_mut(name).expect("a domain added to the fake");
        d.managed_save = true;
        write_image(dir.as_deref(), name, &d.xml);
        self
    }

    /// A save of `name` begun by a client that is gone (a stop killed
    /// mid-save): the domain is paused for it, and libvirtd finishes it
    /// after `ends_in`, leaving the domain off with its image.
    pub fn orphan_save(&self, name: &str, ends_in: Duration) -> &FakeLibvirt {
        self.with_domain(name, |d| {
            d.state = DomainState::Paused;
            d.job = true;
            d.orphan_save_ends = Some(Instant::now() + ends_in);
        })
    }

    /// Refuses every connection from the `n`th on (0: all of them).
    pub fn refuse_connects_from(&self, n: usize) -> &FakeLibvirt {
        self.world().refuse_connects_from = Some(n);
        self
    }

    /// Makes every connection to `uri` fail at once, as to a socket that
    /// does not exist.
    pub fn unreachable(&self, uri: &str) -> &FakeLibvirt {
        self.world().unreachable.insert(uri.to_owned());
        self
    }

    /// Makes every connection to `uri` hang for `how_long` (at most
    /// [`HANG_CAP`]) and then fail, as to a libvirtd that accepts and never
    /// answers.
    pub fn connect_hangs(&self, uri: &str, how_long: Duration) -> &FakeLibvirt {
        self.world()
            .hanging
            .insert(uri.to_owned(), how_long.min(HANG_CAP));
        self
    }

    /// Makes each start of `name` refused by the qemu hook, which says `said`.
    pub fn hook_refuses(&self, name: &str, said: &str) -> &FakeLibvirt {
        self.with_domain(name, |d| d.hook_refuses = Some(said.to_owned()))
    }

    /// The drive element of the last live medium change of `name`.
    pub fn live_media(&self, name: &str) -> Option<String> {
        self.world()
            .domains
            .get(name)
            .and_then(|d| d.live_media.clone())
    }

    /// Makes an image file known to the storage driver, for `delete_image`.
    pub fn add_image(&self, path: &str) -> &FakeLibvirt {
        self.world().images.insert(path.to_owned());
        self
    }

    /// Calls `tell` with each call as it is made, before it acts: a test
    /// reads there what the code under test had done by then (its files,
    /// say). `tell` must not call the fake.
    pub fn on_call(&self, tell: impl Fn(&Call) + Send + Sync + 'static) -> &FakeLibvirt {
        self.world().on_call = Some(Box::new(tell));
        self
    }

    /// Every call asked so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.world().calls.clone()
    }

    /// [`FakeLibvirt::calls`] as short lines (`save vm1`, `shutdown vm2`).
    pub fn said(&self) -> Vec<String> {
        self.calls().iter().map(ToString::to_string).collect()
    }

    /// A domain's state, `None` when it is not defined.
    pub fn state(&self, name: &str) -> Option<DomainState> {
        self.world().domains.get(name).map(|d| d.state.clone())
    }

    /// Whether a domain has a managed-save image.
    pub fn has_managed_save(&self, name: &str) -> bool {
        self.world()
            .domains
            .get(name)
            .is_some_and(|d| d.managed_save)
    }

    /// A domain's definition, `None` when it is not defined.
    pub fn xml_of(&self, name: &str) -> Option<String> {
        self.world().domains.get(name).map(|d| d.xml.clone())
    }

    /// Makes `node` answer `cpus` and `free_mib` MiB of free memory.
    pub fn node(&self, cpus: u32, free_mib: u64) -> &FakeLibvirt {
        self.world().node = Some(NodeResources {
            cpus,
            free_memory: free_mib << 20,
        });
        self
    }

    /// Whether `self` and `other` are the same host.
    fn same_host(&self, other: &FakeLibvirt) -> bool {
        Arc::ptr_eq(&self.world, &other.world)
    }

    /// A connection to this host, which reaches the hosts of `peers` when
    /// it migrates; refused, or hanging, as scripted.
    fn open(&self, uri: &str, peers: Option<FakeHosts>) -> Result<Box<dyn Hypervisor>, VirtError> {
        let mut w = self.world();
        w.record(Call::Connect(uri.to_owned()));
        let n = w.connects;
        w.connects += 1;
        if let Some(hang) = w.hanging.get(uri).copied() {
            // Outside the lock: other connections go on meanwhile.
            drop(w);
            std::thread::sleep(hang);
            w = self.world();
        }
        let refuse_all = w.refuse_connects_from.is_some_and(|from| n >= from);
        if refuse_all || w.unreachable.contains(uri) || w.hanging.contains_key(uri) {
            return Err(VirtError::Connect {
                uri: uri.to_owned(),
                source: refused(),
            });
        }
        Ok(Box::new(Connection {
            fake: self.clone(),
            peers,
        }))
    }

    /// The most saves that ran at the same time.
    pub fn most_saves_at_once(&self) -> usize {
        self.world().most_saves_at_once
    }
}

impl Connector for FakeLibvirt {
    fn connect(&self, uri: &str) -> Result<Box<dyn Hypervisor>, VirtError> {
        self.open(uri, None)
    }
}

/// Several fake hosts, one per URI, made on first use: a [`Connector`]
/// whose connections migrate domains between its hosts.
#[derive(Debug, Clone, Default)]
pub struct FakeHosts {
    hosts: Arc<Mutex<BTreeMap<String, FakeLibvirt>>>,
}

impl FakeHosts {
    pub fn new() -> FakeHosts {
        FakeHosts::default()
    }

    /// The host at `uri`, for a test to script and read.
    pub fn host(&self, uri: &str) -> FakeLibvirt {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.entry(uri.to_owned()).or_default().clone()
    }
}

impl Connector for FakeHosts {
    fn connect(&self, uri: &str) -> Result<Box<dyn Hypervisor>, VirtError> {
        self.host(uri).open(uri, Some(self.clone()))
    }
}

/// The error the fake's failures carry.
fn refused() -> virt::error::Error {
    let nul = std::ffi::CString::new("\0").expect_err("a NUL is refused");
    virt::error::Error::from(nul)
}

/// Writes a managed-save image of `name` into `dir`, with the header of
/// libvirt's QEMU driver (src/qemu/qemu_saveimage.c): the completed magic,
/// version 2, the XML's length, running, uncompressed, no cookie, 14
/// unused words; the XML; QEMU's stream magic and a few bytes.
fn write_image(dir: Option<&Path>, name: &str, xml: &str) {
    let Some(dir) = dir else { return };
    let mut bytes = b"LibvirtQemudSave".to_vec();
    let words = [2, xml.len() as u32, 1, 0, 0].into_iter().chain([0; 14]);
    bytes.extend(words.flat_map(u32::to_le_bytes));
    bytes.extend(xml.as_bytes());
    bytes.extend(b"QEVM\0\0\0\x03guest memory");
    std::fs::create_dir_all(dir).expect("the fake's save folder");
    std::fs::write(dir.join(format!("{name}.save")), bytes).expect("the fake's save image");
}

fn remove_image(dir: Option<&Path>, name: &str) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_file(dir.join(format!("{name}.save")));
    }
}

#[cfg(test)]
mod tests;

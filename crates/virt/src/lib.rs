//! The libvirt adapter: the only place in kvmroll that links libvirt.
//!
//! Everything else speaks to a hypervisor through the [`Hypervisor`] trait,
//! so that the hook (which must never call libvirt) cannot reach it by accident
//! and so that the rest of the code stays testable without a daemon.
//!
//! [`Libvirt`] is the real [`Connector`]: it opens a libvirt connection with the
//! `virt` crate. The adapter is tested against libvirt's built-in
//! `test:///default` driver, which needs no daemon. What that driver does and
//! does not support is noted on the methods it affects.
//!
//! With the cargo feature `fake`, [`fake::FakeLibvirt`] is a libvirt in
//! memory that can also fail, hang and lose a save: the binaries' unit tests
//! drive their decisions with it.

#[cfg(feature = "fake")]
pub mod fake;
mod libvirt;

pub use libvirt::Libvirt;

/// The state of a domain, as far as kvmroll cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainState {
    Running,
    Paused,
    ShutOff,
    /// Any other libvirt state, named as libvirt's API names it in lower case
    /// ("nostate", "blocked", "shutdown", "crashed", "pmsuspended"), or
    /// "unknown N" for a state this libvirt binding does not know.
    Other(String),
}

/// What kvmroll reads about one domain: only what it acts on, since the
/// save and shutdown loops ask for it every few hundred milliseconds and
/// each field is a call to libvirtd.
#[derive(Debug, Clone)]
pub struct DomainInfo {
    pub name: String,
    pub state: DomainState,
    pub has_managed_save: bool,
    /// Paused by libvirt for a save that is still being written: a save
    /// begun by a client that may be gone since (libvirtd finishes it).
    /// Unlike a job query, this state holds from the pause to the end.
    pub saving: bool,
}

/// How a migration's memory travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Over libvirt's own connection between the daemons
    /// (`VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_TUNNELLED`): the containers
    /// need no network between them beyond libvirt's.
    #[default]
    Tunnelled,
    /// Peer to peer, with QEMU's own migration stream to the destination
    /// (`VIR_MIGRATE_PEER2PEER`): faster, and needs the destination's QEMU
    /// reachable from the source.
    Native,
}

/// Where and how [`Hypervisor::migrate`] moves a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateTo {
    /// The destination's libvirt URI, as the source's libvirtd reaches it
    /// (the migration is peer to peer: the source daemon connects).
    pub uri: String,
    /// Whether the guest keeps running while its memory is copied
    /// (`VIR_MIGRATE_LIVE`); otherwise it is paused for the copy.
    pub live: bool,
    pub transport: Transport,
    /// Where the destination's QEMU listens for a [`Transport::Native`]
    /// stream (`tcp://ADDR`, `VIR_MIGRATE_PARAM_URI`); `None` leaves it to
    /// libvirt, which uses the destination's host name. A tunnelled
    /// migration has no such stream and ignores it.
    pub migrate_uri: Option<String>,
    /// The definition the domain gets on the destination, both live and
    /// persistent (`VIR_MIGRATE_PARAM_DEST_XML`, `..._PERSIST_XML`).
    pub xml: String,
}

/// What a host offers a VM that arrives: its CPUs and its free memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeResources {
    /// Active CPUs (`virNodeGetInfo`).
    pub cpus: u32,
    /// The memory a new guest can have, in bytes: free memory plus the
    /// buffers and page cache the kernel gives back
    /// (`virNodeGetMemoryStats`), or `virNodeGetFreeMemory` where those
    /// are not known.
    pub free_memory: u64,
}

/// What can fail when talking to libvirt: one variant per operation.
#[derive(Debug, thiserror::Error)]
pub enum VirtError {
    #[error("cannot connect to {uri}")]
    Connect {
        uri: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot list the domains of {uri}")]
    List {
        uri: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot look up domain {name}")]
    Lookup {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot read the state of domain {name}")]
    Inspect {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot define a domain on {uri}")]
    Define {
        uri: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot undefine domain {name}")]
    Undefine {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot get the xml of domain {name}")]
    Xml {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot start domain {name}")]
    Start {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    /// The start was refused by the qemu hook (kvmroll-hook: a plugin or
    /// a check): `said` is the hook's own line, as libvirt quotes its stderr.
    #[error("domain {name} did not start: {said}")]
    HookRefused { name: String, said: String },
    #[error("cannot force-boot domain {name}")]
    StartForceBoot {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot ask domain {name} to shut down")]
    Shutdown {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot destroy domain {name}")]
    Destroy {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot save domain {name}")]
    ManagedSave {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot remove the managed-save image of domain {name}")]
    ManagedSaveRemove {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot abort the job of domain {name}")]
    AbortJob {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot grow disk {dev} of domain {name}")]
    GrowDisk {
        name: String,
        dev: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot change the medium of domain {name} while it runs")]
    ChangeMedia {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot delete the image {path}")]
    DeleteImage {
        path: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot migrate domain {name} to {to}")]
    Migrate {
        name: String,
        to: String,
        #[source]
        source: virt::error::Error,
    },
    /// The migration was refused by the qemu hook of the destination (its
    /// allocate plugins or its checks): `said` is the hook's own line.
    #[error("the hook at {to} refused the migration of domain {name}: {said}")]
    MigrateRefused {
        name: String,
        to: String,
        said: String,
    },
    #[error("cannot read the CPUs and free memory of {uri}")]
    NodeInfo {
        uri: String,
        #[source]
        source: virt::error::Error,
    },
}

impl VirtError {
    /// The libvirt error behind this one, if it came from libvirt.
    pub fn libvirt_error(&self) -> Option<&virt::error::Error> {
        match self {
            Self::Connect { source, .. }
            | Self::List { source, .. }
            | Self::Lookup { source, .. }
            | Self::Inspect { source, .. }
            | Self::Define { source, .. }
            | Self::Undefine { source, .. }
            | Self::Xml { source, .. }
            | Self::Start { source, .. }
            | Self::StartForceBoot { source, .. }
            | Self::Shutdown { source, .. }
            | Self::Destroy { source, .. }
            | Self::ManagedSave { source, .. }
            | Self::ManagedSaveRemove { source, .. }
            | Self::AbortJob { source, .. }
            | Self::GrowDisk { source, .. }
            | Self::ChangeMedia { source, .. }
            | Self::DeleteImage { source, .. }
            | Self::Migrate { source, .. }
            | Self::NodeInfo { source, .. } => Some(source),
            Self::HookRefused { .. } | Self::MigrateRefused { .. } => None,
        }
    }

    /// Whether libvirt failed because the domain does not exist
    /// (`VIR_ERR_NO_DOMAIN`), e.g. to make an undefine idempotent.
    pub fn is_no_domain(&self) -> bool {
        self.libvirt_error().is_some_and(libvirt::is_no_domain)
    }
}

/// What kvmroll needs of one libvirt connection.
///
/// `Send` so that a connection can be handed to the thread that uses it;
/// libvirt connections are thread-safe and its last error is per thread.
pub trait Hypervisor: Send {
    /// The domain called `name`, or `None` when there is no such domain.
    fn domain(&self, name: &str) -> Result<Option<DomainInfo>, VirtError>;
    /// All domains, active and inactive.
    fn list_domains(&self) -> Result<Vec<DomainInfo>, VirtError>;
    /// Defines a persistent domain (`virDomainDefineXML`). An existing
    /// definition is replaced only when the XML carries the same name and the
    /// same UUID; libvirt refuses a known name with another (or no) UUID.
    fn define(&self, xml: &str) -> Result<(), VirtError>;
    /// Undefines the domain, removing its managed-save image and NVRAM too.
    /// A running domain stays running, as a transient domain.
    fn undefine(&self, name: &str) -> Result<(), VirtError>;
    /// The domain's XML; `inactive` asks for the persistent definition
    /// (`VIR_DOMAIN_XML_INACTIVE`) rather than the live one.
    fn xml(&self, name: &str, inactive: bool) -> Result<String, VirtError>;
    /// Starts the domain; libvirt restores it from its managed-save image
    /// when there is one. A refusal of the qemu hook (which runs kvmroll's
    /// allocate and preboot plugins) is [`VirtError::HookRefused`].
    fn start(&self, name: &str) -> Result<(), VirtError>;
    /// Discards any managed-save image and cold-boots the domain.
    fn start_force_boot(&self, name: &str) -> Result<(), VirtError>;
    /// Sends an ACPI shutdown request; the guest may ignore it.
    fn shutdown(&self, name: &str) -> Result<(), VirtError>;
    /// Stops the domain at once.
    fn destroy(&self, name: &str) -> Result<(), VirtError>;
    /// Saves the running domain's state to its managed-save image and stops it.
    fn managed_save(&self, name: &str) -> Result<(), VirtError>;
    /// Removes the domain's managed-save image; no error if it has none.
    fn managed_save_remove(&self, name: &str) -> Result<(), VirtError>;
    /// `managed_save` that writes around the host's page cache
    /// (`VIR_DOMAIN_SAVE_BYPASS_CACHE`): at host shutdown, gigabytes of images
    /// must reach the disk, not fill the cache; plain where the driver lacks it.
    fn managed_save_bypass_cache(&self, name: &str) -> Result<(), VirtError>;
    /// Aborts the domain's running job (a save that ran out of time).
    fn abort_job(&self, name: &str) -> Result<(), VirtError>;
    /// How far the domain's running job is: (bytes processed, bytes in all,
    /// 0 while libvirt does not know yet); `None` when no job runs.
    fn job_progress(&self, name: &str) -> Result<Option<(u64, u64)>, VirtError>;
    /// Grows disk `dev` (its target, e.g. `vda`) of the running domain to
    /// `bytes` while the guest runs (`virDomainBlockResize`), unless it is
    /// that large already: never shrinks. Returns the size it had.
    fn grow_disk(&self, name: &str, dev: &str, bytes: u64) -> Result<u64, VirtError>;
    /// Changes a removable medium of the running domain
    /// (`virDomainUpdateDeviceFlags` with `VIR_DOMAIN_AFFECT_LIVE`):
    /// `device_xml` is the drive's `<disk>` element with its new `<source>`,
    /// or none to eject. The persistent definition is not touched.
    /// libvirt's test driver lacks it.
    fn change_media(&self, name: &str, device_xml: &str) -> Result<(), VirtError>;
    /// Deletes the image file at `path` on the connection's host through
    /// libvirt's storage driver (`virStorageVolDelete`), from a pool that
    /// holds it or a transient one made for its folder; `false` when there
    /// is no such file.
    fn delete_image(&self, path: &str) -> Result<bool, VirtError>;
    /// Migrates the domain to another host, peer to peer
    /// (`virDomainMigrateToURI3`), with `to.xml` as its definition there;
    /// the destination keeps it persistent and the source's definition goes
    /// (`VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE`). Blocks
    /// until it ends: [`Hypervisor::job_progress`] and
    /// [`Hypervisor::abort_job`] on another connection follow and stop it.
    /// A refusal of the destination's qemu hook is
    /// [`VirtError::MigrateRefused`]. libvirt's test driver lacks it.
    fn migrate(&self, name: &str, to: &MigrateTo) -> Result<(), VirtError>;
    /// The host's CPUs and the memory a new guest can have.
    fn node(&self) -> Result<NodeResources, VirtError>;
}

/// Opens connections; a trait so callers can be handed one. `Sync`, so
/// that threads can open connections to several hosts at once.
pub trait Connector: Sync {
    fn connect(&self, uri: &str) -> Result<Box<dyn Hypervisor>, VirtError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_their_subject_and_not_their_source() {
        let err = VirtError::Start {
            name: "compute-0-0".into(),
            source: virt::error::Error::from(std::ffi::CString::new("a\0b").unwrap_err()),
        };
        assert_eq!(err.to_string(), "cannot start domain compute-0-0");
        assert!(std::error::Error::source(&err).is_some());
        assert!(!err.is_no_domain());
    }
}

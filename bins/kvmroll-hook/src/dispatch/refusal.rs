//! Why the hook refuses what libvirt is doing, and why a plugin failed:
//! one variant per cause, with the VM and what it is about. The message of
//! a refusal, with its sources, is the one line libvirt shows (main prints
//! it once) and the invocation's event; a plugin's failure is also its own
//! event, and the refusal of a stage that aborts.

use kvmroll_core::disks::{DiskError, ROOTS_ATTR};
use kvmroll_core::drift::DomainError;
use kvmroll_core::{RenderError, StoreError};
use std::path::PathBuf;

/// Why a start (or a restore, a migration) is refused. The large sources
/// are boxed: the hook's common path passes only `Ok`s along.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("VM {vm}: libvirt's domain XML on stdin is refused")]
    Stdin {
        vm: String,
        #[source]
        source: DomainError,
    },
    #[error("cannot look VM {vm} up in the kvmroll database")]
    LookUp {
        vm: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("VM {vm}: the start is refused: kvm_require_database is true and the kvmroll database is unreachable: {why}")]
    DatabaseRequired { vm: String, why: String },
    #[error("VM {vm}: {stage} stage refused: {} not run: {why}", path.display())]
    PluginRefused {
        vm: String,
        stage: String,
        path: PathBuf,
        why: String,
    },
    #[error("VM {vm}")]
    Plugin {
        vm: String,
        #[source]
        source: PluginFailure,
    },
    #[error("VM {vm}: cannot re-read it after allocate")]
    Reread {
        vm: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("VM {vm} was moved to container {container} by an allocate plugin; start it there")]
    Moved { vm: String, container: String },
    #[error("VM {vm} belongs on container {container}, not on this host ({host}); start it there")]
    Elsewhere {
        vm: String,
        container: String,
        host: String,
    },
    #[error("VM {vm} is not placed on any container in the kvmroll database")]
    Unplaced { vm: String },
    #[error("VM {vm}: cannot read its disks")]
    Disks {
        vm: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("VM {vm}: {ROOTS_ATTR} is refused: {why}")]
    Roots { vm: String, why: String },
    #[error("VM {vm}: disk {dev}")]
    Disk {
        vm: String,
        dev: String,
        #[source]
        source: Box<DiskError>,
    },
    #[error("VM {vm}: libvirt's definition differs from what kvmroll decided (generation {generation}): {diffs}; run `kvmroll vm define {vm}`")]
    DriftFromFacts {
        vm: String,
        generation: u64,
        diffs: String,
    },
    #[error("VM {vm}: libvirt's definition differs from the kvmroll database: {diffs}; run `kvmroll vm define {vm}`")]
    DriftFromDatabase { vm: String, diffs: String },
    #[error("VM {vm} cannot be rendered from the database")]
    Unrenderable {
        vm: String,
        #[source]
        source: Box<RenderError>,
    },
}

/// Why one plugin did not do its part.
#[derive(Debug, thiserror::Error)]
pub enum PluginFailure {
    #[error("the {stage} stage's limit of {limit}s ran out before plugin {plugin}; {not_run}")]
    OutOfTime {
        stage: String,
        limit: u64,
        plugin: String,
        not_run: String,
    },
    #[error("plugin {} could not be started", path.display())]
    NotStarted {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `rest`: "; N plugins did not run" where the budget it spent leaves
    /// others out, else empty.
    #[error("plugin {plugin} ran past the {stage} stage's limit of {limit}s and was killed{rest}")]
    TimedOut {
        plugin: String,
        stage: String,
        limit: u64,
        rest: String,
    },
    #[error("plugin {plugin} was killed by signal {signal}")]
    Signal { plugin: String, signal: i32 },
    #[error("plugin {plugin} failed with exit status {status}")]
    Status { plugin: String, status: i32 },
    #[error("plugin {plugin} failed: {said}")]
    Said { plugin: String, said: String },
    #[error("plugin {plugin} printed output that is not UTF-8 (invalid bytes at offset {offset})")]
    NotUtf8 { plugin: String, offset: usize },
    #[error("plugin {} printed XML that is refused", path.display())]
    Xml {
        path: PathBuf,
        #[source]
        source: DomainError,
    },
}

//! The names the shell completes from the database: VMs, hosts and
//! attributes, for clap_complete's dynamic completion (the shell runs
//! `COMPLETE=bash kvmroll -- WORDS...` and gets the candidates back).
//!
//! The database is the one `KVMROLL_DB` or kvmroll.conf names (a `--db`
//! being typed is not seen); a database that does not open completes
//! nothing, quietly, as a shell expects.

use clap_complete::engine::CompletionCandidate;
use kvmroll_core::{Cluster, OpenMode};

/// The cluster, if the database opens.
fn cluster() -> Option<Cluster> {
    let path = kvmroll_core::db_location(None).ok()?;
    let store = kvmroll_core::open_store(&path, OpenMode::ReadOnly).ok()?;
    store.snapshot().ok()
}

fn candidates(names: impl IntoIterator<Item = String>) -> Vec<CompletionCandidate> {
    names.into_iter().map(CompletionCandidate::new).collect()
}

/// Every VM's name.
pub fn vms() -> Vec<CompletionCandidate> {
    candidates(
        cluster()
            .map(|c| c.vms.into_keys().collect::<Vec<_>>())
            .unwrap_or_default(),
    )
}

/// Every host's name, VMs' own node rows included (their attributes are
/// set through them).
pub fn hosts() -> Vec<CompletionCandidate> {
    candidates(
        cluster()
            .map(|c| c.hosts.into_keys().collect::<Vec<_>>())
            .unwrap_or_default(),
    )
}

/// The attributes kvmroll reads (`kvm_device_0` for `kvm_device_N`) and
/// those the database holds at any scope, each with its description.
pub fn attributes() -> Vec<CompletionCandidate> {
    use kvmroll_core::attrs::known::KNOWN;
    let mut out: Vec<CompletionCandidate> = KNOWN
        .iter()
        .map(|k| {
            let name = k.name.replace("_N", "_0");
            CompletionCandidate::new(name).help(Some(k.description.into()))
        })
        .collect();
    let mut seen: std::collections::BTreeSet<String> =
        KNOWN.iter().map(|k| k.name.replace("_N", "_0")).collect();
    if let Some(c) = cluster() {
        for name in c.attrs.into_values().flat_map(|m| m.into_keys()) {
            if seen.insert(name.clone()) {
                out.push(CompletionCandidate::new(name));
            }
        }
    }
    out
}

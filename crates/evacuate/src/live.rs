//! The real [`Probe`] and [`Mover`]: the containers' libvirts through
//! kvmroll-virt's [`Connector`], and each move by the migration library's
//! [`Migrator`], so that an evacuated VM goes through the very checks,
//! plugins, database protocol and time limit of `kvmroll vm migrate`.

use crate::{MoveError, Mover, Probe};
use kvmroll_core::Cluster;
use kvmroll_migrate::{Migrator, Request};
use kvmroll_virt::{Connector, DomainState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Asks each container's libvirt, at its `libvirt_uri`.
pub struct LibvirtProbe {
    uris: BTreeMap<String, String>,
    connector: Arc<dyn Connector + Send>,
}

impl std::fmt::Debug for LibvirtProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtProbe")
            .field("uris", &self.uris)
            .finish_non_exhaustive()
    }
}

impl LibvirtProbe {
    /// Every host's libvirt URI as seen from `local_host` (this machine).
    pub fn new(
        cluster: &Cluster,
        local_host: &str,
        connector: Arc<dyn Connector + Send>,
    ) -> LibvirtProbe {
        let uris = cluster
            .hosts
            .keys()
            .map(|h| (h.clone(), cluster.libvirt_uri(h, local_host)))
            .collect();
        LibvirtProbe { uris, connector }
    }

    fn connect(&self, container: &str) -> Result<Box<dyn kvmroll_virt::Hypervisor>, MoveError> {
        let uri = self
            .uris
            .get(container)
            .ok_or_else(|| format!("{container} is not in the database"))?;
        Ok(self.connector.connect(uri)?)
    }
}

impl Probe for LibvirtProbe {
    fn running(&self, container: &str) -> Result<Vec<String>, MoveError> {
        let domains = self.connect(container)?.list_domains()?;
        Ok(domains
            .into_iter()
            .filter(|d| matches!(d.state, DomainState::Running | DomainState::Paused))
            .map(|d| d.name)
            .collect())
    }

    fn free_memory(&self, container: &str) -> Result<u64, MoveError> {
        Ok(self.connect(container)?.node()?.free_memory)
    }
}

/// A migration as `kvmroll vm migrate` runs it: an earlier one of the VM
/// that was interrupted is settled first (said in the log), then the
/// checks and the live run.
impl Mover for Migrator<'_> {
    fn migrate(&self, vm: &str, to: &str, limit: Duration) -> Result<(), MoveError> {
        if let Some(settled) = self.recover(vm)? {
            log::warn!("{settled}");
        }
        let request = Request {
            vm: vm.to_string(),
            to: to.to_string(),
            timeout: Some(limit),
        };
        let moved = Migrator::migrate(self, &request, &|_| {})?;
        for stale in &moved.stale {
            log::warn!("VM {stale}: its libvirt definition was not refreshed; it is marked stale");
        }
        Ok(())
    }
}

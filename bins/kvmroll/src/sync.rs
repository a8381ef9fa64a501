//! Keeping libvirt's definitions in step with the database.
//!
//! After a write, every VM whose rendered XML changed and that the libvirt of
//! its container already has is redefined there (the change takes effect at
//! its next power cycle). When the container cannot be reached the VM is
//! marked stale and the user is told plainly, so a definition never silently
//! differs from the database. Inside a hook stage (a plugin calling
//! `kvmroll`) libvirtd is waiting for the hook, so no call is made: the VM is
//! marked stale and the hook's refresh after `release end` picks it up.

use kvmroll_core::{Change, Plan, Store, StoreError};
use kvmroll_virt::{Connector, Hypervisor};
use std::collections::{BTreeSet, HashMap};

/// Whether and how definitions are refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Call libvirt now.
    Live,
    /// `--no-sync`: the user asked for the database only.
    Off,
    /// Inside a hook stage: mark stale, call nothing.
    Deferred,
}

/// Opens each container's libvirt at most once per command.
pub struct Syncer<'a> {
    connector: &'a dyn Connector,
    conns: HashMap<String, Result<Box<dyn Hypervisor>, String>>,
    pub mode: SyncMode,
}

impl std::fmt::Debug for Syncer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").field("mode", &self.mode).finish()
    }
}

/// A VM whose definition could not be brought in step.
#[derive(Debug)]
pub struct Missed {
    pub vm: String,
    pub container: String,
    pub reason: String,
}

impl<'a> Syncer<'a> {
    pub fn new(connector: &'a dyn Connector, mode: SyncMode) -> Syncer<'a> {
        Syncer {
            connector,
            conns: HashMap::new(),
            mode,
        }
    }

    /// The connection to a URI, opened on first use.
    pub fn conn(&mut self, uri: &str) -> Result<&dyn Hypervisor, String> {
        if !self.conns.contains_key(uri) {
            let opened = self.connector.connect(uri).map_err(|e| chain(&e));
            self.conns.insert(uri.to_string(), opened);
        }
        match self.conns.get(uri) {
            Some(Ok(c)) => Ok(c.as_ref()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("no connection to {uri}")),
        }
    }

    /// Redefines, where libvirt has them, the VMs whose XML the plan changed;
    /// returns those it could not reach.
    pub fn refresh(&mut self, plan: &Plan) -> Vec<Missed> {
        let mut missed = Vec::new();
        for (name, xml) in &plan.changed {
            let (Some(xml), Some(vm)) = (xml, plan.after.vms.get(name)) else {
                continue;
            };
            let Some(container) = vm.container.clone() else {
                continue;
            };
            if self.mode == SyncMode::Off {
                continue;
            }
            if self.mode == SyncMode::Deferred {
                missed.push(Missed {
                    vm: name.clone(),
                    container,
                    reason: "deferred: kvmroll runs inside a libvirt hook".into(),
                });
                continue;
            }
            let uri = plan.after.libvirt_uri(&container);
            let result = self.conn(&uri).and_then(|hv| match hv.domain(name) {
                Ok(None) => Ok(()),
                Ok(Some(_)) => hv.define(xml).map_err(|e| chain(&e)),
                Err(e) => Err(chain(&e)),
            });
            if let Err(reason) = result {
                missed.push(Missed {
                    vm: name.clone(),
                    container,
                    reason,
                });
            }
        }
        missed
    }
}

/// Marks VMs stale (or not) in the store.
pub fn mark_stale(
    store: &mut dyn Store,
    names: &BTreeSet<String>,
    stale: bool,
) -> Result<(), StoreError> {
    if names.is_empty() {
        return Ok(());
    }
    store.update(&mut |c| {
        Ok(names
            .iter()
            .filter_map(|n| c.vms.get(n))
            .filter(|vm| vm.stale != stale)
            .map(|vm| {
                let mut vm = vm.clone();
                vm.stale = stale;
                Change::SetVm(vm)
            })
            .collect())
    })?;
    Ok(())
}

pub use kvmroll_core::error_chain as chain;

//! An in-memory snapshot of the cluster database, attribute resolution, and
//! the changes that can be made to it, each checked against the snapshot.
//!
//! Every write goes through [`Cluster::plan`] ([`crate::plan`], above the
//! renderer): the changes are applied to a copy ([`Cluster::apply`], here),
//! checked, and the VMs they touch are rendered before and after, so a change
//! that would break a VM's definition is refused before it reaches the store,
//! and the caller learns which libvirt definitions must be refreshed.

mod apply;
mod error;
#[cfg(test)]
pub(crate) mod tests;

pub use error::{ClusterError, RenderError};

use crate::model::{parse_bool, Host, Mac, Scope, Vm};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The appliances every new database starts with.
pub const SEEDED_APPLIANCES: &[&str] = &["frontend", "compute", "vm-container", "hosted-vm"];

/// The appliance of a VM's own node row.
pub const VM_APPLIANCE: &str = "hosted-vm";

/// One change to the cluster. A write is a list of these, applied in one
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddAppliance(String),
    AddHost(Host),
    /// Replaces a host's row (not its name).
    SetHost(Host),
    RemoveHost(String),
    SetAttr {
        scope: Scope,
        name: String,
        value: String,
    },
    RemoveAttr {
        scope: Scope,
        name: String,
    },
    /// Adds the VM and its own node row (appliance hosted-vm).
    AddVm(Vm),
    /// Replaces a VM's row, disks and NICs (not its name or UUID).
    SetVm(Vm),
    RemoveVm(String),
}

/// The whole cluster, as read from the store in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cluster {
    pub appliances: BTreeSet<String>,
    pub hosts: BTreeMap<String, Host>,
    /// Attribute values by scope, then by name.
    pub attrs: BTreeMap<Scope, BTreeMap<String, String>>,
    pub vms: BTreeMap<String, Vm>,
}

/// A resolved attribute and the scope it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    pub name: String,
    pub value: String,
    pub scope: Scope,
}

impl Cluster {
    /// A new, empty cluster with the seeded appliances and Rocks' default of
    /// `kvm=true` on the vm-container appliance.
    pub fn seeded() -> Cluster {
        let mut c = Cluster::default();
        for a in SEEDED_APPLIANCES {
            c.appliances.insert(a.to_string());
        }
        c.attrs
            .entry(Scope::Appliance("vm-container".into()))
            .or_default()
            .insert("kvm".into(), "true".into());
        c
    }

    pub fn host(&self, name: &str) -> Result<&Host, ClusterError> {
        self.hosts
            .get(name)
            .ok_or_else(|| ClusterError::UnknownHost(name.to_string()))
    }

    pub fn vm(&self, name: &str) -> Result<&Vm, ClusterError> {
        self.vms
            .get(name)
            .ok_or_else(|| ClusterError::UnknownVm(name.to_string()))
    }

    /// The scopes that apply to a host, lowest precedence first.
    pub fn scopes_of(host: &Host) -> [Scope; 5] {
        [
            Scope::Global,
            Scope::Os(host.os.clone()),
            Scope::Appliance(host.appliance.clone()),
            Scope::Rack(host.rack),
            Scope::Host(host.name.clone()),
        ]
    }

    /// The resolved value of one attribute for a host.
    pub fn attr(&self, host: &Host, name: &str) -> Option<&str> {
        Self::scopes_of(host)
            .iter()
            .rev()
            .find_map(|s| self.attrs.get(s).and_then(|m| m.get(name)))
            .map(String::as_str)
    }

    /// A resolved attribute by host name; unknown hosts resolve nothing.
    pub fn attr_of(&self, host: &str, name: &str) -> Option<&str> {
        self.hosts.get(host).and_then(|h| self.attr(h, name))
    }

    /// Every resolved attribute of a host with its scope, by name.
    pub fn resolve(&self, host: &Host) -> BTreeMap<String, Resolved> {
        let mut out = BTreeMap::new();
        for scope in Self::scopes_of(host) {
            if let Some(map) = self.attrs.get(&scope) {
                for (name, value) in map {
                    out.insert(
                        name.clone(),
                        Resolved {
                            name: name.clone(),
                            value: value.clone(),
                            scope: scope.clone(),
                        },
                    );
                }
            }
        }
        out
    }

    /// The libvirt URI of a container: its `libvirt_uri` attribute (`{host}`
    /// replaced by its name), else `qemu:///system` when the container is
    /// this machine and `qemu+ssh://root@HOST/system` for any other.
    /// `local_host` is this machine's host name, as the binary read it
    /// ([`crate::sys::local_hostname`]); its short form counts too.
    pub fn libvirt_uri(&self, container: &str, local_host: &str) -> String {
        if let Some(uri) = self.attr_of(container, "libvirt_uri") {
            return uri.replace("{host}", container);
        }
        let short = local_host.split('.').next().unwrap_or_default();
        if container == "localhost" || container == local_host || container == short {
            "qemu:///system".to_string()
        } else {
            format!("qemu+ssh://root@{container}/system")
        }
    }

    /// Whether a host's resolved `kvm` is true.
    pub fn is_container(&self, host: &Host) -> bool {
        self.attr(host, "kvm").and_then(parse_bool) == Some(true)
    }

    /// The VMs placed on a container, oldest first.
    pub fn vms_on<'a>(&'a self, container: &'a str) -> impl Iterator<Item = &'a Vm> + 'a {
        let mut vms: Vec<&Vm> = self
            .vms
            .values()
            .filter(|v| v.container.as_deref() == Some(container))
            .collect();
        vms.sort_by_key(|v| v.id);
        vms.into_iter()
    }

    /// Whether any VM already has this MAC.
    pub fn mac_in_use(&self, mac: &Mac) -> bool {
        self.vms
            .values()
            .flat_map(|v| &v.nics)
            .any(|n| &n.mac == mac)
    }
}

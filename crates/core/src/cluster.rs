//! An in-memory snapshot of the cluster database, attribute resolution, and
//! the changes that can be made to it, each checked against the snapshot.
//!
//! Every write goes through [`Cluster::plan`]: the changes are applied to a copy,
//! checked, and the VMs they touch are rendered before and after, so a change
//! that would break a VM's definition is refused before it reaches the store,
//! and the caller learns which libvirt definitions must be refreshed.

use crate::attrs;
use crate::model::{check_name, parse_bool, Host, Mac, Scope, ValidationError, Vm};
use crate::render::{RenderError, Renderer};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The appliances every new database starts with.
pub const SEEDED_APPLIANCES: &[&str] = &["frontend", "compute", "vm-container", "hosted-vm"];

/// The appliance of a VM's own node row.
pub const VM_APPLIANCE: &str = "hosted-vm";

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("unknown host {0:?}")]
    UnknownHost(String),
    #[error("unknown VM {0:?}")]
    UnknownVm(String),
    #[error("unknown appliance {0:?}")]
    UnknownAppliance(String),
    #[error("{kind} {name:?} already exists")]
    Duplicate { kind: &'static str, name: String },
    #[error("{0:?} is a VM; use `kvmroll vm` for it")]
    IsVm(String),
    #[error("{0:?} is not a VM container: its resolved kvm attribute is not true")]
    NotContainer(String),
    #[error(
        "host {host:?} still holds {count} VM(s), e.g. {example:?}; move or remove them first"
    )]
    HoldsVms {
        host: String,
        count: usize,
        example: String,
    },
    #[error("MAC {0} is already used in the cluster")]
    DuplicateMac(String),
    #[error("VM {vm:?} already has a disk {dev}")]
    DuplicateDisk { vm: String, dev: String },
    #[error("VM {vm:?} has no disk {dev}")]
    UnknownDisk { vm: String, dev: String },
    #[error(
        "disk {dev} of VM {vm:?} is {from} GiB: kvmroll never shrinks a disk (asked for {to} GiB)"
    )]
    DiskShrink {
        vm: String,
        dev: String,
        from: u32,
        to: u32,
    },
    #[error("VM {vm:?} has no NIC with MAC {mac}")]
    UnknownNic { vm: String, mac: String },
    #[error("attribute {name} is not set on {scope}")]
    UnsetAttr { name: String, scope: String },
    #[error("this change would break the definition of VM {vm:?}")]
    WouldBreak {
        vm: String,
        #[source]
        source: RenderError,
    },
}

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

/// The result of planning a write.
#[derive(Debug, Clone)]
pub struct Plan {
    pub after: Cluster,
    /// VMs whose rendered domain XML differs after the change, with the new
    /// XML (`None` when the VM was removed or can no longer be rendered).
    /// Each such VM has a new generation in `after`, which its XML carries.
    pub changed: BTreeMap<String, Option<String>>,
}

impl Plan {
    /// The VMs whose generation the write moves on, with the new number:
    /// every store writes these in the write's own transaction, so that a
    /// definition's generation names the database rows it was rendered from.
    pub fn generations(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.changed
            .iter()
            .filter(|(_, xml)| xml.is_some())
            .filter_map(|(name, _)| {
                self.after
                    .vms
                    .get(name)
                    .map(|vm| (name.as_str(), vm.generation))
            })
    }
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
    pub fn libvirt_uri(&self, container: &str) -> String {
        if let Some(uri) = self.attr_of(container, "libvirt_uri") {
            return uri.replace("{host}", container);
        }
        let local = crate::sys::local_hostname();
        if container == "localhost"
            || container == local
            || container == crate::sys::local_short_hostname()
        {
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

    fn check_scope(&self, scope: &Scope) -> Result<(), ClusterError> {
        match scope {
            Scope::Global | Scope::Rack(_) => Ok(()),
            Scope::Os(os) => check_name("os", os).map_err(Into::into),
            Scope::Appliance(a) if self.appliances.contains(a) => Ok(()),
            Scope::Appliance(a) => Err(ClusterError::UnknownAppliance(a.clone())),
            Scope::Host(h) => self.host(h).map(|_| ()),
        }
    }

    fn check_vm_row(&self, vm: &Vm, own_macs: &BTreeSet<&Mac>) -> Result<(), ClusterError> {
        if let Some(c) = &vm.container {
            let host = self.host(c)?;
            if self.vms.contains_key(c) {
                return Err(ClusterError::NotContainer(c.clone()));
            }
            if !self.is_container(host) {
                return Err(ClusterError::NotContainer(c.clone()));
            }
        }
        if vm.memory_mib == 0 || vm.vcpus == 0 {
            return Err(ValidationError::Value {
                what: "VM size".into(),
                value: format!("{} MiB, {} vCPUs", vm.memory_mib, vm.vcpus),
                why: "memory and vCPUs must be positive".into(),
            }
            .into());
        }
        if !crate::model::VIRT_TYPES.contains(&vm.virt_type.as_str()) {
            return Err(ValidationError::Value {
                what: "virt type".into(),
                value: vm.virt_type.clone(),
                why: "expected kvm or qemu".into(),
            }
            .into());
        }
        if let Some(cd) = &vm.cdrom {
            crate::model::check_abs_path(cd)?;
        }
        let mut devs = BTreeSet::new();
        for d in &vm.disks {
            if !devs.insert(d.dev.as_str()) {
                return Err(ClusterError::DuplicateDisk {
                    vm: vm.name.clone(),
                    dev: d.dev.clone(),
                });
            }
        }
        let mut macs = BTreeSet::new();
        for n in &vm.nics {
            if !macs.insert(&n.mac) || (self.mac_in_use(&n.mac) && !own_macs.contains(&n.mac)) {
                return Err(ClusterError::DuplicateMac(n.mac.to_string()));
            }
        }
        Ok(())
    }

    /// Whether any VM already has this MAC.
    pub fn mac_in_use(&self, mac: &Mac) -> bool {
        self.vms
            .values()
            .flat_map(|v| &v.nics)
            .any(|n| &n.mac == mac)
    }

    fn holds_vms(&self, host: &str) -> Result<(), ClusterError> {
        let held: Vec<&Vm> = self.vms_on(host).collect();
        match held.first() {
            None => Ok(()),
            Some(first) => Err(ClusterError::HoldsVms {
                host: host.to_string(),
                count: held.len(),
                example: first.name.clone(),
            }),
        }
    }

    /// Applies one change, checking it against the cluster as it stands.
    pub fn apply(&mut self, change: &Change) -> Result<(), ClusterError> {
        match change {
            Change::AddAppliance(name) => {
                check_name("appliance", name)?;
                if !self.appliances.insert(name.clone()) {
                    return Err(ClusterError::Duplicate {
                        kind: "appliance",
                        name: name.clone(),
                    });
                }
            }
            Change::AddHost(host) => {
                check_name("host", &host.name)?;
                check_name("os", &host.os)?;
                if self.hosts.contains_key(&host.name) {
                    return Err(ClusterError::Duplicate {
                        kind: "host",
                        name: host.name.clone(),
                    });
                }
                if !self.appliances.contains(&host.appliance) {
                    return Err(ClusterError::UnknownAppliance(host.appliance.clone()));
                }
                self.hosts.insert(host.name.clone(), host.clone());
            }
            Change::SetHost(host) => {
                check_name("os", &host.os)?;
                self.host(&host.name)?;
                if !self.appliances.contains(&host.appliance) {
                    return Err(ClusterError::UnknownAppliance(host.appliance.clone()));
                }
                self.hosts.insert(host.name.clone(), host.clone());
                if !self.is_container(host) {
                    self.holds_vms(&host.name)?;
                }
            }
            Change::RemoveHost(name) => {
                self.host(name)?;
                if self.vms.contains_key(name) {
                    return Err(ClusterError::IsVm(name.clone()));
                }
                self.holds_vms(name)?;
                self.hosts.remove(name);
                self.attrs.remove(&Scope::Host(name.clone()));
            }
            Change::SetAttr { scope, name, value } => {
                self.check_scope(scope)?;
                let value = attrs::normalize(name, value)?;
                self.attrs
                    .entry(scope.clone())
                    .or_default()
                    .insert(name.clone(), value);
                if name == "kvm" {
                    self.containers_still_kvm()?;
                }
            }
            Change::RemoveAttr { scope, name } => {
                self.check_scope(scope)?;
                let removed = self.attrs.get_mut(scope).and_then(|m| m.remove(name));
                if removed.is_none() {
                    return Err(ClusterError::UnsetAttr {
                        name: name.clone(),
                        scope: scope.to_string(),
                    });
                }
                if self.attrs.get(scope).is_some_and(BTreeMap::is_empty) {
                    self.attrs.remove(scope);
                }
                if name == "kvm" {
                    self.containers_still_kvm()?;
                }
            }
            Change::AddVm(vm) => {
                check_name("VM", &vm.name)?;
                if self.hosts.contains_key(&vm.name) {
                    return Err(ClusterError::Duplicate {
                        kind: "host",
                        name: vm.name.clone(),
                    });
                }
                if self.vms.values().any(|v| v.uuid == vm.uuid) {
                    return Err(ClusterError::Duplicate {
                        kind: "UUID",
                        name: vm.uuid.clone(),
                    });
                }
                self.check_vm_row(vm, &BTreeSet::new())?;
                let mut own = Host::new(&vm.name, VM_APPLIANCE);
                own.cpus = vm.vcpus;
                self.hosts.insert(vm.name.clone(), own);
                let mut vm = vm.clone();
                vm.id = self.vms.values().map(|v| v.id).max().unwrap_or(0) + 1;
                vm.generation = 0;
                self.vms.insert(vm.name.clone(), vm);
            }
            Change::SetVm(vm) => {
                let old = self.vm(&vm.name)?.clone();
                let own: BTreeSet<&Mac> = old.nics.iter().map(|n| &n.mac).collect();
                self.check_vm_row(vm, &own)?;
                let mut vm = vm.clone();
                vm.id = old.id;
                vm.uuid = old.uuid.clone();
                // The store's to keep: only a plan moves it on.
                vm.generation = old.generation;
                if let Some(h) = self.hosts.get_mut(&vm.name) {
                    h.cpus = vm.vcpus;
                }
                self.vms.insert(vm.name.clone(), vm);
            }
            Change::RemoveVm(name) => {
                self.vm(name)?;
                self.vms.remove(name);
                self.hosts.remove(name);
                self.attrs.remove(&Scope::Host(name.clone()));
            }
        }
        Ok(())
    }

    /// After a change to `kvm`, every host that holds VMs must still be a
    /// container.
    fn containers_still_kvm(&self) -> Result<(), ClusterError> {
        let containers: BTreeSet<&str> = self
            .vms
            .values()
            .filter_map(|v| v.container.as_deref())
            .collect();
        for c in containers {
            let host = self.host(c)?;
            if !self.is_container(host) {
                self.holds_vms(c)?;
            }
        }
        Ok(())
    }

    /// The VMs whose rendering a change may alter; `None` means all of them.
    fn touched_by(&self, change: &Change) -> Option<BTreeSet<String>> {
        let mut containers = BTreeSet::new();
        let mut vms = BTreeSet::new();
        let mut host_touched = |name: &str| {
            if let Some(vm) = self.vms.get(name) {
                vms.insert(name.to_string());
                containers.extend(vm.container.clone());
            } else {
                containers.insert(name.to_string());
            }
        };
        match change {
            Change::AddAppliance(_) | Change::AddHost(_) => return Some(BTreeSet::new()),
            Change::SetHost(h) => host_touched(&h.name),
            Change::RemoveHost(h) => host_touched(h),
            Change::SetAttr { scope, .. } | Change::RemoveAttr { scope, .. } => match scope {
                Scope::Host(h) => host_touched(h),
                _ => return None,
            },
            Change::AddVm(vm) | Change::SetVm(vm) => {
                vms.insert(vm.name.clone());
                containers.extend(vm.container.clone());
                if let Some(old) = self.vms.get(&vm.name) {
                    containers.extend(old.container.clone());
                }
            }
            Change::RemoveVm(name) => host_touched(name),
        }
        // Pinning ties VMs of one container together (pin_auto).
        for c in &containers {
            vms.extend(self.vms_on(c).map(|v| v.name.clone()));
        }
        Some(vms)
    }

    /// Applies `changes` to a copy of the cluster, refuses them if they would
    /// break the definition of a VM that rendered before, and reports the VMs
    /// whose XML changed.
    pub fn plan(&self, changes: &[Change]) -> Result<Plan, ClusterError> {
        let mut after = self.clone();
        let mut touched: Option<BTreeSet<String>> = Some(BTreeSet::new());
        for change in changes {
            match (
                self.touched_by(change),
                after.touched_by(change),
                &mut touched,
            ) {
                (Some(a), Some(b), Some(t)) => {
                    t.extend(a);
                    t.extend(b);
                }
                _ => touched = None,
            }
            after.apply(change)?;
        }
        let names: BTreeSet<String> = match touched {
            Some(t) => t,
            None => self.vms.keys().chain(after.vms.keys()).cloned().collect(),
        };
        let mut before_r = Renderer::new(self);
        let mut after_r = Renderer::new(&after);
        let mut changed = BTreeMap::new();
        let mut drafts = BTreeMap::new();
        for name in names {
            let old = self.vms.contains_key(&name).then(|| before_r.draft(&name));
            let new = after.vms.contains_key(&name).then(|| after_r.draft(&name));
            match (old, new) {
                (None, None) => {}
                (old, Some(Err(e))) => {
                    // A VM that was already broken the same way does not
                    // block an unrelated change.
                    let same_fault = matches!(&old, Some(Err(o)) if *o == e);
                    if !same_fault {
                        return Err(ClusterError::WouldBreak {
                            vm: name,
                            source: e,
                        });
                    }
                }
                (Some(Ok(a)), Some(Ok(b))) if a == b => {}
                (_, Some(Ok(b))) => {
                    drafts.insert(name, b);
                }
                (Some(_), None) => {
                    changed.insert(name, None);
                }
            }
        }
        drop(after_r);
        // Each changed definition is a new generation of its VM, and carries
        // it in its metadata.
        for (name, mut draft) in drafts {
            let generation = self.vms.get(&name).map_or(0, |v| v.generation) + 1;
            if let Some(vm) = after.vms.get_mut(&name) {
                vm.generation = generation;
            }
            draft.set_generation(generation);
            let xml = draft.finish().map_err(|source| ClusterError::WouldBreak {
                vm: name.clone(),
                source,
            })?;
            changed.insert(name, Some(xml));
        }
        Ok(Plan { after, changed })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Disk, Nic};

    pub(crate) fn vm(name: &str, container: &str, vcpus: u32) -> Vm {
        Vm {
            id: 0,
            name: name.into(),
            container: Some(container.into()),
            memory_mib: 1024,
            vcpus,
            uuid: format!(
                "00000000-0000-4000-8000-{:012x}",
                name.bytes()
                    .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                    & 0xffff_ffff_ffff
            ),
            cdrom: None,
            virt_type: "kvm".into(),
            disks: vec![],
            nics: vec![],
            stale: false,
            generation: 0,
        }
    }

    pub(crate) fn small_cluster() -> Cluster {
        let mut c = Cluster::seeded();
        let mut h = Host::new("vm-container-0-0", "vm-container");
        h.cpus = 8;
        c.apply(&Change::AddHost(h)).unwrap();
        c.apply(&Change::AddHost(Host::new("compute-0-0", "compute")))
            .unwrap();
        c
    }

    fn set(scope: Scope, name: &str, value: &str) -> Change {
        Change::SetAttr {
            scope,
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn resolution_runs_global_os_appliance_rack_host() {
        let mut c = small_cluster();
        let mut h = c.host("compute-0-0").unwrap().clone();
        h.rack = 2;
        c.apply(&Change::SetHost(h)).unwrap();
        let steps = [
            Scope::Global,
            Scope::Os("linux".into()),
            Scope::Appliance("compute".into()),
            Scope::Rack(2),
            Scope::Host("compute-0-0".into()),
        ];
        for (i, scope) in steps.iter().enumerate() {
            c.apply(&set(scope.clone(), "x", &format!("v{i}"))).unwrap();
            let host = c.host("compute-0-0").unwrap();
            let r = &c.resolve(host)["x"];
            assert_eq!(
                (r.value.as_str(), &r.scope),
                (format!("v{i}").as_str(), scope)
            );
        }
        // Removing the host value falls back to the rack's.
        c.apply(&Change::RemoveAttr {
            scope: Scope::Host("compute-0-0".into()),
            name: "x".into(),
        })
        .unwrap();
        assert_eq!(c.attr_of("compute-0-0", "x"), Some("v3"));
        // Other racks, appliances and hosts do not see it.
        assert_eq!(c.attr_of("vm-container-0-0", "x"), Some("v1"));
    }

    #[test]
    fn vm_container_appliance_is_kvm() {
        let c = small_cluster();
        assert!(c.is_container(c.host("vm-container-0-0").unwrap()));
        assert!(!c.is_container(c.host("compute-0-0").unwrap()));
    }

    #[test]
    fn a_vm_needs_a_container() {
        let mut c = small_cluster();
        assert_eq!(
            c.apply(&Change::AddVm(vm("v", "compute-0-0", 1))),
            Err(ClusterError::NotContainer("compute-0-0".into()))
        );
        assert_eq!(
            c.apply(&Change::AddVm(vm("v", "nowhere", 1))),
            Err(ClusterError::UnknownHost("nowhere".into()))
        );
        c.apply(&Change::AddVm(vm("v", "vm-container-0-0", 1)))
            .unwrap();
        assert_eq!(c.host("v").unwrap().appliance, "hosted-vm");
    }

    #[test]
    fn a_container_with_vms_stays_one() {
        let mut c = small_cluster();
        c.apply(&Change::AddVm(vm("v", "vm-container-0-0", 1)))
            .unwrap();
        let err = c
            .apply(&set(Scope::Host("vm-container-0-0".into()), "kvm", "false"))
            .unwrap_err();
        assert!(matches!(err, ClusterError::HoldsVms { .. }));
        assert!(matches!(
            c.apply(&Change::RemoveHost("vm-container-0-0".into())),
            Err(ClusterError::HoldsVms { .. })
        ));
        assert!(matches!(
            c.apply(&Change::RemoveHost("v".into())),
            Err(ClusterError::IsVm(_))
        ));
    }

    #[test]
    fn plan_refuses_a_pin_all_wider_than_the_container() {
        let mut c = small_cluster();
        c.apply(&Change::AddVm(vm("big", "vm-container-0-0", 16)))
            .unwrap();
        let err = c
            .plan(&[set(Scope::Host("big".into()), "kvm_cpu_pinning", "pin_all")])
            .unwrap_err();
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(source.unwrap_or_default().contains("16 vCPUs"), "{err:?}");
    }

    #[test]
    fn plan_reports_changed_vms_only() {
        let mut c = small_cluster();
        c.apply(&Change::AddVm(vm("a", "vm-container-0-0", 1)))
            .unwrap();
        c.apply(&Change::AddVm(vm("b", "vm-container-0-0", 1)))
            .unwrap();
        let plan = c
            .plan(&[set(Scope::Host("a".into()), "cpu_mode", "host-model")])
            .unwrap();
        assert_eq!(plan.changed.keys().collect::<Vec<_>>(), vec!["a"]);
        let plan = c
            .plan(&[set(Scope::Global, "kvm_graphics", "none")])
            .unwrap();
        assert_eq!(plan.changed.len(), 2);
        let plan = c.plan(&[set(Scope::Global, "unrelated", "x")]).unwrap();
        assert!(plan.changed.is_empty());
    }

    #[test]
    fn duplicate_macs_are_refused() {
        let mut c = small_cluster();
        let mac = Mac::parse("52:54:00:00:00:01").unwrap();
        let nic = Nic {
            kind: crate::model::NicKind::Bridge,
            source: "br0".into(),
            mac: mac.clone(),
            vlan: None,
            model: "virtio".into(),
        };
        let mut a = vm("a", "vm-container-0-0", 1);
        a.nics.push(nic.clone());
        c.apply(&Change::AddVm(a.clone())).unwrap();
        // Setting the VM with its own MAC is fine.
        c.apply(&Change::SetVm(a)).unwrap();
        let mut b = vm("b", "vm-container-0-0", 1);
        b.nics.push(nic);
        assert_eq!(
            c.apply(&Change::AddVm(b)),
            Err(ClusterError::DuplicateMac(mac.to_string()))
        );
    }

    #[test]
    fn duplicate_disks_are_refused() {
        let mut c = small_cluster();
        let mut a = vm("a", "vm-container-0-0", 1);
        let d = Disk::parse("file:/a.img,vda,virtio").unwrap();
        a.disks = vec![d.clone(), d];
        assert!(matches!(
            c.apply(&Change::AddVm(a)),
            Err(ClusterError::DuplicateDisk { .. })
        ));
    }
}

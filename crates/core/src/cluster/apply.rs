//! [`Cluster::apply`]: one change, checked against the cluster as it
//! stands, one function per kind of change.

use super::{Change, Cluster, ClusterError, VM_APPLIANCE};
use crate::attrs;
use crate::model::{check_name, Host, Mac, Scope, ValidationError, Vm};
use std::collections::{BTreeMap, BTreeSet};

impl Cluster {
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
                Ok(())
            }
            Change::AddHost(host) => self.add_host(host),
            Change::SetHost(host) => self.set_host(host),
            Change::RemoveHost(name) => self.remove_host(name),
            Change::SetAttr { scope, name, value } => self.set_attr(scope, name, value),
            Change::RemoveAttr { scope, name } => self.remove_attr(scope, name),
            Change::AddVm(vm) => self.add_vm(vm),
            Change::SetVm(vm) => self.set_vm(vm),
            Change::RemoveVm(name) => {
                self.vm(name)?;
                self.vms.remove(name);
                self.hosts.remove(name);
                self.attrs.remove(&Scope::Host(name.clone()));
                Ok(())
            }
        }
    }

    fn add_host(&mut self, host: &Host) -> Result<(), ClusterError> {
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
        Ok(())
    }

    fn set_host(&mut self, host: &Host) -> Result<(), ClusterError> {
        check_name("os", &host.os)?;
        self.host(&host.name)?;
        if !self.appliances.contains(&host.appliance) {
            return Err(ClusterError::UnknownAppliance(host.appliance.clone()));
        }
        self.hosts.insert(host.name.clone(), host.clone());
        if !self.is_container(host) {
            self.holds_vms(&host.name)?;
        }
        Ok(())
    }

    fn remove_host(&mut self, name: &String) -> Result<(), ClusterError> {
        self.host(name)?;
        if self.vms.contains_key(name) {
            return Err(ClusterError::IsVm(name.clone()));
        }
        self.holds_vms(name)?;
        self.hosts.remove(name);
        self.attrs.remove(&Scope::Host(name.clone()));
        Ok(())
    }

    fn set_attr(&mut self, scope: &Scope, name: &String, value: &str) -> Result<(), ClusterError> {
        self.check_scope(scope)?;
        let value = attrs::normalize(name, value)?;
        self.attrs
            .entry(scope.clone())
            .or_default()
            .insert(name.clone(), value);
        if name == "kvm" {
            self.containers_still_kvm()?;
        }
        Ok(())
    }

    fn remove_attr(&mut self, scope: &Scope, name: &String) -> Result<(), ClusterError> {
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
        Ok(())
    }

    fn add_vm(&mut self, vm: &Vm) -> Result<(), ClusterError> {
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
        Ok(())
    }

    fn set_vm(&mut self, vm: &Vm) -> Result<(), ClusterError> {
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
        Ok(())
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
}

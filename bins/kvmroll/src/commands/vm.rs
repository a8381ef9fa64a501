//! `kvmroll vm`: add, set (a move included), list, show, and the edits of
//! one VM's cdrom, disks and NICs; define, sync, remove and disk resize
//! have modules of their own.

use super::power::Power;
use super::{print_json, refused, App, Error, Exit};
use crate::cli::{DiskCmd, NicCmd, PowerArgs, VmAdd, VmCmd, VmSet};
use crate::states::{self, VmState};
use crate::sync::SyncMode;
use kvmroll_cli::error_chain;
use kvmroll_cli::{print_listing, Format};
use kvmroll_core::disks::{Roots, ROOTS_ATTR};
use kvmroll_core::model::check_name;
use kvmroll_core::{
    Change, Cluster, ClusterError, Disk, Host, Mac, Nic, NicSpec, ValidationError, Vm,
};
use kvmroll_virt::DomainState;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

/// A MAC in 52:54:00 not used anywhere in the cluster (nor in `taken`).
fn fresh_mac(cluster: &Cluster, taken: &BTreeSet<Mac>) -> Mac {
    loop {
        let b = *uuid::Uuid::new_v4().as_bytes();
        let mac = Mac::qemu([b[0], b[1], b[2]]);
        if !cluster.mac_in_use(&mac) && !taken.contains(&mac) {
            return mac;
        }
    }
}

fn nics_from_specs(cluster: &Cluster, specs: &[NicSpec], mut taken: BTreeSet<Mac>) -> Vec<Nic> {
    specs
        .iter()
        .map(|s| {
            let mac = s.mac.clone().unwrap_or_else(|| fresh_mac(cluster, &taken));
            taken.insert(mac.clone());
            Nic {
                kind: s.kind,
                source: s.source.clone(),
                mac,
                vlan: s.vlan,
                model: s.model.clone(),
            }
        })
        .collect()
}

/// A row of `vm list --json`: the VM's fields and its state's word.
#[derive(Serialize)]
struct VmView<'a> {
    #[serde(flatten)]
    vm: &'a Vm,
    /// As `attr list --json` gives them.
    attributes: Vec<AttrView>,
}

/// A resolved attribute in JSON: `attr list`'s columns.
#[derive(Serialize)]
struct AttrView {
    pub name: String,
    pub scope: String,
    pub value: String,
}

impl From<kvmroll_core::cluster::Resolved> for AttrView {
    fn from(r: kvmroll_core::cluster::Resolved) -> AttrView {
        AttrView {
            scope: r.scope.to_string(),
            name: r.name,
            value: r.value,
        }
    }
}

impl App<'_> {
    /// Changes one VM's row with `edit`, in one transaction.
    pub(super) fn edit_vm(
        &mut self,
        name: &str,
        edit: &mut dyn FnMut(&Cluster, &mut Vm) -> Result<(), ClusterError>,
    ) -> Result<Exit, Error> {
        self.write(&mut |c| {
            let mut vm = c.vm(name)?.clone();
            edit(c, &mut vm)?;
            Ok(vec![Change::SetVm(vm)])
        })
        .map(|(_, o)| o)
    }

    pub(super) fn vm(&mut self, cmd: VmCmd, out: &mut dyn Write) -> Result<Exit, Error> {
        match cmd {
            VmCmd::Add(args) => self.add_vm(args),
            VmCmd::Set(args) => self.set_vm(args),
            VmCmd::List {
                container,
                timeout,
                json,
                header,
            } => self.list_vms(
                container,
                timeout.limit,
                Format::of(json.json, header.no_header),
                out,
            ),
            VmCmd::Show { name, json } => self.show_vm(&name, json.json, out),
            VmCmd::Remove { name, delete_disks } => self.remove_vm(&name, delete_disks),
            VmCmd::Cdrom { name, path, live } => self.set_cdrom(&name, &path, live),
            VmCmd::Start(args) => self.power(Power::Start, args),
            VmCmd::Shutdown(args) => self.power(Power::Shutdown, args),
            VmCmd::Destroy { names, timeout } => self.power(
                Power::Destroy,
                PowerArgs {
                    names,
                    all: false,
                    container: None,
                    timeout,
                },
            ),
            VmCmd::Console { name } => self.console(&name),
            VmCmd::Disk(DiskCmd::Add { name, spec, force }) => {
                let disk = Disk::parse(&spec)?;
                self.edit_vm(&name, &mut |c, vm| {
                    check_disk_roots(c, c.host(&vm.name)?, std::slice::from_ref(&disk), force)?;
                    vm.disks.push(disk.clone());
                    Ok(())
                })
            }
            VmCmd::Disk(DiskCmd::Resize { name, dev, size }) => self.resize_disk(&name, &dev, size),
            VmCmd::Disk(DiskCmd::Remove { name, dev }) => self.remove_disk(&name, &dev),
            VmCmd::Nic(NicCmd::Add { name, spec }) => {
                let spec = NicSpec::parse(&spec)?;
                self.edit_vm(&name, &mut |c, vm| {
                    let taken = vm.nics.iter().map(|n| n.mac.clone()).collect();
                    vm.nics
                        .extend(nics_from_specs(c, std::slice::from_ref(&spec), taken));
                    Ok(())
                })
            }
            VmCmd::Nic(NicCmd::Remove { name, mac }) => self.remove_nic(&name, &mac),
            VmCmd::Sync { names, all, from } => self.sync_cmd(names, all, from),
            VmCmd::Migrate { name, to, timeout } => {
                self.migrate_cmd(&name, &to, timeout.map(Duration::from_secs), out)
            }
            VmCmd::Define {
                names,
                all,
                container,
            } => self.define_cmd(names, all, container),
        }
    }

    /// `vm add`: the VM and its own node row, with fresh MACs.
    fn add_vm(&mut self, args: VmAdd) -> Result<Exit, Error> {
        let VmAdd {
            name,
            container,
            mem,
            cpus,
            disks,
            nics,
            virt_type,
            force,
        } = args;
        check_name("VM", &name)?;
        let disks = disks
            .iter()
            .map(|d| Disk::parse(d))
            .collect::<Result<Vec<_>, _>>()?;
        let specs = nics
            .iter()
            .map(|n| NicSpec::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        let uuid = uuid::Uuid::new_v4().to_string();
        self.write(&mut |c| {
            let own = Host::new(&name, kvmroll_core::cluster::VM_APPLIANCE);
            check_disk_roots(c, &own, &disks, force)?;
            let nics = nics_from_specs(c, &specs, BTreeSet::new());
            Ok(vec![Change::AddVm(Vm {
                id: 0,
                name: name.clone(),
                container: Some(container.clone()),
                memory_mib: mem,
                vcpus: cpus,
                uuid: uuid.clone(),
                cdrom: None,
                virt_type: virt_type.clone(),
                disks: disks.clone(),
                nics,
                stale: false,
                generation: 0,
            })])
        })
        .map(|(_, o)| o)
    }

    /// `vm set`: placement or size. Moving a VM moves its definition:
    /// refused while it runs on its old container.
    pub(super) fn set_vm(&mut self, args: VmSet) -> Result<Exit, Error> {
        let VmSet {
            name,
            container,
            mem,
            cpus,
            virt_type,
        } = args;
        let snapshot = self.store.snapshot()?;
        let old = snapshot.vm(&name)?.clone();
        let moving = container.is_some() && container != old.container;
        // Moving a running VM is a migration, which this is not.
        let mut was_defined = None;
        // A definition that may remain on the old container.
        let mut left_behind = false;
        if moving && self.sync.mode == SyncMode::Live {
            if let Some(from) = &old.container {
                let uri = self.uri(&snapshot, from);
                match self
                    .sync
                    .conn(&uri)
                    .and_then(|hv| hv.domain(&name).map_err(|e| error_chain(&e)))
                {
                    Ok(Some(d)) if d.state != DomainState::ShutOff => {
                        return Err(refused(format!(
                            "VM {name} is running on {from}; shut it down before moving it"
                        )))
                    }
                    Ok(Some(_)) => was_defined = Some(uri),
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!(
                            "kvmroll: warning: cannot reach {from} to check VM {name}: {e}; \
                             any definition left there is stale"
                        );
                        left_behind = true;
                    }
                }
            }
        }
        let (plan, outcome) = self.write(&mut |c| {
            let mut vm = c.vm(&name)?.clone();
            if let Some(ct) = &container {
                vm.container = Some(ct.clone());
            }
            vm.memory_mib = mem.unwrap_or(vm.memory_mib);
            vm.vcpus = cpus.unwrap_or(vm.vcpus);
            if let Some(t) = &virt_type {
                vm.virt_type = t.clone();
            }
            Ok(vec![Change::SetVm(vm)])
        })?;
        if let Some(uri) = was_defined {
            // The new container gets the definition first: a define that
            // fails leaves the old one where it was, never the VM defined
            // nowhere (as `vm sync --from` moves it).
            if let Err(e) = self.define(&plan.after, std::slice::from_ref(&name)) {
                eprintln!("kvmroll: warning: VM {name}: its definition stays at {uri}");
                return Err(e);
            }
            let result = self
                .sync
                .conn(&uri)
                .and_then(|hv| hv.undefine(&name).map_err(|e| error_chain(&e)));
            if let Err(e) = result {
                eprintln!("kvmroll: warning: VM {name}: its old definition at {uri} could not be removed: {e}");
                left_behind = true;
            }
        }
        Ok(if left_behind { Exit::Stale } else { outcome })
    }

    fn list_vms(
        &mut self,
        container: Option<String>,
        limit: Duration,
        format: Format,
        out: &mut dyn Write,
    ) -> Result<Exit, Error> {
        let c = self.store.snapshot()?;
        if let Some(ct) = &container {
            c.host(ct)?;
        }
        let vms: Vec<&Vm> = c
            .vms
            .values()
            .filter(|v| container.is_none() || v.container == container)
            .collect();
        let states = self.vm_states(&c, &vms, limit);
        let rows: Vec<Vec<Value>> = vms
            .iter()
            .zip(&states)
            .map(|(v, state)| {
                vec![
                    json!(v.name),
                    json!(v.container),
                    json!(state.word()),
                    json!(v.memory_mib),
                    json!(v.vcpus),
                    json!(v.cdrom),
                    json!(if v.stale { "stale" } else { "ok" }),
                ]
            })
            .collect();
        print_listing(
            out,
            &[
                "NAME",
                "CONTAINER",
                "STATE",
                "MEMORY_MIB",
                "VCPUS",
                "CDROM",
                "DEFINITION",
            ],
            &rows,
            format,
        )?;
        Ok(Exit::Done)
    }

    /// The state of each of `vms`, from their containers' libvirt, asked
    /// at once within `limit`; each container that did not answer is named
    /// on stderr once. Inside a hook stage libvirtd waits for the hook, and
    /// `--no-sync` asks for no libvirt call: no state then.
    fn vm_states(&self, c: &Cluster, vms: &[&Vm], limit: Duration) -> Vec<VmState> {
        if self.sync.mode != SyncMode::Live {
            return vec![VmState::Unknown; vms.len()];
        }
        let uris: Vec<Option<(String, String)>> = vms
            .iter()
            .map(|v| {
                let ct = v.container.as_ref()?;
                Some((ct.clone(), self.uri(c, ct)))
            })
            .collect();
        let asked: BTreeSet<String> = uris.iter().flatten().map(|(_, u)| u.clone()).collect();
        let answers = states::ask(&self.connector, &asked, limit);
        let mut told = BTreeSet::new();
        vms.iter()
            .zip(&uris)
            .map(|(vm, placed)| {
                let Some((ct, uri)) = placed else {
                    return VmState::NotPlaced;
                };
                match &answers[uri] {
                    Ok(domains) => VmState::of(domains.get(&vm.name)),
                    Err(why) => {
                        if told.insert(uri.clone()) {
                            eprintln!(
                                "kvmroll: warning: container {ct} ({uri}) is unreachable: {why}"
                            );
                        }
                        VmState::Unreachable
                    }
                }
            })
            .collect()
    }

    fn show_vm(&mut self, name: &str, json: bool, out: &mut dyn Write) -> Result<Exit, Error> {
        let c = self.store.snapshot()?;
        let vm = c.vm(name)?;
        let attributes: Vec<AttrView> = c
            .resolve(c.host(name)?)
            .into_values()
            .map(AttrView::from)
            .collect();
        if json {
            print_json(out, &VmView { vm, attributes })?;
            return Ok(Exit::Done);
        }
        writeln!(out, "name:      {}", vm.name)?;
        writeln!(out, "uuid:      {}", vm.uuid)?;
        writeln!(out, "container: {}", vm.container.as_deref().unwrap_or("-"))?;
        writeln!(out, "memory:    {} MiB", vm.memory_mib)?;
        writeln!(out, "vcpus:     {}", vm.vcpus)?;
        writeln!(out, "virt type: {}", vm.virt_type)?;
        writeln!(out, "cdrom:     {}", vm.cdrom.as_deref().unwrap_or("none"))?;
        writeln!(
            out,
            "definition: {}",
            if vm.stale {
                "stale (run kvmroll vm define)"
            } else {
                "in step"
            }
        )?;
        for d in &vm.disks {
            writeln!(out, "disk:      {}", d.spec())?;
        }
        for n in &vm.nics {
            let mut s = format!("{}:{},mac={}", n.kind.as_str(), n.source, n.mac);
            if let Some(v) = n.vlan {
                s.push_str(&format!(",vlan={v}"));
            }
            s.push_str(&format!(",model={}", n.model));
            writeln!(out, "nic:       {s}")?;
        }
        Ok(Exit::Done)
    }

    fn remove_disk(&mut self, name: &str, dev: &str) -> Result<Exit, Error> {
        let mut gone = Vec::new();
        let outcome = self.edit_vm(name, &mut |_, vm| {
            gone = vm
                .disks
                .iter()
                .filter(|d| d.dev == dev)
                .map(|d| d.path.clone())
                .collect();
            vm.disks.retain(|d| d.dev != dev);
            if gone.is_empty() {
                return Err(ClusterError::UnknownDisk {
                    vm: vm.name.clone(),
                    dev: dev.to_string(),
                });
            }
            Ok(())
        })?;
        // A grow asked for it must not reach an image of the same
        // path added again later.
        self.store.record_disk_work(name, "", &[], &gone)?;
        Ok(outcome)
    }

    fn remove_nic(&mut self, name: &str, mac: &str) -> Result<Exit, Error> {
        let mac = Mac::parse(mac)?;
        self.edit_vm(name, &mut |_, vm| {
            let before = vm.nics.len();
            vm.nics.retain(|n| n.mac != mac);
            if vm.nics.len() == before {
                return Err(ClusterError::UnknownNic {
                    vm: vm.name.clone(),
                    mac: mac.to_string(),
                });
            }
            Ok(())
        })
    }

    /// `vm sync`: the names given, or with --all every placed VM.
    fn sync_cmd(
        &mut self,
        names: Vec<String>,
        all: bool,
        from: Option<String>,
    ) -> Result<Exit, Error> {
        let c = self.store.snapshot()?;
        let names: Vec<String> = if all {
            c.vms
                .values()
                .filter(|v| v.container.is_some())
                .map(|v| v.name.clone())
                .collect()
        } else {
            names
        };
        if let Some(from) = &from {
            c.host(from)?;
        }
        self.sync_vms(&c, &names, from.as_deref())
    }

    /// `vm define`: the names given, or with --all every placed VM (on
    /// CONTAINER only, when given).
    pub(super) fn define_cmd(
        &mut self,
        names: Vec<String>,
        all: bool,
        container: Option<String>,
    ) -> Result<Exit, Error> {
        // A migration killed midway is settled first: the database must say
        // where the VM runs before its definition goes there.
        let c = self.store.snapshot()?;
        if self.sync.mode == SyncMode::Live {
            let named: BTreeSet<&String> = names.iter().collect();
            let marked: Vec<String> = c
                .vms
                .keys()
                .filter(|n| all || named.contains(n))
                .filter(|n| kvmroll_migrate::migrating_from(&c, n).is_some())
                .cloned()
                .collect();
            for vm in marked {
                self.recover_migration(&vm)?;
            }
        }
        let c = self.store.snapshot()?;
        let names: Vec<String> = if all {
            if let Some(ct) = &container {
                c.host(ct)?;
            }
            c.vms
                .values()
                .filter(|v| v.container.is_some())
                .filter(|v| container.is_none() || v.container == container)
                .map(|v| v.name.clone())
                .collect()
        } else {
            names
        };
        self.define(&c, &names)
    }
}

/// Refuses image paths outside the kvm_disk_roots of `host` (a VM's own
/// node row), unless `force`: those are used as they are, never made.
pub(super) fn check_disk_roots(
    c: &Cluster,
    host: &Host,
    disks: &[Disk],
    force: bool,
) -> Result<(), ClusterError> {
    if force {
        return Ok(());
    }
    let roots = Roots::of(c.attr(host, ROOTS_ATTR)).map_err(|why| ValidationError::Attribute {
        name: ROOTS_ATTR.into(),
        why,
    })?;
    for d in disks {
        roots.check(d)?;
    }
    Ok(())
}

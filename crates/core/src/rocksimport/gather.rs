//! The dump gathered by subject: hosts, their actions and interfaces, VMs,
//! attributes and the VM list's cdroms, with `localhost` resolved to the
//! frontend.

use super::{count, Fault, ImportError, Origin};
use crate::model::{BootAction, Host, Scope};
use crate::rocksdump::{ActionKind, Command, Dump, HostEntry, IfaceField, VmLine, VmListRow};
use std::collections::BTreeMap;

/// An interface as the dump's `add host interface` and `set host interface`
/// lines describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Iface {
    pub(super) line: usize,
    pub(super) name: String,
    pub(super) mac: Option<String>,
    pub(super) subnet: Option<String>,
    pub(super) vlan: Option<u32>,
    pub(super) module: Option<String>,
    pub(super) options: Option<String>,
}

/// A host's `"add host"` line.
#[derive(Debug, Clone)]
pub(super) struct HostLine {
    pub(super) line: usize,
    pub(super) host: HostEntry,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Actions {
    pub(super) run: Option<String>,
    pub(super) install: Option<String>,
    pub(super) boot: Option<(usize, String)>,
}

/// The dump gathered by subject, host names resolved (`localhost` is the
/// frontend where the dump names it).
#[derive(Debug, Default)]
pub(super) struct Gathered<'a> {
    pub(super) frontend: Option<(usize, String)>,
    pub(super) memberships: BTreeMap<String, String>,
    pub(super) appliances: Vec<(usize, String)>,
    pub(super) hosts: Vec<HostLine>,
    pub(super) actions: BTreeMap<String, Actions>,
    pub(super) ifaces: BTreeMap<String, Vec<Iface>>,
    pub(super) vms: BTreeMap<String, (usize, VmLine)>,
    pub(super) attrs: Vec<(usize, Scope, &'a str, &'a str)>,
    pub(super) cdroms: BTreeMap<String, (usize, String)>,
    pub(super) notes: Vec<String>,
}

/// The global attribute that names the frontend (Rocks' `run reconfigure`
/// reads it for the same purpose).
pub(super) const FRONTEND_ATTR: &str = "Kickstart_PrivateHostname";

/// Rocks' appliance for a membership with no `add appliance` line.
pub(super) fn appliance_by_rule(membership: &str) -> String {
    membership
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
        .to_lowercase()
}

impl<'a> Gathered<'a> {
    pub(super) fn read(
        dump: &'a Dump,
        vm_list: Option<&[VmListRow]>,
    ) -> Result<Gathered<'a>, ImportError> {
        let mut g = Gathered::default();
        for c in &dump.commands {
            if let Command::Attr {
                scope: Scope::Global,
                name,
                value,
            } = &c.command
            {
                if name == FRONTEND_ATTR {
                    g.frontend = Some((c.line, value.clone()));
                }
            }
        }
        for c in &dump.commands {
            g.take(c.line, &c.command);
        }
        g.frontend_interfaces();
        if let Some(rows) = vm_list {
            g.read_vm_list(rows)?;
        }
        Ok(g)
    }

    /// The frontend's private and public interfaces, which `rocks dump host
    /// interface` leaves out for the installer to make again: it adds
    /// `Kickstart_PrivateInterface` on subnet private and
    /// `Kickstart_PublicInterface` on public (core's
    /// `nodes/database-data.xml`). A VM on the frontend is bridged to them.
    fn frontend_interfaces(&mut self) {
        let Some((_, fe)) = self.frontend.clone() else {
            return;
        };
        for (attr, subnet) in [
            ("Kickstart_PrivateInterface", "private"),
            ("Kickstart_PublicInterface", "public"),
        ] {
            let Some(&(line, _, _, name)) = self
                .attrs
                .iter()
                .rev()
                .find(|(_, scope, n, _)| *scope == Scope::Global && *n == attr)
            else {
                continue;
            };
            let list = self.ifaces.entry(fe.clone()).or_default();
            if !list.iter().any(|i| i.subnet.as_deref() == Some(subnet)) {
                list.push(Iface {
                    line,
                    name: name.to_string(),
                    subnet: Some(subnet.to_string()),
                    ..Iface::default()
                });
            }
        }
    }

    /// Files one command of the dump under its subject.
    fn take(&mut self, line: usize, command: &'a Command) {
        match command {
            Command::Attr { scope, name, value } => {
                let scope = match scope {
                    Scope::Host(h) => Scope::Host(self.resolved(h)),
                    s => s.clone(),
                };
                self.attrs.push((line, scope, name, value));
            }
            Command::Appliance { name, membership } => {
                if let Some(m) = membership {
                    self.memberships.insert(m.clone(), name.clone());
                }
                self.appliances.push((line, name.clone()));
            }
            Command::Host(host) => self.hosts.push(HostLine {
                line,
                host: host.clone(),
            }),
            Command::Action { host, kind, action } => {
                let a = self.actions.entry(self.resolved(host)).or_default();
                match kind {
                    ActionKind::Run => a.run = Some(action.clone()),
                    ActionKind::Install => a.install = Some(action.clone()),
                    ActionKind::Boot => a.boot = Some((line, action.clone())),
                }
            }
            Command::Interface { host, iface } => {
                self.iface(host, iface, line);
            }
            Command::InterfaceField {
                host,
                iface,
                field,
                value,
            } => {
                let i = self.iface(host, iface, line);
                let v = Some(value.clone());
                match field {
                    IfaceField::Mac => i.mac = v,
                    IfaceField::Subnet => i.subnet = v,
                    IfaceField::Vlan => i.vlan = value.parse().ok(),
                    IfaceField::Module => i.module = v,
                    IfaceField::Options => i.options = v,
                }
            }
            Command::Vm(vm) => self.take_vm(line, vm),
        }
    }

    /// A `set host vm` line; a later one sets what it names, as a second
    /// `rocks set host vm` would, and is the line a refusal names.
    fn take_vm(&mut self, line: usize, vm: &VmLine) {
        let physnode = vm.physnode.as_deref().map(|p| self.resolved(p));
        let (at, e) = self
            .vms
            .entry(vm.host.clone())
            .or_insert_with(|| (line, VmLine::default()));
        *at = line;
        e.host = vm.host.clone();
        if physnode.is_some() {
            e.physnode = physnode;
        }
        if vm.disks.is_some() {
            e.disks = vm.disks.clone();
        }
        e.mem_mb = vm.mem_mb.or(e.mem_mb);
        e.virt_type = vm.virt_type.clone().or(e.virt_type.take());
    }

    /// The frontend's name for `localhost`, where the dump gives one.
    pub(super) fn resolved(&self, host: &str) -> String {
        match (&self.frontend, host) {
            (Some((_, fe)), "localhost") => fe.clone(),
            _ => host.to_string(),
        }
    }

    pub(super) fn iface(&mut self, host: &str, name: &str, line: usize) -> &mut Iface {
        let list = self.ifaces.entry(self.resolved(host)).or_default();
        let k = match list.iter().position(|i| i.name == name) {
            Some(k) => k,
            None => {
                list.push(Iface {
                    line,
                    name: name.to_string(),
                    ..Iface::default()
                });
                list.len() - 1
            }
        };
        &mut list[k]
    }

    pub(super) fn read_vm_list(&mut self, rows: &[VmListRow]) -> Result<(), ImportError> {
        for row in rows {
            let name = match &row.vm {
                Some(n) => n.clone(),
                // Rocks drops the VM-HOST column when it lists one VM.
                None if self.vms.len() == 1 => self.vms.keys().next().cloned().unwrap_or_default(),
                None => {
                    return Err(ImportError::Refused {
                        origin: Origin::VmList(row.line),
                        subject: "VM list".into(),
                        fault: Fault::Dump(format!(
                            "the list has no VM-HOST column (Rocks leaves it out when it lists one VM) but the dump has {}",
                            count(self.vms.len(), "VM")
                        )),
                    })
                }
            };
            if !self.vms.contains_key(&name) {
                self.notes.push(format!(
                    "{}: {name} is not a VM of the dump; its cdrom is not imported",
                    Origin::VmList(row.line)
                ));
                continue;
            }
            if let Some(cd) = &row.cdrom {
                self.cdroms.insert(name, (row.line, cd.clone()));
            }
        }
        Ok(())
    }

    /// The appliance of a membership.
    pub(super) fn appliance_of(&self, membership: &str) -> String {
        self.memberships
            .get(membership)
            .cloned()
            .unwrap_or_else(|| appliance_by_rule(membership))
    }

    /// A host's row from its `"add host"` line and actions.
    pub(super) fn host_row(&self, h: &HostLine) -> Result<Host, (Origin, Fault)> {
        let mut host = Host {
            rack: h.host.rack,
            rank: h.host.rank,
            cpus: h.host.cpus,
            os: h.host.os.clone(),
            ..Host::new(&h.host.name, &self.appliance_of(&h.host.membership))
        };
        self.with_actions(&mut host)?;
        Ok(host)
    }

    /// `fields` and the actions the dump sets for `host`: what a merge
    /// compares of its row.
    pub(super) fn stated(&self, host: &str, fields: &[&'static str]) -> Vec<&'static str> {
        let mut out = fields.to_vec();
        if let Some(a) = self.actions.get(host) {
            for (set, field) in [
                (a.boot.is_some(), "boot action"),
                (a.install.is_some(), "install action"),
                (a.run.is_some(), "run action"),
            ] {
                if set {
                    out.push(field);
                }
            }
        }
        out
    }

    pub(super) fn with_actions(&self, host: &mut Host) -> Result<(), (Origin, Fault)> {
        if let Some(a) = self.actions.get(&host.name) {
            if let Some((line, boot)) = &a.boot {
                host.boot_action =
                    BootAction::parse(boot).map_err(|e| (Origin::Line(*line), Fault::from(e)))?;
            }
            host.run_action = a.run.clone().unwrap_or(host.run_action.clone());
            host.install_action = a.install.clone().unwrap_or(host.install_action.clone());
        }
        Ok(())
    }
}

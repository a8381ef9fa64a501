//! `kvmroll host` and `kvmroll appliance`: physical hosts and their kinds.

use super::{print_json, App, Error, Exit};
use crate::cli::{ApplianceCmd, HostCmd};
use kvmroll_cli::{print_listing, Format};
use kvmroll_core::model::BootAction;
use kvmroll_core::{Change, ClusterError, Host};
use serde_json::{json, Value};
use std::io::Write;

/// The columns of `host list`, and the fields of its JSON and `host show`'s.
const HOST_COLUMNS: &[&str] = &[
    "NAME",
    "APPLIANCE",
    "RACK",
    "RANK",
    "CPUS",
    "OS",
    "BOOT_ACTION",
    "KVM",
];

/// A host's cells under [`HOST_COLUMNS`].
fn host_row(c: &kvmroll_core::Cluster, h: &Host) -> Vec<Value> {
    vec![
        json!(h.name),
        json!(h.appliance),
        json!(h.rack),
        json!(h.rank),
        json!(h.cpus),
        json!(h.os),
        json!(h.boot_action.as_str()),
        json!(c.is_container(h)),
    ]
}

impl App<'_> {
    pub(super) fn host(&mut self, cmd: HostCmd, out: &mut dyn Write) -> Result<Exit, Error> {
        match cmd {
            HostCmd::Add {
                name,
                appliance,
                rack,
                rank,
                cpus,
                os,
            } => {
                let host = Host {
                    rack,
                    rank,
                    cpus,
                    os,
                    ..Host::new(&name, &appliance)
                };
                self.write(&mut |_| Ok(vec![Change::AddHost(host.clone())]))
                    .map(|(_, o)| o)
            }
            HostCmd::Set {
                name,
                appliance,
                rack,
                rank,
                cpus,
                os,
                boot_action,
            } => {
                let boot = boot_action.as_deref().map(BootAction::parse).transpose()?;
                self.write(&mut |c| {
                    if c.vms.contains_key(&name) {
                        return Err(ClusterError::IsVm(name.clone()));
                    }
                    let mut h = c.host(&name)?.clone();
                    if let Some(a) = &appliance {
                        h.appliance = a.clone();
                    }
                    h.rack = rack.unwrap_or(h.rack);
                    h.rank = rank.unwrap_or(h.rank);
                    h.cpus = cpus.unwrap_or(h.cpus);
                    if let Some(os) = &os {
                        h.os = os.clone();
                    }
                    h.boot_action = boot.unwrap_or(h.boot_action);
                    Ok(vec![Change::SetHost(h)])
                })
                .map(|(_, o)| o)
            }
            HostCmd::List { json, header } => {
                self.list_hosts(kvmroll_cli::Format::of(json.json, header.no_header), out)
            }
            HostCmd::Show { name, json } => self.show_host(&name, json.json, out),
            HostCmd::Remove { name } => self
                .write(&mut |_| Ok(vec![Change::RemoveHost(name.clone())]))
                .map(|(_, o)| o),
            HostCmd::Evacuate {
                container,
                parallel,
                timeout,
            } => self.evacuate(&container, parallel.into(), timeout, out),
        }
    }

    fn list_hosts(&mut self, format: Format, out: &mut dyn Write) -> Result<Exit, Error> {
        let c = self.store.snapshot()?;
        let rows: Vec<Vec<Value>> = c.hosts.values().map(|h| host_row(&c, h)).collect();
        print_listing(out, HOST_COLUMNS, &rows, format)?;
        Ok(Exit::Done)
    }

    fn show_host(&mut self, name: &str, json: bool, out: &mut dyn Write) -> Result<Exit, Error> {
        let c = self.store.snapshot()?;
        let h = c.host(name)?;
        if json {
            // The host list's fields, and the VMs it holds.
            let vms: Vec<&str> = c.vms_on(name).map(|v| v.name.as_str()).collect();
            let mut view = serde_json::Map::new();
            for (col, v) in HOST_COLUMNS.iter().zip(host_row(&c, h)) {
                view.insert(kvmroll_cli::table::json_key(col), v);
            }
            view.insert("vms".into(), json!(vms));
            print_json(out, &view)?;
            return Ok(Exit::Done);
        }
        writeln!(out, "name:         {}", h.name)?;
        writeln!(out, "appliance:    {}", h.appliance)?;
        writeln!(out, "rack:         {}", h.rack)?;
        writeln!(out, "rank:         {}", h.rank)?;
        writeln!(out, "cpus:         {}", h.cpus)?;
        writeln!(out, "os:           {}", h.os)?;
        writeln!(out, "boot action:  {}", h.boot_action.as_str())?;
        writeln!(
            out,
            "vm container: {}",
            if c.is_container(h) { "yes" } else { "no" }
        )?;
        let vms: Vec<&str> = c.vms_on(name).map(|v| v.name.as_str()).collect();
        if !vms.is_empty() {
            writeln!(out, "vms:          {}", vms.join(" "))?;
        }
        Ok(Exit::Done)
    }

    pub(super) fn appliance(
        &mut self,
        cmd: ApplianceCmd,
        out: &mut dyn Write,
    ) -> Result<Exit, Error> {
        match cmd {
            ApplianceCmd::Add { name } => self
                .write(&mut |_| Ok(vec![Change::AddAppliance(name.clone())]))
                .map(|(_, o)| o),
            ApplianceCmd::List { json, header } => {
                let c = self.store.snapshot()?;
                let rows: Vec<Vec<Value>> = c.appliances.iter().map(|a| vec![json!(a)]).collect();
                let format = Format::of(json.json, header.no_header);
                print_listing(out, &["APPLIANCE"], &rows, format)?;
                Ok(Exit::Done)
            }
        }
    }
}

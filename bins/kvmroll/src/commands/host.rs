//! `kvmroll host` and `kvmroll appliance`: physical hosts and their kinds.

use super::{print_json, App, Error, Exit};
use crate::cli::{ApplianceCmd, HostCmd};
use kvmroll_cli::print_table;
use kvmroll_core::model::BootAction;
use kvmroll_core::{Change, ClusterError, Host};
use std::io::Write;

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
            HostCmd::List { json } => self.list_hosts(json.json, out),
            HostCmd::Show { name, json } => self.show_host(&name, json.json, out),
            HostCmd::Remove { name } => self
                .write(&mut |_| Ok(vec![Change::RemoveHost(name.clone())]))
                .map(|(_, o)| o),
        }
    }

    fn list_hosts(&mut self, json: bool, out: &mut dyn Write) -> Result<Exit, Error> {
        let c = self.store.snapshot()?;
        if json {
            print_json(out, &c.hosts.values().collect::<Vec<_>>())?;
            return Ok(Exit::Done);
        }
        let rows: Vec<Vec<String>> = c
            .hosts
            .values()
            .map(|h| {
                vec![
                    h.name.clone(),
                    h.appliance.clone(),
                    h.rack.to_string(),
                    h.rank.to_string(),
                    h.cpus.to_string(),
                    h.os.clone(),
                    h.boot_action.as_str().to_string(),
                    if c.is_container(h) { "yes" } else { "no" }.to_string(),
                ]
            })
            .collect();
        print_table(
            out,
            &[
                "HOST",
                "APPLIANCE",
                "RACK",
                "RANK",
                "CPUS",
                "OS",
                "BOOT",
                "KVM",
            ],
            &rows,
        )?;
        Ok(Exit::Done)
    }

    fn show_host(&mut self, name: &str, json: bool, out: &mut dyn Write) -> Result<Exit, Error> {
        let c = self.store.snapshot()?;
        let h = c.host(name)?;
        if json {
            print_json(out, h)?;
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
            ApplianceCmd::List { json } => {
                let c = self.store.snapshot()?;
                if json.json {
                    print_json(out, &c.appliances)?;
                } else {
                    for a in &c.appliances {
                        writeln!(out, "{a}")?;
                    }
                }
                Ok(Exit::Done)
            }
        }
    }
}

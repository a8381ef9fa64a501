//! `kvmroll vm start|shutdown|destroy|console`: power through the libvirt
//! of each VM's container (its `libvirt_uri`), as Rocks' `rocks start host
//! vm`, `rocks stop host vm` and `rocks open host console` did.
//!
//! A start is libvirt's create, so it goes through the qemu hook and the
//! plugins exactly as any other start does, a restore from a managed-save
//! image included; what the hook says when it refuses reaches the user as
//! one line.

use super::{refused, App, Error, Exit};
use crate::cli::PowerArgs;
use crate::states;
use kvmroll_cli::error_chain;
use kvmroll_core::Cluster;
use kvmroll_virt::{DomainInfo, DomainState, Hypervisor, VirtError};

/// What a power command does to each VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Power {
    Start,
    Shutdown,
    Destroy,
}

impl Power {
    fn verb(self) -> &'static str {
        match self {
            Power::Start => "started",
            Power::Shutdown => "shut down",
            Power::Destroy => "destroyed",
        }
    }

    /// Whether a VM in `state` needs it: a running VM is not started again,
    /// nor an off one stopped; either is said and is no failure.
    fn needed(self, state: &DomainState) -> Result<(), &'static str> {
        let active = matches!(state, DomainState::Running | DomainState::Paused);
        match (self, active) {
            (Power::Start, true) => Err("is running already"),
            (Power::Shutdown | Power::Destroy, false) => Err("is not running"),
            _ => Ok(()),
        }
    }

    fn act(self, hv: &dyn Hypervisor, name: &str) -> Result<(), VirtError> {
        match self {
            Power::Start => hv.start(name),
            Power::Shutdown => hv.shutdown(name),
            Power::Destroy => hv.destroy(name),
        }
    }
}

impl App<'_> {
    /// The VMs a power command names, each with its container: unknown or
    /// unplaced names are refused before anything is done.
    fn power_targets(&self, c: &Cluster, args: &PowerArgs) -> Result<Vec<(String, String)>, Error> {
        if args.all {
            if let Some(ct) = &args.container {
                c.host(ct)?;
            }
            return Ok(c
                .vms
                .values()
                .filter(|v| args.container.is_none() || v.container == args.container)
                .filter_map(|v| Some((v.name.clone(), v.container.clone()?)))
                .collect());
        }
        args.names
            .iter()
            .map(|name| match &c.vm(name)?.container {
                Some(ct) => Ok((name.clone(), ct.clone())),
                None => Err(refused(format!("VM {name} is placed on no container"))),
            })
            .collect()
    }

    /// `vm start`, `vm shutdown`, `vm destroy`: every container asked at
    /// once for its domains (within --timeout, so that one that hangs costs
    /// that once), then each VM in turn. With one VM its failure is the
    /// command's one line; with several each failure has a line and a
    /// count ends them.
    pub(super) fn power(&mut self, op: Power, args: PowerArgs) -> Result<Exit, Error> {
        let c = self.store.snapshot()?;
        let targets = self.power_targets(&c, &args)?;
        let uris: Vec<String> = targets.iter().map(|(_, ct)| self.uri(&c, ct)).collect();
        let answers = states::ask(
            &self.connector,
            &uris.iter().cloned().collect(),
            args.timeout.limit,
        );
        let mut failed = Vec::new();
        for ((name, container), uri) in targets.iter().zip(&uris) {
            let done = match &answers[uri] {
                Ok(domains) => self.power_one(op, name, container, uri, domains.get(name)),
                Err(why) => Err(refused(format!(
                    "VM {name}: cannot reach {container}: {why}"
                ))),
            };
            match done {
                Ok(said) => eprintln!("kvmroll: VM {name} {said}"),
                Err(e) => failed.push(e),
            }
        }
        match failed.len() {
            0 => Ok(Exit::Done),
            1 if targets.len() == 1 => Err(failed.remove(0)),
            n => {
                for e in &failed {
                    eprintln!("kvmroll: {}", error_chain(e));
                }
                Err(refused(format!(
                    "{n} of {} VM(s) could not be {}",
                    targets.len(),
                    op.verb()
                )))
            }
        }
    }

    /// Powers one VM, `domain` as its container listed it (`None`: not
    /// defined there); what happened, to be said after its name.
    fn power_one(
        &mut self,
        op: Power,
        name: &str,
        container: &str,
        uri: &str,
        domain: Option<&DomainInfo>,
    ) -> Result<String, Error> {
        let Some(d) = domain else {
            return Err(refused(format!(
                "VM {name} is not defined on {container}: run `kvmroll vm define {name}`"
            )));
        };
        if let Err(already) = op.needed(&d.state) {
            return Ok(already.to_string());
        }
        let hv = self
            .sync
            .conn(uri)
            .map_err(|e| refused(format!("VM {name}: cannot reach {container}: {e}")))?;
        op.act(hv, name)?;
        Ok(match op {
            Power::Shutdown => format!("asked to shut down on {container}"),
            _ if d.has_managed_save => {
                format!("{} on {container}, from its saved state", op.verb())
            }
            _ => format!("{} on {container}", op.verb()),
        })
    }

    /// `vm console`: replaces this process with virsh's console on the
    /// VM's container, so the terminal is virsh's alone.
    pub(super) fn console(&mut self, name: &str) -> Result<Exit, Error> {
        use std::os::unix::process::CommandExt;
        let c = self.store.snapshot()?;
        let Some(container) = c.vm(name)?.container.clone() else {
            return Err(refused(format!("VM {name} is placed on no container")));
        };
        let uri = self.uri(&c, &container);
        eprintln!("kvmroll: virsh -c {uri} console {name}");
        let source = std::process::Command::new("virsh")
            .args(["-c", &uri, "console", name])
            .exec();
        Err(Error::Run {
            program: "virsh".into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_state_needs_is_done() {
        use DomainState::*;
        assert!(Power::Start.needed(&ShutOff).is_ok());
        assert_eq!(Power::Start.needed(&Running), Err("is running already"));
        assert!(Power::Shutdown.needed(&Paused).is_ok());
        assert_eq!(Power::Destroy.needed(&ShutOff), Err("is not running"));
        assert!(Power::Start.needed(&Other("crashed".into())).is_ok());
    }
}

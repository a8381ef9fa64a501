//! The checks before a migration, each refusal one line. They read one
//! snapshot of the database and ask both containers' libvirt.

use crate::{
    MigrateError, Migrator, ADDRESS_ATTR, DEFAULT_TIMEOUT, MIGRATING_FROM, TIMEOUT_ATTR,
    TRANSPORT_ATTR,
};
use kvmroll_core::attrs::known;
use kvmroll_core::{Change, Cluster, Host, Plan, Scope};
use kvmroll_virt::{DomainState, Hypervisor, NodeResources, Transport};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the checks found: all a run needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub vm: String,
    /// The container it is on, and the one it goes to.
    pub from: String,
    pub to: String,
    /// The containers' libvirt as this machine reaches them.
    pub from_uri: String,
    pub to_uri: String,
    /// The destination's libvirt as the source's libvirtd reaches it, which
    /// connects to it (peer to peer): `to_uri` names this machine's own
    /// libvirt `qemu:///system` when the destination is this machine.
    pub peer_uri: String,
    /// It runs (a live migration), or is shut off (an offline move, which
    /// is the definition's alone: the caller's `vm set --container`).
    pub running: bool,
    pub transport: Transport,
    /// QEMU's migration URI for a native transport, from the destination's
    /// `kvm_migrate_address` (`tcp://ADDRESS`); `None`: libvirt's default.
    pub migrate_uri: Option<String>,
    /// The VM's `kvm_migrate_timeout`.
    pub timeout: Duration,
}

/// The CPUs of `container` (its `cpus` in the database) not given to the
/// VMs placed on it, running or not: a VM placed there is promised its
/// vCPUs, and `pin_auto` hands them out as dedicated CPUs. Negative where
/// the container is overcommitted already. kvmroll does not overcommit
/// CPUs when it moves a VM; a site that does moves it stopped, by hand.
pub fn free_cpus(c: &Cluster, container: &str) -> i64 {
    let cpus = c.hosts.get(container).map_or(0, |h| i64::from(h.cpus));
    let given: i64 = c.vms_on(container).map(|v| i64::from(v.vcpus)).sum();
    cpus - given
}

/// The VM's `kvm_migrate_timeout`, or [`DEFAULT_TIMEOUT`].
pub fn timeout_of(c: &Cluster, vm: &str) -> Duration {
    c.attr_of(vm, TIMEOUT_ATTR)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
}

/// `tcp://ADDRESS` (`tcp://[ADDRESS]` for IPv6) from the container's
/// `kvm_migrate_address`, or `None` where it is unset.
pub fn native_uri(c: &Cluster, container: &str) -> Option<String> {
    let address = c.attr_of(container, ADDRESS_ATTR)?.trim();
    Some(match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("tcp://[{v6}]"),
        _ => format!("tcp://{address}"),
    })
}

/// The changes that place `vm` on `to`, marked as migrating from `from`.
pub(crate) fn placing(
    c: &Cluster,
    vm: &str,
    from: &str,
    to: &str,
) -> Result<Vec<Change>, kvmroll_core::ClusterError> {
    let mut moved = c.vm(vm)?.clone();
    moved.container = Some(to.to_owned());
    Ok(vec![
        Change::SetVm(moved),
        Change::SetAttr {
            scope: Scope::Host(vm.to_owned()),
            name: MIGRATING_FROM.to_owned(),
            value: from.to_owned(),
        },
    ])
}

/// Whether libvirt's state is one a migration moves (a VM whose QEMU runs).
pub(crate) fn active(state: &DomainState) -> bool {
    matches!(state, DomainState::Running | DomainState::Paused)
}

/// The source path of each disk of a domain XML, by its target.
fn disk_paths(xml: &str) -> BTreeMap<String, String> {
    let Ok(doc) = kvmroll_core::xml::parse_document(xml) else {
        return BTreeMap::new();
    };
    let mut disks = Vec::new();
    doc.descendants("disk", &mut disks);
    disks
        .iter()
        .filter_map(|d| {
            let dev = d.child("target")?.attr("dev")?;
            let src = d.child("source")?;
            let path = ["file", "dev", "name", "volume"]
                .iter()
                .find_map(|a| src.attr(a))?;
            Some((dev.to_owned(), path.to_owned()))
        })
        .collect()
}

impl Migrator<'_> {
    /// Whether `vm` may move to container `to` now; what a run needs.
    pub fn check(&self, vm: &str, to: &str) -> Result<Checked, MigrateError> {
        let c = self.db().snapshot()?;
        self.check_in(&c, vm, to)
    }

    /// Opens `container`'s libvirt.
    pub(crate) fn connect(
        &self,
        container: &str,
        uri: &str,
    ) -> Result<Box<dyn Hypervisor>, MigrateError> {
        self.connector
            .connect(uri)
            .map_err(|source| MigrateError::Unreachable {
                container: container.to_owned(),
                source: Box::new(source),
            })
    }

    /// [`Migrator::check`] against the snapshot `c`.
    pub(crate) fn check_in(
        &self,
        c: &Cluster,
        vm: &str,
        to: &str,
    ) -> Result<Checked, MigrateError> {
        let v = c.vm(vm)?;
        let (from, plan) = check_placement(c, vm, to)?;
        let from_uri = c.libvirt_uri(&from, &self.local_host);
        let to_uri = c.libvirt_uri(to, &self.local_host);
        let peer_uri = c.libvirt_uri(to, &from);
        let src = self.connect(&from, &from_uri)?;
        let running = match src.domain(vm) {
            Ok(d) => d.is_some_and(|d| active(&d.state)),
            Err(source) => {
                return Err(MigrateError::Ask {
                    vm: vm.to_owned(),
                    container: from,
                    source: Box::new(source),
                })
            }
        };
        let dst = self.connect(to, &to_uri)?;
        let node = dst.node().map_err(|source| MigrateError::Unreachable {
            container: to.to_owned(),
            source: Box::new(source),
        })?;
        if v.vcpus > node.cpus {
            return Err(MigrateError::NodeCpus {
                vm: vm.to_owned(),
                to: to.to_owned(),
                vcpus: v.vcpus,
                cpus: node.cpus,
            });
        }
        let own = c.host(vm)?;
        if running {
            check_live(c, own, to, &node, &plan)?;
        }
        let transport = match c.attr(own, TRANSPORT_ATTR) {
            Some("native") => Transport::Native,
            _ => Transport::Tunnelled,
        };
        let migrate_uri = match transport {
            Transport::Native => native_uri(c, to),
            Transport::Tunnelled => None,
        };
        let timeout = timeout_of(c, vm);
        Ok(Checked {
            vm: vm.to_owned(),
            from,
            to: to.to_owned(),
            from_uri,
            to_uri,
            peer_uri,
            running,
            transport,
            migrate_uri,
            timeout,
        })
    }
}

/// The checks the database alone answers: `vm` is placed, elsewhere than
/// `to`, a container with the CPUs free, and its definition renders
/// there. Returns the container it is on and the plan of the move.
fn check_placement(c: &Cluster, vm: &str, to: &str) -> Result<(String, Plan), MigrateError> {
    let v = c.vm(vm)?;
    let refuse_vm = vm.to_owned();
    let from = v.container.clone().ok_or_else(|| MigrateError::NotPlaced {
        vm: refuse_vm.clone(),
    })?;
    if from == to {
        return Err(MigrateError::SameContainer {
            vm: refuse_vm,
            container: from,
        });
    }
    if !c.is_container(c.host(to)?) {
        return Err(MigrateError::NotAContainer { to: to.to_owned() });
    }
    let free = free_cpus(c, to);
    if free < i64::from(v.vcpus) {
        return Err(MigrateError::Cpus {
            vm: refuse_vm,
            to: to.to_owned(),
            need: v.vcpus,
            free,
            cpus: c.hosts.get(to).map_or(0, |h| h.cpus),
        });
    }
    // Rendered as it would be there: pin_auto takes the destination's
    // free CPUs, and a pinning it cannot honour is refused.
    let plan = placing(c, vm, &from, to)
        .and_then(|changes| c.plan(&changes))
        .map_err(|source| MigrateError::Placement {
            vm: refuse_vm,
            to: to.to_owned(),
            source: Box::new(source),
        })?;
    Ok((from, plan))
}

/// The checks a running VM adds: the destination's free memory, no host
/// device passed through, and its disks at the same paths there.
fn check_live(
    c: &Cluster,
    own: &Host,
    to: &str,
    node: &NodeResources,
    plan: &Plan,
) -> Result<(), MigrateError> {
    let vm = own.name.as_str();
    let v = c.vm(vm)?;
    let need = u64::from(v.memory_mib);
    if node.free_memory >> 20 < need {
        return Err(MigrateError::Memory {
            vm: vm.to_owned(),
            to: to.to_owned(),
            need_mib: need,
            free_mib: node.free_memory >> 20,
        });
    }
    let hostdev = c.resolve(own).into_values().find(|r| {
        known::lookup(&r.name).is_some_and(|k| k.name == "kvm_device_N")
            && r.value.contains("<hostdev")
    });
    if let Some(r) = hostdev {
        return Err(MigrateError::Hostdev {
            vm: vm.to_owned(),
            attr: r.name,
        });
    }
    let here = disk_paths(&kvmroll_core::render_domain(c, vm)?);
    let there = plan
        .changed
        .get(vm)
        .and_then(|x| x.as_deref())
        .map(disk_paths)
        .unwrap_or_default();
    for (dev, path) in &here {
        let other = there.get(dev).cloned().unwrap_or_default();
        if &other != path {
            return Err(MigrateError::Disks {
                vm: vm.to_owned(),
                dev: dev.clone(),
                paths: Box::new((path.clone(), other)),
                to: to.to_owned(),
            });
        }
    }
    Ok(())
}

//! Where each VM leaving a container goes: a pure decision over the
//! database's snapshot and the free memory each destination's libvirt
//! reported, so that it is tested without a daemon.
//!
//! A destination must have, after the VMs this evacuation already sends
//! it: the VM's vCPUs free among its `cpus` (the database's count against
//! the vCPUs of the VMs it holds: the migration library's `free_cpus`, no
//! overcommit, as its check), the VM's memory free
//! (libvirt's free memory less what this evacuation sends there), and a
//! pinning [`Cluster::plan`] accepts with the VM placed there (`pin_auto`
//! picks the destination's CPUs; a `pin_all` or raw pinning it cannot
//! honour is refused). The largest VMs are placed first, while there is
//! most room; each goes where most room is left (CPUs, then memory), so
//! that an evacuation spreads its VMs rather than filling one container,
//! as oVirt's "evenly distributed" and Proxmox's HA rebalancing do. A VM
//! that fits nowhere is reported with each destination's reason.

use kvmroll_core::{Change, Cluster, Vm};
use kvmroll_migrate::free_cpus;
use std::collections::BTreeMap;
use std::fmt;

/// A VM sent to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub vm: String,
    pub to: String,
}

/// A VM that fits on no destination, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub vm: String,
    pub why: String,
}

/// The decision: the moves, largest VM first, and the VMs left where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub moves: Vec<Move>,
    pub stuck: Vec<Stuck>,
}

/// Why one destination cannot take one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoRoom {
    Cpus { free: i64, need: u32 },
    Memory { free: u64, need: u64 },
    Pinning(String),
}

impl fmt::Display for NoRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoRoom::Cpus { free, need } => {
                write!(f, "{} CPU(s) free, {need} needed", (*free).max(0))
            }
            NoRoom::Memory { free, need } => {
                write!(f, "{} MiB free, {} MiB needed", free >> 20, need >> 20)
            }
            NoRoom::Pinning(why) => write!(f, "{why}"),
        }
    }
}

/// The VM's memory in bytes.
fn memory_of(vm: &Vm) -> u64 {
    u64::from(vm.memory_mib) << 20
}

/// Places `vms` (on `source`) on the containers of `free_memory` (those
/// that answered, with their free memory in bytes), `source` excluded.
/// Names the database does not know are stuck.
pub fn place(
    cluster: &Cluster,
    source: &str,
    vms: &[String],
    free_memory: &BTreeMap<String, u64>,
) -> Placement {
    let mut out = Placement::default();
    let mut order: Vec<&Vm> = Vec::new();
    for name in vms {
        match cluster.vms.get(name) {
            Some(vm) => order.push(vm),
            None => out.stuck.push(Stuck {
                vm: name.clone(),
                why: "the database does not know it".into(),
            }),
        }
    }
    // Largest first: memory, then vCPUs; by name among equals, so that the
    // decision does not depend on the order libvirt listed them.
    order.sort_by(|a, b| {
        (b.memory_mib, b.vcpus)
            .cmp(&(a.memory_mib, a.vcpus))
            .then_with(|| a.name.cmp(&b.name))
    });
    let dests: Vec<&String> = free_memory.keys().filter(|d| *d != source).collect();
    // The cluster as the moves decided so far leave it, and the memory they take.
    let mut now = cluster.clone();
    let mut sent: BTreeMap<&str, u64> = BTreeMap::new();
    for vm in order {
        let mut best: Option<(&String, Cluster, (i64, u64))> = None;
        let mut refusals = Vec::new();
        for dest in &dests {
            let left =
                free_memory[*dest].saturating_sub(sent.get(dest.as_str()).copied().unwrap_or(0));
            match fits(&now, vm, dest, left) {
                Ok(after) => {
                    let room = (free_cpus(&after, dest), left - memory_of(vm));
                    if best.as_ref().is_none_or(|(_, _, r)| room > *r) {
                        best = Some((dest, after, room));
                    }
                }
                Err(why) => refusals.push(format!("{dest}: {why}")),
            }
        }
        match best {
            Some((dest, after, _)) => {
                now = after;
                *sent.entry(dest.as_str()).or_default() += memory_of(vm);
                out.moves.push(Move {
                    vm: vm.name.clone(),
                    to: dest.clone(),
                });
            }
            None => out.stuck.push(Stuck {
                vm: vm.name.clone(),
                why: if refusals.is_empty() {
                    "no other VM container answers".to_string()
                } else {
                    format!("no container has room ({})", refusals.join("; "))
                },
            }),
        }
    }
    out
}

/// Whether `dest`, with `memory` bytes free, takes `vm` in `cluster`: the
/// cluster with the VM placed there, or why not.
fn fits(cluster: &Cluster, vm: &Vm, dest: &str, memory: u64) -> Result<Cluster, NoRoom> {
    let free = free_cpus(cluster, dest);
    if free < i64::from(vm.vcpus) {
        return Err(NoRoom::Cpus {
            free,
            need: vm.vcpus,
        });
    }
    if memory < memory_of(vm) {
        return Err(NoRoom::Memory {
            free: memory,
            need: memory_of(vm),
        });
    }
    let moved = Vm {
        container: Some(dest.to_string()),
        ..vm.clone()
    };
    match cluster.plan(&[Change::SetVm(moved)]) {
        Ok(plan) => Ok(plan.after),
        Err(e) => Err(NoRoom::Pinning(kvmroll_core::error_chain(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::vm;
    use kvmroll_core::Scope;

    const GIB: u64 = 1 << 30;

    /// Containers a (8 CPUs), b and c (`cpus` each), and `vms` on them.
    fn cluster(cpus: u32, vms: &[Vm]) -> Cluster {
        crate::fake::cluster(&[("a", 8), ("b", cpus), ("c", cpus)], vms)
    }

    fn names(vms: &[&str]) -> Vec<String> {
        vms.iter().map(|s| s.to_string()).collect()
    }

    fn memory(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
        entries.iter().map(|(n, b)| (n.to_string(), *b)).collect()
    }

    fn moves(p: &Placement) -> Vec<(&str, &str)> {
        p.moves
            .iter()
            .map(|m| (m.vm.as_str(), m.to.as_str()))
            .collect()
    }

    #[test]
    fn largest_first_and_spread_over_the_destinations() {
        let c = cluster(
            4,
            &[
                vm("small", "a", 1, 128),
                vm("big", "a", 2, 2048),
                vm("mid", "a", 1, 1024),
            ],
        );
        let p = place(
            &c,
            "a",
            &names(&["small", "big", "mid"]),
            &memory(&[("b", 8 * GIB), ("c", 8 * GIB)]),
        );
        // big to b (the first of equals), mid to c (more CPUs left), small
        // to c (b 2 free, c 3 free).
        assert_eq!(moves(&p), [("big", "b"), ("mid", "c"), ("small", "c")]);
        assert!(p.stuck.is_empty(), "{:?}", p.stuck);
    }

    #[test]
    fn cpus_held_by_a_destinations_vms_count_and_a_vm_without_room_is_stuck() {
        let c = cluster(
            2,
            &[
                vm("v1", "a", 1, 128),
                vm("v2", "a", 1, 128),
                vm("v3", "a", 1, 128),
                vm("resident", "b", 1, 128),
            ],
        );
        // b has one CPU free; c is not asked (it did not answer).
        let p = place(
            &c,
            "a",
            &names(&["v1", "v2", "v3"]),
            &memory(&[("b", 8 * GIB)]),
        );
        assert_eq!(moves(&p), [("v1", "b")]);
        let stuck: Vec<&str> = p.stuck.iter().map(|s| s.vm.as_str()).collect();
        assert_eq!(stuck, ["v2", "v3"]);
        assert!(
            p.stuck[0].why.contains("b: 0 CPU(s) free, 1 needed"),
            "{}",
            p.stuck[0].why
        );
    }

    #[test]
    fn memory_this_evacuation_sends_is_counted() {
        let c = cluster(8, &[vm("v1", "a", 1, 512), vm("v2", "a", 1, 512)]);
        // Room for one 512 MiB VM in b's 700 MiB.
        let p = place(&c, "a", &names(&["v1", "v2"]), &memory(&[("b", 700 << 20)]));
        assert_eq!(moves(&p), [("v1", "b")]);
        assert_eq!(p.stuck.len(), 1);
        assert!(
            p.stuck[0].why.contains("b: 188 MiB free, 512 MiB needed"),
            "{}",
            p.stuck[0].why
        );
    }

    #[test]
    fn pin_auto_takes_the_destinations_free_cpus_and_pin_all_must_fit() {
        let mut c = cluster(
            2,
            &[
                vm("auto", "a", 2, 128),
                vm("all", "a", 4, 128),
                vm("resident", "b", 1, 128),
            ],
        );
        for (v, p) in [("auto", "pin_auto"), ("all", "pin_all")] {
            c.apply(&Change::SetAttr {
                scope: Scope::Host(v.into()),
                name: "kvm_cpu_pinning".into(),
                value: p.into(),
            })
            .unwrap();
        }
        // b: 1 CPU free; c: 2. `all` needs 4 CPUs on a 2-CPU host: its
        // CPU count already refuses it; `auto` fits c only.
        let p = place(
            &c,
            "a",
            &names(&["auto", "all"]),
            &memory(&[("b", GIB), ("c", GIB)]),
        );
        assert_eq!(moves(&p), [("auto", "c")]);
        assert_eq!(p.stuck.len(), 1);
        assert_eq!(p.stuck[0].vm, "all");
    }

    #[test]
    fn a_pinning_the_destination_cannot_honour_is_refused_by_the_plan() {
        let mut c = cluster(2, &[vm("raw", "a", 1, 128)]);
        c.apply(&Change::SetAttr {
            scope: Scope::Host("raw".into()),
            name: "kvm_cpu_pinning".into(),
            value: "<cputune><vcpupin vcpu='0' cpuset='6'/></cputune>".into(),
        })
        .unwrap();
        let p = place(&c, "a", &names(&["raw"]), &memory(&[("b", GIB)]));
        assert!(p.moves.is_empty(), "{:?}", p.moves);
        assert!(
            p.stuck[0].why.starts_with("no container has room (b: "),
            "{}",
            p.stuck[0].why
        );
    }

    #[test]
    fn with_no_destination_answering_every_vm_is_stuck_and_the_source_is_never_one() {
        let c = cluster(8, &[vm("v1", "a", 1, 128)]);
        let p = place(
            &c,
            "a",
            &names(&["v1", "gone"]),
            &memory(&[("a", 64 * GIB)]),
        );
        assert!(p.moves.is_empty());
        let why: Vec<(&str, &str)> = p
            .stuck
            .iter()
            .map(|s| (s.vm.as_str(), s.why.as_str()))
            .collect();
        assert_eq!(
            why,
            [
                ("gone", "the database does not know it"),
                ("v1", "no other VM container answers")
            ]
        );
    }
}

//! Planning a write: every write goes through [`Cluster::plan`], which
//! applies the changes to a copy of the cluster, checks them, and renders
//! the VMs they touch before and after, so that a change that would break
//! a VM's definition is refused before it reaches the store, and the caller
//! learns which libvirt definitions must be refreshed. It sits above both
//! the cluster and the renderer.

use crate::cluster::{Change, Cluster, ClusterError};
use crate::model::Scope;
use crate::render::Renderer;
use std::collections::{BTreeMap, BTreeSet};

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
mod tests {
    use crate::cluster::tests::{set, small_cluster, vm};
    use crate::cluster::Change;
    use crate::model::Scope;

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
}

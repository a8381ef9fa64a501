//! At boot, with the database answering: definitions libvirt lacks or has
//! stale are defined again from the database before any VM starts.

use kvmroll_core::metadata::Metadata;
use kvmroll_virt::Hypervisor;

/// Why libvirt's definition of a VM needs defining again from the
/// database: it lacks kvmroll's metadata (defined before it), is of an
/// older generation than the database's rows, or the VM is marked stale
/// (a change that did not reach this container). `None`: it is current.
fn stale_definition(xml: &str, vm: &kvmroll_core::Vm) -> Option<String> {
    let meta = kvmroll_core::xml::parse_document(xml)
        .ok()
        .and_then(|doc| Metadata::find(&doc).ok().flatten());
    match meta {
        None => Some("it has no kvmroll metadata".into()),
        Some(m) if m.generation < vm.generation => Some(format!(
            "it is generation {}, the database's is {}",
            m.generation, vm.generation
        )),
        Some(_) if vm.stale => Some("the database marks it stale".into()),
        Some(_) => None,
    }
}

/// At boot, with the database answering: defines in libvirt this
/// container's VMs it lacks (a reinstalled container) or has stale (changes
/// made while the container was down or unreachable), before any starts.
/// A failure is logged; the VM is started with what libvirt has.
pub(super) fn define_from_database(
    hv: &dyn Hypervisor,
    cluster: &kvmroll_core::Cluster,
    host: &str,
) {
    let mut renderer = kvmroll_core::Renderer::new(cluster);
    for vm in cluster.vms_on(host) {
        let name = &vm.name;
        let why = match hv.domain(name) {
            Ok(None) => Some("libvirt lacks it".to_string()),
            Ok(Some(_)) => match hv.xml(name, true) {
                Ok(xml) => stale_definition(&xml, vm),
                Err(e) => {
                    log::warn!(
                        "VM {name}: cannot read its definition: {}",
                        kvmroll_core::error_chain(&e)
                    );
                    None
                }
            },
            Err(e) => {
                log::warn!(
                    "VM {name}: cannot look it up: {}",
                    kvmroll_core::error_chain(&e)
                );
                None
            }
        };
        let Some(why) = why else { continue };
        let defined = renderer
            .render(name)
            .map_err(|e| kvmroll_core::error_chain(&e))
            .and_then(|xml| hv.define(&xml).map_err(|e| kvmroll_core::error_chain(&e)));
        match defined {
            Ok(()) => log::info!("VM {name}: defined from the database ({why})"),
            Err(e) => log::error!("VM {name}: cannot define it from the database ({why}): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmroll_core::{Change, Cluster, Host};

    /// A definition libvirt has is defined again from the database when it
    /// lacks metadata, is of an older generation, or is marked stale.
    #[test]
    fn old_or_bare_definitions_are_stale() {
        let mut c = Cluster::seeded();
        c.apply(&Change::AddHost(Host::new("c0", "vm-container")))
            .unwrap();
        let vm = crate::service::tests::vm_on_c0("a", 1);
        let plan = c.plan(&[Change::AddVm(vm)]).unwrap();
        let current = plan.changed["a"].clone().unwrap();
        let mut vm = plan.after.vm("a").unwrap().clone();
        assert_eq!(stale_definition(&current, &vm), None);
        let bare = "<domain type='kvm'><name>a</name></domain>";
        assert!(stale_definition(bare, &vm)
            .unwrap()
            .contains("no kvmroll metadata"));
        vm.generation += 1;
        assert_eq!(
            stale_definition(&current, &vm).unwrap(),
            "it is generation 1, the database's is 2"
        );
        vm.generation -= 1;
        vm.stale = true;
        assert!(stale_definition(&current, &vm).is_some());
    }
}

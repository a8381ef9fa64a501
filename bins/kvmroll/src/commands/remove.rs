//! `kvmroll vm remove`: the VM's rows, its definition, and (asked) the
//! images kvmroll made for it.

use super::{refused, App, Error, Exit};
use crate::sync::SyncMode;
use kvmroll_cli::error_chain;
use kvmroll_core::model::DiskKind;
use kvmroll_core::{Change, Cluster, MadeImage};
use kvmroll_virt::DomainState;

impl App<'_> {
    pub(super) fn remove_vm(&mut self, name: &str, delete_disks: bool) -> Result<Exit, Error> {
        if delete_disks && self.sync.mode != SyncMode::Live {
            return Err(refused(
                "--delete-disks deletes images through the container's libvirt: not with \
                 --no-sync, nor inside a hook stage",
            ));
        }
        let c = self.store.snapshot()?;
        let vm = c.vm(name)?;
        // Read before the VM's rows go, and its records with them.
        let made = self.store.made_images(name)?;
        let mut defined_at = None;
        let mut missed = Vec::new();
        if let (Some(container), SyncMode::Live) = (&vm.container, self.sync.mode) {
            let uri = self.uri(&c, container);
            match self
                .sync
                .conn(&uri)
                .and_then(|hv| hv.domain(name).map_err(|e| error_chain(&e)))
            {
                Ok(Some(d)) if d.state != DomainState::ShutOff => {
                    return Err(refused(format!(
                        "VM {name} is running on {container}; shut it down before removing it"
                    )))
                }
                Ok(Some(_)) => defined_at = Some(uri),
                Ok(None) => {}
                Err(reason) => missed.push((container.clone(), reason)),
            }
        }
        // Its neighbours' pin_auto CPUs can move: they are refreshed as any
        // write's are.
        let (_, refreshed) = self.write(&mut |_| Ok(vec![Change::RemoveVm(name.to_string())]))?;
        if let Some(uri) = defined_at {
            let result = self
                .sync
                .conn(&uri)
                .and_then(|hv| hv.undefine(name).map_err(|e| error_chain(&e)));
            if let Err(reason) = result {
                missed.push((uri, reason));
            }
        }
        for (place, reason) in &missed {
            eprintln!(
                "kvmroll: warning: VM {name} was removed from the database but its libvirt \
                 definition on {place} may remain ({reason}); remove it with virsh undefine"
            );
        }
        let kept = if delete_disks {
            self.delete_images(&c, name, &made)
        } else {
            report_images_kept(&c, name, &made);
            true
        };
        Ok(if missed.is_empty() && kept {
            refreshed
        } else {
            Exit::Stale
        })
    }

    /// Deletes the images kvmroll made for a removed VM, on their
    /// containers; one still used by another VM is kept. False when one
    /// could not be deleted (each is said).
    pub(super) fn delete_images(&mut self, c: &Cluster, name: &str, made: &[MadeImage]) -> bool {
        let mut all = true;
        for m in made {
            let user = c.vms.values().find(|v| {
                v.name != name
                    && v.container.as_deref() == Some(m.container.as_str())
                    && v.disks.iter().any(|d| d.path == m.path)
            });
            if let Some(other) = user {
                eprintln!(
                    "kvmroll: VM {name}: image {} on {} is kept: VM {} uses it",
                    m.path, m.container, other.name
                );
                continue;
            }
            let uri = self.uri(c, &m.container);
            let deleted = self
                .sync
                .conn(&uri)
                .and_then(|hv| hv.delete_image(&m.path).map_err(|e| error_chain(&e)));
            match deleted {
                Ok(true) => eprintln!(
                    "kvmroll: VM {name}: image {} deleted on {}",
                    m.path, m.container
                ),
                Ok(false) => eprintln!(
                    "kvmroll: VM {name}: image {} on {} was gone already",
                    m.path, m.container
                ),
                Err(e) => {
                    all = false;
                    eprintln!(
                        "kvmroll: warning: VM {name}: image {} on {} could not be deleted ({e}); \
                         delete it by hand",
                        m.path, m.container
                    );
                }
            }
        }
        if let Ok(vm) = c.vm(name) {
            for d in vm.disks.iter().filter(|d| d.kind != DiskKind::Block) {
                if !made.iter().any(|m| m.path == d.path) {
                    eprintln!(
                        "kvmroll: VM {name}: {} was not made by kvmroll: left as it is",
                        d.path
                    );
                }
            }
        }
        all
    }
}

/// Says where a removed VM's disk images stay: its image files, and the
/// images kvmroll made for it that it no longer lists.
fn report_images_kept(c: &Cluster, name: &str, made: &[MadeImage]) {
    let Ok(vm) = c.vm(name) else { return };
    let mut images: Vec<String> = vm
        .disks
        .iter()
        .filter(|d| d.kind != DiskKind::Block)
        .map(|d| d.path.clone())
        .collect();
    for m in made {
        if !images.contains(&m.path) {
            images.push(m.path.clone());
        }
    }
    if images.is_empty() {
        return;
    }
    eprintln!(
        "kvmroll: VM {name}: its disk images stay on {}: {}",
        vm.container.as_deref().unwrap_or("its container"),
        images.join(", ")
    );
}

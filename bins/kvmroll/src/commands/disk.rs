//! `kvmroll vm disk resize`: the database, the definition, and a running
//! VM's disk.

use super::{refused, App, Error, Exit};
use crate::sync::SyncMode;
use kvmroll_cli::error_chain;
use kvmroll_core::disks::{self, Roots, ROOTS_ATTR};
use kvmroll_core::model::DiskKind;
use kvmroll_core::{ClusterError, Plan};
use kvmroll_virt::DomainState;
impl App<'_> {
    /// `vm disk resize`: the database first (the size, and a grow for the
    /// next start), then, while the VM runs, libvirt's live block resize.
    pub(super) fn resize_disk(&mut self, name: &str, dev: &str, gib: u32) -> Result<Exit, Error> {
        let c = self.store.snapshot()?;
        let vm = c.vm(name)?;
        let disk =
            vm.disks
                .iter()
                .find(|d| d.dev == dev)
                .ok_or_else(|| ClusterError::UnknownDisk {
                    vm: name.to_string(),
                    dev: dev.to_string(),
                })?;
        if disk.kind == DiskKind::Block {
            return Err(refused(format!(
                "disk {dev} of VM {name} is the block device {}: grow it where it is provided; \
                 kvmroll grows image files only",
                disk.path
            )));
        }
        let roots = Roots::of(c.attr_of(name, ROOTS_ATTR)).map_err(refused)?;
        if !roots.contains(&disk.path) {
            return Err(refused(format!(
                "disk {dev} of VM {name} is {}, outside {ROOTS_ATTR} ({roots}): kvmroll grows \
                 images there only",
                disk.path
            )));
        }
        self.store.grow_disk(name, dev, gib)?;
        // The definition holds the size (kvmroll's metadata), which the
        // hook reads at the next start: it goes to libvirt now.
        let after = self.store.snapshot()?;
        let plan = Plan {
            changed: [(
                name.to_string(),
                Some(kvmroll_core::render_domain(&after, name)?),
            )]
            .into(),
            after,
        };
        let redefined = self.after_write(&plan)?;
        if let (Some(container), SyncMode::Live) = (&vm.container, self.sync.mode) {
            let uri = self.uri(&c, container);
            let live = self.sync.conn(&uri).and_then(|hv| {
                match hv.domain(name).map_err(|e| error_chain(&e))? {
                    Some(d) if matches!(d.state, DomainState::Running | DomainState::Paused) => hv
                        .grow_disk(name, dev, disks::gib_bytes(gib))
                        .map(Some)
                        .map_err(|e| error_chain(&e)),
                    _ => Ok(None),
                }
            });
            match live {
                Ok(Some(_)) => {
                    self.store.record_disk_work(
                        name,
                        container,
                        &[],
                        std::slice::from_ref(&disk.path),
                    )?;
                    eprintln!("kvmroll: VM {name}: disk {dev} is {gib} GiB, grown while it runs");
                    return Ok(redefined);
                }
                Ok(None) => {}
                Err(e) => eprintln!(
                    "kvmroll: warning: VM {name}: disk {dev} could not be grown while it runs ({e})"
                ),
            }
        }
        eprintln!("kvmroll: VM {name}: disk {dev} grows to {gib} GiB at its next start");
        Ok(redefined)
    }
}

//! `kvmroll vm cdrom VM PATH|none [--live]`: the database and the
//! definition, and with --live the medium of the running VM (libvirt's
//! media change, as `virsh change-media --live` and Proxmox's `qm set
//! --cdrom` do).
//!
//! The running VM is changed first: a medium its QEMU refuses (a path that
//! does not exist on the container) is then refused with nothing changed.

use super::{refused, App, Error, Exit};
use crate::sync::SyncMode;
use kvmroll_core::model::check_abs_path;
use kvmroll_core::xml::{escape_attr, parse_document, Element};
use kvmroll_virt::DomainState;

/// The `<disk>` element that puts `cdrom` (or no medium) in the running
/// VM's drive `drive`, which keeps its target, bus and type.
fn drive_with(drive: &Element, cdrom: Option<&str>) -> String {
    let target = drive.child("target");
    let dev = target.and_then(|t| t.attr("dev")).unwrap_or("hdc");
    let bus = target.and_then(|t| t.attr("bus")).unwrap_or("ide");
    // As the renderer makes it: a device node is a block device.
    let (kind, source) = match cdrom {
        Some(p) if p.starts_with("/dev/") => {
            ("block", format!("<source dev='{}'/>", escape_attr(p)))
        }
        Some(p) => ("file", format!("<source file='{}'/>", escape_attr(p))),
        None => (drive.attr("type").unwrap_or("file"), String::new()),
    };
    format!(
        "<disk type='{kind}' device='cdrom'><driver name='qemu' type='raw'/>{source}\
         <target dev='{}' bus='{}'/><readonly/></disk>",
        escape_attr(dev),
        escape_attr(bus)
    )
}

/// The first cdrom drive of a domain's XML.
fn cdrom_drive(xml: &str) -> Option<Element> {
    let doc = parse_document(xml).ok()?;
    let mut disks = Vec::new();
    doc.descendants("disk", &mut disks);
    disks
        .into_iter()
        .find(|d| d.attr("device") == Some("cdrom"))
        .cloned()
}

impl App<'_> {
    pub(super) fn set_cdrom(&mut self, name: &str, path: &str, live: bool) -> Result<Exit, Error> {
        let cdrom = match path {
            "none" => None,
            p => {
                check_abs_path(p)?;
                Some(p.to_string())
            }
        };
        let c = self.store.snapshot()?;
        let vm = c.vm(name)?;
        let changed_live = match (live, &vm.container) {
            (false, _) => false,
            (true, None) => return Err(refused(format!("VM {name} is placed on no container"))),
            (true, Some(_)) if self.sync.mode != SyncMode::Live => {
                return Err(refused(
                    "--live calls libvirt, which --no-sync and a hook stage do not",
                ))
            }
            (true, Some(ct)) => {
                let uri = self.uri(&c, ct);
                self.change_live(name, ct, &uri, cdrom.as_deref())?
            }
        };
        let outcome = self.edit_vm(name, &mut |_, vm| {
            vm.cdrom = cdrom.clone();
            Ok(())
        })?;
        let what = match &cdrom {
            Some(p) => format!("cdrom {p}"),
            None => "no cdrom".to_string(),
        };
        if changed_live {
            eprintln!("kvmroll: VM {name}: {what}, in the running VM and in its definition");
        } else if live {
            eprintln!("kvmroll: VM {name} is not running: {what} from its next start");
        } else {
            eprintln!(
                "kvmroll: VM {name}: {what} in its definition; a running VM has it after its \
                 next power cycle (--live changes it now)"
            );
        }
        Ok(outcome)
    }

    /// Puts `cdrom` in the running VM's drive; `false` when the VM is not
    /// running. A running VM without a drive is refused: a drive cannot be
    /// added while it runs (IDE and SATA are not hot-pluggable).
    fn change_live(
        &mut self,
        name: &str,
        container: &str,
        uri: &str,
        cdrom: Option<&str>,
    ) -> Result<bool, Error> {
        let hv = self
            .sync
            .conn(uri)
            .map_err(|e| refused(format!("VM {name}: cannot reach {container}: {e}")))?;
        let running = hv
            .domain(name)?
            .is_some_and(|d| matches!(d.state, DomainState::Running | DomainState::Paused));
        if !running {
            return Ok(false);
        }
        let Some(drive) = cdrom_drive(&hv.xml(name, false)?) else {
            return Err(refused(format!(
                "VM {name} runs without a cdrom drive, and one cannot be added while it runs: \
                 set it without --live, for its next power cycle"
            )));
        };
        hv.change_media(name, &drive_with(&drive, cdrom))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "<domain><devices><disk type='file' device='disk'>\
        <target dev='hda' bus='ide'/></disk><disk type='file' device='cdrom'>\
        <source file='/a.iso'/><target dev='hdd' bus='ide'/><readonly/></disk>\
        </devices></domain>";

    #[test]
    fn the_new_medium_goes_in_the_running_vm_s_own_drive() {
        let drive = cdrom_drive(LIVE).expect("a cdrom drive");
        assert_eq!(
            drive_with(&drive, Some("/isos/b&c.iso")),
            "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
             <source file='/isos/b&amp;c.iso'/><target dev='hdd' bus='ide'/><readonly/></disk>"
        );
        assert!(drive_with(&drive, Some("/dev/sr0")).contains("type='block'"));
        let eject = drive_with(&drive, None);
        assert!(!eject.contains("<source") && eject.contains("dev='hdd'"));
        assert!(cdrom_drive("<domain><devices/></domain>").is_none());
    }
}

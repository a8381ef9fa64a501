//! A Rocks VM as kvmroll's: its row, disks and NICs as the kvm roll's
//! `rocks report host vm config` (rocksclusters/kvm, ROCKS_6_2 and 7.0)
//! rendered them.

use super::gather::{Gathered, HostLine, Iface, FRONTEND_ATTR};
use super::{Fault, Origin};
use crate::model::{Disk, DiskKind, Nic, NicSpec, Vm};
use crate::rocksdump::{RocksDisk, VmLine};
use crate::text::clip;
use std::collections::{BTreeMap, BTreeSet};

/// A VM's row, as the kvm roll's `report host vm config` would render it,
/// and notes of the NICs Rocks rendered none for.
pub(super) fn build_vm(
    g: &Gathered<'_>,
    h: &HostLine,
    line: &VmLine,
    cdrom: Option<String>,
    uuid: &mut dyn FnMut() -> String,
) -> Result<(Vm, Vec<String>), (Origin, Fault)> {
    let vm_origin = Origin::Line(g.vms[&h.host.name].0);
    let bad = |why: String| (vm_origin, Fault::Dump(why));
    if line.physnode.as_deref() == Some("localhost") {
        return Err(bad(format!(
            "its physnode is the frontend, localhost, but the dump sets no global {FRONTEND_ATTR} to name it"
        )));
    }
    let memory_mib = line
        .mem_mb
        .ok_or_else(|| bad("set host vm gives no mem=".into()))?;
    let virt_type = virt_type_of(line).map_err(bad)?;
    let disks = line
        .disks
        .iter()
        .flatten()
        .map(|d| disk_of(d).map_err(|f| (vm_origin, f)))
        .collect::<Result<Vec<Disk>, _>>()?;
    let none = Vec::new();
    let own_ifaces = g.ifaces.get(&h.host.name).unwrap_or(&none);
    let container_ifaces = line
        .physnode
        .as_ref()
        .and_then(|c| g.ifaces.get(c))
        .unwrap_or(&none);
    let (placed, unplaced) = rocks_nics(own_ifaces, container_ifaces);
    let nics = placed
        .into_iter()
        .map(|p| p.nic().map_err(|f| (Origin::Line(p.line), f)))
        .collect::<Result<Vec<Nic>, _>>()?;
    let notes = unplaced
        .iter()
        .map(|i| {
            format!(
                "VM {}: its interface {} ({}, subnet {}{}) matches no interface of {}, so Rocks rendered no NIC for it: none is imported",
                h.host.name,
                i.name,
                i.mac.as_deref().unwrap_or("no MAC"),
                i.subnet.as_deref().unwrap_or("none"),
                i.vlan.map(|v| format!(", vlan {v}")).unwrap_or_default(),
                line.physnode.as_deref().unwrap_or("its unset physnode"),
            )
        })
        .collect();
    Ok((
        Vm {
            id: 0,
            name: h.host.name.clone(),
            container: line.physnode.clone(),
            memory_mib,
            vcpus: h.host.cpus,
            uuid: uuid(),
            cdrom,
            virt_type,
            disks,
            nics,
            stale: false,
            generation: 0,
        },
        notes,
    ))
}

/// The VM's virt type: Rocks' hvm is kvm; Xen's para has no kvmroll
/// equivalent.
fn virt_type_of(line: &VmLine) -> Result<String, String> {
    // `set host vm` takes hvm or para; `dumpVM` writes 'None' for neither.
    match line
        .virt_type
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("hvm" | "none" | "") => Ok("kvm".to_string()),
        Some("para") => Err(
            "virt-type para is Xen's paravirtualisation; kvmroll runs hvm guests under kvm".into(),
        ),
        Some(other) => Err(format!("unknown virt-type {:?}", clip(other, 40))),
    }
}

/// A Rocks disk as kvmroll's: `file` a raw image, `qcow2`, `phy` a block
/// device (`report host vm config`'s `getDisks`); the bus from the mode
/// column, `w` being virtio; a size of 0 none.
pub(super) fn disk_of(d: &RocksDisk) -> Result<Disk, Fault> {
    let kind = match d.vbd_type.as_str() {
        "file" => DiskKind::File,
        "qcow2" => DiskKind::Qcow2,
        "phy" => DiskKind::Block,
        other => {
            return Err(Fault::Dump(format!(
                "disk {}: type {:?} has no kvmroll kind (file, qcow2 and phy do)",
                clip(&d.dev, 20),
                clip(other, 20)
            )))
        }
    };
    let bus = if d.mode == "w" { "virtio" } else { &d.mode };
    let mut spec = format!("{}:{},{},{bus}", kind.as_str(), d.path, d.dev);
    if d.size_gb > 0 {
        spec.push_str(&format!(",{}", d.size_gb));
    }
    Ok(Disk::parse(&spec)?)
}

/// A NIC placed on a container's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placed {
    /// The line of the VM interface it comes from.
    pub(super) line: usize,
    pub(super) direct: bool,
    pub(super) source: String,
    pub(super) vlan: Option<u32>,
    pub(super) mac: Option<String>,
}

impl Placed {
    /// The NIC, through the validation a typed `--nic` gets.
    pub(super) fn nic(&self) -> Result<Nic, Fault> {
        let mac = self
            .mac
            .as_deref()
            .ok_or_else(|| Fault::Dump("a NIC Rocks rendered has no MAC in the dump".into()))?;
        let mut spec = format!(
            "{}:{},mac={mac}",
            if self.direct { "direct" } else { "bridge" },
            self.source
        );
        if let Some(v) = self.vlan {
            spec.push_str(&format!(",vlan={v}"));
        }
        let s = NicSpec::parse(&spec)?;
        Ok(Nic {
            kind: s.kind,
            source: s.source,
            mac: s.mac.ok_or_else(|| Fault::Dump("no MAC".into()))?,
            vlan: s.vlan,
            model: s.model,
        })
    }
}

/// Rocks' test for a logical VLAN device: MySQL's `LIKE 'vlan%'`, which
/// ignores case.
pub(super) fn is_vlan_device(name: &str) -> bool {
    name.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("vlan"))
}

/// The NICs `rocks report host vm config` rendered for a VM, from its
/// interfaces and its container's (the kvm roll's `rocks/db/vmextend.py`,
/// ROCKS_6_2 and 7.0), in its order: first each VLAN NIC, then each bridged
/// one. Returns them and the VM interfaces that got none.
///
/// - `getPhysTapDevicefromVnode`: the VM's interfaces by VLAN id (a later
///   one of the same id replaces an earlier, as in its dict); for each pair
///   of a container interface not named `vlan%` and one named `vlan%` on the
///   same subnet, whose VLAN id is one of the VM's, a macvtap NIC on
///   `p<device>.<vlan>` (7.0: no `p` where the device's options hold
///   `novtap`).
/// - `getPhysBridgedDevicefromVnode`: for each VM interface and container
///   interface not named `vlan%` on the same subnet, with the same VLAN id
///   (none on the container matching the VM's none or 0), a NIC on the bridge
///   named after the container's interface (the physical one is renamed
///   `p<device>`); 7.0 leaves out `ovs-link` devices.
pub(super) fn rocks_nics<'i>(
    vm: &'i [Iface],
    container: &[Iface],
) -> (Vec<Placed>, Vec<&'i Iface>) {
    let mut by_vlan: BTreeMap<u32, &Iface> = BTreeMap::new();
    for i in vm {
        if let Some(v) = i.vlan {
            by_vlan.insert(v, i);
        }
    }
    let physical = || container.iter().filter(|c| !is_vlan_device(&c.name));
    let mut placed = Vec::new();
    let mut used: BTreeSet<usize> = BTreeSet::new();
    for n in physical() {
        for v in container.iter().filter(|c| is_vlan_device(&c.name)) {
            let (Some(subnet), Some(id)) = (&n.subnet, v.vlan) else {
                continue;
            };
            let Some(i) = by_vlan
                .get(&id)
                .filter(|_| v.subnet.as_ref() == Some(subnet))
            else {
                continue;
            };
            let novtap = n.options.as_deref().is_some_and(|o| o.contains("novtap"));
            placed.push(Placed {
                line: i.line,
                direct: true,
                source: format!("{}{}", if novtap { "" } else { "p" }, n.name),
                vlan: Some(id),
                mac: i.mac.clone(),
            });
            used.insert(i.line);
        }
    }
    for w in vm {
        for n in physical() {
            let same_vlan = match (n.vlan, w.vlan) {
                (Some(a), Some(b)) => a == b,
                (None, None | Some(0)) => true,
                _ => false,
            };
            if n.subnet.is_none()
                || n.subnet != w.subnet
                || !same_vlan
                || n.module.as_deref() == Some("ovs-link")
            {
                continue;
            }
            placed.push(Placed {
                line: w.line,
                direct: false,
                source: n.name.clone(),
                vlan: None,
                mac: w.mac.clone(),
            });
            used.insert(w.line);
        }
    }
    let unplaced = vm.iter().filter(|i| !used.contains(&i.line)).collect();
    (placed, unplaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NicKind;

    fn iface(line: usize, name: &str, subnet: &str, vlan: Option<u32>) -> Iface {
        Iface {
            line,
            name: name.into(),
            mac: Some(format!("52:54:00:00:00:{line:02x}")),
            subnet: Some(subnet.into()),
            vlan,
            ..Iface::default()
        }
    }

    /// A placed NIC as (direct, source, vlan, the VM interface's line).
    type Shown = (bool, String, Option<u32>, usize);

    /// Each NIC placed, and the lines of the VM interfaces that got none.
    fn placed(vm: &[Iface], container: &[Iface]) -> (Vec<Shown>, Vec<usize>) {
        let (nics, none) = rocks_nics(vm, container);
        (
            nics.iter()
                .map(|p| (p.direct, p.source.clone(), p.vlan, p.line))
                .collect(),
            none.iter().map(|i| i.line).collect(),
        )
    }

    /// vm-container-0-0 of Rocks' KVM networking guide: eth0 on private, a
    /// logical vlan7 on private, eth1 on storage.
    fn container() -> Vec<Iface> {
        let mut c = vec![
            iface(100, "eth0", "private", None),
            iface(101, "vlan7", "private", Some(7)),
            iface(102, "eth1", "storage", None),
        ];
        c[1].mac = None;
        c
    }

    #[test]
    fn vlan_nics_go_first_on_the_physical_device_then_bridges_by_subnet() {
        let vm = [
            iface(1, "eth0", "private", None),
            iface(2, "eth1", "private", Some(7)),
            iface(3, "eth2", "storage", None),
        ];
        assert_eq!(
            placed(&vm, &container()),
            (
                vec![
                    (true, "peth0".into(), Some(7), 2),
                    (false, "eth0".into(), None, 1),
                    (false, "eth1".into(), None, 3),
                ],
                vec![]
            )
        );
        // The macvtap NIC renders on peth0.7, through the typed validation.
        let (nics, _) = rocks_nics(&vm, &container());
        let nic = nics[0].nic().unwrap();
        assert_eq!(
            (nic.kind, nic.source.as_str(), nic.vlan, nic.mac.as_str()),
            (NicKind::Direct, "peth0", Some(7), "52:54:00:00:00:02")
        );
    }

    #[test]
    fn vlan_zero_meets_no_vlan_and_other_subnets_or_vlans_get_nothing() {
        let vm = [
            iface(1, "eth0", "private", Some(0)),
            iface(2, "eth1", "public", None),
            iface(3, "eth2", "private", Some(9)),
        ];
        assert_eq!(
            placed(&vm, &container()),
            (vec![(false, "eth0".into(), None, 1)], vec![2, 3])
        );
    }

    #[test]
    fn a_later_nic_on_the_same_vlan_takes_the_vlan_as_in_rocks_dict() {
        let vm = [
            iface(1, "eth1", "private", Some(7)),
            iface(2, "eth2", "private", Some(7)),
        ];
        assert_eq!(
            placed(&vm, &container()),
            (vec![(true, "peth0".into(), Some(7), 2)], vec![1])
        );
    }

    #[test]
    fn rocks_7_novtap_and_ovs_link_and_vlan_names_in_any_case() {
        let mut c = container();
        c[0].options = Some("novtap".into());
        c[1].name = "VLAN7".into();
        c[2].module = Some("ovs-link".into());
        let vm = [
            iface(1, "eth1", "private", Some(7)),
            iface(2, "eth2", "storage", None),
        ];
        assert_eq!(
            placed(&vm, &c),
            (vec![(true, "eth0".into(), Some(7), 1)], vec![2])
        );
    }

    /// Regression: the name was cut at byte 4, which panicked inside a
    /// character ("vla\u{e9}" from a dump's interface line).
    #[test]
    fn an_interface_name_with_a_wide_character_is_no_vlan_and_no_panic() {
        assert!(!is_vlan_device("vla\u{e9}0"));
        assert!(is_vlan_device("Vlan\u{e9}"));
    }

    #[test]
    fn a_nic_without_a_mac_is_refused() {
        let mut vm = [iface(1, "eth0", "private", None)];
        vm[0].mac = None;
        let (nics, _) = rocks_nics(&vm, &container());
        let e = nics[0].nic().unwrap_err();
        assert!(e.to_string().contains("no MAC"), "{e}");
    }

    fn disk(vbd_type: &str, path: &str, dev: &str, mode: &str, size_gb: u32) -> RocksDisk {
        RocksDisk {
            vbd_type: vbd_type.into(),
            path: path.into(),
            dev: dev.into(),
            mode: mode.into(),
            size_gb,
        }
    }

    #[test]
    fn disks_as_get_disks_reads_them() {
        let spec = |d: RocksDisk| disk_of(&d).map(|d| d.spec()).map_err(|e| e.to_string());
        assert_eq!(
            spec(disk("file", "/state/a.vda", "vda", "w", 36)),
            Ok("file:/state/a.vda,vda,virtio,36".into())
        );
        assert_eq!(
            spec(disk("phy", "/dev/vg0/lv", "sda", "scsi", 0)),
            Ok("block:/dev/vg0/lv,sda,scsi".into())
        );
        assert_eq!(
            spec(disk("qcow2", "/state/a.qcow2", "hda", "ide", 4)),
            Ok("qcow2:/state/a.qcow2,hda,ide,4".into())
        );
        let e = spec(disk("qed", "/state/a.qed", "vda", "virtio", 4)).unwrap_err();
        assert!(e.contains("type \"qed\" has no kvmroll kind"), "{e}");
        let e = spec(disk("file", "/state/a.img", "vda", "pci", 4)).unwrap_err();
        assert!(e.contains("unknown bus \"pci\""), "{e}");
        let e = spec(disk("file", "state/a.img", "vda", "virtio", 4)).unwrap_err();
        assert!(e.contains("must be absolute"), "{e}");
    }
}

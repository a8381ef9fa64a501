//! Renders a VM of the cluster into libvirt domain XML
//! (<https://libvirt.org/formatdomain.html>), the way Rocks'
//! `rocks report host vm config` did, with its faults fixed: Rocks' `exact`
//! CPU mode becomes `mode='custom' match='exact'`, a cdrom under /dev is a
//! block device, a gap in `kvm_device_N` is an error, and attribute text is
//! escaped while XML fragments are inserted only after they were checked.

mod domain;

use crate::attrs::{self, CpuMode, PinSets, Pinning};
use crate::cluster::Cluster;
use crate::cpuset;
use crate::drift;
use crate::metadata::{self, Metadata};
use crate::model::{disk_index, Host, Vm, DRIVE_BUSES};
use crate::xml::escape_attr as esc;
use domain::{Checked, Lines};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use crate::cluster::RenderError;

/// The default CPU mode (the Rocks frontend's global default).
pub const DEFAULT_CPU_MODE: &str = "host-passthrough";

/// Renders many VMs of one snapshot, computing each container's CPU pinning
/// plan once.
#[derive(Debug)]
pub struct Renderer<'a> {
    cluster: &'a Cluster,
    pins: HashMap<String, BTreeMap<String, Result<Vec<u32>, RenderError>>>,
}

/// Renders one VM.
pub fn render_domain(cluster: &Cluster, vm: &str) -> Result<String, RenderError> {
    Renderer::new(cluster).render(vm)
}

impl<'a> Renderer<'a> {
    pub fn new(cluster: &'a Cluster) -> Renderer<'a> {
        Renderer {
            cluster,
            pins: HashMap::new(),
        }
    }

    /// The CPUs each pinned VM of a container gets: pin_all and raw fragments
    /// claim theirs first, then pin_auto VMs, oldest first, take the lowest
    /// free CPUs of the first NUMA cell (from the container's `numa_cells`)
    /// that has enough of them.
    fn pin_plan(&self, container: &str) -> BTreeMap<String, Result<Vec<u32>, RenderError>> {
        let c = self.cluster;
        let mut plan = BTreeMap::new();
        let Some(host) = c.hosts.get(container) else {
            return plan;
        };
        let cpus = host.cpus;
        let (cells, nodes) = cells_of(c, host);
        let numa = cells.len() > 1;
        let mut used = BTreeSet::new();
        let mut autos = Vec::new();
        for vm in c.vms_on(container) {
            let Some(value) = c.attr_of(&vm.name, "kvm_cpu_pinning") else {
                continue;
            };
            let result = match Pinning::parse(value) {
                Err(source) => Err(RenderError::Attribute {
                    vm: vm.name.clone(),
                    source,
                }),
                Ok(Pinning::All) if vm.vcpus > cpus => Err(RenderError::PinAllTooWide {
                    vm: vm.name.clone(),
                    vcpus: vm.vcpus,
                    container: container.to_string(),
                    cpus,
                }),
                Ok(Pinning::All) => {
                    used.extend(0..vm.vcpus);
                    Ok((0..vm.vcpus).collect())
                }
                Ok(Pinning::Fragment { sets, .. }) => {
                    let host = Capacity {
                        name: container,
                        cpus,
                        nodes,
                    };
                    check_fragment_sets(vm, &host, &sets).inspect(|set| {
                        used.extend(set.iter().copied());
                    })
                }
                Ok(Pinning::Auto) => {
                    autos.push(vm);
                    continue;
                }
            };
            plan.insert(vm.name.clone(), result);
        }
        for vm in autos {
            let need = vm.vcpus as usize;
            let free: Vec<Vec<u32>> = cells
                .iter()
                .map(|cell| cell.difference(&used).copied().collect())
                .collect();
            let result = match free.iter().find(|f| f.len() >= need) {
                Some(f) => {
                    let picked: Vec<u32> = f[..need].to_vec();
                    used.extend(picked.iter().copied());
                    Ok(picked)
                }
                None => Err(RenderError::PinAutoFull {
                    vm: vm.name.clone(),
                    container: container.to_string(),
                    need: vm.vcpus,
                    free: free.iter().map(Vec::len).max().unwrap_or(0) as u32,
                    where_: if numa { " in one NUMA cell" } else { "" },
                }),
            };
            plan.insert(vm.name.clone(), result);
        }
        plan
    }

    fn pins_for(&mut self, vm: &Vm, pinning: &'static str) -> Result<Vec<u32>, RenderError> {
        let Some(container) = vm.container.as_deref() else {
            return Err(RenderError::Unplaced {
                vm: vm.name.clone(),
                pinning,
            });
        };
        if !self.pins.contains_key(container) {
            let plan = self.pin_plan(container);
            self.pins.insert(container.to_string(), plan);
        }
        self.pins
            .get(container)
            .and_then(|p| p.get(&vm.name))
            .cloned()
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Renders the domain XML of one VM.
    pub fn render(&mut self, name: &str) -> Result<String, RenderError> {
        self.draft(name)?.finish()
    }

    /// Renders one VM but for the facts of its metadata, which
    /// [`Draft::finish`] takes from the rendering: enough to tell whether
    /// a change alters the definition ([`crate::Cluster::plan`]).
    pub fn draft(&mut self, name: &str) -> Result<Draft, RenderError> {
        let c = self.cluster;
        let vm = c
            .vms
            .get(name)
            .ok_or_else(|| RenderError::UnknownVm(name.to_string()))?;
        let host = c
            .hosts
            .get(name)
            .ok_or_else(|| RenderError::UnknownVm(name.to_string()))?;
        let checked = Checked {
            cluster: c,
            host,
            vm: name,
        };
        let bad = |e| checked.bad(e);
        let cpu_mode = match checked.get("cpu_mode")? {
            Some(v) => Some(CpuMode::parse(&v).map_err(bad)?),
            None if vm.virt_type == "kvm" => Some(CpuMode::parse(DEFAULT_CPU_MODE).map_err(bad)?),
            // Plain QEMU emulation cannot pass the host CPU through.
            None => None,
        };
        let pinning = match checked.get("kvm_cpu_pinning")? {
            None => None,
            Some(v) => Some(Pinning::parse(&v).map_err(bad)?),
        };
        let pins = match &pinning {
            Some(Pinning::All) => Some(self.pins_for(vm, "pin_all")?),
            Some(Pinning::Auto) => Some(self.pins_for(vm, "pin_auto")?),
            Some(Pinning::Fragment { .. }) => {
                if vm.container.is_some() {
                    self.pins_for(vm, "fragment")?;
                }
                None
            }
            None => None,
        };
        let (devices, targets) = device_fragments(c, host, vm)?;
        let machine = checked
            .get("kvm_machine")?
            .unwrap_or_else(|| "pc".to_string());
        let graphics = checked
            .get("kvm_graphics")?
            .unwrap_or_else(|| "vnc".to_string());
        let emulator = checked.get("kvm_emulator")?;

        let mut x = Lines::new();
        x.line(0, &format!("<domain type='{}'>", esc(&vm.virt_type)));
        x.line(1, &format!("<name>{}</name>", esc(&vm.name)));
        x.line(1, &format!("<uuid>{}</uuid>", esc(&vm.uuid)));
        // kvmroll's metadata goes here, once the rest is rendered: its facts
        // are taken from the rendering.
        let metadata_at = x.0.len();
        domain::size(&mut x, vm, pinning.as_ref(), pins);
        domain::os(&mut x, vm, &machine, cpu_mode.as_ref());
        x.line(1, "<devices>");
        if let Some(e) = &emulator {
            x.line(2, &format!("<emulator>{}</emulator>", esc(e)));
        }
        domain::disks(&mut x, vm, &targets, &machine)?;
        domain::nics(&mut x, vm);
        for dev in &devices {
            x.fragment(2, dev);
        }
        domain::console(&mut x, &graphics);
        x.line(1, "</devices>");
        x.line(0, "</domain>");
        Ok(Draft {
            vm: name.to_string(),
            xml: x.0,
            metadata_at,
            meta: domain::metadata_of(vm, &checked)?,
        })
    }
}

/// A VM's rendering without its metadata yet: the facts of what kvmroll
/// decides are taken from the rendered XML itself (`drift::project`, the
/// same projection the hook makes of libvirt's XML), which costs a parse.
/// Two drafts are equal exactly when their finished renderings would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    vm: String,
    xml: String,
    /// Where the metadata goes: after `<uuid>`.
    metadata_at: usize,
    /// All but its facts and their digest.
    meta: Metadata,
}

impl Draft {
    /// The generation the finished rendering will carry.
    pub fn set_generation(&mut self, generation: u64) {
        self.meta.generation = generation;
    }

    /// The domain XML, its metadata whole.
    pub fn finish(self) -> Result<String, RenderError> {
        let Draft {
            vm,
            mut xml,
            metadata_at,
            mut meta,
        } = self;
        // Well-formed by construction (attribute text is escaped, fragments
        // were checked): an error here is kvmroll's own.
        let doc = crate::xml::parse_document(&xml).map_err(|e| RenderError::Unparsable {
            vm,
            why: e.to_string(),
        })?;
        meta.facts = drift::project(&doc, None);
        meta.sha256 = metadata::digest(&meta.facts);
        let block = format!("  <metadata>\n{}  </metadata>\n", meta.to_xml());
        xml.insert_str(metadata_at, &block);
        Ok(xml)
    }
}

/// A container's NUMA cells, each with the CPUs it has (one cell of all
/// its CPUs where `numa_cells` does not describe them), and how many NUMA
/// nodes it has, known only where `numa_cells` describes them.
fn cells_of(c: &Cluster, host: &Host) -> (Vec<BTreeSet<u32>>, Option<usize>) {
    let all: BTreeSet<u32> = (0..host.cpus).collect();
    let numa_cells = c.attr(host, "numa_cells").map(cpuset::parse_cells);
    let nodes = match &numa_cells {
        Some(Ok(cells)) => Some(cells.len()),
        _ => None,
    };
    let cells: Vec<BTreeSet<u32>> = match numa_cells {
        Some(Ok(cells)) => cells
            .into_iter()
            .map(|cell| cell.intersection(&all).copied().collect::<BTreeSet<u32>>())
            .filter(|cell| !cell.is_empty())
            .collect(),
        _ => vec![all],
    };
    (cells, nodes)
}

/// What a container has for a pinning fragment to name.
struct Capacity<'a> {
    name: &'a str,
    cpus: u32,
    /// Its NUMA nodes, where `numa_cells` says.
    nodes: Option<usize>,
}

/// Checks every set a raw pinning fragment names against the VM and its
/// container: host CPUs (vcpupin, emulatorpin, iothreadpin), vCPUs
/// (vcpupin, vcpusched, cachetune, memorytune) and NUMA nodes (numatune).
/// Returns the CPUs its vCPUs are pinned to, which pin_auto then avoids.
fn check_fragment_sets(
    vm: &Vm,
    host: &Capacity<'_>,
    sets: &PinSets,
) -> Result<Vec<u32>, RenderError> {
    let vcpus = sets
        .vcpupins
        .iter()
        .map(|(vcpu, _)| ("vcpupin", *vcpu))
        .chain(
            sets.vcpus
                .iter()
                .flat_map(|(el, set)| set.iter().map(move |v| (*el, *v))),
        );
    for (element, vcpu) in vcpus {
        if vcpu >= vm.vcpus {
            return Err(RenderError::NoSuchVcpu {
                vm: vm.name.clone(),
                element,
                vcpu,
                vcpus: vm.vcpus,
            });
        }
    }
    let cpus = sets
        .vcpupins
        .iter()
        .map(|(_, set)| ("vcpupin", set))
        .chain(sets.host_cpus.iter().map(|(el, set)| (*el, set)));
    for (element, set) in cpus {
        if let Some(&cpu) = set.iter().find(|&&c| c >= host.cpus) {
            return Err(RenderError::NoSuchCpu {
                vm: vm.name.clone(),
                element,
                cpu,
                container: host.name.to_string(),
                last: host.cpus.saturating_sub(1),
            });
        }
    }
    if let Some(nodes) = host.nodes {
        for (element, set) in &sets.nodes {
            if let Some(&node) = set.iter().find(|&&n| n as usize >= nodes) {
                return Err(RenderError::NoSuchNode {
                    vm: vm.name.clone(),
                    element,
                    node,
                    container: host.name.to_string(),
                    nodes,
                });
            }
        }
    }
    Ok(sets
        .vcpupins
        .iter()
        .flat_map(|(_, set)| set.iter().copied())
        .collect())
}

/// The disk targets a domain has: by name, and on the drive buses by the
/// slot libvirt works out from the name ([`DRIVE_BUSES`]).
#[derive(Default)]
struct Targets {
    names: BTreeSet<String>,
    slots: BTreeMap<(String, u32), String>,
}

/// Why a disk target cannot be had.
enum Taken {
    Name,
    /// The slot, and the disk that has it.
    Slot(String),
}

impl Targets {
    /// Whether `dev` on `bus` is free (`None`) or taken.
    fn taken(&self, dev: &str, bus: &str) -> Option<Taken> {
        if self.names.contains(dev) {
            return Some(Taken::Name);
        }
        let index = disk_index(dev).filter(|_| DRIVE_BUSES.contains(&bus))?;
        self.slots
            .get(&(bus.to_string(), index))
            .map(|other| Taken::Slot(other.clone()))
    }

    /// Takes `dev` on `bus` (`slot`: whether libvirt places it by its
    /// name, rather than at an address the XML gives).
    fn take(&mut self, dev: &str, bus: &str, slot: bool) -> Result<(), Taken> {
        let taken = self.taken(dev, bus);
        match taken {
            Some(Taken::Slot(_)) if !slot => {}
            Some(t) => return Err(t),
            None => {}
        }
        self.names.insert(dev.to_string());
        if let (true, Some(index)) = (slot && DRIVE_BUSES.contains(&bus), disk_index(dev)) {
            self.slots.insert((bus.to_string(), index), dev.to_string());
        }
        Ok(())
    }
}

/// The bus libvirt gives a disk whose target names none: by its prefix.
fn implied_bus(dev: &str) -> &'static str {
    [
        ("hd", "ide"),
        ("sd", "scsi"),
        ("vd", "virtio"),
        ("xvd", "xen"),
        ("ubd", "uml"),
        ("fd", "fdc"),
    ]
    .iter()
    .find(|(prefix, _)| dev.starts_with(prefix))
    .map_or("", |(_, bus)| bus)
}

/// The `kvm_device_N` values of a VM in order, with every disk target the
/// VM has; a gap is an error, and so is a disk whose target, or slot, a
/// disk before it already has (libvirt refuses the definition).
fn device_fragments(
    c: &Cluster,
    host: &Host,
    vm: &Vm,
) -> Result<(Vec<String>, Targets), RenderError> {
    let mut found: BTreeMap<u32, (String, String)> = BTreeMap::new();
    for (name, r) in c.resolve(host) {
        if let Some(i) = attrs::device_index(&name) {
            found.insert(i, (name, r.value));
        }
    }
    let bad = |source| RenderError::Attribute {
        vm: vm.name.clone(),
        source,
    };
    // Only the drive buses have slots.
    let same_slot = |dev: &str, other: String, bus: &str| RenderError::SameSlot {
        vm: vm.name.clone(),
        dev: dev.to_string(),
        other,
        bus: DRIVE_BUSES
            .iter()
            .find(|b| **b == bus)
            .copied()
            .unwrap_or(""),
    };
    let mut targets = Targets::default();
    for d in &vm.disks {
        match targets.take(&d.dev, &d.bus, true) {
            // Two disks of one name are refused when the VM is set.
            Ok(()) | Err(Taken::Name) => {}
            Err(Taken::Slot(other)) => return Err(same_slot(&d.dev, other, &d.bus)),
        }
    }
    let mut out = Vec::with_capacity(found.len());
    for (expected, (i, (name, value))) in found.into_iter().enumerate() {
        let expected = expected as u32;
        if i != expected {
            return Err(RenderError::DeviceGap {
                vm: vm.name.clone(),
                missing: expected,
                next: i,
            });
        }
        let xml = attrs::normalize(&name, &value).map_err(bad)?;
        for el in attrs::parse_device(&name, &xml).map_err(bad)? {
            let target = el.child("target").filter(|_| el.name == "disk");
            let Some((t, dev)) = target.and_then(|t| Some((t, t.attr("dev")?))) else {
                continue;
            };
            let bus = t.attr("bus").unwrap_or_else(|| implied_bus(dev));
            let placed_by_name = el.child("address").is_none();
            match targets.take(dev, bus, placed_by_name) {
                Ok(()) => {}
                Err(Taken::Name) => {
                    return Err(RenderError::DuplicateTarget {
                        vm: vm.name.clone(),
                        index: i,
                        dev: dev.to_string(),
                    })
                }
                Err(Taken::Slot(other)) => return Err(same_slot(dev, other, bus)),
            }
        }
        out.push(xml);
    }
    Ok((out, targets))
}

/// Where the cdrom goes: an IDE slot on the pc machine, SATA on q35; the
/// first that no disk takes, by name or by slot, the disks of
/// `kvm_device_N` included (Rocks always used hda, even when a disk had
/// it). A VM whose disks take every slot gets no cdrom: an error, not a
/// target that collides with a disk.
fn cdrom_target(
    vm: &Vm,
    targets: &Targets,
    machine: &str,
) -> Result<(String, &'static str), RenderError> {
    let (candidates, bus): (&[&str], _) = if machine.contains("q35") {
        (&["sda", "sdb", "sdc", "sdd", "sde", "sdf"], "sata")
    } else {
        (&["hdc", "hdd", "hdb", "hda"], "ide")
    };
    match candidates.iter().find(|d| targets.taken(d, bus).is_none()) {
        Some(dev) => Ok((dev.to_string(), bus)),
        None => Err(RenderError::NoCdromSlot {
            vm: vm.name.clone(),
            bus,
            taken: candidates.join(", "),
        }),
    }
}

#[cfg(test)]
mod tests;

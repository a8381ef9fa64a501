//! Writing a VM's domain XML, one section per function, in the order
//! libvirt shows them. What goes in was decided before ([`super::Renderer::draft`]):
//! attribute text is escaped here, XML fragments were checked when set.

use super::{cdrom_target, RenderError, Targets};
use crate::attrs::{self, CpuMode, Pinning};
use crate::cluster::Cluster;
use crate::metadata::{self, DiskSize, Metadata};
use crate::model::{DiskKind, Host, NicKind, ValidationError, Vm};
use crate::xml::escape_attr as esc;

/// The domain XML being written, one indented line at a time.
pub(super) struct Lines(pub(super) String);

impl Lines {
    pub(super) fn new() -> Lines {
        Lines(String::with_capacity(2048))
    }

    pub(super) fn line(&mut self, indent: usize, s: &str) {
        for _ in 0..indent {
            self.0.push_str("  ");
        }
        self.0.push_str(s);
        self.0.push('\n');
    }

    /// Each line of an XML fragment (checked when it was set), at `indent`.
    pub(super) fn fragment(&mut self, indent: usize, xml: &str) {
        for l in xml.trim().lines() {
            self.line(indent, l.trim_end());
        }
    }
}

/// A VM's attributes as its rendering reads them: checked again, since
/// the rules may have grown since they were set.
pub(super) struct Checked<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) host: &'a Host,
    pub(super) vm: &'a str,
}

impl Checked<'_> {
    /// A refused value, said for this VM.
    pub(super) fn bad(&self, source: ValidationError) -> RenderError {
        RenderError::Attribute {
            vm: self.vm.to_string(),
            source,
        }
    }

    /// The resolved value of `name`, normalised; refused if the rules
    /// refuse it now.
    pub(super) fn get(&self, name: &str) -> Result<Option<String>, RenderError> {
        self.cluster
            .attr(self.host, name)
            .map(|v| attrs::normalize(name, v).map_err(|e| self.bad(e)))
            .transpose()
    }
}

/// Memory, vCPUs and their pinning.
pub(super) fn size(x: &mut Lines, vm: &Vm, pinning: Option<&Pinning>, pins: Option<Vec<u32>>) {
    let kib = u64::from(vm.memory_mib) * 1024;
    x.line(1, &format!("<memory unit='KiB'>{kib}</memory>"));
    x.line(
        1,
        &format!("<currentMemory unit='KiB'>{kib}</currentMemory>"),
    );
    x.line(1, &format!("<vcpu placement='static'>{}</vcpu>", vm.vcpus));
    match (pinning, pins) {
        (Some(Pinning::Fragment { xml, .. }), _) => x.fragment(1, xml),
        (_, Some(pins)) => {
            x.line(1, "<cputune>");
            for (vcpu, cpu) in pins.iter().enumerate() {
                x.line(2, &format!("<vcpupin vcpu='{vcpu}' cpuset='{cpu}'/>"));
            }
            x.line(1, "</cputune>");
        }
        _ => {}
    }
}

/// The boot order, features, CPU, clock and life cycle.
pub(super) fn os(x: &mut Lines, vm: &Vm, machine: &str, cpu_mode: Option<&CpuMode>) {
    x.line(1, "<os>");
    x.line(
        2,
        &format!("<type arch='x86_64' machine='{}'>hvm</type>", esc(machine)),
    );
    if vm.cdrom.is_some() {
        x.line(2, "<boot dev='cdrom'/>");
    }
    x.line(2, "<boot dev='network'/>");
    x.line(2, "<boot dev='hd'/>");
    x.line(2, "<bootmenu enable='yes'/>");
    x.line(1, "</os>");
    x.line(1, "<features>");
    x.line(2, "<acpi/>");
    x.line(2, "<apic/>");
    x.line(2, "<pae/>");
    x.line(1, "</features>");
    if let Some(cpu) = cpu_mode {
        let open = if cpu.exact {
            format!("<cpu mode='{}' match='exact'", cpu.mode)
        } else {
            format!("<cpu mode='{}'", cpu.mode)
        };
        match &cpu.inner {
            None => x.line(1, &format!("{open}/>")),
            Some(inner) => {
                x.line(1, &format!("{open}>"));
                x.fragment(2, inner);
                x.line(1, "</cpu>");
            }
        }
    }
    x.line(1, "<clock offset='utc'/>");
    x.line(1, "<on_poweroff>destroy</on_poweroff>");
    x.line(1, "<on_reboot>restart</on_reboot>");
    x.line(1, "<on_crash>destroy</on_crash>");
}

/// The VM's disks, then its cdrom in a slot no disk takes.
pub(super) fn disks(
    x: &mut Lines,
    vm: &Vm,
    targets: &Targets,
    machine: &str,
) -> Result<(), RenderError> {
    for d in &vm.disks {
        let (kind, src, format) = match d.kind {
            DiskKind::Block => ("block", "dev", "raw"),
            DiskKind::Qcow2 => ("file", "file", "qcow2"),
            DiskKind::File | DiskKind::Raw => ("file", "file", "raw"),
        };
        x.line(2, &format!("<disk type='{kind}' device='disk'>"));
        x.line(3, &format!("<driver name='qemu' type='{format}'/>"));
        x.line(3, &format!("<source {src}='{}'/>", esc(&d.path)));
        x.line(
            3,
            &format!("<target dev='{}' bus='{}'/>", esc(&d.dev), esc(&d.bus)),
        );
        x.line(2, "</disk>");
    }
    if let Some(cd) = &vm.cdrom {
        // Rocks declared every cdrom a file; a device node is a block device.
        let (kind, src) = if cd.starts_with("/dev/") {
            ("block", "dev")
        } else {
            ("file", "file")
        };
        let (dev, bus) = cdrom_target(vm, targets, machine)?;
        x.line(2, &format!("<disk type='{kind}' device='cdrom'>"));
        x.line(3, "<driver name='qemu' type='raw'/>");
        x.line(3, &format!("<source {src}='{}'/>", esc(cd)));
        x.line(3, &format!("<target dev='{dev}' bus='{bus}'/>"));
        x.line(3, "<readonly/>");
        x.line(2, "</disk>");
    }
    Ok(())
}

/// The VM's NICs: a bridge (with its VLAN tag), or macvtap on a device.
pub(super) fn nics(x: &mut Lines, vm: &Vm) {
    for n in &vm.nics {
        x.line(2, &format!("<interface type='{}'>", n.kind.as_str()));
        x.line(3, &format!("<mac address='{}'/>", n.mac));
        match (n.kind, n.vlan) {
            (NicKind::Bridge, _) => {
                x.line(3, &format!("<source bridge='{}'/>", esc(&n.source)));
            }
            // macvtap on the VLAN's own interface, as Rocks did.
            (NicKind::Direct, Some(v)) => {
                x.line(
                    3,
                    &format!("<source dev='{}.{v}' mode='bridge'/>", esc(&n.source)),
                );
            }
            (NicKind::Direct, None) => {
                x.line(
                    3,
                    &format!("<source dev='{}' mode='bridge'/>", esc(&n.source)),
                );
            }
        }
        if let (NicKind::Bridge, Some(v)) = (n.kind, n.vlan) {
            x.line(3, "<vlan>");
            x.line(4, &format!("<tag id='{v}'/>"));
            x.line(3, "</vlan>");
        }
        x.line(3, &format!("<model type='{}'/>", esc(&n.model)));
        x.line(2, "</interface>");
    }
}

/// The serial console, and the graphics unless `none`.
pub(super) fn console(x: &mut Lines, graphics: &str) {
    x.line(2, "<serial type='pty'>");
    x.line(3, "<target port='0'/>");
    x.line(2, "</serial>");
    x.line(2, "<console type='pty'>");
    x.line(3, "<target type='serial' port='0'/>");
    x.line(2, "</console>");
    match graphics {
        "none" => {}
        kind => x.line(
            2,
            &format!("<graphics type='{kind}' autoport='yes' listen='127.0.0.1'/>"),
        ),
    }
}

/// kvmroll's metadata but for its facts: the generation, the container,
/// the disks' sizes and the settings the services read.
pub(super) fn metadata_of(vm: &Vm, checked: &Checked<'_>) -> Result<Metadata, RenderError> {
    let c = checked.cluster;
    let mut meta = Metadata {
        generation: vm.generation,
        container: vm.container.clone(),
        disks: vm
            .disks
            .iter()
            .filter_map(|d| {
                d.size_gib.map(|size_gib| DiskSize {
                    dev: d.dev.clone(),
                    size_gib,
                })
            })
            .collect(),
        ..Metadata::default()
    };
    for n in metadata::VM_SETTINGS {
        if let Some(v) = checked.get(n)? {
            meta.settings.insert(n.to_string(), v);
        }
    }
    if let Some(container) = vm.container.as_deref().and_then(|n| c.hosts.get(n)) {
        for n in metadata::CONTAINER_SETTINGS {
            if let Some(v) = c.attr(container, n) {
                // Checked when set; a value the rules refuse since is
                // the service's to refuse, not this VM's rendering.
                let v = attrs::normalize(n, v).unwrap_or_else(|_| v.to_string());
                meta.container_settings.insert(n.to_string(), v);
            }
        }
    }
    Ok(meta)
}

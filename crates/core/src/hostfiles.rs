//! What a VM container's installation needs from the database: the udev
//! rules and dracut configuration that bind passed-through PCI devices to
//! vfio-pci before a host driver claims them, and the Rocks-style kickstart
//! XML fragment that installs kvmroll on a `kvm=true` host.

use crate::attrs;
use crate::cluster::Cluster;
use crate::model::parse_bool;
use crate::render::{RenderError, Renderer};
use crate::xml::escape_text;
use std::collections::BTreeMap;

/// Why a host file could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostFileError {
    #[error("unknown host {0:?}")]
    UnknownHost(String),
    #[error("{0:?} is a VM, not a host that runs VMs")]
    IsVm(String),
    #[error("VM {vm:?}: {attr} is a PCI hostdev without a <source><address domain= bus= slot= function=/></source>")]
    NoAddress { vm: String, attr: String },
    #[error("VM {vm:?}: {attr} has an invalid PCI address: {why}")]
    BadAddress {
        vm: String,
        attr: String,
        why: String,
    },
    #[error("PCI device {address} is passed through twice on host {host}: {first} and {second}")]
    DuplicatePci {
        address: String,
        host: String,
        /// `VM "name" (kvm_device_N)`, for each of the two.
        first: String,
        second: String,
    },
    #[error("VM {vm:?}: {source}")]
    Attribute {
        vm: String,
        #[source]
        source: crate::model::ValidationError,
    },
    #[error("cannot render VM for the kickstart")]
    Render(#[source] RenderError),
    #[error("{what} holds the line {marker:?}, which ends a here-document in the kickstart")]
    Marker { what: String, marker: &'static str },
}

/// A PCI device passed through to a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// `DDDD:BB:SS.F`, as sysfs names it.
    pub address: String,
    pub vm: String,
    pub attr: String,
}

/// The udev rules file kvmroll installs.
pub const UDEV_RULES_PATH: &str = "/etc/udev/rules.d/90-kvmroll-vfio.rules";
/// The dracut configuration kvmroll installs.
pub const DRACUT_CONF_PATH: &str = "/etc/dracut.conf.d/90-kvmroll.conf";

fn hex_field(v: Option<&str>, max: u32, what: &str) -> Result<u32, String> {
    let v = v.ok_or_else(|| format!("no {what}"))?;
    let digits = v
        .strip_prefix("0x")
        .or_else(|| v.strip_prefix("0X"))
        .unwrap_or(v);
    let n =
        u32::from_str_radix(digits, 16).map_err(|_| format!("{what} {v:?} is not hexadecimal"))?;
    if n > max {
        return Err(format!("{what} {v} is out of range"));
    }
    Ok(n)
}

/// Every PCI device passed through (`<hostdev type='pci'>` in a
/// `kvm_device_N`) to the VMs placed on `host`; the same address twice is an
/// error.
pub fn pci_devices(c: &Cluster, host: &str) -> Result<Vec<PciDevice>, HostFileError> {
    c.hosts
        .get(host)
        .ok_or_else(|| HostFileError::UnknownHost(host.to_string()))?;
    if c.vms.contains_key(host) {
        return Err(HostFileError::IsVm(host.to_string()));
    }
    let mut out: Vec<PciDevice> = Vec::new();
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for vm in c.vms_on(host) {
        let Some(own) = c.hosts.get(&vm.name) else {
            continue;
        };
        let mut devices: Vec<(u32, String, String)> = c
            .resolve(own)
            .into_iter()
            .filter_map(|(name, r)| attrs::device_index(&name).map(|i| (i, name, r.value)))
            .collect();
        devices.sort();
        for (_, attr, value) in devices {
            let elements =
                attrs::parse_device(&attr, &value).map_err(|source| HostFileError::Attribute {
                    vm: vm.name.clone(),
                    source,
                })?;
            let mut hostdevs = Vec::new();
            for el in &elements {
                el.descendants("hostdev", &mut hostdevs);
            }
            for hd in hostdevs
                .into_iter()
                .filter(|h| h.attr("type") == Some("pci"))
            {
                let Some(addr) = hd.child("source").and_then(|s| s.child("address")) else {
                    return Err(HostFileError::NoAddress {
                        vm: vm.name.clone(),
                        attr: attr.clone(),
                    });
                };
                let bad = |why: String| HostFileError::BadAddress {
                    vm: vm.name.clone(),
                    attr: attr.clone(),
                    why,
                };
                let domain =
                    hex_field(addr.attr("domain").or(Some("0")), 0xffff, "domain").map_err(bad)?;
                let bus = hex_field(addr.attr("bus"), 0xff, "bus").map_err(bad)?;
                let slot = hex_field(addr.attr("slot"), 0x1f, "slot").map_err(bad)?;
                let function = hex_field(addr.attr("function"), 0x7, "function").map_err(bad)?;
                let address = format!("{domain:04x}:{bus:02x}:{slot:02x}.{function:x}");
                if let Some((first_vm, first_attr)) = seen.get(&address) {
                    return Err(HostFileError::DuplicatePci {
                        address,
                        host: host.to_string(),
                        first: format!("VM {first_vm:?} ({first_attr})"),
                        second: format!("VM {:?} ({attr})", vm.name),
                    });
                }
                seen.insert(address.clone(), (vm.name.clone(), attr.clone()));
                out.push(PciDevice {
                    address,
                    vm: vm.name.clone(),
                    attr: attr.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// The udev rules for `host`: each passed-through PCI device gets
/// `driver_override` vfio-pci when it appears (so no host driver binds it
/// first), and /dev/kvm and /dev/vhost-net belong to the kvm group.
pub fn udev_rules(c: &Cluster, host: &str) -> Result<String, HostFileError> {
    Ok(udev_rules_for(host, &pci_devices(c, host)?))
}

fn udev_rules_for(host: &str, devices: &[PciDevice]) -> String {
    let mut s = format!(
        "# Generated by kvmroll-gen udev {host}; installed as {UDEV_RULES_PATH}.\n\
         # Do not edit: change the VMs' kvm_device_N attributes and regenerate.\n\n\
         KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\"\n\
         KERNEL==\"vhost-net\", GROUP=\"kvm\", MODE=\"0660\", OPTIONS+=\"static_node=vhost-net\"\n"
    );
    for d in devices {
        s.push_str(&format!(
            "\n# {} of VM {}\nACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"{}\", ATTR{{driver_override}}=\"vfio-pci\"\n",
            d.attr, d.vm, d.address
        ));
    }
    s
}

/// The dracut configuration for `host`: vfio-pci and the rules go into the
/// initramfs, so the binding happens before the root file system's drivers.
pub fn dracut_conf(c: &Cluster, host: &str) -> Result<String, HostFileError> {
    Ok(dracut_conf_for(host, &pci_devices(c, host)?))
}

fn dracut_conf_for(host: &str, devices: &[PciDevice]) -> String {
    let list = if devices.is_empty() {
        "none".to_string()
    } else {
        devices
            .iter()
            .map(|d| d.address.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "# Generated by kvmroll-gen dracut {host}; installed as {DRACUT_CONF_PATH}.\n\
         # Passed-through PCI devices: {list}\n\
         add_dracutmodules+=\" kvmroll \"\n\
         force_drivers+=\" vfio vfio_iommu_type1 vfio_pci \"\n\
         install_items+=\" {UDEV_RULES_PATH} /etc/modprobe.d/kvmroll-vfio.conf \"\n"
    )
}

/// How the kickstart fragment finds what it installs.
#[derive(Debug, Clone)]
pub struct KickstartOptions {
    /// Where the container fetches the kvmroll installation tarball
    /// (attribute `kvmroll_dist_url`).
    pub dist_url: String,
    /// The database path the container's hook and service use.
    pub db: String,
}

impl KickstartOptions {
    /// The defaults for `host`: the `kvmroll_dist_url` attribute, else the
    /// Rocks frontend's /install tree; the default database path.
    pub fn for_host(c: &Cluster, host: &str) -> KickstartOptions {
        let frontend = c
            .hosts
            .values()
            .find(|h| h.appliance == "frontend")
            .map_or("frontend", |h| h.name.as_str());
        KickstartOptions {
            dist_url: c
                .attr_of(host, "kvmroll_dist_url")
                .map(str::to_string)
                .unwrap_or_else(|| format!("http://{frontend}/install/kvmroll/kvmroll.tar.gz")),
            db: crate::store::DEFAULT_DB_PATH.to_string(),
        }
    }
}

/// The end marker of every here-document in the kickstart's post section.
pub const HEREDOC_END: &str = "KVMROLL_END_OF_FILE";

fn heredoc(path: &str, body: &str, what: &str) -> Result<String, HostFileError> {
    if body.lines().any(|l| l == HEREDOC_END) {
        return Err(HostFileError::Marker {
            what: what.to_string(),
            marker: HEREDOC_END,
        });
    }
    let mut body = body.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    // A quoted marker: the shell expands nothing in the body.
    Ok(format!(
        "cat > '{path}' <<'{HEREDOC_END}'\n{body}{HEREDOC_END}\n"
    ))
}

/// The packages a container needs (RHEL names, as in the Rocks roll), or the
/// `kvm_packages` attribute's list.
const DEFAULT_PACKAGES: &[&str] = &[
    "qemu-kvm",
    "libvirt",
    "libvirt-client",
    "bridge-utils",
    "dracut",
];

/// The Rocks-style kickstart XML fragment for `host`. For a `kvm=true` host:
/// the packages, and post-install steps that install kvmroll, the hook, the
/// enabled systemd unit, the udev rules and dracut configuration, the host's
/// resolved attributes, and the definitions of its VMs. Text is escaped by
/// XML rules, so every value comes back unchanged when the fragment is parsed.
pub fn kickstart(c: &Cluster, host: &str, o: &KickstartOptions) -> Result<String, HostFileError> {
    let h = c
        .hosts
        .get(host)
        .ok_or_else(|| HostFileError::UnknownHost(host.to_string()))?;
    if c.vms.contains_key(host) {
        return Err(HostFileError::IsVm(host.to_string()));
    }
    let kvm = c.attr(h, "kvm").and_then(parse_bool) == Some(true);
    let mut x = String::from("<?xml version=\"1.0\" standalone=\"no\"?>\n<kickstart>\n");
    if !kvm {
        x.push_str(&format!(
            "  <description>{}</description>\n</kickstart>\n",
            escape_text(&format!(
                "kvmroll: {host} is not a VM container (kvm is not true): nothing to install"
            ))
        ));
        return Ok(x);
    }
    x.push_str(&format!(
        "  <description>{}</description>\n",
        escape_text(&format!("kvmroll: make {host} a VM container (kvm=true)"))
    ));
    let packages: Vec<String> = match c.attr(h, "kvm_packages") {
        Some(list) => list.split_whitespace().map(str::to_string).collect(),
        None => DEFAULT_PACKAGES.iter().map(|p| p.to_string()).collect(),
    };
    for p in &packages {
        x.push_str(&format!("  <package>{}</package>\n", escape_text(p)));
    }
    let mut post = String::new();
    post.push_str("set -e\n");
    post.push_str("# kvmroll: binaries, hook, unit, rules, dracut module and man pages.\n");
    post.push_str(&format!(
        "curl -fsS {} | tar -C / -xzf -\n",
        shell_quote(&o.dist_url)
    ));
    post.push_str(
        "mkdir -p /etc/kvmroll /etc/kvmroll/attributes /etc/kvmroll/domains /var/lib/kvmroll\n",
    );
    post.push_str(&heredoc(
        "/etc/kvmroll/kvmroll.conf",
        &format!("# Written at install by the kvmroll kickstart.\ndb = {}\nhost = {host}\nkvmroll = /usr/local/bin/kvmroll\n", o.db),
        "the configuration",
    )?);
    post.push_str("/usr/local/bin/kvmroll-hook install --force\n");
    post.push_str("systemctl enable kvmroll-guests.service kvmroll-events-prune.timer\n");
    let devices = pci_devices(c, host)?;
    post.push_str(&heredoc(
        UDEV_RULES_PATH,
        &udev_rules_for(host, &devices),
        "the udev rules",
    )?);
    post.push_str(&heredoc(
        DRACUT_CONF_PATH,
        &dracut_conf_for(host, &devices),
        "the dracut configuration",
    )?);
    post.push_str("dracut --force --regenerate-all\n");
    post.push_str("# The host's resolved attributes, one file each, as stored.\n");
    for (name, r) in c.resolve(h) {
        post.push_str(&heredoc(
            &format!("/etc/kvmroll/attributes/{name}"),
            &r.value,
            &format!("attribute {name}"),
        )?);
    }
    post.push_str("# The VMs of this container, defined when libvirtd first starts.\n");
    let mut renderer = Renderer::new(c);
    for vm in c.vms_on(host) {
        let xml = renderer.render(&vm.name).map_err(HostFileError::Render)?;
        post.push_str(&heredoc(
            &format!("/etc/kvmroll/domains/{}.xml", vm.name),
            &xml,
            &format!("VM {}", vm.name),
        )?);
        post.push_str(&format!(
            "install -m 0600 /etc/kvmroll/domains/{0}.xml /etc/libvirt/qemu/{0}.xml\n",
            vm.name
        ));
    }
    x.push_str("  <post>\n");
    x.push_str(&escape_text(&post));
    x.push_str("  </post>\n</kickstart>\n");
    Ok(x)
}

/// Quotes a word for the shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::{small_cluster, vm};
    use crate::cluster::Change;
    use crate::model::Scope;

    fn hostdev(bus: &str) -> String {
        format!("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='{bus}' slot='0x00' function='0x1'/></source></hostdev>")
    }

    fn set(c: &mut Cluster, host: &str, name: &str, value: &str) {
        c.apply(&Change::SetAttr {
            scope: Scope::Host(host.into()),
            name: name.into(),
            value: value.into(),
        })
        .unwrap();
    }

    #[test]
    fn finds_pci_devices_and_refuses_duplicates() {
        let mut c = small_cluster();
        c.apply(&Change::AddVm(vm("a", "vm-container-0-0", 1)))
            .unwrap();
        c.apply(&Change::AddVm(vm("b", "vm-container-0-0", 1)))
            .unwrap();
        set(&mut c, "a", "kvm_device_0", &hostdev("0x03"));
        set(&mut c, "a", "kvm_device_1", "<watchdog model='i6300esb'/>");
        set(&mut c, "b", "kvm_device_0", &hostdev("0x81"));
        let d = pci_devices(&c, "vm-container-0-0").unwrap();
        assert_eq!(
            d.iter().map(|d| d.address.as_str()).collect::<Vec<_>>(),
            ["0000:03:00.1", "0000:81:00.1"]
        );
        let rules = udev_rules(&c, "vm-container-0-0").unwrap();
        assert!(rules.contains("KERNEL==\"0000:81:00.1\", ATTR{driver_override}=\"vfio-pci\""));
        set(&mut c, "b", "kvm_device_0", &hostdev("0x3"));
        let e = pci_devices(&c, "vm-container-0-0").unwrap_err();
        assert!(
            matches!(e, HostFileError::DuplicatePci { ref address, .. } if address == "0000:03:00.1"),
            "{e}"
        );
        set(
            &mut c,
            "b",
            "kvm_device_0",
            "<hostdev mode='subsystem' type='pci'><source/></hostdev>",
        );
        assert!(matches!(
            pci_devices(&c, "vm-container-0-0"),
            Err(HostFileError::NoAddress { .. })
        ));
        assert!(matches!(
            pci_devices(&c, "nosuch"),
            Err(HostFileError::UnknownHost(_))
        ));
    }

    #[test]
    fn kickstart_text_round_trips_through_xml() {
        let mut c = small_cluster();
        let nasty = "a<b>&c\"d'e\n</post><x>";
        set(&mut c, "vm-container-0-0", "note", nasty);
        let o = KickstartOptions {
            dist_url: "http://frontend/kvmroll.tar.gz".into(),
            db: "/var/lib/kvmroll/kvmroll.db".into(),
        };
        let x = kickstart(&c, "vm-container-0-0", &o).unwrap();
        let doc = crate::xml::parse_document(&x).unwrap();
        let post = &doc.child("post").unwrap().text;
        assert!(
            post.contains(&format!("<<'{HEREDOC_END}'\n{nasty}\n{HEREDOC_END}\n")),
            "{post}"
        );
        let none = kickstart(&c, "compute-0-0", &o).unwrap();
        let doc = crate::xml::parse_document(&none).unwrap();
        assert!(doc.child("post").is_none() && doc.child("package").is_none());
        set(&mut c, "vm-container-0-0", "evil", HEREDOC_END);
        assert!(matches!(
            kickstart(&c, "vm-container-0-0", &o),
            Err(HostFileError::Marker { .. })
        ));
    }
}

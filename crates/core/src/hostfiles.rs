//! What a VM container's installation needs from the database: the udev
//! rules and dracut configuration that bind passed-through PCI devices to
//! vfio-pci before a host driver claims them, and the Rocks-style kickstart
//! XML fragment that installs kvmroll on a `kvm=true` host.

use crate::attrs;
use crate::cluster::Cluster;
use crate::model::{parse_bool, Host};
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
    #[error("attribute kvmroll_db_url holds a password, which the kickstart would serve to anyone: take it out of the URL and put it in the passfile named by kvmroll_db_passfile")]
    PasswordInUrl,
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
         install_items+=\" {UDEV_RULES_PATH} /usr/lib/modprobe.d/kvmroll-vfio.conf \"\n"
    )
}

/// How the kickstart fragment finds what it installs.
#[derive(Debug, Clone)]
pub struct KickstartOptions {
    /// Where the container fetches a kvmroll installation tarball instead
    /// of installing the `kvmroll` package (attribute `kvmroll_dist_url`;
    /// unset: the package, from the frontend's repository).
    pub dist_url: Option<String>,
    /// The database location the container's hook and service use
    /// (attribute `kvmroll_db_url`, else the default path).
    pub db: String,
    /// The container's database credential, the text of a libpq passfile,
    /// written into the kickstart only where the administrator allowed it
    /// (`kvmroll_db_credential_in_kickstart`); otherwise the container gets
    /// it out of band (see kvmroll.conf(5)).
    pub credential: Option<String>,
}

/// Where a container keeps its database credential: a libpq passfile that
/// only root can read.
pub const CONTAINER_PASSFILE: &str = "/etc/kvmroll/db.pgpass";

/// Whether a location is a PostgreSQL URL (the container then needs a
/// credential).
fn is_postgres(location: &str) -> bool {
    location.starts_with("postgresql://") || location.starts_with("postgres://")
}

/// Whether a PostgreSQL URL carries a password (`user:secret@host` or a
/// `password=` parameter).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, q),
        None => (rest, ""),
    };
    let authority = authority.split('/').next().unwrap_or_default();
    let userinfo_password = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    userinfo_password
        || query
            .split('&')
            .any(|kv| kv.split('=').next() == Some("password"))
}

impl KickstartOptions {
    /// The defaults for `host`: the `kvmroll_dist_url` attribute (a tarball
    /// fallback), else the `kvmroll` package; the `kvmroll_db_url` attribute, else
    /// the default database path. A URL holding a password is refused: the
    /// kickstart is served over plain HTTP to whoever asks.
    pub fn for_host(c: &Cluster, host: &str) -> Result<KickstartOptions, HostFileError> {
        let db = c
            .attr_of(host, "kvmroll_db_url")
            .map_or_else(|| crate::store::DEFAULT_DB_PATH.to_string(), str::to_string);
        if is_postgres(&db) && url_has_password(&db) {
            return Err(HostFileError::PasswordInUrl);
        }
        Ok(KickstartOptions {
            dist_url: c.attr_of(host, "kvmroll_dist_url").map(str::to_string),
            db,
            credential: None,
        })
    }

    /// The frontend's passfile whose text the kickstart may carry: only for
    /// a PostgreSQL location, and only where `kvmroll_db_credential_in_kickstart`
    /// is true for the host; the file is `kvmroll_db_passfile`, else
    /// [`CONTAINER_PASSFILE`] on the frontend. The binary reads it (and
    /// refuses one that others can read).
    pub fn credential_source(&self, c: &Cluster, host: &str) -> Option<String> {
        let allowed = c
            .attr_of(host, "kvmroll_db_credential_in_kickstart")
            .and_then(parse_bool)
            == Some(true);
        (allowed && is_postgres(&self.db)).then(|| {
            c.attr_of(host, "kvmroll_db_passfile")
                .unwrap_or(CONTAINER_PASSFILE)
                .to_string()
        })
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
/// the packages, `kvmroll` among them as a Rocks roll lists its own (its
/// scripts install the hook's drop-in and enable the units), and
/// post-install steps that write the configuration, the udev rules and
/// dracut configuration, the host's resolved attributes, and the
/// definitions of its VMs. Where `dist_url` names a tarball instead, the
/// post section unpacks it without replacing directory links (a merged
/// /usr's /lib) or changing the modes of folders that exist, and enables
/// the units itself. Text is escaped by
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
    if o.dist_url.is_none() {
        x.push_str("  <package>kvmroll</package>\n");
    }
    let mut post = String::new();
    install_steps(&mut post, o);
    config_steps(&mut post, host, o)?;
    host_steps(&mut post, c, h, host)?;
    domain_steps(&mut post, c, host)?;
    x.push_str("  <post>\n");
    x.push_str(&escape_text(&post));
    x.push_str("  </post>\n</kickstart>\n");
    Ok(x)
}

/// The kickstart's first steps: kvmroll's files, from its package or a
/// tarball, and kvmroll's folders.
fn install_steps(post: &mut String, o: &KickstartOptions) {
    post.push_str("set -e\n");
    match &o.dist_url {
        None => post.push_str(
            "# kvmroll comes from its package: binaries, the hook as the drop-in\n\
             # /etc/libvirt/hooks/qemu.d/kvmroll, units (enabled by its scripts), rules,\n\
             # dracut module and manual pages.\n",
        ),
        // GNU tar would otherwise replace a link to a folder (a merged
        // /usr's /lib) by a folder, and give a folder that exists the
        // archive's mode; the tarball holds no folder of the system's.
        Some(url) => post.push_str(&format!(
            "# kvmroll from a tarball (kvmroll_dist_url): binaries, the hook's drop-in, units,\n\
             # rules, dracut module and manual pages.\n\
             curl -fsS {} | tar -C / --keep-directory-symlink --no-overwrite-dir -xzf -\n",
            shell_quote(url)
        )),
    }
    post.push_str(
        "mkdir -p /etc/kvmroll /etc/kvmroll/attributes /etc/kvmroll/domains /var/lib/kvmroll\n",
    );
}

/// `kvmroll.conf`, the database credential where PostgreSQL needs one, and
/// the units a tarball does not enable.
fn config_steps(post: &mut String, host: &str, o: &KickstartOptions) -> Result<(), HostFileError> {
    let passfile = if is_postgres(&o.db) {
        format!("passfile = {CONTAINER_PASSFILE}\n")
    } else {
        String::new()
    };
    // No `kvmroll =` line: the default finds the CLI where the package
    // (/usr/bin) or a local build (/usr/local/bin, which wins) put it.
    post.push_str(&heredoc(
        "/etc/kvmroll/kvmroll.conf",
        &format!(
            "# Written at install by the kvmroll kickstart.\ndb = {}\n{passfile}host = {host}\n",
            o.db
        ),
        "the configuration",
    )?);
    if is_postgres(&o.db) {
        match &o.credential {
            // Made under umask 077, so it is never readable by others, not
            // even for a moment.
            Some(text) => {
                post.push_str("# The container's database credential (kvmroll_db_credential_in_kickstart).\n(umask 077\n");
                post.push_str(&heredoc(CONTAINER_PASSFILE, text, "the database credential")?);
                post.push_str(")\n");
            }
            None => post.push_str(&format!(
                "# No database credential here (kvmroll_db_credential_in_kickstart is not true):\n# install it as {CONTAINER_PASSFILE}, mode 0600, before kvmroll's services need it.\n"
            )),
        }
    }
    if o.dist_url.is_some() {
        post.push_str("systemctl enable kvmroll-guests.service kvmroll-events-prune.timer\n");
    }
    Ok(())
}

/// The host's udev rules, dracut configuration and resolved attributes.
fn host_steps(post: &mut String, c: &Cluster, h: &Host, host: &str) -> Result<(), HostFileError> {
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
    Ok(())
}

/// The definitions of the container's VMs, installed for libvirtd's first
/// start.
fn domain_steps(post: &mut String, c: &Cluster, host: &str) -> Result<(), HostFileError> {
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
    Ok(())
}

/// Quotes a word for the shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests;

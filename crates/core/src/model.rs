//! The cluster's records (hosts, VMs, disks, NICs, attribute scopes) and the
//! parsing and validation of what users type for them.

use serde::Serialize;
use std::fmt;

/// A value a user gave that kvmroll refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("invalid {kind} name {name:?}: {why}")]
    Name {
        kind: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("invalid disk spec {spec:?}: {why} (expected TYPE:PATH,DEV,BUS[,SIZE_GIB])")]
    DiskSpec { spec: String, why: String },
    #[error("invalid nic spec {spec:?}: {why} (expected bridge:NAME[,mac=MAC][,vlan=N][,model=M] or direct:DEV[,...])")]
    NicSpec { spec: String, why: String },
    #[error("invalid MAC address {0:?}: expected six hex pairs of a unicast address, e.g. 52:54:00:12:34:56")]
    Mac(String),
    #[error("invalid path {path:?}: {why}")]
    Path { path: String, why: &'static str },
    #[error("invalid value {value:?} for {what}: {why}")]
    Value {
        what: String,
        value: String,
        why: String,
    },
    #[error("attribute {name}: {why}")]
    Attribute { name: String, why: String },
}

/// Checks a host or VM name. Names end up in file paths
/// (`/etc/kvmroll/vms/NAME/`), libvirt domain names and shell commands, so
/// they are kept to what a DNS label and Rocks allow.
pub fn check_name(kind: &'static str, name: &str) -> Result<(), ValidationError> {
    let bad = |why| {
        Err(ValidationError::Name {
            kind,
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 63 {
        return bad("it is longer than 63 characters");
    }
    if name.contains('/') {
        return bad("it contains '/'");
    }
    if name.contains("..") {
        return bad("it contains '..'");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains white space or control characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// Checks an absolute path given for a file on a container (disk, cdrom,
/// emulator): absolute, no `..`, no control characters.
pub fn check_abs_path(path: &str) -> Result<(), ValidationError> {
    let bad = |why| {
        Err(ValidationError::Path {
            path: path.to_string(),
            why,
        })
    };
    if !path.starts_with('/') {
        return bad("it must be absolute");
    }
    if path.split('/').any(|c| c == "..") {
        return bad("it must not contain '..'");
    }
    if path.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    // The path is written into the domain XML.
    if !path.chars().all(crate::xml::is_xml_char) {
        return bad("it contains a character XML cannot carry (U+FFFE or U+FFFF)");
    }
    if path.len() > 4096 {
        return bad("it is too long");
    }
    Ok(())
}

/// Where an attribute is set; resolution runs from the first to the last.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "scope", content = "target", rename_all = "lowercase")]
pub enum Scope {
    Global,
    Os(String),
    Appliance(String),
    Rack(u32),
    Host(String),
}

impl Scope {
    /// The scope's kind as stored and shown.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Os(_) => "os",
            Scope::Appliance(_) => "appliance",
            Scope::Rack(_) => "rack",
            Scope::Host(_) => "host",
        }
    }

    /// The scope's target as stored ("" for global).
    pub fn target(&self) -> String {
        match self {
            Scope::Global => String::new(),
            Scope::Os(s) | Scope::Appliance(s) | Scope::Host(s) => s.clone(),
            Scope::Rack(r) => r.to_string(),
        }
    }

    /// Rebuilds a scope from its stored kind and target.
    pub fn from_parts(kind: &str, target: &str) -> Option<Scope> {
        Some(match kind {
            "global" => Scope::Global,
            "os" => Scope::Os(target.to_string()),
            "appliance" => Scope::Appliance(target.to_string()),
            "rack" => Scope::Rack(target.parse().ok()?),
            "host" => Scope::Host(target.to_string()),
            _ => return None,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            other => write!(f, "{}:{}", other.kind(), other.target()),
        }
    }
}

/// What a host does at its next boot (Rocks' boot action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootAction {
    Install,
    Os,
}

impl BootAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BootAction::Install => "install",
            BootAction::Os => "os",
        }
    }

    pub fn parse(s: &str) -> Result<BootAction, ValidationError> {
        match s {
            "install" => Ok(BootAction::Install),
            "os" => Ok(BootAction::Os),
            other => Err(ValidationError::Value {
                what: "boot action".into(),
                value: other.into(),
                why: "expected install or os".into(),
            }),
        }
    }
}

/// A node of the cluster: a physical host or a VM's own node row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub name: String,
    pub appliance: String,
    pub rack: u32,
    pub rank: u32,
    pub cpus: u32,
    pub os: String,
    pub boot_action: BootAction,
    pub install_action: String,
    pub run_action: String,
}

impl Host {
    /// A host with Rocks' defaults: rack 0, rank 0, one CPU, os linux, boot os.
    pub fn new(name: &str, appliance: &str) -> Host {
        Host {
            name: name.to_string(),
            appliance: appliance.to_string(),
            rack: 0,
            rank: 0,
            cpus: 1,
            os: "linux".to_string(),
            boot_action: BootAction::Os,
            install_action: "install".to_string(),
            run_action: "os".to_string(),
        }
    }
}

/// How a disk's storage is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskKind {
    /// A raw image file (Rocks' `file`).
    File,
    Raw,
    Qcow2,
    Block,
}

impl DiskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskKind::File => "file",
            DiskKind::Raw => "raw",
            DiskKind::Qcow2 => "qcow2",
            DiskKind::Block => "block",
        }
    }

    pub fn parse(s: &str) -> Option<DiskKind> {
        Some(match s {
            "file" => DiskKind::File,
            "raw" => DiskKind::Raw,
            "qcow2" => DiskKind::Qcow2,
            "block" => DiskKind::Block,
            _ => return None,
        })
    }
}

/// The disk buses libvirt knows for QEMU guests' disks. Not `fdc`: a
/// floppy controller takes only `device='floppy'`, and libvirt refuses a
/// disk on it ("Invalid bus type 'fdc' for disk").
pub const DISK_BUSES: &[&str] = &["virtio", "ide", "scsi", "sata", "usb", "sd"];

/// A VM disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub kind: DiskKind,
    pub path: String,
    pub dev: String,
    pub bus: String,
    pub size_gib: Option<u32>,
}

impl Disk {
    /// Parses `TYPE:PATH,DEV,BUS[,SIZE_GIB]`.
    pub fn parse(spec: &str) -> Result<Disk, ValidationError> {
        let bad = |why: String| ValidationError::DiskSpec {
            spec: spec.to_string(),
            why,
        };
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad("no TYPE: prefix".into()))?;
        let kind = DiskKind::parse(kind).ok_or_else(|| {
            bad(format!(
                "unknown type {kind:?}, expected file, raw, qcow2 or block"
            ))
        })?;
        let parts: Vec<&str> = rest.split(',').collect();
        if !(3..=4).contains(&parts.len()) {
            return Err(bad(format!("{} comma-separated fields", parts.len())));
        }
        let path = parts[0];
        check_abs_path(path).map_err(|e| bad(e.to_string()))?;
        let dev = parts[1];
        if !(2..=8).contains(&dev.len()) || disk_index(dev).is_none() {
            return Err(bad(format!(
                "target device {dev:?} is not a device name like vda or hdb"
            )));
        }
        let bus = parts[2];
        if !DISK_BUSES.contains(&bus) {
            return Err(bad(format!(
                "unknown bus {bus:?}, expected one of {}",
                DISK_BUSES.join(", ")
            )));
        }
        let size_gib = match parts.get(3) {
            None => None,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(bad(format!("size {s:?} is not a positive number of GiB"))),
            },
        };
        Ok(Disk {
            kind,
            path: path.to_string(),
            dev: dev.to_string(),
            bus: bus.to_string(),
            size_gib,
        })
    }

    /// The spec this disk parses from.
    pub fn spec(&self) -> String {
        let mut s = format!(
            "{}:{},{},{}",
            self.kind.as_str(),
            self.path,
            self.dev,
            self.bus
        );
        if let Some(n) = self.size_gib {
            s.push_str(&format!(",{n}"));
        }
        s
    }
}

/// The buses where libvirt gives a disk a drive address worked out from
/// its target name: two disks whose names give the same index (`hda` and
/// `sda` are both 0) take the same slot, and libvirt refuses the domain
/// ("Found duplicate drive address").
pub const DRIVE_BUSES: &[&str] = &["ide", "sata", "scsi"];

/// libvirt's index of a disk target name (`vda` 0, `hdc` 2, `sdaa` 26), as
/// its `virDiskNameParse` reads it: `hd`, `sd`, `vd`, `xvd` or `ubd`, one or
/// more letters, then an optional partition number. `None` for a name
/// libvirt refuses for a disk ("Unknown disk name", or `fd`, a floppy's).
pub fn disk_index(dev: &str) -> Option<u32> {
    let rest = ["hd", "sd", "vd", "xvd", "ubd"]
        .iter()
        .find_map(|p| dev.strip_prefix(p))?;
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    let (name, partition) = rest.split_at(letters);
    if letters == 0 || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.bytes().enumerate().try_fold(0u32, |idx, (i, b)| {
        idx.checked_add(u32::from(i > 0))?
            .checked_mul(26)?
            .checked_add(u32::from(b - b'a'))
    })
}

/// A MAC address, kept in lowercase colon form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Mac(String);

impl Mac {
    /// Parses and normalises a unicast MAC.
    pub fn parse(s: &str) -> Result<Mac, ValidationError> {
        let bad = || ValidationError::Mac(s.to_string());
        let bytes: Vec<u8> = s
            .split(':')
            .map(|p| {
                if p.len() == 2 {
                    u8::from_str_radix(p, 16).map_err(|_| bad())
                } else {
                    Err(bad())
                }
            })
            .collect::<Result<_, _>>()?;
        if bytes.len() != 6 || bytes[0] & 1 == 1 || bytes.iter().all(|b| *b == 0) {
            return Err(bad());
        }
        Ok(Mac(s.to_ascii_lowercase()))
    }

    /// A MAC in QEMU's locally used 52:54:00 prefix, from three bytes.
    pub fn qemu(tail: [u8; 3]) -> Mac {
        Mac(format!(
            "52:54:00:{:02x}:{:02x}:{:02x}",
            tail[0], tail[1], tail[2]
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a NIC reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NicKind {
    /// A tap device on a host bridge.
    Bridge,
    /// A macvtap device on a host interface (Rocks' `direct`).
    Direct,
}

impl NicKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NicKind::Bridge => "bridge",
            NicKind::Direct => "direct",
        }
    }
}

/// A VM network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    pub kind: NicKind,
    pub source: String,
    pub mac: Mac,
    pub vlan: Option<u16>,
    pub model: String,
}

/// A NIC as the user wrote it; the MAC may still be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub kind: NicKind,
    pub source: String,
    pub mac: Option<Mac>,
    pub vlan: Option<u16>,
    pub model: String,
}

impl NicSpec {
    /// Parses `bridge:NAME[,mac=MAC][,vlan=N][,model=M]` or `direct:DEV[,...]`.
    pub fn parse(spec: &str) -> Result<NicSpec, ValidationError> {
        let bad = |why: String| ValidationError::NicSpec {
            spec: spec.to_string(),
            why,
        };
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad("no bridge: or direct: prefix".into()))?;
        let kind = match kind {
            "bridge" => NicKind::Bridge,
            "direct" => NicKind::Direct,
            other => return Err(bad(format!("unknown kind {other:?}"))),
        };
        let mut parts = rest.split(',');
        let source = parts.next().unwrap_or_default();
        // Linux interface names: at most 15 bytes, no '/', no white space.
        if source.is_empty()
            || source.len() > 15
            || source == "."
            || source == ".."
            || !source
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad(format!("{source:?} is not a network interface name")));
        }
        let mut nic = NicSpec {
            kind,
            source: source.to_string(),
            mac: None,
            vlan: None,
            model: "virtio".to_string(),
        };
        for opt in parts {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| bad(format!("option {opt:?} is not KEY=VALUE")))?;
            match key {
                "mac" => nic.mac = Some(Mac::parse(value).map_err(|e| bad(e.to_string()))?),
                "vlan" => match value.parse::<u16>() {
                    Ok(v) if (1..=4094).contains(&v) => nic.vlan = Some(v),
                    _ => return Err(bad(format!("vlan {value:?} is not in 1..4094"))),
                },
                "model" => {
                    if value.is_empty()
                        || !value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                    {
                        return Err(bad(format!("model {value:?} is not a NIC model name")));
                    }
                    nic.model = value.to_string();
                }
                other => return Err(bad(format!("unknown option {other:?}"))),
            }
        }
        Ok(nic)
    }
}

/// The virtualisation a VM runs under.
pub const VIRT_TYPES: &[&str] = &["kvm", "qemu"];

/// A VM: its own node row carries its name and attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vm {
    /// Store order: pin_auto hands out CPUs to older VMs first.
    #[serde(skip)]
    pub id: i64,
    pub name: String,
    pub container: Option<String>,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub uuid: String,
    pub cdrom: Option<String>,
    pub virt_type: String,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// A refresh of its libvirt definition is owed (the container could not be
    /// reached when the database changed).
    pub stale: bool,
    /// How many times a change altered the VM's rendered definition: each
    /// definition carries the generation it was rendered at (its kvmroll
    /// metadata), so a container can tell an old one without the database.
    /// Kept by the store; [`crate::Cluster::plan`] bumps it.
    pub generation: u64,
}

/// Parses a boolean attribute value the way Rocks' `str2bool` did.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "y" => Some(true),
        "false" | "no" | "off" | "0" | "n" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

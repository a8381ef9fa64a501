//! The attributes that shape a VM or a host, and the validation each value
//! gets when it is set (and again when it is rendered).
//!
//! Names follow the Rocks KVM roll so that a Rocks user's scripts carry over:
//! `cpu_mode`, `kvm_cpu_pinning`, `kvm_device_N`, `kvm_autostart`, `kvm`.

use crate::cpuset;
use crate::model::{check_abs_path, check_name, parse_bool, ValidationError};
use crate::xml::{self, Element};

/// libvirt's CPU modes, and Rocks' `exact` (which becomes custom + exact match).
pub const CPU_MODES: &[&str] = &[
    "custom",
    "host-model",
    "host-passthrough",
    "maximum",
    "exact",
];

/// The element names libvirt accepts under `<devices>`.
pub const DEVICE_ELEMENTS: &[&str] = &[
    "disk",
    "controller",
    "lease",
    "filesystem",
    "interface",
    "input",
    "sound",
    "hostdev",
    "graphics",
    "video",
    "console",
    "serial",
    "parallel",
    "channel",
    "smartcard",
    "hub",
    "redirdev",
    "redirfilter",
    "rng",
    "tpm",
    "shmem",
    "memory",
    "iommu",
    "watchdog",
    "memballoon",
    "nvram",
    "panic",
    "vsock",
    "audio",
    "crypto",
];

/// A parsed `cpu_mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMode {
    /// The libvirt mode (Rocks' `exact` already turned into `custom`).
    pub mode: String,
    /// Rocks' `exact`: `match='exact'`.
    pub exact: bool,
    /// The XML that goes inside `<cpu>`, checked well-formed.
    pub inner: Option<String>,
}

impl CpuMode {
    /// Parses `MODE` or `MODE: <inner xml>`; the part after the first colon
    /// goes inside `<cpu>`, as in Rocks' `rocks report host vm config`.
    pub fn parse(value: &str) -> Result<CpuMode, ValidationError> {
        let bad = |why: String| ValidationError::Attribute {
            name: "cpu_mode".into(),
            why,
        };
        let (mode, inner) = match value.split_once(':') {
            Some((m, rest)) => (m.trim(), Some(rest.trim())),
            None => (value.trim(), None),
        };
        if !CPU_MODES.contains(&mode) {
            return Err(bad(format!(
                "unknown mode {mode:?}, expected one of {}",
                CPU_MODES.join(", ")
            )));
        }
        let inner = match inner {
            Some(x) if !x.is_empty() => {
                xml::parse_fragment(x).map_err(|e| bad(format!("the XML after the colon: {e}")))?;
                Some(x.to_string())
            }
            _ => None,
        };
        if inner.is_none() && matches!(mode, "custom" | "exact") {
            return Err(bad(format!(
                "mode {mode} needs a CPU model after a colon, e.g. '{mode}: <model>Haswell</model>'"
            )));
        }
        Ok(CpuMode {
            mode: if mode == "exact" { "custom" } else { mode }.to_string(),
            exact: mode == "exact",
            inner,
        })
    }
}

/// A parsed `kvm_cpu_pinning`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinning {
    /// vCPU i on physical CPU i (Rocks).
    All,
    /// CPUs that no other VM of the container is pinned to, NUMA-local.
    Auto,
    /// A fragment added as a child of `<domain>`, usually `<cputune>`.
    Fragment { xml: String, elements: Vec<Element> },
}

impl Pinning {
    pub fn parse(value: &str) -> Result<Pinning, ValidationError> {
        match value.trim() {
            "pin_all" => Ok(Pinning::All),
            "pin_auto" => Ok(Pinning::Auto),
            other => {
                let elements =
                    xml::parse_fragment(other).map_err(|e| ValidationError::Attribute {
                        name: "kvm_cpu_pinning".into(),
                        why: format!("not pin_all, pin_auto or a well-formed XML fragment: {e}"),
                    })?;
                Ok(Pinning::Fragment {
                    xml: other.to_string(),
                    elements,
                })
            }
        }
    }

    /// The pins a fragment asks for: (vCPU, its cpuset) from every `vcpupin`.
    pub fn fragment_pins(elements: &[Element]) -> Result<Vec<(u32, Vec<u32>)>, String> {
        let mut found = Vec::new();
        for root in elements {
            root.descendants("vcpupin", &mut found);
        }
        found
            .into_iter()
            .map(|pin| {
                let vcpu = pin
                    .attr("vcpu")
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or("a <vcpupin> without a numeric vcpu attribute")?;
                let set = pin
                    .attr("cpuset")
                    .ok_or("a <vcpupin> without a cpuset attribute")?;
                Ok((vcpu, cpuset::parse(set)?.into_iter().collect()))
            })
            .collect()
    }
}

/// Parses a `kvm_device_N` value: one or more `<devices>` children.
pub fn parse_device(name: &str, value: &str) -> Result<Vec<Element>, ValidationError> {
    let bad = |why: String| ValidationError::Attribute {
        name: name.to_string(),
        why,
    };
    let elements = xml::parse_fragment(value)
        .map_err(|e| bad(format!("not a well-formed XML fragment: {e}")))?;
    for el in &elements {
        if !DEVICE_ELEMENTS.contains(&el.name.as_str()) {
            return Err(bad(format!(
                "<{}> is not a libvirt device (expected hostdev, disk, interface, ...)",
                el.name
            )));
        }
    }
    Ok(elements)
}

/// The N of `kvm_device_N`, if `name` is one.
pub fn device_index(name: &str) -> Option<u32> {
    let n = name.strip_prefix("kvm_device_")?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok()
}

/// Attributes whose value is XML: Rocks once stored them escaped.
fn holds_xml(name: &str) -> bool {
    name == "cpu_mode" || name == "kvm_cpu_pinning" || name.starts_with("kvm_device_")
}

const BOOL_ATTRS: &[&str] = &[
    "kvm",
    "kvm_autostart",
    "kvm_strict_definition",
    "kvm_guests_bypass_cache",
];
const SECONDS_ATTRS: &[&str] = &[
    "kvm_plugin_timeout_allocate",
    "kvm_plugin_timeout_preboot",
    "kvm_plugin_timeout_shutdown",
    "kvm_plugin_timeout_other",
    "kvm_guests_save_timeout",
    "kvm_guests_shutdown_timeout",
];

/// Checks an attribute name: what Rocks allowed, and safe in a file name.
pub fn check_attr_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::Attribute {
            name: name.to_string(),
            why: "attribute names are letters, digits, '_', '-' and '.', starting with a letter"
                .into(),
        })
    }
}

/// Validates a value for attribute `name` on its own and returns the value to
/// store: Rocks-escaped XML unescaped once, booleans as `true`/`false`,
/// everything else unchanged. Checks that need the cluster (pinning against
/// the container's CPUs, device numbering) happen when the VM is rendered.
pub fn normalize(name: &str, value: &str) -> Result<String, ValidationError> {
    check_attr_name(name)?;
    let bad = |why: String| ValidationError::Attribute {
        name: name.to_string(),
        why,
    };
    if value.contains('\0') {
        return Err(bad("the value contains a NUL byte".into()));
    }
    let value = if holds_xml(name) {
        xml::rocks_unescape(value)
    } else {
        value.to_string()
    };
    match name {
        "cpu_mode" => {
            CpuMode::parse(&value)?;
        }
        "kvm_cpu_pinning" => {
            if let Pinning::Fragment { elements, .. } = Pinning::parse(&value)? {
                Pinning::fragment_pins(&elements).map_err(bad)?;
            }
        }
        n if BOOL_ATTRS.contains(&n) => {
            let b = parse_bool(&value)
                .ok_or_else(|| bad(format!("{value:?} is not a boolean (true or false)")))?;
            return Ok(b.to_string());
        }
        n if SECONDS_ATTRS.contains(&n) => {
            positive(&value).map_err(bad)?;
        }
        "kvm_guests_parallel" | "kvm_events_keep_days" => {
            positive(&value).map_err(bad)?;
        }
        "kvm_guests_start_delay" => {
            value
                .parse::<u32>()
                .map_err(|_| bad(format!("{value:?} is not a number of milliseconds")))?;
        }
        "kvm_guests_on_timeout" if !matches!(value.as_str(), "shutdown" | "destroy") => {
            return Err(bad(format!("{value:?}: expected shutdown or destroy")));
        }
        crate::disks::ROOTS_ATTR => {
            crate::disks::Roots::parse(&value).map_err(bad)?;
        }
        "kvm_emulator" => {
            check_abs_path(&value).map_err(|e| bad(e.to_string()))?;
        }
        "kvm_machine" => {
            check_name("machine type", &value).map_err(|e| bad(e.to_string()))?;
        }
        "kvm_graphics" if !matches!(value.as_str(), "vnc" | "spice" | "none") => {
            return Err(bad(format!("{value:?}: expected vnc, spice or none")));
        }
        "numa_cells" => {
            cpuset::parse_cells(&value).map_err(bad)?;
        }
        "libvirt_uri"
            if value.is_empty()
                || !value.contains(":/")
                || value.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            return Err(bad(format!(
                "{value:?} is not a libvirt URI such as qemu:///system or qemu+ssh://{{host}}/system"
            )));
        }
        n if n.starts_with("kvm_device_") => {
            if device_index(n).is_none() {
                return Err(bad(
                    "device attributes are kvm_device_0, kvm_device_1, ...".into()
                ));
            }
            parse_device(n, &value)?;
        }
        _ => {}
    }
    Ok(value)
}

fn positive(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{value:?} is not a positive whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_modes() {
        let m = CpuMode::parse("host-model").unwrap();
        assert_eq!(
            (m.mode.as_str(), m.exact, m.inner),
            ("host-model", false, None)
        );
        let m = CpuMode::parse("exact: <model>Haswell</model>").unwrap();
        assert_eq!(m.mode, "custom");
        assert!(m.exact);
        assert_eq!(m.inner.as_deref(), Some("<model>Haswell</model>"));
        let m = CpuMode::parse("host-passthrough:<feature policy='disable' name='vmx'/>").unwrap();
        assert_eq!(m.mode, "host-passthrough");
        for bad in [
            "passthrough",
            "",
            "custom",
            "exact",
            "custom: <model>x</model></cpu><devices>",
            "custom: <model>",
            "host-model: &",
        ] {
            assert!(CpuMode::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn pinning() {
        assert_eq!(Pinning::parse("pin_all").unwrap(), Pinning::All);
        assert_eq!(Pinning::parse(" pin_auto ").unwrap(), Pinning::Auto);
        let Pinning::Fragment { elements, .. } =
            Pinning::parse("<cputune><vcpupin vcpu='0' cpuset='2-3'/></cputune>").unwrap()
        else {
            panic!("not a fragment")
        };
        assert_eq!(
            Pinning::fragment_pins(&elements).unwrap(),
            vec![(0, vec![2, 3])]
        );
        assert!(Pinning::parse("pin_some").is_err());
        assert!(normalize(
            "kvm_cpu_pinning",
            "<cputune><vcpupin vcpu='x' cpuset='1'/></cputune>"
        )
        .is_err());
        assert!(normalize(
            "kvm_cpu_pinning",
            "<cputune><vcpupin vcpu='0' cpuset='a'/></cputune>"
        )
        .is_err());
    }

    #[test]
    fn rocks_escaped_values_are_stored_unescaped() {
        assert_eq!(
            normalize(
                "kvm_cpu_pinning",
                "&lt;cputune&gt;&lt;vcpupin vcpu=\"0\" cpuset=\"1\"/&gt;&lt;/cputune&gt;"
            )
            .unwrap(),
            "<cputune><vcpupin vcpu=\"0\" cpuset=\"1\"/></cputune>"
        );
        // Other attributes keep their text as given.
        assert_eq!(normalize("comment", "a &lt; b").unwrap(), "a &lt; b");
    }

    #[test]
    fn devices() {
        assert_eq!(device_index("kvm_device_0"), Some(0));
        assert_eq!(device_index("kvm_device_12"), Some(12));
        assert_eq!(device_index("kvm_device_01"), None);
        assert_eq!(device_index("kvm_device_"), None);
        normalize("kvm_device_0", "<hostdev mode='subsystem' type='pci'/>").unwrap();
        assert!(normalize("kvm_device_0", "<hostdev>").is_err());
        assert!(normalize("kvm_device_0", "<domain/>").is_err());
        assert!(normalize("kvm_device_0", "</devices><hostdev/>").is_err());
        assert!(normalize("kvm_device_x", "<hostdev/>").is_err());
    }

    #[test]
    fn booleans_are_normalised() {
        assert_eq!(normalize("kvm_autostart", "Yes").unwrap(), "true");
        assert_eq!(normalize("kvm", "0").unwrap(), "false");
        assert!(normalize("kvm_autostart", "sometimes").is_err());
    }

    #[test]
    fn other_checked_values() {
        assert!(normalize("kvm_emulator", "qemu-kvm").is_err());
        assert!(normalize("kvm_graphics", "rdp").is_err());
        assert!(normalize("numa_cells", "0-3;2-5").is_err());
        assert!(normalize("libvirt_uri", "system").is_err());
        assert!(normalize("kvm_plugin_timeout_preboot", "0").is_err());
        assert!(normalize("bad name", "x").is_err());
        assert!(normalize("x", "a\0b").is_err());
        normalize("libvirt_uri", "qemu+ssh://{host}/system").unwrap();
        assert!(normalize("kvm_disk_roots", "/a:disks").is_err());
        assert!(normalize("kvm_disk_roots", "/").is_err());
        normalize("kvm_disk_roots", "/state/partition1/kvm/disks:/srv/vm").unwrap();
    }
}

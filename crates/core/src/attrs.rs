//! The attributes that shape a VM or a host, and the validation each value
//! gets when it is set (and again when it is rendered).
//!
//! Names follow the Rocks KVM roll so that a Rocks user's scripts carry over:
//! `cpu_mode`, `kvm_cpu_pinning`, `kvm_device_N`, `kvm_autostart`, `kvm`.

use crate::cpuset;
use crate::model::{check_abs_path, check_name, parse_bool, ValidationError};
use crate::text::{clip, QUOTE_CHARS};
use crate::xml::{self, Element};
use known::AttrType;
use std::collections::BTreeSet;

pub mod known;

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
                xml::parse_fragment_within(x, CPU_AROUND)
                    .map_err(|e| bad(format!("the XML after the colon: {e}")))?;
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

/// The elements a `kvm_cpu_pinning` fragment may hold at its top level, each
/// once: where libvirt places the domain's vCPUs, its emulator and I/O
/// threads, and its memory
/// (<https://libvirt.org/formatdomain.html#cpu-tuning>, `#numa-node-tuning`,
/// `#iothreads-allocation`; an `<iothreadpin>` needs the I/O threads it pins
/// declared). kvmroll renders every other part of the domain itself: a
/// `<name>` or a `<vcpu>` here would be a second one.
pub const PINNING_ELEMENTS: &[&str] = &["cputune", "numatune", "iothreads", "iothreadids"];

/// The parent elements a fragment goes into: `<domain>` for
/// `kvm_cpu_pinning`, `<domain><devices>` for `kvm_device_N` and
/// `<domain><cpu>` for `cpu_mode`'s XML (libvirt counts them in its depth).
const PINNING_AROUND: usize = 1;
const DEVICE_AROUND: usize = 2;
const CPU_AROUND: usize = 2;

/// Every set a `kvm_cpu_pinning` fragment names, parsed (each in libvirt's
/// cpuset syntax), for the checks against the VM and its container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinSets {
    /// Each `<vcpupin>`: the vCPU and the host CPUs it runs on.
    pub vcpupins: Vec<(u32, BTreeSet<u32>)>,
    /// The host CPUs of `<emulatorpin>` and each `<iothreadpin>`.
    pub host_cpus: Vec<(&'static str, BTreeSet<u32>)>,
    /// The vCPUs named by `<vcpusched>`, `<cachetune>`, `<memorytune>` and
    /// their `<monitor>`s.
    pub vcpus: Vec<(&'static str, BTreeSet<u32>)>,
    /// The host NUMA nodes of `<numatune>`'s `<memory>` and `<memnode>`s.
    pub nodes: Vec<(&'static str, BTreeSet<u32>)>,
}

impl PinSets {
    /// Reads the sets of a fragment's top-level elements, refusing an
    /// element that is not for this attribute, a set that does not parse,
    /// a pin given twice and an I/O thread the fragment does not declare.
    fn of(elements: &[Element]) -> Result<PinSets, String> {
        let mut seen: Vec<&str> = Vec::new();
        for el in elements {
            if !PINNING_ELEMENTS.contains(&el.name.as_str()) {
                return Err(format!(
                    "<{}> is not for this attribute, whose XML holds only {}",
                    clip(&el.name, QUOTE_CHARS),
                    PINNING_ELEMENTS
                        .iter()
                        .map(|e| format!("<{e}>"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if seen.contains(&el.name.as_str()) {
                return Err(format!("<{}> is given twice", el.name));
            }
            seen.push(&el.name);
        }
        let top = |name: &str| elements.iter().find(|e| e.name == name);
        let iothreads = iothread_ids(top("iothreads"), top("iothreadids"))?;
        let mut sets = PinSets::default();
        if let Some(cputune) = top("cputune") {
            sets.read_cputune(cputune, &iothreads)?;
        }
        if let Some(numatune) = top("numatune") {
            for el in &numatune.children {
                let what = match el.name.as_str() {
                    "memory" => "memory",
                    "memnode" => "memnode",
                    _ => continue,
                };
                // `placement='auto'` has no nodeset: numad picks.
                if let Some(nodes) = el.attr("nodeset") {
                    sets.nodes.push((what, set_of(what, "nodeset", nodes)?));
                }
            }
        }
        Ok(sets)
    }

    fn read_cputune(&mut self, cputune: &Element, iothreads: &BTreeSet<u32>) -> Result<(), String> {
        let mut emulatorpins = 0;
        let mut pinned_threads = BTreeSet::new();
        // Elements libvirt's schema allows once in <cputune> (the tuning
        // values; emulatorpin is counted below, with its own message).
        const ONCE: &[&str] = &[
            "shares",
            "period",
            "quota",
            "global_period",
            "global_quota",
            "emulator_period",
            "emulator_quota",
            "iothread_period",
            "iothread_quota",
            "emulatorsched",
        ];
        let mut seen = BTreeSet::new();
        for el in &cputune.children {
            if ONCE.contains(&el.name.as_str()) && !seen.insert(el.name.as_str()) {
                return Err(format!("<{}> is given twice", el.name));
            }
            match el.name.as_str() {
                "vcpupin" => {
                    let vcpu = number(el, "vcpupin", "vcpu")?;
                    if self.vcpupins.iter().any(|(v, _)| *v == vcpu) {
                        return Err(format!("vCPU {vcpu} has two <vcpupin>s"));
                    }
                    let cpus = required_set(el, "vcpupin", "cpuset")?;
                    self.vcpupins.push((vcpu, cpus));
                }
                "emulatorpin" => {
                    emulatorpins += 1;
                    if emulatorpins > 1 {
                        return Err("<emulatorpin> is given twice".into());
                    }
                    let cpus = required_set(el, "emulatorpin", "cpuset")?;
                    self.host_cpus.push(("emulatorpin", cpus));
                }
                "iothreadpin" => {
                    let id = number(el, "iothreadpin", "iothread")?;
                    check_iothreads("iothreadpin", &[id].into(), iothreads)?;
                    if !pinned_threads.insert(id) {
                        return Err(format!("I/O thread {id} has two <iothreadpin>s"));
                    }
                    let cpus = required_set(el, "iothreadpin", "cpuset")?;
                    self.host_cpus.push(("iothreadpin", cpus));
                }
                // Without `vcpus`, the scheduler is for every vCPU.
                "vcpusched" => {
                    if let Some(v) = el.attr("vcpus") {
                        self.vcpus
                            .push(("vcpusched", set_of("vcpusched", "vcpus", v)?));
                    }
                }
                "iothreadsched" => {
                    if let Some(ids) = el.attr("iothreads") {
                        let ids = set_of("iothreadsched", "iothreads", ids)?;
                        check_iothreads("iothreadsched", &ids, iothreads)?;
                    }
                }
                "cachetune" => self.read_tune(el, "cachetune")?,
                "memorytune" => self.read_tune(el, "memorytune")?,
                _ => {}
            }
        }
        Ok(())
    }

    /// A `<cachetune>` or `<memorytune>`: the vCPUs it and its monitors name.
    fn read_tune(&mut self, el: &Element, what: &'static str) -> Result<(), String> {
        self.vcpus.push((what, required_set(el, what, "vcpus")?));
        for monitor in el.children.iter().filter(|m| m.name == "monitor") {
            self.vcpus
                .push(("monitor", required_set(monitor, "monitor", "vcpus")?));
        }
        Ok(())
    }
}

/// A set attribute in libvirt's cpuset syntax, exactly: libvirt's schema
/// allows no blank in it (`' 1'` fails `virt-xml-validate`), though the
/// parser here would read past one.
fn set_of(element: &str, attr: &str, value: &str) -> Result<BTreeSet<u32>, String> {
    if value.chars().any(char::is_whitespace) {
        return Err(format!(
            "<{element} {attr}={value:?}>: a CPU set holds no blanks (e.g. 0-3,^2)"
        ));
    }
    cpuset::parse(value).map_err(|e| format!("<{element} {attr}=...>: {e}"))
}

fn required_set(el: &Element, element: &str, attr: &str) -> Result<BTreeSet<u32>, String> {
    let value = el
        .attr(attr)
        .ok_or_else(|| format!("a <{element}> without a {attr} attribute"))?;
    set_of(element, attr, value)
}

fn number(el: &Element, element: &str, attr: &str) -> Result<u32, String> {
    el.attr(attr)
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| format!("a <{element}> without a numeric {attr} attribute"))
}

/// The I/O thread ids a domain has: those `<iothreadids>` lists, and as
/// many more as `<iothreads>` counts, numbered as libvirt numbers them
/// (the lowest unused, from 1).
fn iothread_ids(count: Option<&Element>, ids: Option<&Element>) -> Result<BTreeSet<u32>, String> {
    let mut have = BTreeSet::new();
    for t in ids
        .iter()
        .flat_map(|e| &e.children)
        .filter(|c| c.name == "iothread")
    {
        match number(t, "iothread", "id")? {
            0 => return Err("an <iothread> id must be 1 or more".into()),
            id => {
                have.insert(id);
            }
        }
    }
    let want = match count {
        None => 0,
        Some(e) => e.text.trim().parse::<u32>().map_err(|_| {
            format!(
                "<iothreads> {:?} is not a number of threads",
                clip(e.text.trim(), QUOTE_CHARS)
            )
        })?,
    };
    // An absurd count is libvirt's to refuse; only the ids pins can name matter.
    let want = (want as usize).min(cpuset::MAX_CPU as usize + 1);
    let mut next = 1;
    while have.len() < want {
        have.insert(next);
        next += 1;
    }
    Ok(have)
}

fn check_iothreads(element: &str, ids: &BTreeSet<u32>, have: &BTreeSet<u32>) -> Result<(), String> {
    match ids.iter().find(|id| !have.contains(id)) {
        None => Ok(()),
        Some(id) if have.is_empty() => Err(format!(
            "<{element}> names I/O thread {id} but the fragment declares none (add <iothreads>)"
        )),
        Some(id) => Err(format!(
            "<{element}> names I/O thread {id} but the domain's are {}",
            have.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )),
    }
}

/// A parsed `kvm_cpu_pinning`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinning {
    /// vCPU i on physical CPU i (Rocks).
    All,
    /// CPUs that no other VM of the container is pinned to, NUMA-local.
    Auto,
    /// A fragment added as a child of `<domain>`: its top-level elements
    /// are among [`PINNING_ELEMENTS`]; `sets` holds every set it names.
    Fragment { xml: String, sets: PinSets },
}

impl Pinning {
    pub fn parse(value: &str) -> Result<Pinning, ValidationError> {
        let bad = |why: String| ValidationError::Attribute {
            name: "kvm_cpu_pinning".into(),
            why,
        };
        match value.trim() {
            "pin_all" => Ok(Pinning::All),
            "pin_auto" => Ok(Pinning::Auto),
            other => {
                let elements = xml::parse_fragment_within(other, PINNING_AROUND).map_err(|e| {
                    bad(format!(
                        "not pin_all, pin_auto or a well-formed XML fragment: {e}"
                    ))
                })?;
                Ok(Pinning::Fragment {
                    xml: other.to_string(),
                    sets: PinSets::of(&elements).map_err(bad)?,
                })
            }
        }
    }
}

/// Parses a `kvm_device_N` value: one or more `<devices>` children.
pub fn parse_device(name: &str, value: &str) -> Result<Vec<Element>, ValidationError> {
    let bad = |why: String| ValidationError::Attribute {
        name: name.to_string(),
        why,
    };
    let elements = xml::parse_fragment_within(value, DEVICE_AROUND)
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

/// The longest a stage's plugins may take together, in seconds: libvirtd
/// waits for the hook (holding the VM) all that time. An hour allows a slow
/// storage allocation; a host waiting longer looks hung.
pub const MAX_PLUGIN_TIMEOUT_SECS: u64 = 3600;

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
    // What a refusal quotes of the value, which may be megabytes.
    let shown = || clip(&value, QUOTE_CHARS);
    match name {
        "cpu_mode" => {
            CpuMode::parse(&value)?;
        }
        "kvm_cpu_pinning" => {
            Pinning::parse(&value)?;
        }
        n if n.starts_with("kvm_plugin_timeout_") && known::lookup(n).is_some() => {
            plugin_timeout(&value).map_err(bad)?;
        }
        "kvm_guests_on_timeout" if !matches!(value.as_str(), "shutdown" | "destroy") => {
            return Err(bad(format!("{:?}: expected shutdown or destroy", shown())));
        }
        "kvm_guests_on_shutdown" if !matches!(value.as_str(), "save" | "migrate") => {
            return Err(bad(format!("{:?}: expected save or migrate", shown())));
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
        "kvm_migrate_transport" if !matches!(value.as_str(), "tunnelled" | "native") => {
            return Err(bad(format!("{:?}: expected tunnelled or native", shown())));
        }
        "kvm_migrate_address" if !is_address(&value) => {
            return Err(bad(format!(
                "{:?} is not an IP address or a host name",
                shown()
            )));
        }
        "kvm_graphics" if !matches!(value.as_str(), "vnc" | "spice" | "none") => {
            return Err(bad(format!("{:?}: expected vnc, spice or none", shown())));
        }
        "numa_cells" => {
            cpuset::parse_cells(&value).map_err(bad)?;
        }
        "libvirt_uri" if !looks_like_uri(&value) => {
            return Err(bad(format!(
                "{:?} is not a libvirt URI such as qemu:///system or qemu+ssh://{{host}}/system",
                shown()
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
        // The rest by the type the registry gives them.
        n => return by_type(n, value),
    }
    Ok(value)
}

/// [`normalize`] of an attribute no rule names: checked by the type the
/// registry gives it (none: anything goes); a boolean is stored as
/// `true`/`false`.
fn by_type(name: &str, value: String) -> Result<String, ValidationError> {
    let bad = |why: String| ValidationError::Attribute {
        name: name.to_string(),
        why,
    };
    let shown = || clip(&value, QUOTE_CHARS);
    match known::lookup(name).map(|k| k.kind) {
        Some(AttrType::Boolean) => {
            let b = parse_bool(&value)
                .ok_or_else(|| bad(format!("{:?} is not a boolean (true or false)", shown())))?;
            return Ok(b.to_string());
        }
        Some(AttrType::Seconds | AttrType::Count | AttrType::Days) => {
            positive(&value).map_err(bad)?;
        }
        Some(AttrType::CountOrAuto) if value != "auto" => {
            positive(&value).map_err(bad)?;
        }
        Some(AttrType::Milliseconds) => {
            value
                .parse::<u32>()
                .map_err(|_| bad(format!("{:?} is not a number of milliseconds", shown())))?;
        }
        _ => {}
    }
    Ok(value)
}

/// A plugin's time limit: a positive number of seconds, at most the cap
/// (libvirtd waits for the hook).
fn plugin_timeout(value: &str) -> Result<u32, String> {
    let over = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && value
            .parse::<u64>()
            .map_or(true, |n| n > MAX_PLUGIN_TIMEOUT_SECS);
    if over {
        return Err(format!(
            "{value} s is over the cap of {MAX_PLUGIN_TIMEOUT_SECS} s (libvirtd waits for the hook)"
        ));
    }
    positive(value)
}

/// Whether `value` can be a libvirt URI: a scheme and a path, no blanks.
/// An IPv4 or IPv6 address, or a DNS host name (dot-separated labels of
/// letters, digits and inner '-'): what may follow `tcp://` in QEMU's
/// migration URI.
fn is_address(value: &str) -> bool {
    if value.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    value.len() <= 253 && value.split('.').all(label)
}

fn looks_like_uri(value: &str) -> bool {
    !value.is_empty()
        && value.contains(":/")
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn positive(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{:?} is not a positive whole number",
            clip(value, QUOTE_CHARS)
        )),
    }
}

#[cfg(test)]
mod tests;

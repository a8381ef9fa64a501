//! The canonical projection of a domain ([`project`]): what kvmroll
//! decides, one fact a line, computed alike from kvmroll's rendering and
//! from libvirt's XML.

use super::*;

/// Device kinds whose every element kvmroll decides: one libvirt has and
/// kvmroll did not render (a disk added by `virsh edit`) is a drift.
const EXACT_DEVICES: [&str; 3] = ["disk", "interface", "hostdev"];

/// Device kinds kvmroll renders but leaves to libvirt (it rewrites them).
const UNDECIDED_DEVICES: [&str; 4] = ["serial", "console", "graphics", "emulator"];

/// The identity that prefixes the other device kinds' facts.
pub(super) const DEVICE: &str = "device ";

/// The facts of a domain: what kvmroll decides, one line each, in a fixed
/// order. `kinds` are the device kinds beyond disks, NICs and host devices
/// that count (those of `kvm_device_N`): `None` takes every kind the
/// domain has but the undecided ones, which is right for kvmroll's own
/// rendering only; for libvirt's XML pass those of the facts it is checked
/// against ([`device_kinds`]), since libvirt adds devices of its own.
pub fn project(domain: &Element, kinds: Option<&BTreeSet<String>>) -> Vec<String> {
    let mut facts = Vec::new();
    if let Some(m) = domain.child("memory") {
        let kib = memory_kib(m.text.trim(), m.attr("unit"));
        facts.push(format!(
            "memory KiB: {}",
            kib.map_or_else(|| clean(m.text.trim()), |k| k.to_string())
        ));
    }
    if let Some(v) = domain.child("vcpu") {
        let n = v.text.trim();
        match v.attr("current").filter(|c| *c != n) {
            Some(c) => facts.push(format!("vcpus: {} current={}", clean(n), clean(c))),
            None => facts.push(format!("vcpus: {}", clean(n))),
        }
    }
    if let Some(cpu) = domain.child("cpu") {
        project_cpu(cpu, &mut facts);
    }
    if let Some(tune) = domain.child("cputune") {
        let mut lines: Vec<String> = tune.children.iter().map(cputune_fact).collect();
        lines.sort();
        facts.extend(lines);
    }
    let boots: Vec<&str> = domain
        .child("os")
        .map(|os| {
            os.children
                .iter()
                .filter(|c| c.name == "boot")
                .filter_map(|b| b.attr("dev"))
                .collect()
        })
        .unwrap_or_default();
    if !boots.is_empty() {
        facts.push(format!("boot: {}", clean(&boots.join(" "))));
    }
    let no_devices = Element {
        name: "devices".into(),
        attrs: vec![],
        children: vec![],
        text: String::new(),
    };
    project_devices(
        domain.child("devices").unwrap_or(&no_devices),
        kinds,
        &mut facts,
    );
    // Kept whole through XML text: no blank at either end.
    for f in &mut facts {
        f.truncate(f.trim_end().len());
    }
    facts
}

/// The facts of a domain's devices: every disk, NIC and host device, then
/// the devices of `kinds` (see [`project`]), each sorted.
fn project_devices(devices: &Element, kinds: Option<&BTreeSet<String>>, facts: &mut Vec<String>) {
    let own_kinds: BTreeSet<String>;
    let kinds = match kinds {
        Some(k) => k,
        None => {
            own_kinds = devices
                .children
                .iter()
                .map(|d| d.name.clone())
                .filter(|n| {
                    !EXACT_DEVICES.contains(&n.as_str()) && !UNDECIDED_DEVICES.contains(&n.as_str())
                })
                .collect();
            &own_kinds
        }
    };
    for kind in EXACT_DEVICES {
        let mut lines: Vec<String> = devices
            .children
            .iter()
            .filter(|d| d.name == kind)
            .map(|d| match kind {
                "disk" => disk_fact(d),
                "interface" => nic_fact(d),
                _ => hostdev_fact(d),
            })
            .collect();
        lines.sort();
        facts.extend(lines);
    }
    let mut others: Vec<String> = devices
        .children
        .iter()
        .filter(|d| kinds.contains(&d.name))
        .map(|d| {
            let mut value = Vec::new();
            for key in ["type", "model"] {
                if let Some(v) = d.attr(key) {
                    value.push(format!("{key}={}", clean(v)));
                }
            }
            format!("{DEVICE}{}: {}", clean(&d.name), value.join(" "))
        })
        .collect();
    others.sort();
    facts.extend(others);
}

/// The device kinds named by `device KIND` facts: those [`project`] must
/// count in libvirt's XML to compare it with them.
pub fn device_kinds(facts: &[String]) -> BTreeSet<String> {
    facts
        .iter()
        .filter_map(|f| f.strip_prefix(DEVICE))
        .filter_map(|f| f.split_once(": ").map(|(kind, _)| kind.to_string()))
        .collect()
}

/// A value kept on one line: control characters shown escaped.
fn clean(v: &str) -> String {
    if v.chars().any(char::is_control) {
        v.escape_default().to_string()
    } else {
        v.to_string()
    }
}

/// `<memory>`'s value in KiB, from any of libvirt's units (rounded up, as
/// libvirt does); `None` when it is not a number in a known unit.
fn memory_kib(value: &str, unit: Option<&str>) -> Option<u64> {
    let n: u64 = value.parse().ok()?;
    let bytes: u64 = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    Some(n.checked_mul(bytes)?.div_ceil(1024))
}

/// A CPU set as libvirt writes it (`0-3,5`); a value that is not one is
/// kept as it is.
fn cpu_set(spec: &str) -> String {
    let Ok(set) = crate::cpuset::parse(spec) else {
        return clean(spec);
    };
    let mut parts = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(first) = it.next() {
        let mut last = first;
        while it.peek() == Some(&(last + 1)) {
            last += 1;
            it.next();
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    parts.join(",")
}

/// The `<cpu>` facts: its mode (a custom CPU matches exactly unless it says
/// otherwise), model, vendor, topology and each feature with its policy
/// (libvirt's default, require, written out). libvirt's `check`,
/// `migratable` and a model's `fallback` are its own.
fn project_cpu(cpu: &Element, facts: &mut Vec<String>) {
    let mode = cpu.attr("mode").unwrap_or("custom");
    let mut line = format!("cpu: mode={}", clean(mode));
    if mode == "custom" {
        line.push_str(&format!(
            " match={}",
            clean(cpu.attr("match").unwrap_or("exact"))
        ));
    }
    facts.push(line);
    if let Some(m) = cpu.child("model").filter(|m| !m.text.trim().is_empty()) {
        facts.push(format!("cpu model: {}", clean(m.text.trim())));
    }
    if let Some(v) = cpu.child("vendor") {
        facts.push(format!("cpu vendor: {}", clean(v.text.trim())));
    }
    if let Some(t) = cpu.child("topology") {
        let mut value = Vec::new();
        for key in ["sockets", "dies", "cores", "threads"] {
            match t.attr(key) {
                // libvirt writes dies='1' where it was left out.
                Some("1") if key == "dies" => {}
                Some(v) => value.push(format!("{key}={}", clean(v))),
                None => {}
            }
        }
        facts.push(format!("cpu topology: {}", value.join(" ")));
    }
    let mut features: Vec<String> = cpu
        .children
        .iter()
        .filter(|c| c.name == "feature")
        .map(|f| {
            format!(
                "cpu feature {}: {}",
                clean(f.attr("name").unwrap_or_default()),
                clean(f.attr("policy").unwrap_or("require"))
            )
        })
        .collect();
    features.sort();
    facts.extend(features);
}

/// One child of `<cputune>`: pins by the vCPU or I/O thread they pin, with
/// their set in libvirt's form; anything else whole, canonically.
fn cputune_fact(e: &Element) -> String {
    let set = || cpu_set(e.attr("cpuset").unwrap_or_default());
    match e.name.as_str() {
        "vcpupin" => format!(
            "cputune vcpupin {}: {}",
            clean(e.attr("vcpu").unwrap_or_default()),
            set()
        ),
        "iothreadpin" => format!(
            "cputune iothreadpin {}: {}",
            clean(e.attr("iothread").unwrap_or_default()),
            set()
        ),
        "emulatorpin" => format!("cputune emulatorpin: {}", set()),
        _ => format!("cputune {}: {}", clean(&e.name), canonical(e)),
    }
}

/// An element's attributes (sorted, sets in libvirt's form), text and
/// children, on one line.
fn canonical(e: &Element) -> String {
    let mut attrs: Vec<String> = e
        .attrs
        .iter()
        .map(|(k, v)| match k.as_str() {
            "cpuset" | "vcpus" | "nodeset" => format!("{k}={}", cpu_set(v)),
            _ => format!("{k}={}", clean(v)),
        })
        .collect();
    attrs.sort();
    let mut out = attrs.join(" ");
    if !e.text.trim().is_empty() {
        out.push_str(&format!(" [{}]", clean(e.text.trim())));
    }
    let mut kids: Vec<String> = e
        .children
        .iter()
        .map(|c| format!("{}({})", c.name, canonical(c)))
        .collect();
    kids.sort();
    for k in kids {
        out.push(' ');
        out.push_str(&k);
    }
    out.trim().to_string()
}

/// A disk by its target: device, type, bus, source and format, as libvirt
/// fills them in where they are left out (a file disk, its bus from its
/// name, raw).
fn disk_fact(d: &Element) -> String {
    let target = d.child("target");
    let dev = target.and_then(|t| t.attr("dev")).unwrap_or_default();
    let bus = target
        .and_then(|t| t.attr("bus"))
        .unwrap_or(match dev.get(..2) {
            Some("vd") => "virtio",
            Some("sd") => "scsi",
            Some("hd") => "ide",
            Some("fd") => "fdc",
            _ => "",
        });
    let source = d
        .child("source")
        .and_then(|s| {
            ["file", "dev", "dir", "name", "volume"]
                .iter()
                .find_map(|k| s.attr(k))
        })
        .unwrap_or_default();
    let format = d
        .child("driver")
        .and_then(|dr| dr.attr("type"))
        .unwrap_or("raw");
    let mut line = format!(
        "disk {}: device={} type={} bus={} source={} format={}",
        clean(dev),
        clean(d.attr("device").unwrap_or("disk")),
        clean(d.attr("type").unwrap_or("file")),
        clean(bus),
        clean(source),
        clean(format)
    );
    if d.child("readonly").is_some() {
        line.push_str(" readonly");
    }
    line
}

/// A NIC by its MAC: type, source (and macvtap mode), VLAN tags, model.
fn nic_fact(n: &Element) -> String {
    let mac = n
        .child("mac")
        .and_then(|m| m.attr("address"))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let kind = n.attr("type").unwrap_or_default();
    let mut line = format!("interface {}: type={}", clean(&mac), clean(kind));
    if let Some(src) = n.child("source") {
        let key = match kind {
            "bridge" => "bridge",
            "network" => "network",
            _ => "dev",
        };
        let value = src
            .attr(key)
            .or_else(|| src.attrs.first().map(|(_, v)| v.as_str()));
        if let Some(v) = value {
            line.push_str(&format!(" source={}", clean(v)));
        }
        if let Some(mode) = src.attr("mode") {
            line.push_str(&format!(" mode={}", clean(mode)));
        }
    }
    if let Some(vlan) = n.child("vlan") {
        let tags: Vec<&str> = vlan
            .children
            .iter()
            .filter(|t| t.name == "tag")
            .filter_map(|t| t.attr("id"))
            .collect();
        line.push_str(&format!(" vlan={}", clean(&tags.join(","))));
    }
    if let Some(model) = n.child("model").and_then(|m| m.attr("type")) {
        line.push_str(&format!(" model={}", clean(model)));
    }
    line
}

/// A host device by what it passes through: a PCI address (in libvirt's
/// `DDDD:BB:SS.F` form, whether written in hex or decimal), a USB
/// vendor:product or address, or else its source whole.
fn hostdev_fact(h: &Element) -> String {
    let kind = h.attr("type").unwrap_or_default();
    let source = h.child("source");
    let address = source.and_then(|s| s.child("address"));
    let num = |e: &Element, k: &str| -> Option<u64> {
        let v = e.attr(k)?;
        match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    };
    let identity = match (kind, address) {
        ("pci", Some(a)) => match (
            num(a, "domain").or(Some(0)),
            num(a, "bus"),
            num(a, "slot"),
            num(a, "function"),
        ) {
            (Some(d), Some(b), Some(s), Some(f)) => format!("{d:04x}:{b:02x}:{s:02x}.{f:x}"),
            _ => canonical(a),
        },
        ("usb", _) => {
            let id = |k: &str| {
                source
                    .and_then(|s| s.child(k))
                    .and_then(|e| e.attr("id"))
                    .map(str::to_ascii_lowercase)
            };
            match (id("vendor"), id("product"), address) {
                (Some(v), Some(p), _) => format!("{v}:{p}"),
                (_, _, Some(a)) => canonical(a),
                _ => String::new(),
            }
        }
        _ => source.map(canonical).unwrap_or_default(),
    };
    format!(
        "hostdev {} {}: mode={}",
        clean(kind),
        clean(&identity),
        clean(h.attr("mode").unwrap_or("subsystem"))
    )
}

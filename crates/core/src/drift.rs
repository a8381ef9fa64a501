//! Drift: whether the domain libvirt is about to run (or has defined) still
//! says what the database decides.
//!
//! The comparison covers only what kvmroll decides: memory, vCPUs, `<cpu>`,
//! `<cputune>`, the boot order, disks and the cdrom, NICs, and the devices of
//! `kvm_device_N`. libvirt adds ids, aliases, PCI addresses, default
//! controllers, `check=` and `index=` attributes and more; an element of the
//! rendered XML matches libvirt's when libvirt's has every attribute and child
//! the rendered one has (libvirt may have more). Devices are also counted, so
//! a disk added behind kvmroll's back is a drift too.

use crate::text::{clip, QUOTE_CHARS};
use crate::xml::{parse_document, Element, FragmentError};

/// Why XML from outside (libvirt's on the hook's stdin, a filter plugin's
/// replacement) is not a whole domain of the VM it is for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("not well-formed domain XML: {0}")]
    Malformed(FragmentError),
    #[error("the root element is <{0}>, not <domain>")]
    NotDomain(String),
    #[error("the domain is named {found:?}, not {vm:?}")]
    OtherName { found: String, vm: String },
    #[error("the domain's UUID is {found}, not {uuid}")]
    OtherUuid { found: String, uuid: String },
}

/// Checks that `xml` is a whole domain for VM `vm` (its name and, where
/// known, its UUID). What an error quotes of the XML is clipped.
pub fn check_domain(xml: &str, vm: &str, uuid: Option<&str>) -> Result<(), DomainError> {
    let doc = parse_document(xml).map_err(DomainError::Malformed)?;
    if doc.name != "domain" {
        return Err(DomainError::NotDomain(clip(&doc.name, QUOTE_CHARS)));
    }
    let name = doc.child("name").map_or("", |n| n.text.trim());
    if name != vm {
        return Err(DomainError::OtherName {
            found: clip(name, QUOTE_CHARS),
            vm: vm.to_string(),
        });
    }
    if let (Some(want), Some(got)) = (uuid, doc.child("uuid")) {
        if !got.text.trim().eq_ignore_ascii_case(want) {
            return Err(DomainError::OtherUuid {
                found: clip(got.text.trim(), QUOTE_CHARS),
                uuid: want.to_string(),
            });
        }
    }
    Ok(())
}

/// Does `actual` hold everything `expected` says?
fn covers(actual: &Element, expected: &Element) -> bool {
    actual.name == expected.name
        && expected
            .attrs
            .iter()
            .all(|(k, v)| actual.attr(k) == Some(v.as_str()))
        && (expected.text.trim().is_empty() || expected.text.trim() == actual.text.trim())
        && expected
            .children
            .iter()
            .all(|e| actual.children.iter().any(|a| covers(a, e)))
}

/// A short name for a device in a message.
fn describe(e: &Element) -> String {
    let target = e.child("target").and_then(|t| t.attr("dev"));
    let mac = e.child("mac").and_then(|m| m.attr("address"));
    match (target, mac) {
        (Some(t), _) => format!("{} {t}", e.name),
        (_, Some(m)) => format!("{} {m}", e.name),
        _ => e.name.clone(),
    }
}

/// The differences between the rendered domain (`expected`) and libvirt's
/// (`actual`), one phrase each; empty when they agree.
pub fn compare(expected: &str, actual: &str) -> Result<Vec<String>, FragmentError> {
    let exp = parse_document(expected)?;
    let act = parse_document(actual)?;
    let mut drift = Vec::new();
    for name in ["memory", "vcpu", "cpu", "cputune"] {
        match (exp.child(name), act.child(name)) {
            (Some(e), Some(a)) if covers(a, e) => {}
            (Some(e), Some(_)) if name == "cputune" => {
                // The vcpupins must be exactly the rendered ones.
                drift.push(format!("cputune differs from {}", one_line(e)));
            }
            (Some(e), _) => drift.push(format!("{name} is not {}", one_line(e))),
            (None, Some(a)) if name == "cputune" && !a.children.is_empty() => {
                drift.push("cputune is set but the database pins nothing".into());
            }
            _ => {}
        }
    }
    if let (Some(e), Some(a)) = (exp.child("cputune"), act.child("cputune")) {
        let pins = |x: &Element| x.children.iter().filter(|c| c.name == "vcpupin").count();
        if pins(e) != pins(a) && covers(a, e) {
            drift.push(format!("cputune has {} vcpupins, not {}", pins(a), pins(e)));
        }
    }
    let boots = |d: &Element| -> Vec<String> {
        d.child("os")
            .map(|os| {
                os.children
                    .iter()
                    .filter(|c| c.name == "boot")
                    .filter_map(|b| b.attr("dev").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    if boots(&exp) != boots(&act) {
        drift.push(format!(
            "boot order is [{}], not [{}]",
            boots(&act).join(", "),
            boots(&exp).join(", ")
        ));
    }
    let no_devices = Element {
        name: "devices".into(),
        attrs: vec![],
        children: vec![],
        text: String::new(),
    };
    let exp_dev = exp.child("devices").unwrap_or(&no_devices);
    let act_dev = act.child("devices").unwrap_or(&no_devices);
    // Every kind of device the rendered domain names, plus disks and NICs,
    // which the database always decides.
    let mut kinds: Vec<&str> = vec!["disk", "interface", "hostdev"];
    for d in &exp_dev.children {
        if !kinds.contains(&d.name.as_str())
            && !matches!(
                d.name.as_str(),
                "serial" | "console" | "graphics" | "emulator"
            )
        {
            kinds.push(&d.name);
        }
    }
    for kind in kinds {
        let wanted: Vec<&Element> = exp_dev.children.iter().filter(|c| c.name == kind).collect();
        let mut have: Vec<&Element> = act_dev.children.iter().filter(|c| c.name == kind).collect();
        for w in &wanted {
            match have.iter().position(|h| covers(h, w)) {
                Some(i) => {
                    have.remove(i);
                }
                None => drift.push(format!("{} is missing or differs", describe(w))),
            }
        }
        for extra in have {
            drift.push(format!("{} is not in the database", describe(extra)));
        }
    }
    Ok(drift)
}

/// An element on one line, for messages.
fn one_line(e: &Element) -> String {
    let mut s = format!("<{}", e.name);
    for (k, v) in &e.attrs {
        s.push_str(&format!(" {k}='{v}'"));
    }
    if !e.text.trim().is_empty() {
        s.push_str(&format!(">{}</{}>", e.text.trim(), e.name));
    } else if e.children.is_empty() {
        s.push_str("/>");
    } else {
        s.push_str(">...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "<domain type='kvm'><name>v</name><memory unit='KiB'>131072</memory>\
        <vcpu placement='static'>2</vcpu><cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/></cputune>\
        <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/><boot dev='hd'/></os>\
        <cpu mode='host-passthrough'><feature policy='disable' name='x'/></cpu>\
        <devices><disk type='file' device='disk'><source file='/a.img'/><target dev='vda' bus='virtio'/></disk>\
        <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/></interface>\
        <watchdog model='i6300esb'/><serial type='pty'/></devices></domain>";

    /// What libvirt makes of it: more attributes, more elements.
    fn libvirt(r: &str) -> String {
        r.replace("<memory unit='KiB'>", "<uuid>x</uuid><memory unit='KiB'>")
            .replace(
                "<cpu mode='host-passthrough'>",
                "<cpu mode='host-passthrough' check='none' migratable='on'>",
            )
            .replace(
                "<source file='/a.img'/>",
                "<source file='/a.img' index='1'/><alias name='virtio-disk0'/>",
            )
            .replace(
                "</devices>",
                "<controller type='usb'/><memballoon model='virtio'/></devices>",
            )
            .replace(
                "<watchdog model='i6300esb'/>",
                "<watchdog model='i6300esb' action='reset'><address type='pci'/></watchdog>",
            )
    }

    #[test]
    fn replacement_xml_must_be_the_same_vm() {
        let x = "<domain type='kvm'><name>a</name><uuid>U</uuid></domain>";
        assert!(check_domain(x, "a", Some("u")).is_ok());
        let e = check_domain(x, "b", None).unwrap_err().to_string();
        assert!(e.contains("named \"a\""), "{e}");
        let e = check_domain(x, "a", Some("V")).unwrap_err().to_string();
        assert!(e.contains("UUID"), "{e}");
        assert!(check_domain("<network/>", "a", None).is_err());
        let e = check_domain("<domain><name>a", "a", None).unwrap_err();
        assert!(
            e.to_string().starts_with("not well-formed domain XML: "),
            "{e}"
        );
    }

    #[test]
    fn what_libvirt_adds_is_no_drift() {
        assert_eq!(
            compare(RENDERED, &libvirt(RENDERED)).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn decided_parts_are_compared() {
        let cases = [
            ("131072", "262144", "memory"),
            ("cpuset='1'", "cpuset='3'", "cputune"),
            (
                "<boot dev='network'/><boot dev='hd'/>",
                "<boot dev='hd'/>",
                "boot order",
            ),
            ("name='x'", "name='y'", "cpu"),
            ("/a.img", "/b.img", "disk vda"),
            ("52:54:00:00:00:01", "52:54:00:00:00:02", "interface"),
            (
                "<watchdog model='i6300esb' action='reset'><address type='pci'/></watchdog>",
                "",
                "watchdog",
            ),
            (
                "</devices>",
                "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk></devices>",
                "disk hdc is not in the database",
            ),
        ];
        for (from, to, what) in cases {
            let actual = libvirt(RENDERED).replace(from, to);
            let d = compare(RENDERED, &actual).unwrap();
            assert!(d.iter().any(|l| l.contains(what)), "{from} -> {to}: {d:?}");
        }
    }

    #[test]
    fn pinning_removed_or_added_is_drift() {
        let unpinned = RENDERED.replace(
            "<cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/></cputune>",
            "",
        );
        assert!(!compare(RENDERED, &unpinned).unwrap().is_empty());
        assert!(!compare(&unpinned, RENDERED).unwrap().is_empty());
        let extra_pin = RENDERED.replace("</cputune>", "<vcpupin vcpu='2' cpuset='2'/></cputune>");
        assert!(!compare(RENDERED, &extra_pin).unwrap().is_empty());
    }
}

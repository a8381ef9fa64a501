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
//!
//! The same parts also have a canonical projection, [`project`]: one line
//! per fact (`IDENTITY: VALUE`), sorted where order means nothing, computed
//! alike from kvmroll's rendered XML and from libvirt's (which adds
//! aliases, addresses, default attributes and devices, and rewrites CPU
//! sets as ranges). Every definition carries its facts and their SHA-256 in
//! kvmroll's metadata ([`crate::metadata`]), so the hook can name a drift
//! line by line with no database ([`compare_facts`]).

use crate::text::{clip, QUOTE_CHARS};
use crate::xml::{parse_document, Element, FragmentError};
use std::collections::{BTreeMap, BTreeSet};

mod facts;

use facts::DEVICE;
pub use facts::{device_kinds, project};

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
    check_parsed(&doc, vm, uuid)
}

/// [`check_domain`] of a document already parsed (the hook's stdin).
pub fn check_parsed(doc: &Element, vm: &str, uuid: Option<&str>) -> Result<(), DomainError> {
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

/// A fact's identity and value.
fn split(fact: &str) -> (&str, &str) {
    fact.split_once(": ").unwrap_or((fact, ""))
}

/// How `actual` (libvirt's facts, [`project`]ed with the kinds of
/// `expected`) departs from `expected` (what kvmroll decided), one phrase
/// per fact, naming it; empty when they agree.
///
/// Disks, NICs, host devices, memory, vCPUs, pins and the boot order must
/// be exactly as decided. A CPU must have the decided mode, model,
/// topology and features; libvirt adds features and a vendor when it
/// starts a custom CPU, and starts a host-model CPU as the custom CPU it
/// chose, so more is no drift. Other decided devices (`kvm_device_N`) must
/// be there; libvirt adds devices of those kinds too (controllers).
pub fn compare_facts(expected: &[String], actual: &[String]) -> Vec<String> {
    let group = |facts: &[String]| -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in facts {
            let (id, value) = split(f);
            m.entry(id.to_string()).or_default().push(value.to_string());
        }
        for v in m.values_mut() {
            v.sort();
        }
        m
    };
    let (want, have) = (group(expected), group(actual));
    let mut drift = Vec::new();
    let cpu_decided = want.contains_key("cpu");
    for (id, values) in &want {
        let got = have.get(id);
        if id == "cpu" {
            let mode = values.first().map(String::as_str).unwrap_or_default();
            let now = got.and_then(|g| g.first()).map(String::as_str);
            // libvirt starts a host-model CPU as the custom one it chose.
            let expanded =
                mode == "mode=host-model" && now.is_some_and(|n| n.starts_with("mode=custom"));
            if now != Some(mode) && !expanded {
                drift.push(changed(id, mode, now));
            }
            continue;
        }
        let subset = id.starts_with(DEVICE);
        match got {
            Some(g) if g == values => {}
            Some(g) if subset && values.iter().all(|v| g.contains(v)) => {}
            Some(g) => drift.push(changed(id, &values.join(", "), Some(&g.join(", ")))),
            None => drift.push(changed(id, &values.join(", "), None)),
        }
    }
    for (id, values) in &have {
        if want.contains_key(id) || id.starts_with(DEVICE) {
            continue;
        }
        // What libvirt adds to a CPU it starts (features, a vendor, a
        // model for host-model), or all of a CPU kvmroll left to it; but a
        // topology is only ever someone's edit.
        if id.starts_with("cpu") && (!cpu_decided || id != "cpu topology") {
            continue;
        }
        drift.push(format!("{id}: {} was added", values.join(", ")));
    }
    drift
}

/// One fact that changed, or went.
fn changed(id: &str, was: &str, now: Option<&str>) -> String {
    match now {
        Some(now) => format!("{id}: {was} is now {now}"),
        None => format!("{id}: {was} is gone"),
    }
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
mod tests;

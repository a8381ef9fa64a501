//! What libvirt says of a domain: virt-xml-validate and the test driver.

use crate::*;
use kvmroll_virt::Connector;
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Domains already put through `virt-xml-validate` in this run, and whether
/// a check failed (from then on, while proptest shrinks the case, every
/// domain is checked whatever the budget).
pub(crate) static VALIDATED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
pub(crate) static VALIDATE_FAILED: AtomicBool = AtomicBool::new(false);
pub(crate) static DEFINED: AtomicUsize = AtomicUsize::new(0);
/// Commands accepted and refused in a run, to show both paths are taken.
pub(crate) struct Tally {
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

impl Tally {
    pub(crate) const fn new() -> Tally {
        Tally {
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }

    pub(crate) fn count(&self, accepted: bool) {
        let n = if accepted {
            &self.accepted
        } else {
            &self.refused
        };
        n.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} commands accepted, {} refused",
            self.accepted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed)
        )
    }
}

pub(crate) static LIBRARY: Tally = Tally::new();
pub(crate) static CLI: Tally = Tally::new();

pub(crate) fn have_virt_xml_validate() -> bool {
    let have = Command::new("virt-xml-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have || std::env::var_os("KVMROLL_E2E").is_none(),
        "virt-xml-validate (libvirt-clients) is required here"
    );
    have
}

/// `virt-xml-validate FILE domain`, within the run's budget.
pub(crate) fn xml_validate(dir: &Path, xml: &str) -> Result<(), String> {
    {
        let mut seen = VALIDATED.lock().unwrap();
        let seen = seen.get_or_insert_with(HashSet::new);
        let failing = VALIDATE_FAILED.load(Ordering::SeqCst);
        if !failing && (seen.len() >= validate_budget() || seen.contains(xml)) {
            return Ok(());
        }
        seen.insert(xml.to_string());
    }
    let file = dir.join("domain.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("virt-xml-validate")
        .arg(&file)
        .arg("domain")
        .output()
        .map_err(|e| format!("virt-xml-validate: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    VALIDATE_FAILED.store(true, Ordering::SeqCst);
    Err(format!(
        "virt-xml-validate refuses:\n{}{}\n{xml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Defines the domain on libvirt's test driver (in this process, no
/// daemon), then undefines it so that the next case starts clean.
pub(crate) fn test_define(name: &str, xml: &str) -> Result<(), String> {
    let hv = kvmroll_virt::Libvirt
        .connect("test:///default")
        .map_err(|e| format!("test:///default: {e}"))?;
    let result = hv.define(xml).map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            s.push_str(&format!(": {c}"));
            src = c.source();
        }
        format!("libvirt's test driver refuses: {s}\n{xml}")
    });
    if result.is_ok() {
        DEFINED.fetch_add(1, Ordering::Relaxed);
        hv.undefine(name)
            .map_err(|e| format!("undefine {name}: {e}"))?;
    }
    result
}

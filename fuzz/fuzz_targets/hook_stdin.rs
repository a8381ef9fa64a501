//! The hook's standard input: the domain XML libvirtd hands `kvmroll-hook`
//! at every event. Where a stage can refuse a start it must be a whole
//! domain of its VM (`drift::check_domain`); at `start begin` it is
//! compared with the VM's rendered domain (`drift::compare`).
//!
//! Beyond not crashing: an error quotes little of the input, and a domain
//! compared with itself has no drift.

#![no_main]

use kvmroll_core::drift::{check_domain, compare};
use libfuzzer_sys::fuzz_target;

/// A domain as kvmroll renders it, with devices of every kind it renders.
const RENDERED: &str = include_str!("../../bins/kvmroll-gen/tests/golden/domain/devices.xml");

fuzz_target!(|data: &[u8]| {
    // The hook reads its stdin as UTF-8; anything else reads as empty.
    let xml = std::str::from_utf8(data).unwrap_or("");
    if let Err(e) = check_domain(xml, "hosted-vm-0-0-0", None) {
        let shown = e.to_string();
        assert!(shown.len() <= 2048, "an error quotes {} bytes", shown.len());
    }
    let _ = compare(RENDERED, xml);
    if let Ok(drift) = compare(xml, xml) {
        assert!(drift.is_empty(), "a domain differs from itself: {drift:?}");
    }
});

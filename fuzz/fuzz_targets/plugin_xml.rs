//! A filter plugin's replacement XML: what a preboot plugin prints at
//! `start begin`, `restore begin` or `migrate begin`, taken by the hook as
//! the domain libvirt goes on with, as `kvmroll-hook`'s stage does it:
//! UTF-8 or refused, blank means no change, anything else must be a whole
//! domain of the same VM and UUID (`drift::check_domain`).

#![no_main]

use kvmroll_core::drift::check_domain;
use kvmroll_core::xml::parse_document;
use libfuzzer_sys::fuzz_target;

const VM: &str = "hosted-vm-0-0-0";
const UUID: &str = "6a1f0e2c-0000-4000-8000-000000000001";

fuzz_target!(|data: &[u8]| {
    let Ok(out) = std::str::from_utf8(data) else {
        return;
    };
    let out = out.trim();
    if out.is_empty() {
        return;
    }
    match check_domain(out, VM, Some(UUID)) {
        Ok(()) => {
            // What libvirt gets is one domain of this VM.
            let doc = parse_document(out).expect("accepted XML parses");
            assert_eq!(doc.name, "domain");
            assert_eq!(doc.child("name").map(|n| n.text.trim()), Some(VM));
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.len() <= 2048, "an error quotes {} bytes", shown.len());
        }
    }
});

//! The domain XML from outside: libvirt's on stdin, and a preboot plugin's
//! replacement, which must be a whole domain of the same VM.

use super::plugin_run::short;
use kvmroll_core::text::{clip, QUOTE_CHARS};
use kvmroll_core::xml::{parse_document, Element};
use std::path::Path;

/// Checks that `xml` is a whole domain for this VM (name and, where known, UUID).
pub(super) fn check_domain(xml: &str, vm: &str, uuid: Option<&str>) -> Result<(), String> {
    let doc = parse_document(xml).map_err(|e| format!("not well-formed domain XML: {e}"))?;
    check_doc(&doc, vm, uuid)
}

/// [`check_domain`] of a parsed document.
pub(super) fn check_doc(doc: &Element, vm: &str, uuid: Option<&str>) -> Result<(), String> {
    if doc.name != "domain" {
        return Err(format!(
            "the root element is <{}>, not <domain>",
            clip(&doc.name, QUOTE_CHARS)
        ));
    }
    let name = doc
        .child("name")
        .map(|n| n.text.trim().to_string())
        .unwrap_or_default();
    if name != vm {
        return Err(format!(
            "the domain is named {:?}, not {vm:?}",
            clip(&name, QUOTE_CHARS)
        ));
    }
    if let (Some(want), Some(got)) = (uuid, doc.child("uuid")) {
        if !got.text.trim().eq_ignore_ascii_case(want) {
            return Err(format!(
                "the domain's UUID is {}, not {want}",
                clip(got.text.trim(), QUOTE_CHARS)
            ));
        }
    }
    Ok(())
}

/// A preboot plugin's output: `None` where it printed nothing (no change),
/// else the whole domain XML it printed, for the next plugin and, at restore
/// and migrate, for libvirt.
pub(super) fn replacement<'o>(
    path: &Path,
    stdout: &'o [u8],
    vm: &str,
    uuid: Option<&str>,
) -> Result<Option<&'o str>, String> {
    // Its bytes are taken as they are: output that is not UTF-8 is
    // refused, not mended.
    std::str::from_utf8(stdout)
        .map_err(|e| {
            format!(
                "plugin {} printed output that is not UTF-8 (invalid bytes at offset {})",
                short(path),
                e.valid_up_to()
            )
        })
        .and_then(|out| match out.trim() {
            "" => Ok(None),
            out => check_domain(out, vm, uuid)
                .map(|()| Some(out))
                .map_err(|why| {
                    format!(
                        "plugin {} printed XML that is refused: {why}",
                        path.display()
                    )
                }),
        })
}

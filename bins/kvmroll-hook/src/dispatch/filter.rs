//! The domain XML from outside: libvirt's on stdin, and a preboot plugin's
//! replacement, which must be a whole domain of the same VM
//! (`kvmroll_core::drift::check_domain`, the one check of both).

use super::plugin_run::short;
use super::refusal::PluginFailure;
use kvmroll_core::drift::check_domain;
use std::path::Path;

/// A preboot plugin's output: `None` where it printed nothing (no change),
/// else the whole domain XML it printed, for the next plugin and, at restore
/// and migrate, for libvirt.
pub(super) fn replacement<'o>(
    path: &Path,
    stdout: &'o [u8],
    vm: &str,
    uuid: Option<&str>,
) -> Result<Option<&'o str>, PluginFailure> {
    // Its bytes are taken as they are: output that is not UTF-8 is
    // refused, not mended.
    let out = std::str::from_utf8(stdout).map_err(|e| PluginFailure::NotUtf8 {
        plugin: short(path),
        offset: e.valid_up_to(),
    })?;
    match out.trim() {
        "" => Ok(None),
        out => check_domain(out, vm, uuid)
            .map(|()| Some(out))
            .map_err(|source| PluginFailure::Xml {
                path: path.to_path_buf(),
                source,
            }),
    }
}

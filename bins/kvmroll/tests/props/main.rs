//! Property tests over validation and rendering (issue 10): whatever
//! `kvmroll attr set`, `vm add` and `vm set` accept renders a domain that
//! passes `virt-xml-validate` and that libvirt's test driver defines;
//! whatever they refuse leaves the database byte for byte as it was.
//!
//! Two properties:
//! - [`accepted_changes_render_domains_libvirt_takes`] runs at the library
//!   level, as the CLI does (its argument checks, then one
//!   [`kvmroll_core::Store::update`] per command on a real SQLite file, whose
//!   plan renders the VMs it touches), many cases a second. Every domain an
//!   accepted change leaves is defined on libvirt's `test:///default` driver
//!   in this process; the first [`XML_VALIDATE_BUDGET`] distinct ones of a run
//!   also go through `virt-xml-validate`, a process per file.
//! - [`refused_commands_leave_the_database_file_as_it_was`] runs the real
//!   binary, fewer cases: each spawns processes.
//!
//! Values mix what a user would set (CPU modes, pin_all and pin_auto,
//! pinning fragments with vcpupin, emulatorpin and iothreadpin sets, device
//! fragments, booleans, numbers), near misses (sets past the container,
//! numbers with signs, a wrong case) and hostile input (nesting past
//! libvirt's limit, entities, `</devices>` smuggled into a fragment, names
//! with `/`, `..`, spaces and unicode, characters XML cannot carry). The
//! fragments offered as valid are valid libvirt devices on their own:
//! kvmroll checks a fragment's structure, sets and elements, not each
//! device's own schema, so a `<watchdog/>` without a model is not offered.
//!
//! Case counts: [`LIBRARY_CASES`] and [`CLI_CASES`], or `PROPTEST_CASES`.
//! A failure is saved in `main.proptest-regressions` beside this file (kept
//! in the repository) and replayed first at every run.

use proptest::test_runner::{Config, FileFailurePersistence};

mod commands;
mod libvirt;
mod properties;
mod values;

/// Cases of the library property unless `PROPTEST_CASES` says otherwise.
pub(crate) const LIBRARY_CASES: u32 = 192;
/// Cases of the CLI property (each command a process).
pub(crate) const CLI_CASES: u32 = 12;
/// Distinct domains `virt-xml-validate` checks in one run of the library
/// property (it is a shell script and an xmllint process per file, about
/// 30 ms each), unless `KVMROLL_PROPS_VALIDATE` says otherwise; every
/// domain is defined on the test driver regardless.
pub(crate) const XML_VALIDATE_BUDGET: usize = 64;

pub(crate) fn validate_budget() -> usize {
    std::env::var("KVMROLL_PROPS_VALIDATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(XML_VALIDATE_BUDGET)
}

pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) fn config(cases: u32) -> Config {
    Config {
        cases,
        // Shrinking replays whole command sequences; a bound keeps a
        // failure's report quick.
        max_shrink_iters: 512,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

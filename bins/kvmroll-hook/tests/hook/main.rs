//! Runs the real `kvmroll-hook` binary as libvirtd would (`VM OP SUBOP EXTRA`,
//! the domain XML on stdin, an almost empty environment) against a fresh
//! configuration, database and plugin root per test. The end-to-end tests in
//! tests/e2e/hook/ do the same through a real libvirtd.
//!
//! One module per topic; `fixture` is what they share.

mod database;
mod disks;
mod drift;
mod fixture;
mod footprint;
mod input;
mod install;
mod log;
mod migrated;
mod outage;
mod plugin_safety;
mod plugins;
mod spool;

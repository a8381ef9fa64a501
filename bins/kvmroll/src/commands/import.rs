//! `kvmroll import rocks DUMP [--vm-list FILE] [--dry-run] [--skip-invalid]
//! [--merge]`: reads the files, hands them to the core's import
//! (`kvmroll_core::rocksimport`), and says what it made and what it passed
//! over. The database changes in one transaction or not at all; libvirt is
//! not touched (`kvmroll vm define` puts the VMs on their containers, once
//! the containers run kvmroll).

use super::{CommandError as Error, Exit};
use crate::cli::ImportCmd;
use kvmroll_core::model::NicKind;
use kvmroll_core::rocksdump::{self, Unreadable};
use kvmroll_core::rocksimport::{self, ImportError, Options, Report};
use kvmroll_core::text::clip;
use kvmroll_core::{error_chain, open_store, Cluster, OpenMode};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why an import failed, with the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ImportFailed {
    #[error("cannot read {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error("VM list {}", .0.display())]
    VmList(PathBuf, #[source] Unreadable),
    #[error("{}", .0.display())]
    Dump(PathBuf, #[source] Box<ImportError>),
}

/// Runs `kvmroll import rocks`; `mode` is how the CLI opens the database
/// for a write (read-only where KVMROLL_DB_READONLY says so).
pub fn run(cmd: ImportCmd, db: &Path, mode: OpenMode, out: &mut dyn Write) -> Result<Exit, Error> {
    let ImportCmd::Rocks {
        dump: dump_path,
        vm_list,
        dry_run,
        skip_invalid,
        merge,
    } = cmd;
    let read = |p: &Path| std::fs::read(p).map_err(|e| ImportFailed::Read(p.to_path_buf(), e));
    let dump = rocksdump::parse(&read(&dump_path)?);
    let rows = match &vm_list {
        Some(p) => Some(
            rocksdump::parse_vm_list(&read(p)?).map_err(|e| ImportFailed::VmList(p.clone(), e))?,
        ),
        None => None,
    };
    let opts = Options {
        skip_invalid,
        merge,
    };
    let mut uuid = || uuid::Uuid::new_v4().to_string();
    let failed = |e| ImportFailed::Dump(dump_path.clone(), Box::new(e));
    let report = if dry_run {
        // A preview makes nothing: read-only where a database is, and a
        // new one's contents where none is yet.
        let cluster = if db.exists() {
            open_store(db, OpenMode::ReadOnly)?.snapshot()?
        } else {
            Cluster::seeded()
        };
        rocksimport::preview(&cluster, &dump, rows.as_deref(), opts, &mut uuid).map_err(failed)?
    } else {
        let mut store = open_store(db, mode)?;
        rocksimport::import(store.as_mut(), &dump, rows.as_deref(), opts, &mut uuid)
            .map_err(failed)?
    };
    print_report(out, &report, dry_run, &dump_path)?;
    Ok(Exit::Done)
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// A value on one line, cut to a readable length.
fn shown(value: &str) -> String {
    clip(&value.replace('\n', "\\n"), 60)
}

/// Lists each thing a dry run would make.
fn print_items(out: &mut dyn Write, r: &Report) -> std::io::Result<()> {
    for a in &r.appliances {
        writeln!(out, "would add appliance {a}")?;
    }
    for h in &r.hosts {
        writeln!(
            out,
            "would add host {}: appliance {}, rack {}, rank {}, {}, os {}, boot {}",
            h.name,
            h.appliance,
            h.rack,
            h.rank,
            plural(h.cpus as usize, "CPU"),
            h.os,
            h.boot_action.as_str()
        )?;
    }
    for vm in &r.vms {
        writeln!(
            out,
            "would add VM {} on {}: {} MiB, {}, cdrom {}",
            vm.name,
            vm.container.as_deref().unwrap_or("no container"),
            vm.memory_mib,
            plural(vm.vcpus as usize, "vCPU"),
            vm.cdrom.as_deref().unwrap_or("none")
        )?;
        for d in &vm.disks {
            writeln!(out, "  disk {}", d.spec())?;
        }
        for n in &vm.nics {
            let source = match (n.kind, n.vlan) {
                (NicKind::Direct, Some(v)) => format!("{}.{v}", n.source),
                _ => n.source.clone(),
            };
            writeln!(out, "  nic {} {source}, mac {}", n.kind.as_str(), n.mac)?;
        }
    }
    for (scope, name, value) in &r.attrs {
        writeln!(out, "would set {name} at {scope}: {}", shown(value))?;
    }
    Ok(())
}

fn print_report(out: &mut dyn Write, r: &Report, dry_run: bool, dump: &Path) -> Result<(), Error> {
    if dry_run {
        print_items(out, r)?;
    }
    print_summary(out, r, dry_run, dump)?;
    print_passed_over(out, r)?;
    if !dry_run && !r.vms.is_empty() {
        writeln!(
            out,
            "libvirt is untouched: `kvmroll vm define --all` defines the imported VMs on their containers"
        )?;
    }
    if dry_run {
        writeln!(out, "nothing was changed (--dry-run)")?;
    }
    Ok(())
}

/// One line of what was made.
fn print_summary(
    out: &mut dyn Write,
    r: &Report,
    dry_run: bool,
    dump: &Path,
) -> std::io::Result<()> {
    let mut by_scope: BTreeMap<&str, usize> = BTreeMap::new();
    for (scope, _, _) in &r.attrs {
        *by_scope.entry(scope.kind()).or_default() += 1;
    }
    let scopes: Vec<String> = ["global", "os", "appliance", "rack", "host"]
        .iter()
        .filter_map(|k| by_scope.get(k).map(|n| format!("{n} {k}")))
        .collect();
    let frontend = match &r.frontend {
        Some(fe) => format!(" (the frontend is {fe})"),
        None => " (the dump names no frontend)".into(),
    };
    writeln!(
        out,
        "{} {}: {}, {}{frontend}, {}, {}{}",
        if dry_run { "would import" } else { "imported" },
        dump.display(),
        plural(r.appliances.len(), "appliance"),
        plural(r.hosts.len(), "host"),
        plural(r.vms.len(), "VM"),
        plural(r.attrs.len(), "attribute"),
        if scopes.is_empty() {
            String::new()
        } else {
            format!(" ({})", scopes.join(", "))
        }
    )?;
    Ok(())
}

/// What the import passed over, adjusted or left out.
fn print_passed_over(out: &mut dyn Write, r: &Report) -> std::io::Result<()> {
    if r.unchanged > 0 {
        writeln!(
            out,
            "already in the database as the dump has them: {} (appliances, hosts, VMs and attributes)",
            r.unchanged
        )?;
    }
    if !r.other.is_empty() {
        let total: usize = r.other.values().sum();
        let verbs: Vec<String> = r.other.iter().map(|(v, n)| format!("{v} {n}")).collect();
        writeln!(
            out,
            "passed over {} of verbs that are not kvmroll's: {}",
            plural(total, "line"),
            verbs.join(", ")
        )?;
    }
    if r.old_attrs > 0 {
        writeln!(
            out,
            "passed over {} NAME_old beside its NAME: Rocks' record of a previous value, which its own restore clears",
            plural(r.old_attrs, "attribute")
        )?;
    }
    if !r.outside_roots.is_empty() {
        let disks: Vec<String> = r
            .outside_roots
            .iter()
            .map(|(vm, path)| format!("{vm} {path}"))
            .collect();
        writeln!(
            out,
            "disks outside kvm_disk_roots, taken as vm add --force takes them (used as they are, never made): {}",
            disks.join(", ")
        )?;
    }
    for note in &r.notes {
        writeln!(out, "note: {note}")?;
    }
    for s in &r.skipped {
        let with_it = match s.with_it {
            0 => String::new(),
            n => format!(" (with {} that needed it)", plural(n, "change")),
        };
        writeln!(
            out,
            "skipped {} ({}){with_it}: {}",
            s.origin,
            s.subject,
            error_chain(&s.fault)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_on_one_line() {
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 61);
    }
}

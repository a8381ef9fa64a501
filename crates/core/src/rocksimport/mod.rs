//! Turns a read `rocks dump` (and `rocks list host vm showdisks=1`) into
//! kvmroll changes, written in one transaction: everything or nothing.
//!
//! What Rocks made of its database, kvmroll makes of the dump:
//!
//! - **Appliances** from `add appliance` lines; a host's membership names
//!   its appliance through them (`membership=VM\ Container` of appliance
//!   `vm-container`), else by the same rule (lower case, `-` for spaces).
//! - **The frontend**, which `rocks dump host` leaves out ("the installer
//!   will add the host for us") and calls `localhost` everywhere else, under
//!   its own name: the global `Kickstart_PrivateHostname`.
//! - **Hosts** with their rack, rank, CPUs, OS and actions; **attributes**
//!   at their scope, each through the validation `kvmroll attr set` gives
//!   (Rocks-escaped XML unescaped once). `NAME_old` beside `NAME` is Rocks'
//!   record of a previous value (`setCategoryAttr` in core's
//!   `rocks/db/helper.py`), which its own restore clears (`run reconfigure
//!   clear=1`, the dump's last line): it is counted, not imported.
//! - **VMs**: a host with a `set host vm` line. vCPUs are its host's CPUs,
//!   memory `mem`, disks `disk`/`disksize`, the cdrom from the VM list, and
//!   NICs placed as `rocks report host vm config` placed them (see the
//!   `vm` module), with the dump's MACs. A VM gets a new UUID, which it
//!   keeps (Rocks made one at every start).
//!
//! Each value goes through [`Cluster::apply`] and every VM is rendered, as
//! `Cluster::plan` does for a typed change: a refused value stops the import
//! naming its line and subject, or, with `skip_invalid`, is left out with
//! what depends on it (a host's attributes with the host) and listed. The
//! translation is pure; [`import`] writes it through [`Store::update`].

mod gather;
mod steps;
mod vm;

use crate::cluster::{Change, Cluster, ClusterError};
use crate::disks::{Roots, ROOTS_ATTR};
use crate::model::{DiskKind, Host, Scope, ValidationError, Vm};
use crate::render::RenderError;
use crate::rocksdump::{Dump, Unreadable, VmListRow};
use crate::store::{Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use gather::Gathered;
use steps::{build, render_check, Blame, Built, Unit};

/// How the import treats what it cannot take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Leave out what kvmroll refuses, and list it, instead of stopping.
    pub skip_invalid: bool,
    /// Import into a database that already has hosts.
    pub merge: bool,
}

/// Where a change comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// A line of the dump.
    Line(usize),
    /// A line of the VM list.
    VmList(usize),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Line(n) => write!(f, "line {n}"),
            Origin::VmList(n) => write!(f, "VM list line {n}"),
        }
    }
}

/// Why kvmroll refuses a part of the dump (boxed: a refusal travels in
/// every `Result` of the translation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error(transparent)]
    Cluster(Box<ClusterError>),
    #[error(transparent)]
    Render(Box<RenderError>),
    #[error(transparent)]
    Invalid(Box<ValidationError>),
    /// The dump holds something kvmroll has no place for.
    #[error("{0}")]
    Dump(String),
}

impl From<ClusterError> for Fault {
    fn from(e: ClusterError) -> Fault {
        Fault::Cluster(Box::new(e))
    }
}

impl From<RenderError> for Fault {
    fn from(e: RenderError) -> Fault {
        Fault::Render(Box::new(e))
    }
}

impl From<ValidationError> for Fault {
    fn from(e: ValidationError) -> Fault {
        Fault::Invalid(Box::new(e))
    }
}

/// A part of the dump left out under `skip_invalid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub origin: Origin,
    pub subject: String,
    pub fault: Fault,
    /// How many more changes went with it (a host's attributes, ...).
    pub with_it: usize,
}

/// Why an import was refused; the database is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{} cannot be read: {}", count(.0.len(), "line"), listed(.0))]
    Unreadable(Vec<Unreadable>),
    #[error("{origin} ({subject})")]
    Refused {
        origin: Origin,
        subject: String,
        #[source]
        fault: Fault,
    },
    #[error("the database already holds {}: give --merge to import into it", count(*.0, "host"))]
    NotEmpty(usize),
    #[error("{} with the database (the same name, other values): {}", count(.0.len(), "conflict"), listed(.0))]
    Conflicts(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// At most ten items of a list, then how many more.
fn listed<T: fmt::Display>(items: &[T]) -> String {
    let mut s: Vec<String> = items.iter().take(10).map(ToString::to_string).collect();
    if items.len() > 10 {
        s.push(format!("and {} more", items.len() - 10));
    }
    s.join("; ")
}

/// What an import makes, and what it passed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The frontend's name, from `Kickstart_PrivateHostname`.
    pub frontend: Option<String>,
    pub appliances: Vec<String>,
    /// Hosts that are not VMs.
    pub hosts: Vec<Host>,
    pub vms: Vec<Vm>,
    /// Attributes set, as stored.
    pub attrs: Vec<(Scope, String, String)>,
    /// Parts the database already held as the dump has them (`merge`).
    pub unchanged: usize,
    /// `NAME_old` attributes passed over.
    pub old_attrs: usize,
    /// Lines of each verb that is not kvmroll's.
    pub other: BTreeMap<String, usize>,
    pub skipped: Vec<Skipped>,
    /// VM disks outside `kvm_disk_roots`: used as they are, never made (as
    /// `kvmroll vm add --force` takes them).
    pub outside_roots: Vec<(String, String)>,
    /// What the import adjusted or could not carry, one line each.
    pub notes: Vec<String>,
}

/// The changes that make the dump's cluster, and their report.
#[derive(Debug, Clone)]
pub struct Translation {
    pub changes: Vec<Change>,
    pub report: Report,
}

/// Translates a read dump against the cluster as it stands, and its VM list.
/// `uuid` makes each new VM's UUID (a value from the caller, so that tests
/// can render fixed ones).
pub fn translate(
    base: &Cluster,
    dump: &Dump,
    vm_list: Option<&[VmListRow]>,
    opts: Options,
    uuid: &mut dyn FnMut() -> String,
) -> Result<Translation, ImportError> {
    if !dump.unreadable.is_empty() && !opts.skip_invalid {
        return Err(ImportError::Unreadable(dump.unreadable.clone()));
    }
    if !base.hosts.is_empty() && !opts.merge {
        return Err(ImportError::NotEmpty(base.hosts.len()));
    }
    let g = Gathered::read(dump, vm_list)?;
    let mut drop: BTreeSet<Unit> = BTreeSet::new();
    let mut skipped = unreadable_skipped(dump);
    loop {
        let built = build(&g, base, &drop, uuid);
        if !built.conflicts.is_empty() {
            return Err(ImportError::Conflicts(built.conflicts));
        }
        let pass = run_pass(base, &built, &drop, &g);
        match pass.failure {
            Some((blame, fault)) if opts.skip_invalid && !drop.contains(&blame.unit) => {
                drop.insert(blame.unit.clone());
                let s = Skipped {
                    origin: blame.origin,
                    subject: blame.subject,
                    fault,
                    with_it: 0,
                };
                skipped.push((blame.unit, s));
            }
            Some((blame, fault)) => {
                return Err(ImportError::Refused {
                    origin: blame.origin,
                    subject: blame.subject,
                    fault,
                })
            }
            None => {
                let mut report = report_of(&pass.work, &built, &pass.applied, &g);
                if base.hosts.is_empty() {
                    // A new database's seeded appliances and attribute are
                    // no news.
                    report.unchanged = 0;
                }
                report.other = dump.other.clone();
                report.skipped = skipped
                    .into_iter()
                    .map(|(unit, mut s)| {
                        // Counted with the rest: the failed change itself.
                        let n = pass.left_out.get(&unit).copied().unwrap_or(1);
                        s.with_it = n.saturating_sub(1);
                        s
                    })
                    .collect();
                report.skipped.sort_by_key(|s| s.origin);
                let changes = pass
                    .applied
                    .iter()
                    .filter_map(|&k| built.steps[k].change.clone().ok())
                    .collect();
                return Ok(Translation { changes, report });
            }
        }
    }
}

/// The lines of `dump` that cannot be read, as skipped (reached only
/// under `skip_invalid`).
fn unreadable_skipped(dump: &Dump) -> Vec<(Unit, Skipped)> {
    dump.unreadable
        .iter()
        .map(|u| {
            let origin = Origin::Line(u.line);
            let s = Skipped {
                origin,
                subject: "a line that cannot be read".into(),
                fault: Fault::Dump(u.why.clone()),
                with_it: 0,
            };
            (Unit::Line(origin), s)
        })
        .collect()
}

/// What one pass over the steps did.
struct Pass {
    /// The cluster with the changes applied.
    work: Cluster,
    /// The steps applied, by index.
    applied: Vec<usize>,
    /// How many steps each dropped unit left out.
    left_out: BTreeMap<Unit, usize>,
    /// The first refusal, and who answers for it.
    failure: Option<(Blame, Fault)>,
}

/// Applies the steps `drop` leaves in to a copy of `base`, one by one as
/// [`Cluster::plan`] does, then renders every VM; stops at the first
/// refusal.
fn run_pass(base: &Cluster, built: &Built, drop: &BTreeSet<Unit>, g: &Gathered<'_>) -> Pass {
    let mut pass = Pass {
        work: base.clone(),
        applied: Vec::new(),
        left_out: BTreeMap::new(),
        failure: None,
    };
    for (k, step) in built.steps.iter().enumerate() {
        let needed = step.needs.clone().map(Unit::Host);
        if let Some(unit) = [Some(step.unit.clone()), needed]
            .into_iter()
            .flatten()
            .find(|u| drop.contains(u))
        {
            *pass.left_out.entry(unit).or_default() += 1;
            continue;
        }
        let result = match &step.change {
            Ok(change) => pass.work.apply(change).map_err(Fault::from),
            Err(fault) => Err(fault.clone()),
        };
        if let Err(fault) = result {
            pass.failure = Some((step.blame(), fault));
            return pass;
        }
        pass.applied.push(k);
    }
    pass.failure = render_check(base, &pass.work, &built.steps, &pass.applied, g);
    pass
}

fn report_of(work: &Cluster, built: &Built, applied: &[usize], g: &Gathered<'_>) -> Report {
    let mut r = Report {
        frontend: g.frontend.as_ref().map(|(_, n)| n.clone()),
        unchanged: built.unchanged,
        old_attrs: built.old_attrs,
        notes: built.notes.clone(),
        ..Report::default()
    };
    for &k in applied {
        match &built.steps[k].change {
            Ok(Change::AddAppliance(a)) => r.appliances.push(a.clone()),
            Ok(Change::AddHost(h)) => r.hosts.push(h.clone()),
            Ok(Change::AddVm(v)) => {
                let vm = work.vms.get(&v.name).unwrap_or(v).clone();
                if let Some(own) = work.hosts.get(&vm.name) {
                    let roots = Roots::of(work.attr(own, ROOTS_ATTR));
                    for d in &vm.disks {
                        let inside = roots.as_ref().is_ok_and(|r| r.contains(&d.path));
                        if d.kind != DiskKind::Block && !inside {
                            r.outside_roots.push((vm.name.clone(), d.path.clone()));
                        }
                    }
                }
                r.vms.push(vm);
            }
            Ok(Change::SetAttr { scope, name, value }) => {
                let stored = work
                    .attrs
                    .get(scope)
                    .and_then(|m| m.get(name))
                    .unwrap_or(value);
                r.attrs.push((scope.clone(), name.clone(), stored.clone()));
            }
            _ => {}
        }
    }
    r
}

/// Imports a read dump into the store in one transaction; nothing is
/// written when anything is refused.
pub fn import(
    store: &mut dyn Store,
    dump: &Dump,
    vm_list: Option<&[VmListRow]>,
    opts: Options,
    uuid: &mut dyn FnMut() -> String,
) -> Result<Report, ImportError> {
    let mut outcome: Option<Result<Report, ImportError>> = None;
    let written = store.update(
        &mut |cluster| match translate(cluster, dump, vm_list, opts, uuid) {
            Ok(t) => {
                outcome = Some(Ok(t.report));
                Ok(t.changes)
            }
            Err(e) => {
                outcome = Some(Err(e));
                // Stands for the error kept above, which is what is reported.
                Err(ClusterError::UnknownVm(String::new()))
            }
        },
    );
    match (written, outcome) {
        (Ok(_), Some(Ok(report))) => Ok(report),
        (Err(StoreError::Refused(_)), Some(Err(e))) => Err(e),
        (Err(e), _) => Err(e.into()),
        (Ok(_), _) => Ok(Report::default()),
    }
}

/// What [`import`] would do, checked as it would be, without writing.
pub fn preview(
    cluster: &Cluster,
    dump: &Dump,
    vm_list: Option<&[VmListRow]>,
    opts: Options,
    uuid: &mut dyn FnMut() -> String,
) -> Result<Report, ImportError> {
    let t = translate(cluster, dump, vm_list, opts, uuid)?;
    cluster
        .plan(&t.changes)
        .map_err(|e| ImportError::Store(e.into()))?;
    Ok(t.report)
}

#[cfg(test)]
mod tests;

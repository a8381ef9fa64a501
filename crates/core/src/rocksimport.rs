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
//!   NICs placed as `rocks report host vm config` placed them (see
//!   [`rocks_nics`]), with the dump's MACs. A VM gets a new UUID, which it
//!   keeps (Rocks made one at every start).
//!
//! Each value goes through [`Cluster::apply`] and every VM is rendered, as
//! `Cluster::plan` does for a typed change: a refused value stops the import
//! naming its line and subject, or, with `skip_invalid`, is left out with
//! what depends on it (a host's attributes with the host) and listed. The
//! translation is pure; [`import`] writes it through [`Store::update`].

use crate::cluster::{Change, Cluster, ClusterError};
use crate::disks::{Roots, ROOTS_ATTR};
use crate::model::{
    check_abs_path, BootAction, Disk, DiskKind, Host, Nic, NicSpec, Scope, ValidationError, Vm,
};
use crate::render::{RenderError, Renderer};
use crate::rocksdump::{
    ActionKind, Command, Dump, IfaceField, RocksDisk, Unreadable, VmLine, VmListRow,
};
use crate::store::{Store, StoreError};
use crate::text::clip;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

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

/// An interface as the dump's `add host interface` and `set host interface`
/// lines describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Iface {
    line: usize,
    name: String,
    mac: Option<String>,
    subnet: Option<String>,
    vlan: Option<u32>,
    module: Option<String>,
    options: Option<String>,
}

#[derive(Debug, Clone)]
struct HostLine {
    line: usize,
    name: String,
    cpus: u32,
    rack: u32,
    rank: u32,
    membership: String,
    os: String,
}

#[derive(Debug, Clone, Default)]
struct Actions {
    run: Option<String>,
    install: Option<String>,
    boot: Option<(usize, String)>,
}

/// The dump gathered by subject, host names resolved (`localhost` is the
/// frontend where the dump names it).
#[derive(Debug, Default)]
struct Gathered<'a> {
    frontend: Option<(usize, String)>,
    memberships: BTreeMap<String, String>,
    appliances: Vec<(usize, String)>,
    hosts: Vec<HostLine>,
    actions: BTreeMap<String, Actions>,
    ifaces: BTreeMap<String, Vec<Iface>>,
    vms: BTreeMap<String, (usize, VmLine)>,
    attrs: Vec<(usize, Scope, &'a str, &'a str)>,
    cdroms: BTreeMap<String, (usize, String)>,
    notes: Vec<String>,
}

/// The global attribute that names the frontend (Rocks' `run reconfigure`
/// reads it for the same purpose).
const FRONTEND_ATTR: &str = "Kickstart_PrivateHostname";

/// Rocks' appliance for a membership with no `add appliance` line.
fn appliance_by_rule(membership: &str) -> String {
    membership
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
        .to_lowercase()
}

impl<'a> Gathered<'a> {
    fn read(dump: &'a Dump, vm_list: Option<&[VmListRow]>) -> Result<Gathered<'a>, ImportError> {
        let mut g = Gathered::default();
        for c in &dump.commands {
            if let Command::Attr {
                scope: Scope::Global,
                name,
                value,
            } = &c.command
            {
                if name == FRONTEND_ATTR {
                    g.frontend = Some((c.line, value.clone()));
                }
            }
        }
        for c in &dump.commands {
            let line = c.line;
            match &c.command {
                Command::Attr { scope, name, value } => {
                    let scope = match scope {
                        Scope::Host(h) => Scope::Host(g.resolved(h)),
                        s => s.clone(),
                    };
                    g.attrs.push((line, scope, name, value));
                }
                Command::Appliance { name, membership } => {
                    if let Some(m) = membership {
                        g.memberships.insert(m.clone(), name.clone());
                    }
                    g.appliances.push((line, name.clone()));
                }
                Command::Host {
                    name,
                    cpus,
                    rack,
                    rank,
                    membership,
                    os,
                } => g.hosts.push(HostLine {
                    line,
                    name: name.clone(),
                    cpus: *cpus,
                    rack: *rack,
                    rank: *rank,
                    membership: membership.clone(),
                    os: os.clone(),
                }),
                Command::Action { host, kind, action } => {
                    let a = g.actions.entry(g.resolved(host)).or_default();
                    match kind {
                        ActionKind::Run => a.run = Some(action.clone()),
                        ActionKind::Install => a.install = Some(action.clone()),
                        ActionKind::Boot => a.boot = Some((line, action.clone())),
                    }
                }
                Command::Interface { host, iface } => {
                    g.iface(host, iface, line);
                }
                Command::InterfaceField {
                    host,
                    iface,
                    field,
                    value,
                } => {
                    let i = g.iface(host, iface, line);
                    let v = Some(value.clone());
                    match field {
                        IfaceField::Mac => i.mac = v,
                        IfaceField::Subnet => i.subnet = v,
                        IfaceField::Vlan => i.vlan = value.parse().ok(),
                        IfaceField::Module => i.module = v,
                        IfaceField::Options => i.options = v,
                    }
                }
                Command::Vm(vm) => {
                    let physnode = vm.physnode.as_deref().map(|p| g.resolved(p));
                    let entry = g
                        .vms
                        .entry(vm.host.clone())
                        .or_insert_with(|| (line, VmLine::default()));
                    // A later line sets what it names, as `rocks set host vm`.
                    let e = &mut entry.1;
                    e.host = vm.host.clone();
                    if physnode.is_some() {
                        e.physnode = physnode;
                    }
                    if vm.disks.is_some() {
                        e.disks = vm.disks.clone();
                    }
                    e.mem_mb = vm.mem_mb.or(e.mem_mb);
                    e.virt_type = vm.virt_type.clone().or(e.virt_type.take());
                }
            }
        }
        if let Some(rows) = vm_list {
            g.read_vm_list(rows)?;
        }
        Ok(g)
    }

    /// The frontend's name for `localhost`, where the dump gives one.
    fn resolved(&self, host: &str) -> String {
        match (&self.frontend, host) {
            (Some((_, fe)), "localhost") => fe.clone(),
            _ => host.to_string(),
        }
    }

    fn iface(&mut self, host: &str, name: &str, line: usize) -> &mut Iface {
        let list = self.ifaces.entry(self.resolved(host)).or_default();
        let k = match list.iter().position(|i| i.name == name) {
            Some(k) => k,
            None => {
                list.push(Iface {
                    line,
                    name: name.to_string(),
                    ..Iface::default()
                });
                list.len() - 1
            }
        };
        &mut list[k]
    }

    fn read_vm_list(&mut self, rows: &[VmListRow]) -> Result<(), ImportError> {
        for row in rows {
            let name = match &row.vm {
                Some(n) => n.clone(),
                // Rocks drops the VM-HOST column when it lists one VM.
                None if self.vms.len() == 1 => self.vms.keys().next().cloned().unwrap_or_default(),
                None => {
                    return Err(ImportError::Refused {
                        origin: Origin::VmList(row.line),
                        subject: "VM list".into(),
                        fault: Fault::Dump(format!(
                            "the list has no VM-HOST column (Rocks leaves it out when it lists one VM) but the dump has {}",
                            count(self.vms.len(), "VM")
                        )),
                    })
                }
            };
            if !self.vms.contains_key(&name) {
                self.notes.push(format!(
                    "{}: {name} is not a VM of the dump; its cdrom is not imported",
                    Origin::VmList(row.line)
                ));
                continue;
            }
            if let Some(cd) = &row.cdrom {
                self.cdroms.insert(name, (row.line, cd.clone()));
            }
        }
        Ok(())
    }

    /// The appliance of a membership.
    fn appliance_of(&self, membership: &str) -> String {
        self.memberships
            .get(membership)
            .cloned()
            .unwrap_or_else(|| appliance_by_rule(membership))
    }

    /// A host's row from its `"add host"` line and actions.
    fn host_row(&self, h: &HostLine) -> Result<Host, (Origin, Fault)> {
        let mut host = Host {
            rack: h.rack,
            rank: h.rank,
            cpus: h.cpus,
            os: h.os.clone(),
            ..Host::new(&h.name, &self.appliance_of(&h.membership))
        };
        self.with_actions(&mut host)?;
        Ok(host)
    }

    /// `fields` and the actions the dump sets for `host`: what a merge
    /// compares of its row.
    fn stated(&self, host: &str, fields: &[&'static str]) -> Vec<&'static str> {
        let mut out = fields.to_vec();
        if let Some(a) = self.actions.get(host) {
            for (set, field) in [
                (a.boot.is_some(), "boot action"),
                (a.install.is_some(), "install action"),
                (a.run.is_some(), "run action"),
            ] {
                if set {
                    out.push(field);
                }
            }
        }
        out
    }

    fn with_actions(&self, host: &mut Host) -> Result<(), (Origin, Fault)> {
        if let Some(a) = self.actions.get(&host.name) {
            if let Some((line, boot)) = &a.boot {
                host.boot_action =
                    BootAction::parse(boot).map_err(|e| (Origin::Line(*line), Fault::from(e)))?;
            }
            host.run_action = a.run.clone().unwrap_or(host.run_action.clone());
            host.install_action = a.install.clone().unwrap_or(host.install_action.clone());
        }
        Ok(())
    }
}

/// What skipping a change leaves out with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Unit {
    /// A host or VM, and every change that needs it.
    Host(String),
    /// One attribute or appliance line.
    Line(Origin),
    /// A VM's cdrom (the VM is imported without it).
    Cdrom(String),
}

/// One change with what it came from.
#[derive(Debug, Clone)]
struct Step {
    origin: Origin,
    subject: String,
    unit: Unit,
    /// A host this change needs: left out when that host is.
    needs: Option<String>,
    /// The change, or why the dump's value cannot be one.
    change: Result<Change, Fault>,
}

/// The steps of one pass, and what a merge found.
#[derive(Debug, Default)]
struct Built {
    steps: Vec<Step>,
    conflicts: Vec<String>,
    unchanged: usize,
    old_attrs: usize,
    notes: Vec<String>,
}

/// Who answers for a failure: the step's origin, subject and unit.
#[derive(Debug, Clone)]
struct Blame {
    origin: Origin,
    subject: String,
    unit: Unit,
}

impl Step {
    fn blame(&self) -> Blame {
        Blame {
            origin: self.origin,
            subject: self.subject.clone(),
            unit: self.unit.clone(),
        }
    }
}

fn attr_subject(scope: &Scope, name: &str) -> String {
    match scope {
        Scope::Global => format!("attribute {name} (global)"),
        Scope::Host(h) => format!("attribute {name} of host {h}"),
        s => format!("attribute {name} of {} {}", s.kind(), s.target()),
    }
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
    let mut skipped: Vec<(Unit, Skipped)> = dump
        .unreadable
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
        .collect();
    loop {
        let built = build(&g, base, &drop, uuid);
        if !built.conflicts.is_empty() {
            return Err(ImportError::Conflicts(built.conflicts));
        }
        let mut work = base.clone();
        let mut applied = Vec::new();
        let mut left_out: BTreeMap<Unit, usize> = BTreeMap::new();
        let mut failure = None;
        for (k, step) in built.steps.iter().enumerate() {
            let needed = step.needs.clone().map(Unit::Host);
            if let Some(unit) = [Some(step.unit.clone()), needed]
                .into_iter()
                .flatten()
                .find(|u| drop.contains(u))
            {
                *left_out.entry(unit).or_default() += 1;
                continue;
            }
            let result = match &step.change {
                Ok(change) => work.apply(change).map_err(Fault::from),
                Err(fault) => Err(fault.clone()),
            };
            if let Err(fault) = result {
                failure = Some((step.blame(), fault));
                break;
            }
            applied.push(k);
        }
        if failure.is_none() {
            failure = render_check(base, &work, &built.steps, &applied, &g);
        }
        match failure {
            Some((blame, fault)) if opts.skip_invalid && !drop.contains(&blame.unit) => {
                drop.insert(blame.unit.clone());
                skipped.push((
                    blame.unit,
                    Skipped {
                        origin: blame.origin,
                        subject: blame.subject,
                        fault,
                        with_it: 0,
                    },
                ));
            }
            Some((blame, fault)) => {
                return Err(ImportError::Refused {
                    origin: blame.origin,
                    subject: blame.subject,
                    fault,
                })
            }
            None => {
                let mut report = report_of(&work, &built, &applied, &g);
                if base.hosts.is_empty() {
                    // A new database's seeded appliances and attribute are
                    // no news.
                    report.unchanged = 0;
                }
                report.other = dump.other.clone();
                report.skipped = skipped
                    .into_iter()
                    .map(|(unit, mut s)| {
                        // The failed change itself was left out too.
                        s.with_it = left_out.get(&unit).copied().unwrap_or(1).saturating_sub(1);
                        s
                    })
                    .collect();
                report.skipped.sort_by_key(|s| s.origin);
                let changes = applied
                    .iter()
                    .filter_map(|&k| built.steps[k].change.clone().ok())
                    .collect();
                return Ok(Translation { changes, report });
            }
        }
    }
}

/// Builds the steps of one pass, leaving out what `drop` names.
fn build(
    g: &Gathered<'_>,
    base: &Cluster,
    drop: &BTreeSet<Unit>,
    uuid: &mut dyn FnMut() -> String,
) -> Built {
    let mut b = Built::default();
    let mut made: BTreeSet<String> = BTreeSet::new();
    let mut add_appliance = |b: &mut Built, name: &str, origin: Origin, unit: Unit| {
        if base.appliances.contains(name) {
            b.unchanged += 1;
        } else if made.insert(name.to_string()) {
            b.steps.push(Step {
                origin,
                subject: format!("appliance {name}"),
                unit,
                needs: None,
                change: Ok(Change::AddAppliance(name.to_string())),
            });
        }
    };
    for (line, name) in &g.appliances {
        let origin = Origin::Line(*line);
        add_appliance(&mut b, name, origin, Unit::Line(origin));
    }
    for h in &g.hosts {
        if !g.memberships.contains_key(&h.membership) {
            let name = appliance_by_rule(&h.membership);
            add_appliance(
                &mut b,
                &name,
                Origin::Line(h.line),
                Unit::Host(h.name.clone()),
            );
        }
    }
    // The frontend, unless an "add host" line gives it after all.
    if let Some((line, fe)) = &g.frontend {
        if !g.hosts.iter().any(|h| &h.name == fe) {
            let mut host = Host::new(fe, &g.appliance_of("Frontend"));
            let change = g.with_actions(&mut host).map(|()| host);
            let stated = g.stated(fe, &["appliance"]);
            host_step(
                &mut b,
                base,
                Origin::Line(*line),
                "frontend",
                change,
                &stated,
            );
            b.notes.push(format!(
                "the frontend {fe} is given 1 CPU, as the dump holds no row of it: `kvmroll host set {fe} --cpus N` corrects it"
            ));
        }
    }
    for h in g.hosts.iter().filter(|h| !g.vms.contains_key(&h.name)) {
        let stated = g.stated(&h.name, &HOST_LINE_FIELDS);
        host_step(
            &mut b,
            base,
            Origin::Line(h.line),
            "host",
            g.host_row(h),
            &stated,
        );
    }
    let is_vm = |scope: &Scope| matches!(scope, Scope::Host(h) if g.vms.contains_key(h));
    for (line, scope, name, value) in g.attrs.iter().filter(|a| !is_vm(&a.1)) {
        attr_step(&mut b, g, base, *line, scope, name, value);
    }
    for h in g.hosts.iter().filter(|h| g.vms.contains_key(&h.name)) {
        vm_steps(&mut b, g, base, h, drop, uuid);
    }
    for (name, (line, _)) in &g.vms {
        if g.hosts.iter().any(|h| &h.name == name) {
            continue;
        }
        b.steps.push(Step {
            origin: Origin::Line(*line),
            subject: format!("VM {name}"),
            unit: Unit::Host(name.clone()),
            needs: None,
            change: Err(Fault::Dump(format!(
                "set host vm names {name}, which has no \"add host\" line in the dump"
            ))),
        });
    }
    for (line, scope, name, value) in g.attrs.iter().filter(|a| is_vm(&a.1)) {
        attr_step(&mut b, g, base, *line, scope, name, value);
    }
    b.notes.extend(g.notes.iter().cloned());
    b
}

/// The fields of a host row an `"add host"` line gives.
const HOST_LINE_FIELDS: [&str; 5] = ["appliance", "rack", "rank", "cpus", "os"];

/// The step that adds a host (`kind` host or frontend), or nothing where a
/// merge finds it as the dump has it; `stated` names the fields compared.
fn host_step(
    b: &mut Built,
    base: &Cluster,
    origin: Origin,
    kind: &str,
    host: Result<Host, (Origin, Fault)>,
    stated: &[&'static str],
) {
    let (origin, host) = match host {
        Ok(h) => (origin, Ok(h)),
        Err((at, fault)) => (at, Err(fault)),
    };
    let Ok(name) = host.as_ref().map(|h| h.name.clone()) else {
        b.steps.push(Step {
            origin,
            subject: kind.to_string(),
            unit: Unit::Line(origin),
            needs: None,
            change: host.map(Change::AddHost),
        });
        return;
    };
    let subject = format!("{kind} {name}");
    if let (Ok(new), Some(old)) = (&host, base.hosts.get(&name)) {
        let differs = host_differences(old, new, stated);
        if base.vms.contains_key(&name) {
            b.conflicts
                .push(format!("host {name} (a VM in the database)"));
        } else if differs.is_empty() {
            b.unchanged += 1;
        } else {
            b.conflicts
                .push(format!("host {name} ({})", differs.join(", ")));
        }
        return;
    }
    b.steps.push(Step {
        origin,
        subject,
        unit: Unit::Host(name),
        needs: None,
        change: host.map(Change::AddHost),
    });
}

/// The fields among `stated` in which two host rows differ.
fn host_differences(old: &Host, new: &Host, stated: &[&'static str]) -> Vec<&'static str> {
    let fields: [(&'static str, bool); 8] = [
        ("appliance", old.appliance != new.appliance),
        ("rack", old.rack != new.rack),
        ("rank", old.rank != new.rank),
        ("cpus", old.cpus != new.cpus),
        ("os", old.os != new.os),
        ("boot action", old.boot_action != new.boot_action),
        ("install action", old.install_action != new.install_action),
        ("run action", old.run_action != new.run_action),
    ];
    fields
        .into_iter()
        .filter(|(f, differs)| *differs && stated.contains(f))
        .map(|(f, _)| f)
        .collect()
}

/// The step that sets an attribute; `NAME_old` beside `NAME` is counted.
fn attr_step(
    b: &mut Built,
    g: &Gathered<'_>,
    base: &Cluster,
    line: usize,
    scope: &Scope,
    name: &str,
    value: &str,
) {
    if let Some(current) = name.strip_suffix("_old") {
        if g.attrs
            .iter()
            .any(|(_, s, n, _)| s == scope && *n == current)
        {
            b.old_attrs += 1;
            return;
        }
    }
    let origin = Origin::Line(line);
    let subject = attr_subject(scope, name);
    let needs = match scope {
        Scope::Host(h) => Some(h.clone()),
        _ => None,
    };
    if let Scope::Host(h) = scope {
        if h == "localhost" {
            b.steps.push(Step {
                origin,
                subject,
                unit: Unit::Line(origin),
                needs,
                change: Err(Fault::Dump(format!(
                    "the frontend appears as localhost, but the dump sets no global {FRONTEND_ATTR} to name it"
                ))),
            });
            return;
        }
    }
    if let Some(old) = base.attrs.get(scope).and_then(|m| m.get(name)) {
        match crate::attrs::normalize(name, value) {
            Ok(v) if &v == old => {
                b.unchanged += 1;
                return;
            }
            Ok(_) => {
                b.conflicts.push(subject);
                return;
            }
            // Refused below, where the line is named.
            Err(_) => {}
        }
    }
    b.steps.push(Step {
        origin,
        subject,
        unit: Unit::Line(origin),
        needs,
        change: Ok(Change::SetAttr {
            scope: scope.clone(),
            name: name.to_string(),
            value: value.to_string(),
        }),
    });
}

/// The steps that add a VM and set its own node row.
fn vm_steps(
    b: &mut Built,
    g: &Gathered<'_>,
    base: &Cluster,
    h: &HostLine,
    drop: &BTreeSet<Unit>,
    uuid: &mut dyn FnMut() -> String,
) {
    let (vm_at, vm_row) = &g.vms[&h.name];
    let unit = Unit::Host(h.name.clone());
    let subject = format!("VM {}", h.name);
    let cdrom = g
        .cdroms
        .get(&h.name)
        .filter(|_| !drop.contains(&Unit::Cdrom(h.name.clone())));
    if let Some((list_line, path)) = cdrom {
        if let Err(e) = check_abs_path(path) {
            b.steps.push(Step {
                origin: Origin::VmList(*list_line),
                subject: format!("cdrom of VM {}", h.name),
                unit: Unit::Cdrom(h.name.clone()),
                needs: None,
                change: Err(e.into()),
            });
            return;
        }
    }
    let built = build_vm(g, h, vm_row, cdrom.map(|c| c.1.clone()), uuid);
    let own = g.host_row(h);
    let (vm, own) = match (built, own) {
        (Ok((vm, unplaced)), Ok(mut own)) => {
            own.cpus = vm.vcpus;
            b.notes.extend(unplaced);
            (vm, own)
        }
        (Err((origin, fault)), _) | (_, Err((origin, fault))) => {
            b.steps.push(Step {
                origin,
                subject,
                unit,
                needs: None,
                change: Err(fault),
            });
            return;
        }
    };
    if let Some(old) = base.vms.get(&h.name) {
        let mut differs = vm_differences(old, &vm);
        if let Some(old_host) = base.hosts.get(&h.name) {
            // Its CPUs are the VM's vCPUs, compared above.
            let stated = g.stated(&h.name, &["appliance", "rack", "rank", "os"]);
            differs.extend(host_differences(old_host, &own, &stated));
        }
        if differs.is_empty() {
            b.unchanged += 1;
        } else {
            b.conflicts
                .push(format!("VM {} ({})", h.name, differs.join(", ")));
        }
        return;
    }
    if base.hosts.contains_key(&h.name) {
        b.conflicts
            .push(format!("host {} (not a VM in the database)", h.name));
        return;
    }
    b.steps.push(Step {
        origin: Origin::Line(*vm_at),
        subject: subject.clone(),
        unit: unit.clone(),
        needs: None,
        change: Ok(Change::AddVm(vm)),
    });
    b.steps.push(Step {
        origin: Origin::Line(h.line),
        subject,
        unit,
        needs: None,
        change: Ok(Change::SetHost(own)),
    });
}

fn vm_differences(old: &Vm, new: &Vm) -> Vec<&'static str> {
    [
        ("container", old.container != new.container),
        ("memory", old.memory_mib != new.memory_mib),
        ("vcpus", old.vcpus != new.vcpus),
        ("virt type", old.virt_type != new.virt_type),
        ("disks", old.disks != new.disks),
        ("nics", old.nics != new.nics),
        ("cdrom", old.cdrom != new.cdrom),
    ]
    .into_iter()
    .filter(|(_, d)| *d)
    .map(|(f, _)| f)
    .collect()
}

/// A VM's row, as the kvm roll's `report host vm config` would render it,
/// and notes of the NICs Rocks rendered none for.
fn build_vm(
    g: &Gathered<'_>,
    h: &HostLine,
    line: &VmLine,
    cdrom: Option<String>,
    uuid: &mut dyn FnMut() -> String,
) -> Result<(Vm, Vec<String>), (Origin, Fault)> {
    let vm_origin = Origin::Line(g.vms[&h.name].0);
    let bad = |why: String| (vm_origin, Fault::Dump(why));
    if line.physnode.as_deref() == Some("localhost") {
        return Err(bad(format!(
            "its physnode is the frontend, localhost, but the dump sets no global {FRONTEND_ATTR} to name it"
        )));
    }
    let memory_mib = line
        .mem_mb
        .ok_or_else(|| bad("set host vm gives no mem=".into()))?;
    // `set host vm` takes hvm or para; `dumpVM` writes 'None' for neither.
    let virt_type = match line
        .virt_type
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("hvm" | "none" | "") => "kvm".to_string(),
        Some("para") => {
            return Err(bad(
                "virt-type para is Xen's paravirtualisation; kvmroll runs hvm guests under kvm"
                    .into(),
            ))
        }
        Some(other) => return Err(bad(format!("unknown virt-type {:?}", clip(other, 40)))),
    };
    let disks = line
        .disks
        .iter()
        .flatten()
        .map(|d| disk_of(d).map_err(|f| (vm_origin, f)))
        .collect::<Result<Vec<Disk>, _>>()?;
    let none = Vec::new();
    let own_ifaces = g.ifaces.get(&h.name).unwrap_or(&none);
    let container_ifaces = line
        .physnode
        .as_ref()
        .and_then(|c| g.ifaces.get(c))
        .unwrap_or(&none);
    let (placed, unplaced) = rocks_nics(own_ifaces, container_ifaces);
    let nics = placed
        .into_iter()
        .map(|p| p.nic().map_err(|f| (Origin::Line(p.line), f)))
        .collect::<Result<Vec<Nic>, _>>()?;
    let notes = unplaced
        .iter()
        .map(|i| {
            format!(
                "VM {}: its interface {} ({}, subnet {}{}) matches no interface of {}, so Rocks rendered no NIC for it: none is imported",
                h.name,
                i.name,
                i.mac.as_deref().unwrap_or("no MAC"),
                i.subnet.as_deref().unwrap_or("none"),
                i.vlan.map(|v| format!(", vlan {v}")).unwrap_or_default(),
                line.physnode.as_deref().unwrap_or("its unset physnode"),
            )
        })
        .collect();
    Ok((
        Vm {
            id: 0,
            name: h.name.clone(),
            container: line.physnode.clone(),
            memory_mib,
            vcpus: h.cpus,
            uuid: uuid(),
            cdrom,
            virt_type,
            disks,
            nics,
            stale: false,
        },
        notes,
    ))
}

/// A Rocks disk as kvmroll's: `file` a raw image, `qcow2`, `phy` a block
/// device (`report host vm config`'s `getDisks`); the bus from the mode
/// column, `w` being virtio; a size of 0 none.
fn disk_of(d: &RocksDisk) -> Result<Disk, Fault> {
    let kind = match d.vbd_type.as_str() {
        "file" => DiskKind::File,
        "qcow2" => DiskKind::Qcow2,
        "phy" => DiskKind::Block,
        other => {
            return Err(Fault::Dump(format!(
                "disk {}: type {:?} has no kvmroll kind (file, qcow2 and phy do)",
                clip(&d.dev, 20),
                clip(other, 20)
            )))
        }
    };
    let bus = if d.mode == "w" { "virtio" } else { &d.mode };
    let mut spec = format!("{}:{},{},{bus}", kind.as_str(), d.path, d.dev);
    if d.size_gb > 0 {
        spec.push_str(&format!(",{}", d.size_gb));
    }
    Ok(Disk::parse(&spec)?)
}

/// A NIC placed on a container's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placed {
    /// The line of the VM interface it comes from.
    line: usize,
    direct: bool,
    source: String,
    vlan: Option<u32>,
    mac: Option<String>,
}

impl Placed {
    /// The NIC, through the validation a typed `--nic` gets.
    fn nic(&self) -> Result<Nic, Fault> {
        let mac = self
            .mac
            .as_deref()
            .ok_or_else(|| Fault::Dump("a NIC Rocks rendered has no MAC in the dump".into()))?;
        let mut spec = format!(
            "{}:{},mac={mac}",
            if self.direct { "direct" } else { "bridge" },
            self.source
        );
        if let Some(v) = self.vlan {
            spec.push_str(&format!(",vlan={v}"));
        }
        let s = NicSpec::parse(&spec)?;
        Ok(Nic {
            kind: s.kind,
            source: s.source,
            mac: s.mac.ok_or_else(|| Fault::Dump("no MAC".into()))?,
            vlan: s.vlan,
            model: s.model,
        })
    }
}

/// Rocks' test for a logical VLAN device: MySQL's `LIKE 'vlan%'`, which
/// ignores case.
fn is_vlan_device(name: &str) -> bool {
    name.len() >= 4 && name[..4].eq_ignore_ascii_case("vlan")
}

/// The NICs `rocks report host vm config` rendered for a VM, from its
/// interfaces and its container's (the kvm roll's `rocks/db/vmextend.py`,
/// ROCKS_6_2 and 7.0), in its order: first each VLAN NIC, then each bridged
/// one. Returns them and the VM interfaces that got none.
///
/// - `getPhysTapDevicefromVnode`: the VM's interfaces by VLAN id (a later
///   one of the same id replaces an earlier, as in its dict); for each pair
///   of a container interface not named `vlan%` and one named `vlan%` on the
///   same subnet, whose VLAN id is one of the VM's, a macvtap NIC on
///   `p<device>.<vlan>` (7.0: no `p` where the device's options hold
///   `novtap`).
/// - `getPhysBridgedDevicefromVnode`: for each VM interface and container
///   interface not named `vlan%` on the same subnet, with the same VLAN id
///   (none on the container matching the VM's none or 0), a NIC on the bridge
///   named after the container's interface (the physical one is renamed
///   `p<device>`); 7.0 leaves out `ovs-link` devices.
fn rocks_nics<'i>(vm: &'i [Iface], container: &[Iface]) -> (Vec<Placed>, Vec<&'i Iface>) {
    let mut by_vlan: BTreeMap<u32, &Iface> = BTreeMap::new();
    for i in vm {
        if let Some(v) = i.vlan {
            by_vlan.insert(v, i);
        }
    }
    let physical = || container.iter().filter(|c| !is_vlan_device(&c.name));
    let mut placed = Vec::new();
    let mut used: BTreeSet<usize> = BTreeSet::new();
    for n in physical() {
        for v in container.iter().filter(|c| is_vlan_device(&c.name)) {
            let (Some(subnet), Some(id)) = (&n.subnet, v.vlan) else {
                continue;
            };
            let Some(i) = by_vlan
                .get(&id)
                .filter(|_| v.subnet.as_ref() == Some(subnet))
            else {
                continue;
            };
            let novtap = n.options.as_deref().is_some_and(|o| o.contains("novtap"));
            placed.push(Placed {
                line: i.line,
                direct: true,
                source: format!("{}{}", if novtap { "" } else { "p" }, n.name),
                vlan: Some(id),
                mac: i.mac.clone(),
            });
            used.insert(i.line);
        }
    }
    for w in vm {
        for n in physical() {
            let same_vlan = match (n.vlan, w.vlan) {
                (Some(a), Some(b)) => a == b,
                (None, None | Some(0)) => true,
                _ => false,
            };
            if n.subnet.is_none()
                || n.subnet != w.subnet
                || !same_vlan
                || n.module.as_deref() == Some("ovs-link")
            {
                continue;
            }
            placed.push(Placed {
                line: w.line,
                direct: false,
                source: n.name.clone(),
                vlan: None,
                mac: w.mac.clone(),
            });
            used.insert(w.line);
        }
    }
    let unplaced = vm.iter().filter(|i| !used.contains(&i.line)).collect();
    (placed, unplaced)
}

/// Renders every VM of `work`, as `Cluster::plan` does: a VM that rendered
/// before and does not now, or a new one that does not, is a failure, blamed
/// on the attribute or cdrom that caused it where one did.
fn render_check(
    base: &Cluster,
    work: &Cluster,
    steps: &[Step],
    applied: &[usize],
    g: &Gathered<'_>,
) -> Option<(Blame, Fault)> {
    let mut before = Renderer::new(base);
    let mut after = Renderer::new(work);
    for name in work.vms.keys() {
        let Err(e) = after.render(name) else {
            continue;
        };
        if base.vms.contains_key(name) && before.render(name).as_ref() == Err(&e) {
            continue;
        }
        let blame = blame_render(work, steps, applied, g, name, &e);
        return Some((blame, Fault::from(e)));
    }
    None
}

/// The step a render failure of VM `name` comes from.
fn blame_render(
    work: &Cluster,
    steps: &[Step],
    applied: &[usize],
    g: &Gathered<'_>,
    name: &str,
    e: &RenderError,
) -> Blame {
    let attr = match e {
        RenderError::Attribute {
            source: ValidationError::Attribute { name, .. },
            ..
        } => Some(name.clone()),
        RenderError::PinAllTooWide { .. }
        | RenderError::NoSuchCpu { .. }
        | RenderError::NoSuchVcpu { .. }
        | RenderError::NoSuchNode { .. }
        | RenderError::PinAutoFull { .. }
        | RenderError::Unplaced { .. } => Some("kvm_cpu_pinning".to_string()),
        RenderError::DeviceGap { next, .. } => Some(format!("kvm_device_{next}")),
        RenderError::NoCdromSlot { .. } => {
            if let Some((line, _)) = g.cdroms.get(name) {
                return Blame {
                    origin: Origin::VmList(*line),
                    subject: format!("cdrom of VM {name}"),
                    unit: Unit::Cdrom(name.to_string()),
                };
            }
            None
        }
        _ => None,
    };
    let applied_steps = || applied.iter().rev().map(|&k| &steps[k]);
    let by_attr = attr.and_then(|attr| {
        let scope = work.resolve(work.hosts.get(name)?).get(&attr)?.scope.clone();
        applied_steps().find(|s| {
            matches!(&s.change, Ok(Change::SetAttr { scope: sc, name: n, .. }) if *sc == scope && *n == attr)
        })
    });
    let container = work.vms.get(name).and_then(|v| v.container.clone());
    let by_vm = || {
        applied_steps().find(|s| match &s.change {
            Ok(Change::AddVm(v)) => {
                v.name == name || (container.is_some() && v.container == container)
            }
            _ => false,
        })
    };
    by_attr
        .or_else(by_vm)
        .or_else(|| applied_steps().next())
        .map(Step::blame)
        .unwrap_or(Blame {
            origin: Origin::Line(0),
            subject: format!("VM {name}"),
            unit: Unit::Host(name.to_string()),
        })
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

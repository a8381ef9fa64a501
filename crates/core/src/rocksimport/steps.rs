//! The changes one pass of the import makes, each with the line it comes
//! from and what skipping it leaves out, and the check that renders every
//! VM afterwards.

use super::gather::{appliance_by_rule, Gathered, HostLine, FRONTEND_ATTR};
use super::vm::build_vm;
use super::{Fault, Origin};
use crate::cluster::{Change, Cluster};
use crate::model::{check_abs_path, Host, Scope, ValidationError, Vm};
use crate::render::{RenderError, Renderer};
use std::collections::BTreeSet;

/// What skipping a change leaves out with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Unit {
    /// A host or VM, and every change that needs it.
    Host(String),
    /// One attribute or appliance line.
    Line(Origin),
    /// A VM's cdrom (the VM is imported without it).
    Cdrom(String),
}

/// One change with what it came from.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) origin: Origin,
    pub(super) subject: String,
    pub(super) unit: Unit,
    /// A host this change needs: left out when that host is.
    pub(super) needs: Option<String>,
    /// The change, or why the dump's value cannot be one.
    pub(super) change: Result<Change, Fault>,
}

/// The steps of one pass, and what a merge found.
#[derive(Debug, Default)]
pub(super) struct Built {
    pub(super) steps: Vec<Step>,
    pub(super) conflicts: Vec<String>,
    pub(super) unchanged: usize,
    pub(super) old_attrs: usize,
    pub(super) notes: Vec<String>,
}

/// Who answers for a failure: the step's origin, subject and unit.
#[derive(Debug, Clone)]
pub(super) struct Blame {
    pub(super) origin: Origin,
    pub(super) subject: String,
    pub(super) unit: Unit,
}

impl Step {
    pub(super) fn blame(&self) -> Blame {
        Blame {
            origin: self.origin,
            subject: self.subject.clone(),
            unit: self.unit.clone(),
        }
    }
}

pub(super) fn attr_subject(scope: &Scope, name: &str) -> String {
    match scope {
        Scope::Global => format!("attribute {name} (global)"),
        Scope::Host(h) => format!("attribute {name} of host {h}"),
        s => format!("attribute {name} of {} {}", s.kind(), s.target()),
    }
}

/// Builds the steps of one pass, leaving out what `drop` names: appliances,
/// hosts, their attributes, then VMs and theirs (a VM needs its container
/// and its container's `kvm`).
pub(super) fn build(
    g: &Gathered<'_>,
    base: &Cluster,
    drop: &BTreeSet<Unit>,
    uuid: &mut dyn FnMut() -> String,
) -> Built {
    let mut b = Built::default();
    appliance_steps(&mut b, g, base);
    frontend_step(&mut b, g, base);
    for h in g.hosts.iter().filter(|h| !g.vms.contains_key(&h.host.name)) {
        let stated = g.stated(&h.host.name, &HOST_LINE_FIELDS);
        let row = g.host_row(h);
        let at = Origin::Line(h.line);
        host_step(&mut b, base, ("host", &h.host.name), at, row, &stated);
    }
    let is_vm = |scope: &Scope| matches!(scope, Scope::Host(h) if g.vms.contains_key(h));
    for (line, scope, name, value) in g.attrs.iter().filter(|a| !is_vm(&a.1)) {
        attr_step(&mut b, g, base, *line, scope, name, value);
    }
    for h in g.hosts.iter().filter(|h| g.vms.contains_key(&h.host.name)) {
        vm_steps(&mut b, g, base, h, drop, uuid);
    }
    for (name, (line, _)) in &g.vms {
        if g.hosts.iter().any(|h| &h.host.name == name) {
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

/// The appliances of `add appliance` lines, and of memberships no such
/// line names, that the database lacks.
fn appliance_steps(b: &mut Built, g: &Gathered<'_>, base: &Cluster) {
    let mut wanted: Vec<(String, Origin, Unit)> = g
        .appliances
        .iter()
        .map(|(line, name)| {
            (
                name.clone(),
                Origin::Line(*line),
                Unit::Line(Origin::Line(*line)),
            )
        })
        .collect();
    for h in &g.hosts {
        if !g.memberships.contains_key(&h.host.membership) {
            let name = appliance_by_rule(&h.host.membership);
            wanted.push((name, Origin::Line(h.line), Unit::Host(h.host.name.clone())));
        }
    }
    let mut made: BTreeSet<String> = BTreeSet::new();
    for (name, origin, unit) in wanted {
        if base.appliances.contains(&name) {
            b.unchanged += 1;
        } else if made.insert(name.clone()) {
            b.steps.push(Step {
                origin,
                subject: format!("appliance {name}"),
                unit,
                needs: None,
                change: Ok(Change::AddAppliance(name)),
            });
        }
    }
}

/// The frontend, which `rocks dump host` leaves out, unless an `"add host"`
/// line gives it after all.
fn frontend_step(b: &mut Built, g: &Gathered<'_>, base: &Cluster) {
    let Some((line, fe)) = &g.frontend else {
        return;
    };
    if g.hosts.iter().any(|h| &h.host.name == fe) {
        return;
    }
    let mut host = Host::new(fe, &g.appliance_of("Frontend"));
    let change = g.with_actions(&mut host).map(|()| host);
    let stated = g.stated(fe, &["appliance"]);
    host_step(
        b,
        base,
        ("frontend", fe),
        Origin::Line(*line),
        change,
        &stated,
    );
    b.notes.push(format!(
        "the frontend {fe} is given 1 CPU, as the dump holds no row of it: `kvmroll host set {fe} --cpus N` corrects it"
    ));
}

/// The fields of a host row an `"add host"` line gives.
pub(super) const HOST_LINE_FIELDS: [&str; 5] = ["appliance", "rack", "rank", "cpus", "os"];

/// The step that adds a host (`kind` host or frontend), or nothing where a
/// merge finds it as the dump has it; `stated` names the fields compared.
pub(super) fn host_step(
    b: &mut Built,
    base: &Cluster,
    (kind, name): (&str, &str),
    origin: Origin,
    host: Result<Host, (Origin, Fault)>,
    stated: &[&'static str],
) {
    // A refused row names the line of the value refused (a boot action).
    let (origin, host) = match host {
        Ok(h) => (origin, Ok(h)),
        Err((at, fault)) => (at, Err(fault)),
    };
    let subject = format!("{kind} {name}");
    if let (Ok(new), Some(old)) = (&host, base.hosts.get(name)) {
        let differs = host_differences(old, new, stated);
        if base.vms.contains_key(name) {
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
        unit: Unit::Host(name.to_string()),
        needs: None,
        change: host.map(Change::AddHost),
    });
}

/// The fields among `stated` in which two host rows differ.
pub(super) fn host_differences(
    old: &Host,
    new: &Host,
    stated: &[&'static str],
) -> Vec<&'static str> {
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
pub(super) fn attr_step(
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
pub(super) fn vm_steps(
    b: &mut Built,
    g: &Gathered<'_>,
    base: &Cluster,
    h: &HostLine,
    drop: &BTreeSet<Unit>,
    uuid: &mut dyn FnMut() -> String,
) {
    let (vm_at, vm_row) = &g.vms[&h.host.name];
    let unit = Unit::Host(h.host.name.clone());
    let subject = format!("VM {}", h.host.name);
    let cdrom = g
        .cdroms
        .get(&h.host.name)
        .filter(|_| !drop.contains(&Unit::Cdrom(h.host.name.clone())));
    if let Some((list_line, path)) = cdrom {
        if let Err(e) = check_abs_path(path) {
            b.steps.push(Step {
                origin: Origin::VmList(*list_line),
                subject: format!("cdrom of VM {}", h.host.name),
                unit: Unit::Cdrom(h.host.name.clone()),
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
    if already_there(b, g, base, h, &vm, &own) {
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

/// Whether the database has the VM's name already: as the same VM
/// (counted unchanged), or as another one or a host (a conflict).
fn already_there(
    b: &mut Built,
    g: &Gathered<'_>,
    base: &Cluster,
    h: &HostLine,
    vm: &Vm,
    own: &Host,
) -> bool {
    if let Some(old) = base.vms.get(&h.host.name) {
        let mut differs = vm_differences(old, vm);
        if let Some(old_host) = base.hosts.get(&h.host.name) {
            // Its CPUs are the VM's vCPUs, compared above.
            let stated = g.stated(&h.host.name, &["appliance", "rack", "rank", "os"]);
            differs.extend(host_differences(old_host, own, &stated));
        }
        if differs.is_empty() {
            b.unchanged += 1;
        } else {
            b.conflicts
                .push(format!("VM {} ({})", h.host.name, differs.join(", ")));
        }
        return true;
    }
    if base.hosts.contains_key(&h.host.name) {
        b.conflicts
            .push(format!("host {} (not a VM in the database)", h.host.name));
        return true;
    }
    false
}

pub(super) fn vm_differences(old: &Vm, new: &Vm) -> Vec<&'static str> {
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

/// Renders every VM of `work`, as `Cluster::plan` does: a VM that rendered
/// before and does not now, or a new one that does not, is a failure, blamed
/// on the attribute or cdrom that caused it where one did.
pub(super) fn render_check(
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
pub(super) fn blame_render(
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

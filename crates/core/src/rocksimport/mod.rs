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
mod tests {
    use super::gather::appliance_by_rule;
    use super::*;
    use crate::rocksdump::{self, parse_vm_list};

    /// A container and one VM on it, as `rocks dump` writes them.
    const SMALL: &[&str] = &[
        "add attr Kickstart_PrivateHostname fe",
        "add appliance vm-container graph=default node=client membership=VM\\ Container public=yes",
        "\"add host\" vm-container-0-0 cpus=4 rack=0 rank=0 membership=VM\\ Container os=linux",
        "add host interface vm-container-0-0 eth0",
        "set host interface subnet vm-container-0-0 eth0 private",
        "\"add host\" v cpus=1 rack=0 rank=0 membership=Hosted\\ VM os=linux",
        "add host interface v eth0",
        "set host interface mac v eth0 52:54:00:00:00:01",
        "set host interface subnet v eth0 private",
        "set host vm v physnode='vm-container-0-0' disk='file:/state/partition1/kvm/disks/v.img,vda,virtio' disksize='8' mem='512' slice='0' virt-type='hvm'",
    ];

    fn dump(more: &[&str]) -> Dump {
        let text: String = SMALL
            .iter()
            .chain(more)
            .map(|l| format!("/opt/rocks/bin/rocks {l}\n"))
            .collect();
        rocksdump::parse(text.as_bytes())
    }

    fn run(
        base: &Cluster,
        d: &Dump,
        list: Option<&str>,
        opts: Options,
    ) -> Result<Translation, ImportError> {
        let rows = list.map(|l| parse_vm_list(l.as_bytes()).unwrap());
        let mut n = 0;
        translate(base, d, rows.as_deref(), opts, &mut || {
            n += 1;
            format!("00000000-0000-4000-8000-{n:012}")
        })
    }

    fn imported(more: &[&str], opts: Options) -> Translation {
        run(&Cluster::seeded(), &dump(more), None, opts).unwrap()
    }

    fn refused(more: &[&str]) -> String {
        match run(&Cluster::seeded(), &dump(more), None, Options::default()) {
            Ok(t) => panic!("imported: {:?}", t.report),
            Err(e) => crate::sys::error_chain(&e),
        }
    }

    const SKIP: Options = Options {
        skip_invalid: true,
        merge: false,
    };

    #[test]
    fn memberships_name_appliances_through_add_appliance_else_by_rule() {
        assert_eq!(appliance_by_rule("NAS Appliance"), "nas-appliance");
        assert_eq!(appliance_by_rule("Hosted VM"), "hosted-vm");
        let t = imported(
            &[
                "add appliance nas graph=default node=nas membership=NAS\\ Appliance public=yes",
                "\"add host\" nas-0-0 cpus=2 rack=0 rank=0 membership=NAS\\ Appliance os=linux",
                "\"add host\" login-0-0 cpus=2 rack=0 rank=0 membership=Login\\ Node os=linux",
            ],
            Options::default(),
        );
        let appliance = |h: &str| {
            t.report
                .hosts
                .iter()
                .find(|x| x.name == h)
                .map(|x| x.appliance.clone())
        };
        assert_eq!(appliance("nas-0-0").as_deref(), Some("nas"));
        assert_eq!(appliance("login-0-0").as_deref(), Some("login-node"));
        assert_eq!(appliance("fe").as_deref(), Some("frontend"));
        assert_eq!(t.report.appliances, ["nas", "login-node"]);
    }

    #[test]
    fn localhost_needs_the_frontend_named() {
        let d = rocksdump::parse(b"/opt/rocks/bin/rocks add host attr localhost kvm true\n");
        let e = run(&Cluster::seeded(), &d, None, Options::default()).unwrap_err();
        assert_eq!(
            crate::sys::error_chain(&e),
            "line 1 (attribute kvm of host localhost): the frontend appears as localhost, but the dump sets no global Kickstart_PrivateHostname to name it"
        );
    }

    #[test]
    fn name_old_is_passed_over_only_beside_its_name() {
        let t = imported(
            &[
                "add host attr v cpu_mode host-model",
                "add host attr v cpu_mode_old host-passthrough",
                "add host attr vm-container-0-0 site_old kept",
                "add attr cpu_mode_old host-model",
            ],
            Options::default(),
        );
        assert_eq!(t.report.old_attrs, 1);
        let names: Vec<&str> = t.report.attrs.iter().map(|a| a.1.as_str()).collect();
        assert_eq!(
            names,
            [
                "Kickstart_PrivateHostname",
                "site_old",
                "cpu_mode_old",
                "cpu_mode"
            ]
        );
    }

    /// Rocks rendered kvm_device_N up to the first gap and dropped the rest
    /// silently; kvmroll names the device after the gap.
    #[test]
    fn a_device_gap_is_refused_naming_the_device_after_it_or_skipped() {
        let devices = [
            "add host attr v kvm_device_0 \\<watchdog\\ model=\\'i6300esb\\'/\\>",
            "add host attr v kvm_device_2 \\<rng\\ model=\\'virtio\\'\\>\\<backend\\ model=\\'random\\'\\>/dev/urandom\\</backend\\>\\</rng\\>",
        ];
        let e = refused(&devices);
        assert!(
            e.starts_with("line 12 (attribute kvm_device_2 of host v): VM \"v\": kvm_device_2 is set but kvm_device_1 is not"),
            "{e}"
        );
        let t = imported(&devices, SKIP);
        assert_eq!(t.report.skipped.len(), 1);
        assert_eq!(t.report.skipped[0].origin, Origin::Line(12));
        assert_eq!(t.report.vms.len(), 1);
    }

    #[test]
    fn a_cdrom_without_a_slot_is_refused_at_its_vm_list_line_or_left_out() {
        let mut d = dump(&[]);
        for c in &mut d.commands {
            if let rocksdump::Command::Vm(vm) = &mut c.command {
                let disks = vm.disks.as_mut().unwrap();
                let first = disks[0].clone();
                disks.clear();
                for dev in ["hda", "hdb", "hdc", "hdd"] {
                    let mut d = first.clone();
                    d.dev = dev.into();
                    d.mode = "ide".into();
                    d.path = format!("/state/partition1/kvm/disks/{dev}.img");
                    disks.push(d);
                }
            }
        }
        let list = "SLICE MEM CDROM\n0     512 /isos/a.iso\n";
        let e = run(&Cluster::seeded(), &d, Some(list), Options::default()).unwrap_err();
        assert!(
            crate::sys::error_chain(&e).starts_with(
                "VM list line 2 (cdrom of VM v): VM \"v\": no ide slot is left for the cdrom"
            ),
            "{e}"
        );
        let t = run(&Cluster::seeded(), &d, Some(list), SKIP).unwrap();
        assert_eq!(t.report.vms[0].cdrom, None);
        assert_eq!(t.report.vms[0].disks.len(), 4);
        // Without a VM-HOST column the list is one VM's, so two VMs refuse it.
        let two = dump(&[
            "\"add host\" w cpus=1 rack=0 rank=0 membership=Hosted\\ VM os=linux",
            "set host vm w physnode='vm-container-0-0' disk='' disksize='' mem='512' slice='1' virt-type='hvm'",
        ]);
        let e = run(&Cluster::seeded(), &two, Some(list), SKIP).unwrap_err();
        assert!(e.to_string().contains("VM list line 2 (VM list)"), "{e}");
    }

    #[test]
    fn an_unreadable_line_is_listed_when_skipped() {
        let d = dump(&["add attr broken 'quote"]);
        assert!(matches!(
            run(&Cluster::seeded(), &d, None, Options::default()),
            Err(ImportError::Unreadable(_))
        ));
        let t = run(&Cluster::seeded(), &d, None, SKIP).unwrap();
        assert_eq!(t.report.skipped.len(), 1);
        assert_eq!(t.report.skipped[0].origin, Origin::Line(11));
        assert_eq!(t.report.vms.len(), 1);
    }

    #[test]
    fn a_vm_on_a_host_that_is_no_container_is_refused_with_its_line() {
        let e = refused(&[
            "\"add host\" c-0-0 cpus=2 rack=0 rank=0 membership=Compute os=linux",
            "set host vm v physnode='c-0-0'",
        ]);
        assert_eq!(
            e,
            "line 12 (VM v): \"c-0-0\" is not a VM container: its resolved kvm attribute is not true"
        );
    }

    #[test]
    fn a_host_refused_for_its_boot_action_takes_its_attributes_along() {
        let more = [
            "set host boot vm-container-0-0 action=run",
            "add host attr vm-container-0-0 site z",
        ];
        let e = refused(&more);
        assert!(
            e.starts_with("line 11 (host vm-container-0-0): invalid value \"run\" for boot action"),
            "{e}"
        );
        let t = imported(&more, SKIP);
        let skipped: Vec<(Origin, &str, usize)> = t
            .report
            .skipped
            .iter()
            .map(|s| (s.origin, s.subject.as_str(), s.with_it))
            .collect();
        // Its VM, placed on it, is refused in turn.
        assert_eq!(
            skipped,
            [
                (Origin::Line(10), "VM v", 1),
                (Origin::Line(11), "host vm-container-0-0", 1)
            ]
        );
        assert!(t.report.hosts.iter().all(|h| h.name != "vm-container-0-0"));
    }

    #[test]
    fn a_vm_on_the_frontend_is_bridged_to_the_interfaces_its_installer_makes() {
        let t = imported(
            &[
                "add attr Kickstart_PrivateInterface eth0",
                "add attr Kickstart_PublicInterface eth1",
                "add host attr localhost kvm true",
                "\"add host\" w cpus=1 rack=0 rank=0 membership=Hosted\\ VM os=linux",
                "add host interface w eth0",
                "set host interface mac w eth0 52:54:00:00:00:02",
                "set host interface subnet w eth0 public",
                "set host vm w physnode='localhost' disk='' disksize='' mem='512' slice='0' virt-type='hvm'",
            ],
            Options::default(),
        );
        let w = t.report.vms.iter().find(|v| v.name == "w").unwrap();
        assert_eq!(w.container.as_deref(), Some("fe"));
        assert_eq!(
            w.nics.iter().map(|n| n.source.as_str()).collect::<Vec<_>>(),
            ["eth1"]
        );
    }

    #[test]
    fn a_merge_keeps_what_is_equal_and_refuses_what_differs() {
        let first = imported(&["add attr site x"], Options::default());
        let mut base = Cluster::seeded();
        for c in &first.changes {
            base.apply(c).unwrap();
        }
        let merge = Options {
            skip_invalid: false,
            merge: true,
        };
        let again = run(&base, &dump(&["add attr site x"]), None, merge).unwrap();
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        assert_eq!(again.report.unchanged, 7);
        let e = run(&base, &dump(&["add attr site y"]), None, merge).unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 conflict with the database (the same name, other values): attribute site (global)"
        );
        let e = run(&base, &dump(&[]), None, Options::default()).unwrap_err();
        assert!(matches!(e, ImportError::NotEmpty(3)), "{e}");
    }
}

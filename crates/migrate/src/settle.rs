//! Putting the database in step with where a VM runs after a migration
//! that did not end cleanly: one that failed or was aborted, or one whose
//! `kvmroll` was killed (the VM still carries [`MIGRATING_FROM`]).

use crate::check::active;
use crate::{MigrateError, Migrator, MIGRATING_FROM};
use kvmroll_core::{error_chain, Change, Cluster, Plan, Scope};
use kvmroll_virt::{DomainInfo, Hypervisor, VirtError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often a migration job that libvirtd carries on alone is asked
/// whether it ended.
const JOB_POLL: Duration = Duration::from_millis(200);

/// Where a VM was found and what was put in step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub vm: String,
    /// The container the migration left, and the one it went to.
    pub from: String,
    pub to: String,
    /// The container it runs on, or, where it runs nowhere, the one that
    /// keeps its definition; the database says this one now.
    pub on: String,
    pub running: bool,
    /// The other container had a definition of it, which was removed.
    pub removed_leftover: bool,
    /// The other container did not answer: a definition may be left there.
    pub other_unreached: bool,
}

impl std::fmt::Display for Settled {
    /// One line, e.g. `VM x: its interrupted migration from a to b is
    /// settled: it runs on b, and the database says so`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.running { "runs" } else { "is defined" };
        write!(
            f,
            "VM {}: its interrupted migration from {} to {} is settled: it {how} on {}, and the database says so",
            self.vm, self.from, self.to, self.on
        )?;
        let other = if self.on == self.from {
            &self.to
        } else {
            &self.from
        };
        if self.removed_leftover {
            write!(f, "; its leftover definition on {other} was removed")?;
        }
        if self.other_unreached {
            write!(
                f,
                "; {other} did not answer, so a definition may be left there"
            )?;
        }
        Ok(())
    }
}

/// What one container said of the VM: `None` when it did not answer.
type Seen = Option<Option<DomainInfo>>;

fn runs(seen: &Seen) -> bool {
    matches!(seen, Some(Some(d)) if active(&d.state))
}

fn defined(seen: &Seen) -> bool {
    matches!(seen, Some(Some(_)))
}

fn undecided(vm: &str, why: String) -> MigrateError {
    MigrateError::Undecided {
        vm: vm.to_owned(),
        why,
    }
}

/// Waits, up to `wait`, while libvirtd on the source still carries on a
/// migration job for `vm`.
fn wait_for_job(a: &dyn Hypervisor, vm: &str, wait: Duration) {
    let until = Instant::now() + wait;
    while matches!(a.job_progress(vm), Ok(Some(_))) && Instant::now() < until {
        std::thread::sleep(JOB_POLL);
    }
}

/// Whether `from` (rather than `to`) keeps `vm`: the one it runs on, or,
/// where it runs on neither, the one with a definition (`from` when both
/// have one). Undecided when it runs on both, or on neither and one did
/// not answer.
fn keeps_it_from(
    vm: &str,
    from: &str,
    to: &str,
    on_a: &Seen,
    on_b: &Seen,
) -> Result<bool, MigrateError> {
    match (runs(on_a), runs(on_b)) {
        (true, true) => Err(undecided(vm, format!("it runs on both {from} and {to}"))),
        (true, false) => Ok(true),
        (false, true) => Ok(false),
        (false, false) => {
            for (seen, name) in [(on_a, from), (on_b, to)] {
                if seen.is_none() {
                    return Err(undecided(
                        vm,
                        format!(
                            "it runs on neither container that answered, and {name} did not answer"
                        ),
                    ));
                }
            }
            Ok(defined(on_a) || !defined(on_b))
        }
    }
}

/// Undefines `vm` on the container it left, unless it runs there; a
/// failure is logged and the definition stays. True when removed.
fn remove_leftover(there: &dyn Hypervisor, d: &DomainInfo, vm: &str, other: &str) -> bool {
    if active(&d.state) {
        return false;
    }
    match there.undefine(vm) {
        Ok(()) => true,
        Err(e) => {
            log::warn!(
                "VM {vm}: its leftover definition on {other} stays: {}",
                error_chain(&e)
            );
            false
        }
    }
}

impl Migrator<'_> {
    /// Settles `vm` if it carries [`MIGRATING_FROM`] (its `kvmroll vm
    /// migrate` was killed): asks both containers where it runs, puts the
    /// database in step and removes the leftover definition. `None` when
    /// it carries no mark. Waits up to the VM's `kvm_migrate_timeout` for
    /// a migration that libvirtd still carries on.
    pub fn recover(&self, vm: &str) -> Result<Option<Settled>, MigrateError> {
        let c = self.db().snapshot()?;
        let v = c.vm(vm)?;
        let Some(from) = migrating_from(&c, vm) else {
            return Ok(None);
        };
        let to = v.container.clone().unwrap_or_else(|| from.clone());
        let wait = crate::check::timeout_of(&c, vm);
        self.settle(vm, &from, &to, wait).map(Some)
    }

    /// Finds where `vm` runs, between `from` and `to`, and writes it to
    /// the database with the mark removed, in one transaction; the
    /// container it is on gets the definition of that write, the other
    /// loses its own. A migration job still running on `from` is waited
    /// for, up to `wait`.
    pub(crate) fn settle(
        &self,
        vm: &str,
        from: &str,
        to: &str,
        wait: Duration,
    ) -> Result<Settled, MigrateError> {
        let c = self.db().snapshot()?;
        let from_uri = c.libvirt_uri(from, &self.local_host);
        let to_uri = c.libvirt_uri(to, &self.local_host);
        let a = self.connector.connect(&from_uri);
        let b = self.connector.connect(&to_uri);
        if let Ok(a) = &a {
            wait_for_job(a.as_ref(), vm, wait);
        }
        let look = |hv: &Result<Box<dyn Hypervisor>, VirtError>| -> Seen {
            hv.as_ref().ok().and_then(|hv| hv.domain(vm).ok())
        };
        let (on_a, on_b) = (look(&a), look(&b));
        let on_from = keeps_it_from(vm, from, to, &on_a, &on_b)?;
        let (on, other, here, there, seen_here, other_seen) = if on_from {
            (from, to, &a, &b, &on_a, &on_b)
        } else {
            (to, from, &b, &a, &on_b, &on_a)
        };
        let plan = self.record_where(vm, on)?;
        // The definition where it is, up to date (the generation moved).
        let xml = kvmroll_core::render_domain(&plan.after, vm)?;
        let here = here.as_ref().map_err(|e| undecided(vm, error_chain(e)))?;
        here.define(&xml).map_err(|source| MigrateError::Ask {
            vm: vm.to_owned(),
            container: on.to_owned(),
            source: Box::new(source),
        })?;
        let removed_leftover = match (there, other_seen) {
            (Ok(there), Some(Some(d))) => remove_leftover(there.as_ref(), d, vm, other),
            _ => false,
        };
        self.refresh_others(&plan, vm);
        Ok(Settled {
            vm: vm.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            on: on.to_owned(),
            running: runs(seen_here),
            removed_leftover,
            other_unreached: other_seen.is_none(),
        })
    }

    /// Writes that `vm` is on `on`, with the mark removed, in one
    /// transaction.
    fn record_where(&self, vm: &str, on: &str) -> Result<Plan, MigrateError> {
        Ok(self.db().update(&mut |c| {
            let mut row = c.vm(vm)?.clone();
            let mut changes = Vec::new();
            if row.container.as_deref() != Some(on) {
                row.container = Some(on.to_owned());
                changes.push(Change::SetVm(row));
            }
            if migrating_from(c, vm).is_some() {
                changes.push(Change::RemoveAttr {
                    scope: Scope::Host(vm.to_owned()),
                    name: MIGRATING_FROM.to_owned(),
                });
            }
            Ok(changes)
        })?)
    }

    /// Redefines, where libvirt has them, the VMs other than `except` whose
    /// definition `plan` changed (`pin_auto` neighbours on either
    /// container); those not reached are marked stale, and returned.
    pub(crate) fn refresh_others(&self, plan: &Plan, except: &str) -> Vec<String> {
        let mut conns: BTreeMap<String, Option<Box<dyn Hypervisor>>> = BTreeMap::new();
        let mut missed = Vec::new();
        for (name, xml) in &plan.changed {
            let (Some(xml), Some(vm)) = (xml, plan.after.vms.get(name)) else {
                continue;
            };
            let Some(container) = vm.container.as_deref().filter(|_| name != except) else {
                continue;
            };
            let uri = plan.after.libvirt_uri(container, &self.local_host);
            let hv = conns
                .entry(uri.clone())
                .or_insert_with(|| self.connector.connect(&uri).ok());
            let done = hv.as_ref().is_some_and(|hv| match hv.domain(name) {
                Ok(None) => true,
                Ok(Some(_)) => hv.define(xml).is_ok(),
                Err(_) => false,
            });
            if !done {
                missed.push(name.clone());
            }
        }
        if !missed.is_empty() {
            let marked = self.db().update(&mut |c| {
                Ok(missed
                    .iter()
                    .filter_map(|n| c.vms.get(n))
                    .map(|v| {
                        let mut v = v.clone();
                        v.stale = true;
                        Change::SetVm(v)
                    })
                    .collect())
            });
            if let Err(e) = marked {
                log::warn!(
                    "cannot mark {} stale: {}",
                    missed.join(", "),
                    error_chain(&e)
                );
            }
        }
        missed
    }
}

/// The container a VM's migration left, if it carries the mark (on its
/// own row only: kvmroll sets it nowhere else).
pub fn migrating_from(c: &Cluster, vm: &str) -> Option<String> {
    c.attrs
        .get(&Scope::Host(vm.to_owned()))
        .and_then(|m| m.get(MIGRATING_FROM))
        .cloned()
}

//! The run of a live migration: the database protocol around libvirt's
//! blocking call, which runs on a thread of its own while this one follows
//! its progress and aborts it past the time limit.

use crate::check::{placing, Checked};
use crate::migrating_from;
use crate::{MigrateError, Migrator, Request, MIGRATING_FROM};
use kvmroll_core::{error_chain, Change, Plan, Scope};
use kvmroll_virt::{MigrateTo, VirtError};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the migration's progress is read (and its time limit checked).
const POLL: Duration = Duration::from_millis(250);

/// How far a migration is, as libvirt's job reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub vm: String,
    /// Bytes copied so far, and in all (0 while libvirt does not know).
    pub processed: u64,
    pub total: u64,
}

impl Progress {
    /// The data left to copy, in bytes.
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.processed)
    }
}

/// A VM that moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub vm: String,
    pub from: String,
    pub to: String,
    /// Always true from [`Migrator::migrate`]; an offline move is the caller's.
    pub live: bool,
    pub took: Duration,
    /// Other VMs whose definition the move changed (`pin_auto` neighbours)
    /// and that could not be redefined: marked stale in the database.
    pub stale: Vec<String>,
}

impl std::fmt::Display for Moved {
    /// `VM x moved to B (live, 1.6 s)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VM {} moved to {} ({}, {:.1} s)",
            self.vm,
            self.to,
            if self.live { "live" } else { "offline" },
            self.took.as_secs_f64()
        )
    }
}

/// How libvirt's call ended.
enum Driven {
    Done,
    Failed(VirtError),
    /// Aborted past the time limit.
    TimedOut,
}

impl Migrator<'_> {
    /// Checks, then live-migrates a running VM ([`Migrator::check`],
    /// [`Migrator::run`]); a VM that does not run is [`MigrateError::NotRunning`].
    /// Call [`Migrator::recover`] first and say what it settled.
    pub fn migrate(
        &self,
        req: &Request,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<Moved, MigrateError> {
        let started = Instant::now();
        let checked = self.check(&req.vm, &req.to)?;
        if !checked.running {
            return Err(MigrateError::NotRunning {
                vm: checked.vm,
                container: checked.from,
            });
        }
        let limit = req.timeout.unwrap_or(checked.timeout);
        self.run(&checked, limit, progress, started)
    }

    /// The live migration of a checked VM, within `limit`; `started` is
    /// when the caller began (the time [`Moved`] reports).
    pub fn run(
        &self,
        ch: &Checked,
        limit: Duration,
        progress: &(dyn Fn(&Progress) + Sync),
        started: Instant,
    ) -> Result<Moved, MigrateError> {
        let vm = ch.vm.as_str();
        let plan = self.place_at_destination(ch)?;
        let xml = match plan.changed.get(vm) {
            Some(Some(xml)) => xml.clone(),
            _ => kvmroll_core::render_domain(&plan.after, vm)?,
        };
        let dest = MigrateTo {
            uri: ch.peer_uri.clone(),
            live: true,
            transport: ch.transport,
            migrate_uri: ch.migrate_uri.clone(),
            xml,
        };
        let failure = match self.drive(ch, &dest, limit, progress) {
            Driven::Done => None,
            Driven::Failed(e) => Some(Some(e)),
            Driven::TimedOut => Some(None),
        };
        let moved = |stale| Moved {
            vm: vm.to_owned(),
            from: ch.from.clone(),
            to: ch.to.clone(),
            live: true,
            took: started.elapsed(),
            stale,
        };
        match failure {
            None => Ok(moved(self.finish(vm, &plan))),
            Some(failure) => {
                self.after_failure(ch, failure, limit)?;
                Ok(moved(Vec::new()))
            }
        }
    }

    /// Writes the checked VM onto its destination, so that the
    /// destination's hook lets it in; [`MigrateError::Raced`] when another
    /// command moved or marked it since the check.
    fn place_at_destination(&self, ch: &Checked) -> Result<Plan, MigrateError> {
        let vm = ch.vm.as_str();
        let plan = self.db().update(&mut |c| {
            let now = c.vm(vm)?;
            if now.container.as_deref() != Some(ch.from.as_str()) || migrating_from(c, vm).is_some()
            {
                return Ok(Vec::new());
            }
            placing(c, vm, &ch.from, &ch.to)
        })?;
        if plan.after.vm(vm)?.container.as_deref() != Some(ch.to.as_str()) {
            return Err(MigrateError::Raced { vm: vm.to_owned() });
        }
        Ok(plan)
    }

    /// After libvirt's call succeeded: removes the mark and redefines the
    /// neighbours `plan` changed; returns the VMs left stale.
    fn finish(&self, vm: &str, plan: &Plan) -> Vec<String> {
        let done = self.db().update(&mut |c| {
            Ok(match migrating_from(c, vm) {
                Some(_) => vec![Change::RemoveAttr {
                    scope: Scope::Host(vm.to_owned()),
                    name: MIGRATING_FROM.to_owned(),
                }],
                None => Vec::new(),
            })
        });
        let mut stale = self.refresh_others(plan, vm);
        match done {
            // Nothing rendered reads the mark, but should a definition
            // change with it, libvirt gets it (the VM's own too).
            Ok(done) => stale.extend(self.refresh_others(&done, "")),
            Err(e) => {
                // The VM runs where the database says; only the mark
                // stays, which the next `vm define` removes.
                log::warn!(
                    "VM {vm}: moved, but its {MIGRATING_FROM} mark stays: {}",
                    error_chain(&e)
                );
                stale.push(vm.to_owned());
            }
        }
        stale
    }

    /// After libvirt's call failed (`Some`) or was aborted past `limit`
    /// (`None`): settles where the VM runs; `Ok` when it runs on the
    /// destination all the same.
    fn after_failure(
        &self,
        ch: &Checked,
        failure: Option<VirtError>,
        limit: Duration,
    ) -> Result<(), MigrateError> {
        let vm = ch.vm.as_str();
        // Where it runs now decides, not what was meant to happen.
        let settled = self.settle(vm, &ch.from, &ch.to, Duration::ZERO)?;
        if settled.on == ch.to {
            if let Some(e) = &failure {
                log::warn!(
                    "VM {vm}: libvirt reported a failure but the VM runs on {}: {}",
                    ch.to,
                    error_chain(e)
                );
            }
            return Ok(());
        }
        Err(match failure {
            Some(source) => MigrateError::Failed {
                vm: vm.to_owned(),
                to: ch.to.clone(),
                runs_on: settled.on,
                source: Box::new(source),
            },
            None => MigrateError::TimedOut {
                vm: vm.to_owned(),
                to: ch.to.clone(),
                runs_on: settled.on,
                limit,
            },
        })
    }

    /// libvirt's blocking call on a thread with its own connection; this
    /// thread reads the job's progress on another and aborts it on the
    /// source past `limit` (the VM keeps running there).
    fn drive(
        &self,
        ch: &Checked,
        dest: &MigrateTo,
        limit: Duration,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Driven {
        let vm = ch.vm.as_str();
        let (src, watch) = match (
            self.connector.connect(&ch.from_uri),
            self.connector.connect(&ch.from_uri),
        ) {
            (Ok(s), Ok(w)) => (s, w),
            (Err(e), _) | (_, Err(e)) => return Driven::Failed(e),
        };
        let began = Instant::now();
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel();
            scope.spawn(move || {
                // The receiver outlives the scope's threads.
                let _ = tx.send(src.migrate(vm, dest));
            });
            let mut aborted = false;
            loop {
                match rx.recv_timeout(POLL) {
                    Ok(Ok(())) => return Driven::Done,
                    Ok(Err(_)) if aborted => return Driven::TimedOut,
                    Ok(Err(e)) => return Driven::Failed(e),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // The thread ended without a word: it panicked, which
                    // the scope carries on to the caller.
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Driven::TimedOut,
                }
                if let Ok(Some((processed, total))) = watch.job_progress(vm) {
                    progress(&Progress {
                        vm: vm.to_owned(),
                        processed,
                        total,
                    });
                }
                if !aborted && began.elapsed() >= limit {
                    aborted = true;
                    if let Err(e) = watch.abort_job(vm) {
                        log::warn!(
                            "VM {vm}: cannot abort its migration past {} s: {}",
                            limit.as_secs(),
                            error_chain(&e)
                        );
                    }
                }
            }
        })
    }
}

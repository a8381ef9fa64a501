//! `stop`'s first step where the container's `kvm_guests_on_shutdown` is
//! `migrate`: its running VMs are live-migrated to other containers with
//! room, as `kvmroll host evacuate` does (kvmroll-evacuate), so that a
//! planned reboot keeps them running elsewhere. It needs the database (where
//! each VM may go) and the other containers; without the database it says
//! so and the stop saves as usual. The migrations take at most half of the
//! budget that the fallbacks leave, so that what did not move still has the
//! other half to be saved; the journal records each VM's outcome.

use super::{Service, Shared};
use crate::journal::{Journal, Phase, VmState};
use crate::known::OnShutdown;
use crate::notify::Notifier;
use kvmroll_evacuate::{Mover, Options, Outcome, Probe};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long each container has to say what runs on it or its free memory.
const ASK: Duration = Duration::from_secs(5);

/// What moves the VMs: the cluster's libvirts and the migration library.
pub struct Evacuation<'a> {
    pub probe: Arc<dyn Probe>,
    pub mover: &'a dyn Mover,
}

impl std::fmt::Debug for Evacuation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evacuation").finish_non_exhaustive()
    }
}

/// Moves the running VMs away where `kvm_guests_on_shutdown` says so;
/// the journal of the moves (each moved VM `migrated`, its note naming
/// where), or `None` when none was tried.
pub(super) fn evacuate_first(
    svc: &Service,
    evacuation: Option<&Evacuation>,
    interrupted: &AtomicBool,
    notifier: &Notifier,
    started: Instant,
) -> Option<Journal> {
    if svc.settings.on_shutdown != OnShutdown::Migrate {
        return None;
    }
    let Some(cluster) = svc.known.cluster() else {
        let why = match &svc.known.source {
            crate::known::Source::Definitions(why) => why.as_str(),
            crate::known::Source::Database(_) => "",
        };
        log::warn!(
            "kvm_guests_on_shutdown=migrate, but the database does not answer ({why}): saving instead"
        );
        return None;
    };
    // None: the caller said why it has no means to migrate.
    let ev = evacuation?;
    let usable = svc
        .settings
        .stop_budget
        .saturating_sub(svc.settings.shutdown_timeout);
    let opts = Options {
        parallel: kvmroll_evacuate::DEFAULT_PARALLEL,
        limit: None,
        deadline: Some(started + usable / 2),
        ask: ASK,
    };
    // systemd waits for the migrations' part of the budget at once: the
    // stop's own extensions begin with its saves.
    notifier.extend(usable / 2 + Duration::from_secs(5));
    let shared = Shared::new(Journal::new(&svc.host, Phase::Stopping), svc.journal_path());
    // "VM x: ...", the form whose VM the log's journal field carries.
    let said = |o: &Outcome| match o {
        Outcome::Moved { vm, to, .. } => {
            log::info!("VM {vm}: {}", o.what());
            shared.with(|j| {
                j.set(vm, VmState::Migrated, format!("moved to {to}"));
                if let Some(e) = j.vms.get_mut(vm) {
                    e.was_running = true;
                    e.autostart = svc.known.vms.get(vm).is_some_and(|v| v.autostart);
                }
            });
        }
        Outcome::NotMoved { vm, .. } => log::warn!("VM {vm}: {}", o.what()),
    };
    log::info!(
        "stop on {}: kvm_guests_on_shutdown=migrate: moving its running VMs to other containers, {} at once, for at most {:.0} s",
        svc.host,
        opts.parallel,
        (usable / 2).as_secs_f64()
    );
    match kvmroll_evacuate::evacuate(
        cluster,
        &svc.host,
        &ev.probe,
        ev.mover,
        &opts,
        interrupted,
        &said,
    ) {
        Ok(report) => {
            let moved = report.outcomes.len() - report.not_moved().count();
            log::info!(
                "stop on {}: {moved} of {} running VM(s) moved; saving the rest",
                svc.host,
                report.outcomes.len()
            );
        }
        Err(e) => log::warn!(
            "kvm_guests_on_shutdown=migrate: {}: saving instead",
            kvmroll_core::error_chain(&e)
        ),
    }
    Some(shared.into_journal())
}

//! `stop`, at host shutdown: the running `kvm_autostart` VMs are saved, a
//! few at once (`kvm_guests_parallel`), each within its time limit; every
//! other running domain is shut down meanwhile. A monitor enforces the
//! limits, draws progress and notices SIGTERM.

use super::save::{save_one, InFlight};
use super::shutdown::shut_down;
use super::{next_in, save_or_go_on, Placement, Service, ServiceError, Shared};
use crate::journal::{Journal, Phase, VmState};
use kvmroll_virt::{Connector, DomainState, Hypervisor};
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Who the stop saves and who it shuts down.
struct StopPlan {
    /// Running (or paused) and `kvm_autostart`, in libvirt's listing order.
    to_save: Vec<String>,
    /// Running and not to come back: this container's others, and domains
    /// that are not kvmroll's.
    to_stop: Vec<String>,
    autostart: BTreeSet<String>,
}

impl StopPlan {
    fn new(svc: &Service, hv: &dyn Hypervisor) -> Result<StopPlan, ServiceError> {
        let autostart = svc.autostart();
        let running = hv
            .list_domains()?
            .into_iter()
            .filter(|d| d.state != DomainState::ShutOff)
            .map(|d| d.name);
        let (to_save, to_stop) = running.partition(|n| autostart.contains(n));
        Ok(StopPlan {
            to_save,
            to_stop,
            autostart,
        })
    }

    /// The journal as the stop begins: each VM found running, planned.
    fn journal(&self, svc: &Service) -> Journal {
        let mut journal = Journal::new(&svc.host, Phase::Stopping);
        for name in self.to_save.iter().chain(&self.to_stop) {
            let save = self.autostart.contains(name);
            journal.set(
                name,
                VmState::Planned,
                if save { "save" } else { "shutdown" },
            );
            if let Some(e) = journal.vms.get_mut(name) {
                e.autostart = save;
                e.was_running = true;
            }
        }
        // Autostart VMs already off keep what the last run said of them (a
        // save image from an interrupted stop, say), but were not running in
        // this one: this stop answers only for those it found running.
        if let Ok(Some(old)) = Journal::load(&svc.journal_path()) {
            for (name, mut e) in old.vms {
                e.was_running = false;
                journal.vms.entry(name).or_insert(e);
            }
        }
        journal
    }
}

/// `stop`: saves the running `kvm_autostart` VMs, shuts the others down.
pub fn stop(
    svc: &Service,
    connector: &dyn Connector,
    interrupted: &AtomicBool,
) -> Result<Placement, ServiceError> {
    let hv = svc.connect(connector)?;
    let plan = StopPlan::new(svc, hv.as_ref())?;
    let journal = plan.journal(svc);
    save_or_go_on(&journal, &svc.journal_path());
    log::info!(
        "stop on {}: saving {} VM(s), {} at once; shutting down {} other(s)",
        svc.host,
        plan.to_save.len(),
        svc.settings.parallel.min(plan.to_save.len().max(1)),
        plan.to_stop.len()
    );
    let shared = Shared::new(journal, svc.journal_path());
    let queue = Mutex::new(plan.to_save.iter().cloned().collect::<VecDeque<_>>());
    let inflight = InFlight::default();
    let left = std::thread::scope(|s| {
        // Each worker says when it is done, so the stop ends when the last
        // save does, not at the monitor's next tick.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let workers: Vec<_> = (0..svc.settings.parallel.min(plan.to_save.len()))
            .map(|_| {
                let done = Done(done_tx.clone());
                let (shared, queue, inflight) = (&shared, &queue, &inflight);
                s.spawn(move || {
                    let _done = done;
                    save_all(svc, connector, shared, queue, inflight, interrupted);
                })
            })
            .collect();
        let others = s.spawn(|| shut_down_all(svc, connector, &shared, &plan.to_stop));
        drop(done_tx);
        monitor(svc, hv.as_ref(), &inflight, &done_rx, interrupted);
        for w in workers {
            let _ = w.join();
        }
        crate::progress::clear_line();
        let left: Vec<String> = queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for name in &left {
            let why = "stop was interrupted before its save began";
            shared.set(name, VmState::NotSaved, why);
        }
        let _ = others.join();
        left
    });
    if !left.is_empty() {
        log::warn!("not saved: {}", left.join(", "));
    }
    Ok(finish(svc, &shared))
}

/// One worker: saves VMs off the queue until it is empty or the stop is
/// interrupted, on a connection of its own.
fn save_all(
    svc: &Service,
    connector: &dyn Connector,
    shared: &Shared,
    queue: &Mutex<VecDeque<String>>,
    inflight: &InFlight,
    interrupted: &AtomicBool,
) {
    let Some(hv) = svc.worker_connection(connector) else {
        return;
    };
    while !interrupted.load(Ordering::SeqCst) {
        let Some(name) = next_in(queue) else { return };
        save_one(hv.as_ref(), svc, &name, shared, inflight);
    }
}

/// Shuts down every VM of `names` at once, each on a connection of its own.
fn shut_down_all(svc: &Service, connector: &dyn Connector, shared: &Shared, names: &[String]) {
    std::thread::scope(|s| {
        let waits: Vec<_> = names
            .iter()
            .map(|name| {
                shared.set(name, VmState::ShuttingDown, "");
                s.spawn(move || {
                    let Ok(hv) = svc.connect(connector) else {
                        return;
                    };
                    let state = shut_down(hv.as_ref(), name, svc.limits(name));
                    log::info!("VM {name}: {state}");
                    shared.set(name, state, "");
                })
            })
            .collect();
        for w in waits {
            let _ = w.join();
        }
    });
}

/// The monitor, until the last worker ends: enforces each save's time
/// limit, draws progress, notices SIGTERM (the workers then take no new
/// VM; saves in flight go on).
fn monitor(
    svc: &Service,
    hv: &dyn Hypervisor,
    inflight: &InFlight,
    done: &Receiver<()>,
    interrupted: &AtomicBool,
) {
    let mut told = false;
    // A tick, or a worker ended; the channel closes when the last one has.
    while !matches!(
        done.recv_timeout(Duration::from_millis(200)),
        Err(RecvTimeoutError::Disconnected)
    ) {
        if interrupted.load(Ordering::SeqCst) && !told {
            told = true;
            log::warn!("interrupted: letting the saves in flight finish, starting no more");
        }
        let now = Instant::now();
        let flights: Vec<(String, Instant)> = inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, t)| (n.clone(), *t))
            .collect();
        let mut line = Vec::new();
        for (name, deadline) in &flights {
            if now >= *deadline {
                abort_late_save(svc, hv, inflight, name, now);
            }
            if crate::progress::on_terminal() {
                match hv.job_progress(name) {
                    Ok(Some((done, total))) if total > 0 => {
                        line.push(format!("{name} {}%", done * 100 / total))
                    }
                    _ => line.push(format!("{name} ...")),
                }
            }
        }
        if !line.is_empty() {
            crate::progress::draw(&format!("saving: {}", line.join("  ")));
        }
    }
}

/// Aborts a save that ran past its limit; its worker then falls back to a
/// shutdown.
fn abort_late_save(
    svc: &Service,
    hv: &dyn Hypervisor,
    inflight: &InFlight,
    name: &str,
    now: Instant,
) {
    log::warn!(
        "VM {name}: save ran past {}s: aborting it",
        svc.limits(name).save_timeout.as_secs()
    );
    if let Err(e) = hv.abort_job(name) {
        log::warn!("VM {name}: cannot abort the save: {}", crate::chain(&e));
    }
    // Asked once; again in 10 s should the save still run, not at every
    // tick until it returns.
    if let Some(t) = inflight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(name)
    {
        *t = now + Duration::from_secs(10);
    }
}

/// The journal's last word on the stop, and the VMs it found running that
/// are neither saved nor off.
fn finish(svc: &Service, shared: &Shared) -> Placement {
    let mut missed = Vec::new();
    shared.with(|j| {
        j.phase = Phase::Stopped;
        for (name, e) in &j.vms {
            let off = matches!(
                e.state,
                VmState::Saved | VmState::ShutDown | VmState::Destroyed
            );
            if e.was_running && !off {
                missed.push(format!("{name} ({})", e.state));
            }
        }
    });
    if missed.is_empty() {
        log::info!("stop on {}: done", svc.host);
    }
    Placement::of(missed)
}

/// Sends on drop: a worker's "done", even when it ends by a panic.
struct Done(Sender<()>);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

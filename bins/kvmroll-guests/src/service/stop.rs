//! `stop`, at host shutdown: the running `kvm_autostart` VMs are saved, a
//! few at once (`kvm_guests_parallel`), each within its share of the stop's
//! budget (`budget.rs`); every other running domain, and every VM whose
//! save failed or has no room in the budget, is shut down meanwhile. A
//! monitor enforces the limits, draws progress, tells systemd to wait
//! while the stop progresses and notices SIGTERM.

use super::budget::StopBudget;
use super::evacuate::{evacuate_first, Evacuation};
use super::save::{save_one, secs, InFlight};
use super::shutdown::shut_down;
use super::{next_in, save_or_go_on, Done, Placement, Service, ServiceError, Shared};
use crate::journal::{Journal, Phase, VmState};
use crate::notify::{Extender, Notifier};
use kvmroll_virt::{Connector, DomainState, Hypervisor};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

    /// The stop's budget for the VMs to save, from `started`; what
    /// migrations before took (until `saves_from`) is spent.
    fn budget(&self, svc: &Service, started: Instant, saves_from: Instant) -> StopBudget {
        StopBudget::plan(
            saves_from,
            svc.settings
                .stop_budget
                .saturating_sub(saves_from.duration_since(started)),
            reserve(svc, &self.to_save),
            svc.parallel,
            self.to_save.len(),
            svc.settings.save_timeout,
        )
    }

    /// The journal as the saves begin: the migrations' outcomes (`moved`),
    /// and each VM found running, planned (with its share of the budget,
    /// or its fallback).
    fn journal(&self, svc: &Service, budget: &StopBudget, moved: Option<Journal>) -> Journal {
        let mut journal = moved.unwrap_or_else(|| Journal::new(&svc.host, Phase::Stopping));
        journal.disk_bytes_per_sec = svc.disk_rate;
        for (i, name) in self.to_save.iter().chain(&self.to_stop).enumerate() {
            let save = self.autostart.contains(name);
            let note = if !save {
                "shutdown".to_string()
            } else if i < budget.savable {
                let own = svc.limits(name).save_timeout;
                format!("save within {}", secs(budget.share.min(own)))
            } else {
                "shutdown: no room for its save in the stop budget".to_string()
            };
            journal.set(name, VmState::Planned, note);
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

/// A VM handed to its fallback (a guest shutdown, then a destroy where so
/// configured), with what the journal says of why.
struct Fallback {
    name: String,
    why: String,
}

/// The time kept at the end of the budget for the fallbacks: the longest
/// shutdown limit of the VMs to save.
fn reserve(svc: &Service, to_save: &[String]) -> Duration {
    to_save
        .iter()
        .map(|n| svc.limits(n).shutdown_timeout)
        .max()
        .unwrap_or(svc.settings.shutdown_timeout)
}

/// `stop`: where `kvm_guests_on_shutdown` is `migrate`, moves the running
/// VMs to other containers first (`evacuation`); saves the running
/// `kvm_autostart` VMs within what is left of the stop's budget, shuts the
/// others down, and tells systemd (`notifier`) to wait while it
/// progresses, never past the budget.
pub fn stop(
    svc: &Service,
    connector: &dyn Connector,
    interrupted: &AtomicBool,
    notifier: &Notifier,
    evacuation: Option<&Evacuation>,
) -> Result<Placement, ServiceError> {
    let started = Instant::now();
    let hv = svc.connect(connector)?;
    let moved = evacuate_first(svc, evacuation, interrupted, notifier, started);
    let saves_from = if moved.is_some() {
        Instant::now()
    } else {
        started
    };
    let plan = StopPlan::new(svc, hv.as_ref())?;
    let budget = plan.budget(svc, started, saves_from);
    let (to_save, no_room) = plan.to_save.split_at(budget.savable);
    let journal = plan.journal(svc, &budget, moved);
    save_or_go_on(&journal, &svc.journal_path());
    log_plan(svc, &budget, to_save, no_room, plan.to_stop.len());
    let shared = Shared::new(journal, svc.journal_path());
    let queue = Mutex::new(to_save.iter().cloned().collect::<VecDeque<_>>());
    let inflight = InFlight::default();
    let busy = AtomicUsize::new(0);
    let left = std::thread::scope(|s| {
        // Each worker says when it is done, so the stop ends when the last
        // save or fallback does, not at the monitor's next tick.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (fall_tx, fall_rx) = std::sync::mpsc::channel::<Fallback>();
        hand_over(&fall_tx, &plan.to_stop, no_room, &budget);
        let work = Work {
            svc,
            connector,
            shared: &shared,
            inflight: &inflight,
        };
        let workers: Vec<_> = (0..svc.parallel.min(to_save.len()))
            .map(|_| {
                let done = Done(done_tx.clone());
                let fall = fall_tx.clone();
                let (queue, budget) = (&queue, &budget);
                s.spawn(move || {
                    let _done = done;
                    work.save_all(queue, budget, &fall, interrupted);
                })
            })
            .collect();
        let fallbacks = {
            let done = Done(done_tx.clone());
            let (shared, busy) = (&shared, &busy);
            s.spawn(move || {
                let _done = done;
                fall_back_all(svc, connector, shared, fall_rx, busy);
            })
        };
        drop((done_tx, fall_tx));
        let mut extender =
            Extender::new(notifier, notify_every(&budget), notify_every(&budget) * 6)
                .until(budget.end());
        let watch = Watch {
            inflight: &inflight,
            busy: &busy,
            shared: &shared,
        };
        monitor(hv.as_ref(), &watch, &done_rx, interrupted, &mut extender);
        for w in workers {
            let _ = w.join();
        }
        crate::progress::clear_line();
        let left = not_begun(&queue, &shared);
        let _ = fallbacks.join();
        left
    });
    if !left.is_empty() {
        log::warn!("not saved: {}", left.join(", "));
    }
    Ok(finish(svc, &shared))
}

/// The stop's plan, in the log: the saves, their budget, the others.
fn log_plan(
    svc: &Service,
    budget: &StopBudget,
    to_save: &[String],
    no_room: &[String],
    others: usize,
) {
    log::info!(
        "stop on {}: saving {} VM(s), {} at once, in {} round(s) of at most {} each, within a budget of {} ({} kept for fallbacks); shutting down {} other(s)",
        svc.host,
        to_save.len(),
        svc.parallel.min(to_save.len().max(1)),
        budget.rounds,
        secs(budget.share),
        secs(budget.budget),
        secs(budget.reserve),
        others
    );
    if !no_room.is_empty() {
        log::warn!(
            "no room in the stop budget of {} to save {} VM(s): {}; shutting them down now",
            secs(budget.budget),
            no_room.len(),
            no_room.join(", ")
        );
    }
}

/// Hands the fallbacks known from the start to the shutdowns (`fall`):
/// the others found running, then the VMs with no room in the budget.
fn hand_over(fall: &Sender<Fallback>, others: &[String], no_room: &[String], budget: &StopBudget) {
    let others = others.iter().map(|n| (n, String::new()));
    let why = format!(
        "no room for its save in the stop budget of {}",
        secs(budget.budget)
    );
    let no_room = no_room.iter().map(|n| (n, why.clone()));
    for (name, why) in others.chain(no_room) {
        let _ = fall.send(Fallback {
            name: name.clone(),
            why,
        });
    }
}

/// The VMs still queued once the savers are gone (the stop was
/// interrupted), journaled as not saved.
fn not_begun(queue: &Mutex<VecDeque<String>>, shared: &Shared) -> Vec<String> {
    let left: Vec<String> = queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for name in &left {
        let why = "stop was interrupted before its save began";
        shared.set(name, VmState::NotSaved, why);
    }
    left
}

/// How often systemd hears that the stop goes on: often enough that a
/// short budget is followed closely, at most every 5 s.
fn notify_every(budget: &StopBudget) -> Duration {
    (budget.budget / 40).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// What a save worker works with.
#[derive(Clone, Copy)]
struct Work<'a> {
    svc: &'a Service,
    connector: &'a dyn Connector,
    shared: &'a Shared,
    inflight: &'a InFlight,
}

impl Work<'_> {
    /// Saves VMs off the queue until it is empty or the stop is
    /// interrupted, on a connection of its own; a VM whose save cannot fit
    /// in what is left of the budget, or whose save failed, goes to its
    /// fallback (`fall`), which runs beside the next saves.
    fn save_all(
        &self,
        queue: &Mutex<VecDeque<String>>,
        budget: &StopBudget,
        fall: &Sender<Fallback>,
        interrupted: &AtomicBool,
    ) {
        let svc = self.svc;
        let Some(hv) = svc.worker_connection(self.connector) else {
            return;
        };
        while !interrupted.load(Ordering::SeqCst) {
            let Some(name) = next_in(queue) else { return };
            let own = svc.limits(&name).save_timeout;
            let why = match budget.limit_at(Instant::now(), own) {
                Some(limit) => {
                    match save_one(hv.as_ref(), svc, &name, limit, self.shared, self.inflight) {
                        Ok(()) => continue,
                        Err(why) => format!("after a failed save: {why}"),
                    }
                }
                None => {
                    log::warn!(
                        "VM {name}: no time left in the stop budget for its save; shutting it down"
                    );
                    "no time left for its save in the stop budget".to_string()
                }
            };
            let _ = fall.send(Fallback { name, why });
        }
    }
}

/// Shuts down every VM handed over, each at once on a thread and a
/// connection of its own, until the last sender is gone and the last
/// shutdown is over.
fn fall_back_all(
    svc: &Service,
    connector: &dyn Connector,
    shared: &Shared,
    handed: Receiver<Fallback>,
    busy: &AtomicUsize,
) {
    std::thread::scope(|s| {
        for Fallback { name, why } in handed {
            busy.fetch_add(1, Ordering::SeqCst);
            shared.set(&name, VmState::ShuttingDown, why.clone());
            s.spawn(move || {
                let state = match svc.connect(connector) {
                    Ok(hv) => shut_down(hv.as_ref(), &name, svc.limits(&name)),
                    Err(e) => {
                        log::error!(
                            "VM {name}: cannot connect to shut it down: {}",
                            kvmroll_core::error_chain(&e)
                        );
                        VmState::LeftRunning
                    }
                };
                if why.is_empty() {
                    log::info!("VM {name}: {state}");
                } else {
                    log::info!("VM {name}: {state} ({why})");
                }
                shared.set(&name, state, why);
                busy.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
}

/// What the monitor watches for progress.
struct Watch<'a> {
    inflight: &'a InFlight,
    /// Fallbacks under way.
    busy: &'a AtomicUsize,
    shared: &'a Shared,
}

/// The monitor, until the last worker ends: enforces each save's time
/// limit, draws progress, notices SIGTERM (the workers then take no new
/// VM; saves in flight go on).
fn monitor(
    hv: &dyn Hypervisor,
    watch: &Watch,
    done: &Receiver<()>,
    interrupted: &AtomicBool,
    extender: &mut Extender,
) {
    let inflight = watch.inflight;
    let mut told = false;
    let mut steps = watch.shared.steps();
    let tick = Duration::from_millis(200).min(extender.every());
    extender.tick(Instant::now(), true);
    // A tick, or a worker ended; the channel closes when the last one has.
    while !matches!(done.recv_timeout(tick), Err(RecvTimeoutError::Disconnected)) {
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
                abort_late_save(hv, inflight, name, now);
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
        // Progress: a step journaled since the last tick, a save still
        // within its limit, a fallback within its own.
        let now_steps = watch.shared.steps();
        let progressed = now_steps != steps
            || flights.iter().any(|(_, deadline)| now < *deadline)
            || watch.busy.load(Ordering::SeqCst) > 0;
        steps = now_steps;
        extender.tick(Instant::now(), progressed);
    }
}

/// Aborts a save that ran past its limit; its worker then falls back to a
/// shutdown.
fn abort_late_save(hv: &dyn Hypervisor, inflight: &InFlight, name: &str, now: Instant) {
    log::warn!("VM {name}: save ran past its share of the stop budget: aborting it");
    if let Err(e) = hv.abort_job(name) {
        log::warn!(
            "VM {name}: cannot abort the save: {}",
            kvmroll_core::error_chain(&e)
        );
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
                VmState::Saved | VmState::ShutDown | VmState::Destroyed | VmState::Migrated
            );
            if e.was_running && !off {
                missed.push(format!("{name} ({})", e.state));
            }
        }
    });
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    shared.with(|j| {
        for e in j.vms.values().filter(|e| e.was_running) {
            *counts.entry(e.state.as_str()).or_default() += 1;
        }
    });
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    log::info!(
        "stop on {}: {}{}",
        svc.host,
        if missed.is_empty() { "done" } else { "ended" },
        if counts.is_empty() {
            String::new()
        } else {
            format!(" ({})", counts.join(", "))
        }
    );
    Placement::of(missed)
}

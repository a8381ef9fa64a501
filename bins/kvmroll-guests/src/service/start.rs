//! `start`, at boot: this container's `kvm_autostart` VMs come back,
//! restored from their saved images where those are usable (a bad one is
//! moved aside, kept, and the VM cold-booted), cold-booted otherwise; a few
//! at once, or one at a time `kvm_guests_start_delay` apart.

use super::define::define_from_database;
use super::save::{save_in_flight, wait_for_save};
use super::{next_in, save_or_go_on, Done, Placement, Service, ServiceError, Shared};
use crate::image::{self, Verdict};
use crate::journal::{Journal, Phase, VmState};
use crate::notify::{Extender, Notifier};
use kvmroll_virt::{Connector, DomainInfo, DomainState, Hypervisor};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A VM's journal state and note, as one start leaves it.
type Reached = (VmState, String);

/// How often, at most, systemd hears that the start goes on, and how much
/// longer it is asked to wait each time: the unit's `TimeoutStartSec` is
/// only the safety net for a start that stops making progress.
const NOTIFY_EVERY: Duration = Duration::from_secs(5);
const NOTIFY_STEP: Duration = Duration::from_secs(120);

/// `start`: brings this container's `kvm_autostart` VMs back, telling
/// systemd (`notifier`) to wait while VMs come back.
pub fn start(
    svc: &Service,
    connector: &dyn Connector,
    notifier: &Notifier,
) -> Result<Placement, ServiceError> {
    let hv = svc.connect(connector)?;
    let old = Journal::load(&svc.journal_path()).unwrap_or_else(|e| {
        log::warn!("{}; starting without it", kvmroll_core::error_chain(&e));
        None
    });
    let (journal, wanted) = plan(svc, hv.as_ref(), old.as_ref());
    drop(hv);
    log_plan(svc, &wanted);
    let recorded = recorded_sizes(old);
    let shared = Shared::new(journal, svc.journal_path());
    bring_back(svc, connector, notifier, &shared, &wanted, &recorded);
    Ok(finish(svc, &shared, &wanted))
}

/// The journal as the start begins, written (what the last run said of
/// each VM, the wanted ones planned), and the VMs wanted back; the
/// storage mounts and the definitions brought up to date first.
fn plan(svc: &Service, hv: &dyn Hypervisor, old: Option<&Journal>) -> (Journal, Vec<String>) {
    let mut journal = Journal::new(&svc.host, Phase::Starting);
    if let Some(old) = old {
        journal.vms = old.vms.clone();
        journal.disk_bytes_per_sec = old.disk_bytes_per_sec;
    }
    if let Some(cluster) = svc.known.cluster() {
        crate::mounts::refresh(&svc.root, cluster, &svc.host);
        define_from_database(hv, cluster, &svc.host);
    }
    let wanted: Vec<String> = svc.autostart().into_iter().collect();
    for name in &wanted {
        journal.set(name, VmState::Planned, "start");
        if let Some(e) = journal.vms.get_mut(name) {
            e.autostart = true;
        }
    }
    save_or_go_on(&journal, &svc.journal_path());
    (journal, wanted)
}

/// The start's plan, in the log: how many VMs, and how they are paced.
fn log_plan(svc: &Service, wanted: &[String]) {
    log::info!(
        "start on {}: bringing back {} VM(s){}",
        svc.host,
        wanted.len(),
        if svc.settings.start_delay.is_zero() {
            format!(", {} at once", svc.parallel.min(wanted.len().max(1)))
        } else {
            format!(", {} ms apart", svc.settings.start_delay.as_millis())
        }
    );
}

/// The image size each VM's last save left, for the VMs the old journal
/// has as saved.
fn recorded_sizes(old: Option<Journal>) -> BTreeMap<String, Option<u64>> {
    // The size a save left is only a check on the image of that save: one
    // written since by someone else (virsh managedsave) must not be judged
    // by an older size.
    old.map(|j| {
        j.vms
            .into_iter()
            .map(|(n, e)| (n, e.image_size.filter(|_| e.state == VmState::Saved)))
            .collect()
    })
    .unwrap_or_default()
}

/// Brings the `wanted` VMs back on workers of their own, the journal
/// written behind them, systemd told to wait while they make progress.
fn bring_back(
    svc: &Service,
    connector: &dyn Connector,
    notifier: &Notifier,
    shared: &Shared,
    wanted: &[String],
    recorded: &BTreeMap<String, Option<u64>>,
) {
    let queue = Mutex::new(wanted.iter().cloned().collect::<VecDeque<_>>());
    // With a delay, one at a time, spaced; without, a few at once.
    let width = if svc.settings.start_delay.is_zero() {
        svc.parallel.min(wanted.len())
    } else {
        1
    };
    let mut extender = Extender::new(notifier, NOTIFY_EVERY, NOTIFY_STEP);
    extender.tick(Instant::now(), true);
    std::thread::scope(|s| {
        // The workers journal in memory and nudge a writer, which writes
        // the latest journal when it can: no start waits for another VM's
        // journal write (each one synced), and a burst of steps is one
        // write. finish() writes the last word.
        let (nudge, nudges) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let writer = s.spawn(|| write_on_nudge(shared, nudges));
        let workers: Vec<_> = (0..width)
            .map(|_| {
                let queue = &queue;
                let (nudge, done) = (nudge.clone(), Done(done_tx.clone()));
                s.spawn(move || {
                    let _done = done;
                    start_all(svc, connector, shared, queue, recorded, &nudge);
                })
            })
            .collect();
        drop((nudge, done_tx));
        let mut steps = shared.steps();
        // A tick, or a worker ended; closed when the last one has.
        while !matches!(
            done_rx.recv_timeout(Duration::from_millis(500)),
            Err(RecvTimeoutError::Disconnected)
        ) {
            let now_steps = shared.steps();
            extender.tick(Instant::now(), now_steps != steps);
            steps = now_steps;
        }
        for w in workers {
            let _ = w.join();
        }
        let _ = writer.join();
    });
}

/// Writes the journal each time a worker nudges, a burst of nudges once,
/// until the last worker is gone.
fn write_on_nudge(shared: &Shared, nudges: Receiver<()>) {
    while nudges.recv().is_ok() {
        while nudges.try_recv().is_ok() {}
        shared.write();
    }
}

/// One worker: brings back VMs off the queue, on a connection of its own.
fn start_all(
    svc: &Service,
    connector: &dyn Connector,
    shared: &Shared,
    queue: &Mutex<VecDeque<String>>,
    recorded: &BTreeMap<String, Option<u64>>,
    nudge: &Sender<()>,
) {
    let Some(hv) = svc.worker_connection(connector) else {
        return;
    };
    let mut first = true;
    while let Some(name) = next_in(queue) {
        if !first && !svc.settings.start_delay.is_zero() {
            std::thread::sleep(svc.settings.start_delay);
        }
        first = false;
        let recorded = recorded.get(&name).copied().flatten();
        let (state, note) = start_one(hv.as_ref(), svc, &name, recorded, shared);
        shared.remember(&name, state, note);
        let _ = nudge.send(());
    }
}

/// The journal's last word on the start, and the wanted VMs not back.
fn finish(svc: &Service, shared: &Shared, wanted: &[String]) -> Placement {
    let mut missed = Vec::new();
    shared.with(|j| {
        j.phase = Phase::Started;
        for name in wanted {
            if let Some(e) = j.vms.get(name) {
                let back = matches!(
                    e.state,
                    VmState::Restored
                        | VmState::Booted
                        | VmState::Quarantined
                        | VmState::AlreadyRunning
                );
                if !back {
                    missed.push(format!("{name} ({})", e.state));
                }
            }
        }
    });
    if missed.is_empty() {
        log::info!("start on {}: done", svc.host);
    }
    Placement::of(missed)
}

/// Brings one VM back; returns its journal state and note.
fn start_one(
    hv: &dyn Hypervisor,
    svc: &Service,
    name: &str,
    recorded: Option<u64>,
    shared: &Shared,
) -> Reached {
    let info = match defined(hv, svc, name).and_then(|i| after_any_save(hv, svc, name, i)) {
        Ok(info) => info,
        Err(reached) => return reached,
    };
    if info.state != DomainState::ShutOff {
        // Paused by someone (not by a save, waited for above) counts as
        // running: it is not this service's to resume.
        let how = if info.state == DomainState::Paused {
            "already running (paused)"
        } else {
            "already running"
        };
        log::info!("VM {name}: {how}");
        return (VmState::AlreadyRunning, String::new());
    }
    let image = image::path(&svc.root, name);
    if info.has_managed_save || image.exists() {
        return restore(hv, svc, name, &image, recorded, shared);
    }
    match hv.start(name) {
        Ok(()) => {
            log::info!("VM {name}: cold-booted (no saved image)");
            (VmState::Booted, String::new())
        }
        Err(e) => {
            log::error!(
                "VM {name}: cannot start it: {}",
                kvmroll_core::error_chain(&e)
            );
            (VmState::Failed, kvmroll_core::error_chain(&e))
        }
    }
}

/// The VM as libvirt has it; one libvirt lacks (a reinstalled container)
/// is defined from the database, where it answers.
fn defined(hv: &dyn Hypervisor, svc: &Service, name: &str) -> Result<DomainInfo, Reached> {
    let failed = |why: String| (VmState::Failed, why);
    match hv.domain(name) {
        Ok(Some(d)) => return Ok(d),
        Ok(None) => {}
        Err(e) => return Err(failed(kvmroll_core::error_chain(&e))),
    }
    let rendered = match svc.known.cluster() {
        Some(c) => kvmroll_core::render_domain(c, name).map_err(|e| kvmroll_core::error_chain(&e)),
        None => Err("not defined in libvirt, and the database does not answer".into()),
    };
    let xml = rendered.map_err(|why| {
        log::error!("VM {name}: cannot define it: {why}");
        failed(why)
    })?;
    if let Err(e) = hv.define(&xml) {
        log::error!(
            "VM {name}: not defined in libvirt and cannot be: {}",
            kvmroll_core::error_chain(&e)
        );
        return Err(failed(kvmroll_core::error_chain(&e)));
    }
    log::info!("VM {name}: defined from the database");
    match hv.domain(name) {
        Ok(Some(d)) => Ok(d),
        _ => Err(failed("vanished after its definition".into())),
    }
}

/// A save still running in libvirtd (the stop that began it was cut off):
/// waits for it to end, and returns the VM as it left it.
fn after_any_save(
    hv: &dyn Hypervisor,
    svc: &Service,
    name: &str,
    info: DomainInfo,
) -> Result<DomainInfo, Reached> {
    // A shut-off domain has no save under way (libvirt saves only a
    // running or paused one): no job query for it, the common case at boot.
    if info.state == DomainState::ShutOff && !info.saving {
        return Ok(info);
    }
    if !info.saving && !save_in_flight(hv, name) {
        return Ok(info);
    }
    log::info!("VM {name}: a save (an interrupted stop's) is still running; waiting for it");
    wait_for_save(hv, name, svc.limits(name).save_timeout);
    match hv.domain(name) {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err((VmState::Failed, "vanished while its job ran".into())),
        Err(e) => Err((VmState::Failed, kvmroll_core::error_chain(&e))),
    }
}

/// Restores a VM from its saved image if the image is usable; otherwise,
/// or when the restore fails, quarantines the image and cold-boots.
fn restore(
    hv: &dyn Hypervisor,
    svc: &Service,
    name: &str,
    image: &Path,
    recorded: Option<u64>,
    shared: &Shared,
) -> Reached {
    let t = Instant::now();
    if let Verdict::Unusable { why } = image::inspect(image, recorded) {
        return quarantine_and_boot(hv, svc, name, image, &why);
    }
    shared.remember(name, VmState::Restoring, "");
    match hv.start(name) {
        Ok(()) => {
            log::info!(
                "VM {name}: restored from its saved image in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            let took = format!("{:.1}s", t.elapsed().as_secs_f64());
            (VmState::Restored, took)
        }
        Err(e) => {
            let why = kvmroll_core::error_chain(&e);
            log::warn!("VM {name}: restore failed ({why})");
            quarantine_and_boot(hv, svc, name, image, &why)
        }
    }
}

fn quarantine_and_boot(
    hv: &dyn Hypervisor,
    svc: &Service,
    name: &str,
    image: &Path,
    why: &str,
) -> Reached {
    let moved = if image.exists() {
        match image::quarantine(image, &svc.quarantine_dir(), name) {
            Ok(dest) => format!("moved to {}", dest.display()),
            Err(e) => {
                log::error!(
                    "VM {name}: its saved image is unusable ({why}) and cannot be moved aside: {e}"
                );
                return (VmState::Failed, format!("unusable image not moved: {e}"));
            }
        }
    } else {
        "gone".to_string()
    };
    log::warn!("VM {name}: saved image unusable ({why}); {moved}; cold-booting it");
    match hv.start_force_boot(name) {
        Ok(()) => (
            VmState::Quarantined,
            format!("{why}; image {moved}; cold-booted"),
        ),
        Err(e) => {
            log::error!(
                "VM {name}: cannot cold-boot it: {}",
                kvmroll_core::error_chain(&e)
            );
            (VmState::Failed, kvmroll_core::error_chain(&e))
        }
    }
}

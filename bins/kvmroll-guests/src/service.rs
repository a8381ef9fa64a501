//! `stop` and `start`: the libvirt-guests job done for a cluster.
//!
//! Debian's libvirt-guests saves one guest after another and knows nothing of
//! which VMs should come back; here the `kvm_autostart` VMs of this container
//! are managed-saved several at once, each within a time limit with a
//! fallback, the others are shut down, and a journal records every step.

use crate::image::{self, Verdict};
use crate::journal::{Journal, Phase};
use crate::known::{Known, Settings};
use kvmroll_core::metadata::Metadata;
use kvmroll_virt::{Connector, DomainState, Hypervisor, Libvirt};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every VM is where it should be.
    Done,
    /// Some VMs are not (not saved, left running, failed to start).
    Partial(Vec<String>),
}

/// Why a run could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] kvmroll_core::StoreError),
    #[error(transparent)]
    Config(#[from] kvmroll_core::conf::ConfigError),
    #[error(transparent)]
    Virt(#[from] kvmroll_virt::VirtError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("host {0:?} is not in the kvmroll database (give --host NAME)")]
    UnknownHost(String),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Service {
    pub host: String,
    pub uri: String,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    /// This container's VMs, from the database or from libvirt.
    pub known: Known,
    /// The run's own settings ([`Known::settings`]).
    pub settings: Settings,
}

impl Service {
    pub fn journal_path(&self) -> PathBuf {
        self.state_dir.join("journal.json")
    }

    fn quarantine_dir(&self) -> PathBuf {
        self.state_dir.join("quarantine")
    }

    pub fn connect(&self) -> Result<Box<dyn Hypervisor>, ServiceError> {
        Ok(Libvirt.connect(&self.uri)?)
    }

    /// This container's VMs whose `kvm_autostart` is true.
    fn autostart(&self) -> BTreeSet<String> {
        self.known.autostart()
    }

    /// A VM's save and shutdown limits.
    fn limits(&self, name: &str) -> &Settings {
        self.known.limits(name)
    }
}

/// The journal, shared by the workers and written at every step.
struct Shared {
    journal: Mutex<Journal>,
    path: PathBuf,
}

impl Shared {
    fn set(&self, vm: &str, state: &str, note: impl Into<String>) {
        self.with(|j| j.set(vm, state, note));
    }

    fn with(&self, f: impl FnOnce(&mut Journal)) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut j);
        if let Err(e) = j.save(&self.path) {
            log::error!("{}", crate::chain(&e));
        }
    }
}

/// Whether the VM may still run: only libvirt saying it is off (or gone)
/// counts as off; a failed query does not.
/// Writes the journal; a journal that cannot be written (a full or
/// read-only state folder) is said, and the VMs are still saved or started:
/// at a host's shutdown or boot that matters more.
fn save_or_go_on(journal: &Journal, path: &std::path::Path) {
    if let Err(e) = journal.save(path) {
        log::error!("{}; going on without it", crate::chain(&e));
    }
}

fn running(hv: &dyn Hypervisor, name: &str) -> bool {
    match hv.domain(name) {
        Ok(Some(d)) => d.state != DomainState::ShutOff,
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Asks a VM to shut down and waits; at the limit destroys it only where so
/// configured. Returns the journal state reached.
fn shut_down(hv: &dyn Hypervisor, name: &str, s: &Settings) -> &'static str {
    if let Err(e) = hv.shutdown(name) {
        if !running(hv, name) {
            return "shut-down";
        }
        log::warn!("VM {name}: shutdown request failed: {}", crate::chain(&e));
    }
    let deadline = Instant::now() + s.shutdown_timeout;
    while Instant::now() < deadline {
        if !running(hv, name) {
            return "shut-down";
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !running(hv, name) {
        return "shut-down";
    }
    if s.destroy_on_timeout {
        match hv.destroy(name) {
            Ok(()) => {
                log::warn!(
                    "VM {name}: did not shut down within {}s: destroyed",
                    s.shutdown_timeout.as_secs()
                );
                "destroyed"
            }
            Err(e) => {
                log::error!("VM {name}: cannot destroy it: {}", crate::chain(&e));
                "left-running"
            }
        }
    } else {
        log::warn!(
            "VM {name}: did not shut down within {}s; left running (kvm_guests_on_timeout=destroy would destroy it)",
            s.shutdown_timeout.as_secs()
        );
        "left-running"
    }
}

/// `stop`: saves the running `kvm_autostart` VMs, shuts the others down.
pub fn stop(svc: &Service, interrupted: &Arc<AtomicBool>) -> Result<Outcome, ServiceError> {
    let hv = svc.connect()?;
    let autostart = svc.autostart();
    let domains = hv.list_domains()?;
    let running: Vec<String> = domains
        .iter()
        .filter(|d| d.state != DomainState::ShutOff)
        .map(|d| d.name.clone())
        .collect();
    let (to_save, to_stop): (Vec<String>, Vec<String>) =
        running.iter().cloned().partition(|n| autostart.contains(n));
    let mut journal = Journal::new(&svc.host, Phase::Stopping);
    for name in &running {
        journal.set(
            name,
            "planned",
            if autostart.contains(name) {
                "save"
            } else {
                "shutdown"
            },
        );
        if let Some(e) = journal.vms.get_mut(name) {
            e.autostart = autostart.contains(name);
            e.was_running = true;
        }
    }
    // Autostart VMs already off keep what the last run said of them (a save
    // image from an interrupted stop, say), but were not running in this
    // one: this stop answers only for those it found running.
    if let Ok(Some(old)) = Journal::load(&svc.journal_path()) {
        for (name, mut e) in old.vms {
            e.was_running = false;
            journal.vms.entry(name).or_insert(e);
        }
    }
    save_or_go_on(&journal, &svc.journal_path());
    log::info!(
        "stop on {}: saving {} VM(s), {} at once; shutting down {} other(s)",
        svc.host,
        to_save.len(),
        svc.settings.parallel.min(to_save.len().max(1)),
        to_stop.len()
    );
    let shared = Arc::new(Shared {
        journal: Mutex::new(journal),
        path: svc.journal_path(),
    });
    let queue = Arc::new(Mutex::new(to_save.iter().cloned().collect::<VecDeque<_>>()));
    let inflight: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let mut workers = Vec::new();
    // Each worker says when it is done, so the stop ends when the last save
    // does, not at the monitor's next tick.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    for _ in 0..svc.settings.parallel.min(to_save.len()) {
        let (svc, shared, queue, inflight, interrupted) = (
            svc.clone(),
            shared.clone(),
            queue.clone(),
            inflight.clone(),
            interrupted.clone(),
        );
        let done = Done(done_tx.clone());
        workers.push(std::thread::spawn(move || {
            let _done = done;
            let hv = match svc.connect() {
                Ok(h) => h,
                Err(e) => {
                    log::error!("cannot connect to {}: {}", svc.uri, crate::chain(&e));
                    return;
                }
            };
            loop {
                if interrupted.load(Ordering::SeqCst) {
                    return;
                }
                let Some(name) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
                    return;
                };
                save_one(hv.as_ref(), &svc, &name, &shared, &inflight);
            }
        }));
    }
    let others = {
        let (svc, shared, to_stop) = (svc.clone(), shared.clone(), to_stop.clone());
        std::thread::spawn(move || {
            let waits: Vec<_> = to_stop
                .into_iter()
                .map(|name| {
                    shared.set(&name, "shutting-down", "");
                    let (svc, shared) = (svc.clone(), shared.clone());
                    std::thread::spawn(move || {
                        let Ok(hv) = svc.connect() else { return };
                        let state = shut_down(hv.as_ref(), &name, svc.limits(&name));
                        log::info!("VM {name}: {state}");
                        shared.set(&name, state, "");
                    })
                })
                .collect();
            for w in waits {
                let _ = w.join();
            }
        })
    };
    // The monitor: enforce each save's time limit, draw progress, notice
    // SIGTERM (the workers then take no new VM; saves in flight go on).
    drop(done_tx);
    let mut told = false;
    // A tick, or a worker ended; the channel closes when the last one has.
    while !matches!(
        done_rx.recv_timeout(Duration::from_millis(200)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
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
                log::warn!(
                    "VM {name}: save ran past {}s: aborting it",
                    svc.limits(name).save_timeout.as_secs()
                );
                if let Err(e) = hv.abort_job(name) {
                    log::warn!("VM {name}: cannot abort the save: {}", crate::chain(&e));
                }
                // Asked once; again in 10 s should the save still run, not
                // at every tick until it returns.
                if let Some(t) = inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(name)
                {
                    *t = now + Duration::from_secs(10);
                }
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
        shared.set(
            name,
            "not-saved",
            "stop was interrupted before its save began",
        );
    }
    let _ = others.join();
    let mut missed = Vec::new();
    shared.with(|j| {
        j.phase = Phase::Stopped;
        for (name, e) in &j.vms {
            if e.was_running && !matches!(e.state.as_str(), "saved" | "shut-down" | "destroyed") {
                missed.push(format!("{name} ({})", e.state));
            }
        }
    });
    if !left.is_empty() {
        log::warn!("not saved: {}", left.join(", "));
    }
    Ok(if missed.is_empty() {
        log::info!("stop on {}: done", svc.host);
        Outcome::Done
    } else {
        Outcome::Partial(missed)
    })
}

/// Sends on drop: a worker's "done", even when it ends by a panic.
struct Done(std::sync::mpsc::Sender<()>);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Whether a save of the VM is under way in libvirtd, begun by this run or
/// by one cut off before. libvirt's job query alone misses the moments when
/// the job's owner is gone; the pause reason libvirt sets for a save holds
/// from the pause until the image is written.
fn save_in_flight(hv: &dyn Hypervisor, name: &str) -> bool {
    hv.job_progress(name).is_ok_and(|j| j.is_some())
        || hv.domain(name).is_ok_and(|d| d.is_some_and(|d| d.saving))
}

/// Waits, up to `limit`, for a save under way to end.
fn wait_for_save(hv: &dyn Hypervisor, name: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && save_in_flight(hv, name) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn save(
    hv: &dyn Hypervisor,
    name: &str,
    bypass_cache: bool,
) -> Result<(), kvmroll_virt::VirtError> {
    if bypass_cache {
        hv.managed_save_bypass_cache(name)
    } else {
        hv.managed_save(name)
    }
}

fn save_one(
    hv: &dyn Hypervisor,
    svc: &Service,
    name: &str,
    shared: &Shared,
    inflight: &Mutex<BTreeMap<String, Instant>>,
) {
    let started = Instant::now();
    shared.set(name, "saving", "");
    inflight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), started + svc.limits(name).save_timeout);
    // An earlier stop, cut off, may have left this VM's save running in
    // libvirtd: let it finish rather than start a second one.
    let result = if save_in_flight(hv, name) {
        log::info!("VM {name}: a save begun earlier is still running; waiting for it");
        wait_for_save(hv, name, svc.limits(name).save_timeout);
        match hv.domain(name) {
            Ok(Some(d)) if d.state == DomainState::ShutOff && d.has_managed_save => Ok(()),
            _ => save(hv, name, svc.limits(name).bypass_cache),
        }
    } else {
        save(hv, name, svc.limits(name).bypass_cache)
    };
    inflight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name);
    match result {
        Ok(()) => {
            let size = std::fs::metadata(image::path(&svc.root, name))
                .ok()
                .map(|m| m.len());
            let note = format!("{:.1}s", started.elapsed().as_secs_f64());
            log::info!(
                "VM {name}: saved in {note}{}",
                size.map_or(String::new(), |s| format!(" ({})", human(s)))
            );
            shared.with(|j| {
                j.set(name, "saved", note);
                if let Some(e) = j.vms.get_mut(name) {
                    e.image_size = size;
                }
            });
        }
        Err(e) => {
            let why = crate::chain(&e);
            log::warn!("VM {name}: save failed ({why}); asking it to shut down");
            shared.set(name, "save-failed", why.clone());
            let state = shut_down(hv, name, svc.limits(name));
            shared.set(name, state, format!("after a failed save: {why}"));
        }
    }
}

/// `start`: brings this container's `kvm_autostart` VMs back.
pub fn start(svc: &Service) -> Result<Outcome, ServiceError> {
    let hv = svc.connect()?;
    let old = Journal::load(&svc.journal_path()).unwrap_or_else(|e| {
        log::warn!("{}; starting without it", crate::chain(&e));
        None
    });
    let mut journal = Journal::new(&svc.host, Phase::Starting);
    if let Some(old) = &old {
        journal.vms = old.vms.clone();
    }
    if let Some(cluster) = svc.known.cluster() {
        define_from_database(hv.as_ref(), cluster, &svc.host);
    }
    let wanted: Vec<String> = svc.autostart().into_iter().collect();
    for name in &wanted {
        journal.set(name, "planned", "start");
        if let Some(e) = journal.vms.get_mut(name) {
            e.autostart = true;
        }
    }
    save_or_go_on(&journal, &svc.journal_path());
    drop(hv);
    log::info!(
        "start on {}: bringing back {} VM(s){}",
        svc.host,
        wanted.len(),
        if svc.settings.start_delay.is_zero() {
            format!(
                ", {} at once",
                svc.settings.parallel.min(wanted.len().max(1))
            )
        } else {
            format!(", {} ms apart", svc.settings.start_delay.as_millis())
        }
    );
    // The size a save left is only a check on the image of that save: one
    // written since by someone else (virsh managedsave) must not be judged
    // by an older size.
    let recorded: BTreeMap<String, Option<u64>> = old
        .map(|j| {
            j.vms
                .into_iter()
                .map(|(n, e)| (n, e.image_size.filter(|_| e.state == "saved")))
                .collect()
        })
        .unwrap_or_default();
    let shared = Arc::new(Shared {
        journal: Mutex::new(journal),
        path: svc.journal_path(),
    });
    let queue = Arc::new(Mutex::new(wanted.iter().cloned().collect::<VecDeque<_>>()));
    let recorded = Arc::new(recorded);
    // With a delay, one at a time, spaced; without, a few at once.
    let width = if svc.settings.start_delay.is_zero() {
        svc.settings.parallel.min(wanted.len())
    } else {
        1
    };
    let workers: Vec<_> = (0..width)
        .map(|_| {
            let (svc, shared, queue, recorded) =
                (svc.clone(), shared.clone(), queue.clone(), recorded.clone());
            std::thread::spawn(move || {
                let hv = match svc.connect() {
                    Ok(h) => h,
                    Err(e) => {
                        log::error!("cannot connect to {}: {}", svc.uri, crate::chain(&e));
                        return;
                    }
                };
                let mut first = true;
                loop {
                    // Its own statement: a `while let` would hold the queue's
                    // lock for the whole restore and serialise the workers.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(name) = next else { break };
                    if !first && !svc.settings.start_delay.is_zero() {
                        std::thread::sleep(svc.settings.start_delay);
                    }
                    first = false;
                    let state = start_one(
                        hv.as_ref(),
                        &svc,
                        &name,
                        recorded.get(&name).copied().flatten(),
                        &shared,
                    );
                    shared.set(&name, state.0, state.1);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let mut missed = Vec::new();
    shared.with(|j| {
        j.phase = Phase::Started;
        for name in &wanted {
            if let Some(e) = j.vms.get(name) {
                if !matches!(
                    e.state.as_str(),
                    "restored" | "booted" | "quarantined" | "already-running"
                ) {
                    missed.push(format!("{name} ({})", e.state));
                }
            }
        }
    });
    Ok(if missed.is_empty() {
        log::info!("start on {}: done", svc.host);
        Outcome::Done
    } else {
        Outcome::Partial(missed)
    })
}

/// Why libvirt's definition of a VM needs defining again from the
/// database: it lacks kvmroll's metadata (defined before it), is of an
/// older generation than the database's rows, or the VM is marked stale
/// (a change that did not reach this container). `None`: it is current.
fn stale_definition(xml: &str, vm: &kvmroll_core::Vm) -> Option<String> {
    let meta = kvmroll_core::xml::parse_document(xml)
        .ok()
        .and_then(|doc| Metadata::find(&doc).ok().flatten());
    match meta {
        None => Some("it has no kvmroll metadata".into()),
        Some(m) if m.generation < vm.generation => Some(format!(
            "it is generation {}, the database's is {}",
            m.generation, vm.generation
        )),
        Some(_) if vm.stale => Some("the database marks it stale".into()),
        Some(_) => None,
    }
}

/// At boot, with the database answering: defines in libvirt this
/// container's VMs it lacks (a reinstalled container) or has stale (changes
/// made while the container was down or unreachable), before any starts.
/// A failure is logged; the VM is started with what libvirt has.
fn define_from_database(hv: &dyn Hypervisor, cluster: &kvmroll_core::Cluster, host: &str) {
    let mut renderer = kvmroll_core::Renderer::new(cluster);
    for vm in cluster.vms_on(host) {
        let name = &vm.name;
        let why = match hv.domain(name) {
            Ok(None) => Some("libvirt lacks it".to_string()),
            Ok(Some(_)) => match hv.xml(name, true) {
                Ok(xml) => stale_definition(&xml, vm),
                Err(e) => {
                    log::warn!(
                        "VM {name}: cannot read its definition: {}",
                        crate::chain(&e)
                    );
                    None
                }
            },
            Err(e) => {
                log::warn!("VM {name}: cannot look it up: {}", crate::chain(&e));
                None
            }
        };
        let Some(why) = why else { continue };
        let defined = renderer
            .render(name)
            .map_err(|e| crate::chain(&e))
            .and_then(|xml| hv.define(&xml).map_err(|e| crate::chain(&e)));
        match defined {
            Ok(()) => log::info!("VM {name}: defined from the database ({why})"),
            Err(e) => log::error!("VM {name}: cannot define it from the database ({why}): {e}"),
        }
    }
}

/// Brings one VM back; returns its journal state and note.
fn start_one(
    hv: &dyn Hypervisor,
    svc: &Service,
    name: &str,
    recorded: Option<u64>,
    shared: &Shared,
) -> (&'static str, String) {
    let info = match hv.domain(name) {
        Ok(Some(d)) => d,
        Ok(None) => {
            // Not defined (a reinstalled container): define it from the
            // database, where it answers.
            let rendered = match svc.known.cluster() {
                Some(c) => kvmroll_core::render_domain(c, name).map_err(|e| crate::chain(&e)),
                None => Err("not defined in libvirt, and the database does not answer".into()),
            };
            match rendered {
                Ok(xml) => {
                    if let Err(e) = hv.define(&xml) {
                        log::error!(
                            "VM {name}: not defined in libvirt and cannot be: {}",
                            crate::chain(&e)
                        );
                        return ("failed", crate::chain(&e));
                    }
                    log::info!("VM {name}: defined from the database");
                    match hv.domain(name) {
                        Ok(Some(d)) => d,
                        _ => return ("failed", "vanished after its definition".into()),
                    }
                }
                Err(why) => {
                    log::error!("VM {name}: cannot define it: {why}");
                    return ("failed", why);
                }
            }
        }
        Err(e) => return ("failed", crate::chain(&e)),
    };
    // A save still running in libvirtd (the stop that began it was cut off):
    // wait for it to end, then act on what it left.
    let info = if info.saving || save_in_flight(hv, name) {
        log::info!("VM {name}: a save (an interrupted stop's) is still running; waiting for it");
        wait_for_save(hv, name, svc.limits(name).save_timeout);
        match hv.domain(name) {
            Ok(Some(d)) => d,
            Ok(None) => return ("failed", "vanished while its job ran".into()),
            Err(e) => return ("failed", crate::chain(&e)),
        }
    } else {
        info
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
        return ("already-running", String::new());
    }
    let image = image::path(&svc.root, name);
    let t = Instant::now();
    if info.has_managed_save || image.exists() {
        match image::inspect(&image, recorded) {
            Verdict::Usable { .. } => {
                shared.set(name, "restoring", "");
                match hv.start(name) {
                    Ok(()) => {
                        log::info!(
                            "VM {name}: restored from its saved image in {:.1}s",
                            t.elapsed().as_secs_f64()
                        );
                        return ("restored", format!("{:.1}s", t.elapsed().as_secs_f64()));
                    }
                    Err(e) => {
                        let why = crate::chain(&e);
                        log::warn!("VM {name}: restore failed ({why})");
                        return quarantine_and_boot(hv, svc, name, &image, &why);
                    }
                }
            }
            Verdict::Unusable { why } => return quarantine_and_boot(hv, svc, name, &image, &why),
        }
    }
    match hv.start(name) {
        Ok(()) => {
            log::info!("VM {name}: cold-booted (no saved image)");
            ("booted", String::new())
        }
        Err(e) => {
            log::error!("VM {name}: cannot start it: {}", crate::chain(&e));
            ("failed", crate::chain(&e))
        }
    }
}

fn quarantine_and_boot(
    hv: &dyn Hypervisor,
    svc: &Service,
    name: &str,
    image: &Path,
    why: &str,
) -> (&'static str, String) {
    let moved = if image.exists() {
        match image::quarantine(image, &svc.quarantine_dir(), name) {
            Ok(dest) => format!("moved to {}", dest.display()),
            Err(e) => {
                log::error!(
                    "VM {name}: its saved image is unusable ({why}) and cannot be moved aside: {e}"
                );
                return ("failed", format!("unusable image not moved: {e}"));
            }
        }
    } else {
        "gone".to_string()
    };
    log::warn!("VM {name}: saved image unusable ({why}); {moved}; cold-booting it");
    match hv.start_force_boot(name) {
        Ok(()) => ("quarantined", format!("{why}; image {moved}; cold-booted")),
        Err(e) => {
            log::error!("VM {name}: cannot cold-boot it: {}", crate::chain(&e));
            ("failed", crate::chain(&e))
        }
    }
}

/// A size for people: KiB under a MiB, MiB under a GiB, else GiB.
pub fn human(bytes: u64) -> String {
    match bytes {
        b if b < 1 << 20 => format!("{} KiB", b.div_ceil(1024)),
        b if b < 1 << 30 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b => format!("{:.2} GiB", b as f64 / f64::from(1 << 30)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmroll_core::{Change, Cluster, Host, Vm};

    /// A definition libvirt has is defined again from the database when it
    /// lacks metadata, is of an older generation, or is marked stale.
    #[test]
    fn old_or_bare_definitions_are_stale() {
        let mut c = Cluster::seeded();
        c.apply(&Change::AddHost(Host::new("c0", "vm-container")))
            .unwrap();
        let vm = Vm {
            id: 0,
            name: "a".into(),
            container: Some("c0".into()),
            memory_mib: 64,
            vcpus: 1,
            uuid: "6f1c2a4e-0d4b-4f57-9a53-000000000001".into(),
            cdrom: None,
            virt_type: "kvm".into(),
            disks: vec![],
            nics: vec![],
            stale: false,
            generation: 0,
        };
        let plan = c.plan(&[Change::AddVm(vm)]).unwrap();
        let current = plan.changed["a"].clone().unwrap();
        let mut vm = plan.after.vm("a").unwrap().clone();
        assert_eq!(stale_definition(&current, &vm), None);
        let bare = "<domain type='kvm'><name>a</name></domain>";
        assert!(stale_definition(bare, &vm)
            .unwrap()
            .contains("no kvmroll metadata"));
        vm.generation += 1;
        assert_eq!(
            stale_definition(&current, &vm).unwrap(),
            "it is generation 1, the database's is 2"
        );
        vm.generation -= 1;
        vm.stale = true;
        assert!(stale_definition(&current, &vm).is_some());
    }
}

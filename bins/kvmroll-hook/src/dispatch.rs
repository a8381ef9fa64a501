//! What the hook does at one libvirt event: map it to a kvmroll stage, find
//! the VM in the database, run the stage's plugins, and answer libvirt.
//!
//! libvirt runs `/etc/libvirt/hooks/qemu VM OP SUBOP EXTRA` with the domain
//! XML on stdin and waits for it (<https://libvirt.org/hooks.html>), so the
//! hook never calls libvirt; a non-zero exit at a `begin` of a start aborts
//! the start and libvirt shows the hook's stderr to the user.

use crate::config::Config;
use kvmroll_core::disks::{self, Done, Place, Roots, ROOTS_ATTR};
use kvmroll_core::drift::check_domain;
use kvmroll_core::events::{first_lines, Event, Outcome};
use kvmroll_core::plugins::{self, Found};
use kvmroll_core::{open_store, OpenMode, Store, StoreError, VmBrief, VmDisk};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A kvmroll stage, the Rocks name for a moment in a VM's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// `prepare begin`: may relocate the VM, create storage; database read-write.
    Allocate,
    /// `start begin`: checks and filters; the VM can no longer move.
    Preboot,
    /// `restore begin`, `migrate begin`: preboot filters whose XML libvirt takes.
    Filter,
    /// `release end`: release what allocate took; database read-write.
    Shutdown,
    /// Any other event: `on-OP` plugins.
    Other(String),
}

impl Stage {
    pub fn of(op: &str, subop: &str) -> Stage {
        match (op, subop) {
            ("prepare", "begin") => Stage::Allocate,
            ("start", "begin") => Stage::Preboot,
            ("restore", "begin") | ("migrate", "begin") => Stage::Filter,
            ("release", "end") => Stage::Shutdown,
            (op, _) => Stage::Other(format!("on-{op}")),
        }
    }

    /// The plugin folder name (`STAGE.d`) and the name plugins are told.
    pub fn name(&self) -> &str {
        match self {
            Stage::Allocate => "allocate",
            Stage::Preboot | Stage::Filter => "preboot",
            Stage::Shutdown => "shutdown",
            Stage::Other(s) => s,
        }
    }

    /// Whether a failure aborts what libvirt is doing.
    pub fn aborts(&self) -> bool {
        matches!(self, Stage::Allocate | Stage::Preboot | Stage::Filter)
    }

    /// Whether plugins may write the database.
    fn writable(&self) -> bool {
        matches!(self, Stage::Allocate | Stage::Shutdown)
    }

    /// The attribute holding the stage's time limit, and its default.
    fn timeout(&self) -> (&'static str, u64) {
        match self {
            Stage::Allocate => ("kvm_plugin_timeout_allocate", 300),
            Stage::Preboot | Stage::Filter => ("kvm_plugin_timeout_preboot", 60),
            Stage::Shutdown => ("kvm_plugin_timeout_shutdown", 120),
            Stage::Other(_) => ("kvm_plugin_timeout_other", 30),
        }
    }
}

/// One call from libvirt.
#[derive(Debug, Clone)]
pub struct Call {
    pub vm: String,
    pub op: String,
    pub subop: String,
    pub extra: String,
    pub xml: String,
}

/// What the hook answers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// Written to stdout: replacement XML, at restore and migrate only.
    pub stdout: Option<String>,
    /// The one-line reason libvirt shows; `Some` means exit 1.
    pub refusal: Option<String>,
    /// Spawn the detached definition refresh after answering.
    pub refresh: bool,
    /// Spawn the detached database upkeep after answering.
    pub upkeep: bool,
}

struct Run<'a> {
    call: &'a Call,
    stage: Stage,
    conf: &'a Config,
    events: Vec<Event>,
    started: Instant,
}

impl Run<'_> {
    fn event(
        &mut self,
        plugin: Option<&Path>,
        outcome: Outcome,
        status: Option<i32>,
        took: Duration,
        message: String,
    ) {
        self.events.push(Event {
            id: 0,
            time_ms: kvmroll_core::now_ms(),
            vm: self.call.vm.clone(),
            stage: self.stage.name().to_string(),
            op: self.call.op.clone(),
            subop: self.call.subop.clone(),
            plugin: plugin.map(|p| p.display().to_string()),
            outcome,
            status,
            duration_ms: took.as_millis() as u64,
            message: kvmroll_core::events::message(&message),
        });
    }

    /// The invocation's own event, then everything written in one go.
    fn finish(
        mut self,
        store: Option<&mut Box<dyn Store>>,
        answer: &Answer,
    ) -> Result<(), StoreError> {
        let (outcome, message) = match &answer.refusal {
            Some(r) => (Outcome::Failed, r.clone()),
            None => (Outcome::Ok, String::new()),
        };
        let took = self.started.elapsed();
        self.event(None, outcome, None, took, message);
        match store {
            Some(store) => store.record_events(&self.events),
            None => Ok(()),
        }
    }
}

/// The environment plugins get, besides the hook's own.
fn plugin_env(
    call: &Call,
    stage: &Stage,
    conf: &Config,
    brief: Option<&VmBrief>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("KVMROLL_VM".to_string(), call.vm.clone()),
        ("KVMROLL_STAGE".to_string(), stage.name().to_string()),
        ("KVMROLL_OP".to_string(), call.op.clone()),
        ("KVMROLL_SUBOP".to_string(), call.subop.clone()),
        ("KVMROLL_EXTRA".to_string(), call.extra.clone()),
        (
            "KVMROLL_DB".to_string(),
            conf.database().display().to_string(),
        ),
        ("KVMROLL_HOST".to_string(), conf.host.clone()),
    ];
    if let Some(b) = brief {
        env.push(("KVMROLL_UUID".to_string(), b.uuid.clone()));
        env.push((
            "KVMROLL_CONTAINER".to_string(),
            b.container.clone().unwrap_or_default(),
        ));
    }
    if !stage.writable() {
        env.push(("KVMROLL_DB_READONLY".to_string(), "1".to_string()));
    }
    // libvirt's reason, where it gives one (anything but "-").
    if call.extra != "-" && !call.extra.is_empty() {
        env.push(("KVMROLL_REASON".to_string(), call.extra.clone()));
    }
    // Plugins call `kvmroll`: put its folder first in PATH.
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let path = match conf.kvmroll.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => format!("{}:{path}", dir.display()),
        None => path,
    };
    env.push(("PATH".to_string(), path));
    env
}

/// A plugin's file name, for the one line libvirt shows.
fn short(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// "N plugins did not run".
fn not_run(n: usize) -> String {
    match n {
        1 => "1 plugin did not run".to_string(),
        n => format!("{n} plugins did not run"),
    }
}

/// The one-line reason a plugin run failed.
fn failure(path: &Path, r: &plugins::RunResult, stage: &Stage, limit: Duration) -> String {
    let name = short(path);
    let said = kvmroll_core::text::headline(&String::from_utf8_lossy(&r.stderr), 300);
    if r.timed_out {
        format!(
            "plugin {name} ran past the {} stage's limit of {}s and was killed",
            stage.name(),
            limit.as_secs()
        )
    } else if let Some(sig) = r.signal {
        format!("plugin {name} was killed by signal {sig}")
    } else if said.is_empty() {
        format!(
            "plugin {name} failed with exit status {}",
            r.code.unwrap_or(-1)
        )
    } else {
        format!("plugin {name} failed: {said}")
    }
}

/// The stage's time budget, shared by all its plugins: the VM's attribute
/// (or the stage's default), capped at `MAX_PLUGIN_TIMEOUT_SECS`. The CLI
/// refuses larger values; one found in the database anyway is capped here,
/// with a log line.
fn stage_limit(stage: &Stage, brief: Option<&VmBrief>, vm: &str) -> Duration {
    let (attr, default) = stage.timeout();
    let cap = kvmroll_core::attrs::MAX_PLUGIN_TIMEOUT_SECS;
    let Some(value) = brief.and_then(|b| b.attrs.get(attr)) else {
        return Duration::from_secs(default);
    };
    let value = value.trim();
    let secs = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too many for a u64 are over the cap all the same.
        value.parse::<u64>().unwrap_or(u64::MAX)
    } else {
        0
    };
    if secs == 0 {
        log::warn!("VM {vm}: {attr} {value:?} is not a positive number of seconds; the default of {default}s applies");
        return Duration::from_secs(default);
    }
    if secs > cap {
        log::warn!("VM {vm}: {attr} {value} is over the cap of {cap}s; {cap}s applies");
        return Duration::from_secs(cap);
    }
    Duration::from_secs(secs)
}

/// Handles one call. Never panics on bad input; what it cannot do it says.
pub fn handle(call: &Call, conf: &Config) -> Answer {
    let stage = Stage::of(&call.op, &call.subop);
    let mut run = Run {
        call,
        stage: stage.clone(),
        conf,
        events: Vec::new(),
        started: Instant::now(),
    };
    let opened = open_store(&conf.database(), OpenMode::ReadWriteFast);
    // A VM the database cannot know passes through untouched; the store
    // says Missing and creates nothing.
    if let Err(StoreError::Missing { path }) = &opened {
        log::debug!(
            "VM {}: no database at {}, passing {} {} through",
            call.vm,
            path.display(),
            call.op,
            call.subop
        );
        return Answer::default();
    }
    let (mut store, brief) = match opened.and_then(|s| s.vm_brief(&call.vm).map(|b| (s, b))) {
        Ok((store, Some(brief))) => (Some(store), Some(brief)),
        Ok((mut store, None)) => {
            // One line per lifecycle, at its start.
            if stage == Stage::Allocate {
                run.event(
                    None,
                    Outcome::PassThrough,
                    None,
                    run.started.elapsed(),
                    "not in the kvmroll database".into(),
                );
                if let Err(e) = store.record_events(&run.events) {
                    log::warn!(
                        "VM {}: cannot record the pass-through: {}",
                        call.vm,
                        crate::chain(&e)
                    );
                }
            }
            log::debug!(
                "VM {} is not in the kvmroll database: {} {} passed through",
                call.vm,
                call.op,
                call.subop
            );
            let upkeep = store.upkeep_due();
            // As below: no close at exit.
            std::mem::forget(store);
            return Answer {
                upkeep,
                ..Answer::default()
            };
        }
        Err(e) => {
            let why = format!(
                "cannot look VM {} up in the kvmroll database: {}",
                call.vm,
                crate::chain(&e)
            );
            log::error!("{why}");
            if stage.aborts() {
                return Answer {
                    refusal: Some(why),
                    ..Answer::default()
                };
            }
            // Stop side: still run what can run, without the database.
            (None, None)
        }
    };
    let mut answer = Answer::default();
    let outcome = stage_body(&mut run, store.as_mut(), brief.as_ref());
    match outcome {
        Ok(body) => {
            answer.stdout = body.stdout;
            // Only this container's libvirt is refreshed from here; a VM
            // that now belongs elsewhere is defined there.
            answer.refresh = stage == Stage::Shutdown
                && store.is_some()
                && brief.as_ref().and_then(|b| b.container.as_deref()) == Some(conf.host.as_str());
        }
        Err(reason) => answer.refusal = Some(reason),
    }
    let events = run.events.len() + 1;
    match run.finish(store.as_mut(), &answer) {
        // libvirtd waits for the hook: a database locked past the hook's
        // wait refuses the start, saying so, rather than let it go
        // unrecorded.
        Err(e @ StoreError::Busy { .. }) if stage.aborts() && answer.refusal.is_none() => {
            answer.stdout = None;
            answer.refusal = Some(format!(
                "VM {}: the start is refused: {}",
                call.vm,
                crate::chain(&e)
            ));
        }
        Err(e) => log::error!(
            "VM {}: cannot record {events} events: {}",
            call.vm,
            crate::chain(&e)
        ),
        Ok(()) => {}
    }
    answer.upkeep = store.as_ref().is_some_and(|s| s.upkeep_due());
    // The events are committed; closing the connection would only free
    // memory and drop locks, which the hook's exit does anyway, and costs
    // a tenth of a no-plugin event. (The WAL is kept at close regardless:
    // OpenMode::ReadWriteFast.)
    std::mem::forget(store);
    answer
}

struct Body {
    stdout: Option<String>,
}

fn stage_body(
    run: &mut Run<'_>,
    store: Option<&mut Box<dyn Store>>,
    brief: Option<&VmBrief>,
) -> Result<Body, String> {
    let call = run.call;
    let stage = run.stage.clone();
    let conf = run.conf;
    let vm = &call.vm;
    let uuid = brief.map(|b| b.uuid.as_str());
    if stage.aborts() {
        check_domain(&call.xml, vm, None)
            .map_err(|e| format!("VM {vm}: libvirt's domain XML on stdin is refused: {e}"))?;
    }
    // One budget for the whole stage, counted from the hook's start: it is
    // what libvirtd waits for.
    let limit = stage_limit(&stage, brief, vm);
    let deadline = run.started + limit;
    let env = plugin_env(call, &stage, conf, brief);
    let args = vec![stage.name().to_string(), vm.clone()];
    let euid = nix::unistd::geteuid().as_raw();
    let mut xml = call.xml.clone();
    let mut changed = false;
    let mut first_failure: Option<String> = None;
    let mut ran = 0;
    let found = plugins::discover(&conf.root, stage.name(), vm, euid);
    // Plugins still to run after the current one, for a budget that ends.
    let mut after = found.iter().filter(|f| matches!(f, Found::Run(_))).count();
    for found in found {
        let plugin = match found {
            Found::Refused { path, why } => {
                let msg = format!("{} not run: {why}", path.display());
                log::warn!("VM {vm}: {msg}");
                run.event(Some(&path), Outcome::Refused, None, Duration::ZERO, why);
                if stage.aborts() {
                    return Err(format!(
                        "VM {vm}: {stage} stage refused: {msg}",
                        stage = stage.name()
                    ));
                }
                continue;
            }
            Found::Run(plugin) => plugin,
        };
        after -= 1;
        let path = plugin.path();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let msg = format!(
                "the {} stage's limit of {}s ran out before plugin {}; {}",
                stage.name(),
                limit.as_secs(),
                short(path),
                not_run(after + 1)
            );
            run.event(
                Some(path),
                Outcome::Timeout,
                None,
                Duration::ZERO,
                msg.clone(),
            );
            if stage.aborts() {
                return Err(format!("VM {vm}: {msg}"));
            }
            first_failure.get_or_insert(msg);
            break;
        }
        ran += 1;
        let result = match plugin.run(&args, &env, xml.as_bytes(), left) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("plugin {} could not be started: {e}", path.display());
                run.event(
                    Some(path),
                    Outcome::Failed,
                    None,
                    Duration::ZERO,
                    msg.clone(),
                );
                if stage.aborts() {
                    return Err(format!("VM {vm}: {msg}"));
                }
                log::error!("VM {vm}: {msg}");
                continue;
            }
        };
        let stderr = first_lines(&String::from_utf8_lossy(&result.stderr), 5, 2000);
        if !result.success() {
            let outcome = if result.timed_out {
                Outcome::Timeout
            } else {
                Outcome::Failed
            };
            let mut msg = failure(path, &result, &stage, limit);
            // The budget is spent: the rest cannot run, on any stage.
            if result.timed_out && after > 0 {
                msg = format!("{msg}; {}", not_run(after));
            }
            run.event(
                Some(path),
                outcome,
                result.code,
                result.duration,
                match (result.timed_out, stderr.is_empty()) {
                    (_, true) => msg.clone(),
                    // Which plugin hit the budget, and what it said.
                    (true, false) => format!("{msg}\n{stderr}"),
                    (false, false) => stderr,
                },
            );
            log::warn!("VM {vm}: {} stage: {msg}", stage.name());
            if stage.aborts() {
                return Err(format!("VM {vm}: {msg}"));
            }
            first_failure.get_or_insert(msg);
            if result.timed_out {
                break;
            }
            continue;
        }
        // A preboot plugin may print a whole domain XML: the next one sees
        // it. Its bytes are taken as they are: output that is not UTF-8 is
        // refused, not mended.
        if matches!(stage, Stage::Preboot | Stage::Filter) {
            let replacement = std::str::from_utf8(&result.stdout)
                .map_err(|e| {
                    format!(
                        "plugin {} printed output that is not UTF-8 (invalid bytes at offset {})",
                        short(path),
                        e.valid_up_to()
                    )
                })
                .and_then(|out| match out.trim() {
                    "" => Ok(None),
                    out => check_domain(out, vm, uuid)
                        .map(|()| Some(out))
                        .map_err(|why| {
                            format!(
                                "plugin {} printed XML that is refused: {why}",
                                path.display()
                            )
                        }),
                });
            match replacement {
                Ok(None) => {}
                Ok(Some(out)) => {
                    xml = out.to_string();
                    changed = true;
                }
                Err(msg) => {
                    run.event(
                        Some(path),
                        Outcome::Failed,
                        result.code,
                        result.duration,
                        msg.clone(),
                    );
                    return Err(format!("VM {vm}: {msg}"));
                }
            }
        }
        run.event(
            Some(path),
            Outcome::Ok,
            result.code,
            result.duration,
            stderr,
        );
    }
    if let Some(f) = &first_failure {
        log::warn!(
            "VM {vm}: {} stage finished with failures, first: {f}",
            stage.name()
        );
    }
    match stage {
        Stage::Allocate => {
            let Some(store) = store else {
                return Ok(Body { stdout: None });
            };
            let mut roots = brief.and_then(|b| b.attrs.get(ROOTS_ATTR).cloned());
            // Only a plugin could have moved the VM, or changed its disks.
            if ran > 0 {
                let now = store.vm_brief(vm).map_err(|e| {
                    format!(
                        "VM {vm}: cannot re-read it after allocate: {}",
                        crate::chain(&e)
                    )
                })?;
                roots = now.as_ref().and_then(|b| b.attrs.get(ROOTS_ATTR).cloned());
                let container = now.and_then(|b| b.container);
                let before = brief.and_then(|b| b.container.clone());
                match container {
                    Some(c) if c == conf.host => {}
                    Some(c) if Some(&c) != before.as_ref() => {
                        return Err(format!("VM {vm} was moved to container {c} by an allocate plugin; start it there"));
                    }
                    Some(c) => {
                        return Err(format!("VM {vm} belongs on container {c}, not on this host ({}); start it there", conf.host));
                    }
                    None => {
                        return Err(format!(
                            "VM {vm} is not placed on any container in the kvmroll database"
                        ))
                    }
                }
            }
            prepare_disks(run, store.as_mut(), roots.as_deref(), deadline)?;
        }
        Stage::Preboot => {
            if changed {
                log::warn!("VM {vm}: preboot plugins changed the XML, but libvirt takes hook XML only at restore and migrate; change the database (kvmroll) so the definition is right at a cold start");
            }
            if let (Some(b), Some(store)) = (brief, store) {
                drift_check(run, b, store.as_ref())?;
            }
        }
        Stage::Filter if changed => {
            return Ok(Body { stdout: Some(xml) });
        }
        _ => {}
    }
    Ok(Body { stdout: None })
}

/// Makes the VM's missing disk images and grows those the database asks to
/// grow (`kvmroll_core::disks`), after the allocate plugins, which may have
/// changed them as Rocks' allocate plugins changed a disk's path and type.
/// The first disk that cannot be made ready refuses the start; what was done
/// is recorded (events, and the images made, for `vm remove --delete-disks`).
fn prepare_disks(
    run: &mut Run<'_>,
    store: &mut dyn Store,
    roots: Option<&str>,
    deadline: Instant,
) -> Result<(), String> {
    let vm = run.call.vm.clone();
    let disks = store
        .vm_disks(&vm)
        .map_err(|e| format!("VM {vm}: cannot read its disks: {}", crate::chain(&e)))?;
    if disks.is_empty() {
        return Ok(());
    }
    let roots =
        Roots::of(roots).map_err(|why| format!("VM {vm}: {ROOTS_ATTR} is refused: {why}"))?;
    let place = Place {
        sysroot: Path::new("/"),
        vm: &vm,
        qemu_img: Path::new("qemu-img"),
        deadline,
    };
    let (mut made, mut grown) = (Vec::new(), Vec::new());
    let mut refusal = None;
    for VmDisk { disk, grow } in &disks {
        let started = Instant::now();
        let said = match disks::prepare(disk, *grow, &roots, &place) {
            Ok(Done::Present) => None,
            Ok(Done::Made) => {
                made.push(disk.path.clone());
                Some(format!(
                    "disk {}: made {} image {} ({} GiB)",
                    disk.dev,
                    disk.kind.as_str(),
                    disk.path,
                    disk.size_gib.unwrap_or_default()
                ))
            }
            Ok(Done::Grown { from, to }) => Some(format!(
                "disk {}: grew {} from {from} to {to} bytes",
                disk.dev, disk.path
            )),
            Ok(Done::NotGrown(why)) => {
                log::warn!("VM {vm}: disk {}: not grown: {why}", disk.dev);
                Some(format!("disk {}: not grown: {why}", disk.dev))
            }
            // The invocation's own event records the refusal.
            Err(e) => {
                refusal = Some(format!("VM {vm}: disk {}: {}", disk.dev, crate::chain(&e)));
                break;
            }
        };
        // Done, or nothing to do: the grow waits no more.
        if *grow {
            grown.push(disk.path.clone());
        }
        if let Some(msg) = said {
            log::info!("VM {vm}: {msg}");
            run.event(None, Outcome::Ok, None, started.elapsed(), msg);
        }
    }
    if let Err(e) = store.record_disk_work(&vm, &run.conf.host, &made, &grown) {
        log::error!(
            "VM {vm}: cannot record the disk images made ({}): {}",
            made.join(", "),
            crate::chain(&e)
        );
    }
    refusal.map_or(Ok(()), Err)
}

/// Renders the VM from the database and compares it with what libvirt is
/// about to start; a drift is logged and recorded, or refuses the start where
/// `kvm_strict_definition` is true.
fn drift_check(run: &mut Run<'_>, brief: &VmBrief, store: &dyn Store) -> Result<(), String> {
    let vm = &run.call.vm;
    let started = Instant::now();
    // The hook's own connection: a second one would only open the file again.
    let cluster = match store.snapshot() {
        Ok(c) => c,
        Err(e) => {
            log::warn!("VM {vm}: drift check skipped: {}", crate::chain(&e));
            return Ok(());
        }
    };
    let rendered = match kvmroll_core::render_domain(&cluster, vm) {
        Ok(x) => x,
        Err(e) => {
            let why = format!(
                "VM {vm} cannot be rendered from the database: {}",
                crate::chain(&e)
            );
            run.event(None, Outcome::Drift, None, started.elapsed(), why.clone());
            return if strict(brief) { Err(why) } else { Ok(()) };
        }
    };
    let diffs = match kvmroll_core::drift::compare(&rendered, &run.call.xml) {
        Ok(d) => d,
        Err(e) => vec![format!("libvirt's XML cannot be compared: {e}")],
    };
    if diffs.is_empty() {
        return Ok(());
    }
    let why = format!("VM {vm}: libvirt's definition differs from the kvmroll database: {}; run `kvmroll vm define {vm}`", diffs.join("; "));
    run.event(None, Outcome::Drift, None, started.elapsed(), why.clone());
    if strict(brief) {
        return Err(why);
    }
    log::warn!("{why}");
    Ok(())
}

fn strict(brief: &VmBrief) -> bool {
    brief
        .attrs
        .get("kvm_strict_definition")
        .and_then(|v| kvmroll_core::model::parse_bool(v))
        == Some(true)
}

/// The kvmroll binary and database a detached refresh uses.
pub fn refresh_command(conf: &Config, vm: &str) -> (PathBuf, Vec<String>) {
    (
        conf.kvmroll.clone(),
        vec![
            "--db".into(),
            conf.database().display().to_string(),
            "vm".into(),
            "sync".into(),
            vm.to_string(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_follow_the_design_table() {
        assert_eq!(Stage::of("prepare", "begin"), Stage::Allocate);
        assert_eq!(Stage::of("start", "begin"), Stage::Preboot);
        assert_eq!(Stage::of("restore", "begin"), Stage::Filter);
        assert_eq!(Stage::of("migrate", "begin"), Stage::Filter);
        assert_eq!(Stage::of("release", "end"), Stage::Shutdown);
        assert_eq!(Stage::of("started", "begin").name(), "on-started");
        assert_eq!(Stage::of("stopped", "end").name(), "on-stopped");
        assert_eq!(Stage::Filter.name(), "preboot");
    }

    #[test]
    fn a_limit_over_the_cap_in_the_database_is_capped() {
        let brief = |v: &str| VmBrief {
            name: "a".into(),
            uuid: "u".into(),
            container: None,
            attrs: [("kvm_plugin_timeout_allocate".to_string(), v.to_string())].into(),
        };
        let limit = |v: &str| stage_limit(&Stage::Allocate, Some(&brief(v)), "a").as_secs();
        assert_eq!(limit("4294967295"), 3600);
        assert_eq!(limit("99999999999999999999999"), 3600);
        assert_eq!(limit("3600"), 3600);
        assert_eq!(limit("2"), 2);
        // Not a number of seconds: the stage's default.
        assert_eq!(limit("0"), 300);
        assert_eq!(limit("soon"), 300);
        assert_eq!(stage_limit(&Stage::Preboot, None, "a").as_secs(), 60);
    }
}

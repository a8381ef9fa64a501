//! What the hook does at one libvirt event: map it to a kvmroll stage, know
//! the VM from kvmroll's metadata in the XML libvirt hands it (or, for a VM
//! defined before metadata, from the database), run the stage's plugins,
//! and answer libvirt.
//!
//! libvirt runs `/etc/libvirt/hooks/qemu VM OP SUBOP EXTRA` with the domain
//! XML on stdin and waits for it (<https://libvirt.org/hooks.html>), so the
//! hook never calls libvirt; a non-zero exit at a `begin` of a start aborts
//! the start and libvirt shows the hook's stderr to the user.
//!
//! The database may be a frontend's, and the frontend down: the common path
//! (every stage without plugins that may write, the drift check, the
//! filters) opens no database, and events go to the container's spool,
//! which a detached upkeep forwards (`kvmroll_core::spool`). Where the
//! database is needed and does not answer, the call goes on without it and
//! plugins are told; only a VM with `kvm_require_database` has its start
//! refused for that.

use crate::config::Config;
use kvmroll_core::disks::{self, Done, Place, Roots, ROOTS_ATTR};
use kvmroll_core::drift;
use kvmroll_core::events::{first_lines, Event, Outcome};
use kvmroll_core::metadata::Metadata;
use kvmroll_core::model::{Disk, DiskKind};
use kvmroll_core::spool::Spool;
use kvmroll_core::text::{clip, QUOTE_CHARS};
use kvmroll_core::xml::{parse_document, Element};
use kvmroll_core::{open_store, OpenMode, Store, StoreError, VmBrief, VmDisk};
use kvmroll_plugins::{self as plugins, Found};
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

/// The database as one call reaches it. The hook's common path never opens
/// it: only allocate and shutdown with plugins (they may write through
/// `kvmroll`), the relocation and generation checks after them, a start
/// that requires it (`kvm_require_database`), and disk work to record; and
/// every event of a VM without kvmroll's metadata, as before it had any.
enum Db {
    /// Not needed so far.
    Unopened,
    Open(Box<dyn Store>),
    /// Tried, and it did not answer: the one-line reason.
    Unreachable(String),
}

impl Db {
    fn store(&mut self) -> Option<&mut Box<dyn Store>> {
        match self {
            Db::Open(s) => Some(s),
            _ => None,
        }
    }

    fn unreachable(&self) -> Option<&str> {
        match self {
            Db::Unreachable(why) => Some(why),
            _ => None,
        }
    }
}

struct Run<'a> {
    call: &'a Call,
    stage: Stage,
    conf: &'a Config,
    events: Vec<Event>,
    started: Instant,
    db: Db,
    /// An allocate plugin moved the VM to another container: its
    /// definition is to follow it there.
    relocated: bool,
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
            container: Some(self.conf.host.clone()),
        });
    }

    /// Opens the database, unless it was tried already, giving it the VM's
    /// `kvm_db_connect_timeout` within what is left of the stage's budget;
    /// one that does not answer is said once, in an event and the log.
    fn open_db(&mut self, brief: Option<&VmBrief>, deadline: Instant) {
        if !matches!(self.db, Db::Unopened) {
            return;
        }
        let vm = &self.call.vm;
        let limit = seconds(
            brief,
            "kvm_db_connect_timeout",
            DB_CONNECT_TIMEOUT,
            kvmroll_core::attrs::MAX_PLUGIN_TIMEOUT_SECS,
            vm,
        )
        .min(deadline.saturating_duration_since(Instant::now()));
        let t = Instant::now();
        self.db = match kvmroll_core::open_within(
            &self.conf.database(),
            OpenMode::ReadWriteFast,
            limit,
        ) {
            Ok(store) => Db::Open(store),
            Err(e) => {
                let why = crate::chain(&e);
                log::warn!("VM {vm}: the kvmroll database is unreachable: {why}");
                self.event(
                    None,
                    Outcome::Unreachable,
                    None,
                    t.elapsed(),
                    format!("the database is unreachable: {why}"),
                );
                Db::Unreachable(why)
            }
        };
    }

    /// The invocation's own event, then [`Run::close`].
    fn finish(mut self, answer: &Answer) -> bool {
        let (outcome, message) = match &answer.refusal {
            Some(r) => (Outcome::Failed, r.clone()),
            None => (Outcome::Ok, String::new()),
        };
        let took = self.started.elapsed();
        self.event(None, outcome, None, took, message);
        self.close()
    }

    /// Writes every event of the call to the container's spool, one file,
    /// for the detached upkeep to forward (`kvmroll_core::spool`). Returns
    /// whether that upkeep must be started: no forwarder holds the spool.
    fn close(mut self) -> bool {
        let vm = &self.call.vm;
        let spool = Spool::new(&self.conf.spool, &self.conf.host);
        let upkeep = match spool.write(&self.events) {
            Ok(_) => !spool.busy(),
            Err(e) => {
                // A spool that cannot be written (a full disk): the
                // database, if this call has it, or the log keeps them.
                let why = crate::chain(&e);
                let kept = match self.db.store() {
                    Some(store) => store
                        .record_events(&self.events)
                        .map_err(|e| crate::chain(&e)),
                    None => Err("the database is not open".to_string()),
                };
                match kept {
                    Ok(()) => log::error!("VM {vm}: {why}; the events went to the database"),
                    Err(not) => {
                        log::error!("VM {vm}: {why}; and not to the database: {not}");
                        for e in &self.events {
                            log::error!(
                                "VM {vm}: event lost: {} {} {} {}: {}",
                                e.op,
                                e.subop,
                                e.outcome.as_str(),
                                e.plugin.as_deref().unwrap_or("-"),
                                e.message
                            );
                        }
                    }
                }
                false
            }
        };
        // Closing a connection would only free memory and drop locks, which
        // the hook's exit does anyway, and costs a tenth of an event.
        std::mem::forget(self.db);
        upkeep
    }
}

/// The environment plugins get, besides the hook's own.
fn plugin_env(
    call: &Call,
    stage: &Stage,
    conf: &Config,
    brief: Option<&VmBrief>,
    unreachable: Option<&str>,
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
    // The plugin may want to skip its own database work, or refuse.
    if let Some(why) = unreachable {
        env.push(("KVMROLL_DB_UNREACHABLE".to_string(), "1".to_string()));
        env.push((
            "KVMROLL_DB_UNREACHABLE_REASON".to_string(),
            kvmroll_core::text::one_line(why),
        ));
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

/// Checks that `xml` is a whole domain for this VM (name and, where known, UUID).
fn check_domain(xml: &str, vm: &str, uuid: Option<&str>) -> Result<(), String> {
    let doc = parse_document(xml).map_err(|e| format!("not well-formed domain XML: {e}"))?;
    check_doc(&doc, vm, uuid)
}

/// [`check_domain`] of a parsed document.
fn check_doc(doc: &Element, vm: &str, uuid: Option<&str>) -> Result<(), String> {
    if doc.name != "domain" {
        return Err(format!(
            "the root element is <{}>, not <domain>",
            clip(&doc.name, QUOTE_CHARS)
        ));
    }
    let name = doc
        .child("name")
        .map(|n| n.text.trim().to_string())
        .unwrap_or_default();
    if name != vm {
        return Err(format!(
            "the domain is named {:?}, not {vm:?}",
            clip(&name, QUOTE_CHARS)
        ));
    }
    if let (Some(want), Some(got)) = (uuid, doc.child("uuid")) {
        if !got.text.trim().eq_ignore_ascii_case(want) {
            return Err(format!(
                "the domain's UUID is {}, not {want}",
                clip(got.text.trim(), QUOTE_CHARS)
            ));
        }
    }
    Ok(())
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

/// How long the hook waits for the database where it opens it, unless the
/// VM's `kvm_db_connect_timeout` says otherwise: within the stage's budget.
const DB_CONNECT_TIMEOUT: u64 = 5;

/// The stage's time budget, shared by all its plugins: the VM's attribute
/// (or the stage's default), capped at `MAX_PLUGIN_TIMEOUT_SECS`. The CLI
/// refuses larger values; one found in the database anyway is capped here,
/// with a log line.
fn stage_limit(stage: &Stage, brief: Option<&VmBrief>, vm: &str) -> Duration {
    let (attr, default) = stage.timeout();
    seconds(
        brief,
        attr,
        default,
        kvmroll_core::attrs::MAX_PLUGIN_TIMEOUT_SECS,
        vm,
    )
}

/// A VM's attribute in seconds: its default where unset or not a positive
/// number, `cap` where over it (each with a log line).
fn seconds(brief: Option<&VmBrief>, attr: &str, default: u64, cap: u64, vm: &str) -> Duration {
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

/// Whether a boolean attribute of the VM is true.
fn flag(brief: Option<&VmBrief>, attr: &str) -> bool {
    brief
        .and_then(|b| b.attrs.get(attr))
        .and_then(|v| kvmroll_core::model::parse_bool(v))
        == Some(true)
}

/// The VM as its definition's metadata describes it: what the hook would
/// otherwise read from the database.
fn brief_of(call: &Call, doc: &Element, meta: &Metadata) -> VmBrief {
    VmBrief {
        name: call.vm.clone(),
        uuid: doc
            .child("uuid")
            .map(|u| u.text.trim().to_string())
            .unwrap_or_default(),
        container: meta.container.clone(),
        generation: meta.generation,
        attrs: meta.settings.clone(),
    }
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
        db: Db::Unopened,
        relocated: false,
    };
    let doc = parse_document(&call.xml).map_err(|e| format!("not well-formed domain XML: {e}"));
    // kvmroll's metadata, where the definition has it: everything this
    // call needs to know of the VM, without the database.
    let meta = match &doc {
        Ok(d) => Metadata::find(d).unwrap_or_else(|e| {
            log::warn!(
                "VM {}: {}; looking it up in the database instead",
                call.vm,
                crate::chain(&e)
            );
            None
        }),
        Err(_) => None,
    };
    let brief = match (&doc, &meta) {
        (Ok(d), Some(m)) => Some(brief_of(call, d, m)),
        _ => match look_up(&mut run) {
            Ok(Known::Vm(brief)) => Some(brief),
            Ok(Known::Unanswered) => None,
            Ok(Known::Unknown) => return pass_through(run),
            Err(refusal) => {
                return Answer {
                    refusal: Some(refusal),
                    ..Answer::default()
                }
            }
        },
    };
    let mut answer = Answer::default();
    let checked = match (&doc, stage.aborts()) {
        (Ok(d), true) => check_doc(d, &call.vm, None).map_err(|e| {
            format!(
                "VM {}: libvirt's domain XML on stdin is refused: {e}",
                call.vm
            )
        }),
        (Err(e), true) => Err(format!(
            "VM {}: libvirt's domain XML on stdin is refused: {e}",
            call.vm
        )),
        (_, false) => Ok(()),
    };
    let outcome = checked
        .and_then(|()| stage_body(&mut run, brief.as_ref(), meta.as_ref(), doc.as_ref().ok()));
    match outcome {
        Ok(body) => {
            answer.stdout = body.stdout;
            // Only this container's libvirt is refreshed from here; a VM
            // that now belongs elsewhere is defined there. The refresh
            // itself asks the database, detached, and gives up on its own
            // when the database does not answer.
            let here =
                brief.as_ref().and_then(|b| b.container.as_deref()) == Some(conf.host.as_str());
            answer.refresh = stage == Stage::Shutdown && here;
        }
        Err(reason) => {
            // The refresh moves the definition to the VM's new container
            // (`kvmroll vm sync --from`), once libvirt is done with it here.
            answer.refresh = run.relocated;
            answer.refusal = Some(reason);
        }
    }
    answer.upkeep = run.finish(&answer);
    answer
}

/// What the database says of a VM with no kvmroll metadata.
enum Known {
    Vm(VmBrief),
    /// Not the database's (or there is no database): passed through.
    Unknown,
    /// The database did not answer, on the stop side: the call goes on
    /// without it.
    Unanswered,
}

/// A VM with no kvmroll metadata, looked up in the database as before
/// metadata; an error (the one line libvirt shows) where a start cannot go
/// on without it.
fn look_up(run: &mut Run<'_>) -> Result<Known, String> {
    let call = run.call;
    let db = run.conf.database();
    // A server is given the hook's connection time limit; a file opens at
    // once (and a thread per event would cost a hand-defined VM's events).
    let opened = match kvmroll_core::location::Location::from_url_path(&db) {
        Ok(Some(kvmroll_core::location::Location::Postgres(_))) => kvmroll_core::open_within(
            &db,
            OpenMode::ReadWriteFast,
            Duration::from_secs(DB_CONNECT_TIMEOUT),
        ),
        _ => open_store(&db, OpenMode::ReadWriteFast),
    };
    // A VM the database cannot know passes through untouched; the store
    // says Missing and creates nothing. So does a server that does not
    // answer: a VM defined by hand must not wait for the frontend, nor
    // fail with it (one defined by a kvmroll before metadata starts then
    // without its plugins, said in the log; `kvmroll vm define --all`
    // gives it metadata).
    if let Err(e @ (StoreError::Unreachable { .. } | StoreError::NoAnswer { .. })) = &opened {
        log::warn!(
            "VM {}: has no kvmroll metadata, and the database does not answer ({}): {} {} passed through",
            call.vm,
            crate::chain(e),
            call.op,
            call.subop
        );
        return Ok(Known::Unknown);
    }
    if let Err(StoreError::Missing { path }) = &opened {
        log::debug!(
            "VM {}: no database at {}, passing {} {} through",
            call.vm,
            path.display(),
            call.op,
            call.subop
        );
        return Ok(Known::Unknown);
    }
    match opened.and_then(|s| s.vm_brief(&call.vm).map(|b| (s, b))) {
        Ok((store, brief)) => {
            run.db = Db::Open(store);
            Ok(brief.map_or(Known::Unknown, Known::Vm))
        }
        Err(e) => {
            let why = format!(
                "cannot look VM {} up in the kvmroll database: {}",
                call.vm,
                crate::chain(&e)
            );
            log::error!("{why}");
            if run.stage.aborts() {
                return Err(why);
            }
            // Stop side: still run what can run, without the database.
            run.db = Db::Unreachable(crate::chain(&e));
            Ok(Known::Unanswered)
        }
    }
}

/// A VM kvmroll does not manage: untouched, with one event per lifecycle,
/// at its start.
fn pass_through(mut run: Run<'_>) -> Answer {
    let call = run.call;
    log::debug!(
        "VM {} is not in the kvmroll database: {} {} passed through",
        call.vm,
        call.op,
        call.subop
    );
    if run.stage != Stage::Allocate || !matches!(run.db, Db::Open(_)) {
        std::mem::forget(run.db);
        return Answer::default();
    }
    run.event(
        None,
        Outcome::PassThrough,
        None,
        run.started.elapsed(),
        "not in the kvmroll database".into(),
    );
    Answer {
        upkeep: run.close(),
        ..Answer::default()
    }
}

struct Body {
    stdout: Option<String>,
}

fn stage_body(
    run: &mut Run<'_>,
    brief: Option<&VmBrief>,
    meta: Option<&Metadata>,
    doc: Option<&Element>,
) -> Result<Body, String> {
    let call = run.call;
    let stage = run.stage.clone();
    let conf = run.conf;
    let vm = &call.vm;
    let uuid = brief.map(|b| b.uuid.as_str()).filter(|u| !u.is_empty());
    // One budget for the whole stage, counted from the hook's start: it is
    // what libvirtd waits for.
    let limit = stage_limit(&stage, brief, vm);
    let deadline = run.started + limit;
    let euid = nix::unistd::geteuid().as_raw();
    let named = kvmroll_core::model::check_name("VM", vm).map_err(|e| e.to_string());
    let found = plugins::discover(&conf.root, stage.name(), named.map(|()| vm.as_str()), euid);
    if let Some(meta) = meta {
        let required = flag(brief, "kvm_require_database");
        let wanted = match stage {
            // Plugins may write through kvmroll, and allocate's may move
            // the VM: they are told whether the database answers.
            Stage::Allocate => !found.is_empty() || required,
            Stage::Shutdown => !found.is_empty(),
            _ => false,
        };
        if wanted {
            run.open_db(brief, deadline);
        }
        if let (Some(why), true, true) = (run.db.unreachable(), required, stage.aborts()) {
            return Err(format!(
                "VM {vm}: the start is refused: kvm_require_database is true and the kvmroll database is unreachable: {why}"
            ));
        }
        if stage == Stage::Allocate {
            stale_check(run, meta);
        }
    }
    let env = plugin_env(call, &stage, conf, brief, run.db.unreachable());
    let args = vec![stage.name().to_string(), vm.clone()];
    let mut xml = call.xml.clone();
    let mut changed = false;
    let mut first_failure: Option<String> = None;
    let mut ran = 0;
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
            let mut roots = brief.and_then(|b| b.attrs.get(ROOTS_ATTR).cloned());
            // Only a plugin could have moved the VM, or changed its disks.
            if ran > 0 {
                match &mut run.db {
                    Db::Open(store) => {
                        let now = store.vm_brief(vm).map_err(|e| {
                            format!(
                                "VM {vm}: cannot re-read it after allocate: {}",
                                crate::chain(&e)
                            )
                        })?;
                        if meta.is_none() {
                            roots = now.as_ref().and_then(|b| b.attrs.get(ROOTS_ATTR).cloned());
                        }
                        let moved = relocated(vm, conf, brief, now);
                        run.relocated =
                            matches!(&moved, Err(why) if why.contains("was moved to container"));
                        moved?;
                    }
                    Db::Unreachable(why) => {
                        let why = format!("the relocation check after the allocate plugins is skipped: the database is unreachable: {why}");
                        log::warn!("VM {vm}: {why}");
                        run.event(None, Outcome::Unreachable, None, Duration::ZERO, why);
                    }
                    Db::Unopened => {}
                }
            }
            prepare_disks(run, brief, meta, doc, ran > 0, roots.as_deref(), deadline)?;
        }
        Stage::Preboot => {
            if changed {
                log::warn!("VM {vm}: preboot plugins changed the XML, but libvirt takes hook XML only at restore and migrate; change the database (kvmroll) so the definition is right at a cold start");
            }
            match (meta, doc, brief) {
                (Some(m), Some(d), _) => drift_from_metadata(run, m, d, brief)?,
                (None, _, Some(b)) => {
                    if let Db::Open(store) = std::mem::replace(&mut run.db, Db::Unopened) {
                        let result = drift_check(run, b, store.as_ref());
                        run.db = Db::Open(store);
                        result?;
                    }
                }
                _ => {}
            }
        }
        Stage::Filter if changed => {
            return Ok(Body { stdout: Some(xml) });
        }
        _ => {}
    }
    Ok(Body { stdout: None })
}

/// Refuses the local start of a VM the database now places elsewhere (an
/// allocate plugin moved it) or nowhere.
fn relocated(
    vm: &str,
    conf: &Config,
    brief: Option<&VmBrief>,
    now: Option<VmBrief>,
) -> Result<(), String> {
    let Some(now) = now else {
        // Gone from the database meanwhile: the definition still says
        // what to start.
        log::warn!("VM {vm} is no longer in the kvmroll database");
        return Ok(());
    };
    let before = brief.and_then(|b| b.container.clone());
    match now.container {
        Some(c) if c == conf.host => Ok(()),
        Some(c) if Some(&c) != before.as_ref() => Err(format!(
            "VM {vm} was moved to container {c} by an allocate plugin; start it there"
        )),
        Some(c) => Err(format!(
            "VM {vm} belongs on container {c}, not on this host ({}); start it there",
            conf.host
        )),
        None => Err(format!(
            "VM {vm} is not placed on any container in the kvmroll database"
        )),
    }
}

/// Where the database is open anyway (allocate with plugins): a definition
/// of an older generation than the database's rows is stale, said in an
/// event and the log; `kvmroll vm define` (or the refresh after the VM
/// stops) brings it up to date.
fn stale_check(run: &mut Run<'_>, meta: &Metadata) {
    let vm = run.call.vm.clone();
    let Some(store) = run.db.store() else {
        return;
    };
    let now = match store.vm_brief(&vm) {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => {
            log::warn!("VM {vm}: generation check skipped: {}", crate::chain(&e));
            return;
        }
    };
    if now.generation > meta.generation {
        let why = format!(
            "libvirt's definition is generation {} of VM {vm}, the database's is {}: it is stale; `kvmroll vm define {vm}` brings it up to date",
            meta.generation, now.generation
        );
        log::warn!("{why}");
        run.event(None, Outcome::Stale, None, Duration::ZERO, why);
    }
}

/// The VM's disks as its definition says them: each `<disk device='disk'>`
/// with the size kvmroll's metadata keeps for it.
fn disks_of(doc: &Element, meta: &Metadata) -> Vec<VmDisk> {
    let Some(devices) = doc.child("devices") else {
        return Vec::new();
    };
    devices
        .children
        .iter()
        .filter(|d| d.name == "disk" && d.attr("device").unwrap_or("disk") == "disk")
        .filter_map(|d| {
            let target = d.child("target")?;
            let dev = target.attr("dev")?.to_string();
            let source = d.child("source")?;
            let format = d.child("driver").and_then(|dr| dr.attr("type"));
            let (kind, path) = match d.attr("type").unwrap_or("file") {
                "block" => (DiskKind::Block, source.attr("dev")?),
                "file" if format == Some("qcow2") => (DiskKind::Qcow2, source.attr("file")?),
                "file" => (DiskKind::Raw, source.attr("file")?),
                _ => return None,
            };
            let size_gib = meta.disks.iter().find(|s| s.dev == dev).map(|s| s.size_gib);
            Some(VmDisk {
                disk: Disk {
                    kind,
                    path: path.to_string(),
                    bus: target.attr("bus").unwrap_or_default().to_string(),
                    dev,
                    size_gib,
                },
                grow: false,
            })
        })
        .collect()
}

/// Makes the VM's missing disk images and grows those the database asks to
/// grow (`kvmroll_core::disks`), after the allocate plugins, which may have
/// changed them as Rocks' allocate plugins changed a disk's path and type.
/// The first disk that cannot be made ready refuses the start; what was done
/// is recorded (events, and the images made, for `vm remove --delete-disks`).
///
/// With kvmroll's metadata the disks, their sizes and `kvm_disk_roots` come
/// from the definition, and the database is needed only for the images
/// made (to record them), or grows (an image smaller than its size may have
/// one waiting); after plugins that may have changed them, from the
/// database where it answers.
#[allow(clippy::too_many_arguments)]
fn prepare_disks(
    run: &mut Run<'_>,
    brief: Option<&VmBrief>,
    meta: Option<&Metadata>,
    doc: Option<&Element>,
    after_plugins: bool,
    roots: Option<&str>,
    deadline: Instant,
) -> Result<(), String> {
    let vm = run.call.vm.clone();
    let from_db = match (meta, doc) {
        (Some(_), Some(_)) => after_plugins && matches!(run.db, Db::Open(_)),
        _ => true,
    };
    let mut disks = match (from_db, meta, doc) {
        (false, Some(m), Some(d)) => disks_of(d, m),
        _ => match run.db.store() {
            Some(store) => store
                .vm_disks(&vm)
                .map_err(|e| format!("VM {vm}: cannot read its disks: {}", crate::chain(&e)))?,
            None => return Ok(()),
        },
    };
    if disks.is_empty() {
        return Ok(());
    }
    let roots =
        Roots::of(roots).map_err(|why| format!("VM {vm}: {ROOTS_ATTR} is refused: {why}"))?;
    if !from_db && disks.iter().any(|d| disks::smaller_than_its_size(&d.disk)) {
        // A grow may wait in the database (`kvmroll vm disk resize`).
        run.open_db(brief, deadline);
        match run.db.store().map(|s| s.vm_disks(&vm)) {
            Some(Ok(known)) => {
                for d in &mut disks {
                    d.grow = known.iter().any(|k| k.grow && k.disk.path == d.disk.path);
                }
            }
            Some(Err(e)) => log::warn!(
                "VM {vm}: cannot read the grows waiting for its disks: {}",
                crate::chain(&e)
            ),
            None => {}
        }
    }
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
    if !made.is_empty() || !grown.is_empty() {
        run.open_db(brief, deadline);
        let host = run.conf.host.clone();
        let recorded = match run.db.store() {
            Some(store) => store
                .record_disk_work(&vm, &host, &made, &grown)
                .map_err(|e| crate::chain(&e)),
            None => Err("the database is unreachable".to_string()),
        };
        if let Err(why) = recorded {
            let msg = format!(
                "the images made ({}) are not recorded, so `kvmroll vm remove --delete-disks` will not remove them: {why}",
                made.join(", ")
            );
            log::error!("VM {vm}: {msg}");
            run.event(None, Outcome::Unreachable, None, Duration::ZERO, msg);
        }
    }
    refusal.map_or(Ok(()), Err)
}

/// Compares the decided parts of the XML libvirt is about to start with
/// the facts kvmroll's metadata holds (`kvmroll_core::drift`), with no
/// database: a drift (a `virsh edit` of a decided part, or of the facts
/// themselves) is logged and recorded, naming each fact, or refuses the
/// start where `kvm_strict_definition` is true.
fn drift_from_metadata(
    run: &mut Run<'_>,
    meta: &Metadata,
    doc: &Element,
    brief: Option<&VmBrief>,
) -> Result<(), String> {
    let vm = &run.call.vm;
    let started = Instant::now();
    let diffs = if !meta.intact() {
        vec![
            "kvmroll's metadata was edited: its facts are not those its digest was made of"
                .to_string(),
        ]
    } else {
        let facts = drift::project(doc, Some(&drift::device_kinds(&meta.facts)));
        // libvirt's own definition, as it was defined: the same facts.
        if facts == meta.facts {
            return Ok(());
        }
        drift::compare_facts(&meta.facts, &facts)
    };
    if diffs.is_empty() {
        return Ok(());
    }
    let why = format!(
        "VM {vm}: libvirt's definition differs from what kvmroll decided (generation {}): {}; run `kvmroll vm define {vm}`",
        meta.generation,
        diffs.join("; ")
    );
    run.event(None, Outcome::Drift, None, started.elapsed(), why.clone());
    if flag(brief, "kvm_strict_definition") {
        return Err(why);
    }
    log::warn!("{why}");
    Ok(())
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
            return if flag(Some(brief), "kvm_strict_definition") {
                Err(why)
            } else {
                Ok(())
            };
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
    if flag(Some(brief), "kvm_strict_definition") {
        return Err(why);
    }
    log::warn!("{why}");
    Ok(())
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
            // A VM that now belongs elsewhere takes its definition along.
            "--from".into(),
            conf.host.clone(),
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
            generation: 0,
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

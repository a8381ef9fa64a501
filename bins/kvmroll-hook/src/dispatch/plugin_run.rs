//! The stage's plugins, run one after another within the stage's one time
//! budget: the environment they get, what each run is recorded as, and the
//! one line a failure becomes.

use super::filter::replacement;
use super::refusal::{PluginFailure, Refusal};
use super::run::Run;
use super::{Call, Stage};
use crate::config::Config;
use kvmroll_core::error_chain;
use kvmroll_core::events::{first_lines, EventOutcome};
use kvmroll_core::VmBrief;
use kvmroll_plugins::{self as plugins, Found};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The environment plugins get, besides the hook's own.
pub(super) fn plugin_env(
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

/// At `release end` of a VM defined for this container, the container the
/// database places it on now when that is another: it migrated there.
/// Only where the database is open (shutdown plugins exist).
fn migrated_to(run: &mut Run<'_>, brief: Option<&VmBrief>) -> Option<String> {
    let host = run.conf.host.clone();
    let vm = run.call.vm.clone();
    if brief.and_then(|b| b.container.as_deref()) != Some(host.as_str()) {
        return None;
    }
    let now = run.db.store()?.vm_brief(&vm).ok()??;
    now.container.filter(|c| *c != host)
}

/// A plugin's file name, for the one line libvirt shows.
pub(super) fn short(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// "N plugins did not run".
pub(super) fn not_run(n: usize) -> String {
    match n {
        1 => "1 plugin did not run".to_string(),
        n => format!("{n} plugins did not run"),
    }
}

/// Why a plugin run failed; `after`: how many plugins were still to run.
pub(super) fn failure(
    path: &Path,
    r: &plugins::RunResult,
    stage: &Stage,
    limit: Duration,
    after: usize,
) -> PluginFailure {
    let plugin = short(path);
    let said = kvmroll_core::text::headline(&String::from_utf8_lossy(&r.stderr), 300);
    if r.timed_out {
        PluginFailure::TimedOut {
            plugin,
            stage: stage.name().to_string(),
            limit: limit.as_secs(),
            // The budget is spent: the rest cannot run, on any stage.
            rest: match after {
                0 => String::new(),
                n => format!("; {}", not_run(n)),
            },
        }
    } else if let Some(signal) = r.signal {
        PluginFailure::Signal { plugin, signal }
    } else if said.is_empty() {
        PluginFailure::Status {
            plugin,
            status: r.code.unwrap_or(-1),
        }
    } else {
        PluginFailure::Said { plugin, said }
    }
}

/// What a stage's plugins did.
pub(super) struct Ran {
    /// The domain XML as the last preboot plugin left it.
    pub xml: String,
    /// Whether a preboot plugin replaced it.
    pub changed: bool,
    /// How many plugins were started.
    pub count: usize,
}

/// Runs the stage's plugins in order, within one budget. On a stage that
/// aborts, the first plugin refused, out of time or failed is the refusal;
/// on the others the rest still run, until the budget is spent.
pub(super) fn run_plugins(
    run: &mut Run<'_>,
    brief: Option<&VmBrief>,
    found: Vec<Found>,
    limit: Duration,
    deadline: Instant,
) -> Result<Ran, Refusal> {
    if found.is_empty() {
        // Most events: no environment to build, no copy of the XML.
        return Ok(Ran {
            xml: String::new(),
            changed: false,
            count: 0,
        });
    }
    let call = run.call;
    let stage = run.stage.clone();
    let vm = &call.vm;
    let uuid = brief.map(|b| b.uuid.as_str()).filter(|u| !u.is_empty());
    let mut env = plugin_env(call, &stage, run.conf, brief, run.db.unreachable());
    if stage == Stage::Shutdown {
        run.migrated_to = migrated_to(run, brief);
        if let Some(to) = &run.migrated_to {
            env.push(("KVMROLL_MIGRATED_TO".to_string(), to.clone()));
        }
    }
    let args = vec![stage.name().to_string(), vm.clone()];
    let mut ran = Ran {
        xml: call.xml.clone(),
        changed: false,
        count: 0,
    };
    let mut first_failure: Option<PluginFailure> = None;
    // Plugins still to run after the current one, for a budget that ends.
    let mut after = found.iter().filter(|f| matches!(f, Found::Run(_))).count();
    for found in found {
        let plugin = match found {
            Found::Refused { path, why } => {
                refused(run, path, why)?;
                continue;
            }
            Found::Run(plugin) => plugin,
        };
        after -= 1;
        let path = plugin.path();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            first_failure.get_or_insert(out_of_time(run, path, limit, after)?);
            break;
        }
        ran.count += 1;
        let result = match plugin.run(&args, &env, ran.xml.as_bytes(), left) {
            Ok(r) => r,
            Err(e) => {
                not_started(run, path, e)?;
                continue;
            }
        };
        if !result.success() {
            first_failure.get_or_insert(failed(run, path, &result, limit, after)?);
            if result.timed_out {
                break;
            }
            continue;
        }
        succeeded(run, path, &result, uuid, &mut ran)?;
    }
    if let Some(f) = &first_failure {
        log::warn!(
            "VM {vm}: {} stage finished with failures, first: {f}",
            stage.name()
        );
    }
    Ok(ran)
}

/// The failure refuses a stage that aborts; on the others it is reported.
fn refuse_or(run: &Run<'_>, failure: PluginFailure) -> Result<PluginFailure, Refusal> {
    if run.stage.aborts() {
        return Err(Refusal::Plugin {
            vm: run.call.vm.clone(),
            source: failure,
        });
    }
    Ok(failure)
}

/// A plugin the runner would not run (unsafe ownership or mode on its
/// way): recorded, and the refusal of a stage that aborts.
fn refused(run: &mut Run<'_>, path: PathBuf, why: String) -> Result<(), Refusal> {
    let call = run.call;
    let vm = &call.vm;
    log::warn!("VM {vm}: {} not run: {why}", path.display());
    run.event(
        Some(&path),
        EventOutcome::Refused,
        None,
        Duration::ZERO,
        why.clone(),
    );
    if run.stage.aborts() {
        return Err(Refusal::PluginRefused {
            vm: vm.clone(),
            stage: run.stage.name().to_string(),
            path,
            why,
        });
    }
    Ok(())
}

/// The budget ran out before the plugin at `path`: recorded; the refusal
/// of a stage that aborts, else the failure to report.
fn out_of_time(
    run: &mut Run<'_>,
    path: &Path,
    limit: Duration,
    after: usize,
) -> Result<PluginFailure, Refusal> {
    let failure = PluginFailure::OutOfTime {
        stage: run.stage.name().to_string(),
        limit: limit.as_secs(),
        plugin: short(path),
        not_run: not_run(after + 1),
    };
    run.event(
        Some(path),
        EventOutcome::Timeout,
        None,
        Duration::ZERO,
        failure.to_string(),
    );
    refuse_or(run, failure)
}

/// A plugin that could not be started: recorded; the refusal of a stage
/// that aborts, else logged.
fn not_started(run: &mut Run<'_>, path: &Path, e: std::io::Error) -> Result<(), Refusal> {
    let call = run.call;
    let vm = &call.vm;
    let failure = PluginFailure::NotStarted {
        path: path.to_path_buf(),
        source: e,
    };
    let msg = error_chain(&failure);
    run.event(
        Some(path),
        EventOutcome::Failed,
        None,
        Duration::ZERO,
        msg.clone(),
    );
    refuse_or(run, failure)?;
    log::error!("VM {vm}: {msg}");
    Ok(())
}

/// A plugin that failed, timed out or was killed: recorded with what it
/// said; the refusal of a stage that aborts, else the failure to report.
fn failed(
    run: &mut Run<'_>,
    path: &Path,
    result: &plugins::RunResult,
    limit: Duration,
    after: usize,
) -> Result<PluginFailure, Refusal> {
    let call = run.call;
    let vm = &call.vm;
    let stage = run.stage.clone();
    let stderr = first_lines(&String::from_utf8_lossy(&result.stderr), 5, 2000);
    let outcome = if result.timed_out {
        EventOutcome::Timeout
    } else {
        EventOutcome::Failed
    };
    let failure = failure(path, result, &stage, limit, after);
    let msg = failure.to_string();
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
    // A refusal is logged once, where main handles it.
    let failure = refuse_or(run, failure)?;
    log::warn!("VM {vm}: {} stage: {msg}", stage.name());
    Ok(failure)
}

/// A plugin that succeeded: a preboot plugin's output, if any, replaces
/// the XML the next one sees; recorded with its stderr.
fn succeeded(
    run: &mut Run<'_>,
    path: &Path,
    result: &plugins::RunResult,
    uuid: Option<&str>,
    ran: &mut Ran,
) -> Result<(), Refusal> {
    let call = run.call;
    let vm = &call.vm;
    let stderr = first_lines(&String::from_utf8_lossy(&result.stderr), 5, 2000);
    if matches!(run.stage, Stage::Preboot | Stage::Filter) {
        match replacement(path, &result.stdout, vm, uuid) {
            Ok(None) => {}
            Ok(Some(out)) => {
                ran.xml = out.to_string();
                ran.changed = true;
            }
            Err(failure) => {
                run.event(
                    Some(path),
                    EventOutcome::Failed,
                    result.code,
                    result.duration,
                    error_chain(&failure),
                );
                return Err(Refusal::Plugin {
                    vm: vm.clone(),
                    source: failure,
                });
            }
        }
    }
    run.event(
        Some(path),
        EventOutcome::Ok,
        result.code,
        result.duration,
        stderr,
    );
    Ok(())
}

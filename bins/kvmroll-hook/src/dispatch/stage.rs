//! The body of a stage: reach the database where the stage needs it, run
//! the plugins within the stage's budget, then what the stage does after
//! them (allocate: the relocation check and the disks; preboot: the drift
//! check; a filter: the XML for libvirt).

use super::disks::prepare_disks;
use super::drift::before_start;
use super::limits::{flag, stage_limit};
use super::plugin_run::run_plugins;
use super::refusal::Refusal;
use super::relocation::{after_allocate, stale_check};
use super::run::Run;
use super::Stage;
use kvmroll_core::metadata::Metadata;
use kvmroll_core::xml::Element;
use kvmroll_core::VmBrief;
use kvmroll_plugins as plugins;
use std::time::Instant;

/// What a stage hands libvirt besides its verdict.
pub(super) struct Body {
    pub(super) stdout: Option<String>,
}

pub(super) fn stage_body(
    run: &mut Run<'_>,
    brief: Option<&VmBrief>,
    meta: Option<&Metadata>,
    doc: Option<&Element>,
) -> Result<Body, Refusal> {
    let call = run.call;
    let stage = run.stage.clone();
    let vm = &call.vm;
    // One budget for the whole stage, counted from the hook's start: it is
    // what libvirtd waits for.
    let limit = stage_limit(&stage, brief, vm);
    let deadline = run.started + limit;
    let euid = nix::unistd::geteuid().as_raw();
    let named = kvmroll_core::model::check_name("VM", vm).map_err(|e| e.to_string());
    let found = plugins::discover(
        &run.conf.root,
        stage.name(),
        named.map(|()| vm.as_str()),
        euid,
    );
    if let Some(meta) = meta {
        reach_database(run, brief, meta, !found.is_empty(), deadline)?;
    }
    let ran = run_plugins(run, brief, found, limit, deadline)?;
    match stage {
        Stage::Allocate => {
            let roots = after_allocate(run, brief, meta, ran.count > 0)?;
            prepare_disks(
                run,
                brief,
                meta,
                doc,
                ran.count > 0,
                roots.as_deref(),
                deadline,
            )?;
        }
        Stage::Preboot => {
            if ran.changed {
                log::warn!("VM {vm}: preboot plugins changed the XML, but libvirt takes hook XML only at restore and migrate; change the database (kvmroll) so the definition is right at a cold start");
            }
            before_start(run, brief, meta, doc)?;
        }
        Stage::Filter if ran.changed => {
            return Ok(Body {
                stdout: Some(ran.xml),
            });
        }
        _ => {}
    }
    Ok(Body { stdout: None })
}

/// For a VM with kvmroll's metadata, opens the database only where the
/// stage needs it; a start that requires it (`kvm_require_database`) is
/// refused when it does not answer.
fn reach_database(
    run: &mut Run<'_>,
    brief: Option<&VmBrief>,
    meta: &Metadata,
    with_plugins: bool,
    deadline: Instant,
) -> Result<(), Refusal> {
    let call = run.call;
    let vm = &call.vm;
    let stage = run.stage.clone();
    let required = flag(brief, "kvm_require_database");
    let wanted = match stage {
        // Plugins may write through kvmroll, and allocate's may move
        // the VM: they are told whether the database answers.
        Stage::Allocate => with_plugins || required,
        Stage::Shutdown => with_plugins,
        _ => false,
    };
    if wanted {
        run.open_db(brief, deadline);
    }
    if let (Some(why), true, true) = (run.db.unreachable(), required, stage.aborts()) {
        return Err(Refusal::DatabaseRequired {
            vm: vm.clone(),
            why: why.to_string(),
        });
    }
    if stage == Stage::Allocate {
        stale_check(run, meta);
    }
    Ok(())
}

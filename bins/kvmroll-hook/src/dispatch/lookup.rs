//! A VM whose definition has no kvmroll metadata (defined by hand, or by a
//! kvmroll before metadata): looked up in the database, or passed through.

use super::limits::DB_CONNECT_TIMEOUT;
use super::refusal::Refusal;
use super::run::{Db, Run};
use super::{Answer, Stage};
use kvmroll_core::events::EventOutcome;
use kvmroll_core::{error_chain, OpenMode, StoreError, VmBrief};
use std::time::Duration;

/// What the database says of a VM with no kvmroll metadata.
pub(super) enum Known {
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
pub(super) fn look_up(run: &mut Run<'_>) -> Result<Known, Refusal> {
    let call = run.call;
    let db = run.conf.database();
    // A server is given the hook's connection time limit.
    let opened = kvmroll_core::open_within(
        &db,
        OpenMode::ReadWriteFast,
        Duration::from_secs(DB_CONNECT_TIMEOUT),
    );
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
            error_chain(e),
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
        Err(source) => {
            let unreachable = error_chain(&source);
            let why = Refusal::LookUp {
                vm: call.vm.clone(),
                source: Box::new(source),
            };
            // A start is refused, and the refusal reported once, by main.
            if run.stage.aborts() {
                return Err(why);
            }
            log::error!("{}", error_chain(&why));
            // Stop side: still run what can run, without the database.
            run.db = Db::Unreachable(unreachable);
            Ok(Known::Unanswered)
        }
    }
}

/// A VM kvmroll does not manage: untouched, with one event per lifecycle,
/// at its start.
pub(super) fn pass_through(mut run: Run<'_>) -> Answer {
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
        EventOutcome::PassThrough,
        None,
        run.started.elapsed(),
        "not in the kvmroll database".into(),
    );
    Answer {
        upkeep: run.close(),
        ..Answer::default()
    }
}

//! One call's state: the database as far as it was reached, and the events
//! recorded so far, written to the container's spool when the call ends.

use super::limits::{seconds, DB_CONNECT_TIMEOUT};
use super::{Answer, Call, Stage};
use crate::config::Config;
use kvmroll_core::events::{Event, EventOutcome};
use kvmroll_core::spool::Spool;
use kvmroll_core::{error_chain, OpenMode, Store, VmBrief};
use std::path::Path;
use std::time::{Duration, Instant};

/// The database as one call reaches it. The hook's common path never opens
/// it: only allocate and shutdown with plugins (they may write through
/// `kvmroll`), the relocation and generation checks after them, a start
/// that requires it (`kvm_require_database`), and disk work to record; and
/// every event of a VM without kvmroll's metadata, as before it had any.
pub(super) enum Db {
    /// Not needed so far.
    Unopened,
    Open(Box<dyn Store>),
    /// Tried, and it did not answer: the one-line reason.
    Unreachable(String),
}

impl Db {
    pub(super) fn store(&mut self) -> Option<&mut Box<dyn Store>> {
        match self {
            Db::Open(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn unreachable(&self) -> Option<&str> {
        match self {
            Db::Unreachable(why) => Some(why),
            _ => None,
        }
    }
}

pub(super) struct Run<'a> {
    pub(super) call: &'a Call,
    pub(super) stage: Stage,
    pub(super) conf: &'a Config,
    pub(super) events: Vec<Event>,
    pub(super) started: Instant,
    pub(super) db: Db,
    /// An allocate plugin moved the VM to another container: its
    /// definition is to follow it there.
    pub(super) relocated: bool,
    /// At `release end`, the database places the VM on this other
    /// container now: it migrated there (`kvmroll vm migrate`).
    pub(super) migrated_to: Option<String>,
}

impl Run<'_> {
    pub(super) fn event(
        &mut self,
        plugin: Option<&Path>,
        outcome: EventOutcome,
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
    pub(super) fn open_db(&mut self, brief: Option<&VmBrief>, deadline: Instant) {
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
                let why = error_chain(&e);
                log::warn!("VM {vm}: the kvmroll database is unreachable: {why}");
                self.event(
                    None,
                    EventOutcome::Unreachable,
                    None,
                    t.elapsed(),
                    format!("the database is unreachable: {why}"),
                );
                Db::Unreachable(why)
            }
        };
    }

    /// The invocation's own event, then [`Run::close`].
    pub(super) fn finish(mut self, answer: &Answer) -> bool {
        let (outcome, message) = match &answer.refusal {
            Some(r) => (EventOutcome::Failed, error_chain(r)),
            None => (EventOutcome::Ok, String::new()),
        };
        let took = self.started.elapsed();
        self.event(None, outcome, None, took, message);
        self.close()
    }

    /// Writes every event of the call to the container's spool, one file,
    /// for the detached upkeep to forward (`kvmroll_core::spool`). Returns
    /// whether that upkeep must be started: no forwarder holds the spool.
    pub(super) fn close(mut self) -> bool {
        let vm = &self.call.vm;
        let spool = Spool::new(&self.conf.spool, &self.conf.host);
        let upkeep = match spool.write(&self.events) {
            Ok(_) => !spool.busy(),
            Err(e) => {
                // A spool that cannot be written (a full disk): the
                // database, if this call has it, or the log keeps them.
                let why = error_chain(&e);
                let kept = match self.db.store() {
                    Some(store) => store
                        .record_events(&self.events)
                        .map_err(|e| error_chain(&e)),
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

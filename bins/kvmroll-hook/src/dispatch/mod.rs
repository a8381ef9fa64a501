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

mod disks;
mod drift;
mod filter;
mod limits;
mod lookup;
mod plugin_run;
mod refusal;
mod relocation;
mod run;
mod stage;

use crate::config::Config;
use kvmroll_core::drift::{check_parsed, DomainError};
use kvmroll_core::error_chain;
use kvmroll_core::metadata::Metadata;
use kvmroll_core::xml::{parse_document, Element};
use kvmroll_core::VmBrief;
use lookup::{look_up, pass_through, Known};
pub use refusal::Refusal;
use run::{Db, Run};
use stage::stage_body;
use std::path::PathBuf;
use std::time::Instant;

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
#[derive(Debug, Default)]
pub struct Answer {
    /// Written to stdout: replacement XML, at restore and migrate only.
    pub stdout: Option<String>,
    /// Why libvirt is refused; `Some` means exit 1, with its one line.
    pub refusal: Option<Refusal>,
    /// Spawn the detached definition refresh after answering.
    pub refresh: bool,
    /// Spawn the detached database upkeep after answering.
    pub upkeep: bool,
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
        migrated_to: None,
    };
    let doc = parse_document(&call.xml).map_err(DomainError::Malformed);
    // kvmroll's metadata, where the definition has it: everything this
    // call needs to know of the VM, without the database.
    let meta = match &doc {
        Ok(d) => Metadata::find(d).unwrap_or_else(|e| {
            log::warn!(
                "VM {}: {}; looking it up in the database instead",
                call.vm,
                error_chain(&e)
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
        (Ok(d), true) => check_parsed(d, &call.vm, None),
        (Err(e), true) => Err(e.clone()),
        (_, false) => Ok(()),
    }
    .map_err(|source| Refusal::Stdin {
        vm: call.vm.clone(),
        source,
    });
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
            // A VM that migrated away has its definition where it went,
            // and none is to come back here.
            answer.refresh = stage == Stage::Shutdown && here && run.migrated_to.is_none();
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
mod tests;

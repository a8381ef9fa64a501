//! After the allocate plugins: whether one moved the VM to another
//! container, and whether libvirt's definition is older than the database.

use super::refusal::Refusal;
use super::run::{Db, Run};
use crate::config::Config;
use kvmroll_core::disks::ROOTS_ATTR;
use kvmroll_core::error_chain;
use kvmroll_core::events::EventOutcome;
use kvmroll_core::metadata::Metadata;
use kvmroll_core::VmBrief;
use std::time::Duration;

/// Refuses the local start of a VM the database now places elsewhere (an
/// allocate plugin moved it) or nowhere.
pub(super) fn relocated(
    vm: &str,
    conf: &Config,
    brief: Option<&VmBrief>,
    now: Option<VmBrief>,
) -> Result<(), Refusal> {
    let Some(now) = now else {
        // Gone from the database meanwhile: the definition still says
        // what to start.
        log::warn!("VM {vm} is no longer in the kvmroll database");
        return Ok(());
    };
    let before = brief.and_then(|b| b.container.clone());
    let vm = vm.to_string();
    match now.container {
        Some(c) if c == conf.host => Ok(()),
        Some(container) if Some(&container) != before.as_ref() => {
            Err(Refusal::Moved { vm, container })
        }
        Some(container) => Err(Refusal::Elsewhere {
            vm,
            container,
            host: conf.host.clone(),
        }),
        None => Err(Refusal::Unplaced { vm }),
    }
}

/// Where the database is open anyway (allocate with plugins): a definition
/// of an older generation than the database's rows is stale, said in an
/// event and the log; `kvmroll vm define` (or the refresh after the VM
/// stops) brings it up to date.
pub(super) fn stale_check(run: &mut Run<'_>, meta: &Metadata) {
    let vm = run.call.vm.clone();
    let Some(store) = run.db.store() else {
        return;
    };
    let now = match store.vm_brief(&vm) {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => {
            log::warn!("VM {vm}: generation check skipped: {}", error_chain(&e));
            return;
        }
    };
    if now.generation > meta.generation {
        let why = format!(
            "libvirt's definition is generation {} of VM {vm}, the database's is {}: it is stale; `kvmroll vm define {vm}` brings it up to date",
            meta.generation, now.generation
        );
        log::warn!("{why}");
        run.event(None, EventOutcome::Stale, None, Duration::ZERO, why);
    }
}

/// After the allocate plugins: the VM's `kvm_disk_roots` (re-read where a
/// plugin ran and the VM has no metadata), and, where a plugin ran and the
/// database answers, the refusal of a VM it moved elsewhere.
pub(super) fn after_allocate(
    run: &mut Run<'_>,
    brief: Option<&VmBrief>,
    meta: Option<&Metadata>,
    plugins_ran: bool,
) -> Result<Option<String>, Refusal> {
    let call = run.call;
    let vm = &call.vm;
    let conf = run.conf;
    let mut roots = brief.and_then(|b| b.attrs.get(ROOTS_ATTR).cloned());
    // Only a plugin could have moved the VM, or changed its disks.
    if !plugins_ran {
        return Ok(roots);
    }
    match &mut run.db {
        Db::Open(store) => {
            let now = store.vm_brief(vm).map_err(|source| Refusal::Reread {
                vm: vm.clone(),
                source: Box::new(source),
            })?;
            if meta.is_none() {
                roots = now.as_ref().and_then(|b| b.attrs.get(ROOTS_ATTR).cloned());
            }
            let moved = relocated(vm, conf, brief, now);
            run.relocated = matches!(moved, Err(Refusal::Moved { .. }));
            moved?;
        }
        Db::Unreachable(why) => {
            let why = format!("the relocation check after the allocate plugins is skipped: the database is unreachable: {why}");
            log::warn!("VM {vm}: {why}");
            run.event(None, EventOutcome::Unreachable, None, Duration::ZERO, why);
        }
        Db::Unopened => {}
    }
    Ok(roots)
}

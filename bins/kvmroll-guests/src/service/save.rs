//! Saving one VM: a managed save within its share of the stop's budget
//! (the stop's monitor aborts one that runs past it); a failed save is
//! handed back for its fallback, which runs beside the next saves. And
//! noticing a save still running in libvirtd from a stop cut off.

use super::{human, Service, Shared};
use crate::image;
use crate::journal::VmState;
use kvmroll_virt::{DomainState, Hypervisor, VirtError};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The saves under way: each VM's deadline, read by the stop's monitor.
pub(super) type InFlight = Mutex<BTreeMap<String, Instant>>;

/// Whether a save of the VM is under way in libvirtd, begun by this run or
/// by one cut off before. libvirt's job query alone misses the moments when
/// the job's owner is gone; the pause reason libvirt sets for a save holds
/// from the pause until the image is written.
pub(super) fn save_in_flight(hv: &dyn Hypervisor, name: &str) -> bool {
    hv.job_progress(name).is_ok_and(|j| j.is_some())
        || hv.domain(name).is_ok_and(|d| d.is_some_and(|d| d.saving))
}

/// Waits, up to `limit`, for a save under way to end.
pub(super) fn wait_for_save(hv: &dyn Hypervisor, name: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && save_in_flight(hv, name) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether libvirt, asked after a save it reported done, has the domain
/// without a managed-save image (a lost save). A question that fails
/// proves nothing: the save is believed.
fn image_missing(hv: &dyn Hypervisor, name: &str) -> bool {
    matches!(hv.domain(name), Ok(Some(d)) if !d.has_managed_save)
}

fn save(hv: &dyn Hypervisor, name: &str, bypass_cache: bool) -> Result<(), VirtError> {
    if bypass_cache {
        hv.managed_save_bypass_cache(name)
    } else {
        hv.managed_save(name)
    }
}

/// Saves `name` within `limit` and journals each step; its deadline sits
/// in `inflight` while the save runs. A failed save is journaled and its
/// reason returned: the caller hands the VM to its fallback.
pub(super) fn save_one(
    hv: &dyn Hypervisor,
    svc: &Service,
    name: &str,
    limit: Duration,
    shared: &Shared,
    inflight: &InFlight,
) -> Result<(), String> {
    let started = Instant::now();
    shared.set(name, VmState::Saving, format!("within {}", secs(limit)));
    inflight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), started + limit);
    // An earlier stop, cut off, may have left this VM's save running in
    // libvirtd: let it finish rather than start a second one.
    let result = if save_in_flight(hv, name) {
        log::info!("VM {name}: a save begun earlier is still running; waiting for it");
        wait_for_save(hv, name, limit);
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
        Ok(()) if image_missing(hv, name) => {
            let why = "libvirt reported the save done but left no image: its memory is lost, and start boots it afresh".to_string();
            log::error!("VM {name}: {why}");
            shared.set(name, VmState::SaveLost, why);
            Ok(())
        }
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
                j.set(name, VmState::Saved, note);
                if let Some(e) = j.vms.get_mut(name) {
                    e.image_size = size;
                }
            });
            Ok(())
        }
        Err(e) => {
            let why = kvmroll_core::error_chain(&e);
            log::warn!("VM {name}: save failed ({why}); asking it to shut down");
            shared.set(name, VmState::SaveFailed, why.clone());
            Err(why)
        }
    }
}

/// A limit as the journal and the log say it: seconds, to a tenth.
pub(super) fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

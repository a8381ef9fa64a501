//! Shutting one VM down: an ACPI request, a wait within the VM's limit,
//! then a destroy only where `kvm_guests_on_timeout=destroy` asks for it.

use crate::journal::VmState;
use crate::known::Settings;
use kvmroll_virt::{DomainState, Hypervisor};
use std::time::{Duration, Instant};

/// Whether the VM may still run: only libvirt saying it is off (or gone)
/// counts as off; a failed query does not.
fn running(hv: &dyn Hypervisor, name: &str) -> bool {
    match hv.domain(name) {
        Ok(Some(d)) => d.state != DomainState::ShutOff,
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Asks a VM to shut down and waits; at the limit destroys it only where so
/// configured. Returns the journal state reached.
pub(super) fn shut_down(hv: &dyn Hypervisor, name: &str, s: &Settings) -> VmState {
    if let Err(e) = hv.shutdown(name) {
        if !running(hv, name) {
            return VmState::ShutDown;
        }
        log::warn!(
            "VM {name}: shutdown request failed: {}",
            kvmroll_core::error_chain(&e)
        );
    }
    let deadline = Instant::now() + s.shutdown_timeout;
    while Instant::now() < deadline {
        if !running(hv, name) {
            return VmState::ShutDown;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !running(hv, name) {
        return VmState::ShutDown;
    }
    if !s.destroy_on_timeout {
        log::warn!(
            "VM {name}: did not shut down within {}s; left running (kvm_guests_on_timeout=destroy would destroy it)",
            s.shutdown_timeout.as_secs()
        );
        return VmState::LeftRunning;
    }
    match hv.destroy(name) {
        Ok(()) => {
            log::warn!(
                "VM {name}: did not shut down within {}s: destroyed",
                s.shutdown_timeout.as_secs()
            );
            VmState::Destroyed
        }
        Err(e) => {
            log::error!(
                "VM {name}: cannot destroy it: {}",
                kvmroll_core::error_chain(&e)
            );
            VmState::LeftRunning
        }
    }
}

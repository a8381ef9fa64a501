//! `kvmroll-hook refresh-after PID VM`, started detached by the hook at
//! `release end`: once that hook (PID) is gone, and libvirt with it is done
//! with the VM, runs `kvmroll vm sync VM`, which redefines the VM only where
//! libvirt's definition differs from the database. The hook itself must not
//! call libvirt: libvirtd waits for it.

use crate::config::Config;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the refresh waits for its hook to exit.
const WAIT: Duration = Duration::from_secs(120);

/// Why a definition refresh did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("VM {vm}: definition refresh failed: {stderr}")]
    Failed { vm: String, stderr: String },
    #[error("VM {vm}: cannot run {}", bin.display())]
    Run {
        vm: String,
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Waits for the hook `pid` to be gone, at most [`WAIT`].
pub fn wait_for(pid: nix::unistd::Pid) {
    let deadline = Instant::now() + WAIT;
    while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Refreshes the VM's definition; what `kvmroll vm sync` said on success.
pub fn refresh(conf: &Config, vm: &str) -> Result<String, RefreshError> {
    let (bin, args) = crate::dispatch::refresh_command(conf, vm);
    let out = std::process::Command::new(&bin)
        .args(&args)
        .env_remove("KVMROLL_STAGE")
        .output()
        .map_err(|source| RefreshError::Run {
            vm: vm.to_string(),
            bin: bin.clone(),
            source,
        })?;
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        Ok(said)
    } else {
        Err(RefreshError::Failed {
            vm: vm.to_string(),
            stderr: said,
        })
    }
}

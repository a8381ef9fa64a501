//! The journal: what `stop` and `start` did to each VM, written to a
//! temporary file, synced and renamed at every step, so that a run cut off
//! halfway (killed, power lost) is understood by the next one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot write the journal {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the journal {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the journal {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Stopping,
    Stopped,
    Starting,
    Started,
}

/// The last state a VM reached in a run, as the journal spells it
/// (`saved`, `shut-down`, ...): one enum rather than strings, as
/// firecracker's `VmState`, so that a state cannot be misspelt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    /// `stop` or `start` will act on it; the note says how.
    Planned,
    Saving,
    Saved,
    /// The save failed; a shutdown follows.
    SaveFailed,
    /// libvirt reported the save done but left no image: the VM is off and
    /// its memory is gone; `start` boots it afresh.
    SaveLost,
    ShuttingDown,
    ShutDown,
    /// It did not shut down in time and was destroyed.
    Destroyed,
    /// It did not shut down in time and could not, or was not to, be destroyed.
    LeftRunning,
    /// The stop was interrupted before its save began.
    NotSaved,
    /// Live-migrated to another container (`kvm_guests_on_shutdown`); the
    /// note names it.
    Migrated,
    Restoring,
    Restored,
    /// Cold-booted: it had no saved image.
    Booted,
    /// Its saved image was unusable, moved aside, and it was cold-booted.
    Quarantined,
    AlreadyRunning,
    Failed,
}

impl VmState {
    /// The journal's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Planned => "planned",
            VmState::Saving => "saving",
            VmState::Saved => "saved",
            VmState::SaveFailed => "save-failed",
            VmState::SaveLost => "save-lost",
            VmState::ShuttingDown => "shutting-down",
            VmState::ShutDown => "shut-down",
            VmState::Destroyed => "destroyed",
            VmState::LeftRunning => "left-running",
            VmState::NotSaved => "not-saved",
            VmState::Migrated => "migrated",
            VmState::Restoring => "restoring",
            VmState::Restored => "restored",
            VmState::Booted => "booted",
            VmState::Quarantined => "quarantined",
            VmState::AlreadyRunning => "already-running",
            VmState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was done to one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its resolved `kvm_autostart`.
    pub autostart: bool,
    /// Whether it ran when `stop` began.
    pub was_running: bool,
    /// The last state reached.
    pub state: VmState,
    /// The size of its managed-save image when the save completed: a
    /// different size at `start` means the image was damaged since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    pub updated_ms: i64,
}

/// The whole journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub host: String,
    pub phase: Phase,
    pub updated_ms: i64,
    /// The save folder's disk as the last stop measured it, bytes per
    /// second: `kvm_guests_parallel=auto` at the next start uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes_per_sec: Option<u64>,
    pub vms: BTreeMap<String, Entry>,
}

impl Journal {
    pub fn new(host: &str, phase: Phase) -> Journal {
        Journal {
            host: host.to_string(),
            phase,
            updated_ms: kvmroll_core::now_ms(),
            disk_bytes_per_sec: None,
            vms: BTreeMap::new(),
        }
    }

    /// Reads the journal; `None` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Journal>, JournalError> {
        match std::fs::read(path) {
            Ok(bytes) => Journal::parse(&bytes)
                .map(Some)
                .map_err(|source| JournalError::Parse {
                    path: path.to_path_buf(),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(JournalError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses a journal's bytes (what [`Journal::save`] wrote); the fuzz
    /// target `journal` reaches this file by path.
    pub fn parse(bytes: &[u8]) -> Result<Journal, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The bytes [`Journal::save`] writes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Sets a VM's state (and note), keeping what else it knew.
    pub fn set(&mut self, vm: &str, state: VmState, note: impl Into<String>) {
        let now = kvmroll_core::now_ms();
        let e = self.vms.entry(vm.to_string()).or_insert_with(|| Entry {
            autostart: false,
            was_running: false,
            state,
            image_size: None,
            note: String::new(),
            updated_ms: now,
        });
        e.state = state;
        e.note = note.into();
        e.updated_ms = now;
        self.updated_ms = now;
    }

    /// Writes the journal atomically: a temporary file beside it, synced,
    /// renamed over it, and the folder synced.
    pub fn save(&self, path: &Path) -> Result<(), JournalError> {
        let err = |source| JournalError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let bytes = self.to_bytes().map_err(|e| err(std::io::Error::other(e)))?;
        kvmroll_core::sys::write_atomic(path, &bytes, 0o644).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal on disk and `status` spell a state the same way.
    #[test]
    fn states_are_spelt_as_the_journal_always_spelt_them() {
        use VmState::*;
        let all = [
            (Planned, "planned"),
            (Saving, "saving"),
            (Saved, "saved"),
            (SaveFailed, "save-failed"),
            (SaveLost, "save-lost"),
            (ShuttingDown, "shutting-down"),
            (ShutDown, "shut-down"),
            (Destroyed, "destroyed"),
            (LeftRunning, "left-running"),
            (NotSaved, "not-saved"),
            (Migrated, "migrated"),
            (Restoring, "restoring"),
            (Restored, "restored"),
            (Booted, "booted"),
            (Quarantined, "quarantined"),
            (AlreadyRunning, "already-running"),
            (Failed, "failed"),
        ];
        for (state, spelt) in all {
            assert_eq!(state.to_string(), spelt);
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{spelt}\""));
            assert_eq!(serde_json::from_str::<VmState>(&json).unwrap(), state);
        }
    }

    #[test]
    fn round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/journal.json");
        assert_eq!(Journal::load(&path).unwrap(), None);
        let mut j = Journal::new("c", Phase::Stopping);
        j.set("vm1", VmState::Saving, "");
        j.vms.get_mut("vm1").unwrap().autostart = true;
        j.save(&path).unwrap();
        j.set("vm1", VmState::Saved, "1.2s");
        j.save(&path).unwrap();
        let back = Journal::load(&path).unwrap().unwrap();
        assert_eq!(back, j);
        assert_eq!(back.vms["vm1"].state, VmState::Saved);
        let text = String::from_utf8(j.to_bytes().unwrap()).unwrap();
        assert!(text.contains(r#""state": "saved""#), "{text}");
        assert!(back.vms["vm1"].autostart);
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1);
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            Journal::load(&path),
            Err(JournalError::Parse { .. })
        ));
    }
}

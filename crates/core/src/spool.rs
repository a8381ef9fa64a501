//! The container's event spool: where the hook puts the events of one
//! libvirt call before they reach the cluster database, so that a frontend
//! that is down, slow or unreachable loses no event and makes no VM wait.
//!
//! Each hook call writes one file, `SEQ.events`, holding its events as JSON
//! lines; the name sorts in the order the calls were made (a nanosecond
//! clock, then the pid). The file is written under a temporary name and
//! renamed, so a reader sees all of it or none, whatever process is killed
//! when. The detached upkeep ([`Spool::forward`]) hands the files to the
//! database oldest first and removes each once its events are committed.
//!
//! Exactly once: every event carries an origin, `HOST/FILE#N`, which the
//! database keeps unique. A forwarder killed between the commit and the
//! unlink finds the same file next time, and the database ignores the
//! events it already has. Two forwarders never work at once: the first
//! holds an exclusive `flock` on the spool folder.
//!
//! Durability: the hook does not fsync the spool. A kill of any process at
//! any moment loses nothing (the kernel has the file once `rename` returns);
//! a power cut may lose the last few seconds of events, which an fsync on
//! every VM event (milliseconds on a busy disk, with libvirtd waiting) would
//! keep. A file torn by a power cut is moved to `bad/` with a log line, not
//! forwarded and not deleted.

use crate::events::Event;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where a container spools its events unless told otherwise.
pub const DEFAULT_SPOOL: &str = "/var/lib/kvmroll/spool";

/// The ending of a spool file; temporary files start with a dot.
const SUFFIX: &str = ".events";

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot write the event spool {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the event spool {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One spooled event and its origin, the key that makes its delivery
/// happen once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub origin: String,
    pub event: Event,
}

/// What one [`Spool::forward`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// Files handed over and removed.
    pub files: usize,
    /// Events in them.
    pub events: usize,
    /// Files left for the next time: the database refused or did not answer.
    pub left: usize,
    /// Files that could not be read as events, moved to `bad/`.
    pub bad: usize,
    /// Another forwarder held the spool: nothing was done.
    pub busy: bool,
}

/// A spool folder.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    host: String,
}

impl Spool {
    /// The spool in `dir` of container `host` (the origin's first part).
    pub fn new(dir: impl Into<PathBuf>, host: &str) -> Spool {
        Spool {
            dir: dir.into(),
            host: host.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one call's events as one file. The folder is made (mode 0700)
    /// when missing.
    pub fn write(&self, events: &[Event]) -> Result<PathBuf, SpoolError> {
        let fail = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Write { path, source }
        };
        let mut text = Vec::with_capacity(256 * events.len());
        for e in events {
            // An Event always serialises: strings, numbers and an enum.
            serde_json::to_writer(&mut text, e).map_err(|e| fail(&self.dir)(e.into()))?;
            text.push(b'\n');
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{stamp:024}-{:010}{SUFFIX}", std::process::id());
        let dest = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}"));
        let write = |tmp: &Path| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp)?;
            f.write_all(&text)?;
            std::fs::rename(tmp, &dest)
        };
        match write(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)
                    .map_err(fail(&self.dir))?;
                write(&tmp).map_err(fail(&dest))?;
            }
            other => other.map_err(fail(&dest))?,
        }
        Ok(dest)
    }

    /// The spool files, oldest first.
    pub fn pending(&self) -> Result<Vec<PathBuf>, SpoolError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SpoolError::Read {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(SUFFIX) && !n.starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Reads one spool file's events with their origins; `None` for a file
    /// that is not whole JSON lines of events.
    fn read(&self, path: &Path) -> Result<Option<Vec<Spooled>>, SpoolError> {
        let bytes = std::fs::read(path).map_err(|source| SpoolError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(self.parse(&file, &bytes))
    }

    /// The events of spool file `file` whose bytes are `bytes`, with their
    /// origins; `None` unless it is whole JSON lines of events (text that
    /// is not UTF-8 is torn or foreign too).
    pub fn parse(&self, file: &str, bytes: &[u8]) -> Option<Vec<Spooled>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let event = serde_json::from_str::<Event>(line).ok()?;
            out.push(Spooled {
                origin: format!("{}/{file}#{i}", self.host),
                event,
            });
        }
        // An empty file is what a power cut can leave of a rename whose data
        // never reached the disk.
        (!out.is_empty()).then_some(out)
    }

    /// Hands every spooled file, oldest first, to `deliver`, which commits
    /// its events in one transaction (ignoring origins it already has);
    /// each file delivered is removed. The first failure stops the round,
    /// so events of one VM are never delivered out of order.
    pub fn forward(
        &self,
        deliver: &mut dyn FnMut(&[Spooled]) -> Result<(), String>,
    ) -> Result<Forwarded, SpoolError> {
        let mut done = Forwarded::default();
        let files = self.pending()?;
        if files.is_empty() {
            return Ok(done);
        }
        let Some(_lock) = self.lock()? else {
            done.busy = true;
            return Ok(done);
        };
        // Read again under the lock: another forwarder may have finished.
        let files = self.pending()?;
        for (i, path) in files.iter().enumerate() {
            let Some(events) = self.read(path)? else {
                self.set_aside(path);
                done.bad += 1;
                continue;
            };
            if let Err(why) = deliver(&events) {
                log::warn!(
                    "event spool {}: {} files wait for the database: {why}",
                    self.dir.display(),
                    files.len() - i
                );
                done.left = files.len() - i;
                return Ok(done);
            }
            if let Err(e) = std::fs::remove_file(path) {
                // Delivered already: the next round finds it and the
                // database ignores its events.
                log::warn!("event spool: cannot remove {}: {e}", path.display());
            }
            done.files += 1;
            done.events += events.len();
        }
        Ok(done)
    }

    /// An exclusive, non-blocking flock on the spool folder; `None` when
    /// another process holds it.
    fn lock(&self) -> Result<Option<std::fs::File>, SpoolError> {
        let dir = std::fs::File::open(&self.dir).map_err(|source| SpoolError::Read {
            path: self.dir.clone(),
            source,
        })?;
        // SAFETY: flock takes a descriptor we own and flags; it touches no
        // memory of ours.
        let r =
            unsafe { nix::libc::flock(dir.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
        Ok((r == 0).then_some(dir))
    }

    /// Moves a file that cannot be read as events to `bad/`, keeping it for
    /// a person to look at.
    fn set_aside(&self, path: &Path) {
        let bad = self.dir.join("bad");
        let moved = std::fs::create_dir_all(&bad)
            .and_then(|()| std::fs::rename(path, bad.join(path.file_name().unwrap_or_default())));
        match moved {
            Ok(()) => log::error!(
                "event spool: {} is not a whole events file (a power cut?): moved to {}",
                path.display(),
                bad.display()
            ),
            Err(e) => log::error!(
                "event spool: {} is not a whole events file and cannot be moved aside: {e}",
                path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Outcome;

    fn event(vm: &str, n: i64) -> Event {
        Event {
            id: 0,
            time_ms: n,
            vm: vm.into(),
            stage: "allocate".into(),
            op: "prepare".into(),
            subop: "begin".into(),
            plugin: None,
            outcome: Outcome::Ok,
            status: Some(0),
            duration_ms: 1,
            message: "a \"quoted\"\nline".into(),
        }
    }

    #[test]
    fn events_come_back_in_order_with_origins_and_files_go() {
        let t = tempfile::tempdir().unwrap();
        let spool = Spool::new(t.path().join("spool"), "vm-container-0-0");
        spool.write(&[event("a", 1), event("a", 2)]).unwrap();
        spool.write(&[event("b", 3)]).unwrap();
        let mut got = Vec::new();
        let done = spool
            .forward(&mut |s| {
                got.extend(s.iter().cloned());
                Ok(())
            })
            .unwrap();
        assert_eq!((done.files, done.events, done.left), (2, 3, 0));
        let times: Vec<i64> = got.iter().map(|s| s.event.time_ms).collect();
        assert_eq!(times, [1, 2, 3]);
        assert_eq!(got[0].event, event("a", 1));
        assert!(got[1].origin.starts_with("vm-container-0-0/") && got[1].origin.ends_with("#1"));
        assert!(spool.pending().unwrap().is_empty());
        // The folder is root's alone.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(spool.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_refusing_database_keeps_the_files_and_stops_the_round() {
        let t = tempfile::tempdir().unwrap();
        let spool = Spool::new(t.path(), "c");
        for n in 0..3 {
            spool.write(&[event("a", n)]).unwrap();
        }
        let mut calls = 0;
        let done = spool
            .forward(&mut |_| {
                calls += 1;
                if calls == 2 {
                    Err("database unreachable".into())
                } else {
                    Ok(())
                }
            })
            .unwrap();
        assert_eq!((done.files, done.left), (1, 2));
        assert_eq!(spool.pending().unwrap().len(), 2);
        // Delivered twice (a kill between commit and unlink): same origins.
        let first: Vec<String> = {
            let mut o = Vec::new();
            spool
                .forward(&mut |s| {
                    o.extend(s.iter().map(|s| s.origin.clone()));
                    Err("again".into())
                })
                .unwrap();
            o
        };
        let mut second = Vec::new();
        spool
            .forward(&mut |s| {
                second.extend(s.iter().map(|s| s.origin.clone()));
                Ok(())
            })
            .unwrap();
        assert_eq!(first[0], second[0]);
    }

    #[test]
    fn torn_files_are_set_aside_and_temporaries_ignored() {
        let t = tempfile::tempdir().unwrap();
        let spool = Spool::new(t.path(), "c");
        spool.write(&[event("a", 1)]).unwrap();
        std::fs::write(
            t.path().join("000000000000000000000001-0000000001.events"),
            "",
        )
        .unwrap();
        std::fs::write(
            t.path().join("000000000000000000000002-0000000001.events"),
            "{\"id\":0,\"time",
        )
        .unwrap();
        std::fs::write(t.path().join(".000000000000000000000003-1.events"), "half").unwrap();
        let mut n = 0;
        let done = spool
            .forward(&mut |s| {
                n += s.len();
                Ok(())
            })
            .unwrap();
        assert_eq!((done.files, done.bad, n), (1, 2, 1));
        assert_eq!(std::fs::read_dir(t.path().join("bad")).unwrap().count(), 2);
    }

    #[test]
    fn a_second_forwarder_waits_for_the_first() {
        let t = tempfile::tempdir().unwrap();
        let spool = Spool::new(t.path(), "c");
        spool.write(&[event("a", 1)]).unwrap();
        let held = spool.lock().unwrap().expect("free");
        let done = spool.forward(&mut |_| Ok(())).unwrap();
        assert!(done.busy);
        drop(held);
        assert_eq!(spool.forward(&mut |_| Ok(())).unwrap().files, 1);
    }
}

//! The container's event spool: where the hook puts the events of one
//! libvirt call before they reach the cluster database, so that a frontend
//! that is down, slow or unreachable loses no event and makes no VM wait.
//!
//! Each hook call writes one file, `SEQ.events`, holding its events as JSON
//! lines; the name sorts in the order the calls were made (a nanosecond
//! clock, then the pid). The file is written under a temporary name and
//! renamed, so a reader sees all of it or none, whatever process is killed
//! when. The detached upkeep ([`Spool::forward`]) hands the files to the
//! database oldest first, up to [`BATCH`] files in one transaction (one
//! commit, and one sync of the database, for a burst of events rather than
//! one per event), and removes them once their events are committed.
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

pub use crate::events::Spooled;

use crate::events::Event;
use crate::store::{Store, StoreError};
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
    /// Why the files left wait (the database's error), when some do.
    pub waiting: Option<String>,
}

impl Forwarded {
    /// Adds another round's counts to these.
    fn add(&mut self, round: Forwarded) {
        self.files += round.files;
        self.events += round.events;
        self.bad += round.bad;
        self.left = round.left;
        self.busy = round.busy;
        self.waiting = round.waiting;
    }
}

/// The spool's lock, held by one forwarder at a time (an exclusive `flock`
/// on the spool folder, released when this is dropped or its process dies).
#[derive(Debug)]
pub struct SpoolLock {
    _dir: std::fs::File,
}

/// The most spool files whose events go to the database in one transaction:
/// a burst of events costs one commit, and the spool a long outage left
/// is not held in memory all at once.
pub const BATCH: usize = 256;

/// How long a temporary file (a hook killed between writing its events
/// and naming the file) is kept before it is swept away.
const TEMPORARY_KEPT: std::time::Duration = std::time::Duration::from_secs(600);

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

    /// Hands the spooled files, oldest first, to `deliver`, up to [`BATCH`]
    /// files' events at a time, which it commits in one transaction
    /// (ignoring origins it already has); the files delivered are removed.
    /// The first failure stops the round, so events of one VM are never
    /// delivered out of order. Does nothing (`busy`) while another
    /// forwarder holds the spool.
    pub fn forward(
        &self,
        deliver: &mut dyn FnMut(&[Spooled]) -> Result<(), String>,
    ) -> Result<Forwarded, SpoolError> {
        if self.pending()?.is_empty() {
            return Ok(Forwarded::default());
        }
        let Some(held) = self.lock()? else {
            return Ok(Forwarded {
                busy: true,
                ..Forwarded::default()
            });
        };
        self.forward_locked(&held, deliver)
    }

    /// [`Spool::forward`] by the holder of the spool's lock.
    pub fn forward_locked(
        &self,
        _held: &SpoolLock,
        deliver: &mut dyn FnMut(&[Spooled]) -> Result<(), String>,
    ) -> Result<Forwarded, SpoolError> {
        let mut done = Forwarded::default();
        self.sweep();
        // Read under the lock: another forwarder may have finished.
        let files = self.pending()?;
        let mut batch: Vec<&Path> = Vec::new();
        let mut events = Vec::new();
        for (i, path) in files.iter().enumerate() {
            match self.read(path)? {
                Some(mut e) => {
                    events.append(&mut e);
                    batch.push(path);
                }
                None => {
                    self.set_aside(path);
                    done.bad += 1;
                }
            }
            if (batch.len() < BATCH && i + 1 < files.len()) || batch.is_empty() {
                continue;
            }
            if let Err(why) = deliver(&events) {
                done.left = files.len() - (i + 1 - batch.len());
                done.waiting = Some(why);
                return Ok(done);
            }
            for path in batch.drain(..) {
                if let Err(e) = std::fs::remove_file(path) {
                    // Delivered already: the next round finds it and the
                    // database ignores its events.
                    log::warn!("event spool: cannot remove {}: {e}", path.display());
                }
                done.files += 1;
            }
            done.events += events.len();
            events.clear();
        }
        Ok(done)
    }

    /// Forwards to a store, opened by `open` at the first file that needs
    /// it and kept in `store` for the rounds after; a store that fails is
    /// dropped, to be opened afresh next time. Rounds go on while files
    /// are added meanwhile.
    pub fn forward_to(
        &self,
        held: &SpoolLock,
        store: &mut Option<Box<dyn Store>>,
        open: &mut dyn FnMut() -> Result<Box<dyn Store>, StoreError>,
    ) -> Result<Forwarded, SpoolError> {
        let mut done = Forwarded::default();
        loop {
            let round = self.forward_locked(held, &mut |events| {
                let s = match store.take() {
                    Some(s) => s,
                    None => open().map_err(|e| crate::error_chain(&e))?,
                };
                let s = store.insert(s);
                match s.record_spooled(events) {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        *store = None;
                        Err(crate::error_chain(&e))
                    }
                }
            })?;
            let stop = round.left > 0 || round.files == 0;
            done.add(round);
            if stop || self.pending()?.is_empty() {
                return Ok(done);
            }
        }
    }

    /// Forwards the spool now, for a reader that wants the database up to
    /// date (`kvmroll events`, `kvmroll-guests start`): while a forwarder
    /// holds the spool it is given up to `wait` to empty it, else this one
    /// takes the spool and forwards what is left itself.
    pub fn forward_now(
        &self,
        wait: std::time::Duration,
        open: &mut dyn FnMut() -> Result<Box<dyn Store>, StoreError>,
    ) -> Result<Forwarded, SpoolError> {
        let until = std::time::Instant::now() + wait;
        loop {
            if self.pending()?.is_empty() {
                return Ok(Forwarded::default());
            }
            if let Some(held) = self.lock()? {
                return self.forward_to(&held, &mut None, open);
            }
            if std::time::Instant::now() >= until {
                return Ok(Forwarded {
                    busy: true,
                    ..Forwarded::default()
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Takes the spool's lock unless another process holds it (`None`);
    /// `None` too when there is no spool folder, and nothing to forward.
    pub fn lock(&self) -> Result<Option<SpoolLock>, SpoolError> {
        let dir = match std::fs::File::open(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SpoolError::Read {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        // SAFETY: flock takes a descriptor we own and flags; it touches no
        // memory of ours.
        let r =
            unsafe { nix::libc::flock(dir.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
        Ok((r == 0).then_some(SpoolLock { _dir: dir }))
    }

    /// Whether a forwarder holds the spool now. One that does looks again
    /// for files after it lets go, so a file spooled before this answer is
    /// forwarded without another forwarder.
    pub fn busy(&self) -> bool {
        matches!(self.lock(), Ok(None)) && self.dir.exists()
    }

    /// Removes temporaries older than [`TEMPORARY_KEPT`]: what is left of a
    /// hook killed before it named its file (those events never were).
    fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Only a temporary's age is asked: the spool may hold thousands.
            if !(name.starts_with('.') && name.ends_with(SUFFIX)) {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > TEMPORARY_KEPT);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
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
mod tests;

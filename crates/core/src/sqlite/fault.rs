//! A SQLite failure said as a [`StoreError`], on one line, with what the
//! user can do about it.

use super::*;

/// A SQLite failure as a [`StoreError`], with its cause where the user can
/// act on it: a writer that held the lock past `wait`, or a file system that
/// refuses the file or its folder (SQLite says only "unable to open database
/// file" or "attempt to write a readonly database").
pub(super) fn fault(
    path: &Path,
    write: bool,
    wait: Duration,
    what: &'static str,
    e: rusqlite::Error,
) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DatabaseBusy) => StoreError::Busy {
            path: path.to_path_buf(),
            waited: wait,
            what,
        },
        Some(C::CannotOpen | C::ReadOnly | C::PermissionDenied | C::SystemIoFailure) => {
            match access_problem(path, write) {
                Some(why) => StoreError::NoAccess {
                    path: path.to_path_buf(),
                    why,
                },
                None => sql(path, what, e),
            }
        }
        _ => sql(path, what, e),
    }
}

/// What the file system refuses of the database at `path`, and what to do,
/// if it refuses anything: reading it; writing it, when `write`; and making
/// files in its folder, where WAL keeps its `-wal` and `-shm` files (readers
/// need the `-shm` too).
pub(super) fn access_problem(path: &Path, write: bool) -> Option<String> {
    use nix::errno::Errno;
    use nix::unistd::{access, AccessFlags};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let denied = |e: Errno| matches!(e, Errno::EACCES | Errno::EPERM);
    if let Err(e) = access(path, AccessFlags::R_OK) {
        if denied(e) {
            return Some("no permission to read it: run as its owner, or fix its mode".into());
        }
    }
    if write {
        match access(path, AccessFlags::W_OK) {
            Err(Errno::EROFS) => {
                return Some(
                    "it is on a read-only file system: remount that read-write, or point \
                     --db (KVMROLL_DB) at a copy on a writable one"
                        .into(),
                )
            }
            Err(e) if denied(e) => {
                return Some(
                    "no permission to write it: run as its owner (root), or fix its mode".into(),
                )
            }
            _ => {}
        }
    }
    match access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
        Err(Errno::EROFS) => Some(format!(
            "its folder {} is on a read-only file system, and the write-ahead log needs \
             its -wal and -shm files there: remount it read-write",
            dir.display()
        )),
        Err(e) if denied(e) => Some(format!(
            "no permission to make files in its folder {}, where the write-ahead log keeps \
             its -wal and -shm files: run as the folder's owner, or let them write there",
            dir.display()
        )),
        _ => None,
    }
}

/// A SQLite error on one line: SQLite's message without the statement it
/// failed in (rusqlite's text of a failed batch carries the whole batch).
#[derive(Debug)]
pub(super) struct SqlFault(pub(super) rusqlite::Error);

impl std::fmt::Display for SqlFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match &self.0 {
            rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
            e => e.to_string(),
        };
        f.write_str(text.lines().next().unwrap_or_default().trim())
    }
}

impl std::error::Error for SqlFault {}

pub(super) fn sql(path: &Path, what: &'static str, source: rusqlite::Error) -> StoreError {
    StoreError::Sql {
        path: path.to_path_buf(),
        what,
        source: Box::new(SqlFault(source)),
    }
}

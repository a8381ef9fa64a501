//! Opening the cluster database: the one place that knows every engine.
//! [`open`] and [`init`] take a parsed [`Location`] ([`crate::dburl`]);
//! [`open_store`], [`open_within`] and [`init_store`] a `--db` or
//! `KVMROLL_DB` value, a SQLite path or a URL. The [`Store`] trait and
//! both engines ([`crate::sqlite`], [`crate::pg`]) sit below this module
//! and know nothing of it.

pub use crate::dburl::{Location, LocationError, PgHost, PgLocation, SslMode};

use crate::cluster::{Change, Cluster, ClusterError};
use crate::events::{Event, EventFilter, Spooled};
use crate::model::Disk;
use crate::plan::Plan;
use crate::store::{
    Init, MadeImage, OpenMode, Rows, Store, StoreError, StoreStatus, VmBrief, VmDisk,
};
use std::path::Path;
use std::time::Duration;

/// Opens the store at `location` with the engine it names. With
/// [`OpenMode::Create`], a database not made yet (no SQLite file, or a
/// PostgreSQL database without kvmroll's tables) is made by the first write
/// that a new cluster accepts: a refused one leaves nothing, on either
/// engine.
pub fn open(location: &Location, mode: OpenMode) -> Result<Box<dyn Store>, StoreError> {
    Ok(match location {
        Location::Sqlite(path) => open_sqlite(path, mode)?,
        Location::Postgres(pg) => {
            let env = crate::pg::PgEnv::from_process();
            let first = match mode {
                OpenMode::Create => OpenMode::ReadWrite,
                mode => mode,
            };
            match crate::pg::PgStore::open(pg, first, &env) {
                Err(StoreError::NoSchema { .. }) if mode == OpenMode::Create => {
                    unmade(location.clone())
                }
                opened => Box::new(opened?),
            }
        }
    })
}

/// Makes or upgrades the database at `location`: `kvmroll db init`.
pub fn init(location: &Location) -> Result<(Box<dyn Store>, Init), StoreError> {
    Ok(match location {
        Location::Sqlite(path) => {
            let (store, init) = crate::sqlite::SqliteStore::init(path)?;
            (Box::new(store), init)
        }
        Location::Postgres(pg) => {
            let (store, init) = crate::pg::PgStore::init(pg, &crate::pg::PgEnv::from_process())?;
            (Box::new(store), init)
        }
    })
}

/// Opens the store at `path`: a SQLite file, or the server a URL names. With
/// [`OpenMode::Create`] and nothing at `path`, the database is made by the
/// first write a new database accepts, so a refused write leaves nothing.
pub fn open_store(path: &Path, mode: OpenMode) -> Result<Box<dyn Store>, StoreError> {
    // A URL given where a path was expected (`--db`, `KVMROLL_DB`).
    if let Some(location) = Location::from_url_path(path)? {
        return open(&location, mode);
    }
    open_sqlite(path, mode)
}

/// [`open_store`] for a SQLite file.
pub(crate) fn open_sqlite(path: &Path, mode: OpenMode) -> Result<Box<dyn Store>, StoreError> {
    if mode == OpenMode::Create && !path.exists() {
        return Ok(unmade(Location::Sqlite(path.to_path_buf())));
    }
    let mode = if mode == OpenMode::Create {
        OpenMode::ReadWrite
    } else {
        mode
    };
    Ok(Box::new(crate::sqlite::SqliteStore::open(path, mode)?))
}

/// Opens the store at `path` as [`open_store`] does, giving up after
/// `limit` where the database is a server: that open runs on a thread of
/// its own, left behind when it does not answer in time. A SQLite file
/// opens here (its own busy wait bounds it, and a thread per open would
/// cost every caller, the hook first: libvirtd waits for it).
pub fn open_within(
    path: &Path,
    mode: OpenMode,
    limit: Duration,
) -> Result<Box<dyn Store>, StoreError> {
    let Some(location) = Location::from_url_path(path)? else {
        return open_sqlite(path, mode);
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let at = location.clone();
    let spawned = std::thread::Builder::new()
        .name("open-store".into())
        .spawn(move || {
            // The receiver may be gone (timed out): nothing to tell.
            let _ = tx.send(open(&at, mode));
        });
    if spawned.is_err() {
        // No thread to spare: open here, without the limit.
        return open(&location, mode);
    }
    rx.recv_timeout(limit).unwrap_or_else(|_| {
        Err(StoreError::NoAnswer {
            // As the location shows itself: never with its password.
            location: location.to_string(),
            waited: limit,
        })
    })
}

/// Makes the database at `path` if there is none, or upgrades it: what
/// `kvmroll db init` does. A file that is not a kvmroll database is refused.
pub fn init_store(path: &Path) -> Result<(Box<dyn Store>, Init), StoreError> {
    if let Some(location) = Location::from_url_path(path)? {
        return init(&location);
    }
    let (store, init) = crate::sqlite::SqliteStore::init(path)?;
    Ok((Box::new(store), init))
}

/// A database not made yet (no SQLite file, or a PostgreSQL database
/// without kvmroll's tables): until it is, it reads as a new one would (the
/// seeded cluster, no events), and the first write that such a cluster
/// accepts makes it; from then on everything goes to the database made.
struct Unmade {
    location: Location,
    made: Option<Box<dyn Store>>,
}

/// The store of `location`, where nothing is made yet, for [`OpenMode::Create`].
pub(crate) fn unmade(location: Location) -> Box<dyn Store> {
    Box::new(Unmade {
        location,
        made: None,
    })
}

impl Unmade {
    fn made(&mut self) -> Result<&mut Box<dyn Store>, StoreError> {
        let store = match self.made.take() {
            Some(s) => s,
            None => init(&self.location)?.0,
        };
        Ok(self.made.insert(store))
    }

    /// What a read that needs the database made says.
    fn missing(&self) -> StoreError {
        match &self.location {
            Location::Sqlite(path) => StoreError::Missing { path: path.clone() },
            Location::Postgres(pg) => StoreError::NoSchema {
                location: pg.to_string(),
            },
        }
    }
}

impl Store for Unmade {
    fn snapshot(&self) -> Result<Cluster, StoreError> {
        match &self.made {
            Some(s) => s.snapshot(),
            None => Ok(Cluster::seeded()),
        }
    }

    fn update(
        &mut self,
        changes: &mut dyn FnMut(&Cluster) -> Result<Vec<Change>, ClusterError>,
    ) -> Result<Plan, StoreError> {
        if self.made.is_none() {
            let new = Cluster::seeded();
            new.plan(&changes(&new)?)?;
        }
        // Another process may have made it meanwhile: the changes are asked
        // again, of what the database holds.
        self.made()?.update(changes)
    }

    fn vm_brief(&self, name: &str) -> Result<Option<VmBrief>, StoreError> {
        match &self.made {
            Some(s) => s.vm_brief(name),
            None => Ok(None),
        }
    }

    fn vm_disks(&self, vm: &str) -> Result<Vec<VmDisk>, StoreError> {
        match &self.made {
            Some(s) => s.vm_disks(vm),
            None => Ok(Vec::new()),
        }
    }

    fn record_disk_work(
        &mut self,
        vm: &str,
        container: &str,
        made: &[String],
        grown: &[String],
    ) -> Result<(), StoreError> {
        // A database not made yet has no VM to record anything of.
        match &mut self.made {
            Some(s) => s.record_disk_work(vm, container, made, grown),
            None => Ok(()),
        }
    }

    fn made_images(&self, vm: &str) -> Result<Vec<MadeImage>, StoreError> {
        match &self.made {
            Some(s) => s.made_images(vm),
            None => Ok(Vec::new()),
        }
    }

    fn grow_disk(&mut self, vm: &str, dev: &str, size_gib: u32) -> Result<Disk, StoreError> {
        match &mut self.made {
            Some(s) => s.grow_disk(vm, dev, size_gib),
            None => Err(ClusterError::UnknownVm(vm.to_string()).into()),
        }
    }

    fn record_events(&mut self, events: &[Event]) -> Result<(), StoreError> {
        self.made()?.record_events(events)
    }

    fn record_spooled(&mut self, events: &[Spooled]) -> Result<usize, StoreError> {
        self.made()?.record_spooled(events)
    }

    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        match &self.made {
            Some(s) => s.events(filter),
            None => Ok(Vec::new()),
        }
    }

    fn status(&self) -> Result<StoreStatus, StoreError> {
        match &self.made {
            Some(s) => s.status(),
            None => Err(self.missing()),
        }
    }

    fn prune_events(
        &mut self,
        before_ms: Option<i64>,
        keep: Option<u64>,
    ) -> Result<u64, StoreError> {
        match &mut self.made {
            Some(s) => s.prune_events(before_ms, keep),
            None => Ok(0),
        }
    }

    fn rows(&self) -> Result<Rows, StoreError> {
        match &self.made {
            Some(s) => s.rows(),
            None => Err(self.missing()),
        }
    }

    fn fill(&mut self, rows: &Rows) -> Result<(), StoreError> {
        self.made()?.fill(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Host;

    /// Regression: a server that did not answer in time was named by the
    /// text given, a URL's password included, in a line the hook logs and
    /// records as an event.
    #[test]
    fn a_server_that_does_not_answer_is_named_without_its_password() {
        // Accepts (the kernel's backlog) and never speaks.
        let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = mute.local_addr().unwrap().port();
        let url = format!("postgresql://kvmroll:s3cret@127.0.0.1:{port}/kvmroll?sslmode=disable");
        let err = open_within(
            Path::new(&url),
            OpenMode::ReadOnly,
            Duration::from_millis(300),
        )
        .err()
        .expect("a mute server answered");
        let line = crate::error_chain(&err);
        assert!(matches!(err, StoreError::NoAnswer { .. }), "{line}");
        assert!(!line.contains("s3cret"), "{line}");
        assert!(line.contains(&port.to_string()), "{line}");
    }

    /// A SQLite file opens on the caller's thread, within no limit of its
    /// own: a missing one is said at once, not as a server's silence.
    #[test]
    fn a_sqlite_file_opens_without_a_thread() {
        let d = tempfile::tempdir().unwrap();
        let err = open_within(
            &d.path().join("none.db"),
            OpenMode::ReadOnly,
            Duration::ZERO,
        )
        .err()
        .expect("a missing file opened");
        assert!(!matches!(err, StoreError::NoAnswer { .. }), "{err}");
    }

    /// A first write makes the database only when a new database accepts
    /// it: bad input to it leaves no file and no folder behind.
    #[test]
    fn a_refused_first_write_makes_no_database() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("sub/k.db");
        let mut s = open_store(&db, OpenMode::Create).unwrap();
        assert_eq!(s.snapshot().unwrap(), Cluster::seeded());
        let err = s
            .update(&mut |_| Ok(vec![Change::AddHost(Host::new("h", "no-such-appliance"))]))
            .unwrap_err();
        assert!(matches!(err, StoreError::Refused(_)), "{err}");
        assert!(!d.path().join("sub").exists());
        s.update(&mut |_| Ok(vec![Change::AddHost(Host::new("h", "compute"))]))
            .unwrap();
        assert!(db.exists());
        assert!(s.snapshot().unwrap().hosts.contains_key("h"));
        let again = open_store(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(again.status().unwrap().hosts, 1);
    }
}

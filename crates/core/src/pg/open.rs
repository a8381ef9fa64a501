//! Opening a PostgreSQL database: connecting, refusing a database that is
//! not kvmroll's or is newer, upgrading, and the containers' role.

use super::*;

impl PgStore {
    /// Connects to the database at `location` and checks it is kvmroll's:
    /// a database with tables of others is refused, as is one of a newer
    /// schema, before anything is written. An older schema is upgraded in
    /// every write mode.
    ///
    /// `Create` makes kvmroll's tables in an empty database; the other
    /// modes are told to run `kvmroll db init`. Unlike a SQLite file, the
    /// PostgreSQL database itself is never made here: an administrator made
    /// it (`CREATE DATABASE`), so a mistyped URL is refused by the server,
    /// and making kvmroll's tables at the first command that may start a
    /// cluster leaves nothing where nothing was meant to be.
    pub fn open(location: &PgLocation, mode: OpenMode, env: &PgEnv) -> Result<PgStore, StoreError> {
        let shown = location.to_string();
        let target = connect::Target::resolve(location, env)?;
        let client = connect::connect(&target, &shown, mode)?;
        let mut store = PgStore {
            shown,
            host: target.host_text(),
            port: target.port,
            client: RefCell::new(client),
            mode,
            wait: connect::lock_wait(mode),
            found: Found::Empty,
        };
        store.found = store.prepare()?;
        Ok(store)
    }

    /// Makes kvmroll's tables in the database at `location` if it has none,
    /// or upgrades them: what `kvmroll db init` does. A database of others
    /// is refused.
    pub fn init(location: &PgLocation, env: &PgEnv) -> Result<(PgStore, Init), StoreError> {
        let store = PgStore::open(location, OpenMode::Create, env)?;
        let init = match store.found {
            Found::Version(v) if v == SCHEMA_VERSION => Init::Current,
            Found::Version(from) => Init::Upgraded { from },
            Found::Empty | Found::Foreign => Init::Created,
        };
        Ok((store, init))
    }

    /// Checks the identity, and makes or upgrades the schema where the mode
    /// allows; returns what was found before.
    pub(super) fn prepare(&self) -> Result<Found, StoreError> {
        let mut client = self.client.borrow_mut();
        let found =
            schema::identify(&mut *client).map_err(|f| self.fail("reading its identity", f))?;
        let version = match found {
            Found::Foreign => return Err(self.foreign()),
            Found::Version(v) if v > SCHEMA_VERSION => return Err(self.too_new(v)),
            Found::Version(v) if v < 1 => return Err(self.unknown(v)),
            Found::Version(v) if v == SCHEMA_VERSION => return Ok(found),
            Found::Empty if self.mode != OpenMode::Create => {
                return Err(StoreError::NoSchema {
                    location: self.shown.clone(),
                })
            }
            Found::Empty => 0,
            Found::Version(v) if self.mode == OpenMode::ReadOnly => {
                return Err(StoreError::NeedsUpgrade {
                    path: self.shown.clone().into(),
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Found::Version(v) => v,
        };
        match schema::migrate(&mut client) {
            Ok(Found::Foreign) => Err(self.foreign()),
            Ok(Found::Version(v)) if v > SCHEMA_VERSION => Err(self.too_new(v)),
            Ok(Found::Version(v)) if v < 1 => Err(self.unknown(v)),
            Ok(_) => Ok(found),
            // A step's own failure names the step, as SQLite's do.
            Err(Fail::Step { to, error }) if error.as_db_error().is_some() => {
                Err(StoreError::Upgrade {
                    path: self.shown.clone().into(),
                    from: to - 1,
                    to,
                    source: one_line(&error),
                })
            }
            // A role that may not change the schema (a container's) says so
            // here, as any other failure of the upgrade.
            Err(Fail::Pg(e)) if e.as_db_error().is_some() => Err(StoreError::Upgrade {
                path: self.shown.clone().into(),
                from: version,
                to: SCHEMA_VERSION,
                source: one_line(&e),
            }),
            Err(f) => Err(self.fail("upgrading the schema", f)),
        }
    }

    pub(super) fn foreign(&self) -> StoreError {
        StoreError::NotKvmroll {
            path: self.shown.clone().into(),
        }
    }

    /// A stamped database whose schema version no kvmroll writes.
    pub(super) fn unknown(&self, found: i64) -> StoreError {
        StoreError::UnknownSchema {
            path: self.shown.clone().into(),
            found,
        }
    }

    pub(super) fn too_new(&self, found: i64) -> StoreError {
        StoreError::NewerSchema {
            path: self.shown.clone().into(),
            found,
            supported: SCHEMA_VERSION,
        }
    }

    /// Creates the role VM containers connect as, if it does not exist,
    /// sets its password if one is given, and grants it only what
    /// containers need: read the cluster, record events, and the writes of
    /// allocate and shutdown plugins (a VM's placement, resources, disks,
    /// NICs and attributes; see `schema::grants`). Run by `kvmroll db init`
    /// as the database's owner; running it again is harmless.
    pub fn grant_container_role(
        &mut self,
        role: &str,
        password: Option<&str>,
    ) -> Result<(), StoreError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        schema::grant_container_role(self.client.get_mut(), role, password)
            .map_err(|f| self.fail("granting the containers' role", f))
    }

    /// The default name of the containers' role.
    pub const CONTAINER_ROLE: &'static str = "kvmroll_container";
}

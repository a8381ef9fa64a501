//! `kvmroll db init|copy|status`: the database itself.

use super::{print_json, refused, Error, Exit};
use crate::cli::DbCmd;
use kvmroll_core::location::Location;
use kvmroll_core::pg::{PgEnv, PgStore};
use kvmroll_core::{init_store, open_store, Init, OpenMode, Store, StoreError};
use std::io::Write;
use std::path::Path;

/// `kvmroll db init`, `db copy` and `db status`.
pub(super) fn db(
    cmd: DbCmd,
    path: &Path,
    mode: OpenMode,
    out: &mut dyn Write,
) -> Result<Exit, Error> {
    match cmd {
        DbCmd::Init {
            container_role,
            container_password_file,
        } => init(path, mode, container_role, container_password_file, out)?,
        // Answered in `run`, before any database location was read.
        DbCmd::Copy { .. } => {}
        DbCmd::Status { json } => status(path, mode, json.json, out)?,
    }
    Ok(Exit::Done)
}

/// `kvmroll db status`.
fn status(path: &Path, mode: OpenMode, json: bool, out: &mut dyn Write) -> Result<(), Error> {
    let status = open_store(path, mode)?.status()?;
    if json {
        print_json(out, &status)?;
    } else {
        let rows = [
            ("engine", status.engine.to_string()),
            ("location", status.location),
            ("schema", status.schema_version.to_string()),
            ("hosts", status.hosts.to_string()),
            ("vms", status.vms.to_string()),
            ("events", status.events.to_string()),
        ];
        for (name, value) in rows {
            writeln!(out, "{name:<10}{value}")?;
        }
    }
    Ok(())
}

/// `kvmroll db init`: everything checked before the database is touched.
fn init(
    path: &Path,
    mode: OpenMode,
    container_role: Option<String>,
    container_password_file: Option<std::path::PathBuf>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    if mode == OpenMode::ReadOnly {
        return Err(StoreError::ReadOnly.into());
    }
    // Everything is checked before the database is touched.
    let location = location_of(path)?;
    let role = match container_role {
        Some(name) => {
            let Location::Postgres(pg) = &location else {
                return Err(refused(format!(
                    "--container-role: {location} is a SQLite file; a role for \
                     containers is made in a PostgreSQL database"
                )));
            };
            check_role_name(&name)?;
            let password = container_password_file
                .as_deref()
                .map(read_password_file)
                .transpose()?;
            Some((pg.clone(), name, password))
        }
        None => None,
    };
    let (store, init, role) = match role {
        Some((pg, name, password)) => {
            let (mut store, init) = PgStore::init(&pg, &PgEnv::from_process())?;
            store.grant_container_role(&name, password.as_deref())?;
            let store: Box<dyn Store> = Box::new(store);
            (store, init, Some((name, password.is_some())))
        }
        None => {
            let (store, init) = init_store(path)?;
            (store, init, None)
        }
    };
    let status = store.status()?;
    let (shown, version) = (status.location, status.schema_version);
    match init {
        Init::Created => writeln!(out, "created {shown}: schema {version}")?,
        Init::Upgraded { from } => writeln!(out, "upgraded {shown}: schema {from} to {version}")?,
        Init::Current => writeln!(
            out,
            "{shown} is a kvmroll database already, at schema {version}: nothing to do"
        )?,
    }
    if let Some((name, with_password)) = role {
        let password = if with_password {
            "its password set"
        } else {
            "no password set"
        };
        writeln!(
            out,
            "role {name} for VM containers: granted what containers need, {password}"
        )?;
    }
    Ok(())
}

/// `kvmroll db copy FROM TO`.
pub(super) fn copy_db(from: &str, to: &str, out: &mut dyn Write) -> Result<Exit, Error> {
    let (from_at, to_at) = (location_of(Path::new(from))?, location_of(Path::new(to))?);
    if same_database(&from_at, &to_at) {
        return Err(refused(format!(
            "{from_at} and {to_at} are the same database"
        )));
    }
    let source = kvmroll_core::location::open(&from_at, OpenMode::ReadOnly)?;
    // A SQLite file made here goes again if the copy fails.
    let made_file = match &to_at {
        Location::Sqlite(p) if !p.exists() => Some(p.clone()),
        _ => None,
    };
    let copied = kvmroll_core::location::init(&to_at).and_then(|(mut target, _)| {
        kvmroll_core::copy::copy(source.as_ref(), target.as_mut(), &to_at.to_string())
    });
    let copied = match copied {
        Ok(c) => c,
        Err(e) => {
            if let Some(file) = made_file {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
                }
            }
            return Err(e.into());
        }
    };
    let n = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    writeln!(
        out,
        "copied {from_at} to {to_at}: {}, {}, {}, {} ({}), checked row for row",
        n(copied.hosts, "host"),
        n(copied.vms, "VM"),
        n(copied.attributes, "attribute"),
        n(copied.events, "event"),
        n(copied.rows, "row")
    )?;
    Ok(Exit::Done)
}

/// The location a `--db` value or a `db copy` argument names; a relative
/// path is taken against the current folder.
pub(super) fn location_of(path: &Path) -> Result<Location, Error> {
    let text = path
        .to_str()
        .ok_or_else(|| refused(format!("database location {} is not UTF-8", path.display())))?;
    let cwd = std::env::current_dir()?;
    Ok(Location::parse(text, &cwd)?)
}

/// Whether two locations name one database (a SQLite file through another
/// path included).
pub(super) fn same_database(a: &Location, b: &Location) -> bool {
    match (a, b) {
        (Location::Sqlite(x), Location::Sqlite(y)) => {
            x == y || matches!((x.canonicalize(), y.canonicalize()), (Ok(x), Ok(y)) if x == y)
        }
        _ => a.to_string() == b.to_string(),
    }
}

/// A PostgreSQL role name kvmroll makes: letters, digits and `_`, not
/// starting with a digit nor `pg_` (PostgreSQL's own), at most 63 bytes.
pub(super) fn check_role_name(name: &str) -> Result<(), Error> {
    let fine = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.starts_with("pg_")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if fine {
        Ok(())
    } else {
        Err(refused(format!(
            "--container-role {name:?}: a role name is letters, digits and _, at most 63,              not starting with a digit or pg_"
        )))
    }
}

/// The first line of a password file that only its owner can read.
pub(super) fn read_password_file(path: &Path) -> Result<String, Error> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| refused(format!("cannot read password file {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(refused(format!("password file {shown} is not a file")));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refused(format!(
            "password file {shown} is not used: group or others have access to it \
             (mode {mode:o}; chmod 0600 {shown})"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| refused(format!("cannot read password file {shown}: {e}")))?;
    let password = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    if password.is_empty() {
        return Err(refused(format!(
            "password file {shown} holds no password on its first line"
        )));
    }
    Ok(password.to_string())
}

//! A host's kvmroll configuration, `/etc/kvmroll/kvmroll.conf`
//! (`KVMROLL_CONF` names another). libvirtd gives its hooks an almost empty
//! environment, so everything the hook needs beyond its arguments comes from
//! this file; and every binary finds the cluster database through its `db`
//! line when neither `--db` nor `KVMROLL_DB` names one ([`db_location`]), so
//! a container's CLI, save service and hook all reach the same database.
//!
//! ```text
//! # kvmroll.conf
//! db = /var/lib/kvmroll/kvmroll.db   # the cluster database
//! root = /etc/kvmroll                # holds plugins/STAGE.d and vms/VM/STAGE.d
//! host = vm-container-0-0            # this container's name (default: host name)
//! kvmroll = /usr/local/bin/kvmroll   # the CLI, for plugins and refreshes
//! passfile = /etc/kvmroll/db.pgpass  # a PostgreSQL database's credential (libpq format)
//! spool = /var/lib/kvmroll/spool     # where the hook keeps events until the database has them
//! ```
//!
//! `spool` defaults to the folder `spool` beside a database file (so a test's
//! database in a temporary folder gets its spool there too), and to
//! [`crate::spool::DEFAULT_SPOOL`] for a database given by URL.

use crate::store::DEFAULT_DB_PATH;
use std::path::{Path, PathBuf};

/// Where the configuration is read from unless `KVMROLL_CONF` says otherwise.
pub const DEFAULT_CONF: &str = "/etc/kvmroll/kvmroll.conf";

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {why}")]
    Syntax {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub db: PathBuf,
    pub root: PathBuf,
    pub host: String,
    pub kvmroll: PathBuf,
    /// The credential of a PostgreSQL database (a libpq passfile).
    pub passfile: Option<PathBuf>,
    /// The container's event spool ([`crate::spool`]).
    pub spool: PathBuf,
}

/// The spool of a configuration that names none: beside a database file, or
/// the default one for a database elsewhere (a URL).
fn default_spool(db: &Path) -> PathBuf {
    match db.parent() {
        Some(dir) if db.is_absolute() && dir != Path::new("/") => dir.join("spool"),
        _ => PathBuf::from(crate::spool::DEFAULT_SPOOL),
    }
}

/// The kvmroll CLI: the first that exists of /usr/local/bin and /usr/bin,
/// else plain `kvmroll` looked up in PATH.
fn default_kvmroll() -> PathBuf {
    ["/usr/local/bin/kvmroll", "/usr/bin/kvmroll"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("kvmroll"))
}

impl Default for Config {
    fn default() -> Config {
        Config::with(None, None, None, None)
    }
}

impl Config {
    /// A configuration whose unset keys take their defaults; a default that
    /// costs a system call (the host name, the CLI's path) is worked out only
    /// when its key is not set, since the hook reads this at every VM event.
    fn with(
        db: Option<PathBuf>,
        root: Option<PathBuf>,
        host: Option<String>,
        kvmroll: Option<PathBuf>,
    ) -> Config {
        let db = db.unwrap_or_else(|| PathBuf::from(DEFAULT_DB_PATH));
        Config {
            spool: default_spool(&db),
            db,
            root: root.unwrap_or_else(|| PathBuf::from("/etc/kvmroll")),
            host: host.unwrap_or_else(crate::sys::local_short_hostname),
            kvmroll: kvmroll.unwrap_or_else(default_kvmroll),
            passfile: None,
        }
    }

    /// Reads the configuration; a missing file means the defaults.
    pub fn load() -> Result<Config, ConfigError> {
        let path = std::env::var_os("KVMROLL_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONF));
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses `key = value` lines; `#` starts a comment.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let (mut db, mut root, mut host, mut kvmroll) = (None, None, None, None);
        let (mut passfile, mut spool) = (None, None);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: String| ConfigError::Syntax {
                path: path.to_path_buf(),
                line: i + 1,
                why,
            };
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| bad(format!("expected KEY = VALUE, found {line:?}")))?;
            let value = value.trim();
            let abs = |v: &str| -> Result<PathBuf, ConfigError> {
                if v.starts_with('/') {
                    Ok(PathBuf::from(v))
                } else {
                    Err(bad(format!("{} must be an absolute path", key.trim())))
                }
            };
            match key.trim() {
                // A file, or the cluster's PostgreSQL (checked whole here,
                // so a typo is this line's fault, not a connection's).
                "db" => {
                    db = Some(
                        match crate::dburl::Location::from_url_path(Path::new(value)) {
                            Ok(Some(_)) => PathBuf::from(value),
                            Ok(None) => abs(value).map_err(|_| {
                                bad("db must be an absolute path or a postgresql:// URL".into())
                            })?,
                            Err(e) => return Err(bad(e.to_string())),
                        },
                    )
                }
                "root" => root = Some(abs(value)?),
                "kvmroll" => kvmroll = Some(abs(value)?),
                "passfile" => passfile = Some(abs(value)?),
                "spool" => spool = Some(abs(value)?),
                "host" if !value.is_empty() => host = Some(value.to_string()),
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        let conf = Config::with(db, root, host, kvmroll);
        Ok(Config {
            passfile,
            spool: spool.unwrap_or(conf.spool.clone()),
            ..conf
        })
    }
}

/// The cluster database, found in one order by every binary: the `--db`
/// flag, else `KVMROLL_DB`, else the `db` line of the configuration file,
/// else [`DEFAULT_DB_PATH`]. The file is read only when the first two are
/// absent; a fault in it is an error, whoever reads it.
pub fn db_location(flag: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    match flag.or_else(|| std::env::var_os("KVMROLL_DB").map(PathBuf::from)) {
        Some(db) => Ok(db),
        None => Ok(Config::load()?.database()),
    }
}

impl Config {
    /// The database this configuration names, with its `passfile` carried
    /// into a PostgreSQL URL that names none (libvirtd gives the hook no
    /// HOME, so libpq's ~/.pgpass is no place for a container's credential).
    pub fn database(&self) -> PathBuf {
        let db = self.db.to_string_lossy();
        let postgres = db.starts_with("postgresql://") || db.starts_with("postgres://");
        match &self.passfile {
            Some(pass) if postgres && !db.contains("passfile=") => {
                let sep = if db.contains('?') { '&' } else { '?' };
                PathBuf::from(format!("{db}{sep}passfile={}", pass.display()))
            }
            _ => self.db.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_comments() {
        let c = Config::parse(
            Path::new("k.conf"),
            "# c\ndb = /x/k.db # here\nroot=/r\nhost = c-0-0\nkvmroll = /b/kvmroll\n",
        )
        .unwrap();
        assert_eq!(c.db, PathBuf::from("/x/k.db"));
        assert_eq!(c.root, PathBuf::from("/r"));
        assert_eq!(c.host, "c-0-0");
        assert_eq!(c.spool, PathBuf::from("/x/spool"));
        let c = Config::parse(Path::new("k.conf"), "db = /k.db\nspool = /s\n").unwrap();
        assert_eq!(c.spool, PathBuf::from("/s"));
        let c = Config::parse(Path::new("k.conf"), "host = h\n").unwrap();
        assert_eq!(c.spool, PathBuf::from("/var/lib/kvmroll/spool"));
    }

    #[test]
    fn a_cluster_url_takes_the_passfile_and_a_malformed_one_is_this_lines_fault() {
        let c = Config::parse(
            Path::new("k.conf"),
            "db = postgresql://kvmroll_container@frontend/kvmroll?sslmode=require\npassfile = /etc/kvmroll/db.pgpass\n",
        )
        .unwrap();
        assert_eq!(
            c.database(),
            PathBuf::from("postgresql://kvmroll_container@frontend/kvmroll?sslmode=require&passfile=/etc/kvmroll/db.pgpass")
        );
        let c = Config::parse(Path::new("k.conf"), "db = /x.db\npassfile = /p\n").unwrap();
        assert_eq!(c.database(), PathBuf::from("/x.db"));
        for bad in [
            "db = postgresql:frontend",
            "db = x.db",
            "db = postgres://h/d?bogus=1",
        ] {
            let e = Config::parse(Path::new("k.conf"), bad).unwrap_err();
            assert!(e.to_string().starts_with("k.conf:1: "), "{e}");
        }
    }

    #[test]
    fn refuses_bad_lines() {
        for bad in ["db /x", "db = relative", "colour = blue"] {
            let e = Config::parse(Path::new("k.conf"), bad).unwrap_err();
            assert!(e.to_string().starts_with("k.conf:1: "), "{e}");
        }
    }
}

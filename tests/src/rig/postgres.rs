//! A private PostgreSQL server for tests: never the machine's own cluster
//! nor port 5432. `initdb` into the sandbox's folder (a tmpfs there, unless
//! [`PostgresBuilder::durable`]), a unix socket folder there and 127.0.0.1 on
//! a free port; the superuser is trusted on the socket, every other role
//! gives its password (SCRAM) on the socket and over TCP.
//!
//! The server runs in its own PID, mount and IPC namespaces (see
//! [`super::sandbox`]), so that it dies with the test process however that
//! ends, and leaves no System V segment or `/dev/shm` file behind. It shares
//! the machine's network: the test process reaches it on 127.0.0.1. `pg_ctl`
//! runs inside the namespaces too, since the pid in `postmaster.pid` is the
//! namespace's.

use super::sandbox::{Sandbox, Spaces};
use super::{io, pg_bin_dir, run, run_with_input, RigError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// How [`Postgres::stop`] ends the server (`pg_ctl stop -m MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Clients are disconnected, the server shuts down cleanly.
    Fast,
    /// The server quits at once; the next start recovers from its WAL, as
    /// after a crash.
    Immediate,
}

/// A login role to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub password: String,
    /// More attributes for `CREATE ROLE`: `CREATEROLE`, `CREATEDB`, ...
    attributes: String,
}

impl Role {
    /// A role that may log in with `password`.
    pub fn login(name: &str, password: &str) -> Role {
        Role {
            name: name.into(),
            password: password.into(),
            attributes: String::new(),
        }
    }

    /// Adds role attributes as `CREATE ROLE` spells them (`CREATEROLE
    /// CREATEDB`).
    pub fn with(mut self, attributes: &str) -> Role {
        assert!(
            attributes
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == ' '),
            "role attributes are upper-case words: {attributes:?}"
        );
        self.attributes.push(' ');
        self.attributes.push_str(attributes);
        self
    }
}

/// What to create in a new server.
#[derive(Debug, Default, Clone)]
pub struct PostgresBuilder {
    roles: Vec<Role>,
    /// (name, owner)
    databases: Vec<(String, String)>,
    settings: Vec<(String, String)>,
    durable: bool,
}

impl PostgresBuilder {
    /// A login role, created before the databases.
    pub fn role(mut self, role: Role) -> Self {
        self.roles.push(role);
        self
    }

    /// A database owned by `owner` (a role given with [`Self::role`], or
    /// `postgres`).
    pub fn database(mut self, name: &str, owner: &str) -> Self {
        self.databases.push((name.into(), owner.into()));
        self
    }

    /// A `postgresql.conf` setting (`max_connections`, ...).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Keeps the data on disk, synced (`fsync = on`), as a real server
    /// does: for a benchmark. By default the data folder is a tmpfs in the
    /// server's mount namespace, and `fsync` is off: a server stopped with
    /// `-m immediate` keeps its data all the same (the machine does not
    /// crash), it starts again in 0.3 s rather than the 5 s that syncing its
    /// folder takes on a busy disk here, and nothing waits for the disk when
    /// it ends.
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }

    /// Starts the server and creates the roles and databases.
    pub fn start(&self) -> Result<Postgres, RigError> {
        let mut pg = self.create()?;
        self.launch(&mut pg)?;
        Ok(pg)
    }

    /// The server's folders, not yet started: its socket folder exists, so
    /// nodes can bind it while the server starts.
    pub(crate) fn create(&self) -> Result<Postgres, RigError> {
        let bin = pg_bin_dir().ok_or(RigError::Missing("a PostgreSQL server".into()))?;
        let sandbox = Sandbox::create("pg", Spaces::Server)?;
        let home = sandbox.dir().join("pg");
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or(RigError::Missing("the user postgres".into()))?;
        for (dir, mode) in [
            (&home, 0o755),
            (&home.join("sock"), 0o755),
            (&home.join("data"), 0o700),
        ] {
            std::fs::create_dir(dir)
                .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)))
                .and_then(|()| {
                    std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                })
                .map_err(io("create", &dir))?;
        }
        if !self.durable {
            let mounts = sandbox.dir().join("mounts");
            let line = format!(
                "tmpfs\t{}\tmode=0700,uid={},gid={}\n",
                home.join("data").display(),
                user.uid,
                user.gid
            );
            std::fs::write(&mounts, line).map_err(io("write", &mounts))?;
        }
        Ok(Postgres {
            sandbox,
            bin,
            port: 0,
            home,
        })
    }

    /// Enters the namespaces, runs initdb, starts the server on a free port
    /// and creates the roles and databases.
    pub(crate) fn launch(&self, pg: &mut Postgres) -> Result<(), RigError> {
        pg.sandbox.enter(None)?;
        let data = pg.home.join("data");
        run(pg
            .as_postgres(&pg.bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ])
            .args(["-E", "UTF8", "--locale=C"]))?;
        // Later lines win over initdb's.
        let hba = "# written by the kvmroll test rig\n\
                   local all postgres trust\n\
                   local all all scram-sha-256\n\
                   host all all 127.0.0.1/32 scram-sha-256\n";
        pg.write_data("pg_hba.conf", ">", hba)?;
        let mut conf = format!(
            "\n# written by the kvmroll test rig\n\
             unix_socket_directories = '{}'\n\
             listen_addresses = '127.0.0.1'\n\
             password_encryption = 'scram-sha-256'\n\
             fsync = {}\n",
            pg.socket_dir().display(),
            if self.durable { "on" } else { "off" }
        );
        for (name, value) in &self.settings {
            conf.push_str(&format!("{name} = {}\n", quote_literal(value)));
        }
        pg.write_data("postgresql.conf", ">>", &conf)?;
        // A port that was free a moment ago may be taken by then (another
        // rig): try a few.
        let mut last = None;
        for _ in 0..3 {
            pg.port = free_port()?;
            pg.write_data("postgresql.conf", ">>", &format!("port = {}\n", pg.port))?;
            match pg.start() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) if pg.log().contains("could not bind") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        for role in &self.roles {
            pg.create_role(role)?;
        }
        for (name, owner) in &self.databases {
            pg.create_database(name, owner)?;
        }
        Ok(())
    }
}

/// A running private PostgreSQL server; stopped, and its folder removed,
/// when dropped (or when the test process ends).
#[derive(Debug)]
pub struct Postgres {
    sandbox: Sandbox,
    /// PostgreSQL's bin folder (`/usr/lib/postgresql/15/bin`).
    bin: PathBuf,
    port: u16,
    /// Owned by postgres: `data/`, `sock/`, `server.log`.
    home: PathBuf,
}

impl Postgres {
    /// What to create in a new server.
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    /// The folder holding the server's unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> PathBuf {
        self.home.join("sock")
    }

    /// The TCP port on 127.0.0.1, also the socket's number.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A program of the server's bin folder (`psql`, `pg_dump`, ...).
    pub fn bin(&self, program: &str) -> PathBuf {
        self.bin.join(program)
    }

    /// `postgresql://ROLE:PASSWORD@127.0.0.1:PORT/DB`.
    pub fn url_tcp(&self, role: &Role, db: &str) -> String {
        tcp_url(self.port, role, db)
    }

    /// The URL over the unix socket, from the machine.
    pub fn url_socket(&self, role: &Role, db: &str) -> String {
        self.url_socket_in(self.socket_dir(), role, db)
    }

    /// The URL over the unix socket as seen in `dir` (inside a node:
    /// [`super::NODE_PG_SOCKET`]), as libpq reads it:
    /// `postgresql://ROLE:PASSWORD@/DB?host=DIR&port=PORT`.
    pub fn url_socket_in(&self, dir: impl AsRef<Path>, role: &Role, db: &str) -> String {
        socket_url(dir.as_ref(), self.port, role, db)
    }

    /// Runs SQL as the superuser over the socket; psql's unaligned,
    /// tuples-only output.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String, RigError> {
        let mut psql = Command::new(self.bin("psql"));
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("PG") {
                psql.env_remove(var);
            }
        }
        psql.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
        ])
        .arg("-h")
        .arg(self.socket_dir())
        .args(["-p", &self.port.to_string(), "-d", db, "-f", "-"]);
        let out = run_with_input(&mut psql, sql)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a login role.
    pub fn create_role(&self, role: &Role) -> Result<(), RigError> {
        self.sql(
            "postgres",
            &format!(
                "CREATE ROLE {} LOGIN PASSWORD {}{};",
                quote_ident(&role.name),
                quote_literal(&role.password),
                role.attributes
            ),
        )
        .map(drop)
    }

    /// Creates a database owned by `owner`.
    pub fn create_database(&self, name: &str, owner: &str) -> Result<(), RigError> {
        self.sql(
            "postgres",
            &format!(
                "CREATE DATABASE {} OWNER {};",
                quote_ident(name),
                quote_ident(owner)
            ),
        )
        .map(drop)
    }

    /// Creates a database of a name no other test uses (`t_PID_N`) owned by
    /// `owner`, for tests sharing one server.
    pub fn fresh_database(&self, owner: &str) -> Result<String, RigError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.create_database(&name, owner)?;
        Ok(name)
    }

    /// Stops the server (`pg_ctl stop -m fast|immediate`): a frontend
    /// outage. Its data stays for [`Postgres::start`].
    pub fn stop(&self, mode: StopMode) -> Result<(), RigError> {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        run(self
            .as_postgres(&self.bin("pg_ctl"))
            .arg("-D")
            .arg(self.home.join("data"))
            .args(["-m", mode, "-w", "-t", "30", "stop"]))
        .map(drop)
    }

    /// Starts the server again with the same data, port and socket, and
    /// returns once it accepts connections.
    pub fn start(&self) -> Result<(), RigError> {
        run(self
            .as_postgres(&self.bin("pg_ctl"))
            .arg("-D")
            .arg(self.home.join("data"))
            .arg("-l")
            .arg(self.home.join("server.log"))
            .args(["-w", "-t", "30", "start"]))
        .map(drop)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("server.log")).unwrap_or_default()
    }

    /// The server's folder and namespaces, to check later that nothing of
    /// it remains.
    pub fn footprint(&self) -> super::Footprint {
        self.sandbox.footprint()
    }

    /// Writes (`>`) or appends (`>>`) `text` to a file of the data folder,
    /// from inside the namespaces: the tmpfs there is the server's alone.
    fn write_data(&self, file: &str, how: &str, text: &str) -> Result<(), RigError> {
        let path = self.home.join("data").join(file);
        let mut sh = self.as_postgres(Path::new("sh"));
        sh.arg("-c")
            .arg(format!("cat {how} \"$1\""))
            .arg("sh")
            .arg(path);
        run_with_input(&mut sh, text).map(drop)
    }

    /// `program` run as the postgres user inside the server's namespaces,
    /// in its folder.
    fn as_postgres(&self, program: &Path) -> Command {
        let mut c = self.sandbox.command("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program)
        .current_dir(&self.home);
        c
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> Result<u16, RigError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("find a free port on", "127.0.0.1"))
}

fn tcp_url(port: u16, role: &Role, db: &str) -> String {
    format!(
        "postgresql://{}:{}@127.0.0.1:{port}/{}",
        encode(&role.name),
        encode(&role.password),
        encode(db)
    )
}

fn socket_url(dir: &Path, port: u16, role: &Role, db: &str) -> String {
    format!(
        "postgresql://{}:{}@/{}?host={}&port={port}",
        encode(&role.name),
        encode(&role.password),
        encode(db),
        encode(&dir.to_string_lossy()).replace("%2F", "/"),
    )
}

/// `"name"`, with `"` doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with `'` doubled (standard_conforming_strings is on).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_what_a_url_cannot_hold() {
        let role = Role::login("kvm roll", "p@ss:/w'd");
        assert_eq!(
            tcp_url(54321, &role, "db"),
            "postgresql://kvm%20roll:p%40ss%3A%2Fw%27d@127.0.0.1:54321/db"
        );
        assert_eq!(
            socket_url(Path::new("/run/post gres"), 54321, &role, "db"),
            "postgresql://kvm%20roll:p%40ss%3A%2Fw%27d@/db?host=/run/post%20gres&port=54321"
        );
    }

    #[test]
    fn sql_quoting_doubles_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}

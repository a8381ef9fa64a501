//! Where the cluster database is: a SQLite file or a PostgreSQL server, as
//! one value parsed from the text an administrator gives (`--db`,
//! `KVMROLL_DB`, the `db` line of `kvmroll.conf`). Opening the engine it names
//! is [`crate::location`]'s, above the store and both engines; this module
//! sits below them all.
//!
//! The accepted forms:
//! - an absolute path, or `sqlite:PATH` (`sqlite:///abs/path` too): SQLite;
//! - `postgresql://...` or `postgres://...`: PostgreSQL, in libpq's URI
//!   syntax (<https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING>):
//!   `postgresql://[user[:password]@][host][:port][/dbname][?param=value&...]`
//!   with the parameters `host` (a folder for a unix socket, as in
//!   `?host=/run/postgresql`), `port`, `user`, `password`, `dbname`,
//!   `sslmode`, `sslrootcert`, `connect_timeout`, `passfile` and
//!   `application_name`.
//!
//! A relative path is made absolute against the current folder the caller
//! passes in: the CLI's `--db ./k.db` keeps working, and the location shown
//! back (`kvmroll db status`) says which file it is. Anything else (a
//! `postgresql:` without `//`, a scheme kvmroll does not know, an empty text)
//! is refused in one line, so that a mistyped URL never becomes a folder in
//! the current directory.
//!
//! A location's `Display` never shows a password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A parsed database location.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file, always an absolute path.
    Sqlite(PathBuf),
    /// A PostgreSQL server and database.
    Postgres(PgLocation),
}

/// How TLS is used on a TCP connection: libpq's `sslmode`. A unix socket
/// never uses TLS, as in libpq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never.
    Disable,
    /// TLS if the server offers it, without checking its certificate
    /// (libpq's default).
    Prefer,
    /// TLS or no connection; the certificate is checked against
    /// `sslrootcert` only if one is given (libpq: then as `verify-ca`).
    Require,
    /// TLS, and a certificate signed by the CA of `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgHost {
    /// A host name or an IP address, over TCP.
    Tcp(String),
    /// A folder holding the server's unix socket (`.s.PGSQL.PORT`).
    Socket(PathBuf),
}

/// A PostgreSQL location as given: each part `None` where the text left it
/// to libpq's default, which the engine fills in (host: the socket folder
/// `/run/postgresql`; port 5432; user: the caller's login name; dbname: the
/// user's name; sslmode `prefer`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PgLocation {
    pub host: Option<PgHost>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Never shown: `Display` and `Debug` leave it out.
    pub password: Option<String>,
    pub dbname: Option<String>,
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<PathBuf>,
    /// How long opening a connection may take; `Some(ZERO)` is libpq's
    /// `connect_timeout=0`, no limit.
    pub connect_timeout: Option<Duration>,
    pub passfile: Option<PathBuf>,
    pub application_name: Option<String>,
}

/// Why a location was refused.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("the database location is empty")]
    Empty,
    #[error("database location {given}: {scheme}: must be followed by // (postgresql://[user@]host[:port]/dbname)")]
    NoSlashes { given: String, scheme: String },
    #[error("database location {given}: unknown scheme {scheme}: (use a path, sqlite:PATH or postgresql://...)")]
    UnknownScheme { given: String, scheme: String },
    #[error("database location {given}: {why}")]
    Malformed { given: String, why: String },
}

impl Location {
    /// Parses `text`; a relative path is taken against `cwd`.
    pub fn parse(text: &str, cwd: &Path) -> Result<Location, LocationError> {
        Location::parse_in(text, Some(cwd))
    }

    /// As [`Location::parse`]; without `cwd` a relative path stays relative.
    fn parse_in(text: &str, cwd: Option<&Path>) -> Result<Location, LocationError> {
        if text.is_empty() {
            return Err(LocationError::Empty);
        }
        let Some((scheme, rest)) = split_scheme(text) else {
            return Ok(Location::Sqlite(absolute(Path::new(text), cwd)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                // `sqlite:///abs` as a file URL would say it; `sqlite://x`
                // would name a host, which a file has not.
                let path = match rest.strip_prefix("//") {
                    Some(p) if p.starts_with('/') => p,
                    Some(_) => {
                        return Err(LocationError::Malformed {
                            given: redact(text),
                            why: "sqlite:// must be followed by an absolute path".into(),
                        })
                    }
                    None => rest,
                };
                if path.is_empty() {
                    return Err(LocationError::Malformed {
                        given: redact(text),
                        why: "sqlite: names no file".into(),
                    });
                }
                Ok(Location::Sqlite(absolute(Path::new(path), cwd)))
            }
            "postgresql" | "postgres" => {
                match rest.strip_prefix("//") {
                    Some(uri) => parse_pg(uri).map(Location::Postgres).map_err(|why| {
                        LocationError::Malformed {
                            given: redact(text),
                            why,
                        }
                    }),
                    None => Err(LocationError::NoSlashes {
                        given: redact(text),
                        scheme: scheme.to_string(),
                    }),
                }
            }
            _ => Err(LocationError::UnknownScheme {
                given: redact(text),
                scheme: scheme.to_string(),
            }),
        }
    }

    /// The location named by a `--db`/`KVMROLL_DB` value taken as a path,
    /// where that value is a URL (`postgresql:`, `postgres:` or `sqlite:`);
    /// `None` for a plain path. A relative path stays relative, opened
    /// against the process's current folder as a plain path is.
    pub fn from_url_path(path: &Path) -> Result<Option<Location>, LocationError> {
        let Some(text) = path.to_str() else {
            return Ok(None);
        };
        match split_scheme(text) {
            Some((scheme, _))
                if ["postgresql", "postgres", "sqlite"]
                    .contains(&scheme.to_ascii_lowercase().as_str()) =>
            {
                Location::parse_in(text, None).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The engine's name, as `kvmroll db status` shows it.
    pub fn engine(&self) -> &'static str {
        match self {
            Location::Sqlite(_) => "sqlite",
            Location::Postgres(_) => "postgresql",
        }
    }
}

/// `scheme` and what follows its colon, where `text` starts with a URL
/// scheme (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`).
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some((scheme, rest))
}

fn absolute(path: &Path, cwd: Option<&Path>) -> PathBuf {
    match cwd {
        Some(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_path_buf(),
    }
}

/// `text` with any password in a URL's user part replaced, for messages.
fn redact(text: &str) -> String {
    // After `scheme://`, or after `scheme:` where the slashes were left out.
    let (head, uri) = match (text.split_once("//"), split_scheme(text)) {
        (Some(parts), _) => parts,
        (None, Some((scheme, rest))) => (&text[..=scheme.len()], rest),
        (None, None) => return text.to_string(),
    };
    let netloc_end = uri.find(['/', '?']).unwrap_or(uri.len());
    let (netloc, tail) = uri.split_at(netloc_end);
    let netloc = match netloc.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => netloc.to_string(),
        },
        None => netloc.to_string(),
    };
    // A password given as a parameter.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("password", _)) => "password=***".to_string(),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    let slashes = if text.contains("//") { "//" } else { "" };
    format!("{head}{slashes}{netloc}{tail}")
}

/// Parses what follows `postgresql://`.
fn parse_pg(uri: &str) -> Result<PgLocation, String> {
    let mut loc = PgLocation::default();
    let (before_query, query) = match uri.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (uri, None),
    };
    let (netloc, dbname) = match before_query.split_once('/') {
        Some((n, d)) => (n, Some(d)),
        None => (before_query, None),
    };
    // A host cannot hold an `@`, so the last one ends the user part: a
    // password with an unencoded `@` still parses.
    let hosts = match netloc.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                loc.user = Some(decode(user, "user")?);
            }
            if let Some(p) = password {
                loc.password = Some(decode(p, "password")?);
            }
            hosts
        }
        None => netloc,
    };
    if hosts.contains(',') {
        return Err("more than one host is not supported".into());
    }
    let (host, port) = split_host_port(hosts)?;
    if !host.is_empty() {
        loc.host = Some(host_of(&decode(host, "host")?));
    }
    if let Some(port) = port {
        loc.port = Some(parse_port(&decode(port, "port")?)?);
    }
    if let Some(d) = dbname.filter(|d| !d.is_empty()) {
        loc.dbname = Some(decode(d, "dbname")?);
    }
    for kv in query.into_iter().flat_map(|q| q.split('&')) {
        if kv.is_empty() {
            continue;
        }
        let (key, value) = kv
            .split_once('=')
            .ok_or_else(|| format!("parameter {} has no value", printable(kv)))?;
        let key = decode(key, "a parameter name")?;
        let value = decode(value, &key)?;
        set_param(&mut loc, &key, value)?;
    }
    Ok(loc)
}

/// `host[:port]`, where the host may be `[an IPv6 address]`.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(inner) = text.strip_prefix('[') {
        let (addr, after) = inner
            .split_once(']')
            .ok_or_else(|| "an IPv6 address misses its ]".to_string())?;
        return match after {
            "" => Ok((addr, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((addr, Some(port))),
                None => Err(format!("unexpected {} after ]", printable(after))),
            },
        };
    }
    Ok(match text.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (text, None),
    })
}

fn host_of(host: &str) -> PgHost {
    if host.starts_with('/') {
        PgHost::Socket(PathBuf::from(host))
    } else {
        PgHost::Tcp(host.to_string())
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid port {}", printable(text))),
    }
}

fn set_param(loc: &mut PgLocation, key: &str, value: String) -> Result<(), String> {
    match key {
        "host" if value.is_empty() => loc.host = None,
        "host" => {
            if value.contains(',') {
                return Err("more than one host is not supported".into());
            }
            loc.host = Some(host_of(&value));
        }
        "port" => loc.port = Some(parse_port(&value)?),
        "user" => loc.user = Some(value),
        "password" => loc.password = Some(value),
        "dbname" => loc.dbname = Some(value),
        "sslmode" => {
            loc.sslmode = Some(SslMode::parse(&value).ok_or_else(|| {
                format!(
                    "sslmode {} is not one of disable, prefer, require, verify-ca, verify-full",
                    printable(&value)
                )
            })?)
        }
        // libpq takes this JDBC spelling as sslmode=require.
        "ssl" if value == "true" => loc.sslmode = Some(SslMode::Require),
        "sslrootcert" if value == "system" => {
            return Err("sslrootcert=system is not supported: name a CA file".into())
        }
        "sslrootcert" => loc.sslrootcert = Some(PathBuf::from(value)),
        "passfile" => loc.passfile = Some(PathBuf::from(value)),
        "application_name" => loc.application_name = Some(value),
        "connect_timeout" => {
            // libpq: whole seconds; zero or less waits for ever; 1 means 2.
            let secs: i64 = value.trim().parse().map_err(|_| {
                format!("connect_timeout {} is not whole seconds", printable(&value))
            })?;
            loc.connect_timeout = Some(Duration::from_secs(match secs {
                ..=0 => 0,
                1 => 2,
                s => s as u64,
            }));
        }
        other => {
            return Err(format!(
                "unknown parameter {} (kvmroll reads host, port, user, password, dbname, \
                 sslmode, sslrootcert, connect_timeout, passfile, application_name)",
                printable(other)
            ))
        }
    }
    Ok(())
}

/// Percent-decodes one part of the URI; `what` names it in the error.
fn decode(text: &str, what: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in {what}"))?;
            if hex == 0 {
                return Err(format!("{what} holds a %00"));
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{what} is not UTF-8 once decoded"))
}

/// A piece of the given text for a message, quoted and cut short.
fn printable(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    format!("{cut:?}")
}

/// Percent-encodes what a URI part cannot hold as it is.
fn encode(text: &str, keep: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~') || keep.contains(&c) {
            out.push(c);
        } else {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

impl fmt::Display for PgLocation {
    /// libpq's URI form, which parses back to the same location less its
    /// password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("postgresql://")?;
        if let Some(user) = &self.user {
            write!(f, "{}@", encode(user, &[]))?;
        }
        let mut params = Vec::new();
        match &self.host {
            Some(PgHost::Tcp(h)) if h.contains(':') => write!(f, "[{h}]")?,
            Some(PgHost::Tcp(h)) => f.write_str(&encode(h, &[]))?,
            Some(PgHost::Socket(dir)) => {
                params.push(format!("host={}", encode(&dir.to_string_lossy(), &['/'])));
            }
            None => {}
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(db) = &self.dbname {
            write!(f, "/{}", encode(db, &[]))?;
        }
        if let Some(mode) = self.sslmode {
            params.push(format!("sslmode={}", mode.as_str()));
        }
        if let Some(ca) = &self.sslrootcert {
            params.push(format!(
                "sslrootcert={}",
                encode(&ca.to_string_lossy(), &['/'])
            ));
        }
        if let Some(t) = self.connect_timeout {
            params.push(format!("connect_timeout={}", t.as_secs()));
        }
        if let Some(p) = &self.passfile {
            params.push(format!("passfile={}", encode(&p.to_string_lossy(), &['/'])));
        }
        if let Some(a) = &self.application_name {
            params.push(format!("application_name={}", encode(a, &[])));
        }
        if !params.is_empty() {
            write!(f, "?{}", params.join("&"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgLocation({self})")
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(pg) => pg.fmt(f),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            Location::Postgres(pg) => pg.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests;

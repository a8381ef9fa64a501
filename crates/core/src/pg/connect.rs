//! Opening a connection to PostgreSQL as libpq would from the same location:
//! its defaults, its password sources (the URL, `PGPASSWORD`, a password
//! file), TLS by `sslmode` over rustls with ring, and the connection time
//! limit; and the connection failures users act on, told apart (server
//! unreachable, password refused or missing, password file too open).
//!
//! libpq's rules followed here:
//! <https://www.postgresql.org/docs/15/libpq-connect.html> (defaults,
//! `sslmode`, `connect_timeout`), <https://www.postgresql.org/docs/15/libpq-pgpass.html>
//! (the password file) and <https://www.postgresql.org/docs/15/libpq-ssl.html>
//! (what each `sslmode` checks).

use super::Fault;
use crate::dburl::{PgHost, PgLocation, SslMode};
use crate::store::{OpenMode, StoreError};
use postgres::error::SqlState;
use postgres::{Client, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// libpq's default socket folder as Debian builds it (`/var/run` is a link
/// to `/run`).
pub const DEFAULT_SOCKET_DIR: &str = "/run/postgresql";

/// The connection time limit when the location sets none. libpq waits for
/// ever; the hook runs while libvirtd waits for it, so kvmroll does not.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a writer waits for another (SQLite's busy timeout's twin).
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The hook's wait: libvirtd waits for the hook.
const HOOK_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection opened in `mode` waits for a lock (PostgreSQL's
/// `lock_timeout`, which kvmroll's writer lock obeys too).
pub(super) fn lock_wait(mode: OpenMode) -> Duration {
    match mode {
        OpenMode::ReadWriteFast => HOOK_LOCK_TIMEOUT,
        _ => LOCK_TIMEOUT,
    }
}

/// What libpq reads from the process and kvmroll passes in: the binary
/// reads it ([`PgEnv::from_process`]), tests make their own.
#[derive(Debug, Clone, Default)]
pub struct PgEnv {
    /// `PGPASSWORD`.
    pub password: Option<String>,
    /// `PGPASSFILE`.
    pub passfile: Option<PathBuf>,
    /// `HOME`: where `~/.pgpass` and `~/.postgresql/root.crt` are.
    pub home: Option<PathBuf>,
    /// The login name: libpq's default user (and, through it, database).
    pub os_user: Option<String>,
}

impl PgEnv {
    pub fn from_process() -> PgEnv {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        PgEnv {
            password: var("PGPASSWORD").and_then(|v| v.into_string().ok()),
            passfile: var("PGPASSFILE").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
            os_user: nix::unistd::User::from_uid(nix::unistd::Uid::current())
                .ok()
                .flatten()
                .map(|u| u.name),
        }
    }
}

/// A location with libpq's defaults filled in.
pub(super) struct Target {
    pub host: PgHost,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<String>,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub timeout: Option<Duration>,
    pub application_name: String,
}

impl Target {
    pub fn resolve(loc: &PgLocation, env: &PgEnv) -> Result<Target, StoreError> {
        let host = loc
            .host
            .clone()
            .unwrap_or_else(|| PgHost::Socket(PathBuf::from(DEFAULT_SOCKET_DIR)));
        let port = loc.port.unwrap_or(5432);
        let user = loc
            .user
            .clone()
            .or_else(|| env.os_user.clone())
            .unwrap_or_else(|| "root".to_string());
        let dbname = loc.dbname.clone().unwrap_or_else(|| user.clone());
        let mut target = Target {
            host,
            port,
            user,
            dbname,
            password: None,
            sslmode: loc.sslmode.unwrap_or(SslMode::Prefer),
            // libpq's default CA file, used where one is asked for.
            sslrootcert: loc.sslrootcert.clone().or_else(|| {
                let f = env.home.as_ref()?.join(".postgresql/root.crt");
                f.exists().then_some(f)
            }),
            timeout: match loc.connect_timeout {
                Some(Duration::ZERO) => None,
                Some(t) => Some(t),
                None => Some(DEFAULT_CONNECT_TIMEOUT),
            },
            application_name: loc
                .application_name
                .clone()
                .unwrap_or_else(|| "kvmroll".to_string()),
        };
        // libpq's order: the URL, then PGPASSWORD, then the password file.
        target.password = match loc.password.clone().or_else(|| env.password.clone()) {
            Some(p) => Some(p),
            None => {
                let file = loc
                    .passfile
                    .clone()
                    .or_else(|| env.passfile.clone())
                    .or_else(|| env.home.as_ref().map(|h| h.join(".pgpass")));
                match file {
                    Some(f) => passfile_password(&f, &target)?,
                    None => None,
                }
            }
        };
        Ok(target)
    }

    /// The host and port for messages: a socket folder or a host name.
    pub fn host_text(&self) -> String {
        match &self.host {
            PgHost::Tcp(h) => h.clone(),
            PgHost::Socket(d) => d.display().to_string(),
        }
    }
}

/// The password a libpq password file holds for `target`, if any line
/// matches. Each line is `host:port:database:user:password`, `*` matching
/// anything and `\` escaping `:` and `\`; a unix socket matches the host
/// `localhost`. A missing file is no error; one that group or others can
/// reach is refused, the rule by which libpq ignores it.
fn passfile_password(path: &Path, target: &Target) -> Result<Option<String>, StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(None);
    };
    if !meta.is_file() {
        log::warn!(
            "password file {} is not a plain file; not used",
            path.display()
        );
        return Ok(None);
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(StoreError::PassfileReadable {
            path: path.to_path_buf(),
        });
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("password file {}: {e}; not used", path.display());
            return Ok(None);
        }
    };
    Ok(passfile_lookup(&text, target))
}

fn passfile_lookup(text: &str, target: &Target) -> Option<String> {
    let host = match &target.host {
        PgHost::Tcp(h) => h.as_str(),
        PgHost::Socket(_) => "localhost",
    };
    let port = target.port.to_string();
    let wanted = [host, port.as_str(), &target.dbname, &target.user];
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|line| {
            let fields = passfile_fields(line)?;
            fields[..4]
                .iter()
                .zip(wanted)
                .all(|(f, w)| f == "*" || f == w)
                .then(|| fields[4].clone())
        })
}

/// The five fields of a password file line, unescaped; `None` for a line
/// with fewer (libpq skips it). The password is the rest of the line.
fn passfile_fields(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

/// Connects, retrying while the server says it cannot take one more
/// connection yet (too many clients, starting up) within the time limit.
pub(super) fn connect(target: &Target, shown: &str, mode: OpenMode) -> Result<Client, StoreError> {
    let mut config = postgres::Config::new();
    config
        .user(&target.user)
        .dbname(&target.dbname)
        .port(target.port)
        .application_name(&target.application_name);
    match &target.host {
        PgHost::Tcp(h) => config.host(h),
        PgHost::Socket(d) => config.host_path(d),
    };
    if let Some(p) = &target.password {
        config.password(p);
    }
    if let Some(t) = target.timeout {
        config.connect_timeout(t);
    }
    // Settings go in the startup packet: no round trip of their own.
    let mut options = format!("-c lock_timeout={}", lock_wait(mode).as_millis());
    match mode {
        OpenMode::ReadOnly => options.push_str(" -c default_transaction_read_only=on"),
        // The hook's twin of SQLite's synchronous=NORMAL: a commit returns
        // before its WAL record is flushed; a server crash may lose the last
        // events, never consistency.
        OpenMode::ReadWriteFast => options.push_str(" -c synchronous_commit=off"),
        OpenMode::ReadWrite | OpenMode::Create => {}
    }
    config.options(&options);
    let tls = tls_config(target, shown)?;
    let deadline = target.timeout.map(|t| Instant::now() + t);
    let mut pause = Duration::from_millis(20);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let e = match connect_within(&config, &tls, left) {
            Ok(client) => return Ok(client),
            Err(Some(e)) => e,
            Err(None) => {
                return Err(StoreError::Unreachable {
                    host: target.host_text(),
                    port: target.port,
                    source: Box::new(Fault(format!(
                        "no answer within {} s (connect_timeout)",
                        target.timeout.unwrap_or_default().as_secs()
                    ))),
                })
            }
        };
        let busy = matches!(
            e.code(),
            Some(c) if *c == SqlState::TOO_MANY_CONNECTIONS || *c == SqlState::CANNOT_CONNECT_NOW
        );
        let time_left = deadline.is_none_or(|d| Instant::now() + pause < d);
        if !(busy && time_left) {
            return Err(connect_error(e, target, shown));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// One connection attempt, given up after `limit` (`Err(None)`).
///
/// tokio-postgres's own `connect_timeout` bounds only the socket's connect;
/// libpq's bounds the whole start-up, and so must kvmroll's, or a server
/// that accepts and then hangs (stopped with SIGSTOP, swapping) would hang
/// the hook and libvirtd with it. The sync client cannot be interrupted, so
/// the attempt runs on a thread of its own that is left behind past the
/// limit: it ends when the server answers or the process exits.
fn connect_within(
    config: &postgres::Config,
    tls: &Option<ClientConfig>,
    limit: Option<Duration>,
) -> Result<Client, Option<postgres::Error>> {
    let attempt = {
        let (config, tls) = (config.clone(), tls.clone());
        move || match tls {
            Some(tls) => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls)),
            None => config.connect(NoTls),
        }
    };
    let Some(limit) = limit else {
        return attempt().map_err(Some);
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(attempt());
    });
    match rx.recv_timeout(limit) {
        Ok(result) => result.map_err(Some),
        Err(_) => Err(None),
    }
}

/// The failure of a connection attempt, as users act on it.
fn connect_error(e: postgres::Error, target: &Target, shown: &str) -> StoreError {
    if let Some(db) = e.as_db_error() {
        if *db.code() == SqlState::INVALID_PASSWORD {
            return StoreError::Auth {
                location: shown.to_string(),
                user: target.user.clone(),
            };
        }
        return super::backend(shown, "connecting", &e);
    }
    // tokio-postgres tells its kinds apart only by their text.
    let cause = std::error::Error::source(&e).map(ToString::to_string);
    match e.to_string().as_str() {
        "error connecting to server" | "timeout waiting for server" => StoreError::Unreachable {
            host: target.host_text(),
            port: target.port,
            source: Box::new(Fault(cause.unwrap_or_else(|| "timed out".into()))),
        },
        "invalid configuration" if cause.as_deref() == Some("password missing") => {
            StoreError::NoPassword {
                location: shown.to_string(),
                user: target.user.clone(),
            }
        }
        "error performing TLS handshake" => super::backend(shown, "setting up TLS", &e),
        _ => super::backend(shown, "connecting", &e),
    }
}

/// The TLS set-up `sslmode` asks for; `None` for a plain connection.
fn tls_config(target: &Target, shown: &str) -> Result<Option<ClientConfig>, StoreError> {
    // libpq never uses TLS over a unix socket.
    if matches!(target.host, PgHost::Socket(_)) || target.sslmode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |source: crate::store::BackendError| StoreError::Sql {
        path: shown.into(),
        what: "setting up TLS",
        source,
    };
    // libpq: `require` checks the chain as `verify-ca` does when a CA file
    // is given (or ~/.postgresql/root.crt exists); `prefer` never checks.
    let ca = match target.sslmode {
        SslMode::Prefer | SslMode::Disable => None,
        SslMode::Require => target.sslrootcert.clone(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            Some(target.sslrootcert.clone().ok_or_else(|| {
                tls_error(Box::new(Fault(format!(
                    "sslmode={} needs a CA file: sslrootcert=FILE",
                    target.sslmode.as_str()
                ))))
            })?)
        }
    };
    let verifier: Arc<dyn ServerCertVerifier> = match ca {
        None => Arc::new(Unverified(provider.clone())),
        Some(file) => {
            let roots = read_roots(&file).map_err(|why| {
                tls_error(Box::new(Fault(format!(
                    "CA file {}: {why}",
                    file.display()
                ))))
            })?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| tls_error(Box::new(e)))?;
            if target.sslmode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(Box::new(e)))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(config))
}

fn read_roots(file: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(file).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(roots)
}

/// `sslmode=prefer`, or `require` without a CA: encrypted, but the
/// server's certificate is taken as it comes, as libpq does. The handshake's
/// signatures are still checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the CA; the name is not checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;

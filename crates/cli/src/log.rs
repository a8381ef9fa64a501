//! The one log backend of every kvmroll binary (libraries use the `log`
//! macros): each line goes once to the system log and, where a person reads
//! it, to stderr.
//!
//! - Under systemd (its journal's socket exists) a line is a datagram of
//!   the journal's native protocol
//!   (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>): `PRIORITY`, `MESSAGE`,
//!   `SYSLOG_IDENTIFIER`, `SYSLOG_PID`, `SYSLOG_FACILITY` and, for a line
//!   about one VM, `VM`, so that `journalctl -t kvmroll-hook VM=NAME` finds
//!   it. Elsewhere a syslog datagram to `/dev/log` (facility daemon). With
//!   neither, the binary carries on (youki warns and goes on without
//!   journald).
//! - stderr gets the line too unless stderr is itself the journal (a
//!   systemd service's, as `JOURNAL_STREAM` says): kvmroll-guests used to
//!   write each line to both, so the journal had it twice.
//! - Debug lines show with `--verbose` or `KVMROLL_LOG=debug`.
//!
//! A line's VM is the one [`set_vm`] gave (the hook handles one VM per
//! run), else the NAME of a message written `VM NAME: ...`, the form every
//! kvmroll binary uses for a line about one VM.
//!
//! The sockets are opened at the first line, not at start: most hook runs
//! log nothing, and libvirtd waits for its hook. `KVMROLL_LOG_ROOT` puts
//! both sockets under another root, for tests.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The journal's socket for native messages.
const JOURNAL_SOCKET: &str = "run/systemd/journal/socket";
/// The syslog socket.
const SYSLOG_SOCKET: &str = "dev/log";
/// syslog's facility daemon, as the journal and syslog number it.
const FACILITY_DAEMON: u8 = 3;

/// Where a binary's log lines go besides stderr.
#[derive(Debug)]
enum Sink {
    Journal(UnixDatagram),
    Syslog(UnixDatagram),
}

/// How a binary logs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The binary's name: stderr's prefix and the log's identifier.
    pub ident: &'static str,
    /// Whether lines go to the system log (the hook, the service) or to
    /// stderr only (the admin's commands).
    pub system_log: bool,
    /// Whether lines go to stderr (unless it is the journal).
    pub stderr: bool,
    /// The least severe level kept without `--verbose`.
    pub level: log::LevelFilter,
    /// `--verbose`: debug lines too.
    pub verbose: bool,
    /// Called before a line is written to stderr (a progress line to clear).
    pub before_stderr: fn(),
}

impl Options {
    /// A binary's options: info and above to the system log and stderr.
    pub fn new(ident: &'static str) -> Options {
        Options {
            ident,
            system_log: true,
            stderr: true,
            level: log::LevelFilter::Info,
            verbose: false,
            before_stderr: || {},
        }
    }
}

/// An admin's command: its warnings (and, with `--verbose`, its debug
/// lines) on stderr, where the one running it reads them; the system log
/// is for the hook and the service.
pub fn init_command(ident: &'static str, verbose: bool) {
    init(Options {
        system_log: false,
        level: log::LevelFilter::Warn,
        verbose,
        ..Options::new(ident)
    });
}

struct Logger {
    options: Options,
    /// Whether stderr is the journal (then lines go there once, natively).
    stderr_is_journal: bool,
    root: PathBuf,
    sink: OnceLock<Option<Mutex<Sink>>>,
}

static VM: OnceLock<String> = OnceLock::new();

/// Names the VM every line of this run is about (the hook's).
pub fn set_vm(name: &str) {
    let _ = VM.set(name.to_string());
}

/// Installs the logger; a second call changes nothing.
pub fn init(options: Options) {
    let verbose = options.verbose || env_wants_debug();
    let max = if verbose {
        log::LevelFilter::Debug
    } else {
        options.level
    };
    let root =
        std::env::var_os("KVMROLL_LOG_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    let logger = Logger {
        options,
        stderr_is_journal: stderr_is_journal(),
        root,
        sink: OnceLock::new(),
    };
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(max);
    }
}

/// `KVMROLL_LOG=debug` (or `1`, `verbose`, `trace`).
fn env_wants_debug() -> bool {
    std::env::var("KVMROLL_LOG").is_ok_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "debug" | "1" | "verbose" | "trace"
        )
    })
}

/// Whether fd 2 is the stream `JOURNAL_STREAM` names (`DEVICE:INODE`), as
/// systemd sets it for a service whose stderr is the journal
/// (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some(want) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(2) else {
        return false;
    };
    want == format!("{}:{}", st.st_dev, st.st_ino)
}

/// The journal's priority of a level (syslog's severities).
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// The VM a line is about: the run's, else `VM NAME: ` at its start.
fn vm_of(message: &str) -> Option<&str> {
    if let Some(vm) = VM.get() {
        return Some(vm);
    }
    let rest = message.strip_prefix("VM ")?;
    let (name, _) = rest.split_once(": ")?;
    (!name.is_empty() && !name.contains(char::is_whitespace)).then_some(name)
}

/// One journal field: `KEY=value\n`, or, for a value with a newline, the
/// key, a newline, the value's length (64-bit little endian) and the value.
fn field(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// A journal datagram.
pub fn journal_datagram(ident: &str, level: log::Level, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 128);
    field(&mut out, "PRIORITY", &priority(level).to_string());
    field(&mut out, "SYSLOG_FACILITY", &FACILITY_DAEMON.to_string());
    field(&mut out, "SYSLOG_IDENTIFIER", ident);
    field(&mut out, "SYSLOG_PID", &std::process::id().to_string());
    if let Some(vm) = vm_of(message) {
        field(&mut out, "VM", vm);
    }
    field(&mut out, "MESSAGE", message);
    out
}

/// A syslog datagram, `<PRI>IDENT[PID]: MESSAGE`; the daemon adds the time
/// it received it. Lines after the first follow on the same record.
pub fn syslog_datagram(ident: &str, level: log::Level, message: &str) -> Vec<u8> {
    let pri = u16::from(FACILITY_DAEMON) * 8 + u16::from(priority(level));
    format!(
        "<{pri}>{ident}[{}]: {}",
        std::process::id(),
        message.replace('\n', " ")
    )
    .into_bytes()
}

impl Logger {
    fn connect(&self) -> Option<Sink> {
        let socket = |path: &Path| {
            let s = UnixDatagram::unbound().ok()?;
            s.connect(path).ok()?;
            Some(s)
        };
        let journal = self.root.join(JOURNAL_SOCKET);
        if journal.exists() {
            if let Some(s) = socket(&journal) {
                return Some(Sink::Journal(s));
            }
        }
        socket(&self.root.join(SYSLOG_SOCKET)).map(Sink::Syslog)
    }

    fn to_system_log(&self, level: log::Level, message: &str) {
        let sink = self.sink.get_or_init(|| self.connect().map(Mutex::new));
        let Some(sink) = sink else { return };
        let sink = sink.lock().unwrap_or_else(|e| e.into_inner());
        let ident = self.options.ident;
        // A lost line is not worth failing the run for.
        let _ = match &*sink {
            Sink::Journal(s) => s.send(&journal_datagram(ident, level, message)),
            Sink::Syslog(s) => s.send(&syslog_datagram(ident, level, message)),
        };
    }

    fn to_stderr(&self, level: log::Level, message: &str) {
        (self.options.before_stderr)();
        let ident = self.options.ident;
        let mut e = std::io::stderr().lock();
        // The words kvmroll's own messages use: `kvmroll: warning: ...`.
        let _ = match level {
            log::Level::Error => writeln!(e, "{ident}: error: {message}"),
            log::Level::Warn => writeln!(e, "{ident}: warning: {message}"),
            log::Level::Info => writeln!(e, "{ident}: {message}"),
            log::Level::Debug | log::Level::Trace => writeln!(e, "{ident}: debug: {message}"),
        };
    }
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        // Bounded once for both: a plugin's output or libvirt's error can
        // be megabytes.
        let message = kvmroll_core::text::message(&r.args().to_string());
        let journal_has_stderr = self.stderr_is_journal && self.options.system_log;
        if self.options.stderr && !journal_has_stderr {
            self.to_stderr(r.level(), &message);
        }
        if self.options.system_log {
            self.to_system_log(r.level(), &message);
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(datagram: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = datagram;
        while !rest.is_empty() {
            let nl = rest.iter().position(|b| *b == b'\n').unwrap();
            let line = &rest[..nl];
            if let Some(eq) = line.iter().position(|b| *b == b'=') {
                let (k, v) = (&line[..eq], &line[eq + 1..]);
                out.push((
                    String::from_utf8_lossy(k).into(),
                    String::from_utf8_lossy(v).into(),
                ));
                rest = &rest[nl + 1..];
            } else {
                let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let v = &rest[nl + 9..nl + 9 + len];
                out.push((
                    String::from_utf8_lossy(line).into(),
                    String::from_utf8_lossy(v).into(),
                ));
                rest = &rest[nl + 9 + len + 1..];
            }
        }
        out
    }

    #[test]
    fn a_journal_line_carries_its_priority_identifier_and_vm() {
        let d = journal_datagram(
            "kvmroll-guests",
            log::Level::Warn,
            "VM web-1: restore failed (x)",
        );
        let f = fields(&d);
        let get = |k: &str| f.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PRIORITY"), Some("4"));
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("kvmroll-guests"));
        assert_eq!(get("VM"), Some("web-1"));
        assert_eq!(get("MESSAGE"), Some("VM web-1: restore failed (x)"));
        let d = journal_datagram("kvmroll-guests", log::Level::Error, "two\nlines");
        let f = fields(&d);
        assert!(
            f.contains(&("MESSAGE".into(), "two\nlines".into())),
            "{f:?}"
        );
        assert!(f.contains(&("PRIORITY".into(), "3".into())));
        assert!(!f.iter().any(|(k, _)| k == "VM"));
    }

    #[test]
    fn a_syslog_line_is_one_record_at_facility_daemon() {
        let d = syslog_datagram("kvmroll-hook", log::Level::Error, "a\nb");
        let text = String::from_utf8(d).unwrap();
        assert!(text.starts_with("<27>kvmroll-hook["), "{text}");
        assert!(text.ends_with("]: a b"), "{text}");
    }
}

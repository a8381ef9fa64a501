//! Telling systemd how a run goes, through its notification socket
//! (`NOTIFY_SOCKET`, sd_notify(3)): `EXTEND_TIMEOUT_USEC` while the run
//! progresses, so that the unit's fixed `TimeoutStopSec` and
//! `TimeoutStartSec` are a safety net rather than a guess, and `STATUS`
//! lines for `systemctl status`. Run by hand (no `NOTIFY_SOCKET`), nothing
//! is sent.
//!
//! The protocol is one datagram per message, `KEY=VALUE` lines, to the
//! socket the variable names: a path, or an abstract name written with a
//! leading '@' (systemd's own notation). It is written here with std's
//! `UnixDatagram` rather than a crate: it is a few lines.
//! EXTEND_TIMEOUT_USEC asks the manager to wait that much longer from the
//! moment it reads it; a service that stops sending is then cut off at the
//! fixed limit or at the last extension, whichever comes later.

use std::ffi::OsStr;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// Where the notifications go, if anywhere.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From the process's `NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        Notifier::from_var(std::env::var_os("NOTIFY_SOCKET").as_deref())
    }

    /// From a `NOTIFY_SOCKET` value: a path, or `@name` for an abstract
    /// socket. Unset, empty or unusable: a notifier that sends nothing (said
    /// once when the value was there but unusable).
    pub fn from_var(value: Option<&OsStr>) -> Notifier {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Notifier::default();
        };
        match Notifier::open(value) {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(e) => {
                log::warn!(
                    "NOTIFY_SOCKET={}: cannot use it ({e}); systemd will not hear of the run's progress",
                    value.to_string_lossy()
                );
                Notifier::default()
            }
        }
    }

    fn open(value: &OsStr) -> std::io::Result<(UnixDatagram, SocketAddr)> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = value.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(value)?,
        };
        Ok((UnixDatagram::unbound()?, addr))
    }

    /// Whether messages go anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message; a manager that is gone is not an error of the run.
    pub fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                log::debug!("cannot notify the service manager: {e}");
            }
        }
    }

    /// Asks the manager to wait `by` more, from now.
    pub fn extend(&self, by: Duration) {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()));
    }
}

/// Extends the limit at most every `every`, by `step`, while the run
/// progresses, and never past `end` (the stop's budget) where there is one.
#[derive(Debug)]
pub struct Extender<'a> {
    notifier: &'a Notifier,
    every: Duration,
    step: Duration,
    end: Option<Instant>,
    last: Option<Instant>,
}

impl<'a> Extender<'a> {
    pub fn new(notifier: &'a Notifier, every: Duration, step: Duration) -> Extender<'a> {
        Extender {
            notifier,
            every,
            step,
            end: None,
            last: None,
        }
    }

    /// How often it extends at most.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Extensions reach no further than `end`.
    pub fn until(mut self, end: Instant) -> Extender<'a> {
        self.end = Some(end);
        self
    }

    /// Called often; extends when the run progressed and the last
    /// extension is `every` old. Returns what it asked for, if anything.
    pub fn tick(&mut self, now: Instant, progressed: bool) -> Option<Duration> {
        if !progressed || !self.notifier.enabled() {
            return None;
        }
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            return None;
        }
        let by = match self.end {
            Some(end) => self.step.min(end.saturating_duration_since(now)),
            None => self.step,
        };
        // Under a millisecond left is no extension worth sending.
        if by < Duration::from_millis(1) {
            return None;
        }
        self.notifier.extend(by);
        self.last = Some(now);
        Some(by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (tempfile::TempDir, UnixDatagram, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        (dir, sock, path)
    }

    fn received(sock: &UnixDatagram) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    }

    #[test]
    fn without_notify_socket_nothing_is_sent() {
        assert!(!Notifier::from_var(None).enabled());
        assert!(!Notifier::from_var(Some(OsStr::new(""))).enabled());
        let n = Notifier::from_var(None);
        let mut x = Extender::new(&n, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(x.tick(Instant::now(), true), None);
    }

    #[test]
    fn a_path_socket_hears_extend_timeout_usec() {
        let (_dir, sock, path) = listener();
        let n = Notifier::from_var(Some(path.as_os_str()));
        n.extend(Duration::from_millis(1500));
        assert_eq!(received(&sock), ["EXTEND_TIMEOUT_USEC=1500000"]);
    }

    #[test]
    fn an_abstract_socket_written_with_an_at_sign_hears_it_too() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("kvmroll-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_nonblocking(true).unwrap();
        let n = Notifier::from_var(Some(OsStr::new(&format!("@{name}"))));
        n.send("STATUS=saving");
        assert_eq!(received(&sock), ["STATUS=saving"]);
    }

    #[test]
    fn extensions_are_spaced_need_progress_and_stop_at_the_end() {
        let (_dir, sock, path) = listener();
        let n = Notifier::from_var(Some(path.as_os_str()));
        let t0 = Instant::now();
        let every = Duration::from_secs(1);
        let mut x = Extender::new(&n, every, Duration::from_secs(5)).until(t0 + every * 7);
        assert_eq!(x.tick(t0, false), None, "no progress, no extension");
        assert_eq!(x.tick(t0, true), Some(Duration::from_secs(5)));
        assert_eq!(x.tick(t0 + every / 2, true), None, "too soon");
        assert_eq!(x.tick(t0 + every * 4, true), Some(every * 3), "capped");
        assert_eq!(x.tick(t0 + every * 7, true), None, "the budget is spent");
        assert_eq!(
            received(&sock),
            ["EXTEND_TIMEOUT_USEC=5000000", "EXTEND_TIMEOUT_USEC=3000000"]
        );
    }
}

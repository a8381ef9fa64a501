//! Log lines to stderr (what an operator or the journal of systemd sees) and
//! to syslog (facility daemon); without a syslog it carries on.

use std::sync::Mutex;

type Syslog = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

struct Both {
    syslog: Option<Mutex<Syslog>>,
}

impl log::Log for Both {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        // Bounded once for both sinks: libvirt's errors can be megabytes.
        let msg = kvmroll_core::text::message(&r.args().to_string());
        crate::progress::clear_line();
        match r.level() {
            log::Level::Error | log::Level::Warn => eprintln!(
                "kvmroll-guests: {}: {msg}",
                r.level().as_str().to_lowercase()
            ),
            _ => eprintln!("kvmroll-guests: {msg}"),
        }
        if let Some(s) = &self.syslog {
            if let Ok(mut s) = s.lock() {
                let _ = match r.level() {
                    log::Level::Error => s.err(&msg),
                    log::Level::Warn => s.warning(&msg),
                    _ => s.info(&msg),
                };
            }
        }
    }

    fn flush(&self) {}
}

pub fn init() {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: "kvmroll-guests".into(),
        pid: std::process::id(),
    };
    let syslog = syslog::unix(formatter).ok().map(Mutex::new);
    if log::set_boxed_logger(Box::new(Both { syslog })).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

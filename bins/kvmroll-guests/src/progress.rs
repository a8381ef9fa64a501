//! Progress on a terminal: one line, redrawn, saying which VMs are being
//! saved or restored and how far; nothing when stderr is not a terminal
//! (systemd's journal gets the plain log lines instead).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static DRAWN: AtomicBool = AtomicBool::new(false);

pub fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Redraws the progress line.
pub fn draw(line: &str) {
    if !on_terminal() {
        return;
    }
    let mut e = std::io::stderr().lock();
    let _ = write!(e, "\r\x1b[K{line}");
    let _ = e.flush();
    DRAWN.store(true, Ordering::Relaxed);
}

/// Clears the progress line before a log line is printed.
pub fn clear_line() {
    if DRAWN.swap(false, Ordering::Relaxed) {
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[K");
        let _ = e.flush();
    }
}

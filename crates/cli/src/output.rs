//! Standard output for every kvmroll binary, where a closed pipe
//! (`kvmroll vm list | head -1`) ends the command quietly.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE and
//! the error would reach the report as "Broken pipe". Restoring SIGPIPE's
//! default instead would kill a service (kvmroll-guests) whose stdout is a
//! journal stream that went away mid-stop. So writes go through [`Stdout`],
//! which notes a closed pipe, and [`crate::report`] then exits 0 without a
//! word: the reader asked for no more, as ripgrep treats it.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to standard output found its pipe closed.
static PIPE_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether a write to standard output found its reader gone.
pub fn pipe_closed() -> bool {
    PIPE_CLOSED.load(Ordering::Relaxed)
}

/// Standard output, locked, noting a closed pipe.
#[derive(Debug)]
pub struct Stdout(std::io::StdoutLock<'static>);

/// Standard output for a command's results.
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

fn note<T>(result: std::io::Result<T>) -> std::io::Result<T> {
    if let Err(e) = &result {
        if e.kind() == ErrorKind::BrokenPipe {
            PIPE_CLOSED.store(true, Ordering::Relaxed);
        }
    }
    result
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        note(self.0.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        note(self.0.flush())
    }
}

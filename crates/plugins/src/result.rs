//! How a plugin's (or any supervised command's) run ended.

use std::time::Duration;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
}

impl RunResult {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
}

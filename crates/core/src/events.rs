//! The events table: every hook invocation and every plugin run, so that an
//! administrator can see what ran for a VM, when, for how long and how it
//! ended (`kvmroll events`).

use serde::{Deserialize, Serialize};

/// How an invocation or a plugin run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Ran and succeeded.
    Ok,
    /// Ran and failed (non-zero exit, bad output).
    Failed,
    /// Killed at its time limit.
    Timeout,
    /// Not run: unsafe ownership or permissions.
    Refused,
    /// A VM the database does not know, passed through untouched.
    PassThrough,
    /// libvirt's definition differs from the database.
    Drift,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
            Outcome::PassThrough => "pass-through",
            Outcome::Drift => "drift",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "ok" => Outcome::Ok,
            "failed" => Outcome::Failed,
            "timeout" => Outcome::Timeout,
            "refused" => Outcome::Refused,
            "pass-through" => Outcome::PassThrough,
            "drift" => Outcome::Drift,
            _ => return None,
        })
    }
}

/// One row of the events table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Store order; 0 before it is stored.
    pub id: i64,
    /// Unix time in milliseconds.
    pub time_ms: i64,
    pub vm: String,
    pub stage: String,
    pub op: String,
    pub subop: String,
    /// The plugin's path; `None` for the invocation itself.
    pub plugin: Option<String>,
    pub outcome: Outcome,
    /// The exit status, where there was one.
    pub status: Option<i32>,
    pub duration_ms: u64,
    /// The first lines of the plugin's stderr, or the reason.
    pub message: String,
}

/// Which events to read back.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub vm: Option<String>,
    /// The newest N.
    pub limit: Option<u32>,
}

/// The first `lines` lines of `text`, at most `bytes` long: what the events
/// table keeps of a plugin's stderr.
pub fn first_lines(text: &str, lines: usize, bytes: usize) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(lines)
        .collect::<Vec<_>>()
        .join("\n");
    if out.len() > bytes {
        let mut cut = bytes;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_first_lines() {
        assert_eq!(first_lines("a\n\nb\nc\n", 2, 100), "a\nb");
        assert_eq!(first_lines("ééé", 1, 3), "é");
    }

    #[test]
    fn outcomes_round_trip() {
        for o in [
            Outcome::Ok,
            Outcome::Failed,
            Outcome::Timeout,
            Outcome::Refused,
            Outcome::PassThrough,
            Outcome::Drift,
        ] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }
}

//! The events table: every hook invocation and every plugin run, so that an
//! administrator can see what ran for a VM, when, for how long and how it
//! ended (`kvmroll events`).

use serde::{Deserialize, Serialize};

/// How an invocation or a plugin run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventOutcome {
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
    /// libvirt's definition differs from what kvmroll decided.
    Drift,
    /// libvirt's definition is an older generation than the database's.
    Stale,
    /// The database could not be reached; the event went on without it.
    Unreachable,
}

impl EventOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Ok => "ok",
            EventOutcome::Failed => "failed",
            EventOutcome::Timeout => "timeout",
            EventOutcome::Refused => "refused",
            EventOutcome::PassThrough => "pass-through",
            EventOutcome::Drift => "drift",
            EventOutcome::Stale => "stale",
            EventOutcome::Unreachable => "unreachable",
        }
    }

    pub fn parse(s: &str) -> Option<EventOutcome> {
        Some(match s {
            "ok" => EventOutcome::Ok,
            "failed" => EventOutcome::Failed,
            "timeout" => EventOutcome::Timeout,
            "refused" => EventOutcome::Refused,
            "pass-through" => EventOutcome::PassThrough,
            "drift" => EventOutcome::Drift,
            "stale" => EventOutcome::Stale,
            "unreachable" => EventOutcome::Unreachable,
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
    pub outcome: EventOutcome,
    /// The exit status, where there was one.
    pub status: Option<i32>,
    pub duration_ms: u64,
    /// The first lines of the plugin's stderr, or the reason.
    pub message: String,
    /// The container it happened on (`None` for events recorded before
    /// kvmroll said so). Missing from a spool file written before it was
    /// added: such a file is read all the same.
    #[serde(default)]
    pub container: Option<String>,
}

/// Which events to read back.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub vm: Option<String>,
    /// Only those that happened on this container.
    pub container: Option<String>,
    /// The newest N.
    pub limit: Option<u32>,
}

/// What an event keeps of outside text (see [`crate::text`]): `message`
/// bounds every event's message when the event is made (its first lines and
/// a few KB, with a note of the cut), so that a row stays small however much
/// a plugin printed; `first_lines` picks what a plugin's stderr shows.
pub use crate::text::{first_lines, message};

/// One event from a container's spool ([`crate::spool`]) and its origin,
/// the key that makes its delivery happen once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub origin: String,
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip() {
        for o in [
            EventOutcome::Ok,
            EventOutcome::Failed,
            EventOutcome::Timeout,
            EventOutcome::Refused,
            EventOutcome::PassThrough,
            EventOutcome::Drift,
            EventOutcome::Stale,
            EventOutcome::Unreachable,
        ] {
            assert_eq!(EventOutcome::parse(o.as_str()), Some(o));
        }
    }
}

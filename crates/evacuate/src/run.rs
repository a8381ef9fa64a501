//! The moves of an evacuation, `parallel` at once: each worker takes the
//! next VM off one queue (largest first, as placed), so that a slow
//! migration holds up no other; no migration begins once the deadline is
//! too near or the caller asked to stop, and each is limited to what is
//! left before the deadline.

use crate::placement::Move;
use crate::Mover;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time a migration is begun with: below it even a small idle
/// guest (1.6 s for 128 MiB on the rig) would likely be aborted, and the
/// time is better left to what follows (a save, at a container's stop).
pub const MIN_LIMIT: Duration = Duration::from_secs(3);

/// How the moves run.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many migrations at once (at least one).
    pub parallel: usize,
    /// Every migration's limit (`--timeout`); `None`: each VM's own
    /// `kvm_migrate_timeout`.
    pub limit: Option<Duration>,
    /// No migration runs past this (a container's stop budget).
    pub deadline: Option<Instant>,
    /// How long each container has to answer the survey.
    pub ask: Duration,
}

/// What became of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Moved {
        vm: String,
        to: String,
        took: Duration,
    },
    NotMoved {
        vm: String,
        why: String,
    },
}

impl Outcome {
    pub fn vm(&self) -> &str {
        match self {
            Outcome::Moved { vm, .. } | Outcome::NotMoved { vm, .. } => vm,
        }
    }

    /// What became of it: `moved to B (live, 1.6 s)` or `not moved: why`,
    /// as `kvmroll vm migrate` says it.
    pub fn what(&self) -> String {
        match self {
            Outcome::Moved { to, took, .. } => {
                format!("moved to {to} (live, {:.1} s)", took.as_secs_f64())
            }
            Outcome::NotMoved { why, .. } => format!("not moved: {why}"),
        }
    }

    /// Its line for people: `VM x moved to B (live, 1.6 s)` or `VM x not moved: why`.
    pub fn line(&self) -> String {
        format!("VM {} {}", self.vm(), self.what())
    }
}

/// Runs `moves` with `mover`, each VM within `limit(vm)`; `said` hears
/// each outcome as it is known. The outcomes come back in that order.
pub fn run(
    moves: &[Move],
    mover: &dyn Mover,
    limit: &(dyn Fn(&str) -> Duration + Sync),
    opts: &Options,
    stop: &AtomicBool,
    said: &(dyn Fn(&Outcome) + Sync),
) -> Vec<Outcome> {
    let queue = Mutex::new(moves.iter().collect::<VecDeque<_>>());
    let outcomes = Mutex::new(Vec::with_capacity(moves.len()));
    let record = |o: Outcome| {
        said(&o);
        outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(o);
    };
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.max(1).min(moves.len()) {
            s.spawn(|| {
                while let Some(m) = next(&queue) {
                    record(one(m, mover, limit(&m.vm), opts.deadline, stop));
                }
            });
        }
    });
    outcomes.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// The next move off the queue (its own statement: the lock is not held
/// during the migration).
fn next<'a>(queue: &Mutex<VecDeque<&'a Move>>) -> Option<&'a Move> {
    queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
}

/// One move, unless the caller stopped or the deadline is too near.
fn one(
    m: &Move,
    mover: &dyn Mover,
    own: Duration,
    deadline: Option<Instant>,
    stop: &AtomicBool,
) -> Outcome {
    let not_moved = |why: String| Outcome::NotMoved {
        vm: m.vm.clone(),
        why,
    };
    if stop.load(Ordering::SeqCst) {
        return not_moved("interrupted before its migration began".into());
    }
    let started = Instant::now();
    let limit = match deadline {
        Some(end) => own.min(end.saturating_duration_since(started)),
        None => own,
    };
    if limit < MIN_LIMIT.min(own) {
        return not_moved(format!(
            "no time left for its migration to {} ({:.1} s)",
            m.to,
            limit.as_secs_f64()
        ));
    }
    log::info!(
        "VM {}: migrating to {} (at most {:.0} s)",
        m.vm,
        m.to,
        limit.as_secs_f64()
    );
    match mover.migrate(&m.vm, &m.to, limit) {
        Ok(()) => Outcome::Moved {
            vm: m.vm.clone(),
            to: m.to.clone(),
            took: started.elapsed(),
        },
        Err(e) => not_moved(format!(
            "migration to {} failed: {}",
            m.to,
            kvmroll_core::error_chain(e.as_ref())
        )),
    }
}

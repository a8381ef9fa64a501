//! `kvmroll-hook upkeep`, started detached by a hook whose events went to
//! the container's spool: forwards the spool to the database, each file in
//! one transaction, oldest first; then checkpoints a WAL that grew long.
//!
//! It holds the spool while it works, lingers a moment for more, and, while
//! the database does not answer, tries again every few seconds until it
//! does: events of a frontend outage reach the database soon after it is
//! back. Hooks of a burst may start several; the first holds the spool and
//! the others leave at once.

use crate::config::Config;
use kvmroll_core::spool::{Spool, SpoolError, SpoolLock};
use kvmroll_core::{error_chain, OpenMode, Store, StoreError};
use std::time::{Duration, Instant};

/// How long the upkeep stays after the spool is empty, holding it: the
/// hooks of a burst of events (a host starting its VMs) then start no
/// upkeep of their own.
const LINGER: Duration = Duration::from_secs(1);

/// How often a lingering upkeep looks for new spool files.
const LOOK: Duration = Duration::from_millis(20);

/// The longest wait between two tries of a database that does not answer.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How long an upkeep keeps trying a database that does not answer; the
/// next event, or `kvmroll-guests start`, starts another.
const GIVE_UP: Duration = Duration::from_secs(24 * 3600);

/// Why the upkeep stopped short.
#[derive(Debug, thiserror::Error)]
pub enum UpkeepError {
    #[error("no upkeep")]
    Lock(#[source] SpoolError),
    #[error("upkeep")]
    Forward(#[source] SpoolError),
}

/// How an upkeep ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The spool is empty, or another upkeep holds it.
    Done,
    /// The database did not answer for [`GIVE_UP`], or the spool went away:
    /// files are left for the next upkeep.
    GaveUp,
}

/// Whether the database answers, across the times the spool is held.
struct Tries {
    started: Instant,
    failing: bool,
}

/// The upkeep: forwards the spool until it stays empty, then checkpoints
/// the database where due.
pub fn upkeep(conf: &Config) -> Result<Ended, UpkeepError> {
    let spool = Spool::new(&conf.spool, &conf.host);
    let mut store: Option<Box<dyn Store>> = None;
    let mut open = || {
        kvmroll_core::open_within(
            &conf.database(),
            OpenMode::ReadWrite,
            Duration::from_secs(10),
        )
    };
    let mut tries = Tries {
        started: Instant::now(),
        failing: false,
    };
    loop {
        // None: another upkeep holds it (and looks again after it lets
        // go), or there is no spool.
        let Some(held) = spool.lock().map_err(UpkeepError::Lock)? else {
            return Ok(Ended::Done);
        };
        if drain(&spool, &held, &mut store, &mut open, &mut tries)? == Ended::GaveUp {
            return Ok(Ended::GaveUp);
        }
        drop(held);
        // A file spooled while the spool was held, by a hook that saw it
        // held and started no upkeep, is forwarded now, not at the next
        // event.
        if spool.pending().map_or(true, |p| p.is_empty()) {
            break;
        }
    }
    if let Some(store) = &store {
        if store.upkeep_due() {
            if let Err(e) = store.upkeep(Duration::from_secs(2)) {
                log::warn!("database upkeep failed: {}", error_chain(&e));
            }
        }
    }
    Ok(Ended::Done)
}

/// Forwards the held spool until it has stayed empty for [`LINGER`],
/// waiting longer between tries while the database does not answer.
fn drain(
    spool: &Spool,
    held: &SpoolLock,
    store: &mut Option<Box<dyn Store>>,
    open: &mut dyn FnMut() -> Result<Box<dyn Store>, StoreError>,
    tries: &mut Tries,
) -> Result<Ended, UpkeepError> {
    let mut wait = Duration::from_secs(1);
    let mut idle = Instant::now();
    loop {
        let done = spool
            .forward_to(held, store, open)
            .map_err(UpkeepError::Forward)?;
        if done.files > 0 {
            idle = Instant::now();
        }
        match done.waiting {
            Some(why) => {
                if !tries.failing {
                    log::warn!(
                        "event spool {}: {} files wait for the database: {why}",
                        spool.dir().display(),
                        done.left
                    );
                    tries.failing = true;
                }
                if tries.started.elapsed() > GIVE_UP || !spool.dir().exists() {
                    return Ok(Ended::GaveUp);
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(RETRY_MAX);
            }
            None => {
                if tries.failing {
                    log::info!(
                        "event spool {}: the database answers again",
                        spool.dir().display()
                    );
                    tries.failing = false;
                }
                wait = Duration::from_secs(1);
                if idle.elapsed() >= LINGER {
                    return Ok(Ended::Done);
                }
                std::thread::sleep(LOOK);
            }
        }
    }
}

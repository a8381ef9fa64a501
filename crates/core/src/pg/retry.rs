//! Running a transaction: reads in one REPEATABLE READ transaction, writes
//! under kvmroll's writer lock, and a bounded retry of serialization
//! failures and deadlocks with a growing, spread pause.

use super::*;

impl PgStore {
    /// The failure `f` of `what`, as users are told it.
    pub(super) fn fail(&self, what: &'static str, f: Fail) -> StoreError {
        let e = match f {
            Fail::Pg(e) | Fail::Step { error: e, .. } => e,
            Fail::Refused(e) => return StoreError::Refused(e),
            Fail::Corrupt(what) => {
                return StoreError::Corrupt {
                    path: self.shown.clone().into(),
                    what,
                }
            }
        };
        // The server went away after the connection was made.
        if e.as_db_error().is_none() && (e.is_closed() || io_failed(&e)) {
            return StoreError::Unreachable {
                host: self.host.clone(),
                port: self.port,
                source: one_line(&e),
            };
        }
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            return StoreError::Busy {
                path: self.shown.clone().into(),
                waited: self.wait,
                what,
            };
        }
        backend(&self.shown, what, &e)
    }

    /// Runs `work` in a transaction of its making, again while it fails
    /// with a serialization failure or a deadlock, at most [`TRIES`] times.
    pub(super) fn retrying<T>(
        &self,
        what: &'static str,
        mut work: impl FnMut(&mut Client) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let mut client = self.client.borrow_mut();
        for attempt in 1..=TRIES {
            match work(&mut client) {
                Err(Fail::Pg(e)) if retryable(&e) => {
                    log::debug!("{}: {what}: {} (try {attempt})", self.shown, one_line(&e));
                    std::thread::sleep(backoff(attempt));
                }
                other => return other.map_err(|f| self.fail(what, f)),
            }
        }
        Err(StoreError::Contention {
            location: self.shown.clone(),
            what,
            tries: TRIES,
        })
    }

    /// A read in one consistent snapshot.
    pub(super) fn reading<T>(
        &self,
        what: &'static str,
        mut work: impl FnMut(&mut postgres::Transaction<'_>) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        self.retrying(what, |client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let out = work(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// A write in one transaction, refused on a read-only open.
    pub(super) fn writing<T>(
        &self,
        what: &'static str,
        mut work: impl FnMut(&mut postgres::Transaction<'_>) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        self.retrying(what, |client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start()?;
            let out = work(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

fn retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

fn io_failed(e: &postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// A pause that grows with each try, spread so that two writers that
/// collided do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(6);
    let spread = u64::from(std::process::id() ^ crate::sys::now_ms() as u32) % base;
    Duration::from_millis(base + spread)
}

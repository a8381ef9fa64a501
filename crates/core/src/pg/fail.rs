//! What failed inside the PostgreSQL engine, and how it is said to users:
//! on one line, without the statement.

use super::*;

/// What failed inside the engine, before it is told to users.
#[derive(Debug)]
pub(super) enum Fail {
    Pg(postgres::Error),
    /// A migration step (the one that makes schema `to`) failed.
    Step {
        to: i64,
        error: postgres::Error,
    },
    Corrupt(String),
    Refused(ClusterError),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

/// An engine error as one line, with no SQL text: the server's message and
/// its SQLSTATE, or the client's chain of causes.
#[derive(Debug)]
pub(super) struct Fault(pub(super) String);

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fault {}

pub(super) fn one_line(e: &postgres::Error) -> BackendError {
    let text = match e.as_db_error() {
        Some(db) => {
            let mut t = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                t.push_str("; ");
                t.push_str(detail);
            }
            t
        }
        None => crate::sys::error_chain(e),
    };
    Box::new(Fault(text.replace(['\n', '\r'], "; ")))
}

/// A failure of the engine, told on one line: `Sql` is the engine-neutral
/// variant (its `path` holds the location shown, without password).
pub(super) fn backend(location: &str, what: &'static str, e: &postgres::Error) -> StoreError {
    StoreError::Sql {
        path: location.into(),
        what,
        source: one_line(e),
    }
}

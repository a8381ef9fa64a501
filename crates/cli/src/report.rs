//! The one report at the top of a binary: its run's result becomes its exit
//! status, and an error one line on stderr, `BIN: what failed: its cause`.

use std::error::Error;
use std::process::ExitCode;

/// A binary's documented exit statuses: each binary keeps them as one enum
/// (the statuses its man page lists), usage errors being
/// [`crate::usage::USAGE_EXIT`].
pub trait ExitStatus {
    /// The number the process exits with.
    fn code(&self) -> u8;
}

/// The statuses of a binary that has no others than success, failure
/// (said on stderr) and a usage error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done,
    Failed,
}

impl ExitStatus for Exit {
    fn code(&self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
        }
    }
}

/// `BIN: message: cause: ...`, on one line (a cause can span several, as
/// a command's output can).
pub fn report_line(bin: &str, e: &dyn Error) -> String {
    format!("{bin}: {}", crate::error_chain(e))
}

/// Ends a run: `Ok(status)` exits with its code; an error is reported on
/// stderr as [`report_line`] and exits with `failed`'s code, unless
/// standard output's reader went away ([`crate::output`]): then the run
/// ends quietly, status 0.
pub fn finish<S: ExitStatus, E: Error>(bin: &str, result: Result<S, E>, failed: S) -> ExitCode {
    finish_with(result, failed, |e| eprintln!("{}", report_line(bin, e)))
}

/// [`finish`], with the error said by `say` (a binary that logs to syslog
/// as well as stderr).
pub fn finish_with<S: ExitStatus, E: Error>(
    result: Result<S, E>,
    failed: S,
    say: impl FnOnce(&dyn Error),
) -> ExitCode {
    match result {
        // The reader of our output went away: it wanted no more.
        Err(_) if crate::output::pipe_closed() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(status.code()),
        Err(e) => {
            say(&e);
            ExitCode::from(failed.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{finish_with, report_line, Exit};
    use std::process::ExitCode;

    #[test]
    fn the_status_is_the_result_s_or_the_failure_s() {
        let mut said = Vec::new();
        let ok: Result<Exit, std::io::Error> = Ok(Exit::Done);
        assert_eq!(
            finish_with(ok, Exit::Failed, |e| said.push(e.to_string())),
            ExitCode::from(0)
        );
        assert!(said.is_empty());
        let failed: Result<Exit, _> = Err(std::io::Error::other("no"));
        assert_eq!(
            finish_with(failed, Exit::Failed, |e| said.push(e.to_string())),
            ExitCode::from(1)
        );
        assert_eq!(said, ["no"]);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the database {0}")]
    struct Open(&'static str, #[source] std::io::Error);

    #[test]
    fn the_chain_is_one_line_after_the_binary_name() {
        let e = Open("/x.db", std::io::Error::other("denied\nby policy"));
        let line = report_line("kvmroll", &e);
        assert!(
            line.starts_with("kvmroll: cannot open the database /x.db: denied"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }
}

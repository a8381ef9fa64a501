//! What the CLI's test files share: running the real binary on a database
//! of the test's own, and the shape every refusal has.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `kvmroll --db DB ARGS` outside any fixture.
pub fn kvmroll_at(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmroll"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("KVMROLL_DB")
        .env_remove("KVMROLL_DB_READONLY")
        .env_remove("KVMROLL_STAGE")
        .output()
        .unwrap()
}

/// Asserts `out` is a refusal: status 1, one line holding `expect`, nothing on stdout.
pub fn assert_refused(out: &Output, expect: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.contains(expect), "{err:?} lacks {expect:?}");
    assert!(out.stdout.is_empty());
}

//! The store tests: a conformance suite run on both engines, and
//! PostgreSQL's own. The PostgreSQL tests need a private server: set
//! `KVMROLL_TEST_PG` to its superuser URL (`scripts/pg-test-server.sh start
//! DIR` starts one and prints it); each test makes and drops a database of
//! its own. Without it they skip with a message, except under
//! `KVMROLL_E2E=1`, where they fail.

mod common;
mod conformance;
mod postgresql;

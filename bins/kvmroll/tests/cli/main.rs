//! Runs the real `kvmroll` binary against a fresh database per test, as a
//! user would: every bad input exits non-zero with one line on stderr and
//! leaves the database as it was (byte for byte on SQLite, row for row on
//! PostgreSQL).
//!
//! Each test of a cluster runs on both engines ([`on_both_engines!`]): on
//! SQLite in a file of its own, and on PostgreSQL in a database of its own
//! on the private server that `KVMROLL_TEST_PG` names (its superuser URL;
//! `scripts/pg-test-server.sh start DIR` starts one and prints it). Without
//! it the PostgreSQL runs skip with a message, except under `KVMROLL_E2E=1`,
//! where they fail. The tests about SQLite files themselves run on SQLite
//! only.
//!
//! One module per topic; `fixture` is what they share.

/// Each test becomes one per engine: `on_sqlite::NAME` and
/// `on_postgresql::NAME`.
macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $test() { super::$test(super::Engine::Sqlite) })*
        }
        mod on_postgresql {
            $(#[test] fn $test() {
                if super::pg_server().is_some() {
                    super::$test(super::Engine::Postgres)
                }
            })*
        }
    };
}

mod attrs;
mod common;
mod database;
mod events;
mod fixture;
mod fragments;
mod import;
mod libvirt;
mod output;
mod postgres;
mod refusals;
mod states;

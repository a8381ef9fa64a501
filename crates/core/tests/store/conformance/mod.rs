//! What every engine must do, written once over `&dyn Engine` and
//! `dyn Store`, and run on SQLite and on PostgreSQL: the binaries see the
//! store only through the trait, so both engines must behave alike there.

/// Each check becomes one test per engine. The PostgreSQL ones skip when no
/// test server is given (and fail under KVMROLL_E2E=1).
macro_rules! on_both_engines {
    ($($check:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $check() { super::$check(&crate::common::sqlite()) })*
        }
        mod on_postgresql {
            $(#[test] fn $check() {
                if let Some(e) = crate::common::postgres(stringify!($check)) {
                    super::$check(&e)
                }
            })*
        }
    };
}

mod cluster;
mod database;
mod disks;
mod events;

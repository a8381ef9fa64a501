//! A whole cluster database as rows, for `kvmroll db copy`: every row of
//! every kvmroll table, read in one transaction by either engine
//! ([`Store::rows`]) and written into an empty database of either engine in
//! one transaction ([`Store::fill`]), ids included, so that a copy keeps
//! each host's, VM's and event's identity and can be checked row for row.
//!
//! The columns of each table are read from the database itself (SQLite's
//! `PRAGMA table_info`, PostgreSQL's `information_schema`), not listed here,
//! so a column a later migration adds is copied with the others; the tables
//! are listed, in the order their foreign keys need, and a test holds the
//! list to the schema. Values are engine-neutral [`Cell`]s: SQLite's
//! integers and PostgreSQL's `BIGINT`, `INTEGER` and `BOOLEAN` (as 0 and 1)
//! are all [`Cell::Int`].

pub use crate::store::{Cell, Rows, Table, TABLES};

use crate::store::{Store, StoreError};

/// What a copy copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Physical hosts (not the VMs' own host rows).
    pub hosts: usize,
    pub vms: usize,
    pub attributes: usize,
    pub events: usize,
    /// Every row of every table.
    pub rows: usize,
}

/// Copies every row of `from` into `to`, which must hold no cluster yet, in
/// one transaction on `to`; then reads `to` back and checks it row for row
/// against what was read from `from`. `to_location` names the target in
/// messages.
pub fn copy(from: &dyn Store, to: &mut dyn Store, to_location: &str) -> Result<Copied, StoreError> {
    let rows = from.rows()?;
    to.fill(&rows)?;
    let back = to.rows()?;
    if let Some(what) = rows.difference(&back) {
        return Err(StoreError::CopyDiffers {
            location: to_location.to_string(),
            what,
        });
    }
    let vms = rows.count("vms");
    Ok(Copied {
        hosts: rows.count("hosts").saturating_sub(vms),
        vms,
        attributes: rows.count("attributes"),
        events: rows.count("events"),
        rows: rows.tables.iter().map(|t| t.rows.len()).sum(),
    })
}

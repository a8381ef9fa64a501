//! Emptying a VM container before it goes down: its running VMs
//! live-migrated to other containers with room, a few at once, each with
//! the migration library's own checks, database protocol and time limit,
//! and a report of where each went and which could not move.
//!
//! `kvmroll host evacuate` and `kvmroll-guests stop` (where the container's
//! `kvm_guests_on_shutdown` is `migrate`) both call [`evacuate`]. What it
//! asks of the cluster's libvirts and how one VM moves are behind
//! [`Probe`] and [`Mover`], so that the decisions (which containers answer, where each
//! VM goes, how many move at once, what is said) are tested on a fake.
//!
//! - [`placement`]: where each VM goes (pure);
//! - `run.rs`: the moves, `parallel` at once, within a deadline;
//! - `survey.rs`: the source's running VMs and the destinations' free
//!   memory, each container asked at once within a time limit;
//! - `live.rs`: the real [`Probe`] (libvirt) and [`Mover`] (the migration
//!   library's `Migrator`).

mod live;
pub mod placement;
mod run;
mod survey;

pub use live::LibvirtProbe;
pub use placement::{place, Move, Placement, Stuck};
pub use run::{run, Options, Outcome};
pub use survey::{survey, Survey, SurveyError};

use kvmroll_core::Cluster;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Why one step of a [`Mover`] failed: the migration library's error, or
/// libvirt's, as they come.
pub type MoveError = Box<dyn std::error::Error + Send + Sync>;

/// What an evacuation asks of the cluster's libvirts before it moves
/// anything. `Send + Sync + 'static` because each container is asked on a
/// thread of its own, which a container that hangs leaves behind.
pub trait Probe: Send + Sync + 'static {
    /// The names of the domains running (or paused) on `container`.
    fn running(&self, container: &str) -> Result<Vec<String>, MoveError>;
    /// The free memory of `container`'s host, in bytes.
    fn free_memory(&self, container: &str) -> Result<u64, MoveError>;
}

/// How one VM moves: the migration library's run (its checks, plugins,
/// database protocol and time limit), shared by the threads that migrate.
pub trait Mover: Sync {
    /// Live-migrates `vm` to `to`, aborting past `limit` (the VM then keeps
    /// running where it was).
    fn migrate(&self, vm: &str, to: &str, limit: Duration) -> Result<(), MoveError>;
}

/// How many migrations run at once by default. Measured with
/// `benches/evacuate.rs` (four 1 GiB guests full of data between two rig
/// containers on one 2-core machine, tunnelled, after a warm-up
/// evacuation, each width twice): 1 at once took 14.2 and 16.7 s, 2 took
/// 11.3 and 11.5 s, 4 took 10.6 and 12.3 s; four plain `virsh migrate`
/// one after another 14.4 s. (Runs without the warm-up had put the cold
/// first evacuation on one width and favoured 4.) The data path (QEMU and
/// both libvirtds) is CPU-bound here, so width only overlaps each
/// migration's fixed costs (checks, the destination's QEMU, the
/// switch-over): two takes that gain, four adds nothing, and wider splits
/// the bandwidth, so each guest's copy is slower and one that dirties
/// memory faster than its share does not converge (its
/// `kvm_migrate_timeout` then aborts it and it is reported, still running
/// where it was).
pub const DEFAULT_PARALLEL: usize = 2;

/// A VM's own migration limit: `opts.limit` when given (`--timeout`), else
/// its resolved `kvm_migrate_timeout` ([`kvmroll_migrate::timeout_of`]).
fn limit_of(cluster: &Cluster, opts: &Options, vm: &str) -> Duration {
    opts.limit
        .unwrap_or_else(|| kvmroll_migrate::timeout_of(cluster, vm))
}

/// The evacuation of one container: what [`evacuate`] found and did.
#[derive(Debug, Default)]
pub struct Report {
    /// Each VM found running there, in the order their outcome was known.
    pub outcomes: Vec<Outcome>,
    /// Containers that did not answer, with why (they were not used).
    pub silent: Vec<(String, String)>,
}

impl Report {
    /// Whether every VM found running moved.
    pub fn all_moved(&self) -> bool {
        self.outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Moved { .. }))
    }

    /// The VMs that did not move.
    pub fn not_moved(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes
            .iter()
            .filter(|o| !matches!(o, Outcome::Moved { .. }))
    }
}

/// Evacuates `source`: asks its libvirt which of the VMs the database
/// places there run, asks every other VM container its free memory (each
/// within `opts.ask`, through `probe`), places them ([`place`]) and moves
/// them with `mover` ([`run`]), each within its own limit ([`limit_of`]);
/// `said` hears each outcome as it is known (those that fit nowhere
/// first). A source that does not answer is an error, and nothing moved.
pub fn evacuate(
    cluster: &Cluster,
    source: &str,
    probe: &Arc<dyn Probe>,
    mover: &dyn Mover,
    opts: &Options,
    stop: &AtomicBool,
    said: &(dyn Fn(&Outcome) + Sync),
) -> Result<Report, SurveyError> {
    let found = survey(cluster, source, probe, opts.ask)?;
    let placement = place(cluster, source, &found.running, &found.free_memory);
    for (c, why) in &found.silent {
        log::warn!("container {c} does not answer ({why}): no VM goes there");
    }
    let mut outcomes: Vec<Outcome> = placement
        .stuck
        .iter()
        .map(|s| Outcome::NotMoved {
            vm: s.vm.clone(),
            why: s.why.clone(),
        })
        .collect();
    for o in &outcomes {
        said(o);
    }
    let limit = |vm: &str| limit_of(cluster, opts, vm);
    outcomes.extend(run(&placement.moves, mover, &limit, opts, stop, said));
    Ok(Report {
        outcomes,
        silent: found.silent,
    })
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

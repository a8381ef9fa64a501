//! kvmroll's plugins: finding them, refusing the unsafe ones, and running
//! each with its input, a time limit and no process left behind.
//!
//! The hook runs as root, so a plugin that anyone but root could have written
//! or swapped is never run. Every folder on the real path to the file that
//! runs, from `/` down, symbolic links' targets and their folders included,
//! must be owned by root and not writable by group or others, and so must the
//! file. The path is resolved here one component at a time with `openat`
//! (`O_NOFOLLOW`), checking each open folder with `fstat`, so what is checked
//! is what was opened; a link is read with `readlinkat` from a folder that
//! was checked already (nobody else can change it there) and its target
//! resolved the same way. The file is opened once, at discovery, checked
//! through that descriptor, and executed through it (`Plugin::run`): a file
//! renamed over the plugin afterwards is not what runs.
//!
//! One exception, for fixtures and sites under `/tmp`: a folder that others
//! may write but that has the sticky bit and is root's may be passed through
//! (not listed) when the entry taken from it is root's too, since the sticky
//! bit lets nobody else rename or remove that entry. A stage folder, whose
//! listing decides what runs, is never writable by anyone but root.
//!
//! Plugins run in byte order of their names, global ones first, as
//! `run-parts` orders them; names that are hidden or look like
//! package-manager or editor leftovers are skipped, as `run-parts` skips them.
//!
//! The shell dispatchers people wrote for libvirt hooks (e.g. the VFIO-Tools
//! `qemu` script) fed stdin to the first script only, ran scripts in `find`'s
//! unspecified order, `eval`ed file names and had no time limit: each of
//! those is a fault this crate is written not to have.
//!
//! Cost, on the hook's path at every VM event: ROOT is resolved once from
//! `/`, then both stage folders and every plugin from there, an `openat`
//! and an `fstat` each (tens of microseconds for a stage). Running a plugin
//! costs what its spawn and exec cost (glibc's posix_spawn, which resets
//! every signal in the child), three pipes, a pidfd and one poll until it
//! exits. Measured for issue 9 (perf, 3 no-op plugins at `start begin`):
//! the discovery is under 2% of the hook's CPU time, and the runner adds
//! under a tenth of a millisecond a plugin to a bare posix_spawn.
//!
//! The crate is split by what it does: `walk` resolves paths one checked
//! folder at a time, `discover` finds a stage's plugins with it, `run`
//! spawns and supervises a process, and `result` says how a run ended. It
//! links no database and no libvirt: the hook, `kvmroll-enable` and the
//! disk code of `kvmroll-core` use it.

mod discover;
mod result;
mod run;
mod spawn;
mod walk;

pub use discover::{discover, Found, Plugin, VmName};
pub use result::RunResult;
pub use run::{run, RunSpec};

#[cfg(test)]
mod fixtures;

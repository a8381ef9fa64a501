//! What every kvmroll binary does the same way at its command line, as
//! youki's liboci-cli gathers its binaries' shared clap parts:
//!
//! - [`args`]: the options several binaries repeat (`--db`);
//! - [`usage`]: the parse, where a usage error is one line and exit 2;
//! - [`table`]: rows printed as aligned columns;
//! - [`log`]: the log backend, to the journal or syslog and stderr, once;
//! - [`output`]: standard output, where a closed pipe ends quietly;
//! - [`report`]: the one place a binary turns its result into its exit
//!   status, an error into `BIN: message: cause: ...` on one line.
//!
//! It must never depend on libvirt: kvmroll-hook uses it, and the hook is
//! linked statically and must not call back into libvirtd.

pub mod args;
pub mod log;
pub mod output;
pub mod report;
pub mod table;
pub mod usage;

pub use kvmroll_core::error_chain;
pub use report::{finish, ExitStatus};
pub use table::{print_listing, print_rows, Format};
pub use usage::parse;

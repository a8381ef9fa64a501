//! The options several binaries repeat, as clap types to flatten in.

use clap::Args;
use std::path::PathBuf;

/// `--db PATH`: the cluster database, for every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Db {
    /// The cluster database [default: $KVMROLL_DB, else /var/lib/kvmroll/kvmroll.db].
    #[arg(id = "db", long = "db", global = true, value_name = "PATH")]
    pub path: Option<PathBuf>,
}

impl Db {
    /// Where the database is: this option, else `KVMROLL_DB`, else the
    /// configuration file's `db` line, else the default path.
    pub fn location(&self) -> Result<PathBuf, kvmroll_core::conf::ConfigError> {
        kvmroll_core::db_location(self.path.clone())
    }
}

/// `--no-header`: every command that prints a table takes it, for scripts
/// that read the rows with `cut` or `awk`.
#[derive(Debug, Clone, Copy, Args)]
pub struct NoHeader {
    /// Print the table's rows without its header line.
    #[arg(long)]
    pub no_header: bool,
}

/// `--verbose`: the debug log lines too (as `KVMROLL_LOG=debug` does).
#[derive(Debug, Clone, Copy, Args)]
pub struct Verbose {
    /// Show the debug log lines too (or set KVMROLL_LOG=debug).
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
}

//! The commands of `kvmroll`: each turns its arguments into core changes,
//! writes them in one transaction and brings libvirt in step. One module
//! per operation, as youki's commands/: `run` here dispatches.

mod attr;
mod cdrom;
mod db;
mod define;
mod disk;
mod evacuate;
mod events;
mod host;
mod import;
mod migrate;
mod power;
mod remove;
mod vm;

use crate::cli::{ApplianceCmd, AttrCmd, Cli, Command, DbCmd, EventsCmd, HostCmd, VmCmd};
use crate::sync::{SyncMode, Syncer};
use kvmroll_core::{open_store, OpenMode, Store, StoreError};
use kvmroll_virt::{Connector, Libvirt};
use serde::Serialize;
use std::io::Write;
use std::sync::Arc;

/// Why a command failed (its refusals included); the database is as it was.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A refusal with its own message.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cluster(#[from] kvmroll_core::ClusterError),
    #[error(transparent)]
    Validation(#[from] kvmroll_core::ValidationError),
    #[error(transparent)]
    Config(#[from] kvmroll_core::conf::ConfigError),
    #[error(transparent)]
    Location(#[from] kvmroll_core::location::LocationError),
    #[error(transparent)]
    Render(#[from] kvmroll_core::RenderError),
    #[error(transparent)]
    Import(#[from] import::ImportFailed),
    /// Standard output or a local file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Virt(#[from] kvmroll_virt::VirtError),
    #[error(transparent)]
    Migrate(Box<kvmroll_migrate::MigrateError>),
    #[error("cannot run {program}")]
    Run {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

type Error = CommandError;

impl From<kvmroll_migrate::MigrateError> for CommandError {
    fn from(e: kvmroll_migrate::MigrateError) -> CommandError {
        CommandError::Migrate(Box::new(e))
    }
}

fn refused(msg: impl Into<String>) -> Error {
    CommandError::Refused(msg.into())
}

/// How a `kvmroll` run exits: the statuses of its man page but usage (2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done,
    /// `attr get` of an unset attribute.
    Unset,
    /// The command failed or was refused.
    Failed,
    /// The database changed but some libvirt definition is stale.
    Stale,
}

impl kvmroll_cli::ExitStatus for Exit {
    fn code(&self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Unset | Exit::Failed => 1,
            Exit::Stale => 3,
        }
    }
}

struct App<'a> {
    store: Box<dyn Store>,
    sync: Syncer<'a>,
    /// The connector `sync` uses, owned too: `vm list` hands it to threads
    /// it may leave behind (states.rs).
    connector: Arc<dyn Connector + Send>,
}

impl App<'_> {
    /// Where `container`'s libvirt is reached from here.
    fn uri(&self, c: &kvmroll_core::Cluster, container: &str) -> String {
        c.libvirt_uri(container, &self.sync.local_host)
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// How a command opens the database. Only the commands that can start a
/// cluster make one where nothing is (and only once a new database accepts
/// what they write); other writes need one to exist; reads never write,
/// never make anything, and never upgrade.
fn open_mode(command: &Command) -> OpenMode {
    match command {
        Command::Host(HostCmd::Add { .. })
        | Command::Appliance(ApplianceCmd::Add { .. })
        | Command::Attr(AttrCmd::Set { .. })
        | Command::Db(DbCmd::Init { .. } | DbCmd::Copy { .. })
        | Command::Import(_) => OpenMode::Create,
        Command::Host(HostCmd::Set { .. } | HostCmd::Remove { .. } | HostCmd::Evacuate { .. })
        | Command::Vm(
            VmCmd::Add(_)
            | VmCmd::Set(_)
            | VmCmd::Remove { .. }
            | VmCmd::Cdrom { .. }
            | VmCmd::Disk(_)
            | VmCmd::Nic(_)
            | VmCmd::Sync { .. }
            | VmCmd::Migrate { .. }
            | VmCmd::Define { .. },
        )
        | Command::Attr(AttrCmd::Rm { .. })
        | Command::Events {
            prune: Some(EventsCmd::Prune { .. }),
            ..
        } => OpenMode::ReadWrite,
        Command::Host(HostCmd::List { .. } | HostCmd::Show { .. })
        | Command::Appliance(ApplianceCmd::List { .. })
        | Command::Vm(
            VmCmd::List { .. }
            | VmCmd::Show { .. }
            | VmCmd::Start(_)
            | VmCmd::Shutdown(_)
            | VmCmd::Destroy { .. }
            | VmCmd::Console { .. },
        )
        | Command::Attr(AttrCmd::Get { .. } | AttrCmd::List { .. } | AttrCmd::Known { .. })
        | Command::Events { prune: None, .. }
        | Command::Db(DbCmd::Status { .. }) => OpenMode::ReadOnly,
    }
}

pub fn run(cli: Cli) -> Result<Exit, Error> {
    let mode = if env_flag("KVMROLL_DB_READONLY") {
        OpenMode::ReadOnly
    } else {
        open_mode(&cli.command)
    };
    let mut out = kvmroll_cli::output::stdout();
    // Names its two databases itself.
    if let Command::Db(DbCmd::Copy { from, to }) = cli.command {
        if mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly.into());
        }
        return db::copy_db(&from, &to, &mut out);
    }
    if let Command::Attr(AttrCmd::Known { name, json, header }) = &cli.command {
        return attr::known(name.as_deref(), json.json, *header, &mut out);
    }
    let path = cli.db.location()?;
    if let Command::Db(cmd) = cli.command {
        return db::db(cmd, &path, mode, &mut out);
    }
    if let Command::Import(cmd) = cli.command {
        return import::run(cmd, &path, mode, &mut out);
    }
    let store = open_store(&path, mode)?;
    let sync_mode = if cli.no_sync {
        SyncMode::Off
    } else if std::env::var_os("KVMROLL_STAGE").is_some() {
        SyncMode::Deferred
    } else {
        SyncMode::Live
    };
    let connector: Arc<dyn Connector + Send> = Arc::new(Libvirt);
    let mut app = App {
        store,
        sync: Syncer::new(
            connector.as_ref(),
            sync_mode,
            kvmroll_core::sys::local_hostname(),
        ),
        connector: Arc::clone(&connector),
    };
    match cli.command {
        // Answered above, before the store was opened.
        Command::Db(_) | Command::Import(_) => Ok(Exit::Done),
        Command::Host(c) => app.host(c, &mut out),
        Command::Appliance(c) => app.appliance(c, &mut out),
        Command::Vm(c) => app.vm(c, &mut out),
        Command::Attr(c) => app.attr(c, &mut out),
        Command::Events {
            prune: Some(EventsCmd::Prune { older_than, keep }),
            ..
        } => app.prune_events(older_than, keep, &mut out),
        Command::Events {
            prune: None,
            vm,
            container,
            limit,
            json,
            header,
        } => {
            events::forward_spool(&path);
            let format = kvmroll_cli::Format::of(json.json, header.no_header);
            app.events(vm, container, limit, format, &mut out)
        }
    }
}

fn print_json(out: &mut dyn Write, value: &impl Serialize) -> Result<(), Error> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests;

//! The commands of `kvmroll`: each turns its arguments into core changes,
//! writes them in one transaction and brings libvirt in step.

use crate::cli::{
    ApplianceCmd, AttrCmd, Cli, Command, DbCmd, DiskCmd, EventsCmd, HostCmd, NicCmd, ScopeArgs,
    VmCmd,
};
use crate::import;
use crate::sync::{chain, mark_stale, Missed, SyncMode, Syncer};
use kvmroll_core::disks::{self, Roots, ROOTS_ATTR};
use kvmroll_core::location::Location;
use kvmroll_core::model::{check_abs_path, check_name, BootAction, DiskKind};
use kvmroll_core::pg::{PgEnv, PgStore};
use kvmroll_core::{
    init_store, open_store, Change, Cluster, ClusterError, Disk, Host, Init, Mac, MadeImage, Nic,
    NicSpec, OpenMode, Plan, Scope, Store, StoreError, ValidationError, Vm,
};
use kvmroll_virt::{DomainState, Libvirt};
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How a command ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// `attr get` of an unset attribute.
    Unset,
    /// The database changed but some libvirt definition is stale.
    Stale,
}

/// A refusal with its own message.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(msg: impl Into<String>) -> Error {
    Box::new(Refused(msg.into()))
}

/// How long events are kept when kvm_events_keep_days is not set.
const DEFAULT_EVENTS_KEEP_DAYS: u32 = 90;

struct App<'a> {
    store: Box<dyn Store>,
    sync: Syncer<'a>,
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
        Command::Host(HostCmd::Set { .. } | HostCmd::Remove { .. })
        | Command::Vm(
            VmCmd::Add { .. }
            | VmCmd::Set { .. }
            | VmCmd::Remove { .. }
            | VmCmd::Cdrom { .. }
            | VmCmd::Disk(_)
            | VmCmd::Nic(_)
            | VmCmd::Sync { .. }
            | VmCmd::Define { .. },
        )
        | Command::Attr(AttrCmd::Rm { .. })
        | Command::Events {
            prune: Some(EventsCmd::Prune { .. }),
            ..
        } => OpenMode::ReadWrite,
        Command::Host(HostCmd::List { .. } | HostCmd::Show { .. })
        | Command::Appliance(ApplianceCmd::List { .. })
        | Command::Vm(VmCmd::List { .. } | VmCmd::Show { .. })
        | Command::Attr(AttrCmd::Get { .. } | AttrCmd::List { .. })
        | Command::Events { prune: None, .. }
        | Command::Db(DbCmd::Status { .. }) => OpenMode::ReadOnly,
    }
}

pub fn run(cli: Cli) -> Result<Outcome, Error> {
    let mode = if env_flag("KVMROLL_DB_READONLY") {
        OpenMode::ReadOnly
    } else {
        open_mode(&cli.command)
    };
    let mut out = std::io::stdout().lock();
    // Names its two databases itself.
    if let Command::Db(DbCmd::Copy { from, to }) = cli.command {
        if mode == OpenMode::ReadOnly {
            return Err(StoreError::ReadOnly.into());
        }
        return copy_db(&from, &to, &mut out);
    }
    let path = kvmroll_core::db_location(cli.db)?;
    if let Command::Db(cmd) = cli.command {
        return db(cmd, &path, mode, &mut out);
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
    let connector = Libvirt;
    let mut app = App {
        store,
        sync: Syncer::new(&connector, sync_mode),
    };
    match cli.command {
        // Answered above, before the store was opened.
        Command::Db(_) | Command::Import(_) => Ok(Outcome::Done),
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
        } => {
            forward_spool(&path);
            app.events(vm, container, limit, json.json, &mut out)
        }
    }
}

/// Why libvirt's definition (`current`) does not carry the metadata of
/// kvmroll's rendering (`rendered`): none (defined before kvmroll wrote
/// it), an older generation, or other settings. The hook and
/// kvmroll-guests decide from it when the database does not answer.
fn metadata_differs(rendered: &str, current: &str) -> Option<String> {
    use kvmroll_core::metadata::Metadata;
    let read = |xml: &str| {
        kvmroll_core::xml::parse_document(xml)
            .ok()
            .and_then(|d| Metadata::find(&d).ok().flatten())
    };
    let (want, have) = (read(rendered)?, read(current));
    match have {
        None => Some("it had no kvmroll metadata".into()),
        Some(h) if h.generation != want.generation => Some(format!(
            "its kvmroll metadata was generation {}, now {}",
            h.generation, want.generation
        )),
        Some(h) if h != want => Some("its kvmroll metadata differs".into()),
        Some(_) => None,
    }
}

/// How long `kvmroll events` waits for the hook's own forwarder to hand
/// the container's spooled events over.
const SPOOL_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// On a container, hands the events its hook spooled to the database
/// before `kvmroll events` reads them, as the hook's detached upkeep does a
/// moment after each event: what is shown is then up to date. Only the
/// spool of this host's kvmroll.conf goes, and only to the database that
/// configuration names (`--db` elsewhere reads it as it is). A spool this
/// user cannot read, or a database that refuses, is left to the upkeep:
/// the events are shown all the same.
fn forward_spool(db: &Path) {
    let Ok(conf) = kvmroll_core::conf::Config::load() else {
        return;
    };
    if conf.database() != db {
        return;
    }
    let spool = kvmroll_core::spool::Spool::new(&conf.spool, &conf.host);
    let done = spool.forward_now(SPOOL_WAIT, &mut || open_store(db, OpenMode::ReadWrite));
    if let Ok(kvmroll_core::spool::Forwarded {
        waiting: Some(why),
        left,
        ..
    }) = done
    {
        eprintln!(
            "kvmroll: {left} spooled event file(s) on this host wait for the database: {why}"
        );
    }
}

/// `kvmroll db init`, `db copy` and `db status`.
fn db(cmd: DbCmd, path: &Path, mode: OpenMode, out: &mut dyn Write) -> Result<Outcome, Error> {
    match cmd {
        DbCmd::Init {
            container_role,
            container_password_file,
        } => {
            if mode == OpenMode::ReadOnly {
                return Err(StoreError::ReadOnly.into());
            }
            // Everything is checked before the database is touched.
            let location = location_of(path)?;
            let role = match container_role {
                Some(name) => {
                    let Location::Postgres(pg) = &location else {
                        return Err(refused(format!(
                            "--container-role: {location} is a SQLite file; a role for \
                             containers is made in a PostgreSQL database"
                        )));
                    };
                    check_role_name(&name)?;
                    let password = container_password_file
                        .as_deref()
                        .map(read_password_file)
                        .transpose()?;
                    Some((pg.clone(), name, password))
                }
                None => None,
            };
            let (store, init, role) = match role {
                Some((pg, name, password)) => {
                    let (mut store, init) = PgStore::init(&pg, &PgEnv::from_process())?;
                    store.grant_container_role(&name, password.as_deref())?;
                    let store: Box<dyn Store> = Box::new(store);
                    (store, init, Some((name, password.is_some())))
                }
                None => {
                    let (store, init) = init_store(path)?;
                    (store, init, None)
                }
            };
            let status = store.status()?;
            let (shown, version) = (status.location, status.schema_version);
            match init {
                Init::Created => writeln!(out, "created {shown}: schema {version}")?,
                Init::Upgraded { from } => {
                    writeln!(out, "upgraded {shown}: schema {from} to {version}")?
                }
                Init::Current => writeln!(
                    out,
                    "{shown} is a kvmroll database already, at schema {version}: nothing to do"
                )?,
            }
            if let Some((name, with_password)) = role {
                let password = if with_password {
                    "its password set"
                } else {
                    "no password set"
                };
                writeln!(
                    out,
                    "role {name} for VM containers: granted what containers need, {password}"
                )?;
            }
        }
        // Answered in `run`, before any database location was read.
        DbCmd::Copy { .. } => {}
        DbCmd::Status { json } => {
            let status = open_store(path, mode)?.status()?;
            if json.json {
                print_json(out, &status)?;
            } else {
                let rows = [
                    ("engine", status.engine.to_string()),
                    ("location", status.location),
                    ("schema", status.schema_version.to_string()),
                    ("hosts", status.hosts.to_string()),
                    ("vms", status.vms.to_string()),
                    ("events", status.events.to_string()),
                ];
                for (name, value) in rows {
                    writeln!(out, "{name:<10}{value}")?;
                }
            }
        }
    }
    Ok(Outcome::Done)
}

/// `kvmroll db copy FROM TO`.
fn copy_db(from: &str, to: &str, out: &mut dyn Write) -> Result<Outcome, Error> {
    let (from_at, to_at) = (location_of(Path::new(from))?, location_of(Path::new(to))?);
    if same_database(&from_at, &to_at) {
        return Err(refused(format!(
            "{from_at} and {to_at} are the same database"
        )));
    }
    let source = kvmroll_core::location::open(&from_at, OpenMode::ReadOnly)?;
    // A SQLite file made here goes again if the copy fails.
    let made_file = match &to_at {
        Location::Sqlite(p) if !p.exists() => Some(p.clone()),
        _ => None,
    };
    let copied = kvmroll_core::location::init(&to_at).and_then(|(mut target, _)| {
        kvmroll_core::copy::copy(source.as_ref(), target.as_mut(), &to_at.to_string())
    });
    let copied = match copied {
        Ok(c) => c,
        Err(e) => {
            if let Some(file) = made_file {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
                }
            }
            return Err(e.into());
        }
    };
    let n = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    writeln!(
        out,
        "copied {from_at} to {to_at}: {}, {}, {}, {} ({}), checked row for row",
        n(copied.hosts, "host"),
        n(copied.vms, "VM"),
        n(copied.attributes, "attribute"),
        n(copied.events, "event"),
        n(copied.rows, "row")
    )?;
    Ok(Outcome::Done)
}

/// The location a `--db` value or a `db copy` argument names; a relative
/// path is taken against the current folder.
fn location_of(path: &Path) -> Result<Location, Error> {
    let text = path
        .to_str()
        .ok_or_else(|| refused(format!("database location {} is not UTF-8", path.display())))?;
    let cwd = std::env::current_dir()?;
    Ok(Location::parse(text, &cwd)?)
}

/// Whether two locations name one database (a SQLite file through another
/// path included).
fn same_database(a: &Location, b: &Location) -> bool {
    match (a, b) {
        (Location::Sqlite(x), Location::Sqlite(y)) => {
            x == y || matches!((x.canonicalize(), y.canonicalize()), (Ok(x), Ok(y)) if x == y)
        }
        _ => a.to_string() == b.to_string(),
    }
}

/// A PostgreSQL role name kvmroll makes: letters, digits and `_`, not
/// starting with a digit nor `pg_` (PostgreSQL's own), at most 63 bytes.
fn check_role_name(name: &str) -> Result<(), Error> {
    let fine = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.starts_with("pg_")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if fine {
        Ok(())
    } else {
        Err(refused(format!(
            "--container-role {name:?}: a role name is letters, digits and _, at most 63,              not starting with a digit or pg_"
        )))
    }
}

/// The first line of a password file that only its owner can read.
fn read_password_file(path: &Path) -> Result<String, Error> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| refused(format!("cannot read password file {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(refused(format!("password file {shown} is not a file")));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refused(format!(
            "password file {shown} is not used: group or others have access to it \
             (mode {mode:o}; chmod 0600 {shown})"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| refused(format!("cannot read password file {shown}: {e}")))?;
    let password = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    if password.is_empty() {
        return Err(refused(format!(
            "password file {shown} holds no password on its first line"
        )));
    }
    Ok(password.to_string())
}

fn print_json(out: &mut dyn Write, value: &impl Serialize) -> Result<(), Error> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Prints rows as aligned columns under a header.
fn print_table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> Result<(), Error> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn scope_of(scope: &ScopeArgs, host: Option<&str>) -> Scope {
    if scope.global {
        Scope::Global
    } else if let Some(os) = &scope.os {
        Scope::Os(os.clone())
    } else if let Some(a) = &scope.appliance {
        Scope::Appliance(a.clone())
    } else if let Some(r) = scope.rack {
        Scope::Rack(r)
    } else {
        Scope::Host(host.unwrap_or_default().to_string())
    }
}

fn has_scope_flag(scope: &ScopeArgs) -> bool {
    scope.global || scope.os.is_some() || scope.appliance.is_some() || scope.rack.is_some()
}

/// Reads an attribute value from a file or standard input; one trailing
/// newline (an editor's) is dropped.
fn read_value(source: &std::path::Path) -> Result<String, Error> {
    let mut value = String::new();
    if source.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut value)
            .map_err(|e| refused(format!("cannot read the value from standard input: {e}")))?;
    } else {
        value = std::fs::read_to_string(source)
            .map_err(|e| refused(format!("cannot read value file {}: {e}", source.display())))?;
    }
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// A MAC in 52:54:00 not used anywhere in the cluster (nor in `taken`).
fn fresh_mac(cluster: &Cluster, taken: &BTreeSet<Mac>) -> Mac {
    loop {
        let b = *uuid::Uuid::new_v4().as_bytes();
        let mac = Mac::qemu([b[0], b[1], b[2]]);
        if !cluster.mac_in_use(&mac) && !taken.contains(&mac) {
            return mac;
        }
    }
}

fn nics_from_specs(cluster: &Cluster, specs: &[NicSpec], mut taken: BTreeSet<Mac>) -> Vec<Nic> {
    specs
        .iter()
        .map(|s| {
            let mac = s.mac.clone().unwrap_or_else(|| fresh_mac(cluster, &taken));
            taken.insert(mac.clone());
            Nic {
                kind: s.kind,
                source: s.source.clone(),
                mac,
                vlan: s.vlan,
                model: s.model.clone(),
            }
        })
        .collect()
}

#[derive(Serialize)]
struct VmView<'a> {
    #[serde(flatten)]
    vm: &'a Vm,
    attributes: Vec<kvmroll_core::cluster::Resolved>,
}

impl App<'_> {
    /// Writes changes, then brings libvirt in step.
    fn write(
        &mut self,
        changes: &mut dyn FnMut(&Cluster) -> Result<Vec<Change>, ClusterError>,
    ) -> Result<(Plan, Outcome), Error> {
        let plan = self.store.update(changes)?;
        let outcome = self.after_write(&plan)?;
        Ok((plan, outcome))
    }

    fn after_write(&mut self, plan: &Plan) -> Result<Outcome, Error> {
        let missed = self.sync.refresh(plan);
        self.report_missed(missed)
    }

    fn report_missed(&mut self, missed: Vec<Missed>) -> Result<Outcome, Error> {
        if missed.is_empty() {
            return Ok(Outcome::Done);
        }
        let names: BTreeSet<String> = missed.iter().map(|m| m.vm.clone()).collect();
        mark_stale(self.store.as_mut(), &names, true)?;
        if self.sync.mode == SyncMode::Deferred {
            for m in &missed {
                eprintln!(
                    "kvmroll: VM {}: libvirt definition marked for refresh (inside a hook stage)",
                    m.vm
                );
            }
            return Ok(Outcome::Done);
        }
        for m in &missed {
            eprintln!(
                "kvmroll: warning: VM {} changed in the database but its libvirt definition on {} \
                 was not refreshed ({}); it is marked stale: run `kvmroll vm define {}` once the \
                 container is reachable",
                m.vm, m.container, m.reason, m.vm
            );
        }
        Ok(Outcome::Stale)
    }

    fn host(&mut self, cmd: HostCmd, out: &mut dyn Write) -> Result<Outcome, Error> {
        match cmd {
            HostCmd::Add {
                name,
                appliance,
                rack,
                rank,
                cpus,
                os,
            } => {
                let host = Host {
                    rack,
                    rank,
                    cpus,
                    os,
                    ..Host::new(&name, &appliance)
                };
                self.write(&mut |_| Ok(vec![Change::AddHost(host.clone())]))
                    .map(|(_, o)| o)
            }
            HostCmd::Set {
                name,
                appliance,
                rack,
                rank,
                cpus,
                os,
                boot_action,
            } => {
                let boot = boot_action.as_deref().map(BootAction::parse).transpose()?;
                self.write(&mut |c| {
                    if c.vms.contains_key(&name) {
                        return Err(ClusterError::IsVm(name.clone()));
                    }
                    let mut h = c.host(&name)?.clone();
                    if let Some(a) = &appliance {
                        h.appliance = a.clone();
                    }
                    h.rack = rack.unwrap_or(h.rack);
                    h.rank = rank.unwrap_or(h.rank);
                    h.cpus = cpus.unwrap_or(h.cpus);
                    if let Some(os) = &os {
                        h.os = os.clone();
                    }
                    h.boot_action = boot.unwrap_or(h.boot_action);
                    Ok(vec![Change::SetHost(h)])
                })
                .map(|(_, o)| o)
            }
            HostCmd::List { json } => {
                let c = self.store.snapshot()?;
                if json.json {
                    print_json(out, &c.hosts.values().collect::<Vec<_>>())?;
                    return Ok(Outcome::Done);
                }
                let rows: Vec<Vec<String>> = c
                    .hosts
                    .values()
                    .map(|h| {
                        vec![
                            h.name.clone(),
                            h.appliance.clone(),
                            h.rack.to_string(),
                            h.rank.to_string(),
                            h.cpus.to_string(),
                            h.os.clone(),
                            h.boot_action.as_str().to_string(),
                            if c.is_container(h) { "yes" } else { "no" }.to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    out,
                    &[
                        "HOST",
                        "APPLIANCE",
                        "RACK",
                        "RANK",
                        "CPUS",
                        "OS",
                        "BOOT",
                        "KVM",
                    ],
                    &rows,
                )?;
                Ok(Outcome::Done)
            }
            HostCmd::Show { name, json } => {
                let c = self.store.snapshot()?;
                let h = c.host(&name)?;
                if json.json {
                    print_json(out, h)?;
                    return Ok(Outcome::Done);
                }
                writeln!(out, "name:         {}", h.name)?;
                writeln!(out, "appliance:    {}", h.appliance)?;
                writeln!(out, "rack:         {}", h.rack)?;
                writeln!(out, "rank:         {}", h.rank)?;
                writeln!(out, "cpus:         {}", h.cpus)?;
                writeln!(out, "os:           {}", h.os)?;
                writeln!(out, "boot action:  {}", h.boot_action.as_str())?;
                writeln!(
                    out,
                    "vm container: {}",
                    if c.is_container(h) { "yes" } else { "no" }
                )?;
                let vms: Vec<&str> = c.vms_on(&name).map(|v| v.name.as_str()).collect();
                if !vms.is_empty() {
                    writeln!(out, "vms:          {}", vms.join(" "))?;
                }
                Ok(Outcome::Done)
            }
            HostCmd::Remove { name } => self
                .write(&mut |_| Ok(vec![Change::RemoveHost(name.clone())]))
                .map(|(_, o)| o),
        }
    }

    fn appliance(&mut self, cmd: ApplianceCmd, out: &mut dyn Write) -> Result<Outcome, Error> {
        match cmd {
            ApplianceCmd::Add { name } => self
                .write(&mut |_| Ok(vec![Change::AddAppliance(name.clone())]))
                .map(|(_, o)| o),
            ApplianceCmd::List { json } => {
                let c = self.store.snapshot()?;
                if json.json {
                    print_json(out, &c.appliances)?;
                } else {
                    for a in &c.appliances {
                        writeln!(out, "{a}")?;
                    }
                }
                Ok(Outcome::Done)
            }
        }
    }

    /// Changes one VM's row with `edit`, in one transaction.
    fn edit_vm(
        &mut self,
        name: &str,
        edit: &mut dyn FnMut(&Cluster, &mut Vm) -> Result<(), ClusterError>,
    ) -> Result<Outcome, Error> {
        self.write(&mut |c| {
            let mut vm = c.vm(name)?.clone();
            edit(c, &mut vm)?;
            Ok(vec![Change::SetVm(vm)])
        })
        .map(|(_, o)| o)
    }

    fn vm(&mut self, cmd: VmCmd, out: &mut dyn Write) -> Result<Outcome, Error> {
        match cmd {
            VmCmd::Add {
                name,
                container,
                mem,
                cpus,
                disks,
                nics,
                virt_type,
                force,
            } => {
                check_name("VM", &name)?;
                let disks = disks
                    .iter()
                    .map(|d| Disk::parse(d))
                    .collect::<Result<Vec<_>, _>>()?;
                let specs = nics
                    .iter()
                    .map(|n| NicSpec::parse(n))
                    .collect::<Result<Vec<_>, _>>()?;
                let uuid = uuid::Uuid::new_v4().to_string();
                self.write(&mut |c| {
                    let own = Host::new(&name, kvmroll_core::cluster::VM_APPLIANCE);
                    check_disk_roots(c, &own, &disks, force)?;
                    let nics = nics_from_specs(c, &specs, BTreeSet::new());
                    Ok(vec![Change::AddVm(Vm {
                        id: 0,
                        name: name.clone(),
                        container: Some(container.clone()),
                        memory_mib: mem,
                        vcpus: cpus,
                        uuid: uuid.clone(),
                        cdrom: None,
                        virt_type: virt_type.clone(),
                        disks: disks.clone(),
                        nics,
                        stale: false,
                        generation: 0,
                    })])
                })
                .map(|(_, o)| o)
            }
            VmCmd::Set {
                name,
                container,
                mem,
                cpus,
                virt_type,
            } => {
                let snapshot = self.store.snapshot()?;
                let old = snapshot.vm(&name)?.clone();
                let moving = container.is_some() && container != old.container;
                // Moving a running VM is a migration, which this is not.
                let mut was_defined = None;
                // A definition that may remain on the old container.
                let mut left_behind = false;
                if moving && self.sync.mode == SyncMode::Live {
                    if let Some(from) = &old.container {
                        let uri = snapshot.libvirt_uri(from, &kvmroll_core::sys::local_hostname());
                        match self
                            .sync
                            .conn(&uri)
                            .and_then(|hv| hv.domain(&name).map_err(|e| chain(&e)))
                        {
                            Ok(Some(d)) if d.state != DomainState::ShutOff => {
                                return Err(refused(format!(
                                    "VM {name} is running on {from}; shut it down before moving it"
                                )))
                            }
                            Ok(Some(_)) => was_defined = Some(uri),
                            Ok(None) => {}
                            Err(e) => {
                                eprintln!(
                                    "kvmroll: warning: cannot reach {from} to check VM {name}: {e}; \
                                     any definition left there is stale"
                                );
                                left_behind = true;
                            }
                        }
                    }
                }
                let (plan, outcome) = self.write(&mut |c| {
                    let mut vm = c.vm(&name)?.clone();
                    if let Some(ct) = &container {
                        vm.container = Some(ct.clone());
                    }
                    vm.memory_mib = mem.unwrap_or(vm.memory_mib);
                    vm.vcpus = cpus.unwrap_or(vm.vcpus);
                    if let Some(t) = &virt_type {
                        vm.virt_type = t.clone();
                    }
                    Ok(vec![Change::SetVm(vm)])
                })?;
                if let Some(uri) = was_defined {
                    // The old container's definition goes; the new one gets it.
                    let result = self
                        .sync
                        .conn(&uri)
                        .and_then(|hv| hv.undefine(&name).map_err(|e| chain(&e)));
                    if let Err(e) = result {
                        eprintln!("kvmroll: warning: VM {name}: its old definition at {uri} could not be removed: {e}");
                        left_behind = true;
                    }
                    // Defines it on its new container, or fails saying so.
                    self.define(&plan.after, std::slice::from_ref(&name))?;
                }
                Ok(if left_behind { Outcome::Stale } else { outcome })
            }
            VmCmd::List { container, json } => {
                let c = self.store.snapshot()?;
                if let Some(ct) = &container {
                    c.host(ct)?;
                }
                let vms: Vec<&Vm> = c
                    .vms
                    .values()
                    .filter(|v| container.is_none() || v.container == container)
                    .collect();
                if json.json {
                    print_json(out, &vms)?;
                    return Ok(Outcome::Done);
                }
                let rows: Vec<Vec<String>> = vms
                    .iter()
                    .map(|v| {
                        vec![
                            v.name.clone(),
                            v.container.clone().unwrap_or_else(|| "-".into()),
                            v.memory_mib.to_string(),
                            v.vcpus.to_string(),
                            v.cdrom.clone().unwrap_or_else(|| "-".into()),
                            if v.stale { "stale" } else { "ok" }.to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    out,
                    &["VM", "CONTAINER", "MEM_MIB", "VCPUS", "CDROM", "DEFINITION"],
                    &rows,
                )?;
                Ok(Outcome::Done)
            }
            VmCmd::Show { name, json } => {
                let c = self.store.snapshot()?;
                let vm = c.vm(&name)?;
                let attributes: Vec<_> = c.resolve(c.host(&name)?).into_values().collect();
                if json.json {
                    print_json(out, &VmView { vm, attributes })?;
                    return Ok(Outcome::Done);
                }
                writeln!(out, "name:      {}", vm.name)?;
                writeln!(out, "uuid:      {}", vm.uuid)?;
                writeln!(out, "container: {}", vm.container.as_deref().unwrap_or("-"))?;
                writeln!(out, "memory:    {} MiB", vm.memory_mib)?;
                writeln!(out, "vcpus:     {}", vm.vcpus)?;
                writeln!(out, "virt type: {}", vm.virt_type)?;
                writeln!(out, "cdrom:     {}", vm.cdrom.as_deref().unwrap_or("none"))?;
                writeln!(
                    out,
                    "definition: {}",
                    if vm.stale {
                        "stale (run kvmroll vm define)"
                    } else {
                        "in step"
                    }
                )?;
                for d in &vm.disks {
                    writeln!(out, "disk:      {}", d.spec())?;
                }
                for n in &vm.nics {
                    let mut s = format!("{}:{},mac={}", n.kind.as_str(), n.source, n.mac);
                    if let Some(v) = n.vlan {
                        s.push_str(&format!(",vlan={v}"));
                    }
                    s.push_str(&format!(",model={}", n.model));
                    writeln!(out, "nic:       {s}")?;
                }
                Ok(Outcome::Done)
            }
            VmCmd::Remove { name, delete_disks } => self.remove_vm(&name, delete_disks),
            VmCmd::Cdrom { name, path } => {
                let cdrom = match path.as_str() {
                    "none" => None,
                    p => {
                        check_abs_path(p)?;
                        Some(p.to_string())
                    }
                };
                self.edit_vm(&name, &mut |_, vm| {
                    vm.cdrom = cdrom.clone();
                    Ok(())
                })
            }
            VmCmd::Disk(DiskCmd::Add { name, spec, force }) => {
                let disk = Disk::parse(&spec)?;
                self.edit_vm(&name, &mut |c, vm| {
                    check_disk_roots(c, c.host(&vm.name)?, std::slice::from_ref(&disk), force)?;
                    vm.disks.push(disk.clone());
                    Ok(())
                })
            }
            VmCmd::Disk(DiskCmd::Resize { name, dev, size }) => self.resize_disk(&name, &dev, size),
            VmCmd::Disk(DiskCmd::Remove { name, dev }) => {
                let mut gone = Vec::new();
                let outcome = self.edit_vm(&name, &mut |_, vm| {
                    gone = vm
                        .disks
                        .iter()
                        .filter(|d| d.dev == dev)
                        .map(|d| d.path.clone())
                        .collect();
                    vm.disks.retain(|d| d.dev != dev);
                    if gone.is_empty() {
                        return Err(ClusterError::UnknownDisk {
                            vm: vm.name.clone(),
                            dev: dev.clone(),
                        });
                    }
                    Ok(())
                })?;
                // A grow asked for it must not reach an image of the same
                // path added again later.
                self.store.record_disk_work(&name, "", &[], &gone)?;
                Ok(outcome)
            }
            VmCmd::Nic(NicCmd::Add { name, spec }) => {
                let spec = NicSpec::parse(&spec)?;
                self.edit_vm(&name, &mut |c, vm| {
                    let taken = vm.nics.iter().map(|n| n.mac.clone()).collect();
                    vm.nics
                        .extend(nics_from_specs(c, std::slice::from_ref(&spec), taken));
                    Ok(())
                })
            }
            VmCmd::Nic(NicCmd::Remove { name, mac }) => {
                let mac = Mac::parse(&mac)?;
                self.edit_vm(&name, &mut |_, vm| {
                    let before = vm.nics.len();
                    vm.nics.retain(|n| n.mac != mac);
                    if vm.nics.len() == before {
                        return Err(ClusterError::UnknownNic {
                            vm: vm.name.clone(),
                            mac: mac.to_string(),
                        });
                    }
                    Ok(())
                })
            }
            VmCmd::Sync { names, all, from } => {
                let c = self.store.snapshot()?;
                let names: Vec<String> = if all {
                    c.vms
                        .values()
                        .filter(|v| v.container.is_some())
                        .map(|v| v.name.clone())
                        .collect()
                } else {
                    names
                };
                if let Some(from) = &from {
                    c.host(from)?;
                }
                self.sync_vms(&c, &names, from.as_deref())
            }
            VmCmd::Define {
                names,
                all,
                container,
            } => {
                let c = self.store.snapshot()?;
                let names: Vec<String> = if all {
                    if let Some(ct) = &container {
                        c.host(ct)?;
                    }
                    c.vms
                        .values()
                        .filter(|v| v.container.is_some())
                        .filter(|v| container.is_none() || v.container == container)
                        .map(|v| v.name.clone())
                        .collect()
                } else {
                    names
                };
                self.define(&c, &names)
            }
        }
    }

    /// Looks up and renders every VM before libvirt is touched, so that a
    /// bad name is refused having changed nothing. VMs not placed on a
    /// container are an error for `define` and skipped by `sync`.
    fn render_all(
        &self,
        c: &Cluster,
        names: &[String],
        what: &str,
        unplaced_is_error: bool,
    ) -> Result<Vec<(String, String, String)>, Error> {
        if self.sync.mode == SyncMode::Deferred {
            return Err(refused(format!(
                "kvmroll vm {what} cannot run inside a libvirt hook stage: libvirtd is waiting for the hook"
            )));
        }
        let mut renderer = kvmroll_core::Renderer::new(c);
        let mut jobs = Vec::new();
        for name in names {
            let vm = c.vm(name)?;
            let Some(container) = vm.container.clone() else {
                if unplaced_is_error {
                    return Err(refused(format!("VM {name} is not placed on a container")));
                }
                continue;
            };
            jobs.push((name.clone(), container, renderer.render(name)?));
        }
        Ok(jobs)
    }

    /// Clears `stale` for the VMs now in step with libvirt; fails naming how
    /// many of `total` were not.
    fn settle(
        &mut self,
        in_step: &BTreeSet<String>,
        failed: usize,
        total: usize,
        what: &str,
    ) -> Result<Outcome, Error> {
        mark_stale(self.store.as_mut(), in_step, false)?;
        if failed > 0 {
            return Err(refused(format!(
                "{failed} of {total} VM(s) could not be {what}"
            )));
        }
        Ok(Outcome::Done)
    }

    /// Renders and defines VMs in their containers' libvirt; clears `stale`
    /// for those that succeed.
    fn define(&mut self, c: &Cluster, names: &[String]) -> Result<Outcome, Error> {
        let jobs = self.render_all(c, names, "define", true)?;
        let mut done = BTreeSet::new();
        let mut failed = 0;
        for (name, container, xml) in jobs {
            let uri = c.libvirt_uri(&container, &kvmroll_core::sys::local_hostname());
            match self
                .sync
                .conn(&uri)
                .and_then(|hv| hv.define(&xml).map_err(|e| chain(&e)))
            {
                Ok(()) => {
                    eprintln!("kvmroll: VM {name} defined on {container} ({uri})");
                    done.insert(name);
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("kvmroll: VM {name}: cannot define it on {container} ({uri}): {e}");
                }
            }
        }
        self.settle(&done, failed, names.len(), "defined")
    }

    /// Redefines each VM whose libvirt definition differs from its rendering
    /// (or that is marked stale); leaves alone those libvirt does not have.
    /// With `from`, a VM defined on that container but placed on another is
    /// moved there first ([`App::move_definition`]).
    fn sync_vms(
        &mut self,
        c: &Cluster,
        names: &[String],
        from: Option<&str>,
    ) -> Result<Outcome, Error> {
        let jobs = self.render_all(c, names, "sync", false)?;
        let mut in_step = BTreeSet::new();
        let mut failed = 0;
        for (name, container, xml) in jobs {
            let stale = c.vm(&name)?.stale;
            let uri = c.libvirt_uri(&container, &kvmroll_core::sys::local_hostname());
            if let Some(old) = from.filter(|old| *old != container) {
                match self.move_definition(c, &name, old, &container, &xml) {
                    Ok(Some(what)) => {
                        eprintln!("kvmroll: VM {name}: {what}");
                        in_step.insert(name);
                        continue;
                    }
                    // Not defined there: synced where it belongs, as any.
                    Ok(None) => {}
                    Err(e) => {
                        failed += 1;
                        eprintln!(
                            "kvmroll: VM {name}: cannot move it from {old} to {container}: {e}"
                        );
                        continue;
                    }
                }
            }
            let result = self.sync.conn(&uri).and_then(|hv| {
                if hv.domain(&name).map_err(|e| chain(&e))?.is_none() {
                    return Ok("not defined in libvirt; nothing to refresh".to_string());
                }
                let current = hv.xml(&name, true).map_err(|e| chain(&e))?;
                let mut diffs =
                    kvmroll_core::drift::compare(&xml, &current).map_err(|e| e.to_string())?;
                if let Some(why) = metadata_differs(&xml, &current) {
                    diffs.push(why);
                }
                if diffs.is_empty() && !stale {
                    return Ok("in step".to_string());
                }
                hv.define(&xml).map_err(|e| chain(&e))?;
                Ok(if diffs.is_empty() {
                    "redefined (was marked stale)".to_string()
                } else {
                    format!("redefined: {}", diffs.join("; "))
                })
            });
            match result {
                Ok(what) => {
                    eprintln!("kvmroll: VM {name} on {container}: {what}");
                    in_step.insert(name);
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("kvmroll: VM {name}: cannot sync it on {container} ({uri}): {e}");
                }
            }
        }
        self.settle(&in_step, failed, names.len(), "synced")
    }

    /// Moves a VM's definition from container `old`, whose libvirt has it,
    /// to `new`, where the database now places it: defines `xml` on `new`,
    /// then undefines it on `old`. A VM running or saved on `old` is left
    /// there. `None` when `old` does not have it.
    fn move_definition(
        &mut self,
        c: &Cluster,
        name: &str,
        old: &str,
        new: &str,
        xml: &str,
    ) -> Result<Option<String>, String> {
        let (old_uri, new_uri) = (
            c.libvirt_uri(old, &kvmroll_core::sys::local_hostname()),
            c.libvirt_uri(new, &kvmroll_core::sys::local_hostname()),
        );
        let Some(there) = self
            .sync
            .conn(&old_uri)?
            .domain(name)
            .map_err(|e| chain(&e))?
        else {
            return Ok(None);
        };
        if there.state != DomainState::ShutOff {
            return Err(format!("it runs on {old}"));
        }
        if there.has_managed_save {
            return Err(format!(
                "it has a saved image on {old}, which it needs to resume"
            ));
        }
        self.sync
            .conn(&new_uri)?
            .define(xml)
            .map_err(|e| format!("defining it on {new} ({new_uri}): {}", chain(&e)))?;
        self.sync.conn(&old_uri)?.undefine(name).map_err(|e| {
            format!(
                "defined on {new}, but undefining it on {old}: {}",
                chain(&e)
            )
        })?;
        Ok(Some(format!("moved from {old} to {new} ({new_uri})")))
    }

    /// `events prune`: by age (given, or the global kvm_events_keep_days,
    /// default 90) and by count.
    fn prune_events(
        &mut self,
        older_than: Option<u32>,
        keep: Option<u64>,
        out: &mut dyn Write,
    ) -> Result<Outcome, Error> {
        let days = match (older_than, keep) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => {
                let cluster = self.store.snapshot()?;
                let set = cluster
                    .attrs
                    .get(&kvmroll_core::Scope::Global)
                    .and_then(|a| a.get("kvm_events_keep_days"));
                Some(match set {
                    Some(v) => v.parse().map_err(|_| {
                        refused(format!(
                            "kvm_events_keep_days is {v:?}, not a number of days"
                        ))
                    })?,
                    None => DEFAULT_EVENTS_KEEP_DAYS,
                })
            }
        };
        let now_ms = kvmroll_core::now_ms();
        // Days are a u32 (as kvm_events_keep_days is validated): no overflow.
        let before = days.map(|d| now_ms.saturating_sub(i64::from(d) * 86_400_000));
        let gone = self.store.prune_events(before, keep)?;
        let mut why = Vec::new();
        if let Some(d) = days {
            why.push(format!("older than {d} days"));
        }
        if let Some(k) = keep {
            why.push(format!("beyond the newest {k}"));
        }
        writeln!(out, "pruned {gone} event(s) {}", why.join(" or "))?;
        Ok(Outcome::Done)
    }

    fn events(
        &mut self,
        vm: Option<String>,
        container: Option<String>,
        limit: u32,
        json: bool,
        out: &mut dyn Write,
    ) -> Result<Outcome, Error> {
        let events = self.store.events(&kvmroll_core::EventFilter {
            vm,
            container,
            limit: Some(limit),
        })?;
        if json {
            print_json(out, &events)?;
            return Ok(Outcome::Done);
        }
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    e.id.to_string(),
                    utc(e.time_ms),
                    e.vm.clone(),
                    e.container.clone().unwrap_or_else(|| "-".into()),
                    e.stage.clone(),
                    format!("{} {}", e.op, e.subop),
                    e.plugin.as_deref().map_or("-".to_string(), |p| {
                        p.rsplit('/').next().unwrap_or(p).to_string()
                    }),
                    e.outcome.as_str().to_string(),
                    e.status.map_or("-".to_string(), |s| s.to_string()),
                    format!("{}ms", e.duration_ms),
                    one_line(&e.message),
                ]
            })
            .collect();
        print_table(
            out,
            &[
                "ID",
                "TIME",
                "VM",
                "CONTAINER",
                "STAGE",
                "EVENT",
                "PLUGIN",
                "OUTCOME",
                "STATUS",
                "TOOK",
                "MESSAGE",
            ],
            &rows,
        )?;
        Ok(Outcome::Done)
    }

    /// `vm disk resize`: the database first (the size, and a grow for the
    /// next start), then, while the VM runs, libvirt's live block resize.
    fn resize_disk(&mut self, name: &str, dev: &str, gib: u32) -> Result<Outcome, Error> {
        let c = self.store.snapshot()?;
        let vm = c.vm(name)?;
        let disk =
            vm.disks
                .iter()
                .find(|d| d.dev == dev)
                .ok_or_else(|| ClusterError::UnknownDisk {
                    vm: name.to_string(),
                    dev: dev.to_string(),
                })?;
        if disk.kind == DiskKind::Block {
            return Err(refused(format!(
                "disk {dev} of VM {name} is the block device {}: grow it where it is provided; \
                 kvmroll grows image files only",
                disk.path
            )));
        }
        let roots = Roots::of(c.attr_of(name, ROOTS_ATTR)).map_err(refused)?;
        if !roots.contains(&disk.path) {
            return Err(refused(format!(
                "disk {dev} of VM {name} is {}, outside {ROOTS_ATTR} ({roots}): kvmroll grows \
                 images there only",
                disk.path
            )));
        }
        self.store.grow_disk(name, dev, gib)?;
        // The definition holds the size (kvmroll's metadata), which the
        // hook reads at the next start: it goes to libvirt now.
        let after = self.store.snapshot()?;
        let plan = Plan {
            changed: [(
                name.to_string(),
                Some(kvmroll_core::render_domain(&after, name)?),
            )]
            .into(),
            after,
        };
        let redefined = self.after_write(&plan)?;
        if let (Some(container), SyncMode::Live) = (&vm.container, self.sync.mode) {
            let uri = c.libvirt_uri(container, &kvmroll_core::sys::local_hostname());
            let live = self.sync.conn(&uri).and_then(|hv| {
                match hv.domain(name).map_err(|e| chain(&e))? {
                    Some(d) if matches!(d.state, DomainState::Running | DomainState::Paused) => hv
                        .grow_disk(name, dev, disks::gib_bytes(gib))
                        .map(Some)
                        .map_err(|e| chain(&e)),
                    _ => Ok(None),
                }
            });
            match live {
                Ok(Some(_)) => {
                    self.store.record_disk_work(
                        name,
                        container,
                        &[],
                        std::slice::from_ref(&disk.path),
                    )?;
                    eprintln!("kvmroll: VM {name}: disk {dev} is {gib} GiB, grown while it runs");
                    return Ok(redefined);
                }
                Ok(None) => {}
                Err(e) => eprintln!(
                    "kvmroll: warning: VM {name}: disk {dev} could not be grown while it runs ({e})"
                ),
            }
        }
        eprintln!("kvmroll: VM {name}: disk {dev} grows to {gib} GiB at its next start");
        Ok(redefined)
    }

    fn remove_vm(&mut self, name: &str, delete_disks: bool) -> Result<Outcome, Error> {
        if delete_disks && self.sync.mode != SyncMode::Live {
            return Err(refused(
                "--delete-disks deletes images through the container's libvirt: not with \
                 --no-sync, nor inside a hook stage",
            ));
        }
        let c = self.store.snapshot()?;
        let vm = c.vm(name)?;
        // Read before the VM's rows go, and its records with them.
        let made = self.store.made_images(name)?;
        let mut defined_at = None;
        let mut missed = Vec::new();
        if let (Some(container), SyncMode::Live) = (&vm.container, self.sync.mode) {
            let uri = c.libvirt_uri(container, &kvmroll_core::sys::local_hostname());
            match self
                .sync
                .conn(&uri)
                .and_then(|hv| hv.domain(name).map_err(|e| chain(&e)))
            {
                Ok(Some(d)) if d.state != DomainState::ShutOff => {
                    return Err(refused(format!(
                        "VM {name} is running on {container}; shut it down before removing it"
                    )))
                }
                Ok(Some(_)) => defined_at = Some(uri),
                Ok(None) => {}
                Err(reason) => missed.push((container.clone(), reason)),
            }
        }
        // Its neighbours' pin_auto CPUs can move: they are refreshed as any
        // write's are.
        let (_, refreshed) = self.write(&mut |_| Ok(vec![Change::RemoveVm(name.to_string())]))?;
        if let Some(uri) = defined_at {
            let result = self
                .sync
                .conn(&uri)
                .and_then(|hv| hv.undefine(name).map_err(|e| chain(&e)));
            if let Err(reason) = result {
                missed.push((uri, reason));
            }
        }
        for (place, reason) in &missed {
            eprintln!(
                "kvmroll: warning: VM {name} was removed from the database but its libvirt \
                 definition on {place} may remain ({reason}); remove it with virsh undefine"
            );
        }
        let kept = if delete_disks {
            self.delete_images(&c, name, &made)
        } else {
            report_images_kept(&c, name, &made);
            true
        };
        Ok(if missed.is_empty() && kept {
            refreshed
        } else {
            Outcome::Stale
        })
    }

    /// Deletes the images kvmroll made for a removed VM, on their
    /// containers; one still used by another VM is kept. False when one
    /// could not be deleted (each is said).
    fn delete_images(&mut self, c: &Cluster, name: &str, made: &[MadeImage]) -> bool {
        let mut all = true;
        for m in made {
            let user = c.vms.values().find(|v| {
                v.name != name
                    && v.container.as_deref() == Some(m.container.as_str())
                    && v.disks.iter().any(|d| d.path == m.path)
            });
            if let Some(other) = user {
                eprintln!(
                    "kvmroll: VM {name}: image {} on {} is kept: VM {} uses it",
                    m.path, m.container, other.name
                );
                continue;
            }
            let uri = c.libvirt_uri(&m.container, &kvmroll_core::sys::local_hostname());
            let deleted = self
                .sync
                .conn(&uri)
                .and_then(|hv| hv.delete_image(&m.path).map_err(|e| chain(&e)));
            match deleted {
                Ok(true) => eprintln!(
                    "kvmroll: VM {name}: image {} deleted on {}",
                    m.path, m.container
                ),
                Ok(false) => eprintln!(
                    "kvmroll: VM {name}: image {} on {} was gone already",
                    m.path, m.container
                ),
                Err(e) => {
                    all = false;
                    eprintln!(
                        "kvmroll: warning: VM {name}: image {} on {} could not be deleted ({e}); \
                         delete it by hand",
                        m.path, m.container
                    );
                }
            }
        }
        if let Ok(vm) = c.vm(name) {
            for d in vm.disks.iter().filter(|d| d.kind != DiskKind::Block) {
                if !made.iter().any(|m| m.path == d.path) {
                    eprintln!(
                        "kvmroll: VM {name}: {} was not made by kvmroll: left as it is",
                        d.path
                    );
                }
            }
        }
        all
    }

    fn attr(&mut self, cmd: AttrCmd, out: &mut dyn Write) -> Result<Outcome, Error> {
        match cmd {
            AttrCmd::Set {
                scope,
                args,
                value_file,
            } => {
                let flagged = has_scope_flag(&scope);
                let (target, rest) = if flagged {
                    (None, &args[..])
                } else {
                    (Some(args[0].as_str()), &args[1..])
                };
                let (name, value) = match (rest, &value_file) {
                    ([name], Some(file)) => (name.clone(), read_value(file)?),
                    ([name, v], None) if v == "-" => {
                        (name.clone(), read_value(std::path::Path::new("-"))?)
                    }
                    ([name, v], None) => (name.clone(), v.clone()),
                    ([_, _], Some(_)) => {
                        return Err(refused("give the value or --value-file, not both"))
                    }
                    ([_], None) => {
                        return Err(refused(
                            "no value given (a VALUE, `-` for standard input, or --value-file)",
                        ))
                    }
                    _ => {
                        return Err(refused(if flagged {
                            "expected NAME VALUE after a scope flag"
                        } else {
                            "expected HOST NAME VALUE (or a scope flag such as --global)"
                        }))
                    }
                };
                let scope = scope_of(&scope, target);
                self.write(&mut |_| {
                    Ok(vec![Change::SetAttr {
                        scope: scope.clone(),
                        name: name.clone(),
                        value: value.clone(),
                    }])
                })
                .map(|(_, o)| o)
            }
            AttrCmd::Get { host, name } => {
                let c = self.store.snapshot()?;
                let h = c.host(&host)?;
                match c.attr(h, &name) {
                    Some(v) => {
                        writeln!(out, "{v}")?;
                        Ok(Outcome::Done)
                    }
                    None => Ok(Outcome::Unset),
                }
            }
            AttrCmd::List { host, json } => {
                let c = self.store.snapshot()?;
                let h = c.host(&host)?;
                let resolved: Vec<_> = c.resolve(h).into_values().collect();
                if json.json {
                    print_json(out, &resolved)?;
                    return Ok(Outcome::Done);
                }
                let rows: Vec<Vec<String>> = resolved
                    .iter()
                    .map(|r| vec![r.name.clone(), r.scope.to_string(), one_line(&r.value)])
                    .collect();
                print_table(out, &["ATTRIBUTE", "SCOPE", "VALUE"], &rows)?;
                Ok(Outcome::Done)
            }
            AttrCmd::Rm { scope, args } => {
                let flagged = has_scope_flag(&scope);
                let (target, name) = match (flagged, &args[..]) {
                    (true, [name]) => (None, name.clone()),
                    (false, [host, name]) => (Some(host.as_str()), name.clone()),
                    _ => {
                        return Err(refused(if flagged {
                            "expected NAME after a scope flag"
                        } else {
                            "expected HOST NAME (or a scope flag such as --global)"
                        }))
                    }
                };
                let scope = scope_of(&scope, target);
                self.write(&mut |_| {
                    Ok(vec![Change::RemoveAttr {
                        scope: scope.clone(),
                        name: name.clone(),
                    }])
                })
                .map(|(_, o)| o)
            }
        }
    }
}

/// Refuses image paths outside the kvm_disk_roots of `host` (a VM's own
/// node row), unless `force`: those are used as they are, never made.
fn check_disk_roots(
    c: &Cluster,
    host: &Host,
    disks: &[Disk],
    force: bool,
) -> Result<(), ClusterError> {
    if force {
        return Ok(());
    }
    let roots = Roots::of(c.attr(host, ROOTS_ATTR)).map_err(|why| ValidationError::Attribute {
        name: ROOTS_ATTR.into(),
        why,
    })?;
    for d in disks {
        roots.check(d)?;
    }
    Ok(())
}

/// Says where a removed VM's disk images stay: its image files, and the
/// images kvmroll made for it that it no longer lists.
fn report_images_kept(c: &Cluster, name: &str, made: &[MadeImage]) {
    let Ok(vm) = c.vm(name) else { return };
    let mut images: Vec<String> = vm
        .disks
        .iter()
        .filter(|d| d.kind != DiskKind::Block)
        .map(|d| d.path.clone())
        .collect();
    for m in made {
        if !images.contains(&m.path) {
            images.push(m.path.clone());
        }
    }
    if images.is_empty() {
        return;
    }
    eprintln!(
        "kvmroll: VM {name}: its disk images stay on {}: {}",
        vm.container.as_deref().unwrap_or("its container"),
        images.join(", ")
    );
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` UTC (the civil-from-days
/// conversion of Howard Hinnant's date algorithms).
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// A value on one line for a table: newlines shown as `\n`.
fn one_line(v: &str) -> String {
    v.replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(utc(1_795_673_733_554), "2026-11-26 06:15:33.554");
    }
}

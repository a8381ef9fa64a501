//! `kvmroll-guests`: VMs saved at host shutdown and brought back at boot.
//!
//! One binary for the systemd unit's two entry points (`start` at boot,
//! `stop` at shutdown) and for `status`. Exit status: 0 done; 1 could not
//! run (a conflict, no database, no libvirt); 2 usage; 3 ran, but some VMs are
//! not where they should be (listed on stderr).

use kvmroll_guests::cli;
mod conflicts;
mod image;
mod journal;
mod known;
mod mounts;
mod notify;
mod progress;
mod service;

use cli::{Cli, Command};
use known::{Known, Source};
use kvmroll_core::error_chain;
use kvmroll_core::OpenMode;
use kvmroll_virt::Connector;
use serde::Serialize;
use service::{Placement, Service, ServiceError};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// How long the service waits for the database before it decides from
/// libvirt's definitions.
const DB_WAIT: Duration = Duration::from_secs(10);

/// The service: what it knows of this container's VMs comes from the
/// database when it answers; when it does not (a frontend down, a database
/// file gone or broken), from the kvmroll metadata of libvirt's own
/// definitions, with a warning. A host the database does not know is an
/// error: the database answered.
fn service(cli: &Cli, connector: &dyn Connector) -> Result<Service, ServiceError> {
    let db = cli.db.location()?;
    let host = cli
        .host
        .clone()
        .unwrap_or_else(kvmroll_core::sys::local_short_hostname);
    let cluster =
        kvmroll_core::open_within(&db, OpenMode::ReadOnly, DB_WAIT).and_then(|s| s.snapshot());
    let (uri, known) = match cluster {
        Ok(cluster) => {
            if !cluster.hosts.contains_key(&host) {
                return Err(ServiceError::UnknownHost(host));
            }
            let uri = cli.libvirt_uri.clone().unwrap_or_else(|| {
                cluster.libvirt_uri(&host, &kvmroll_core::sys::local_hostname())
            });
            (uri, Known::from_cluster(cluster, &host))
        }
        Err(e) => {
            let why = error_chain(&e);
            log::warn!(
                "the kvmroll database is unreachable ({why}): deciding from libvirt's definitions"
            );
            let uri = cli
                .libvirt_uri
                .clone()
                .unwrap_or_else(|| "qemu:///system".to_string());
            let hv = connector.connect(&uri)?;
            (uri, Known::from_definitions(hv.as_ref(), &host, why)?)
        }
    };
    Ok(Service {
        uri,
        settings: known.settings.clone(),
        known,
        host,
        root: cli.root.clone(),
        state_dir: cli.state_dir.clone(),
        parallel: 1,
        disk_rate: None,
    })
}

/// Hands the events this container's hook spooled to the database, where
/// it answers: at boot, those a shutdown or an outage left behind.
fn forward_spool(cli: &Cli) {
    let Ok(db) = cli.db.location() else {
        return;
    };
    let Ok(conf) = kvmroll_core::conf::Config::load() else {
        return;
    };
    if conf.database() != db {
        return;
    }
    let spool = kvmroll_core::spool::Spool::new(&conf.spool, &conf.host);
    match spool.forward_now(DB_WAIT, &mut || {
        kvmroll_core::open_within(&db, OpenMode::ReadWrite, DB_WAIT)
    }) {
        Ok(done) if done.events > 0 => {
            log::info!("{} spooled event(s) handed to the database", done.events)
        }
        Ok(done) => {
            if let Some(why) = done.waiting {
                log::warn!(
                    "{} spooled event file(s) wait for the database: {why}",
                    done.left
                );
            }
        }
        Err(e) => log::warn!("{}", error_chain(&e)),
    }
}

#[derive(Serialize)]
struct VmStatus {
    name: String,
    autostart: bool,
    state: String,
    saved_image: Option<String>,
    image_size: Option<u64>,
    journal: Option<journal::Entry>,
}

fn status(
    svc: &Service,
    connector: &dyn Connector,
    json: bool,
    header: kvmroll_cli::args::NoHeader,
) -> Result<(), ServiceError> {
    let mut out = kvmroll_cli::output::stdout();
    let j = journal::Journal::load(&svc.journal_path())?;
    let hv = connector.connect(&svc.uri).ok();
    let mut rows = Vec::new();
    for (name, vm) in &svc.known.vms {
        let state = match hv.as_ref().map(|h| h.domain(name)) {
            None => "libvirt unreachable".to_string(),
            Some(Ok(Some(d))) => format!("{:?}", d.state).to_lowercase(),
            Some(Ok(None)) => "not defined".to_string(),
            // A fixed word in the output; the why goes to the log.
            Some(Err(e)) => {
                log::warn!(
                    "VM {name}: cannot ask libvirt its state: {}",
                    error_chain(&e)
                );
                "unknown".to_string()
            }
        };
        let img = image::path(&svc.root, name);
        let size = std::fs::metadata(&img).ok().map(|m| m.len());
        rows.push(VmStatus {
            name: name.clone(),
            autostart: vm.autostart,
            state,
            saved_image: size.map(|_| img.display().to_string()),
            image_size: size,
            journal: j.as_ref().and_then(|j| j.vms.get(name).cloned()),
        });
    }
    if json {
        #[derive(Serialize)]
        struct All<'a> {
            host: &'a str,
            /// database, or definitions (the database did not answer).
            known_from: &'static str,
            /// Why the database did not answer.
            unreachable: Option<&'a str>,
            phase: Option<journal::Phase>,
            vms: Vec<VmStatus>,
        }
        let all = All {
            host: &svc.host,
            known_from: match svc.known.source {
                Source::Database(_) => "database",
                Source::Definitions(_) => "definitions",
            },
            unreachable: match &svc.known.source {
                Source::Definitions(why) => Some(why),
                Source::Database(_) => None,
            },
            phase: j.as_ref().map(|j| j.phase),
            vms: rows,
        };
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&all).unwrap_or_default()
        )?;
        return Ok(());
    }
    if !header.no_header {
        match &j {
            Some(j) => writeln!(out, "host {}: last run {:?}", svc.host, j.phase)?,
            None => writeln!(out, "host {}: no journal yet", svc.host)?,
        }
        if let Source::Definitions(why) = &svc.known.source {
            writeln!(
                out,
                "from libvirt's definitions: the database is unreachable ({why})"
            )?;
        }
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            let size = r
                .image_size
                .map_or("-".to_string(), |s| format!("{} MiB", s >> 20));
            let journal = r.journal.map_or("-".to_string(), |e| {
                if e.note.is_empty() {
                    e.state.to_string()
                } else {
                    format!("{} ({})", e.state, e.note)
                }
            });
            let autostart = if r.autostart { "yes" } else { "no" };
            let image = r.saved_image.unwrap_or_else(|| "-".to_string());
            vec![r.name, autostart.to_string(), r.state, image, size, journal]
        })
        .collect();
    // The columns are the JSON's fields of each VM.
    kvmroll_cli::print_rows(
        &mut out,
        &[
            "NAME",
            "AUTOSTART",
            "STATE",
            "SAVED_IMAGE",
            "IMAGE_SIZE",
            "JOURNAL",
        ],
        &rows,
        !header.no_header,
    )?;
    Ok(())
}

/// `stop`, with what moves the VMs away first where the container's
/// `kvm_guests_on_shutdown` is `migrate` and the database answered: the
/// migration library over the database, opened for writing (a VM's
/// container and its migration mark), and this machine's libvirt
/// connections. Without either the stop says so and saves.
fn stop(
    cli: &Cli,
    svc: &Service,
    connector: &kvmroll_virt::Libvirt,
    interrupted: &AtomicBool,
    notifier: &notify::Notifier,
) -> Result<Placement, ServiceError> {
    let cluster = match svc.known.cluster() {
        Some(c) if svc.settings.on_shutdown == known::OnShutdown::Migrate => c,
        _ => return service::stop(svc, connector, interrupted, notifier, None),
    };
    let store = cli
        .db
        .location()
        .map_err(|e| error_chain(&e))
        .and_then(|db| {
            kvmroll_core::open_within(&db, OpenMode::ReadWrite, DB_WAIT)
                .map_err(|e| error_chain(&e))
        });
    let mut store = match store {
        Ok(s) => s,
        Err(why) => {
            log::warn!("kvm_guests_on_shutdown=migrate, but the database cannot be written ({why}): saving instead");
            return service::stop(svc, connector, interrupted, notifier, None);
        }
    };
    let local = kvmroll_core::sys::local_hostname();
    let probe =
        kvmroll_evacuate::LibvirtProbe::new(cluster, &local, Arc::new(kvmroll_virt::Libvirt));
    let shared: kvmroll_migrate::SharedStore<'_> = std::sync::Mutex::new(store.as_mut());
    let migrator = kvmroll_migrate::Migrator::new(&shared, connector, &local);
    let evacuation = service::Evacuation {
        probe: Arc::new(probe),
        mover: &migrator,
    };
    service::stop(svc, connector, interrupted, notifier, Some(&evacuation))
}

fn run(cli: Cli) -> Result<Placement, ServiceError> {
    // The real libvirt; the service's tests hand it a fake instead.
    let connector = kvmroll_virt::Libvirt;
    let mut svc = service(&cli, &connector)?;
    let notifier = notify::Notifier::from_env();
    match cli.command {
        Command::Status { json, header } => {
            status(&svc, &connector, json, header).map(|()| Placement::AllInPlace)
        }
        Command::Start | Command::Stop => {
            if let Some(conflict) = conflicts::find(&cli.root) {
                return Err(ServiceError::Conflict(conflict));
            }
            if matches!(cli.command, Command::Start) {
                if matches!(svc.known.source, Source::Database(_)) {
                    forward_spool(&cli);
                }
                svc.settle_parallel(false);
                service::start(&svc, &connector, &notifier)
            } else {
                // SIGTERM and SIGINT only set a flag; the stop's monitor loop
                // reads it (no work in the handler).
                let interrupted = Arc::new(AtomicBool::new(false));
                for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                    if let Err(e) = signal_hook::flag::register(sig, interrupted.clone()) {
                        log::warn!("cannot watch signal {sig}: {e}");
                    }
                }
                svc.settle_parallel(true);
                stop(&cli, &svc, &connector, &interrupted, &notifier)
            }
        }
    }
}

/// How `kvmroll-guests` exits (usage errors aside: 2).
#[derive(Debug, Clone, Copy)]
enum Exit {
    Done,
    /// Could not run: a conflict, no database, no libvirt.
    Failed,
    /// Ran, but some VMs are not where they should be (listed).
    Partial,
}

impl kvmroll_cli::ExitStatus for Exit {
    fn code(&self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
            Exit::Partial => 3,
        }
    }
}

fn main() -> ExitCode {
    let cli: Cli = kvmroll_cli::parse("kvmroll-guests");
    kvmroll_cli::log::init(kvmroll_cli::log::Options {
        verbose: cli.verbose.verbose,
        before_stderr: progress::clear_line,
        ..kvmroll_cli::log::Options::new("kvmroll-guests")
    });
    let result = run(cli).map(|placement| match placement {
        Placement::AllInPlace => Exit::Done,
        Placement::Missed(missed) => {
            log::error!("not where they should be: {}", missed.join(", "));
            Exit::Partial
        }
    });
    // Logged, not printed: the system log gets it too, and the logger
    // prefixes stderr's line with the binary's name.
    kvmroll_cli::report::finish_with(result, Exit::Failed, |e| log::error!("{}", error_chain(e)))
}

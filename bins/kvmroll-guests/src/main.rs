//! `kvmroll-guests`: VMs saved at host shutdown and brought back at boot.
//!
//! One binary for the systemd unit's two entry points (`start` at boot,
//! `stop` at shutdown) and for `status`. Exit status: 0 done; 1 could not
//! run (a conflict, no database, no libvirt); 2 usage; 3 ran, but some VMs are
//! not where they should be (listed on stderr).

mod cli;
mod conflicts;
mod image;
mod journal;
mod logger;
mod progress;
mod service;
#[path = "../../shared/usage.rs"]
mod usage;

use cli::{Cli, Command};
use kvmroll_core::{open_store, OpenMode};
use serde::Serialize;
use service::{Outcome, Service, ServiceError, Settings};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use kvmroll_core::error_chain as chain;

fn service(cli: &Cli) -> Result<Service, ServiceError> {
    let db = kvmroll_core::db_location(cli.db.clone())?;
    let cluster = open_store(&db, OpenMode::ReadOnly)?.snapshot()?;
    let host = cli
        .host
        .clone()
        .unwrap_or_else(kvmroll_core::sys::local_short_hostname);
    if !cluster.hosts.contains_key(&host) {
        return Err(ServiceError::UnknownHost(host));
    }
    Ok(Service {
        uri: cluster.libvirt_uri(&host),
        settings: Settings::of(&cluster, &host),
        host,
        root: cli.root.clone(),
        state_dir: cli.state_dir.clone(),
        cluster,
    })
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

fn status(svc: &Service, json: bool) -> Result<(), ServiceError> {
    let j = journal::Journal::load(&svc.journal_path())?;
    let hv = kvmroll_virt::Connector::connect(&kvmroll_virt::Libvirt, &svc.uri).ok();
    let mut rows = Vec::new();
    for vm in svc.cluster.vms_on(&svc.host) {
        let state = match hv.as_ref().map(|h| h.domain(&vm.name)) {
            None => "libvirt unreachable".to_string(),
            Some(Ok(Some(d))) => format!("{:?}", d.state).to_lowercase(),
            Some(Ok(None)) => "not defined".to_string(),
            Some(Err(e)) => chain(&e),
        };
        let img = image::path(&svc.root, &vm.name);
        let size = std::fs::metadata(&img).ok().map(|m| m.len());
        rows.push(VmStatus {
            name: vm.name.clone(),
            autostart: svc
                .cluster
                .attr_of(&vm.name, "kvm_autostart")
                .and_then(kvmroll_core::model::parse_bool)
                == Some(true),
            state,
            saved_image: size.map(|_| img.display().to_string()),
            image_size: size,
            journal: j.as_ref().and_then(|j| j.vms.get(&vm.name).cloned()),
        });
    }
    if json {
        #[derive(Serialize)]
        struct All<'a> {
            host: &'a str,
            phase: Option<journal::Phase>,
            vms: Vec<VmStatus>,
        }
        let all = All {
            host: &svc.host,
            phase: j.as_ref().map(|j| j.phase),
            vms: rows,
        };
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        return Ok(());
    }
    match &j {
        Some(j) => println!("host {}: last run {:?}", svc.host, j.phase),
        None => println!("host {}: no journal yet", svc.host),
    }
    println!(
        "{:<24} {:<9} {:<12} {:<14} JOURNAL",
        "VM", "AUTOSTART", "STATE", "SAVED IMAGE"
    );
    for r in rows {
        let image = r
            .image_size
            .map_or("-".to_string(), |s| format!("{} MiB", s >> 20));
        let journal = r.journal.map_or("-".to_string(), |e| {
            if e.note.is_empty() {
                e.state
            } else {
                format!("{} ({})", e.state, e.note)
            }
        });
        println!(
            "{:<24} {:<9} {:<12} {:<14} {journal}",
            r.name,
            if r.autostart { "yes" } else { "no" },
            r.state,
            image
        );
    }
    Ok(())
}

fn run(cli: Cli) -> Result<Outcome, ServiceError> {
    let svc = service(&cli)?;
    match cli.command {
        Command::Status { json } => status(&svc, json).map(|()| Outcome::Done),
        Command::Start | Command::Stop => {
            if let Some(conflict) = conflicts::find(&cli.root) {
                return Err(ServiceError::Conflict(conflict));
            }
            if matches!(cli.command, Command::Start) {
                service::start(&svc)
            } else {
                // SIGTERM and SIGINT only set a flag; the stop's monitor loop
                // reads it (no work in the handler).
                let interrupted = Arc::new(AtomicBool::new(false));
                for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                    if let Err(e) = signal_hook::flag::register(sig, interrupted.clone()) {
                        log::warn!("cannot watch signal {sig}: {e}");
                    }
                }
                service::stop(&svc, &interrupted)
            }
        }
    }
}

fn main() -> ExitCode {
    let cli: Cli = usage::parse("kvmroll-guests");
    logger::init();
    match run(cli) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Partial(missed)) => {
            log::error!("not where they should be: {}", missed.join(", "));
            ExitCode::from(3)
        }
        Err(e) => {
            log::error!("{}", chain(&e));
            ExitCode::from(1)
        }
    }
}

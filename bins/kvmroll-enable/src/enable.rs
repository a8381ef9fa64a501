//! The enabling itself: check, write, reinstall, and undo the write when the
//! reinstall command fails.

use crate::Cli;
use kvmroll_core::model::BootAction;
use kvmroll_core::{open_store, Change, Cluster, OpenMode, Scope};
use kvmroll_plugins::{self as plugins, RunSpec};
use kvmroll_virt::{Connector, DomainState};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use kvmroll_core::error_chain;

mod error;
pub use error::{EnableError, Ended, ReinstallError};

/// The reinstall command as an argument vector, `{host}` replaced in each
/// argument after splitting (so a host name can never add arguments).
pub fn reinstall_argv(c: &Cluster, host: &str) -> Result<Vec<String>, EnableError> {
    let line = c.attr_of(host, "kvm_reinstall_command").ok_or_else(|| {
        EnableError::NoReinstallCommand {
            host: host.to_string(),
        }
    })?;
    let words = shlex::split(line).ok_or_else(|| EnableError::ReinstallCommandUnparsable {
        line: line.to_string(),
    })?;
    if words.is_empty() {
        return Err(EnableError::ReinstallCommandEmpty);
    }
    Ok(words
        .into_iter()
        .map(|w| w.replace("{host}", host))
        .collect())
}

/// Asks the host's libvirt which domains run; refuses where any do or where
/// it cannot be reached (unless forced). A host that is not a VM container
/// and has no `libvirt_uri` runs no libvirt of kvmroll's to ask.
fn check_running(
    c: &Cluster,
    host: &str,
    force: bool,
    connector: &dyn Connector,
) -> Result<(), EnableError> {
    let h = c.host(host)?;
    let container = c.is_container(h);
    if !container && c.attr(h, "libvirt_uri").is_none() {
        return Ok(());
    }
    let uri = c.libvirt_uri(host, &kvmroll_core::sys::local_hostname());
    let running = connector
        .connect(&uri)
        .and_then(|hv| hv.list_domains())
        .map(|ds| {
            ds.into_iter()
                .filter(|d| d.state != DomainState::ShutOff)
                .map(|d| d.name)
                .collect::<Vec<_>>()
        });
    match running {
        Ok(r) if r.is_empty() => Ok(()),
        Ok(r) if force => {
            eprintln!("kvmroll-enable: warning: {host} still runs {} VM(s) ({}); reinstalling anyway (--force)", r.len(), r.join(", "));
            Ok(())
        }
        Ok(vms) => Err(EnableError::VmsRunning {
            host: host.to_string(),
            vms,
        }),
        Err(e) if force => {
            eprintln!("kvmroll-enable: warning: cannot ask {host}'s libvirt ({uri}) what runs: {}; reinstalling anyway (--force)", error_chain(&e));
            Ok(())
        }
        Err(cause) => Err(EnableError::LibvirtUnanswered {
            host: host.to_string(),
            uri,
            cause: Box::new(cause),
        }),
    }
}

/// Runs the reinstall command as the hook runs a plugin
/// (`kvmroll_plugins::run`): its own process group, killed whole at
/// the time limit, both outputs read as they come. Its output on failure.
fn reinstall(argv: &[String], shown: &str, limit: Duration) -> Result<(), ReinstallError> {
    let r = plugins::run(&RunSpec {
        path: Path::new(&argv[0]),
        args: &argv[1..],
        env: &[],
        stdin: b"",
        timeout: limit,
    })
    .map_err(|source| ReinstallError::Spawn {
        shown: shown.to_string(),
        source,
    })?;
    if r.timed_out {
        return Err(ReinstallError::TimedOut {
            shown: shown.to_string(),
            limit,
        });
    }
    if r.success() {
        return Ok(());
    }
    let said = [&r.stderr, &r.stdout]
        .into_iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .find(|t| !t.trim().is_empty())
        .unwrap_or_default();
    let said = said
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string);
    let ended = match (r.code, r.signal) {
        (Some(code), _) => Ended::Status(code),
        (None, Some(sig)) => Ended::Signal(sig),
        (None, None) => Ended::Unknown,
    };
    Err(ReinstallError::Failed {
        shown: shown.to_string(),
        ended,
        said,
    })
}

/// The host's `kvm` attribute set to `kvm` (or removed) and its boot action
/// set to `boot`, built from the cluster the write sees, so that a change
/// made meanwhile to the host's other fields is kept.
fn host_changes(
    c: &Cluster,
    host: &str,
    kvm: Option<String>,
    boot: BootAction,
) -> Result<Vec<Change>, kvmroll_core::ClusterError> {
    let scope = Scope::Host(host.to_string());
    let mut h = c.host(host)?.clone();
    h.boot_action = boot;
    Ok(vec![
        match kvm {
            Some(value) => Change::SetAttr {
                scope,
                name: "kvm".into(),
                value,
            },
            None => Change::RemoveAttr {
                scope,
                name: "kvm".into(),
            },
        },
        Change::SetHost(h),
    ])
}

/// Enables (or disables) `cli.host`, asking its libvirt through `connector`
/// whether VMs run there.
pub fn run(cli: &Cli, connector: &dyn Connector) -> Result<(), EnableError> {
    let db = cli.db.location()?;
    let mode = if cli.dry_run {
        OpenMode::ReadOnly
    } else {
        OpenMode::ReadWrite
    };
    let mut store = open_store(&db, mode)?;
    let c = store.snapshot()?;
    let host = &cli.host;
    let h = c.host(host)?.clone();
    if c.vms.contains_key(host) {
        return Err(EnableError::HostIsVm { host: host.clone() });
    }
    let want = !cli.disable;
    let argv = reinstall_argv(&c, host)?;
    let before_attr = c
        .attrs
        .get(&Scope::Host(host.clone()))
        .and_then(|m| m.get("kvm"))
        .cloned();
    let is_now = c.is_container(&h);
    let changes = host_changes(&c, host, Some(want.to_string()), BootAction::Install)?;
    // Checked against the cluster now: disabling a container that still
    // holds VMs is refused here, before anything runs.
    c.plan(&changes)?;
    let shown = shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "));
    let mut out = kvmroll_cli::output::stdout();
    // What is said on stdout: a closed pipe stops nothing already under way.
    if cli.dry_run {
        let _ = writeln!(out, "would set kvm={want} on {host} (now {is_now}), set its boot action to install (now {}), and run: {shown}", h.boot_action.as_str());
        if let Err(e) = check_running(&c, host, cli.force, connector) {
            let _ = writeln!(out, "but it would refuse: {}", error_chain(&e));
        }
        let _ = writeln!(out, "nothing changed (--dry-run)");
        return Ok(());
    }
    check_running(&c, host, cli.force, connector)?;
    store
        .update(&mut |now| host_changes(now, host, Some(want.to_string()), BootAction::Install))?;
    let limit = c
        .attr(&h, "kvm_reinstall_timeout")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(300);
    if let Err(reinstall) = reinstall(&argv, &shown, Duration::from_secs(limit)) {
        // Put back exactly what was there: the host's own kvm value (or its
        // absence) and its boot action.
        let undo =
            store.update(&mut |now| host_changes(now, host, before_attr.clone(), h.boot_action));
        return Err(match undo {
            Ok(_) => reinstall.into(),
            Err(source) => EnableError::UndoFailed {
                reinstall,
                source: Box::new(source),
            },
        });
    }
    let _ = writeln!(
        out,
        "{host}: kvm={want}, boot action install; reinstall started with `{shown}`"
    );
    Ok(())
}

#[cfg(test)]
mod tests;

//! `kvmroll vm migrate`: a running VM moves live (kvmroll-migrate), a
//! shut-off one as `vm set --container` moves it; and the settling of a
//! migration whose `kvmroll` was killed, which `vm define` does first too.

use super::{refused, App, Error, Exit};
use crate::cli::VmSet;
use crate::sync::SyncMode;
use kvmroll_migrate::{Migrator, Progress, SharedStore};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tells, on one rewritten line of a terminal's stderr, the data left to copy.
fn show_progress(p: &Progress) {
    let left = p.remaining() as f64 / f64::from(1 << 20);
    eprint!("\r\x1b[Kkvmroll: VM {}: {left:.1} MiB left to copy", p.vm);
}

impl App<'_> {
    /// Runs `f` with a migrator over this command's database and libvirt.
    fn with_migrator<T>(&mut self, f: impl FnOnce(&Migrator<'_>) -> T) -> T {
        let connector = std::sync::Arc::clone(&self.connector);
        let local = self.sync.local_host.clone();
        let shared: SharedStore<'_> = Mutex::new(self.store.as_mut());
        let m = Migrator::new(&shared, connector.as_ref(), &local);
        f(&m)
    }

    /// Settles `vm` if its last migration was interrupted, saying so.
    pub(super) fn recover_migration(&mut self, vm: &str) -> Result<(), Error> {
        if let Some(settled) = self.with_migrator(|m| m.recover(vm))? {
            eprintln!("kvmroll: {settled}");
        }
        Ok(())
    }

    pub(super) fn migrate_cmd(
        &mut self,
        name: &str,
        to: &str,
        timeout: Option<Duration>,
        out: &mut dyn Write,
    ) -> Result<Exit, Error> {
        if self.sync.mode != SyncMode::Live {
            return Err(refused(
                "kvmroll vm migrate needs the containers' libvirt: not with --no-sync, nor inside a hook stage",
            ));
        }
        let started = Instant::now();
        self.recover_migration(name)?;
        let checked = self.with_migrator(|m| m.check(name, to))?;
        if checked.running {
            let terminal = std::io::stderr().is_terminal();
            let progress = |p: &Progress| {
                if terminal {
                    show_progress(p);
                }
            };
            let limit = timeout.unwrap_or(checked.timeout);
            let result = self.with_migrator(|m| m.run(&checked, limit, &progress, started));
            if terminal {
                eprint!("\r\x1b[K");
            }
            let moved = result?;
            writeln!(out, "{moved}")?;
            for vm in &moved.stale {
                eprintln!(
                    "kvmroll: warning: VM {vm}'s libvirt definition was not refreshed; it is marked stale: run `kvmroll vm define {vm}`"
                );
            }
            return Ok(if moved.stale.is_empty() {
                Exit::Done
            } else {
                Exit::Stale
            });
        }
        let outcome = self.set_vm(VmSet {
            name: name.to_owned(),
            container: Some(to.to_owned()),
            mem: None,
            cpus: None,
            virt_type: None,
        })?;
        writeln!(
            out,
            "VM {name} moved to {to} (offline, {:.1} s)",
            started.elapsed().as_secs_f64()
        )?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tests::app_over;
    use kvmroll_core::{Change, Scope};
    use kvmroll_virt::fake::FakeHosts;
    use kvmroll_virt::DomainState;

    const C0: &str = "fake:///c0";
    const C1: &str = "fake:///c1";

    /// VM `m` on c0, in `state` there.
    fn app(hosts: &FakeHosts, state: DomainState) -> (tempfile::TempDir, App<'static>) {
        let (dir, app) = app_over(hosts.clone(), &[("m", "c0")]);
        let xml = kvmroll_core::render_domain(&app.store.snapshot().unwrap(), "m").unwrap();
        hosts.host(C0).add_xml("m", &xml, state);
        (dir, app)
    }

    fn container(app: &App<'_>) -> Option<String> {
        app.store
            .snapshot()
            .unwrap()
            .vm("m")
            .unwrap()
            .container
            .clone()
    }

    #[test]
    fn a_running_vm_moves_live_and_says_so_in_one_line() {
        let hosts = FakeHosts::new();
        let (_dir, mut app) = app(&hosts, DomainState::Running);
        let mut out = Vec::new();
        let exit = app.migrate_cmd("m", "c1", None, &mut out).unwrap();
        assert_eq!(exit, Exit::Done);
        let said = String::from_utf8(out).unwrap();
        assert!(said.starts_with("VM m moved to c1 (live, "), "{said}");
        assert_eq!(said.lines().count(), 1);
        assert_eq!(container(&app).as_deref(), Some("c1"));
        assert_eq!(hosts.host(C1).state("m"), Some(DomainState::Running));
        assert_eq!(hosts.host(C0).state("m"), None);
    }

    #[test]
    fn a_shut_off_vm_moves_its_definition_offline() {
        let hosts = FakeHosts::new();
        let (_dir, mut app) = app(&hosts, DomainState::ShutOff);
        let mut out = Vec::new();
        app.migrate_cmd("m", "c1", None, &mut out).unwrap();
        let said = String::from_utf8(out).unwrap();
        assert!(said.starts_with("VM m moved to c1 (offline, "), "{said}");
        assert_eq!(container(&app).as_deref(), Some("c1"));
        assert_eq!(hosts.host(C1).state("m"), Some(DomainState::ShutOff));
        assert_eq!(hosts.host(C0).state("m"), None);
        assert!(hosts
            .host(C0)
            .said()
            .iter()
            .all(|c| !c.starts_with("migrate")));
    }

    #[test]
    fn vm_define_settles_a_migration_killed_midway_first() {
        let hosts = FakeHosts::new();
        let (_dir, mut app) = app(&hosts, DomainState::Running);
        // Killed after its first transaction: the database says c1, the
        // VM runs on c0.
        app.store
            .update(&mut |c| {
                let mut vm = c.vm("m")?.clone();
                vm.container = Some("c1".into());
                Ok(vec![
                    Change::SetVm(vm),
                    Change::SetAttr {
                        scope: Scope::Host("m".into()),
                        name: kvmroll_migrate::MIGRATING_FROM.into(),
                        value: "c0".into(),
                    },
                ])
            })
            .unwrap();
        app.define_cmd(vec!["m".into()], false, None).unwrap();
        assert_eq!(container(&app).as_deref(), Some("c0"));
        let c = app.store.snapshot().unwrap();
        assert!(kvmroll_migrate::migrating_from(&c, "m").is_none());
        assert_eq!(hosts.host(C1).state("m"), None, "nothing defined on c1");
        assert_eq!(hosts.host(C0).state("m"), Some(DomainState::Running));
    }
}

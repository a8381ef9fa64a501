//! `kvmroll host evacuate`: a container's running VMs live-migrated to
//! other containers with room (kvmroll-evacuate), each by the migration
//! library as `vm migrate` moves one. Each VM's line is printed as soon
//! as its outcome is known: where it went on stdout, why it stayed on
//! stderr.

use super::{refused, App, Error, Exit};
use crate::sync::SyncMode;
use kvmroll_evacuate::{LibvirtProbe, Options, Outcome, Probe};
use kvmroll_migrate::{Migrator, SharedStore};
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// How long each container has to answer what runs on it or how much
/// memory it has free.
const ASK: Duration = Duration::from_secs(5);

impl App<'_> {
    pub(super) fn evacuate(
        &mut self,
        container: &str,
        parallel: usize,
        timeout: Option<u64>,
        out: &mut dyn Write,
    ) -> Result<Exit, Error> {
        if self.sync.mode != SyncMode::Live {
            return Err(refused(
                "kvmroll host evacuate needs the containers' libvirt: not with --no-sync, nor inside a hook stage",
            ));
        }
        let c = self.store.snapshot()?;
        let local = self.sync.local_host.clone();
        let connector = Arc::clone(&self.connector);
        let probe: Arc<dyn Probe> = Arc::new(LibvirtProbe::new(&c, &local, Arc::clone(&connector)));
        let shared: SharedStore<'_> = Mutex::new(self.store.as_mut());
        let migrator = Migrator::new(&shared, connector.as_ref(), &local);
        let opts = Options {
            parallel,
            limit: timeout.map(Duration::from_secs),
            deadline: None,
            ask: ASK,
        };
        // The evacuation runs on a thread of its own; this one prints each
        // outcome it hears of, as it comes.
        let (tx, rx) = mpsc::channel::<Outcome>();
        let report = std::thread::scope(|s| {
            let run = s.spawn(|| {
                let said = |o: &Outcome| {
                    let _ = tx.send(o.clone());
                };
                let stop = AtomicBool::new(false);
                let r = kvmroll_evacuate::evacuate(
                    &c, container, &probe, &migrator, &opts, &stop, &said,
                );
                drop(tx);
                r
            });
            for o in rx {
                match o {
                    Outcome::Moved { .. } => {
                        let _ = writeln!(out, "{}", o.line());
                    }
                    Outcome::NotMoved { .. } => eprintln!("kvmroll: {}", o.line()),
                }
            }
            run.join().expect("the evacuation does not panic")
        });
        let report = report.map_err(|e| refused(kvmroll_core::error_chain(&e)))?;
        let stayed = report.not_moved().count();
        match (report.outcomes.len(), stayed) {
            (0, _) => {
                writeln!(out, "no VM runs on {container}: nothing to move")?;
                Ok(Exit::Done)
            }
            (_, 0) => Ok(Exit::Done),
            (all, n) => Err(refused(format!(
                "{n} of {all} running VM(s) did not leave {container}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Syncer;
    use kvmroll_core::{open_store, Change, Host, OpenMode, Scope, Vm};
    use kvmroll_virt::fake::FakeHosts;
    use kvmroll_virt::{Connector, DomainState};

    /// Containers a (4 CPUs) and b (`b_cpus`) at fake:///a and fake:///b,
    /// and 128 MiB one-vCPU VMs running on a.
    fn app(hosts: &FakeHosts, b_cpus: u32, vms: &[&str]) -> (tempfile::TempDir, App<'static>) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open_store(&dir.path().join("k.db"), OpenMode::Create).unwrap();
        let mut changes = Vec::new();
        for (c, cpus) in [("a", 4), ("b", b_cpus)] {
            let mut host = Host::new(c, "vm-container");
            host.cpus = cpus;
            changes.push(Change::AddHost(host));
            changes.push(Change::SetAttr {
                scope: Scope::Host(c.into()),
                name: "libvirt_uri".into(),
                value: format!("fake:///{c}"),
            });
        }
        for (i, name) in vms.iter().enumerate() {
            changes.push(Change::AddVm(Vm {
                id: 0,
                name: name.to_string(),
                container: Some("a".into()),
                memory_mib: 128,
                vcpus: 1,
                uuid: format!("0e7ac0a7-0000-4000-8000-{i:012}"),
                cdrom: None,
                virt_type: "kvm".into(),
                disks: Vec::new(),
                nics: Vec::new(),
                stale: false,
                generation: 0,
            }));
        }
        store.update(&mut |_| Ok(changes.clone())).unwrap();
        let c = store.snapshot().unwrap();
        for name in vms {
            let xml = kvmroll_core::render_domain(&c, name).unwrap();
            hosts
                .host("fake:///a")
                .add_xml(name, &xml, DomainState::Running);
        }
        let connector: &'static FakeHosts = Box::leak(Box::new(hosts.clone()));
        let app = App {
            store,
            sync: Syncer::new(connector, SyncMode::Live, "frontend".into()),
            connector: Arc::new(hosts.clone()) as Arc<dyn Connector + Send>,
        };
        (dir, app)
    }

    fn placed(app: &App<'_>, vm: &str) -> Option<String> {
        app.store
            .snapshot()
            .unwrap()
            .vm(vm)
            .unwrap()
            .container
            .clone()
    }

    #[test]
    fn three_running_vms_with_room_all_leave_and_each_is_said() {
        let hosts = FakeHosts::new();
        let (_dir, mut app) = app(&hosts, 4, &["v1", "v2", "v3"]);
        let mut out = Vec::new();
        assert_eq!(app.evacuate("a", 2, None, &mut out).unwrap(), Exit::Done);
        let said = String::from_utf8(out).unwrap();
        assert_eq!(said.lines().count(), 3, "{said}");
        for vm in ["v1", "v2", "v3"] {
            assert!(
                said.contains(&format!("VM {vm} moved to b (live, ")),
                "{said}"
            );
            assert_eq!(placed(&app, vm).as_deref(), Some("b"));
            assert_eq!(
                hosts.host("fake:///b").state(vm),
                Some(DomainState::Running)
            );
            assert_eq!(hosts.host("fake:///a").state(vm), None);
        }
    }

    #[test]
    fn with_room_for_two_the_third_stays_and_the_exit_says_so() {
        let hosts = FakeHosts::new();
        let (_dir, mut app) = app(&hosts, 2, &["v1", "v2", "v3"]);
        let mut out = Vec::new();
        let err = app.evacuate("a", 2, None, &mut out).unwrap_err();
        assert_eq!(err.to_string(), "1 of 3 running VM(s) did not leave a");
        let said = String::from_utf8(out).unwrap();
        assert_eq!(said.lines().count(), 2, "{said}");
        let stayed: Vec<&str> = ["v1", "v2", "v3"]
            .into_iter()
            .filter(|vm| placed(&app, vm).as_deref() == Some("a"))
            .collect();
        assert_eq!(stayed.len(), 1);
        assert_eq!(
            hosts.host("fake:///a").state(stayed[0]),
            Some(DomainState::Running)
        );
    }

    #[test]
    fn a_source_that_does_not_answer_changes_nothing() {
        let hosts = FakeHosts::new();
        let (_dir, mut app) = app(&hosts, 4, &["v1"]);
        hosts.host("fake:///a").unreachable("fake:///a");
        let mut out = Vec::new();
        let err = app.evacuate("a", 2, None, &mut out).unwrap_err();
        assert!(
            err.to_string().starts_with("container a does not answer: "),
            "{err}"
        );
        assert!(out.is_empty());
        assert_eq!(placed(&app, "v1").as_deref(), Some("a"));
        assert_eq!(
            hosts.host("fake:///a").state("v1"),
            Some(DomainState::Running)
        );
    }
}

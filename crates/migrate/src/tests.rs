//! The checks and the run's database protocol on the fake libvirt: each
//! refusal changes nothing; a failure, a refusal of the destination's hook
//! and a time limit leave the VM where it runs and the database saying so;
//! a migration killed midway is settled by `recover`.

use super::*;
use kvmroll_core::{open_store, Change, Cluster, Host, OpenMode, Scope, Store, Vm};
use kvmroll_virt::fake::{Call, FakeHosts, Fault};
use kvmroll_virt::DomainState;
use std::time::Instant;

const A: &str = "fake:///a";
const B: &str = "fake:///b";

/// Containers a and b (4 CPUs each, reached at fake:///a and fake:///b)
/// and the VMs `vms` on a, pin_auto, 1 vCPU and 128 MiB, running there.
struct World {
    _dir: tempfile::TempDir,
    store: Box<dyn Store>,
    hosts: FakeHosts,
}

fn set(host: &str, name: &str, value: &str) -> Change {
    Change::SetAttr {
        scope: Scope::Host(host.into()),
        name: name.into(),
        value: value.into(),
    }
}

fn world(vms: &[&str]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(&dir.path().join("k.db"), OpenMode::Create).unwrap();
    let mut changes = Vec::new();
    for c in ["a", "b"] {
        let mut host = Host::new(c, "vm-container");
        host.cpus = 4;
        changes.push(Change::AddHost(host));
        changes.push(set(c, "libvirt_uri", &format!("fake:///{c}")));
        changes.push(set(c, "kvm", "true"));
    }
    for (i, name) in vms.iter().enumerate() {
        changes.push(Change::AddVm(Vm {
            id: 0,
            name: name.to_string(),
            container: Some("a".into()),
            memory_mib: 128,
            vcpus: 1,
            uuid: format!("00000000-0000-0000-0000-0000000000{i:02}"),
            cdrom: None,
            virt_type: "kvm".into(),
            disks: Vec::new(),
            nics: Vec::new(),
            stale: false,
            generation: 0,
        }));
        changes.push(set(name, "kvm_cpu_pinning", "pin_auto"));
    }
    store.update(&mut |_| Ok(changes.clone())).unwrap();
    let hosts = FakeHosts::new();
    let c = store.snapshot().unwrap();
    for name in vms {
        let xml = kvmroll_core::render_domain(&c, name).unwrap();
        hosts.host(A).add_xml(name, &xml, DomainState::Running);
    }
    World {
        _dir: dir,
        store,
        hosts,
    }
}

impl World {
    fn change(&mut self, changes: &[Change]) {
        self.store.update(&mut |_| Ok(changes.to_vec())).unwrap();
    }

    /// Runs `f` with a migrator over this world.
    fn with<T>(&mut self, f: impl FnOnce(&Migrator<'_>) -> T) -> T {
        let shared: SharedStore<'_> = std::sync::Mutex::new(self.store.as_mut());
        let m = Migrator::new(&shared, &self.hosts, "frontend");
        f(&m)
    }

    fn snapshot(&self) -> Cluster {
        self.store.snapshot().unwrap()
    }

    fn container(&self, vm: &str) -> Option<String> {
        self.snapshot().vm(vm).unwrap().container.clone()
    }

    fn marked(&self, vm: &str) -> bool {
        migrating_from(&self.snapshot(), vm).is_some()
    }

    fn migrated(&self) -> bool {
        self.hosts
            .host(A)
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Migrate { .. }))
    }
}

fn req(vm: &str, to: &str) -> Request {
    Request {
        vm: vm.into(),
        to: to.into(),
        timeout: None,
    }
}

fn quiet(_: &Progress) {}

/// The container and generation a definition's metadata names.
fn meta(xml: &str) -> (Option<String>, u64) {
    let doc = kvmroll_core::xml::parse_document(xml).unwrap();
    let m = kvmroll_core::metadata::Metadata::find(&doc)
        .unwrap()
        .unwrap();
    (m.container, m.generation)
}

#[test]
fn a_running_vm_moves_with_the_definition_rendered_for_its_destination() {
    let mut w = world(&["m"]);
    // Another pin_auto VM on b takes b's first CPU.
    w.change(&[
        Change::AddVm(Vm {
            container: Some("b".into()),
            name: "on-b".into(),
            uuid: "00000000-0000-0000-0000-0000000000bb".into(),
            ..w.snapshot().vm("m").unwrap().clone()
        }),
        set("on-b", "kvm_cpu_pinning", "pin_auto"),
    ]);
    let moved = w.with(|m| m.migrate(&req("m", "b"), &quiet)).unwrap();
    assert_eq!(moved.to, "b");
    assert!(
        moved.to_string().starts_with("VM m moved to b (live, "),
        "{moved}"
    );
    assert_eq!(w.container("m").as_deref(), Some("b"));
    assert!(!w.marked("m"));
    assert_eq!(
        w.hosts.host(A).state("m"),
        None,
        "the source keeps no definition"
    );
    assert_eq!(w.hosts.host(B).state("m"), Some(DomainState::Running));
    let there = w.hosts.host(B).xml_of("m").unwrap();
    let c = w.snapshot();
    assert_eq!(there, kvmroll_core::render_domain(&c, "m").unwrap());
    assert_eq!(
        meta(&there),
        (Some("b".into()), c.vm("m").unwrap().generation)
    );
    // Pins from b's allocation (pin_auto hands out CPUs oldest VM first,
    // so which ones depends on the VMs' ages).
    assert!(there.contains("<vcpupin vcpu='0'"), "{there}");
}

#[test]
fn each_refusal_is_one_line_and_changes_nothing() {
    let mut w = world(&["m", "dev", "wide"]);
    w.change(&[
        set("dev", "kvm_device_0", "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='1' slot='0' function='0'/></source></hostdev>"),
        set("wide", "kvm_cpu_pinning", "pin_all"),
        Change::AddHost(Host::new("frontend", "frontend")),
    ]);
    let mut roomy = w.snapshot().host("a").unwrap().clone();
    roomy.cpus = 8;
    w.change(&[Change::SetHost(roomy)]);
    let mut big = w.snapshot().vm("wide").unwrap().clone();
    big.vcpus = 3;
    w.change(&[Change::SetVm(big)]);
    let before = w.snapshot();
    let refused = |w: &mut World, vm: &str, to: &str| {
        let e = w.with(|m| m.migrate(&req(vm, to), &quiet)).unwrap_err();
        let line = kvmroll_core::error_chain(&e);
        assert!(!line.contains('\n'), "{line}");
        line
    };
    assert!(refused(&mut w, "m", "a").contains("is on a already"));
    assert!(refused(&mut w, "m", "frontend").contains("not a VM container"));
    assert!(refused(&mut w, "dev", "b").contains("passed-through device (kvm_device_0)"));
    w.hosts.host(B).node(2, 4096);
    let wide = refused(&mut w, "wide", "b");
    assert!(
        wide.contains("has 3 vCPUs but container b has 2 CPUs"),
        "{wide}"
    );
    w.hosts.host(B).node(4, 64);
    let mem = refused(&mut w, "m", "b");
    assert!(
        mem.contains("needs 128 MiB of memory but container b has 64 MiB free"),
        "{mem}"
    );
    w.hosts.host(B).node(4, 4096);
    w.change(&[Change::SetHost(Host {
        cpus: 1,
        ..w.snapshot().host("b").unwrap().clone()
    })]);
    let cpus = refused(&mut w, "wide", "b");
    assert!(
        cpus.contains("needs 3 CPUs but container b has 1"),
        "{cpus}"
    );
    w.change(&[Change::SetHost(Host {
        cpus: 4,
        ..w.snapshot().host("b").unwrap().clone()
    })]);
    w.hosts.host(B).unreachable(B);
    assert!(refused(&mut w, "m", "b").contains("cannot reach container b"));
    assert!(!w.migrated(), "a refusal asks libvirt for no migration");
    let after = w.snapshot();
    for vm in ["m", "dev", "wide"] {
        assert_eq!(after.vm(vm).unwrap(), before.vm(vm).unwrap(), "{vm}");
        assert!(!w.marked(vm));
    }
}

#[test]
fn a_pinning_the_destination_cannot_honour_is_refused() {
    let mut w = world(&["m"]);
    w.change(&[set(
        "m",
        "kvm_cpu_pinning",
        "<cputune><vcpupin vcpu='0' cpuset='3'/></cputune>",
    )]);
    let mut small = w.snapshot().host("b").unwrap().clone();
    small.cpus = 2;
    w.change(&[Change::SetHost(small)]);
    let e = w.with(|m| m.check("m", "b")).unwrap_err();
    let line = kvmroll_core::error_chain(&e);
    assert!(line.starts_with("VM m cannot be placed on b"), "{line}");
    assert!(line.contains("CPU 3"), "{line}");
}

#[test]
fn a_refusal_of_the_destination_hook_leaves_the_vm_on_its_source_and_the_database_saying_so() {
    let mut w = world(&["m"]);
    w.hosts.host(A).fault("m", Fault::MigrateRefused);
    let gen0 = w.snapshot().vm("m").unwrap().generation;
    let e = w.with(|m| m.migrate(&req("m", "b"), &quiet)).unwrap_err();
    assert!(
        matches!(&e, MigrateError::Failed { runs_on, .. } if runs_on == "a"),
        "{e:?}"
    );
    let line = kvmroll_core::error_chain(&e);
    assert!(
        line.contains("runs on a") && line.contains("refused"),
        "{line}"
    );
    assert_eq!(w.container("m").as_deref(), Some("a"));
    assert!(!w.marked("m"));
    assert_eq!(w.hosts.host(A).state("m"), Some(DomainState::Running));
    assert_eq!(w.hosts.host(B).state("m"), None);
    // The source's definition is the database's again, generation included.
    let c = w.snapshot();
    assert!(c.vm("m").unwrap().generation > gen0);
    let here = w.hosts.host(A).xml_of("m").unwrap();
    assert_eq!(here, kvmroll_core::render_domain(&c, "m").unwrap());
    assert_eq!(meta(&here).0.as_deref(), Some("a"));
}

#[test]
fn a_failed_migration_puts_the_database_back() {
    let mut w = world(&["m"]);
    w.hosts.host(A).fault("m", Fault::MigrateFails);
    let e = w.with(|m| m.migrate(&req("m", "b"), &quiet)).unwrap_err();
    assert!(
        matches!(&e, MigrateError::Failed { runs_on, .. } if runs_on == "a"),
        "{e:?}"
    );
    assert_eq!(w.container("m").as_deref(), Some("a"));
    assert!(!w.marked("m"));
}

#[test]
fn a_migration_past_its_time_limit_is_aborted_and_the_vm_stays() {
    let mut w = world(&["m"]);
    w.hosts.host(A).fault("m", Fault::MigrateHangs);
    w.change(&[set("m", TIMEOUT_ATTR, "1")]);
    let seen = std::sync::Mutex::new(Vec::new());
    let note = |p: &Progress| seen.lock().unwrap().push(p.remaining());
    let t = Instant::now();
    let e = w.with(|m| m.migrate(&req("m", "b"), &note)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        matches!(&e, MigrateError::TimedOut { runs_on, .. } if runs_on == "a"),
        "{e:?}"
    );
    assert!(w.hosts.host(A).said().contains(&"abort m".to_string()));
    assert_eq!(w.hosts.host(A).state("m"), Some(DomainState::Running));
    assert_eq!(w.container("m").as_deref(), Some("a"));
    assert!(!w.marked("m"));
    assert!(!seen.lock().unwrap().is_empty(), "progress was told");
}

/// The database as a `kvmroll vm migrate` killed after its first
/// transaction leaves it.
fn killed_midway(w: &mut World, vm: &str) {
    let c = w.snapshot();
    let changes = check::placing(&c, vm, "a", "b").unwrap();
    w.change(&changes);
}

#[test]
fn a_killed_migration_that_completed_is_settled_on_its_destination() {
    let mut w = world(&["m"]);
    killed_midway(&mut w, "m");
    let xml = w.hosts.host(A).xml_of("m").unwrap();
    // libvirt finished the move; a stale definition is left on a.
    w.hosts.host(B).add_xml("m", &xml, DomainState::Running);
    w.hosts.host(A).add_xml("m", &xml, DomainState::ShutOff);
    let s = w.with(|m| m.recover("m")).unwrap().expect("marked");
    assert_eq!(
        (s.on.as_str(), s.running, s.removed_leftover),
        ("b", true, true)
    );
    assert!(s.to_string().contains("it runs on b"), "{s}");
    assert_eq!(w.container("m").as_deref(), Some("b"));
    assert!(!w.marked("m"));
    assert_eq!(w.hosts.host(A).state("m"), None);
    assert!(
        w.with(|m| m.recover("m")).unwrap().is_none(),
        "settled once"
    );
}

#[test]
fn a_killed_migration_that_did_not_complete_is_settled_on_its_source() {
    let mut w = world(&["m"]);
    killed_midway(&mut w, "m");
    let xml = w.hosts.host(A).xml_of("m").unwrap();
    w.hosts.host(B).add_xml("m", &xml, DomainState::ShutOff);
    let s = w.with(|m| m.recover("m")).unwrap().expect("marked");
    assert_eq!(
        (s.on.as_str(), s.running, s.removed_leftover),
        ("a", true, true)
    );
    assert_eq!(w.container("m").as_deref(), Some("a"));
    assert!(!w.marked("m"));
    assert_eq!(w.hosts.host(B).state("m"), None);
    let c = w.snapshot();
    assert_eq!(
        w.hosts.host(A).xml_of("m").unwrap(),
        kvmroll_core::render_domain(&c, "m").unwrap()
    );
}

#[test]
fn a_killed_migration_is_not_settled_while_a_side_that_may_run_it_does_not_answer() {
    let mut w = world(&["m"]);
    killed_midway(&mut w, "m");
    let xml = w.hosts.host(A).xml_of("m").unwrap();
    w.hosts.host(A).add_xml("m", &xml, DomainState::ShutOff);
    w.hosts.host(B).unreachable(B);
    let e = w.with(|m| m.recover("m")).unwrap_err();
    assert!(matches!(e, MigrateError::Undecided { .. }), "{e:?}");
    assert!(w.marked("m"), "the mark stays for the next try");
}

#[test]
fn several_threads_migrate_at_once_through_one_migrator() {
    let mut w = world(&["m1", "m2", "m3"]);
    let hosts = w.hosts.clone();
    let moved = w.with(|m| {
        std::thread::scope(|s| {
            let runs: Vec<_> = ["m1", "m2", "m3"]
                .map(|vm| s.spawn(move || m.migrate(&req(vm, "b"), &quiet)))
                .into_iter()
                .collect();
            runs.into_iter()
                .map(|r| r.join().unwrap())
                .collect::<Vec<_>>()
        })
    });
    for r in &moved {
        assert!(r.is_ok(), "{r:?}");
    }
    for vm in ["m1", "m2", "m3"] {
        assert_eq!(w.container(vm).as_deref(), Some("b"));
        assert_eq!(hosts.host(B).state(vm), Some(DomainState::Running));
    }
}

#[test]
fn a_destination_that_is_this_machine_is_named_to_the_source_by_its_host_name() {
    let mut w = world(&["m"]);
    // b has no libvirt_uri: this machine, called b, reaches it at
    // qemu:///system; a's libvirtd must not take that for itself.
    w.store
        .update(&mut |_| {
            Ok(vec![Change::RemoveAttr {
                scope: Scope::Host("b".into()),
                name: "libvirt_uri".into(),
            }])
        })
        .unwrap();
    let shared: SharedStore<'_> = std::sync::Mutex::new(w.store.as_mut());
    let m = Migrator::new(&shared, &w.hosts, "b");
    let checked = m.check("m", "b").unwrap();
    assert_eq!(checked.to_uri, "qemu:///system");
    assert_eq!(checked.peer_uri, "qemu+ssh://root@b/system");
    m.migrate(&req("m", "b"), &quiet).unwrap();
    let asked: Vec<Call> = w.hosts.host(A).calls();
    assert!(
        asked.contains(&Call::Migrate {
            name: "m".into(),
            to: "qemu+ssh://root@b/system".into()
        }),
        "{asked:?}"
    );
}

#[test]
fn a_native_migration_streams_to_the_destinations_migrate_address() {
    let mut w = world(&["m"]);
    let uri = |w: &mut World| w.with(|m| m.check("m", "b")).unwrap().migrate_uri;
    w.change(&[set("b", ADDRESS_ATTR, "10.0.0.2")]);
    assert_eq!(uri(&mut w), None, "a tunnelled migration has no stream");
    w.change(&[set("m", TRANSPORT_ATTR, "native")]);
    assert_eq!(uri(&mut w).as_deref(), Some("tcp://10.0.0.2"));
    w.change(&[set("b", ADDRESS_ATTR, "fd00::2")]);
    assert_eq!(uri(&mut w).as_deref(), Some("tcp://[fd00::2]"));
    w.change(&[Change::RemoveAttr {
        scope: Scope::Host("b".into()),
        name: ADDRESS_ATTR.into(),
    }]);
    assert_eq!(uri(&mut w), None, "unset: libvirt's default");
}

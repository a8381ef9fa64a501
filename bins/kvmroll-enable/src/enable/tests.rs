//! Every decision of `kvmroll-enable`, on a database in a temporary folder
//! and a fake libvirt (`kvmroll_virt::fake`): what is refused before
//! anything changes, what libvirt is asked, and the database put back when
//! the reinstall command fails.

use super::*;
use kvmroll_core::{Host, Vm};
use kvmroll_virt::fake::FakeLibvirt;
use std::path::PathBuf;

/// A database holding `compute-0-3` (a compute node), `c0` (a VM
/// container) with VM `v` on it, and a reinstall command that writes the
/// host's name to `ran`; a fake libvirt.
struct Fx {
    dir: tempfile::TempDir,
    fake: FakeLibvirt,
}

impl Fx {
    fn new() -> Fx {
        let fx = Fx {
            dir: tempfile::tempdir().unwrap(),
            fake: FakeLibvirt::new(),
        };
        let ran = fx.ran_path();
        fx.change(vec![
            Change::AddHost(Host::new("compute-0-3", "compute")),
            Change::AddHost(Host::new("c0", "vm-container")),
            Change::SetAttr {
                scope: Scope::Host("c0".into()),
                name: "kvm".into(),
                value: "true".into(),
            },
            Change::SetAttr {
                scope: Scope::Global,
                name: "kvm_reinstall_command".into(),
                value: format!("sh -c 'echo {{host}} >> {}'", ran.display()),
            },
        ]);
        fx.change(vec![Change::AddVm(Vm {
            id: 0,
            name: "v".into(),
            container: Some("c0".into()),
            memory_mib: 64,
            vcpus: 1,
            uuid: "6f1c2a4e-0d4b-4f57-9a53-000000000001".into(),
            cdrom: None,
            virt_type: "kvm".into(),
            disks: vec![],
            nics: vec![],
            stale: false,
            generation: 0,
        })]);
        fx
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("k.db")
    }

    fn ran_path(&self) -> PathBuf {
        self.dir.path().join("ran")
    }

    /// The hosts the reinstall command ran for.
    fn ran(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.ran_path()).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }

    fn change(&self, changes: Vec<Change>) {
        let mut store = open_store(&self.db(), OpenMode::Create).unwrap();
        store.update(&mut |_| Ok(changes.clone())).unwrap();
    }

    fn cluster(&self) -> Cluster {
        let store = open_store(&self.db(), OpenMode::ReadOnly).unwrap();
        store.snapshot().unwrap()
    }

    /// A host's own `kvm` attribute and its boot action.
    fn host(&self, host: &str) -> (Option<String>, BootAction) {
        let c = self.cluster();
        let kvm = c.attrs.get(&Scope::Host(host.into()));
        let kvm = kvm.and_then(|m| m.get("kvm")).cloned();
        (kvm, c.host(host).unwrap().boot_action)
    }

    fn run(&self, host: &str, flags: &[&str]) -> Result<(), String> {
        let cli = Cli {
            host: host.into(),
            disable: flags.contains(&"disable"),
            dry_run: flags.contains(&"dry-run"),
            force: flags.contains(&"force"),
            db: kvmroll_cli::args::Db {
                path: Some(self.db()),
            },
            verbose: kvmroll_cli::args::Verbose { verbose: false },
        };
        // The line the user reads, less the `kvmroll-enable: ` before it.
        run(&cli, &self.fake).map_err(|e| error_chain(&e))
    }
}

const RUNNING: kvmroll_virt::DomainState = kvmroll_virt::DomainState::Running;
const OFF: kvmroll_virt::DomainState = kvmroll_virt::DomainState::ShutOff;

#[test]
fn a_node_without_libvirt_is_enabled_without_asking_one() {
    let fx = Fx::new();
    fx.run("compute-0-3", &[]).unwrap();
    assert_eq!(
        fx.host("compute-0-3"),
        (Some("true".into()), BootAction::Install)
    );
    assert_eq!(fx.ran(), ["compute-0-3"]);
    assert!(fx.fake.said().is_empty(), "{:?}", fx.fake.said());
}

#[test]
fn a_node_with_a_libvirt_uri_is_asked_at_that_uri() {
    let fx = Fx::new();
    fx.change(vec![Change::SetAttr {
        scope: Scope::Host("compute-0-3".into()),
        name: "libvirt_uri".into(),
        value: "fake://{host}/system".into(),
    }]);
    fx.fake.add("leftover", OFF);
    fx.run("compute-0-3", &[]).unwrap();
    assert_eq!(
        fx.fake.said(),
        ["connect fake://compute-0-3/system", "list"]
    );
    assert_eq!(fx.ran(), ["compute-0-3"]);
}

#[test]
fn a_container_running_vms_is_refused_unless_forced() {
    let fx = Fx::new();
    fx.fake.add("v", RUNNING).add("w", OFF).add("x", RUNNING);
    let before = fx.host("c0");
    // Re-enabling a container reinstalls it: refused while VMs run.
    let err = fx.run("c0", &[]).unwrap_err();
    assert_eq!(
        err,
        "c0 still runs 2 VM(s) (v, x): stop them first, or reinstall anyway with --force"
    );
    assert_eq!(fx.host("c0"), before);
    assert!(fx.ran().is_empty());

    // Forced: done, with a warning.
    fx.run("c0", &["force"]).unwrap();
    assert_eq!(fx.host("c0"), (Some("true".into()), BootAction::Install));
    assert_eq!(fx.ran(), ["c0"]);
}

#[test]
fn a_container_whose_libvirt_does_not_answer_is_refused_unless_forced() {
    let fx = Fx::new();
    fx.fake.refuse_connects_from(0);
    let err = fx.run("c0", &[]).unwrap_err();
    assert!(
        err.starts_with("cannot ask c0's libvirt (qemu+ssh://root@c0/system) whether VMs run"),
        "{err}"
    );
    assert!(err.ends_with("reinstall anyway with --force"), "{err}");
    assert!(fx.ran().is_empty());
    assert_eq!(fx.host("c0").1, BootAction::Os);
    fx.run("c0", &["force"]).unwrap();
    assert_eq!(fx.ran(), ["c0"]);
}

#[test]
fn disabling_a_container_that_holds_vms_is_refused_before_libvirt_is_asked() {
    let fx = Fx::new();
    let err = fx.run("c0", &["disable", "force"]).unwrap_err();
    assert_eq!(
        err,
        "host \"c0\" still holds 1 VM(s), e.g. \"v\"; move or remove them first"
    );
    assert!(fx.fake.said().is_empty());
    assert!(fx.ran().is_empty());
    assert_eq!(fx.host("c0"), (Some("true".into()), BootAction::Os));
}

#[test]
fn vms_and_unknown_hosts_are_refused() {
    let fx = Fx::new();
    let err = fx.run("v", &[]).unwrap_err();
    assert_eq!(err, "v is a VM; VM containers are physical hosts");
    assert!(fx.run("nosuch", &[]).is_err());
    assert!(fx.fake.said().is_empty() && fx.ran().is_empty());
}

#[test]
fn a_dry_run_asks_libvirt_and_changes_nothing() {
    let fx = Fx::new();
    fx.fake.add("v", RUNNING);
    let before = fx.cluster();
    fx.run("c0", &["dry-run"]).unwrap();
    assert_eq!(
        fx.fake.said(),
        ["connect qemu+ssh://root@c0/system", "list"]
    );
    assert!(fx.ran().is_empty());
    assert_eq!(fx.cluster(), before);
}

#[test]
fn a_failing_reinstall_puts_the_database_back() {
    let fx = Fx::new();
    fx.change(vec![Change::SetAttr {
        scope: Scope::Host("compute-0-3".into()),
        name: "kvm_reinstall_command".into(),
        value: "sh -c 'echo no ipmi >&2; exit 7'".into(),
    }]);
    let err = fx.run("compute-0-3", &[]).unwrap_err();
    assert_eq!(
        err,
        "reinstall command `sh -c 'echo no ipmi >&2; exit 7'` failed (exit status: 7): \
         no ipmi; the database is unchanged"
    );
    // No kvm attribute before, none after; the boot action as it was.
    assert_eq!(fx.host("compute-0-3"), (None, BootAction::Os));
}

#[test]
fn a_reinstall_past_its_limit_is_killed_and_the_database_put_back() {
    let fx = Fx::new();
    fx.change(vec![
        Change::SetAttr {
            scope: Scope::Host("compute-0-3".into()),
            name: "kvm_reinstall_command".into(),
            value: "sleep 30".into(),
        },
        Change::SetAttr {
            scope: Scope::Host("compute-0-3".into()),
            name: "kvm_reinstall_timeout".into(),
            value: "1".into(),
        },
    ]);
    let t = std::time::Instant::now();
    let err = fx.run("compute-0-3", &[]).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(err.contains("ran past 1s and was killed"), "{err}");
    assert_eq!(fx.host("compute-0-3"), (None, BootAction::Os));
}

#[test]
fn host_names_are_substituted_after_splitting() {
    let mut c = Cluster::seeded();
    c.apply(&Change::AddHost(kvmroll_core::Host::new(
        "c-0-0", "compute",
    )))
    .unwrap();
    c.apply(&Change::SetAttr {
        scope: Scope::Global,
        name: "kvm_reinstall_command".into(),
        value: "ipmitool -H '{host}-ipmi' -P \"a b\" chassis power cycle".into(),
    })
    .unwrap();
    assert_eq!(
        reinstall_argv(&c, "c-0-0").unwrap(),
        [
            "ipmitool",
            "-H",
            "c-0-0-ipmi",
            "-P",
            "a b",
            "chassis",
            "power",
            "cycle"
        ]
    );
    c.apply(&Change::SetAttr {
        scope: Scope::Global,
        name: "kvm_reinstall_command".into(),
        value: "echo 'unbalanced".into(),
    })
    .unwrap();
    assert!(reinstall_argv(&c, "c-0-0")
        .unwrap_err()
        .to_string()
        .contains("does not parse"));
    c.apply(&Change::SetAttr {
        scope: Scope::Global,
        name: "kvm_reinstall_command".into(),
        value: "   ".into(),
    })
    .unwrap();
    assert!(reinstall_argv(&c, "c-0-0")
        .unwrap_err()
        .to_string()
        .contains("empty"));
}

//! The fixture every test starts from: a configuration, a database with
//! one VM on this container, a plugin root, and the hook run as libvirtd
//! runs it.

use kvmroll_core::spool::Spool;
use kvmroll_core::sqlite::SqliteStore;
use kvmroll_core::{render_domain, Change, Disk, EventFilter, Host, OpenMode, Scope, Store, Vm};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub const VM: &str = "hosted-vm-0-0-0";
pub const HOST: &str = "vm-container-0-0";

pub struct Fx {
    pub dir: tempfile::TempDir,
}

impl Fx {
    pub fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let fx = Fx { dir };
        std::fs::write(
            fx.conf(),
            format!(
                "db = {}\nroot = {}\nhost = {HOST}\nkvmroll = /bin/false\n",
                fx.db().display(),
                fx.root().display()
            ),
        )
        .unwrap();
        let mut store = SqliteStore::open(&fx.db(), OpenMode::Create).unwrap();
        let mut host = Host::new(HOST, "vm-container");
        host.cpus = 4;
        store
            .update(&mut |_| {
                Ok(vec![
                    Change::AddHost(host.clone()),
                    Change::AddVm(Vm {
                        id: 0,
                        name: VM.into(),
                        container: Some(HOST.into()),
                        memory_mib: 64,
                        vcpus: 1,
                        uuid: "0f5a2b3c-1d2e-4f50-8a6b-7c8d9e0f1a2b".into(),
                        cdrom: None,
                        virt_type: "kvm".into(),
                        disks: vec![],
                        nics: vec![],
                        stale: false,
                        generation: 0,
                    }),
                ])
            })
            .unwrap();
        fx
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("kvmroll.conf")
    }
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("kvmroll.db")
    }
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("etc")
    }
    /// Where the hook finds its journal or syslog socket (`KVMROLL_LOG_ROOT`).
    pub fn log_root(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The VM's rendered domain: what libvirt would pass.
    pub fn xml(&self) -> String {
        let store = SqliteStore::open(&self.db(), OpenMode::ReadOnly).unwrap();
        render_domain(&store.snapshot().unwrap(), VM).unwrap()
    }

    pub fn set_attr(&self, name: &str, value: &str) {
        let mut store = SqliteStore::open(&self.db(), OpenMode::ReadWrite).unwrap();
        store
            .update(&mut |_| {
                Ok(vec![Change::SetAttr {
                    scope: Scope::Host(VM.into()),
                    name: name.into(),
                    value: value.into(),
                }])
            })
            .unwrap();
    }

    /// Gives the VM these disks (`TYPE:PATH,DEV,BUS[,SIZE]`; `{root}` in a
    /// spec is the fixture's disk root, which kvm_disk_roots names).
    pub fn set_disks(&self, specs: &[&str]) {
        std::fs::create_dir_all(self.disk_root()).unwrap();
        self.set_attr("kvm_disk_roots", &self.disk_root().to_string_lossy());
        let disks: Vec<Disk> = specs
            .iter()
            .map(|s| {
                let spec = s.replace("{root}", &self.disk_root().to_string_lossy());
                Disk::parse(&spec).unwrap()
            })
            .collect();
        let mut store = SqliteStore::open(&self.db(), OpenMode::ReadWrite).unwrap();
        store
            .update(&mut |c| {
                let mut vm = c.vm(VM)?.clone();
                vm.disks = disks.clone();
                Ok(vec![Change::SetVm(vm)])
            })
            .unwrap();
    }

    /// The folder kvm_disk_roots names once the VM has disks.
    pub fn disk_root(&self) -> PathBuf {
        self.dir.path().join("disks")
    }

    /// Writes a plugin script; `folder` is `plugins/STAGE.d` or `vms/VM/STAGE.d`.
    pub fn plugin(&self, folder: &str, name: &str, body: &str) -> PathBuf {
        let dir = self.root().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = dir.as_path();
        while d != self.dir.path() {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
            d = d.parent().unwrap();
        }
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    pub fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn hook(&self, vm: &str, op: &str, subop: &str, xml: &str) -> Output {
        self.spawn_hook(vm, op, subop, xml)
            .wait_with_output()
            .unwrap()
    }

    /// The hook, started with the XML on its stdin (closed), not waited for.
    pub fn spawn_hook(&self, vm: &str, op: &str, subop: &str, xml: &str) -> std::process::Child {
        self.spawn_hook_with(vm, op, subop, xml, &[])
    }

    /// [`Fx::spawn_hook`], with `env` added to its environment.
    pub fn spawn_hook_with(
        &self,
        vm: &str,
        op: &str,
        subop: &str,
        xml: &str,
        env: &[(&str, &str)],
    ) -> std::process::Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvmroll-hook"))
            .args([vm, op, subop, "-"])
            .env_clear()
            .env("LC_ALL", "C")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("KVMROLL_CONF", self.conf())
            // Its log sockets under the test's folder, never the machine's.
            .env("KVMROLL_LOG_ROOT", self.log_root())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(xml.as_bytes())
            .unwrap();
        child
    }

    /// Takes the database away (file, WAL and all) for a frontend outage;
    /// the returned copy brings it back.
    pub fn take_db_away(&self) -> PathBuf {
        let kept = self.dir.path().join("kept.db");
        SqliteStore::open(&self.db(), OpenMode::ReadWrite).unwrap();
        std::fs::copy(self.db(), &kept).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.db().display()));
        }
        kept
    }

    pub fn bring_db_back(&self, kept: &std::path::Path) {
        std::fs::copy(kept, self.db()).unwrap();
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// The VM's events in the database, once the spool is forwarded: by
    /// the upkeep a hook started, or here (as `kvmroll events` does).
    pub fn events(&self, vm: &str) -> Vec<kvmroll_core::Event> {
        forward(&self.spool(), &self.db());
        SqliteStore::open(&self.db(), OpenMode::ReadOnly)
            .unwrap()
            .events(&EventFilter {
                vm: Some(vm.into()),
                ..EventFilter::default()
            })
            .unwrap()
    }
}

/// The definition as a kvmroll before metadata wrote it.
pub fn strip_metadata(xml: &str) -> String {
    match (xml.find("  <metadata>"), xml.find("</metadata>\n")) {
        (Some(a), Some(b)) => format!("{}{}", &xml[..a], &xml[b + "</metadata>\n".len()..]),
        _ => xml.to_string(),
    }
}

/// Forwards the spool to the database, or waits while an upkeep does, as
/// `kvmroll events` does.
pub fn forward(dir: &std::path::Path, db: &std::path::Path) {
    let done = Spool::new(dir, HOST)
        .forward_now(std::time::Duration::from_secs(10), &mut || {
            kvmroll_core::open_store(db, OpenMode::ReadWrite)
        })
        .unwrap();
    assert!(!done.busy, "the spool's upkeep never let go");
    assert_eq!(done.waiting, None, "the database refused the spool");
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub const STRANGER: &str = "<domain type='kvm'><name>stranger</name></domain>";

//! The small clusters the golden tests render, in a fresh SQLite file, and
//! the real `kvmroll-gen` run on them.

use kvmroll_core::model::NicKind;
use kvmroll_core::sqlite::SqliteStore;
use kvmroll_core::{Change, Disk, Host, Mac, Nic, OpenMode, Scope, Store, Vm};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The container every VM of these clusters is placed on.
pub const CONTAINER: &str = "vm-container-0-0";

/// VM `name`, the `n`th: a qcow2 disk and a bridged NIC, its UUID and MAC
/// from `n`.
pub fn vm(name: &str, n: u32) -> Vm {
    Vm {
        id: 0,
        name: name.into(),
        container: Some(CONTAINER.into()),
        memory_mib: 2048,
        vcpus: 2,
        uuid: format!("6f1c2a4e-0d4b-4f57-9a53-{n:012}"),
        cdrom: None,
        virt_type: "kvm".into(),
        disks: vec![Disk::parse(&format!("qcow2:/state/kvm/{name}.qcow2,vda,virtio,36")).unwrap()],
        nics: vec![Nic {
            kind: NicKind::Bridge,
            source: "br0".into(),
            mac: Mac::parse(&format!("52:54:00:00:00:{n:02x}")).unwrap(),
            vlan: None,
            model: "virtio".into(),
        }],
        stale: false,
        generation: 0,
    }
}

/// Sets attribute `name` of host `host`.
pub fn attr(host: &str, name: &str, value: &str) -> Change {
    Change::SetAttr {
        scope: Scope::Host(host.into()),
        name: name.into(),
        value: value.into(),
    }
}

/// A database holding the container (8 CPUs) and `changes`.
pub fn build_db(dir: &Path, changes: &[Change]) -> PathBuf {
    let path = dir.join("kvmroll.db");
    let mut store = SqliteStore::open(&path, OpenMode::Create).unwrap();
    let mut host = Host::new(CONTAINER, "vm-container");
    host.cpus = 8;
    let mut all = vec![Change::AddHost(host)];
    all.extend(changes.iter().cloned());
    store.update(&mut |_| Ok(all.clone())).unwrap();
    path
}

/// Runs `kvmroll-gen --db DB ARGS`.
pub fn gen(db: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvmroll-gen"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

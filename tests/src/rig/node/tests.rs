//! Unit tests of [`super`] (node), kept beside it so the module reads
//! on its own.

use super::*;

fn files() -> NodeFiles {
    NodeFiles {
        name: "node-a".into(),
        fs: "/tmp/kvmroll-rig-node-a-1-0/fs".into(),
        binds: vec![("/tmp/pg/sock".into(), NODE_PG_SOCKET.into())],
    }
}

#[test]
fn a_private_path_maps_to_the_deepest_mount_holding_it() {
    let f = files();
    assert_eq!(
        f.outside("/etc/kvmroll/kvmroll.conf"),
        Path::new("/tmp/kvmroll-rig-node-a-1-0/fs/etc/kvmroll/kvmroll.conf")
    );
    assert_eq!(
        f.outside("/run/libvirt/libvirt-sock"),
        Path::new("/tmp/kvmroll-rig-node-a-1-0/fs/run/libvirt/libvirt-sock")
    );
    assert_eq!(
        f.outside("/run/postgresql/.s.PGSQL.5"),
        Path::new("/tmp/pg/sock/.s.PGSQL.5")
    );
    assert_eq!(
        f.libvirt_uri(),
        "qemu+unix:///system?socket=/tmp/kvmroll-rig-node-a-1-0/fs/run/libvirt/libvirt-sock"
    );
}

#[test]
fn a_shared_path_has_no_private_place() {
    let f = files();
    assert_eq!(f.try_outside(Path::new("/usr/bin")), None);
    // A sibling whose name only begins like a private folder.
    assert_eq!(f.try_outside(Path::new("/etc/kvmroll2/x")), None);
    let caught = std::panic::catch_unwind(|| f.outside("/tmp/x"));
    assert!(caught.is_err());
}

#[test]
fn paths_inside_a_node_are_absolute_without_parent_steps() {
    assert!(checked_inside("/state/partition1/kvm/disks").is_ok());
    for bad in ["state/disks", "/", "/var/lib/../etc"] {
        assert!(checked_inside(bad).is_err(), "{bad}");
    }
}

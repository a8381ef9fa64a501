//! Unit tests of [`super`] (hostfiles), kept beside it so the module reads
//! on its own.

use super::*;
use crate::cluster::tests::{small_cluster, vm};
use crate::cluster::Change;
use crate::model::Scope;

fn hostdev(bus: &str) -> String {
    format!("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='{bus}' slot='0x00' function='0x1'/></source></hostdev>")
}

fn set(c: &mut Cluster, host: &str, name: &str, value: &str) {
    c.apply(&Change::SetAttr {
        scope: Scope::Host(host.into()),
        name: name.into(),
        value: value.into(),
    })
    .unwrap();
}

#[test]
fn finds_pci_devices_and_refuses_duplicates() {
    let mut c = small_cluster();
    c.apply(&Change::AddVm(vm("a", "vm-container-0-0", 1)))
        .unwrap();
    c.apply(&Change::AddVm(vm("b", "vm-container-0-0", 1)))
        .unwrap();
    set(&mut c, "a", "kvm_device_0", &hostdev("0x03"));
    set(&mut c, "a", "kvm_device_1", "<watchdog model='i6300esb'/>");
    set(&mut c, "b", "kvm_device_0", &hostdev("0x81"));
    let d = pci_devices(&c, "vm-container-0-0").unwrap();
    assert_eq!(
        d.iter().map(|d| d.address.as_str()).collect::<Vec<_>>(),
        ["0000:03:00.1", "0000:81:00.1"]
    );
    let rules = udev_rules(&c, "vm-container-0-0").unwrap();
    assert!(rules.contains("KERNEL==\"0000:81:00.1\", ATTR{driver_override}=\"vfio-pci\""));
    set(&mut c, "b", "kvm_device_0", &hostdev("0x3"));
    let e = pci_devices(&c, "vm-container-0-0").unwrap_err();
    assert!(
        matches!(e, HostFileError::DuplicatePci { ref address, .. } if address == "0000:03:00.1"),
        "{e}"
    );
    set(
        &mut c,
        "b",
        "kvm_device_0",
        "<hostdev mode='subsystem' type='pci'><source/></hostdev>",
    );
    assert!(matches!(
        pci_devices(&c, "vm-container-0-0"),
        Err(HostFileError::NoAddress { .. })
    ));
    assert!(matches!(
        pci_devices(&c, "nosuch"),
        Err(HostFileError::UnknownHost(_))
    ));
}

/// The kickstart unpacked a tarball into / with plain `tar -xzf`, which
/// replaced a merged-/usr host's /lib link by a folder: it now lists
/// the kvmroll package, and a tarball fallback keeps links and modes.
#[test]
fn kickstart_installs_the_package_or_unpacks_a_tarball_safely() {
    let c = small_cluster();
    let mut o = KickstartOptions::for_host(&c, "vm-container-0-0").unwrap();
    assert_eq!(o.dist_url, None);
    let x = kickstart(&c, "vm-container-0-0", &o).unwrap();
    assert!(x.contains("  <package>kvmroll</package>\n"), "{x}");
    assert!(!x.contains("curl") && !x.contains("tar "), "{x}");
    assert!(!x.contains("kvmroll = "), "{x}");
    o.dist_url = Some("http://frontend-0/kvmroll.tar.gz".into());
    let x = kickstart(&c, "vm-container-0-0", &o).unwrap();
    assert!(!x.contains("<package>kvmroll</package>"), "{x}");
    assert!(
        x.contains("| tar -C / --keep-directory-symlink --no-overwrite-dir -xzf -\n"),
        "{x}"
    );
    assert!(x.contains("systemctl enable kvmroll-guests.service"), "{x}");
}

#[test]
fn kickstart_text_round_trips_through_xml() {
    let mut c = small_cluster();
    let nasty = "a<b>&c\"d'e\n</post><x>";
    set(&mut c, "vm-container-0-0", "note", nasty);
    let o = KickstartOptions {
        dist_url: Some("http://frontend/kvmroll.tar.gz".into()),
        db: "/var/lib/kvmroll/kvmroll.db".into(),
        credential: None,
    };
    let x = kickstart(&c, "vm-container-0-0", &o).unwrap();
    let doc = crate::xml::parse_document(&x).unwrap();
    let post = &doc.child("post").unwrap().text;
    assert!(
        post.contains(&format!("<<'{HEREDOC_END}'\n{nasty}\n{HEREDOC_END}\n")),
        "{post}"
    );
    let none = kickstart(&c, "compute-0-0", &o).unwrap();
    let doc = crate::xml::parse_document(&none).unwrap();
    assert!(doc.child("post").is_none() && doc.child("package").is_none());
    set(&mut c, "vm-container-0-0", "evil", HEREDOC_END);
    assert!(matches!(
        kickstart(&c, "vm-container-0-0", &o),
        Err(HostFileError::Marker { .. })
    ));
}

#[test]
fn a_cluster_url_reaches_the_container_and_its_password_only_where_allowed() {
    let mut c = small_cluster();
    let global = |c: &mut Cluster, name: &str, value: &str| {
        c.attrs
            .entry(crate::model::Scope::Global)
            .or_default()
            .insert(name.into(), value.into());
    };
    global(
        &mut c,
        "kvmroll_db_url",
        "postgresql://kvmroll_container@frontend-0/kvmroll",
    );
    let mut o = KickstartOptions::for_host(&c, "vm-container-0-0").unwrap();
    assert_eq!(o.credential_source(&c, "vm-container-0-0"), None);
    let x = kickstart(&c, "vm-container-0-0", &o).unwrap();
    let post = crate::xml::parse_document(&x)
        .unwrap()
        .child("post")
        .unwrap()
        .text
        .clone();
    assert!(post.contains("db = postgresql://kvmroll_container@frontend-0/kvmroll\npassfile = /etc/kvmroll/db.pgpass\n"), "{post}");
    assert!(post.contains("No database credential here"), "{post}");

    global(&mut c, "kvmroll_db_credential_in_kickstart", "true");
    assert_eq!(
        o.credential_source(&c, "vm-container-0-0").as_deref(),
        Some(CONTAINER_PASSFILE)
    );
    o.credential = Some("frontend-0:5432:kvmroll:kvmroll_container:s3cret\n".into());
    let x = kickstart(&c, "vm-container-0-0", &o).unwrap();
    let post = crate::xml::parse_document(&x)
        .unwrap()
        .child("post")
        .unwrap()
        .text
        .clone();
    assert!(
        post.contains("(umask 077\ncat > '/etc/kvmroll/db.pgpass'"),
        "{post}"
    );
    assert!(post.contains(":s3cret\n"), "{post}");

    for bad in [
        "postgresql://kvmroll_container:s3cret@frontend-0/kvmroll",
        "postgres://frontend-0/kvmroll?user=k&password=s3cret",
    ] {
        global(&mut c, "kvmroll_db_url", bad);
        assert_eq!(
            KickstartOptions::for_host(&c, "vm-container-0-0").unwrap_err(),
            HostFileError::PasswordInUrl,
            "{bad}"
        );
    }
    // A SQLite path is written as it was, with no credential line.
    global(&mut c, "kvmroll_db_url", "/var/lib/kvmroll/kvmroll.db");
    let o = KickstartOptions::for_host(&c, "vm-container-0-0").unwrap();
    let x = kickstart(&c, "vm-container-0-0", &o).unwrap();
    assert!(!x.contains("passfile =") && !x.contains("db.pgpass"), "{x}");
}

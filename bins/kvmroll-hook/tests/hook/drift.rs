//! Drift between libvirt's definition and what kvmroll decided, from the
//! database and from the metadata's facts, and a stale definition.

use crate::fixture::*;

#[test]
fn drift_is_logged_or_refused_when_strict() {
    let fx = Fx::new();
    // A VM defined before kvmroll wrote metadata: compared with the
    // database's rendering, as before.
    let drifted = |fx: &Fx| {
        strip_metadata(&fx.xml()).replace(
            "<memory unit='KiB'>65536</memory>",
            "<memory unit='KiB'>131072</memory>",
        )
    };
    let out = fx.hook(VM, "start", "begin", &drifted(&fx));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let drift: Vec<_> = fx
        .events(VM)
        .into_iter()
        .filter(|e| e.outcome.as_str() == "drift")
        .collect();
    assert_eq!(drift.len(), 1);
    assert!(drift[0].message.contains("memory"), "{}", drift[0].message);
    fx.set_attr("kvm_strict_definition", "true");
    let out = fx.hook(VM, "start", "begin", &drifted(&fx));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("differs from the kvmroll database"),
        "{}",
        stderr(&out)
    );
    // What libvirt adds (ids, aliases, addresses) is no drift.
    for xml in [fx.xml(), strip_metadata(&fx.xml())] {
        let decorated = xml
            .replace("<domain type='kvm'>", "<domain type='kvm' id='7'>")
            .replace(
                "</devices>",
                "<controller type='usb' index='0'><alias name='usb'/></controller></devices>",
            );
        let out = fx.hook(VM, "start", "begin", &decorated);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
}

/// `virsh edit` of the vCPUs while the database is gone: caught at the
/// next start from the metadata's facts, named, and refused where strict;
/// so is an edit of the facts themselves, to hide one.
#[test]
fn drift_is_caught_from_the_metadata_without_the_database() {
    let fx = Fx::new();
    let edited = |xml: &str| {
        xml.replace(
            "<vcpu placement='static'>1</vcpu>",
            "<vcpu placement='static'>2</vcpu>",
        )
    };
    let lenient = fx.xml();
    fx.set_attr("kvm_strict_definition", "true");
    let strict = fx.xml();
    let kept = fx.take_db_away();
    let out = fx.hook(VM, "start", "begin", &edited(&lenient));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = fx.hook(VM, "start", "begin", &edited(&strict));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("vcpus: 1 is now 2"), "{err}");
    let hidden = edited(&strict).replace(
        "<kvmroll:fact>vcpus: 1</kvmroll:fact>",
        "<kvmroll:fact>vcpus: 2</kvmroll:fact>",
    );
    let out = fx.hook(VM, "start", "begin", &hidden);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("metadata was edited"),
        "{}",
        stderr(&out)
    );
    // Unedited, it starts.
    let out = fx.hook(VM, "start", "begin", &strict);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!fx.db().exists());
    fx.bring_db_back(&kept);
    let drift: Vec<String> = fx
        .events(VM)
        .into_iter()
        .filter(|e| e.outcome.as_str() == "drift")
        .map(|e| e.message)
        .collect();
    assert_eq!(drift.len(), 3, "{drift:?}");
    assert!(drift[0].contains("vcpus: 1 is now 2"), "{drift:?}");
}

/// Where the database is open anyway (allocate with plugins), a definition
/// older than the database's rows is said to be stale.
#[test]
fn a_definition_older_than_the_database_is_reported_stale() {
    let fx = Fx::new();
    fx.plugin(&format!("vms/{VM}/allocate.d"), "10-ok", "true");
    let old = fx.xml();
    fx.set_attr("kvm_autostart", "true");
    let out = fx.hook(VM, "prepare", "begin", &old);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stale: Vec<String> = fx
        .events(VM)
        .into_iter()
        .filter(|e| e.outcome.as_str() == "stale")
        .map(|e| e.message)
        .collect();
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert!(
        stale[0].contains("generation 1 of") && stale[0].contains("the database's is 2"),
        "{stale:?}"
    );
}

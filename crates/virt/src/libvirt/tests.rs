//! Against libvirt's `test:///default` driver. Its state lives in this
//! process and is shared by every connection open at the same time; it is
//! fresh again only once all of them are closed. Tests run in parallel, so
//! each test works on domains named after itself and never counts domains.

use super::*;

const URI: &str = "test:///default";

fn connect() -> Box<dyn Hypervisor> {
    Libvirt.connect(URI).expect("test:///default opens")
}

fn domain_xml(name: &str, uuid: Option<&str>, memory_mib: u32) -> String {
    let uuid = uuid
        .map(|u| format!("<uuid>{u}</uuid>"))
        .unwrap_or_default();
    format!(
        "<domain type='test'><name>{name}</name>{uuid}\
         <memory unit='MiB'>{memory_mib}</memory><os><type>hvm</type></os></domain>"
    )
}

/// Defines `name` on `hv` and returns its info.
fn define(hv: &dyn Hypervisor, name: &str) -> DomainInfo {
    hv.define(&domain_xml(name, None, 64)).unwrap();
    hv.domain(name).unwrap().expect("just defined")
}

fn state(hv: &dyn Hypervisor, name: &str) -> DomainState {
    hv.domain(name).unwrap().expect("defined").state
}

#[test]
fn define_look_up_list_dump_and_undefine() {
    let hv = connect();
    let info = define(&*hv, "define-look-up");
    assert_eq!(info.name, "define-look-up");
    assert_eq!(info.state, DomainState::ShutOff);
    assert!(!info.has_managed_save);

    let listed = hv.list_domains().unwrap();
    assert!(listed.iter().any(|d| d.name == info.name));

    let live = hv.xml("define-look-up", false).unwrap();
    assert!(live.contains("<name>define-look-up</name>"), "{live}");
    let inactive = hv.xml("define-look-up", true).unwrap();
    assert!(inactive.contains("<name>define-look-up</name>"));

    hv.undefine("define-look-up").unwrap();
    assert!(hv.domain("define-look-up").unwrap().is_none());
    let listed = hv.list_domains().unwrap();
    assert!(!listed.iter().any(|d| d.name == "define-look-up"));
}

#[test]
fn define_replaces_only_with_the_same_uuid() {
    let hv = connect();
    let uuid = "6c4cf1a6-1b59-4c55-9d59-2d4f4bb2a001";
    hv.define(&domain_xml("redefine", Some(uuid), 64)).unwrap();
    hv.define(&domain_xml("redefine", Some(uuid), 128)).unwrap();
    assert!(hv.xml("redefine", true).unwrap().contains("131072"));

    let err = hv.define(&domain_xml("redefine", None, 64)).unwrap_err();
    assert!(matches!(err, VirtError::Define { ref uri, .. } if uri == URI));
    assert_eq!(err.to_string(), "cannot define a domain on test:///default");
    hv.undefine("redefine").unwrap();
}

#[test]
fn unknown_domain_is_none_but_acting_on_it_fails() {
    let hv = connect();
    assert!(hv.domain("no-such-domain").unwrap().is_none());
    let err = hv.start("no-such-domain").unwrap_err();
    assert!(matches!(err, VirtError::Lookup { .. }), "{err:?}");
    assert!(err.is_no_domain());
    assert!(hv.undefine("no-such-domain").unwrap_err().is_no_domain());
    // A NUL in the name is an error, not a panic.
    assert!(hv.domain("bad\0name").is_err());
}

#[test]
fn start_shutdown_and_destroy() {
    let hv = connect();
    define(&*hv, "lifecycle");
    hv.start("lifecycle").unwrap();
    assert_eq!(state(&*hv, "lifecycle"), DomainState::Running);
    assert!(matches!(
        hv.start("lifecycle"),
        Err(VirtError::Start { .. })
    ));
    hv.destroy("lifecycle").unwrap();
    assert_eq!(state(&*hv, "lifecycle"), DomainState::ShutOff);
    assert!(matches!(
        hv.destroy("lifecycle"),
        Err(VirtError::Destroy { .. })
    ));

    // The test driver's guests obey ACPI at once.
    hv.start("lifecycle").unwrap();
    hv.shutdown("lifecycle").unwrap();
    assert_eq!(state(&*hv, "lifecycle"), DomainState::ShutOff);
    assert!(matches!(
        hv.shutdown("lifecycle"),
        Err(VirtError::Shutdown { .. })
    ));
    hv.undefine("lifecycle").unwrap();
}

#[test]
fn start_restores_a_managed_save() {
    let hv = connect();
    define(&*hv, "save-restore");
    assert!(matches!(
        hv.managed_save("save-restore"),
        Err(VirtError::ManagedSave { .. })
    ));
    hv.start("save-restore").unwrap();
    hv.managed_save("save-restore").unwrap();
    let info = hv.domain("save-restore").unwrap().unwrap();
    assert_eq!(info.state, DomainState::ShutOff);
    assert!(info.has_managed_save);

    hv.start("save-restore").unwrap();
    let info = hv.domain("save-restore").unwrap().unwrap();
    assert_eq!(info.state, DomainState::Running);
    assert!(!info.has_managed_save);
    hv.destroy("save-restore").unwrap();
    hv.undefine("save-restore").unwrap();
}

#[test]
fn managed_save_remove_discards_the_image() {
    let hv = connect();
    define(&*hv, "save-remove");
    hv.managed_save_remove("save-remove").unwrap();
    hv.start("save-remove").unwrap();
    hv.managed_save_bypass_cache("save-remove").unwrap();
    let saved = hv.domain("save-remove").unwrap().unwrap();
    assert!(saved.has_managed_save && saved.state == DomainState::ShutOff);
    hv.managed_save_remove("save-remove").unwrap();
    assert!(!hv.domain("save-remove").unwrap().unwrap().has_managed_save);
    hv.undefine("save-remove").unwrap();
}

#[test]
fn start_force_boot_discards_the_image() {
    let hv = connect();
    define(&*hv, "force-boot");
    hv.start_force_boot("force-boot").unwrap();
    hv.managed_save("force-boot").unwrap();
    hv.start_force_boot("force-boot").unwrap();
    let info = hv.domain("force-boot").unwrap().unwrap();
    assert_eq!(info.state, DomainState::Running);
    assert!(!info.has_managed_save);
    hv.destroy("force-boot").unwrap();
    hv.undefine("force-boot").unwrap();
}

#[test]
fn undefine_removes_the_managed_save() {
    let hv = connect();
    define(&*hv, "undefine-saved");
    hv.start("undefine-saved").unwrap();
    hv.managed_save("undefine-saved").unwrap();
    hv.undefine("undefine-saved").unwrap();
    assert!(hv.domain("undefine-saved").unwrap().is_none());
}

#[test]
fn undefine_of_a_running_domain_leaves_it_transient() {
    let hv = connect();
    define(&*hv, "undefine-running");
    hv.start("undefine-running").unwrap();
    hv.undefine("undefine-running").unwrap();
    let info = hv.domain("undefine-running").unwrap().unwrap();
    assert_eq!(info.state, DomainState::Running);
    // Transient now: it is gone once it stops.
    hv.destroy("undefine-running").unwrap();
    assert!(hv.domain("undefine-running").unwrap().is_none());
}

#[test]
fn open_connections_share_the_test_driver_state() {
    let first = connect();
    let second = connect();
    define(&*first, "shared");
    assert!(second.domain("shared").unwrap().is_some());
    second.undefine("shared").unwrap();
    assert!(first.domain("shared").unwrap().is_none());
}

#[test]
fn a_connection_moves_to_another_thread() {
    let hv = connect();
    let found = std::thread::spawn(move || hv.domain("test").map(|d| d.is_some()))
        .join()
        .unwrap();
    assert!(found.unwrap());
}

#[test]
fn images_are_deleted_through_a_pool_and_a_missing_one_is_no_error() {
    let hv = connect();
    // The test driver's own pool, /default-pool, holds a volume.
    let conn = Connect::open(Some(URI)).unwrap();
    let pool = conn.lookup_storage_pool_by_name("default-pool").unwrap();
    virt::storage_vol::StorageVol::create_xml(
        &pool,
        "<volume><name>kvmroll-delete.img</name><capacity>1024</capacity></volume>",
        0,
    )
    .unwrap();
    assert!(hv.delete_image("/default-pool/kvmroll-delete.img").unwrap());
    assert!(pool
        .lookup_storage_vol_by_name("kvmroll-delete.img")
        .is_err());
    // No pool knows this one: a transient pool looks, finds nothing,
    // and goes.
    assert!(!hv.delete_image("/kvmroll-no-such-folder/x.img").unwrap());
    let pools = conn.list_all_storage_pools(0).unwrap();
    let names: Vec<String> = pools.iter().map(|p| p.name().unwrap()).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("kvmroll-delete")),
        "{names:?}"
    );
}

#[test]
fn growing_a_disk_names_the_domain_and_disk_when_it_fails() {
    let hv = connect();
    define(&*hv, "grow-disk");
    let err = hv.grow_disk("grow-disk", "vdz", 1 << 30).unwrap_err();
    assert!(matches!(err, VirtError::GrowDisk { .. }), "{err:?}");
    assert_eq!(err.to_string(), "cannot grow disk vdz of domain grow-disk");
    assert!(hv
        .grow_disk("no-such-domain", "vda", 1)
        .unwrap_err()
        .is_no_domain());
    hv.undefine("grow-disk").unwrap();
}

/// The test driver has no `virDomainUpdateDeviceFlags`; the change itself
/// is tested end to end (tests/e2e/daily.rs). Its failure names the domain.
#[test]
fn a_medium_change_the_driver_lacks_fails_naming_the_domain() {
    let hv = connect();
    define(&*hv, "change-media");
    hv.start("change-media").unwrap();
    let drive = "<disk type='file' device='cdrom'><source file='/b.iso'/>\
                 <target dev='hdc' bus='ide'/><readonly/></disk>";
    let err = hv.change_media("change-media", drive).unwrap_err();
    assert!(matches!(err, VirtError::ChangeMedia { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot change the medium of domain change-media while it runs"
    );
    hv.destroy("change-media").unwrap();
    hv.undefine("change-media").unwrap();
}

#[test]
fn a_hook_s_words_are_taken_from_libvirt_s_message() {
    // As libvirt 9.0 reported a kvmroll-hook refusal here.
    let msg = "Hook script execution failed: internal error: Child process \
               (LC_ALL=C PATH=/usr/bin /etc/libvirt/hooks/qemu vm-a prepare begin -) \
               unexpected exit status 1: kvmroll-hook: VM vm-a: allocate plugin deny refused: no room\n";
    assert_eq!(
        hook_words(msg),
        "kvmroll-hook: VM vm-a: allocate plugin deny refused: no room"
    );
    assert_eq!(hook_words("first\n\n  second \n"), "first; second");
}

#[test]
fn bogus_uri_fails_naming_the_uri() {
    let err = Libvirt.connect("bogus:///nowhere").err().unwrap();
    assert!(matches!(err, VirtError::Connect { .. }), "{err:?}");
    assert_eq!(err.to_string(), "cannot connect to bogus:///nowhere");
    let err = Libvirt.connect("test:///default\0").err().unwrap();
    assert!(matches!(err, VirtError::Connect { .. }), "{err:?}");
}

#[test]
fn states_map_to_kvmroll_states() {
    assert_eq!(
        domain_state(Enum::Known(VirDomainState::Paused)),
        DomainState::Paused
    );
    assert_eq!(
        domain_state(Enum::Known(VirDomainState::Crashed)),
        DomainState::Other("crashed".into())
    );
    assert_eq!(
        domain_state(Enum::Unknown(99)),
        DomainState::Other("unknown 99".into())
    );
}

#[test]
fn node_resources_are_read_and_a_migration_the_driver_lacks_is_named() {
    let hv = connect();
    let node = hv.node().unwrap();
    assert!(node.cpus > 0, "{node:?}");
    assert!(node.free_memory > 0, "{node:?}");
    define(&*hv, "migrate-unsupported");
    hv.start("migrate-unsupported").unwrap();
    let to = MigrateTo {
        uri: "test:///default".into(),
        live: true,
        transport: Transport::Tunnelled,
        migrate_uri: None,
        xml: domain_xml("migrate-unsupported", None, 64),
    };
    let err = hv.migrate("migrate-unsupported", &to).unwrap_err();
    assert!(
        matches!(&err, VirtError::Migrate { name, .. } if name == "migrate-unsupported"),
        "{err:?}"
    );
    assert_eq!(state(&*hv, "migrate-unsupported"), DomainState::Running);
    hv.destroy("migrate-unsupported").unwrap();
    hv.undefine("migrate-unsupported").unwrap();
}

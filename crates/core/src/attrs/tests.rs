//! Unit tests of [`super`] (attrs), kept beside it so the module reads
//! on its own.

use super::*;

#[test]
fn cpu_modes() {
    let m = CpuMode::parse("host-model").unwrap();
    assert_eq!(
        (m.mode.as_str(), m.exact, m.inner),
        ("host-model", false, None)
    );
    let m = CpuMode::parse("exact: <model>Haswell</model>").unwrap();
    assert_eq!(m.mode, "custom");
    assert!(m.exact);
    assert_eq!(m.inner.as_deref(), Some("<model>Haswell</model>"));
    let m = CpuMode::parse("host-passthrough:<feature policy='disable' name='vmx'/>").unwrap();
    assert_eq!(m.mode, "host-passthrough");
    for bad in [
        "passthrough",
        "",
        "custom",
        "exact",
        "custom: <model>x</model></cpu><devices>",
        "custom: <model>",
        "host-model: &",
    ] {
        assert!(CpuMode::parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn pinning() {
    assert_eq!(Pinning::parse("pin_all").unwrap(), Pinning::All);
    assert_eq!(Pinning::parse(" pin_auto ").unwrap(), Pinning::Auto);
    let Pinning::Fragment { sets, .. } =
        Pinning::parse("<cputune><vcpupin vcpu='0' cpuset='2-3'/></cputune>").unwrap()
    else {
        panic!("not a fragment")
    };
    assert_eq!(sets.vcpupins, vec![(0, [2, 3].into())]);
    assert!(Pinning::parse("pin_some").is_err());
    assert!(normalize(
        "kvm_cpu_pinning",
        "<cputune><vcpupin vcpu='x' cpuset='1'/></cputune>"
    )
    .is_err());
    assert!(normalize(
        "kvm_cpu_pinning",
        "<cputune><vcpupin vcpu='0' cpuset='a'/></cputune>"
    )
    .is_err());
}

fn sets(fragment: &str) -> Result<PinSets, String> {
    match Pinning::parse(fragment) {
        Ok(Pinning::Fragment { sets, .. }) => Ok(sets),
        Ok(p) => panic!("{p:?}"),
        Err(e) => Err(e.to_string()),
    }
}

/// Regression: only `<vcpupin>` was read, so a bad emulatorpin reached
/// libvirt and a `<name>` rendered a second name.
#[test]
fn every_set_of_a_pinning_fragment_is_parsed() {
    let s = sets(
        "<cputune><vcpupin vcpu='1' cpuset='0'/><emulatorpin cpuset='2-3'/>\
         <iothreadpin iothread='2' cpuset='5'/><vcpusched vcpus='0-1' scheduler='fifo' priority='1'/>\
         <cachetune vcpus='1'><cache id='0' level='3' type='both' size='2' unit='MiB'/>\
         <monitor level='3' vcpus='0'/></cachetune><shares>2048</shares></cputune>\
         <iothreads>2</iothreads><numatune><memory mode='strict' nodeset='0-1'/>\
         <memnode cellid='0' mode='strict' nodeset='1'/></numatune>",
    )
    .unwrap();
    assert_eq!(s.vcpupins, vec![(1, [0].into())]);
    assert_eq!(
        s.host_cpus,
        vec![("emulatorpin", [2, 3].into()), ("iothreadpin", [5].into())]
    );
    assert_eq!(
        s.vcpus,
        vec![
            ("vcpusched", [0, 1].into()),
            ("cachetune", [1].into()),
            ("monitor", [0].into())
        ]
    );
    assert_eq!(
        s.nodes,
        vec![("memory", [0, 1].into()), ("memnode", [1].into())]
    );
    // Declared ids, and the count filled up as libvirt numbers them.
    sets(
        "<iothreads>2</iothreads><iothreadids><iothread id='7'/></iothreadids>\
         <cputune><iothreadpin iothread='7' cpuset='0'/><iothreadpin iothread='1' cpuset='0'/>\
         <iothreadsched iothreads='1,7' scheduler='batch'/></cputune>",
    )
    .unwrap();
}

/// Regression (the other half of the one above): a bad set of any element
/// of a pinning fragment is refused, naming what is wrong.
#[test]
fn every_bad_set_of_a_pinning_fragment_is_refused() {
    for (bad, why) in [
        (
            "<cputune><emulatorpin cpuset='zzz'/></cputune>",
            "\"zzz\" is not a CPU number",
        ),
        ("<cputune><emulatorpin/></cputune>", "without a cpuset"),
        (
            "<cputune><iothreadpin iothread='1' cpuset='x'/></cputune><iothreads>1</iothreads>",
            "<iothreadpin cpuset=...>",
        ),
        (
            "<cputune><iothreadpin iothread='1' cpuset='1'/></cputune>",
            "declares none",
        ),
        (
            "<cputune><iothreadpin iothread='3' cpuset='1'/></cputune><iothreads>2</iothreads>",
            "are 1,2",
        ),
        (
            "<cputune><vcpusched vcpus='a' scheduler='fifo'/></cputune>",
            "<vcpusched vcpus=...>",
        ),
        (
            "<cputune><memorytune><node id='0' bandwidth='50'/></memorytune></cputune>",
            "without a vcpus",
        ),
        (
            "<numatune><memory nodeset='1-0'/></numatune>",
            "runs backwards",
        ),
        (
            "<cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='0' cpuset='2'/></cputune>",
            "two <vcpupin>s",
        ),
        (
            "<cputune><emulatorpin cpuset='1'/><emulatorpin cpuset='2'/></cputune>",
            "twice",
        ),
        ("<cputune/><cputune/>", "<cputune> is given twice"),
        // Regression (found by the property tests): a blank inside a CPU
        // set was read past, and libvirt's schema refuses the domain.
        (
            "<cputune><iothreadpin iothread='1' cpuset=' 1'/></cputune><iothreads>1</iothreads>",
            "holds no blanks",
        ),
        (
            "<cputune><vcpupin vcpu='0' cpuset='1 '/></cputune>",
            "holds no blanks",
        ),
        // Regression (found by the property tests): two <shares> were
        // accepted, and libvirt's schema refuses the domain.
        (
            "<cputune><shares>2048</shares><shares>2048</shares></cputune>",
            "<shares> is given twice",
        ),
        ("<name>evil</name>", "<name> is not for this attribute"),
        (
            "<uuid>x</uuid>",
            "holds only <cputune>, <numatune>, <iothreads>, <iothreadids>",
        ),
        ("<vcpu>8</vcpu>", "<vcpu> is not for this attribute"),
    ] {
        let e = sets(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
        assert!(normalize("kvm_cpu_pinning", bad).is_err(), "{bad}");
    }
}

/// Regression: libvirt refuses a definition nested deeper than 256
/// elements; a fragment counts the domain elements around it.
#[test]
fn fragments_deeper_than_libvirt_takes_are_refused() {
    let deep = |n: usize| format!("<hostdev>{}{}</hostdev>", "<a>".repeat(n), "</a>".repeat(n));
    normalize("kvm_device_0", &deep(253)).unwrap();
    let e = normalize("kvm_device_0", &deep(254)).unwrap_err();
    assert!(
        e.to_string().contains("nested deeper than 254 elements"),
        "{e}"
    );
    let cpu = |n: usize| {
        format!(
            "custom: <model>x</model>{}{}",
            "<a>".repeat(n),
            "</a>".repeat(n)
        )
    };
    CpuMode::parse(&cpu(254)).unwrap();
    assert!(CpuMode::parse(&cpu(255)).is_err());
    let tune = |n: usize| format!("<cputune>{}{}</cputune>", "<a>".repeat(n), "</a>".repeat(n));
    Pinning::parse(&tune(254)).unwrap();
    assert!(Pinning::parse(&tune(255)).is_err());
}

#[test]
fn rocks_escaped_values_are_stored_unescaped() {
    assert_eq!(
        normalize(
            "kvm_cpu_pinning",
            "&lt;cputune&gt;&lt;vcpupin vcpu=\"0\" cpuset=\"1\"/&gt;&lt;/cputune&gt;"
        )
        .unwrap(),
        "<cputune><vcpupin vcpu=\"0\" cpuset=\"1\"/></cputune>"
    );
    // Other attributes keep their text as given.
    assert_eq!(normalize("comment", "a &lt; b").unwrap(), "a &lt; b");
}

#[test]
fn devices() {
    assert_eq!(device_index("kvm_device_0"), Some(0));
    assert_eq!(device_index("kvm_device_12"), Some(12));
    assert_eq!(device_index("kvm_device_01"), None);
    assert_eq!(device_index("kvm_device_"), None);
    normalize("kvm_device_0", "<hostdev mode='subsystem' type='pci'/>").unwrap();
    assert!(normalize("kvm_device_0", "<hostdev>").is_err());
    assert!(normalize("kvm_device_0", "<domain/>").is_err());
    assert!(normalize("kvm_device_0", "</devices><hostdev/>").is_err());
    assert!(normalize("kvm_device_x", "<hostdev/>").is_err());
}

#[test]
fn booleans_are_normalised() {
    assert_eq!(normalize("kvm_autostart", "Yes").unwrap(), "true");
    assert_eq!(normalize("kvm", "0").unwrap(), "false");
    assert!(normalize("kvm_autostart", "sometimes").is_err());
}

#[test]
fn other_checked_values() {
    assert!(normalize("kvm_emulator", "qemu-kvm").is_err());
    assert!(normalize("kvm_graphics", "rdp").is_err());
    assert!(normalize("numa_cells", "0-3;2-5").is_err());
    assert!(normalize("libvirt_uri", "system").is_err());
    assert!(normalize("kvm_plugin_timeout_preboot", "0").is_err());
    let e = normalize("kvm_plugin_timeout_preboot", "").unwrap_err();
    assert!(e.to_string().contains("not a positive whole number"), "{e}");
    normalize("kvm_plugin_timeout_preboot", "3600").unwrap();
    assert!(normalize("bad name", "x").is_err());
    assert!(normalize("x", "a\0b").is_err());
    normalize("libvirt_uri", "qemu+ssh://{host}/system").unwrap();
    assert!(normalize("kvm_disk_roots", "/a:disks").is_err());
    assert!(normalize("kvm_disk_roots", "/").is_err());
    normalize("kvm_disk_roots", "/state/partition1/kvm/disks:/srv/vm").unwrap();
}

#[test]
fn a_migrate_address_is_an_ip_address_or_a_host_name() {
    for good in [
        "10.77.0.2",
        "fd00::2",
        "vm-container-0-1",
        "node-b.cluster.local",
    ] {
        normalize("kvm_migrate_address", good).unwrap();
    }
    for bad in [
        "",
        "tcp://10.0.0.2",
        "10.0.0.2:49152",
        "a b",
        "-node",
        "node..b",
        "[fd00::2]",
    ] {
        let e = normalize("kvm_migrate_address", bad).unwrap_err();
        assert!(
            e.to_string().contains("not an IP address or a host name"),
            "{bad}: {e}"
        );
    }
}

/// Regression: U+FFFE in `kvm_emulator` was accepted and rendered, and
/// libvirt refused the whole definition (the paths' half is in model's
/// tests).
#[test]
fn an_emulator_with_a_character_xml_cannot_carry_is_refused() {
    for bad in ["/a\u{FFFE}b", "/a\u{FFFF}"] {
        assert!(normalize("kvm_emulator", bad).is_err());
    }
}

#[test]
fn a_plugin_time_limit_over_the_cap_is_refused_naming_it() {
    for v in ["3601", "4294967295", "99999999999999999999999"] {
        let e = normalize("kvm_plugin_timeout_allocate", v).unwrap_err();
        assert!(e.to_string().contains("over the cap of 3600 s"), "{v}: {e}");
    }
    // The guests' limits are another matter.
    normalize("kvm_guests_save_timeout", "7200").unwrap();
}

#[test]
fn kvm_guests_parallel_takes_auto_and_the_stop_budget_positive_seconds() {
    assert_eq!(normalize("kvm_guests_parallel", "auto").unwrap(), "auto");
    assert_eq!(normalize("kvm_guests_parallel", "3").unwrap(), "3");
    normalize("kvm_guests_parallel", "many").unwrap_err();
    assert_eq!(normalize("kvm_guests_stop_budget", "1800").unwrap(), "1800");
    for v in ["0", "-5", "ten minutes"] {
        let e = normalize("kvm_guests_stop_budget", v).unwrap_err();
        assert!(e.to_string().contains("kvm_guests_stop_budget"), "{v}: {e}");
    }
}

#[test]
fn kvm_guests_on_shutdown_is_save_or_migrate() {
    assert_eq!(
        normalize("kvm_guests_on_shutdown", "migrate").unwrap(),
        "migrate"
    );
    assert_eq!(normalize("kvm_guests_on_shutdown", "save").unwrap(), "save");
    let e = normalize("kvm_guests_on_shutdown", "evacuate").unwrap_err();
    assert!(e.to_string().contains("expected save or migrate"), "{e}");
}

/// Regression: values were checked by two hand lists beside the registry,
/// which missed some: `kvm_reinstall_timeout=abc` was stored, and
/// kvmroll-enable then used 300 s without a word. Now the registry's type
/// decides.
#[test]
fn every_typed_attribute_is_checked_by_its_registry_type() {
    let e = normalize("kvm_reinstall_timeout", "abc").unwrap_err();
    assert!(e.to_string().contains("kvm_reinstall_timeout"), "{e}");
    assert_eq!(
        normalize("kvmroll_db_credential_in_kickstart", "yes").unwrap(),
        "true"
    );
    assert!(normalize("kvm_guests_stop_budget", "0").is_err());
    normalize("kvm_guests_parallel", "auto").unwrap();
    assert!(normalize("kvm_guests_parallel", "many").is_err());
    assert!(normalize("kvm_guests_start_delay", "-1").is_err());
    assert!(normalize("kvm_events_keep_days", "0").is_err());
    // A site's own attribute is any text.
    normalize("site_rack_label", "row 3, left").unwrap();
}

//! The fake behaves as the libvirt it stands in for, faults aside.

use super::*;

fn state(hv: &dyn Hypervisor, name: &str) -> DomainState {
    hv.domain(name).unwrap().expect("defined").state
}

#[test]
fn a_save_leaves_an_image_that_a_start_restores_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeLibvirt::new();
    fake.save_images_in(dir.path())
        .add("a", DomainState::Running);
    let hv = fake.connect("fake:///").unwrap();
    hv.managed_save("a").unwrap();
    let info = hv.domain("a").unwrap().unwrap();
    assert_eq!(info.state, DomainState::ShutOff);
    assert!(info.has_managed_save);
    let image = std::fs::read(dir.path().join("a.save")).unwrap();
    assert!(image.starts_with(b"LibvirtQemudSave"));
    assert!(
        hv.managed_save("a").is_err(),
        "an off domain cannot be saved"
    );

    hv.start("a").unwrap();
    assert_eq!(state(&*hv, "a"), DomainState::Running);
    assert!(!dir.path().join("a.save").exists());
    assert!(hv.start("a").is_err(), "a running domain cannot start");
    assert_eq!(
        fake.said(),
        ["connect fake:///", "save a", "save a", "start a", "start a"]
    );
}

#[test]
fn scripted_faults_fail_or_are_ignored() {
    let fake = FakeLibvirt::new();
    fake.add("fails", DomainState::Running)
        .fault("fails", Fault::SaveFails)
        .fault("fails", Fault::ShutdownIgnored)
        .fault("fails", Fault::DestroyFails)
        .add("lost", DomainState::Running)
        .fault("lost", Fault::SaveLost);
    let hv = fake.connect("fake:///").unwrap();
    assert!(matches!(
        hv.managed_save("fails"),
        Err(VirtError::ManagedSave { .. })
    ));
    hv.shutdown("fails").unwrap();
    assert_eq!(state(&*hv, "fails"), DomainState::Running);
    assert!(matches!(
        hv.destroy("fails"),
        Err(VirtError::Destroy { .. })
    ));
    hv.managed_save("lost").unwrap();
    fake.add("slow", DomainState::Running)
        .shutdown_takes("slow", Duration::from_millis(50));
    hv.shutdown("slow").unwrap();
    assert_eq!(state(&*hv, "slow"), DomainState::Running);
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(state(&*hv, "slow"), DomainState::ShutOff);
    let lost = hv.domain("lost").unwrap().unwrap();
    assert_eq!(lost.state, DomainState::ShutOff);
    assert!(!lost.has_managed_save);
}

#[test]
fn a_hanging_save_ends_when_its_job_is_aborted() {
    let fake = FakeLibvirt::new();
    fake.add("h", DomainState::Running)
        .fault("h", Fault::SaveHangs);
    let hv = fake.connect("fake:///").unwrap();
    let t = Instant::now();
    std::thread::scope(|s| {
        let saving = s.spawn(|| fake.connect("fake:///").unwrap().managed_save("h"));
        while hv.job_progress("h").unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        hv.abort_job("h").unwrap();
        assert!(saving.join().unwrap().is_err());
    });
    assert!(t.elapsed() < HANG_CAP / 2, "{:?}", t.elapsed());
    assert_eq!(state(&*hv, "h"), DomainState::Running);
    assert_eq!(hv.job_progress("h").unwrap(), None);
    assert!(hv.abort_job("h").is_err(), "no job runs any more");
}

#[test]
fn an_orphaned_save_is_finished_by_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeLibvirt::new();
    fake.save_images_in(dir.path())
        .add("o", DomainState::Running)
        .orphan_save("o", Duration::from_millis(50));
    let hv = fake.connect("fake:///").unwrap();
    let during = hv.domain("o").unwrap().unwrap();
    assert!(during.saving && during.state == DomainState::Paused);
    assert!(hv.job_progress("o").unwrap().is_some());
    std::thread::sleep(Duration::from_millis(60));
    let after = hv.domain("o").unwrap().unwrap();
    assert!(!after.saving && after.has_managed_save);
    assert_eq!(after.state, DomainState::ShutOff);
    assert!(dir.path().join("o.save").exists());
}

#[test]
fn connections_are_refused_from_the_nth_on() {
    let fake = FakeLibvirt::new();
    fake.refuse_connects_from(1);
    assert!(fake.connect("a").is_ok());
    let err = fake.connect("b").err().unwrap();
    assert_eq!(err.to_string(), "cannot connect to b");
    assert_eq!(fake.said(), ["connect a", "connect b"]);
}

#[test]
fn saves_at_once_are_counted() {
    let fake = FakeLibvirt::new();
    for n in ["a", "b", "c"] {
        fake.add(n, DomainState::Running)
            .save_takes(n, Duration::from_millis(100));
    }
    std::thread::scope(|s| {
        for n in ["a", "b", "c"] {
            let fake = &fake;
            s.spawn(move || fake.connect("x").unwrap().managed_save(n).unwrap());
        }
    });
    assert_eq!(fake.most_saves_at_once(), 3);
}

#[test]
fn define_adds_or_replaces_and_undefine_removes() {
    let fake = FakeLibvirt::new();
    fake.add("d", DomainState::Running)
        .fault("d", Fault::Inspect);
    let hv = fake.connect("x").unwrap();
    hv.define("<domain><name>n</name><memory>1</memory></domain>")
        .unwrap();
    assert_eq!(state(&*hv, "n"), DomainState::ShutOff);
    hv.define("<domain><name>n</name><memory>2</memory></domain>")
        .unwrap();
    assert!(hv.xml("n", true).unwrap().contains("<memory>2"));
    assert!(hv.domain("d").is_err());
    let names: Vec<String> = hv
        .list_domains()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["n"]);
    hv.undefine("n").unwrap();
    assert!(hv.domain("n").unwrap().is_none());
    assert!(hv.undefine("n").is_err());
}

#[test]
fn a_hanging_uri_costs_its_time_and_fails_while_others_answer() {
    let fake = FakeLibvirt::new();
    fake.connect_hangs("hangs", Duration::from_millis(200))
        .unreachable("gone");
    let t = Instant::now();
    std::thread::scope(|s| {
        let hanging = s.spawn(|| fake.connect("hangs").err());
        assert!(
            fake.connect("answers").is_ok(),
            "another URI waits for none"
        );
        assert!(
            t.elapsed() < Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        let err = hanging
            .join()
            .unwrap()
            .expect("a hanging URI fails at last");
        assert_eq!(err.to_string(), "cannot connect to hangs");
    });
    assert!(t.elapsed() >= Duration::from_millis(200));
    let t = Instant::now();
    assert!(fake.connect("gone").is_err());
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[test]
fn a_hook_refusal_starts_nothing_and_says_the_hook_s_words() {
    let fake = FakeLibvirt::new();
    fake.add("r", DomainState::ShutOff)
        .give_managed_save("r")
        .hook_refuses("r", "allocate plugin 10-deny refused: no room");
    let hv = fake.connect("x").unwrap();
    let err = hv.start("r").unwrap_err();
    assert_eq!(
        err.to_string(),
        "domain r did not start: allocate plugin 10-deny refused: no room"
    );
    assert_eq!(state(&*hv, "r"), DomainState::ShutOff);
    assert!(fake.has_managed_save("r"), "the image stays");
}

#[test]
fn a_medium_changes_only_while_the_domain_runs() {
    let fake = FakeLibvirt::new();
    fake.add("m", DomainState::ShutOff);
    let hv = fake.connect("x").unwrap();
    let drive = "<disk type='file' device='cdrom'><source file='/b.iso'/></disk>";
    assert!(matches!(
        hv.change_media("m", drive),
        Err(VirtError::ChangeMedia { .. })
    ));
    hv.start("m").unwrap();
    hv.change_media("m", drive).unwrap();
    assert_eq!(fake.live_media("m").as_deref(), Some(drive));
    assert_eq!(
        fake.said(),
        ["connect x", "change-media m", "start m", "change-media m"]
    );
}

fn to(uri: &str, xml: &str) -> crate::MigrateTo {
    crate::MigrateTo {
        uri: uri.into(),
        live: true,
        transport: crate::Transport::Tunnelled,
        migrate_uri: None,
        xml: xml.into(),
    }
}

#[test]
fn a_migration_moves_the_domain_between_hosts_with_the_xml_given() {
    let hosts = FakeHosts::new();
    hosts.host("fake://a").add("m", DomainState::Running);
    hosts.host("fake://b").node(4, 1024);
    let a = hosts.connect("fake://a").unwrap();
    let b = hosts.connect("fake://b").unwrap();
    assert_eq!(b.node().unwrap().cpus, 4);
    assert_eq!(b.node().unwrap().free_memory, 1 << 30);
    a.migrate("m", &to("fake://b", "<domain><name>m</name>b</domain>"))
        .unwrap();
    assert!(a.domain("m").unwrap().is_none());
    assert_eq!(state(&*b, "m"), DomainState::Running);
    assert_eq!(
        hosts.host("fake://b").xml_of("m").unwrap(),
        "<domain><name>m</name>b</domain>"
    );
    assert!(
        b.migrate("m", &to("fake://b", "")).is_err(),
        "to the same host"
    );
}

#[test]
fn a_refused_failed_or_aborted_migration_leaves_the_domain_running_where_it_was() {
    let hosts = FakeHosts::new();
    let a = hosts.host("fake://a");
    a.add("r", DomainState::Running)
        .fault("r", Fault::MigrateRefused)
        .add("f", DomainState::Running)
        .fault("f", Fault::MigrateFails)
        .add("h", DomainState::Running)
        .fault("h", Fault::MigrateHangs);
    let conn = hosts.connect("fake://a").unwrap();
    assert!(matches!(
        conn.migrate("r", &to("fake://b", "")),
        Err(VirtError::MigrateRefused { .. })
    ));
    assert!(matches!(
        conn.migrate("f", &to("fake://b", "")),
        Err(VirtError::Migrate { .. })
    ));
    let watcher = hosts.connect("fake://a").unwrap();
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(move || {
            while watcher.job_progress("h").unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            watcher.abort_job("h").unwrap();
        });
        assert!(conn.migrate("h", &to("fake://b", "")).is_err());
    });
    assert!(t.elapsed() < HANG_CAP);
    for n in ["r", "f", "h"] {
        assert_eq!(a.state(n), Some(DomainState::Running), "{n}");
        assert_eq!(hosts.host("fake://b").state(n), None, "{n}");
    }
}

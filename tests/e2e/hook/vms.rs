//! What the hook does to a VM: a relocation refuses the local start, a
//! filter rewrites a restore's XML, an unsafe plugin is not run, a VM the
//! database does not know passes through, and a stale definition is
//! refreshed after the VM stops.

use super::*;

#[test]
fn an_allocate_plugin_that_moves_the_vm_refuses_the_local_start() {
    let t = "an_allocate_plugin_that_moves_the_vm_refuses_the_local_start";
    let Some(cl) = Cluster::get(t) else { return };
    let mut vm = cl.vm("move");
    let name = vm.name.clone();
    let other = format!("{}-other", prefix("hook"));
    vm.hosts.push(other.clone());
    cl.ok(&["host", "add", &other, "--appliance", "vm-container"]);
    vm.plugin(
        "allocate",
        "10-move",
        &format!("kvmroll vm set \"$KVMROLL_VM\" --container '{other}'"),
    );
    let err = start_refused(&name);
    assert!(err.contains(&other), "the new container is named: {err}");
    assert_eq!(vm.state(), "shut off");
    let shown = cl.ok(&["vm", "show", &name, "--json"]);
    assert!(
        shown.contains(&format!("\"container\": \"{other}\"")),
        "the plugin's move is in the database: {shown}"
    );
    // Back home, so that removing it talks to this machine's libvirt only.
    // The "other" container does not exist: whatever definition might be
    // left there cannot be checked, which kvmroll says with exit 3.
    std::fs::remove_dir_all(&vm.plugins).unwrap();
    let back = cl.k.run(&["vm", "set", &name, "--container", &cl.host]);
    let said = String::from_utf8_lossy(&back.stderr);
    assert_eq!(back.status.code(), Some(3), "{said}");
    assert!(said.contains(&format!("cannot reach {other}")), "{said}");
    cl.ok(&["vm", "remove", &name]);
    cl.ok(&["host", "remove", &other]);
}

#[test]
fn a_preboot_plugin_rewrites_the_xml_of_a_restore() {
    let t = "a_preboot_plugin_rewrites_the_xml_of_a_restore";
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.vm("filter");
    let name = vm.name.clone();
    let description = "<description>restored by kvmroll plugin</description>";
    vm.plugin(
        "preboot",
        "50-describe",
        &format!(
            "if [ \"$KVMROLL_OP\" = restore ]; then\n  \
             sed '0,/<\\/name>/s|</name>|</name>{description}|'\nelse\n  cat >/dev/null\nfi"
        ),
    );
    virsh_ok(&["start", &name]);
    assert!(
        !virsh_ok(&["dumpxml", &name]).contains(description),
        "a cold start does not take hook XML"
    );
    virsh_ok(&["managedsave", &name]);
    virsh_ok(&["start", &name]);
    assert_eq!(
        virsh_ok(&["domstate", "--reason", &name]).trim(),
        "running (restored)"
    );
    let live = virsh_ok(&["dumpxml", &name]);
    assert!(
        live.contains(description),
        "the restored VM runs the plugin's XML: {live}"
    );
    let events = cl.events(&name);
    assert!(
        events
            .iter()
            .any(|e| e.op == "restore" && e.plugin.is_some() && e.outcome == "ok"),
        "{events:#?}"
    );
    virsh_ok(&["destroy", &name]);
    cl.ok(&["vm", "remove", &name]);
}

#[test]
fn a_world_writable_plugin_is_not_run() {
    let t = "a_world_writable_plugin_is_not_run";
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.vm("writable");
    let name = vm.name.clone();
    let marker = cl.file("ran");
    let path = vm.plugin(
        "preboot",
        "10-open",
        &format!("touch '{}'", marker.display()),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = start_refused(&name);
    assert!(err.contains("writable"), "{err}");
    assert!(!marker.exists(), "the world-writable plugin ran");
    assert_eq!(vm.state(), "shut off");
    let events = cl.events(&name);
    let e = plugin_event(&events, "preboot", "10-open");
    assert_eq!(e.outcome, "refused", "{e:#?}");
    cl.ok(&["vm", "remove", &name]);
}

#[test]
fn a_vm_unknown_to_the_database_passes_through() {
    let t = "a_vm_unknown_to_the_database_passes_through";
    let Some(cl) = Cluster::get(t) else { return };
    let vm = cl.unmanaged_vm("unknown");
    let name = vm.name.clone();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-guest.xml");
    let xml = std::fs::read_to_string(&fixture).unwrap().replace(
        "<name>kvmroll-fixture</name>",
        &format!("<name>{name}</name>"),
    );
    assert!(xml.contains(&name));
    let file = cl.file("unknown.xml");
    std::fs::write(&file, xml).unwrap();
    // Plugins in its folder are not run either: the VM is not kvmroll's.
    let marker = cl.file("ran");
    for stage in [
        "allocate",
        "preboot",
        "shutdown",
        "on-started",
        "on-stopped",
    ] {
        vm.plugin(
            stage,
            "10-mark",
            &format!("echo $1 >> '{}'", marker.display()),
        );
    }
    virsh_ok(&["define", file.to_str().unwrap()]);
    virsh_ok(&["start", &name]);
    assert_eq!(vm.state(), "running");
    virsh_ok(&["destroy", &name]);
    assert_eq!(vm.state(), "shut off");
    assert!(
        !marker.exists(),
        "plugins ran for a VM kvmroll does not know: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    let events = cl.events(&name);
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.outcome, "pass-through", "{e:#?}");
    assert_eq!(
        (e.stage.as_str(), e.op.as_str(), e.subop.as_str()),
        ("allocate", "prepare", "begin"),
        "{e:#?}"
    );
    assert_eq!(e.plugin, None, "{e:#?}");
}

#[test]
fn release_end_refreshes_a_stale_definition_after_the_hook_returns() {
    let Some(cl) = Cluster::get("release_end_refreshes_a_stale_definition_after_the_hook_returns")
    else {
        return;
    };
    let vm = cl.vm("refresh");
    // A database change libvirt is not told about (as when the container
    // could not be reached): libvirt's definition is now stale.
    cl.ok(&["--no-sync", "vm", "set", &vm.name, "--mem", "96"]);
    let memory = || {
        virsh_ok(&["dumpxml", "--inactive", &vm.name]).contains("<memory unit='KiB'>98304</memory>")
    };
    assert!(!memory(), "libvirt already had the new memory");
    // The start decides from the definition's own metadata, with no
    // database on its path: the definition agrees with itself, so this is
    // no drift (a stale generation is reported where the database is
    // opened anyway, at an allocate stage with plugins).
    virsh_ok(&["start", &vm.name]);
    let drift = cl
        .events(&vm.name)
        .into_iter()
        .filter(|e| e.outcome == "drift")
        .count();
    assert_eq!(
        drift, 0,
        "a definition that agrees with its metadata drifted"
    );
    // At release end the hook hands the refresh to a detached process,
    // which redefines the VM once the hook has returned.
    virsh_ok(&["destroy", &vm.name]);
    assert!(
        wait_for(Duration::from_secs(20), memory),
        "libvirt's definition was not refreshed after release end"
    );
    // And the next start sees no drift.
    virsh_ok(&["start", &vm.name]);
    let drift = cl
        .events(&vm.name)
        .into_iter()
        .filter(|e| e.outcome == "drift")
        .count();
    assert_eq!(drift, 0, "a drift was recorded after the refresh");
}

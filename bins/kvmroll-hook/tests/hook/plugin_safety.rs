//! Plugins the hook must not run: unsafe folders on the way, symlinks,
//! a file swapped after the check, a VM name that is a path.

use crate::fixture::*;
use std::os::unix::fs::PermissionsExt;

/// Makes `dir` (and its parents up to the fixture) a folder with `mode`.
pub fn folder(fx: &Fx, dir: &std::path::Path, mode: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let mut d = dir;
    while d != fx.dir.path() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d = d.parent().unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A root-owned, mode 755 script at `path`.
pub fn script_at(path: &std::path::Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Starts the VM, which must be refused with no plugin run; the refusal.
pub fn start_refused_before_any_plugin(fx: &Fx) -> String {
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!fx.marker("ran").exists(), "the plugin ran");
    stderr(&out)
}

pub fn refused_events(fx: &Fx) -> Vec<kvmroll_core::Event> {
    fx.events(VM)
        .into_iter()
        .filter(|e| e.outcome.as_str() == "refused")
        .collect()
}

#[test]
fn a_plugin_symlinked_into_a_world_writable_folder_is_refused() {
    // The target is root's and mode 755, but its folder is 0777: anyone
    // could rename another file over it between the check and the run.
    let fx = Fx::new();
    let open = fx.dir.path().join("open");
    folder(&fx, &open, 0o777);
    let target = open.join("real");
    script_at(&target, &format!("touch {}", fx.marker("ran").display()));
    let stage = fx.root().join(format!("vms/{VM}/preboot.d"));
    folder(&fx, &stage, 0o755);
    std::os::unix::fs::symlink(&target, stage.join("10-link")).unwrap();
    let err = start_refused_before_any_plugin(&fx);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{} is writable by group or others",
            open.display()
        )),
        "{err}"
    );
    let refused = refused_events(&fx);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]
        .plugin
        .as_deref()
        .is_some_and(|p| p.ends_with("10-link")));
    // A relative link through `..` is resolved the same way.
    std::fs::remove_file(stage.join("10-link")).unwrap();
    std::os::unix::fs::symlink("../../../../open/real", stage.join("10-link")).unwrap();
    start_refused_before_any_plugin(&fx);
}

#[test]
fn a_stage_folder_that_links_to_an_unsafe_place_is_refused() {
    let fx = Fx::new();
    let open = fx.dir.path().join("open");
    folder(&fx, &open.join("preboot.d"), 0o755);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    script_at(
        &open.join("preboot.d/10-run"),
        &format!("touch {}", fx.marker("ran").display()),
    );
    folder(&fx, &fx.root().join("plugins"), 0o755);
    std::os::unix::fs::symlink(open.join("preboot.d"), fx.root().join("plugins/preboot.d"))
        .unwrap();
    let err = start_refused_before_any_plugin(&fx);
    assert!(
        err.contains(&format!(
            "{} is writable by group or others",
            open.display()
        )),
        "{err}"
    );
    assert_eq!(refused_events(&fx).len(), 1);
    // The plugin root itself reached through such a link is refused too.
    std::fs::remove_file(fx.root().join("plugins/preboot.d")).unwrap();
    std::fs::rename(fx.root(), open.join("etc")).unwrap();
    std::fs::rename(open.join("preboot.d"), open.join("etc/plugins/preboot.d")).unwrap();
    std::os::unix::fs::symlink(open.join("etc"), fx.root()).unwrap();
    start_refused_before_any_plugin(&fx);
}

#[test]
fn a_safe_symlink_still_runs() {
    let fx = Fx::new();
    let lib = fx.dir.path().join("lib/kvmroll");
    folder(&fx, &lib.join("preboot.d"), 0o755);
    script_at(
        &lib.join("real"),
        &format!("echo \"$1 $2\" > {}", fx.marker("own").display()),
    );
    script_at(
        &lib.join("preboot.d/10-global"),
        &format!("touch {}", fx.marker("global").display()),
    );
    // A plugin that is a link (relative, through `..`), and a stage folder
    // that is one (absolute).
    let own = fx.root().join(format!("vms/{VM}/preboot.d"));
    folder(&fx, &own, 0o755);
    std::os::unix::fs::symlink("../../../../lib/kvmroll/real", own.join("10-own")).unwrap();
    folder(&fx, &fx.root().join("plugins"), 0o755);
    std::os::unix::fs::symlink(lib.join("preboot.d"), fx.root().join("plugins/preboot.d")).unwrap();
    let out = fx.hook(VM, "start", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        fx.marker("global").exists(),
        "the global plugin did not run"
    );
    assert_eq!(
        std::fs::read_to_string(fx.marker("own")).unwrap(),
        format!("preboot {VM}\n")
    );
    assert!(refused_events(&fx).is_empty());
}

#[test]
fn a_plugin_swapped_after_the_check_is_not_what_runs() {
    // The first plugin renames another file over the second between the
    // hook's check of the second and its run: the checked file runs.
    let fx = Fx::new();
    let dir = format!("vms/{VM}/allocate.d");
    let target = fx.plugin(
        &dir,
        "20-target",
        &format!("echo checked > {}", fx.marker("ran").display()),
    );
    let swap = fx.root().join(&dir).join(".swap");
    script_at(
        &swap,
        &format!("echo swapped > {}", fx.marker("ran").display()),
    );
    fx.plugin(
        &dir,
        "10-swap",
        &format!("mv {} {}", swap.display(), target.display()),
    );
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!swap.exists(), "the swap did not happen");
    assert_eq!(
        std::fs::read_to_string(fx.marker("ran")).unwrap(),
        "checked\n"
    );
}

#[test]
fn a_vm_name_with_a_path_reaches_no_folder_outside_the_plugin_root() {
    // Stop side, database unreadable: the VM's name is all the hook has.
    let fx = Fx::new();
    fx.plugin(
        "outside/shutdown.d",
        "10-outside",
        &format!("touch {}", fx.marker("outside").display()),
    );
    fx.plugin(
        "plugins/shutdown.d",
        "10-global",
        &format!("touch {}", fx.marker("global").display()),
    );
    folder(&fx, &fx.root().join("vms"), 0o755);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fx.db().display()));
    }
    std::fs::write(fx.db(), vec![b'#'; 8192]).unwrap();
    let xml = "<domain type='kvm'><name>x</name></domain>";
    for vm in ["../outside", "a/../../outside"] {
        let out = fx.hook(vm, "release", "end", xml);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert!(
        !fx.marker("outside").exists(),
        "a plugin outside the root ran"
    );
    assert!(
        fx.marker("global").exists(),
        "the global plugins did not run"
    );
}

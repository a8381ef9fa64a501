//! Unit tests of discovery: order, skipped names, ownership and modes on
//! the real path, links, and what runs being what was checked.

use super::*;
use crate::fixtures::{me, mode, script, tree};
use std::time::Duration;

/// What `discover` found, as names: `run NAME` or `refused PATH: WHY`.
fn names(found: &[Found]) -> Vec<String> {
    found
        .iter()
        .map(|f| match f {
            Found::Run(p) => p.path().file_name().unwrap().to_string_lossy().into_owned(),
            Found::Refused { path, why } => format!("refused {}: {why}", path.display()),
        })
        .collect()
}

fn output(found: &Found) -> String {
    let Found::Run(p) = found else {
        panic!("not run: {found:?}")
    };
    let r = p
        .run(&["a1".into()], &[], b"", Duration::from_secs(10))
        .unwrap();
    assert!(r.success(), "{r:?}");
    String::from_utf8(r.stdout).unwrap()
}

#[test]
fn global_first_then_the_vms_own_in_byte_order() {
    let t = tree();
    let g = t.path().join("plugins/preboot.d");
    let v = t.path().join("vms/vm1/preboot.d");
    script(&g, "20-b", "", 0o755);
    script(&g, "10-a", "", 0o755);
    script(&g, "B", "", 0o755);
    script(&g, "README", "", 0o644);
    script(&g, ".hidden", "", 0o755);
    script(&g, "x.dpkg-old", "", 0o755);
    std::fs::create_dir(g.join("a-folder")).unwrap();
    script(&v, "00-own", "", 0o755);
    let found = discover(t.path(), "preboot", Ok("vm1"), me());
    assert_eq!(names(&found), ["10-a", "20-b", "B", "00-own"]);
    assert!(discover(t.path(), "allocate", Ok("vm1"), me()).is_empty());
}

#[test]
fn writable_plugins_and_folders_are_refused() {
    let t = tree();
    let g = t.path().join("plugins/shutdown.d");
    script(&g, "ok", "", 0o755);
    let p = script(&g, "world", "", 0o757);
    mode(&p, 0o777);
    let found = discover(t.path(), "shutdown", Ok("vm"), me());
    assert_eq!(names(&found)[0], "ok");
    assert!(matches!(&found[1], Found::Refused { why, .. } if why.contains("writable")));

    let v = t.path().join("vms/vm/shutdown.d");
    script(&v, "mine", "", 0o755);
    mode(&v, 0o777);
    let found = discover(t.path(), "shutdown", Ok("vm"), me());
    assert!(matches!(&found[2], Found::Refused { why, .. } if why.contains("shutdown.d")));
    // Another owner is refused too.
    let found = discover(t.path(), "shutdown", Ok("vm"), me() + 1);
    assert!(found.iter().all(|f| matches!(f, Found::Refused { .. })));
    assert_eq!(found.len(), 2);
}

#[test]
fn a_plugin_linked_into_a_folder_others_can_write_is_refused() {
    let t = tree();
    let open = t.path().join("open");
    let target = script(&open, "real", "echo ran", 0o755);
    mode(&open, 0o777);
    let g = t.path().join("plugins/preboot.d");
    std::fs::create_dir_all(&g).unwrap();
    std::os::unix::fs::symlink(&target, g.join("10-abs")).unwrap();
    std::os::unix::fs::symlink("../../open/real", g.join("20-rel")).unwrap();
    let found = discover(t.path(), "preboot", Ok("vm"), me());
    let why = format!(
        "{} is writable by group or others (mode 777)",
        open.display()
    );
    assert_eq!(
        names(&found),
        [
            format!("refused {}: {why}", g.join("10-abs").display()),
            format!("refused {}: {why}", g.join("20-rel").display()),
        ]
    );
    // A folder on the way to the target counts as much as its own.
    mode(&open, 0o755);
    let deep = t.path().join("open/deeper");
    script(&deep, "real", "echo ran", 0o755);
    mode(&open, 0o775);
    std::os::unix::fs::symlink(deep.join("real"), g.join("30-deep")).unwrap();
    let found = discover(t.path(), "preboot", Ok("vm"), me());
    assert!(
        matches!(&found[2], Found::Refused { why, .. } if why.contains("mode 775")),
        "{found:?}"
    );
}

#[test]
fn a_stage_folder_linked_to_an_unsafe_place_is_refused() {
    let t = tree();
    let open = t.path().join("open");
    script(&open.join("preboot.d"), "10-x", "echo ran", 0o755);
    mode(&open, 0o757);
    std::fs::create_dir_all(t.path().join("plugins")).unwrap();
    std::os::unix::fs::symlink(open.join("preboot.d"), t.path().join("plugins/preboot.d")).unwrap();
    let found = discover(t.path(), "preboot", Ok("vm"), me());
    assert_eq!(
        names(&found),
        [format!(
            "refused {}: {} is writable by group or others (mode 757)",
            t.path().join("plugins/preboot.d").display(),
            open.display()
        )]
    );
}

#[test]
fn safe_links_run_what_they_point_to() {
    let t = tree();
    let lib = t.path().join("lib");
    script(&lib, "real", "echo \"$0 $1 $KVMROLL_PLUGIN\"", 0o755);
    script(&lib.join("preboot.d"), "10-global", "echo global", 0o755);
    std::fs::create_dir_all(t.path().join("plugins")).unwrap();
    std::os::unix::fs::symlink("../lib/preboot.d", t.path().join("plugins/preboot.d")).unwrap();
    let v = t.path().join("vms/vm/preboot.d");
    std::fs::create_dir_all(&v).unwrap();
    std::os::unix::fs::symlink("../../../lib/./real", v.join("20-own")).unwrap();
    // A binary through the system's own links (/bin -> usr/bin on a
    // merged-/usr system).
    std::os::unix::fs::symlink("/bin/echo", v.join("30-echo")).unwrap();
    let found = discover(t.path(), "preboot", Ok("vm"), me());
    assert_eq!(names(&found), ["10-global", "20-own", "30-echo"]);
    assert_eq!(output(&found[0]), "global\n");
    let own = v.join("20-own");
    let said = output(&found[1]);
    // A script reads itself from the descriptor it was started through.
    assert!(said.starts_with("/proc/self/fd/"), "{said}");
    assert!(
        said.ends_with(&format!(" a1 {}\n", own.display())),
        "{said}"
    );
    assert_eq!(output(&found[2]), "a1\n");
}

#[test]
fn what_runs_is_the_file_that_was_checked() {
    let t = tree();
    let g = t.path().join("plugins/allocate.d");
    script(&g, "10-plugin", "echo checked", 0o755);
    let found = discover(t.path(), "allocate", Ok("vm"), me());
    // Swapped after the check: another file renamed over the name.
    let evil = script(t.path(), "evil", "echo swapped", 0o755);
    std::fs::rename(&evil, g.join("10-plugin")).unwrap();
    assert_eq!(output(&found[0]), "checked\n");
    // Binaries too.
    std::fs::copy("/bin/echo", g.join("20-bin")).unwrap();
    let found = discover(t.path(), "allocate", Ok("vm"), me());
    std::fs::rename(
        script(t.path(), "evil", "echo swapped", 0o755),
        g.join("20-bin"),
    )
    .unwrap();
    assert_eq!(output(&found[1]), "a1\n");
}

#[test]
fn a_sticky_folder_is_passed_through_only_to_roots_own_entries() {
    // The fixtures live under /tmp (root's, mode 1777): a folder of
    // root's in it cannot be renamed by anyone else.
    let t = tree();
    let sticky = t.path().join("sticky");
    let target = script(&sticky.join("lib"), "real", "echo ran", 0o755);
    mode(&sticky, 0o1777);
    let g = t.path().join("plugins/preboot.d");
    std::fs::create_dir_all(&g).unwrap();
    std::os::unix::fs::symlink(&target, g.join("10-via-sticky")).unwrap();
    assert_eq!(
        names(&discover(t.path(), "preboot", Ok("vm"), me())),
        ["10-via-sticky"]
    );
    // A link of someone else's there could be replaced by them.
    let link = sticky.join("link");
    std::os::unix::fs::symlink("lib/real", &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(me() + 1), None).unwrap();
    std::os::unix::fs::symlink(&link, g.join("20-via-their-link")).unwrap();
    let found = discover(t.path(), "preboot", Ok("vm"), me());
    assert!(
        matches!(&found[1], Found::Refused { why, .. } if why.contains("which others may write")),
        "{found:?}"
    );
    // A stage folder others may write is refused even when sticky.
    mode(&g, 0o1777);
    let found = discover(t.path(), "preboot", Ok("vm"), me());
    assert!(
        matches!(&found[..], [Found::Refused { why, .. }] if why.contains("writable")),
        "{found:?}"
    );
}

#[test]
fn link_loops_and_dangling_links_run_nothing() {
    let t = tree();
    let g = t.path().join("plugins/preboot.d");
    std::fs::create_dir_all(&g).unwrap();
    std::os::unix::fs::symlink("20-b", g.join("10-a")).unwrap();
    std::os::unix::fs::symlink("10-a", g.join("20-b")).unwrap();
    std::os::unix::fs::symlink("nowhere", g.join("30-dangling")).unwrap();
    let found = discover(t.path(), "preboot", Ok("vm"), me());
    let n = names(&found);
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(
        n.iter().all(|s| s.contains("symbolic links on the way")),
        "{n:?}"
    );
}

#[test]
fn a_vm_name_that_is_a_path_is_refused_first_and_not_followed() {
    let t = tree();
    script(&t.path().join("plugins/shutdown.d"), "10-global", "", 0o755);
    script(
        &t.path().join("outside/shutdown.d"),
        "10-outside",
        "",
        0o755,
    );
    std::fs::create_dir_all(t.path().join("vms")).unwrap();
    for vm in ["../outside", "a/../../outside", ".."] {
        let n = names(&discover(t.path(), "shutdown", Ok(vm), me()));
        assert_eq!(n.len(), 2, "{vm}: {n:?}");
        assert!(
            n[0].starts_with("refused ") && n[0].contains("invalid VM name"),
            "{n:?}"
        );
        assert_eq!(n[1], "10-global");
    }
}

#[test]
fn a_vm_name_its_caller_refused_is_refused_first_and_not_looked_at() {
    let t = tree();
    script(&t.path().join("plugins/preboot.d"), "10-global", "", 0o755);
    script(
        &t.path().join("vms/bad name/preboot.d"),
        "10-own",
        "",
        0o755,
    );
    let why = "invalid VM name \"bad name\": it contains white space";
    let found = discover(t.path(), "preboot", Err(why.into()), me());
    assert_eq!(
        names(&found),
        [
            format!(
                "refused {}: {why}: the VM's own plugins are not looked for",
                t.path().join("vms").display()
            ),
            "10-global".into(),
        ]
    );
}

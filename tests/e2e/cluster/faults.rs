//! Faults from the frontend are one line and change nothing; two CLIs
//! writing one VM at once lose nothing.

use super::*;

// size: one scenario against real daemons, each step on the state the last one left; kept whole
#[test]
fn faults_are_one_line_and_change_nothing() {
    const TEST: &str = "faults_are_one_line_and_change_nothing";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let pg = &f.rig.pg;
    let port = pg.port();
    let listed = f.k.ok(&["host", "list"]);

    // A wrong password.
    let wrong = Kvmroll::new(pg.url_tcp(&Role::login("kvmroll", "not it"), DB));
    assert_fault(
        &wrong.run(&["host", "list"]),
        "refused the password of user kvmroll",
        "wrong password",
    );
    assert_fault(
        &wrong.run(&["host", "add", "intruder"]),
        "refused the password of user kvmroll",
        "wrong password, a write",
    );

    // A password file that others can read.
    let dir = tempfile::tempdir().unwrap();
    let passfile = dir.path().join("pgpass");
    std::fs::write(&passfile, format!("*:*:*:kvmroll:{}\n", admin().password)).unwrap();
    std::fs::set_permissions(
        &passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let readable = Kvmroll::new(format!(
        "postgresql://kvmroll@127.0.0.1:{port}/{DB}?passfile={}",
        passfile.display()
    ));
    assert_fault(
        &readable.run(&["host", "list"]),
        &format!(
            "password file {} is not used: group or others have access to it",
            passfile.display()
        ),
        "world-readable passfile",
    );
    std::fs::set_permissions(
        &passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(readable.ok(&["host", "list"]), listed);

    // A database of a newer schema: refused, untouched.
    let newer = pg.fresh_database("kvmroll").unwrap();
    let k_newer = Kvmroll::new(pg.url_tcp(&admin(), &newer));
    k_newer.ok(&["db", "init"]);
    pg.sql(
        &newer,
        "UPDATE kvmroll_meta SET value = '99' WHERE key = 'schema_version';",
    )
    .unwrap();
    let dump = || {
        pg.sql(
            &newer,
            "SELECT h FROM hosts h; SELECT a FROM appliances a; SELECT m FROM kvmroll_meta m;",
        )
        .unwrap()
    };
    let before = dump();
    for args in [
        &["host", "list"][..],
        &["host", "add", "h"],
        &["db", "init"],
    ] {
        assert_fault(
            &k_newer.run(args),
            "has schema version 99, newer than this kvmroll knows",
            "newer schema",
        );
    }
    assert_eq!(dump(), before);

    // The server stopped: the line names its host and port; back, nothing
    // changed.
    pg.stop(StopMode::Fast)
        .unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
    let down = [
        f.k.run(&["host", "list"]),
        f.k.run(&["attr", "set", "--global", "x", "1"]),
    ];
    pg.start().unwrap_or_else(|e| panic!("{}", rig::chain(&e)));
    for out in &down {
        assert_fault(
            out,
            &format!("cannot reach the database server at 127.0.0.1 port {port}"),
            "server stopped",
        );
    }
    assert_eq!(f.k.ok(&["host", "list"]), listed);
    assert_eq!(f.k.run(&["attr", "get", A, "x"]).status.code(), Some(1));
}

/// Two CLIs changing one VM at once on PostgreSQL, again and again: each
/// adds a NIC (a read, then a write of the VM's whole row set). Every one
/// that said it succeeded is kept; one that failed said so in one line.
#[test]
fn two_clis_writing_one_vm_at_once_lose_nothing() {
    const TEST: &str = "two_clis_writing_one_vm_at_once_lose_nothing";
    let Some((f, _turn)) = frontend(TEST) else {
        return;
    };
    let vm = f.vm("both", A, &[]);
    let mut kept = Vec::new();
    for round in 0..8 {
        let children: Vec<_> = ["x", "y"]
            .iter()
            .map(|who| {
                let mac = format!(
                    "52:54:00:ee:{round:02x}:{}",
                    if *who == "x" { "01" } else { "02" }
                );
                let child = bin("kvmroll")
                    .arg("--db")
                    .arg(&f.k.db)
                    .args(["--no-sync", "vm", "nic", "add", &vm.name])
                    .arg(format!("bridge:br-{who},mac={mac}"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (mac, child)
            })
            .collect();
        for (mac, child) in children {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                kept.push(mac);
            } else {
                assert_eq!(err.lines().count(), 1, "not one line: {err}");
                assert!(err.starts_with("kvmroll: "), "{err}");
            }
        }
    }
    let show = json::parse(&f.k.ok(&["vm", "show", &vm.name, "--json"])).unwrap();
    let mut macs: Vec<String> = show
        .at("nics")
        .arr()
        .iter()
        .filter_map(|n| n.at("mac").str().map(str::to_string))
        .collect();
    macs.sort();
    kept.sort();
    assert_eq!(macs, kept, "a change that succeeded was lost");
    assert!(kept.len() >= 8, "most were refused: {kept:?}");
}

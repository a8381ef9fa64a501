//! `kvmroll-guests` as a user runs it, without libvirt: bad input, and the
//! systemd unit as systemd itself reads it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn guests(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvmroll-guests"))
        .args(args)
        .env_remove("KVMROLL_DB")
        .output()
        .unwrap()
}

/// libvirt's test driver: never the machine's libvirtd.
const TEST_URI: &str = "test:///default";

/// A database that does not answer (missing here) is a warning: the
/// service decides from libvirt's definitions. A host the database does not
/// know is an error: it answered.
#[test]
fn a_missing_database_is_a_warning_and_an_unknown_host_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");
    let out = guests(&[
        "--db",
        db.to_str().unwrap(),
        "--libvirt-uri",
        TEST_URI,
        "status",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the kvmroll database is unreachable") && err.contains("does not exist"),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["known_from"], "definitions");
    assert!(!db.exists());

    // A real database without this host.
    kvmroll_core::init_store(&db).unwrap();
    let out = guests(&["--db", db.to_str().unwrap(), "--host", "nosuch", "stop"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host \"nosuch\" is not in the kvmroll database"),
        "{err}"
    );
    let out = guests(&["--db", db.to_str().unwrap(), "restart"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Regression: an empty (0-byte) database file was read as a database
/// needing an upgrade from schema 0, not as what it is. It is said, and
/// left empty; the VMs are not held back for it.
#[test]
fn an_empty_database_file_is_said_and_left_empty() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    std::fs::write(&db, b"").unwrap();
    let state = dir.path().join("state");
    let out = guests(&[
        "--db",
        db.to_str().unwrap(),
        "--libvirt-uri",
        TEST_URI,
        "--state-dir",
        state.to_str().unwrap(),
        "status",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is empty, not a kvmroll database"), "{err}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
}

/// The database of a container `c0` with VMs `a` (autostart, and the
/// container saves for 600 s) and `b`, and libvirt's test driver holding
/// their definitions (as kvmroll rendered them) and one defined by hand.
fn cluster_and_definitions(dir: &Path) -> (PathBuf, String) {
    use kvmroll_core::{Change, Host, Scope};
    let db = dir.join("k.db");
    let mut store = kvmroll_core::open_store(&db, kvmroll_core::OpenMode::Create).unwrap();
    let vm = vm_on_c0;
    let plan = store
        .update(&mut |_| {
            Ok(vec![
                Change::AddHost(Host::new("c0", "vm-container")),
                Change::AddVm(vm("a", 1)),
                Change::AddVm(vm("b", 2)),
                Change::SetAttr {
                    scope: Scope::Host("a".into()),
                    name: "kvm_autostart".into(),
                    value: "true".into(),
                },
                Change::SetAttr {
                    scope: Scope::Host("c0".into()),
                    name: "kvm_guests_save_timeout".into(),
                    value: "600".into(),
                },
            ])
        })
        .unwrap();
    let mut node = String::from("<node>\n");
    for name in ["a", "b"] {
        let xml = plan.changed[name].clone().unwrap();
        assert!(xml.contains("kvm_guests_save_timeout"), "{xml}");
        node.push_str(&xml.replace("type='kvm'", "type='test'"));
    }
    node.push_str("<domain type='test'><name>hand</name><memory>65536</memory><os><type>hvm</type></os></domain>\n</node>\n");
    let file = dir.join("node.xml");
    std::fs::write(&file, node).unwrap();
    (db, format!("test://{}", file.display()))
}

fn status(db: &Path, uri: &str) -> serde_json::Value {
    let out = guests(&[
        "--db",
        db.to_str().unwrap(),
        "--host",
        "c0",
        "--libvirt-uri",
        uri,
        "status",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Which VMs come back at boot: the database says, or, when it does not
/// answer, the kvmroll metadata of libvirt's definitions says the same.
#[test]
fn without_the_database_the_definitions_say_which_vms_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let (db, uri) = cluster_and_definitions(dir.path());
    let autostart = |json: &serde_json::Value| -> Vec<(String, bool)> {
        json["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["autostart"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let from_db = status(&db, &uri);
    assert_eq!(from_db["known_from"], "database");
    let gone = dir.path().join("gone.db");
    let from_libvirt = status(&gone, &uri);
    assert_eq!(from_libvirt["known_from"], "definitions");
    let want = vec![("a".to_string(), true), ("b".to_string(), false)];
    assert_eq!(autostart(&from_db), want);
    assert_eq!(autostart(&from_libvirt), want);
}

#[test]
fn the_unit_orders_and_bounds_the_service() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd/kvmroll-guests.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for want in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "After=network-online.target libvirtd.service",
        "RequiresMountsFor=/var/lib/libvirt/qemu/save",
        "ExecStart=/usr/bin/kvmroll-guests start",
        "ExecStop=/usr/bin/kvmroll-guests stop",
        "TimeoutStopSec=900",
        "NotifyAccess=all",
    ] {
        assert!(text.contains(want), "the unit lacks {want:?}");
    }
    // systemd-analyze verify runs on every unit in tests/e2e/host.rs.
}

/// A small VM on container `c0`, its UUID ending in `n`.
fn vm_on_c0(name: &str, n: u8) -> kvmroll_core::Vm {
    kvmroll_core::Vm {
        id: 0,
        name: name.into(),
        container: Some("c0".into()),
        memory_mib: 64,
        vcpus: 1,
        uuid: format!("6f1c2a4e-0d4b-4f57-9a53-0000000000{n:02}"),
        cdrom: None,
        virt_type: "kvm".into(),
        disks: vec![],
        nics: vec![],
        stale: false,
        generation: 0,
    }
}

/// A database of container `c0` holding one VM named `name`.
fn one_vm(dir: &Path, name: &str) -> PathBuf {
    use kvmroll_core::{Change, Host};
    let db = dir.join("one.db");
    let mut store = kvmroll_core::open_store(&db, kvmroll_core::OpenMode::Create).unwrap();
    store
        .update(&mut |_| {
            Ok(vec![
                Change::AddHost(Host::new("c0", "vm-container")),
                Change::AddVm(vm_on_c0(name, 77)),
            ])
        })
        .unwrap();
    db
}

/// `status` of container `c0` on the test driver, then `extra`.
fn status_args(db: &Path, state: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "--db",
        db.to_str().unwrap(),
        "--host",
        "c0",
        "--libvirt-uri",
        TEST_URI,
        "--state-dir",
        state.to_str().unwrap(),
        "status",
    ];
    a.extend_from_slice(extra);
    a.into_iter().map(String::from).collect()
}

/// Regression: `status` printed its columns 24 characters wide, so a
/// 37-character VM name pushed its row's cells out from under the header.
#[test]
fn a_37_character_vm_name_keeps_status_columns_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let long = "vm-with-a-name-of-thirty-seven-chars0";
    assert_eq!(long.len(), 37);
    let db = one_vm(dir.path(), long);
    let state = dir.path().join("state");
    let args = |extra: &[&str]| status_args(&db, &state, extra);
    let run = |extra: &[&str]| {
        let a = args(extra);
        let out = guests(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run(&[]);
    let header = table.lines().find(|l| l.starts_with("NAME ")).unwrap();
    let row = table.lines().find(|l| l.starts_with(long)).unwrap();
    let at = header.find("AUTOSTART").unwrap();
    assert_eq!(&row[at..at + 2], "no", "{table}");
    assert_eq!(row.as_bytes()[at - 1], b' ', "{table}");
    // Without the header: the rows alone, as wide.
    assert_eq!(run(&["--no-header"]), format!("{row}\n"));

    // Regression: a closed pipe ended `status` with a panic of println!.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let a = args(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_kvmroll-guests"))
        .args(&a)
        .env_remove("KVMROLL_DB")
        .stdout(std::process::Stdio::from(write))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// Regression: every line went to stderr and to syslog, so under systemd
/// (whose journal is the service's stderr) the journal had it twice, the
/// stderr copy at info even for errors. Now, where stderr is the journal
/// (`JOURNAL_STREAM` names it), a line goes to the journal once, natively,
/// with its priority; elsewhere to stderr and syslog.
#[test]
fn under_systemd_a_line_reaches_the_journal_once() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("log");
    let bind = |rel: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let s = UnixDatagram::bind(&path).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    };
    let received = |s: &UnixDatagram| {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = s.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    };
    let journal = bind("run/systemd/journal/socket");
    let syslog = bind("dev/log");
    // The service's stderr, and JOURNAL_STREAM naming it as systemd would.
    let err_path = dir.path().join("stderr");
    let err = std::fs::File::create(&err_path).unwrap();
    let meta = err.metadata().unwrap();
    let db = dir.path().join("none.db");
    let run = |stream: Option<String>, stderr: std::process::Stdio| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kvmroll-guests"));
        c.args([
            "--db",
            db.to_str().unwrap(),
            "--libvirt-uri",
            TEST_URI,
            "status",
        ])
        .env_remove("KVMROLL_DB")
        .env_remove("JOURNAL_STREAM")
        .env("KVMROLL_LOG_ROOT", &root)
        .stderr(stderr);
        if let Some(s) = stream {
            c.env("JOURNAL_STREAM", s);
        }
        c.output().unwrap()
    };
    let said = "the kvmroll database is unreachable";
    let out = run(
        Some(format!("{}:{}", meta.dev(), meta.ino())),
        std::process::Stdio::from(err),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&err_path).unwrap(), "");
    let lines: Vec<String> = received(&journal)
        .into_iter()
        .filter(|d| d.contains(said))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("PRIORITY=4\n"), "{}", lines[0]);
    assert!(
        lines[0].contains("SYSLOG_IDENTIFIER=kvmroll-guests\n"),
        "{}",
        lines[0]
    );
    assert!(received(&syslog).is_empty());

    // Run by hand: stderr too (not the journal), and the journal once.
    let out = run(None, std::process::Stdio::piped());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches(said).count(), 1, "{stderr}");
    assert!(stderr.starts_with("kvmroll-guests: warning: "), "{stderr}");
    assert_eq!(
        received(&journal)
            .iter()
            .filter(|d| d.contains(said))
            .count(),
        1
    );
}

/// The fields kvmroll-guests(8) lists for `status --json`: the object's,
/// and each VM's (after "each of which has"), notes in parentheses left out.
fn documented_status_fields() -> (Vec<String>, Vec<String>) {
    let page = include_str!("../../../docs/man/kvmroll-guests.8.md");
    let start = page.find("`status --json` prints").unwrap();
    let text = &page[start..];
    let text = &text[..text.find("\n\n").unwrap()];
    let mut plain = String::new();
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let ticks = |t: &str| -> Vec<String> {
        let mut v: Vec<String> = t
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let (top, rows) = plain.split_once("each of which has").unwrap();
    let mut top = ticks(top);
    top.retain(|f| f != "status --json");
    (top, ticks(rows))
}

/// `status --json` has the fields its manual lists, and each VM's are the
/// table's columns.
#[test]
fn status_json_has_the_fields_its_manual_lists() {
    let dir = tempfile::tempdir().unwrap();
    let db = one_vm(dir.path(), "web-1");
    let state = dir.path().join("state");
    let status = |extra: &[&str]| {
        let args = status_args(&db, &state, extra);
        guests(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = status(&["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (top, rows) = documented_status_fields();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&json), top);
    let vm = &json["vms"][0];
    assert_eq!(keys(vm), rows);
    assert_eq!(vm["state"], "not defined");
    let table = status(&[]);
    let table = String::from_utf8(table.stdout).unwrap();
    let header = table.lines().find(|l| l.starts_with("NAME ")).unwrap();
    let mut columns: Vec<String> = header.split_whitespace().map(str::to_lowercase).collect();
    columns.sort();
    assert_eq!(columns, rows);
}

//! The two properties: at the library level, and through the real binary.

use crate::commands::*;
use crate::libvirt::*;
use crate::*;
use kvmroll_core::{open_store, OpenMode, Renderer};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{TestCaseError, TestRunner};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;

/// Whatever the CLI's checks and the store accept leaves every VM
/// renderable, the store keeps what the plan decided, and libvirt takes
/// every domain; a refusal leaves the database file as it was.
pub(crate) fn check_library_case(
    host_cpus: u32,
    ops: &[Op],
    validate: bool,
) -> Result<(), TestCaseError> {
    let dir = scratch();
    let db = dir.path().join("kvmroll.db");
    let mut store = open_store(&db, OpenMode::Create).unwrap();
    store
        .update(&mut |_| Ok(start_ops(host_cpus)))
        .map_err(|e| TestCaseError::fail(format!("starting cluster refused: {e}")))?;
    let mut serial = 0;
    let mut defined: HashSet<String> = HashSet::new();
    for op in ops {
        let before = db_bytes(&db);
        let result = apply(store.as_mut(), op, &mut serial);
        LIBRARY.count(result.is_ok());
        if result.is_err() {
            prop_assert!(
                db_bytes(&db) == before,
                "refused {op:?} changed the database file"
            );
            continue;
        }
        let cluster = store.snapshot().unwrap();
        let mut r = Renderer::new(&cluster);
        for name in cluster.vms.keys() {
            let xml = r.render(name).map_err(|e| {
                TestCaseError::fail(format!(
                    "after accepted {op:?}, VM {name} cannot be rendered: {}",
                    kvmroll_core::error_chain(&e)
                ))
            })?;
            if !defined.insert(xml.clone()) {
                continue;
            }
            kvmroll_core::xml::parse_document(&xml).map_err(|e| {
                TestCaseError::fail(format!("rendered XML does not parse back: {e}\n{xml}"))
            })?;
            test_define(name, &xml).map_err(TestCaseError::fail)?;
            if validate {
                xml_validate(dir.path(), &xml).map_err(TestCaseError::fail)?;
            }
        }
    }
    Ok(())
}

#[test]
pub(crate) fn accepted_changes_render_domains_libvirt_takes() {
    let validate = have_virt_xml_validate();
    let mut runner = TestRunner::new(config(cases(LIBRARY_CASES)));
    let strategy = (select(vec![2u32, 4, 8]), vec(op(), 1..8));
    let result = runner.run(&strategy, |(cpus, ops)| {
        check_library_case(cpus, &ops, validate)
    });
    let checked = VALIDATED.lock().unwrap().as_ref().map_or(0, HashSet::len);
    eprintln!(
        "library: {LIBRARY}; {} domains defined on test:///default, \
         {checked} through virt-xml-validate",
        DEFINED.load(Ordering::Relaxed)
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The CLI on a real SQLite file: a refused command exits non-zero with one
/// line on stderr, prints nothing on stdout and leaves the file's bytes
/// (and its write-ahead log's) as they were.
pub(crate) struct Cli {
    _dir: tempfile::TempDir,
    db: PathBuf,
}

impl Cli {
    fn new(host_cpus: u32) -> Cli {
        let dir = scratch();
        let cli = Cli {
            db: dir.path().join("kvmroll.db"),
            _dir: dir,
        };
        let cpus = host_cpus.to_string();
        for args in [
            &[
                "host",
                "add",
                CONTAINERS[0],
                "--appliance",
                "vm-container",
                "--cpus",
                &cpus,
            ][..],
            &[
                "host",
                "add",
                CONTAINERS[1],
                "--appliance",
                "vm-container",
                "--cpus",
                "2",
            ],
            &["host", "add", "compute-0-0"],
            // The VMs are never defined there, so no refresh is made.
            &["attr", "set", "--global", "libvirt_uri", "test:///default"],
            &[
                "vm",
                "add",
                "vm-a",
                "--container",
                CONTAINERS[0],
                "--cpus",
                "2",
            ],
        ] {
            let out = cli.run(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
        cli
    }

    fn run(&self, args: &[String]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_kvmroll"))
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .env_remove("KVMROLL_DB")
            .env_remove("KVMROLL_DB_READONLY")
            .env_remove("KVMROLL_STAGE")
            .output()
            .unwrap()
    }

    /// The command line of an operation; a value that an argument cannot
    /// carry (a NUL) goes through --value-file.
    fn args(&self, op: &Op) -> Vec<String> {
        let s = |x: &str| x.to_string();
        match op {
            Op::Attr { at, name, value } => {
                let mut a = vec![s("attr"), s("set")];
                match at {
                    At::Global => a.push(s("--global")),
                    At::Os(x) => a.extend([s("--os"), x.clone()]),
                    At::Appliance(x) => a.extend([s("--appliance"), x.clone()]),
                    At::Rack(r) => a.extend([s("--rack"), r.to_string()]),
                    At::Host(h) => a.push(h.clone()),
                }
                a.push(name.clone());
                if value.contains('\0') || value.starts_with('-') || value.ends_with('\n') {
                    let file = self.db.with_file_name("value");
                    std::fs::write(&file, value).unwrap();
                    a.extend([s("--value-file"), file.display().to_string()]);
                } else {
                    a.push(value.clone());
                }
                a
            }
            Op::Add {
                name,
                container,
                mem,
                cpus,
                disks,
                nics,
                virt_type,
            } => {
                let mut a = vec![s("vm"), s("add"), name.clone()];
                a.extend([s("--container"), container.clone()]);
                a.extend([s("--mem"), mem.to_string(), s("--cpus"), cpus.to_string()]);
                for d in disks {
                    a.push(format!("--disk={d}"));
                }
                for n in nics {
                    a.push(format!("--nic={n}"));
                }
                a.push(format!("--virt-type={virt_type}"));
                a
            }
            Op::Set {
                name,
                container,
                mem,
                cpus,
                virt_type,
            } => {
                let mut a = vec![s("vm"), s("set"), name.clone()];
                if let Some(c) = container {
                    a.push(format!("--container={c}"));
                }
                if let Some(m) = mem {
                    a.push(format!("--mem={m}"));
                }
                if let Some(c) = cpus {
                    a.push(format!("--cpus={c}"));
                }
                if let Some(t) = virt_type {
                    a.push(format!("--virt-type={t}"));
                }
                a
            }
        }
    }
}

/// Whether a command line can carry the operation's names: an argument
/// holds no NUL (a value with one goes through --value-file).
pub(crate) fn arg_safe(op: &Op) -> bool {
    match op {
        Op::Attr { at, name, .. } => {
            !name.contains('\0') && !matches!(at, At::Host(h) if h.contains('\0'))
        }
        Op::Add { name, .. } | Op::Set { name, .. } => !name.contains('\0'),
    }
}

pub(crate) fn check_cli_case(host_cpus: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let cli = Cli::new(host_cpus);
    for op in ops.iter().filter(|o| arg_safe(o)) {
        let args = cli.args(op);
        let before = db_bytes(&cli.db);
        let out = cli.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        CLI.count(out.status.success());
        match out.status.code() {
            Some(0) => prop_assert!(err.is_empty(), "kvmroll {args:?} warned: {err}"),
            Some(1 | 2) => {
                prop_assert_eq!(err.lines().count(), 1, "kvmroll {:?}: {}", args, err);
                prop_assert!(err.starts_with("kvmroll: "), "kvmroll {:?}: {}", args, err);
                prop_assert!(out.stdout.is_empty(), "kvmroll {:?} printed", args);
                prop_assert!(
                    db_bytes(&cli.db) == before,
                    "refused kvmroll {args:?} ({err}) changed the database file"
                );
            }
            other => prop_assert!(false, "kvmroll {args:?}: status {other:?}: {err}"),
        }
    }
    Ok(())
}

#[test]
pub(crate) fn refused_commands_leave_the_database_file_as_it_was() {
    let mut runner = TestRunner::new(config(cases(CLI_CASES)));
    let strategy = (select(vec![2u32, 4, 8]), vec(op(), 1..7));
    let result = runner.run(&strategy, |(cpus, ops)| check_cli_case(cpus, &ops));
    eprintln!("kvmroll binary: {CLI}");
    if let Err(e) = result {
        panic!("{e}");
    }
}

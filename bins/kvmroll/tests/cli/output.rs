//! What the commands print, as scripts rely on it: the attribute registry,
//! the typo refusal, one scope's attributes, `--no-header` on every table,
//! columns as wide as any name, and a closed pipe ending a command quietly.

use crate::fixture::*;
use std::process::Stdio;

on_both_engines!(
    a_near_miss_of_a_known_attribute_is_refused_unless_forced,
    attr_list_shows_one_scope,
    every_table_drops_its_header_with_no_header,
    a_long_vm_name_keeps_the_columns_aligned,
);

fn a_near_miss_of_a_known_attribute_is_refused_unless_forced(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    f.refused(
        &["attr", "set", vm, "kvm_autostrat", "true"],
        "did you mean kvm_autostart",
    );
    f.refused(
        &["attr", "set", "--global", "libvirt_ur", "test:///default"],
        "did you mean libvirt_uri",
    );
    f.ok(&["attr", "set", vm, "kvm_autostrat", "true", "--force"]);
    assert_eq!(f.ok(&["attr", "get", vm, "kvm_autostrat"]), "true\n");
    // A site's own attribute, far from every known one, is kept as Rocks kept it.
    f.ok(&["attr", "set", vm, "site_backup_class", "gold"]);
    assert_eq!(f.ok(&["attr", "get", vm, "site_backup_class"]), "gold\n");
}

fn attr_list_shows_one_scope(e: Engine) {
    let f = Fixture::on(e);
    f.ok(&["attr", "set", "--rack", "0", "site_x", "r0"]);
    f.ok(&["attr", "set", "--os", "linux", "site_y", "os"]);
    let global = f.ok(&["attr", "list", "--global", "--no-header"]);
    assert_eq!(global.trim_end(), "libvirt_uri  global  test:///default");
    let rack: serde_json::Value =
        serde_json::from_str(&f.ok(&["attr", "list", "--rack", "0", "--json"])).unwrap();
    assert_eq!(
        rack,
        serde_json::json!([{"name": "site_x", "scope": "rack:0", "value": "r0"}])
    );
    let os = f.ok(&["attr", "list", "--os", "linux"]);
    assert!(os.contains("site_y") && !os.contains("site_x"), "{os}");
    let app = f.ok(&["attr", "list", "--appliance", "vm-container", "--no-header"]);
    assert_eq!(app.trim_end(), "kvm   appliance:vm-container  true");
    // A host and a scope at once, or neither: one line.
    let out = f.run(&["attr", "list", "hosted-vm-0-0-0", "--global"]);
    assert_eq!(out.status.code(), Some(1));
    let out = f.run(&["attr", "list"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Every command that prints a table, with its header's first word.
const TABLES: &[(&[&str], &str)] = &[
    (&["host", "list"], "NAME"),
    (&["appliance", "list"], "APPLIANCE"),
    (&["vm", "list"], "NAME"),
    (&["attr", "list", "hosted-vm-0-0-0"], "NAME"),
    (&["attr", "list", "--global"], "NAME"),
    (&["attr", "known"], "NAME"),
    (&["events"], "ID"),
];

fn every_table_drops_its_header_with_no_header(e: Engine) {
    let f = Fixture::on(e);
    f.execute(
        "INSERT INTO events (time_ms, vm, stage, op, subop, outcome, duration_ms, message)
         VALUES (0, 'hosted-vm-0-0-0', 'allocate', 'prepare', 'begin', 'ok', 1, 'm')",
    );
    for (args, first) in TABLES {
        let with = f.ok(args);
        let mut no_header = args.to_vec();
        no_header.push("--no-header");
        let without = f.ok(&no_header);
        assert!(with.starts_with(first), "kvmroll {args:?}: {with}");
        assert_eq!(
            with.lines().skip(1).collect::<Vec<_>>(),
            without.lines().collect::<Vec<_>>(),
            "kvmroll {args:?} --no-header"
        );
        assert!(!without.is_empty(), "kvmroll {args:?} --no-header: no rows");
    }
}

fn a_long_vm_name_keeps_the_columns_aligned(e: Engine) {
    let f = Fixture::on(e);
    let long = "vm-with-a-name-of-thirty-seven-chars0";
    assert_eq!(long.len(), 37);
    f.ok(&[
        "--no-sync",
        "vm",
        "add",
        long,
        "--container",
        "vm-container-0-0",
    ]);
    let list = f.ok(&["vm", "list"]);
    // Each line's second column starts where the header's does.
    let at = list.lines().next().unwrap().find("CONTAINER").unwrap();
    for line in list.lines().skip(1) {
        assert_eq!(
            &line[at..at + "vm-container-0-0".len()],
            "vm-container-0-0",
            "{list}"
        );
        assert_eq!(line.as_bytes()[at - 1], b' ', "{list}");
    }
}

/// `attr known`'s JSON: one object per attribute, its keys the table's
/// columns, and `kvm_device_3` answered by `kvm_device_N`.
#[test]
fn attr_known_prints_the_registry() {
    let f = Fixture::empty(Engine::Sqlite);
    let all: serde_json::Value = serde_json::from_str(&f.ok(&["attr", "known", "--json"])).unwrap();
    let all = all.as_array().unwrap();
    assert!(all.len() > 30);
    let autostart = all.iter().find(|k| k["name"] == "kvm_autostart").unwrap();
    assert_eq!(
        autostart,
        &serde_json::json!({
            "name": "kvm_autostart",
            "scope": "vm",
            "type": "boolean",
            "default": "false",
            "description": autostart["description"],
        })
    );
    let one = f.ok(&["attr", "known", "kvm_device_3", "--no-header"]);
    let words: Vec<&str> = one.split_whitespace().take(4).collect();
    assert_eq!(words, ["kvm_device_N", "vm", "xml", "-"], "{one}");
    assert_eq!(one.lines().count(), 1, "{one}");
    let out = f.run(&["attr", "known", "kvm_autostrat"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean kvm_autostart"));
    // It needs no database, and made none.
    assert!(!f.file("kvmroll.db").exists());
}

/// Regression: `kvmroll vm list | head -1` printed "kvmroll: Broken pipe"
/// and exited 1. A reader that went away ends the command quietly.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let f = Fixture::on(Engine::Sqlite);
    for args in [
        &["attr", "known"][..],
        &["vm", "list"][..],
        &["host", "list", "--json"][..],
    ] {
        // The pipe's reading end is closed before kvmroll writes a byte.
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let out = f
            .cmd()
            .args(args)
            .stdout(Stdio::from(write))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).as_ref()
            ),
            (Some(0), ""),
            "kvmroll {args:?}"
        );
    }
}

/// The field lists of kvmroll(1)'s JSON OUTPUT: each `- `COMMAND`: ...`
/// item, its fields the backquoted words that follow (parenthesized notes
/// left out), and whether it is an array.
fn documented_json() -> Vec<(String, bool, Vec<String>)> {
    let page = include_str!("../../../../docs/man/kvmroll.1.md");
    let section = page
        .split("\n## JSON OUTPUT\n")
        .nth(1)
        .expect("kvmroll.1.md has a JSON OUTPUT section");
    let section = section.split("\n## ").next().unwrap();
    let mut items: Vec<String> = Vec::new();
    for line in section.lines() {
        if let Some(item) = line.strip_prefix("- ") {
            items.push(item.to_string());
        } else if line.starts_with("  ") && !items.is_empty() {
            let last = items.last_mut().unwrap();
            last.push(' ');
            last.push_str(line.trim());
        } else if line.trim().is_empty() {
            continue;
        } else {
            // A paragraph ends the list.
            if !items.is_empty() {
                break;
            }
        }
    }
    items
        .iter()
        .map(|item| {
            let (cmd, rest) = item.split_once("`:").unwrap();
            let cmd = cmd.trim_start_matches('`').to_string();
            // Drop the notes in parentheses (which name values, not fields).
            let mut plain = String::new();
            let mut depth = 0;
            for c in rest.chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ if depth == 0 => plain.push(c),
                    _ => {}
                }
            }
            let fields = plain
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            (cmd, rest.trim_start().starts_with("an array"), fields)
        })
        .collect()
}

/// The arguments that run a documented command on the fixture's cluster.
fn json_args(cmd: &str) -> Vec<&str> {
    let mut args: Vec<&str> = cmd.split(' ').collect();
    match cmd {
        "host show" => args.push("vm-container-0-0"),
        "vm show" | "attr list" => args.push("hosted-vm-0-0-0"),
        _ => {}
    }
    args.push("--json");
    args
}

/// The commands whose clap definition has `--json`, as `host list`.
fn commands_with_json(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    if cmd.get_arguments().any(|a| a.get_id() == "json") {
        out.push(path.trim().to_string());
    }
    for sub in cmd.get_subcommands() {
        commands_with_json(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

/// Every `--json` output is documented in kvmroll(1) with its fields, and
/// each, parsed, has exactly those fields (every row of an array).
#[test]
fn every_json_output_has_the_fields_its_manual_lists() {
    let documented = documented_json();
    let mut with_json = Vec::new();
    commands_with_json(&kvmroll::command(), "", &mut with_json);
    let mut named: Vec<&str> = documented.iter().map(|(c, _, _)| c.as_str()).collect();
    named.sort_unstable();
    with_json.sort_unstable();
    assert_eq!(
        named, with_json,
        "the commands with --json and those documented"
    );

    let f = Fixture::on(Engine::Sqlite);
    f.execute(
        "INSERT INTO events (time_ms, vm, stage, op, subop, outcome, duration_ms, message, container)
         VALUES (1795673733554, 'hosted-vm-0-0-0', 'allocate', 'prepare', 'begin', 'ok', 1, 'm', 'vm-container-0-0')",
    );
    for (cmd, array, fields) in &documented {
        let text = f.ok(&json_args(cmd));
        let value: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("kvmroll {cmd} --json: not JSON ({e}): {text}"));
        let objects = if *array {
            value
                .as_array()
                .unwrap_or_else(|| panic!("{cmd}: not an array"))
                .clone()
        } else {
            vec![value]
        };
        assert!(
            !objects.is_empty(),
            "kvmroll {cmd} --json: no rows to check"
        );
        let mut want: Vec<&str> = fields.iter().map(String::as_str).collect();
        want.sort_unstable();
        for o in &objects {
            let mut keys: Vec<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, want, "kvmroll {cmd} --json: {o}");
        }
    }
    // Times say their zone.
    let events: serde_json::Value = serde_json::from_str(&f.ok(&["events", "--json"])).unwrap();
    assert_eq!(events[0]["time"], "2026-11-26T06:15:33.554Z");
    let table = f.ok(&["events", "--no-header"]);
    assert!(table.contains("2026-11-26T06:15:33.554Z"), "{table}");
}

/// Tab completion of names from the database: bash, through the script
/// `COMPLETE=bash kvmroll` prints (kvmroll-docs installs the same), and
/// the answers zsh's and fish's scripts ask kvmroll for.
#[test]
fn the_shell_completes_vm_host_and_attribute_names_from_the_database() {
    let f = Fixture::on(Engine::Sqlite);
    f.ok(&[
        "--no-sync",
        "vm",
        "add",
        "web-1",
        "--container",
        "vm-container-0-0",
    ]);
    f.ok(&["attr", "set", "--global", "site_backup_class", "gold"]);
    let bin = env!("CARGO_BIN_EXE_kvmroll");
    // What bash completes for WORDS, the last being completed.
    let bash = |words: &str| {
        let script = format!(
            "source <(COMPLETE=bash {bin}); COMP_WORDS=({words}); \
             COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_TYPE=9; \
             _clap_complete_kvmroll kvmroll \"${{COMP_WORDS[COMP_CWORD]}}\" kvmroll; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .env("KVMROLL_DB", &f.db)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(bash("kvmroll vm show ho"), ["hosted-vm-0-0-0"]);
    assert_eq!(bash("kvmroll vm show w"), ["web-1"]);
    assert_eq!(bash("kvmroll host show vm-c"), ["vm-container-0-0"]);
    assert_eq!(bash("kvmroll attr get web-1 kvm_autost"), ["kvm_autostart"]);
    assert_eq!(bash("kvmroll attr get web-1 site_"), ["site_backup_class"]);

    // zsh and fish ask kvmroll the same way, with their own formats.
    let ask = |shell: &str, index: &str, words: &[&str]| {
        let out = f
            .cmd()
            .env("COMPLETE", shell)
            .env("KVMROLL_DB", &f.db)
            .env("_CLAP_COMPLETE_INDEX", index)
            .env("_CLAP_IFS", "\n")
            .arg("--")
            .args(words)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let zsh = ask("zsh", "3", &["kvmroll", "vm", "show", "w"]);
    assert_eq!(zsh.trim(), "web-1");
    let fish = ask("fish", "", &["kvmroll", "events", "--vm", "w"]);
    assert_eq!(fish.trim(), "web-1");
    // Their scripts call kvmroll back with COMPLETE set.
    for (shell, start) in [("zsh", "#compdef kvmroll"), ("fish", "complete ")] {
        let script = std::process::Command::new(bin)
            .env("COMPLETE", shell)
            .output()
            .unwrap();
        let script = String::from_utf8(script.stdout).unwrap();
        assert!(script.trim_start().starts_with(start), "{script}");
        assert!(
            script.contains(&format!("COMPLETE={shell}"))
                || script.contains(&format!("COMPLETE=\"{shell}\"")),
            "{script}"
        );
    }
}

//! The two udev rule sources, tied: `kvmroll-gen udev HOST` renders
//! 90-kvmroll-vfio.rules (pinned by bins/kvmroll-gen/tests/golden/host/
//! udev.rules), which sets each passed-through device's `driver_override`;
//! the static udev/91-kvmroll-vfio-bind.rules matches that setting and
//! binds the device to vfio-pci. Neither can be made from the other (one is
//! per host, the other the same everywhere), so this test holds them
//! together: every generated device rule sets what the static rule
//! matches, under the same event, in a file udev reads first; and the
//! dracut module puts both into the initramfs. No daemon is needed; the
//! real udevadm reads both in e2e_host.

use kvmroll_core::hostfiles::UDEV_RULES_PATH;
use std::path::{Path, PathBuf};

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One udev key: `KEY OP "VALUE"`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    key: String,
    op: String,
    value: String,
}

/// The keys of one rule line (udev's `KEY OP "VALUE", ...`).
fn keys(rule: &str) -> Vec<Key> {
    let mut out = Vec::new();
    let mut rest = rule.trim();
    while !rest.is_empty() {
        let at = rest
            .find(['=', '!', '+', '-', ':'])
            .unwrap_or_else(|| panic!("no operator in {rest:?}"));
        let after = &rest[at..];
        let two = ["==", "!=", "+=", "-=", ":="];
        let len = if two.iter().any(|op| after.starts_with(op)) {
            2
        } else {
            1
        };
        let value = after[len..]
            .trim_start()
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("an unquoted value in {rule:?}"));
        let end = value
            .find('"')
            .unwrap_or_else(|| panic!("an unclosed value in {rule:?}"));
        out.push(Key {
            key: rest[..at].trim().to_string(),
            op: after[..len].to_string(),
            value: value[..end].to_string(),
        });
        rest = value[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    out
}

/// The rules of a file: its lines that are not comments or blank.
fn rules(text: &str) -> Vec<Vec<Key>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(keys)
        .collect()
}

#[test]
fn the_generated_rules_set_what_the_static_bind_rule_matches() {
    let bind = rules(&read("udev/91-kvmroll-vfio-bind.rules"));
    assert_eq!(bind.len(), 1, "the bind file holds one rule: {bind:?}");
    let matches: Vec<&Key> = bind[0].iter().filter(|k| k.op == "==").collect();
    let on = |k: &Key| k.key.starts_with("ATTR{");
    let set = matches
        .iter()
        .copied()
        .filter(|k| on(k))
        .collect::<Vec<_>>();
    assert_eq!(
        set.len(),
        1,
        "the bind rule matches one attribute the generated rules set: {matches:?}"
    );
    let generated = rules(&read("bins/kvmroll-gen/tests/golden/host/udev.rules"));
    let devices: Vec<&Vec<Key>> = generated
        .iter()
        .filter(|r| r.iter().any(|k| k.key == set[0].key))
        .collect();
    assert!(!devices.is_empty(), "no generated rule sets {}", set[0].key);
    for device in devices {
        for want in &matches {
            let assigned = Key {
                op: "=".into(),
                ..(*want).clone()
            };
            let holds = if on(want) {
                device.contains(&assigned)
            } else {
                device.contains(want)
            };
            assert!(
                holds,
                "the generated rule {device:?} does not give the bind rule's {want:?}"
            );
        }
    }
}

#[test]
fn udev_reads_the_generated_rules_before_the_bind_rule_and_dracut_takes_both() {
    let generated = Path::new(UDEV_RULES_PATH).file_name().unwrap();
    let golden = read("bins/kvmroll-gen/tests/golden/host/udev.rules");
    assert!(
        golden.contains(&format!("installed as {UDEV_RULES_PATH}.")),
        "the golden file names another path than {UDEV_RULES_PATH}"
    );
    // udev sorts the rules files of all its folders by name alone.
    let bind = std::ffi::OsStr::new("91-kvmroll-vfio-bind.rules");
    assert!(generated < bind, "{generated:?} sorts after {bind:?}");
    let setup = read("dracut/90kvmroll/module-setup.sh");
    let inst = setup
        .lines()
        .find(|l| l.trim_start().starts_with("inst_rules "))
        .expect("module-setup.sh installs rules");
    for file in [UDEV_RULES_PATH, "91-kvmroll-vfio-bind.rules"] {
        assert!(
            inst.split_whitespace().any(|w| w == file),
            "dracut's inst_rules lacks {file}: {inst}"
        );
    }
}

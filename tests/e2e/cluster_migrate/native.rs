//! A running VM moved with QEMU's own stream (`kvm_migrate_transport
//! native`) over the rig's network, there and back; and what a native
//! migration does without the destination's `kvm_migrate_address`: the
//! destination's host name resolves nowhere, so it fails and the VM stays.

use crate::{frontend, persistent, state, stderr, Frontend, A, B};
use kvmroll_tests::rig::Node;

/// Bytes received on `node`'s link to the rig's network (`/proc/net/dev`
/// is the reader's network namespace's; `/sys` is the machine's mount).
fn received(node: &Node) -> u64 {
    let out = node.exec(&["cat", "/proc/net/dev"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let eth0 = text.lines().find_map(|l| l.trim().strip_prefix("eth0:"));
    let bytes = eth0.and_then(|rest| rest.split_whitespace().next()?.parse().ok());
    bytes.unwrap_or_else(|| panic!("no eth0 in {text}"))
}

/// Moves `vm` to `to` and checks that it runs there alone, its stream
/// having come over `to`'s link; returns the bytes that link received.
fn moved_natively(f: &Frontend, vm: &str, from: &str, to: &str) -> u64 {
    let before = received(f.node(to));
    let out = f.migrate(vm, to);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with(&format!("VM {vm} moved to {to} (live, ")),
        "{said}"
    );
    assert_eq!(state(f.node(to), vm).as_deref(), Some("running"));
    assert!(persistent(f.node(to), vm), "{to} keeps the VM defined");
    assert_eq!(state(f.node(from), vm), None, "{from} keeps a definition");
    assert_eq!(f.placed(vm), to);
    assert!(!f.marked(vm));
    received(f.node(to)) - before
}

#[test]
fn a_running_vm_moves_natively_over_the_rig_network_and_back() {
    let Some((f, _turn)) = frontend("a_running_vm_moves_natively") else {
        return;
    };
    let vm = f.running_vm("native", A, &[("kvm_migrate_transport", "native")]);
    // The guest's RAM holds SeaBIOS and its tables at least (its zero pages
    // travel as a few bytes each): a tunnelled move would leave the link
    // idle, its data going through the libvirtds' sockets.
    const STREAM: u64 = 100 << 10;
    let there = moved_natively(f, &vm.name, A, B);
    assert!(there > STREAM, "{B}'s link received {there} bytes");
    let back = moved_natively(f, &vm.name, B, A);
    assert!(back > STREAM, "{A}'s link received {back} bytes");
}

#[test]
fn a_native_migration_without_the_destinations_address_fails_and_keeps_the_vm() {
    let Some((f, _turn)) = frontend("a_native_migration_without_the_address") else {
        return;
    };
    let vm = f.running_vm("noaddr", A, &[("kvm_migrate_transport", "native")]);
    let address = f.node(B).address().expect("the rig links its nodes");
    f.k.ok(&["attr", "rm", B, "kvm_migrate_address"]);
    let out = f.migrate(&vm.name, B);
    f.k.ok(&[
        "attr",
        "set",
        B,
        "kvm_migrate_address",
        &address.to_string(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(state(f.node(A), &vm.name).as_deref(), Some("running"));
    assert!(persistent(f.node(A), &vm.name));
    assert_eq!(state(f.node(B), &vm.name), None);
    assert_eq!(f.placed(&vm.name), A);
    assert!(!f.marked(&vm.name));
}

//! `kvmroll vm migrate` killed with SIGKILL at random moments: the VM runs
//! on exactly one container each time, and `kvmroll vm define` puts the
//! database in step.

use crate::{frontend, state, A, B};
use kvmroll_tests::{bin, wait_for};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many migrations are killed.
const ROUNDS: usize = 10;

/// A delay below `most`, different at each call (no random crate here).
fn random_delay(most: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = u64::from(nanos.wrapping_mul(2_654_435_761)) % (most.as_millis() as u64).max(1);
    Duration::from_millis(n)
}

fn running(node: &kvmroll_tests::rig::Node, vm: &str) -> bool {
    state(node, vm).as_deref() == Some("running")
}

/// Whether `node` runs a job (a migration) of `vm`.
fn busy(node: &kvmroll_tests::rig::Node, vm: &str) -> bool {
    let out = node.virsh(&["domjobinfo", vm]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("Job type:") && l.split_whitespace().last() != Some("None"))
}

#[test]
fn a_migration_killed_at_any_moment_leaves_the_vm_on_exactly_one_container() {
    let Some((f, _turn)) = frontend("a_migration_killed_at_any_moment") else {
        return;
    };
    let vm = f.running_vm("killed", A, &[]);
    let (a, b) = (f.node(A), f.node(B));
    let mut moved = 0;
    for round in 0..ROUNDS {
        let (here, there) = if running(a, &vm.name) { (A, B) } else { (B, A) };
        let mut child = bin("kvmroll")
            .arg("--db")
            .arg(&f.k.db)
            .args(["vm", "migrate", &vm.name, "--to", there])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A third of the kills early: kvmroll hands libvirt the migration
        // about 100 ms after it starts here.
        let most = [100, 300, 800][round % 3];
        let delay = random_delay(Duration::from_millis(most));
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        // libvirtd may carry a migration on alone: wait for it to end.
        let one = wait_for(Duration::from_secs(60), || {
            running(a, &vm.name) != running(b, &vm.name)
                && [a, b]
                    .iter()
                    .all(|n| state(n, &vm.name).as_deref() != Some("paused") && !busy(n, &vm.name))
        });
        assert!(
            one,
            "round {round}: {A} says {:?} {:?}, {B} says {:?} {:?}",
            state(a, &vm.name),
            a.virsh(&["domjobinfo", &vm.name]),
            state(b, &vm.name),
            b.virsh(&["domjobinfo", &vm.name]),
        );
        let on = if running(a, &vm.name) { A } else { B };
        moved += usize::from(on != here);
        eprintln!("round {round}: killed after {delay:?}, the VM runs on {on}");
        f.k.ok(&["vm", "define", &vm.name]);
        assert_eq!(f.placed(&vm.name), on, "round {round}");
        assert!(!f.marked(&vm.name), "round {round}");
        let other = if on == A { b } else { a };
        assert_eq!(
            state(other, &vm.name),
            None,
            "round {round}: a definition is left"
        );
    }
    eprintln!("{moved} of {ROUNDS} killed migrations had moved the VM");
    assert!(moved > 0, "no kill landed after libvirt took the migration");
}

//! `stop` where `kvm_guests_on_shutdown` is `migrate`: the running VMs
//! move to another container first, and what did not move is saved.

use super::*;
use crate::known::OnShutdown;
use crate::service::evacuate::Evacuation;
use kvmroll_core::{Change, Cluster, Host, Scope};
use kvmroll_evacuate::{MoveError, Mover, Probe};
use kvmroll_virt::Connector;

/// The other container `c1`, as the evacuation sees it: 8 GiB free. A
/// migration takes the domain off this container's fake libvirt.
struct OtherSide {
    fake: FakeLibvirt,
    /// VMs whose migration fails.
    refuse: Vec<&'static str>,
    asked: Mutex<Vec<String>>,
    /// The limit each migration was given.
    limits: Mutex<Vec<Duration>>,
}

impl Probe for OtherSide {
    fn running(&self, container: &str) -> Result<Vec<String>, MoveError> {
        assert_eq!(container, "c0");
        let hv = self.fake.connect(URI)?;
        let domains = hv.list_domains()?;
        Ok(domains
            .into_iter()
            .filter(|d| d.state != OFF)
            .map(|d| d.name)
            .collect())
    }

    fn free_memory(&self, _: &str) -> Result<u64, MoveError> {
        Ok(8 << 30)
    }
}

impl Mover for OtherSide {
    fn migrate(&self, vm: &str, to: &str, limit: Duration) -> Result<(), MoveError> {
        self.asked.lock().unwrap().push(format!("{vm} to {to}"));
        self.limits.lock().unwrap().push(limit);
        if self.refuse.contains(&vm) {
            return Err("the hook at c1 refused it".into());
        }
        Ok(self.fake.connect(URI)?.undefine(vm)?)
    }
}

/// Container c0 with autostart VMs `a`, `b`, `c`, and c1 with 4 CPUs.
fn cluster() -> Cluster {
    let mut c = Cluster::seeded();
    for (name, cpus) in [("c0", 4), ("c1", 4)] {
        let mut h = Host::new(name, "vm-container");
        h.cpus = cpus;
        c.apply(&Change::AddHost(h)).unwrap();
    }
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        c.apply(&Change::AddVm(vm_on_c0(name, i as u8))).unwrap();
        c.apply(&Change::SetAttr {
            scope: Scope::Host(name.into()),
            name: "kvm_autostart".into(),
            value: "true".into(),
        })
        .unwrap();
    }
    c
}

fn rig(known: Known) -> Rig {
    let mut rig = Rig::with_known(known);
    rig.settings(|s| {
        *s = quick();
        s.on_shutdown = OnShutdown::Migrate;
    });
    for vm in ["a", "b", "c"] {
        rig.fake.add(vm, RUNNING);
    }
    rig
}

fn stop_with(rig: &Rig, other: Arc<OtherSide>) -> Placement {
    let ev = Evacuation {
        probe: other.clone(),
        mover: other.as_ref(),
    };
    let interrupted = AtomicBool::new(false);
    crate::service::stop(
        &rig.svc,
        &rig.fake,
        &interrupted,
        &Notifier::default(),
        Some(&ev),
    )
    .expect("the stop runs")
}

#[test]
fn running_vms_move_first_and_the_one_that_could_not_is_saved() {
    let rig = rig(Known::from_cluster(cluster(), "c0"));
    let other = Arc::new(OtherSide {
        fake: rig.fake.clone(),
        refuse: vec!["c"],
        asked: Mutex::default(),
        limits: Mutex::default(),
    });
    assert_eq!(stop_with(&rig, other.clone()), Placement::AllInPlace);
    let mut asked = other.asked.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, ["a to c1", "b to c1", "c to c1"]);
    for vm in ["a", "b"] {
        assert_eq!(rig.said_of(vm), (VmState::Migrated, "moved to c1".into()));
        assert!(rig.journal().vms[vm].was_running);
        assert!(rig.calls_on(vm).iter().all(|c| !c.starts_with("save")));
    }
    assert_eq!(rig.state_of("c"), VmState::Saved);
    assert!(rig.fake.has_managed_save("c"));
    // The migrations had at most half of the budget the fallbacks leave
    // (60 s less 300 ms): the saves keep the other half.
    for limit in other.limits.lock().unwrap().iter() {
        assert!(
            *limit <= Duration::from_millis(29_850) && *limit > Duration::from_secs(25),
            "{limit:?}"
        );
    }
}

#[test]
fn with_the_database_down_nothing_moves_and_all_are_saved() {
    let mut known = Known::from_cluster(cluster(), "c0");
    known.source = Source::Definitions("connection refused".into());
    let rig = rig(known);
    let other = Arc::new(OtherSide {
        fake: rig.fake.clone(),
        refuse: vec![],
        asked: Mutex::default(),
        limits: Mutex::default(),
    });
    assert_eq!(stop_with(&rig, other.clone()), Placement::AllInPlace);
    assert!(other.asked.lock().unwrap().is_empty());
    for vm in ["a", "b", "c"] {
        assert_eq!(rig.state_of(vm), VmState::Saved, "{vm}");
    }
}

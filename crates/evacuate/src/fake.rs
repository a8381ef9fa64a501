//! A cluster's libvirts in memory, for the evacuation's unit tests: domains
//! run on containers, a migration moves one after a delay, and a container
//! can fail or hang, a migration fail.

use crate::{MoveError, Mover, Probe};
use kvmroll_core::{Change, Cluster, Host, Vm};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct FakeCluster {
    /// The running domains of each container.
    pub running: Mutex<BTreeMap<String, BTreeSet<String>>>,
    pub free: BTreeMap<String, u64>,
    /// Containers whose libvirt refuses every question.
    pub failing: BTreeSet<String>,
    /// Containers whose libvirt never answers.
    pub hanging: BTreeSet<String>,
    /// VMs whose migration fails, with libvirt's message.
    pub refuse: BTreeMap<String, String>,
    /// How long a migration takes.
    pub delay: Duration,
    /// Each migration asked for: (vm, to, limit).
    pub asked: Mutex<Vec<(String, String, Duration)>>,
    now: AtomicUsize,
    /// The most migrations seen at once.
    pub most: AtomicUsize,
}

impl FakeCluster {
    pub fn new(running: &[(&str, &[&str])], free: &[(&str, u64)]) -> FakeCluster {
        FakeCluster {
            running: Mutex::new(
                running
                    .iter()
                    .map(|(c, vms)| (c.to_string(), vms.iter().map(|v| v.to_string()).collect()))
                    .collect(),
            ),
            free: free.iter().map(|(c, b)| (c.to_string(), *b)).collect(),
            ..FakeCluster::default()
        }
    }

    fn answer(&self, container: &str) -> Result<(), MoveError> {
        if self.hanging.contains(container) {
            std::thread::sleep(Duration::from_secs(3600));
        }
        if self.failing.contains(container) {
            return Err(format!("cannot connect to {container}").into());
        }
        Ok(())
    }

    /// Where `vm` runs now.
    pub fn where_is(&self, vm: &str) -> Option<String> {
        let running = self.running.lock().unwrap();
        running
            .iter()
            .find(|(_, vms)| vms.contains(vm))
            .map(|(c, _)| c.clone())
    }
}

impl Probe for FakeCluster {
    fn running(&self, container: &str) -> Result<Vec<String>, MoveError> {
        self.answer(container)?;
        let running = self.running.lock().unwrap();
        Ok(running
            .get(container)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn free_memory(&self, container: &str) -> Result<u64, MoveError> {
        self.answer(container)?;
        Ok(self.free.get(container).copied().unwrap_or(0))
    }
}

impl Mover for FakeCluster {
    fn migrate(&self, vm: &str, to: &str, limit: Duration) -> Result<(), MoveError> {
        self.asked
            .lock()
            .unwrap()
            .push((vm.to_string(), to.to_string(), limit));
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        self.now.fetch_sub(1, Ordering::SeqCst);
        if let Some(why) = self.refuse.get(vm) {
            return Err(why.clone().into());
        }
        let mut running = self.running.lock().unwrap();
        for vms in running.values_mut() {
            vms.remove(vm);
        }
        running
            .entry(to.to_string())
            .or_default()
            .insert(vm.to_string());
        Ok(())
    }
}

/// Each test VM's UUID is its own.
static NEXT_UUID: AtomicU64 = AtomicU64::new(1);

/// A VM of the database on `container`.
pub fn vm(name: &str, container: &str, vcpus: u32, memory_mib: u32) -> Vm {
    let n = NEXT_UUID.fetch_add(1, Ordering::SeqCst);
    Vm {
        id: 0,
        name: name.into(),
        container: Some(container.into()),
        memory_mib,
        vcpus,
        uuid: format!("00000000-0000-4000-8000-{n:012x}"),
        cdrom: None,
        virt_type: "kvm".into(),
        disks: vec![],
        nics: vec![],
        stale: false,
        generation: 0,
    }
}

/// A database with these VM containers (name, CPUs) and VMs.
pub fn cluster(containers: &[(&str, u32)], vms: &[Vm]) -> Cluster {
    let mut c = Cluster::seeded();
    for (name, cpus) in containers {
        let mut h = Host::new(name, "vm-container");
        h.cpus = *cpus;
        c.apply(&Change::AddHost(h)).unwrap();
    }
    for v in vms {
        c.apply(&Change::AddVm(v.clone())).unwrap();
    }
    c
}

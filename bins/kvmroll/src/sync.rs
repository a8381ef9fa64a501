//! Keeping libvirt's definitions in step with the database.
//!
//! After a write, every VM whose rendered XML changed and that the libvirt of
//! its container already has is redefined there (the change takes effect at
//! its next power cycle). When the container cannot be reached the VM is
//! marked stale and the user is told plainly, so a definition never silently
//! differs from the database. Inside a hook stage (a plugin calling
//! `kvmroll`) libvirtd is waiting for the hook, so no call is made: the VM is
//! marked stale and the hook's refresh after `release end` picks it up.
//!
//! A change that touches VMs on many containers (a global attribute) reaches
//! them concurrently, one thread per container up to [`PARALLEL`]: an
//! unreachable container costs its connection time limit once, beside the
//! others, and the whole change takes about the largest container's share.

use kvmroll_cli::error_chain;
use kvmroll_core::{Change, Plan, Store, StoreError};
use kvmroll_virt::{Connector, Hypervisor};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// How many containers are brought in step at once, unless
/// `KVMROLL_SYNC_PARALLEL` says otherwise (1: one after another).
pub const PARALLEL: usize = 16;

/// The number of containers refreshed at once.
fn parallel() -> usize {
    std::env::var("KVMROLL_SYNC_PARALLEL")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(PARALLEL)
}

/// The definitions to bring to one container's libvirt.
type Batch<'p> = Vec<(&'p str, &'p str, String)>;

/// Whether and how definitions are refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Call libvirt now.
    Live,
    /// `--no-sync`: the user asked for the database only.
    Off,
    /// Inside a hook stage: mark stale, call nothing.
    Deferred,
}

/// Opens each container's libvirt at most once per command.
pub struct Syncer<'a> {
    connector: &'a dyn Connector,
    conns: HashMap<String, Result<Box<dyn Hypervisor>, String>>,
    pub mode: SyncMode,
    /// This machine's host name, asked once by the binary: a container of
    /// this name is reached at `qemu:///system`.
    pub local_host: String,
}

impl std::fmt::Debug for Syncer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").field("mode", &self.mode).finish()
    }
}

/// A VM whose definition could not be brought in step.
#[derive(Debug)]
pub struct Missed {
    pub vm: String,
    pub container: String,
    pub reason: String,
}

impl<'a> Syncer<'a> {
    pub fn new(connector: &'a dyn Connector, mode: SyncMode, local_host: String) -> Syncer<'a> {
        Syncer {
            connector,
            conns: HashMap::new(),
            mode,
            local_host,
        }
    }

    /// The connection to a URI, opened on first use.
    pub fn conn(&mut self, uri: &str) -> Result<&dyn Hypervisor, String> {
        if !self.conns.contains_key(uri) {
            let opened = self.connector.connect(uri).map_err(|e| error_chain(&e));
            self.conns.insert(uri.to_string(), opened);
        }
        match self.conns.get(uri) {
            Some(Ok(c)) => Ok(c.as_ref()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("no connection to {uri}")),
        }
    }

    /// Redefines, where libvirt has them, the VMs whose XML the plan changed;
    /// returns those it could not reach.
    pub fn refresh(&mut self, plan: &Plan) -> Vec<Missed> {
        let mut missed = Vec::new();
        // (VM, its XML, its container) grouped by the container's URI.
        let mut batches: BTreeMap<String, Batch<'_>> = BTreeMap::new();
        for (name, xml) in &plan.changed {
            let (Some(xml), Some(vm)) = (xml, plan.after.vms.get(name)) else {
                continue;
            };
            let Some(container) = vm.container.clone() else {
                continue;
            };
            match self.mode {
                SyncMode::Off => continue,
                SyncMode::Deferred => missed.push(Missed {
                    vm: name.clone(),
                    container,
                    reason: "deferred: kvmroll runs inside a libvirt hook".into(),
                }),
                SyncMode::Live => batches
                    .entry(plan.after.libvirt_uri(&container, &self.local_host))
                    .or_default()
                    .push((name, xml, container)),
            }
        }
        missed.extend(self.refresh_batches(batches));
        missed
    }

    /// Brings each URI's batch to its libvirt, several URIs at once; the
    /// connections opened come back to the cache for the rest of the command.
    fn refresh_batches(&mut self, batches: BTreeMap<String, Batch<'_>>) -> Vec<Missed> {
        type Work<'p> = (
            String,
            Option<Result<Box<dyn Hypervisor>, String>>,
            Batch<'p>,
        );
        let queue: Vec<Work<'_>> = batches
            .into_iter()
            .map(|(uri, batch)| {
                let cached = self.conns.remove(&uri);
                (uri, cached, batch)
            })
            .collect();
        let workers = parallel().min(queue.len());
        let queue = Mutex::new(queue);
        let done = Mutex::new(Vec::new());
        let connector = self.connector;
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some((uri, cached, batch)) = next else {
                        break;
                    };
                    let conn = cached
                        .unwrap_or_else(|| connector.connect(&uri).map_err(|e| error_chain(&e)));
                    let missed = define_batch(&conn, batch);
                    done.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((uri, conn, missed));
                });
            }
        });
        let mut missed = Vec::new();
        for (uri, conn, m) in done.into_inner().unwrap_or_else(|e| e.into_inner()) {
            self.conns.insert(uri, conn);
            missed.extend(m);
        }
        missed.sort_by(|a, b| a.vm.cmp(&b.vm));
        missed
    }
}

/// Redefines a batch's VMs where this libvirt already has them.
fn define_batch(conn: &Result<Box<dyn Hypervisor>, String>, batch: Batch<'_>) -> Vec<Missed> {
    batch
        .into_iter()
        .filter_map(|(name, xml, container)| {
            let result =
                conn.as_ref()
                    .map_err(String::clone)
                    .and_then(|hv| match hv.domain(name) {
                        Ok(None) => Ok(()),
                        Ok(Some(_)) => hv.define(xml).map_err(|e| error_chain(&e)),
                        Err(e) => Err(error_chain(&e)),
                    });
            result.err().map(|reason| Missed {
                vm: name.to_string(),
                container,
                reason,
            })
        })
        .collect()
}

/// Marks VMs stale (or not) in the store.
pub fn mark_stale(
    store: &mut dyn Store,
    names: &BTreeSet<String>,
    stale: bool,
) -> Result<(), StoreError> {
    if names.is_empty() {
        return Ok(());
    }
    store.update(&mut |c| {
        Ok(names
            .iter()
            .filter_map(|n| c.vms.get(n))
            .filter(|vm| vm.stale != stale)
            .map(|vm| {
                let mut vm = vm.clone();
                vm.stale = stale;
                Change::SetVm(vm)
            })
            .collect())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmroll_core::{Cluster, Host, Vm};
    use kvmroll_virt::{DomainInfo, DomainState, VirtError};
    use std::sync::{Arc, Condvar};
    use std::time::Duration;

    /// Connections that each wait until `expect` of them are being opened
    /// at once (or a few seconds pass), and count the most seen together:
    /// one after another, that count stays 1.
    struct Gathering {
        state: Mutex<(usize, usize)>,
        all_here: Condvar,
        expect: usize,
        unreachable: String,
        defined: Arc<Mutex<Vec<String>>>,
    }

    struct Fake(Arc<Mutex<Vec<String>>>);

    fn nothing() -> virt::error::Error {
        virt::error::Error::from(std::ffi::CString::new("a\0b").unwrap_err())
    }

    impl Connector for Gathering {
        fn connect(&self, uri: &str) -> Result<Box<dyn Hypervisor>, VirtError> {
            let mut s = self.state.lock().unwrap();
            s.0 += 1;
            s.1 = s.1.max(s.0);
            self.all_here.notify_all();
            let (mut s, _) = self
                .all_here
                .wait_timeout_while(s, Duration::from_secs(3), |s| s.1 < self.expect)
                .unwrap();
            s.0 -= 1;
            if uri == self.unreachable {
                return Err(VirtError::Connect {
                    uri: uri.into(),
                    source: nothing(),
                });
            }
            Ok(Box::new(Fake(self.defined.clone())))
        }
    }

    impl Hypervisor for Fake {
        fn domain(&self, name: &str) -> Result<Option<DomainInfo>, VirtError> {
            Ok(Some(DomainInfo {
                name: name.into(),
                state: DomainState::ShutOff,
                has_managed_save: false,
                saving: false,
            }))
        }
        fn define(&self, xml: &str) -> Result<(), VirtError> {
            self.0.lock().unwrap().push(xml.to_string());
            Ok(())
        }
        fn list_domains(&self) -> Result<Vec<DomainInfo>, VirtError> {
            Ok(Vec::new())
        }
        fn undefine(&self, _: &str) -> Result<(), VirtError> {
            Ok(())
        }
        fn xml(&self, _: &str, _: bool) -> Result<String, VirtError> {
            Ok(String::new())
        }
        fn start(&self, _: &str) -> Result<(), VirtError> {
            Ok(())
        }
        fn start_force_boot(&self, _: &str) -> Result<(), VirtError> {
            Ok(())
        }
        fn shutdown(&self, _: &str) -> Result<(), VirtError> {
            Ok(())
        }
        fn destroy(&self, _: &str) -> Result<(), VirtError> {
            Ok(())
        }
        fn managed_save(&self, _: &str) -> Result<(), VirtError> {
            Ok(())
        }
        fn managed_save_remove(&self, _: &str) -> Result<(), VirtError> {
            Ok(())
        }
        fn managed_save_bypass_cache(&self, _: &str) -> Result<(), VirtError> {
            Ok(())
        }
        fn abort_job(&self, _: &str) -> Result<(), VirtError> {
            Ok(())
        }
        fn job_progress(&self, _: &str) -> Result<Option<(u64, u64)>, VirtError> {
            Ok(None)
        }
        fn grow_disk(&self, _: &str, _: &str, _: u64) -> Result<u64, VirtError> {
            Ok(0)
        }
        fn change_media(&self, _: &str, _: &str) -> Result<(), VirtError> {
            Ok(())
        }
        fn delete_image(&self, _: &str) -> Result<bool, VirtError> {
            Ok(false)
        }
        fn migrate(&self, _: &str, _: &kvmroll_virt::MigrateTo) -> Result<(), VirtError> {
            Ok(())
        }
        fn node(&self) -> Result<kvmroll_virt::NodeResources, VirtError> {
            Ok(kvmroll_virt::NodeResources {
                cpus: 1,
                free_memory: 0,
            })
        }
    }

    /// Four containers of three VMs, every VM changed.
    fn plan() -> Plan {
        let mut after = Cluster::seeded();
        let mut changed = BTreeMap::new();
        for c in 0..4 {
            let container = format!("vm-container-0-{c}");
            after
                .hosts
                .insert(container.clone(), Host::new(&container, "vm-container"));
            for v in 0..3 {
                let name = format!("vm-{c}-{v}");
                let vm = Vm {
                    id: 0,
                    name: name.clone(),
                    container: Some(container.clone()),
                    memory_mib: 128,
                    vcpus: 1,
                    uuid: String::new(),
                    cdrom: None,
                    virt_type: "kvm".into(),
                    stale: false,
                    generation: 0,
                    disks: Vec::new(),
                    nics: Vec::new(),
                };
                after.vms.insert(name.clone(), vm);
                changed.insert(name.clone(), Some(format!("<domain>{name}</domain>")));
            }
        }
        Plan { after, changed }
    }

    #[test]
    fn containers_are_brought_in_step_at_once_and_an_unreachable_one_is_reported() {
        let defined = Arc::new(Mutex::new(Vec::new()));
        let plan = plan();
        let gathering = Gathering {
            state: Mutex::new((0, 0)),
            all_here: Condvar::new(),
            expect: 4,
            unreachable: plan.after.libvirt_uri("vm-container-0-2", "frontend"),
            defined: defined.clone(),
        };
        let mut syncer = Syncer::new(&gathering, SyncMode::Live, "frontend".into());
        let missed = syncer.refresh(&plan);
        assert_eq!(gathering.state.lock().unwrap().1, 4, "not all at once");
        let missed: Vec<&str> = missed.iter().map(|m| m.vm.as_str()).collect();
        assert_eq!(missed, ["vm-2-0", "vm-2-1", "vm-2-2"]);
        assert_eq!(defined.lock().unwrap().len(), 9);
        // The connections stay for the rest of the command: no new connect.
        let again = syncer.refresh(&plan);
        assert_eq!(again.len(), 3);
        assert_eq!(defined.lock().unwrap().len(), 18);
    }
}

//! The decisions of `stop` and `start`, on a libvirt in memory
//! (`kvmroll_virt::fake`) that can also fail, hang and lose a save: who is
//! saved, in which order and how many at once, the fallbacks, the journal,
//! quarantine, and what a stop cut off leaves for the next run. Limits are
//! a few hundred milliseconds, so the whole set runs in seconds. (The
//! end-to-end tests in tests/e2e/guests.rs do the same with real guests.)

mod database;
mod evacuate;
mod start;
mod stop;

use super::{Placement, Service};
use crate::image;
use crate::journal::{Journal, VmState};
use crate::known::{Known, Parallel, Settings, Source, Vm};
use crate::notify::Notifier;
use kvmroll_virt::fake::FakeLibvirt;
use kvmroll_virt::DomainState;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const URI: &str = "fake:///system";

/// Settings short enough for tests: saves past 2 s and shutdowns past
/// 300 ms are overdue.
fn quick() -> Settings {
    Settings {
        parallel: Parallel::Fixed(4),
        stop_budget: Duration::from_secs(60),
        save_timeout: Duration::from_secs(2),
        shutdown_timeout: Duration::from_millis(300),
        destroy_on_timeout: false,
        start_delay: Duration::ZERO,
        bypass_cache: false,
        on_shutdown: crate::known::OnShutdown::Save,
    }
}

/// A container `c0` with a fake libvirt, a root for its save images and a
/// state folder for the journal.
struct Rig {
    _dir: tempfile::TempDir,
    fake: FakeLibvirt,
    svc: Service,
}

impl Rig {
    /// This container's VMs, each with its `kvm_autostart`; libvirt is
    /// empty until the test adds domains to `fake`.
    fn new(vms: &[(&str, bool)]) -> Rig {
        let known = Known {
            vms: vms
                .iter()
                .map(|&(name, autostart)| {
                    let vm = Vm {
                        autostart,
                        settings: quick(),
                    };
                    (name.to_string(), vm)
                })
                .collect(),
            settings: quick(),
            source: Source::Definitions("a test".into()),
        };
        Rig::with_known(known)
    }

    fn with_known(known: Known) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let svc = Service {
            host: "c0".into(),
            uri: URI.into(),
            root: dir.path().join("root"),
            state_dir: dir.path().join("state"),
            settings: known.settings.clone(),
            known,
            parallel: 4,
            disk_rate: None,
        };
        let fake = FakeLibvirt::new();
        let image = image::path(&svc.root, "x");
        fake.save_images_in(image.parent().unwrap());
        Rig {
            _dir: dir,
            fake,
            svc,
        }
    }

    /// Sets the settings of the run and of every VM.
    fn settings(&mut self, f: impl Fn(&mut Settings)) -> &mut Rig {
        f(&mut self.svc.settings);
        f(&mut self.svc.known.settings);
        for vm in self.svc.known.vms.values_mut() {
            f(&mut vm.settings);
        }
        self
    }

    fn stop(&self) -> Placement {
        self.stop_until(&AtomicBool::new(false))
    }

    /// How many saves or restores at once.
    fn parallel(&mut self, n: usize) -> &mut Rig {
        self.svc.parallel = n;
        self
    }

    fn stop_until(&self, interrupted: &AtomicBool) -> Placement {
        self.stop_telling(interrupted, &Notifier::default())
    }

    fn stop_telling(&self, interrupted: &AtomicBool, notifier: &Notifier) -> Placement {
        super::stop(&self.svc, &self.fake, interrupted, notifier, None).expect("the stop runs")
    }

    fn start(&self) -> Placement {
        super::start(&self.svc, &self.fake, &Notifier::default()).expect("the start runs")
    }

    fn journal(&self) -> Journal {
        Journal::load(&self.svc.journal_path())
            .unwrap()
            .expect("a journal")
    }

    /// What the journal says of a VM: its state and note.
    fn said_of(&self, vm: &str) -> (VmState, String) {
        let j = self.journal();
        let e = j.vms.get(vm).unwrap_or_else(|| panic!("{vm} in {j:?}"));
        (e.state, e.note.clone())
    }

    fn state_of(&self, vm: &str) -> VmState {
        self.said_of(vm).0
    }

    fn image(&self, vm: &str) -> PathBuf {
        image::path(&self.svc.root, vm)
    }

    /// The calls made on `vm` (`save a`, `shutdown a`, ...), in order.
    fn calls_on(&self, vm: &str) -> Vec<String> {
        let tail = format!(" {vm}");
        let with_flag = format!(" {vm} ");
        self.fake
            .said()
            .into_iter()
            .filter(|c| c.ends_with(&tail) || c.contains(&with_flag))
            .collect()
    }

    /// The calls made of one kind (`save`, `start`), in order.
    fn calls_of(&self, kind: &str) -> Vec<String> {
        let kind = format!("{kind} ");
        let said = self.fake.said().into_iter();
        said.filter(|c| c.starts_with(&kind)).collect()
    }

    /// What a stop killed while saving `vm` leaves: its journal saying
    /// `saving`, and libvirtd finishing the save on its own in `ends_in`.
    fn killed_mid_save(&self, vm: &str, ends_in: Duration) {
        let mut killed = Journal::new("c0", crate::journal::Phase::Stopping);
        killed.set(vm, VmState::Saving, "");
        killed.save(&self.svc.journal_path()).unwrap();
        self.fake.add(vm, RUNNING).orphan_save(vm, ends_in);
    }

    /// How many connections were opened.
    fn connects(&self) -> usize {
        self.calls_of("connect").len()
    }

    /// The journal states `vm` goes through while `run` runs: read from
    /// the journal file at each libvirt call (before the call acts), then
    /// at the end.
    fn states_during(&self, vm: &str, run: impl FnOnce() -> Placement) -> Vec<VmState> {
        let seen: Arc<Mutex<Vec<VmState>>> = Arc::default();
        let (path, name, into) = (self.svc.journal_path(), vm.to_string(), seen.clone());
        self.fake.on_call(move |_| {
            let now = Journal::load(&path).ok().flatten();
            if let Some(e) = now.as_ref().and_then(|j| j.vms.get(&name)) {
                into.lock().unwrap().push(e.state);
            }
        });
        run();
        let mut seen = seen.lock().unwrap().clone();
        seen.push(self.state_of(vm));
        seen.dedup();
        seen
    }
}

/// VM `name` of container `c0`, the `n`th (its UUID's last digits).
pub(super) fn vm_on_c0(name: &str, n: u8) -> kvmroll_core::Vm {
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

fn missed(p: &Placement) -> Vec<String> {
    match p {
        Placement::AllInPlace => vec![],
        Placement::Missed(m) => m.clone(),
    }
}

/// `DomainState` shorthands.
const RUNNING: DomainState = DomainState::Running;
const PAUSED: DomainState = DomainState::Paused;
const OFF: DomainState = DomainState::ShutOff;

//! What the service knows of this container's VMs: which come back at boot
//! (`kvm_autostart`) and each one's save and shutdown limits, from the
//! cluster database when it answers, else from the kvmroll metadata in
//! libvirt's own definitions (`kvmroll_core::metadata`), which every
//! definition kvmroll writes carries: a frontend that is down at a
//! container's shutdown or boot costs no VM its save or its restore.

use kvmroll_core::metadata::Metadata;
use kvmroll_core::model::parse_bool;
use kvmroll_core::Cluster;
use kvmroll_virt::{Hypervisor, VirtError};
use std::collections::BTreeMap;
use std::time::Duration;

/// The default of `kvm_guests_stop_budget`: ten minutes, under what a
/// host's shutdown is given before people reach for the power button, and
/// what the unit's fixed `TimeoutStopSec` is a safety net over.
pub const STOP_BUDGET_SECS: u64 = 600;

/// `kvm_guests_parallel`: a number, or `auto` (the default), chosen at the
/// start of each run from the machine (`service::auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallel {
    Auto,
    Fixed(usize),
}

impl Parallel {
    /// A number above zero is that many; anything else (unset, `auto`, a
    /// value the attribute check would have refused) is `auto`.
    pub fn parse(value: Option<&str>) -> Parallel {
        match value.map(str::trim).and_then(|v| v.parse::<usize>().ok()) {
            Some(n) if n > 0 => Parallel::Fixed(n),
            _ => Parallel::Auto,
        }
    }
}

/// What `stop` does first (`kvm_guests_on_shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnShutdown {
    /// Saves and shuts down, and nothing else (the default).
    #[default]
    Save,
    /// Live-migrates the running VMs to other containers first, as
    /// `kvmroll host evacuate` does; saves what did not move.
    Migrate,
}

/// The tunables, from the container's resolved attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How many saves (and restores) at once (`kvm_guests_parallel`).
    pub parallel: Parallel,
    /// The whole stop's time (`kvm_guests_stop_budget`): every save and
    /// every fallback fits in it.
    pub stop_budget: Duration,
    pub save_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub destroy_on_timeout: bool,
    pub start_delay: Duration,
    /// Save around the page cache (`kvm_guests_bypass_cache`): stops run
    /// faster, but four images written at once with direct I/O come out
    /// fragmented and restore slower, so it is off unless asked for.
    pub bypass_cache: bool,
    pub on_shutdown: OnShutdown,
}

impl Settings {
    /// The settings `attr` resolves (the container's attributes).
    fn from(attr: &dyn Fn(&str) -> Option<String>) -> Settings {
        let num = |name: &str, default: u64| {
            attr(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        Settings {
            // Saves are bound by the disk, not the CPUs: a few at once keep
            // it busy without thrashing it.
            parallel: Parallel::parse(attr("kvm_guests_parallel").as_deref()),
            stop_budget: Duration::from_secs(num("kvm_guests_stop_budget", STOP_BUDGET_SECS)),
            save_timeout: Duration::from_secs(num("kvm_guests_save_timeout", 300)),
            shutdown_timeout: Duration::from_secs(num("kvm_guests_shutdown_timeout", 120)),
            destroy_on_timeout: attr("kvm_guests_on_timeout").as_deref() == Some("destroy"),
            start_delay: Duration::from_millis(num("kvm_guests_start_delay", 0)),
            bypass_cache: attr("kvm_guests_bypass_cache")
                .as_deref()
                .and_then(parse_bool)
                == Some(true),
            on_shutdown: match attr("kvm_guests_on_shutdown").as_deref() {
                Some("migrate") => OnShutdown::Migrate,
                _ => OnShutdown::Save,
            },
        }
    }

    /// The container's settings as the database resolves them.
    pub fn of(cluster: &Cluster, host: &str) -> Settings {
        Settings::from(&|n| cluster.attr_of(host, n).map(str::to_string))
    }

    /// The container's settings as a definition's metadata carries them.
    pub fn of_metadata(meta: &Metadata) -> Settings {
        Settings::from(&|n| meta.container_settings.get(n).cloned())
    }
}

/// One VM of this container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub autostart: bool,
    pub settings: Settings,
}

/// Where what is known came from.
#[derive(Debug, Clone)]
pub enum Source {
    Database(Cluster),
    /// libvirt's definitions: the database did not answer (why).
    Definitions(String),
}

/// This container's VMs and the settings of the run.
#[derive(Debug, Clone)]
pub struct Known {
    pub vms: BTreeMap<String, Vm>,
    /// For the run as a whole (how many saves at once, the start delay).
    pub settings: Settings,
    pub source: Source,
}

impl Known {
    /// From the database: the VMs it places on `host`.
    pub fn from_cluster(cluster: Cluster, host: &str) -> Known {
        let settings = Settings::of(&cluster, host);
        let vms = cluster
            .vms_on(host)
            .map(|vm| {
                let autostart = cluster
                    .attr_of(&vm.name, "kvm_autostart")
                    .and_then(parse_bool)
                    == Some(true);
                (
                    vm.name.clone(),
                    Vm {
                        autostart,
                        settings: settings.clone(),
                    },
                )
            })
            .collect();
        Known {
            vms,
            settings,
            source: Source::Database(cluster),
        }
    }

    /// From libvirt's definitions: each domain whose kvmroll metadata says
    /// it was defined for `host`. The settings of the run are those most
    /// of them carry (all do, unless a definition is stale).
    pub fn from_definitions(
        hv: &dyn Hypervisor,
        host: &str,
        why: String,
    ) -> Result<Known, VirtError> {
        let mut vms = BTreeMap::new();
        for d in hv.list_domains()? {
            let xml = match hv.xml(&d.name, true) {
                Ok(x) => x,
                Err(e) => {
                    log::warn!(
                        "VM {}: cannot read its definition: {}",
                        d.name,
                        kvmroll_core::error_chain(&e)
                    );
                    continue;
                }
            };
            let meta = kvmroll_core::xml::parse_document(&xml)
                .map_err(|e| e.to_string())
                .and_then(|doc| Metadata::find(&doc).map_err(|e| e.to_string()));
            match meta {
                Ok(Some(m)) if m.container.as_deref() == Some(host) => {
                    let autostart = m.setting("kvm_autostart").and_then(parse_bool) == Some(true);
                    vms.insert(
                        d.name.clone(),
                        Vm {
                            autostart,
                            settings: Settings::of_metadata(&m),
                        },
                    );
                }
                // Another container's, or not kvmroll's: as for any VM
                // the database does not place here.
                Ok(_) => {}
                Err(e) => log::warn!("VM {}: its kvmroll metadata is unreadable: {e}", d.name),
            }
        }
        let mut counts: Vec<(Settings, usize)> = Vec::new();
        for vm in vms.values() {
            match counts.iter_mut().find(|(s, _)| *s == vm.settings) {
                Some((_, n)) => *n += 1,
                None => counts.push((vm.settings.clone(), 1)),
            }
        }
        // The first of the most common, in name order.
        let settings = counts
            .iter()
            .rev()
            .max_by_key(|(_, n)| *n)
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| Settings::from(&|_| None));
        Ok(Known {
            vms,
            settings,
            source: Source::Definitions(why),
        })
    }

    /// The VMs that come back at boot.
    pub fn autostart(&self) -> std::collections::BTreeSet<String> {
        self.vms
            .iter()
            .filter(|(_, vm)| vm.autostart)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A VM's limits; a VM not known here has the run's.
    pub fn limits(&self, name: &str) -> &Settings {
        self.vms.get(name).map_or(&self.settings, |vm| &vm.settings)
    }

    /// The cluster, when the database answered.
    pub fn cluster(&self) -> Option<&Cluster> {
        match &self.source {
            Source::Database(c) => Some(c),
            Source::Definitions(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmroll_virt::{DomainInfo, DomainState};

    /// libvirt, as far as reading definitions goes.
    struct Defined(Vec<(&'static str, String)>);

    impl Hypervisor for Defined {
        fn domain(&self, _: &str) -> Result<Option<DomainInfo>, VirtError> {
            Ok(None)
        }
        fn list_domains(&self) -> Result<Vec<DomainInfo>, VirtError> {
            Ok(self
                .0
                .iter()
                .map(|(n, _)| DomainInfo {
                    name: n.to_string(),
                    state: DomainState::ShutOff,
                    has_managed_save: false,
                    saving: false,
                })
                .collect())
        }
        fn xml(&self, name: &str, inactive: bool) -> Result<String, VirtError> {
            assert!(inactive, "the persistent definition is what counts");
            Ok(self
                .0
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, x)| x.clone())
                .expect("a listed domain"))
        }
        fn define(&self, _: &str) -> Result<(), VirtError> {
            unreachable!()
        }
        fn undefine(&self, _: &str) -> Result<(), VirtError> {
            unreachable!()
        }
        fn start(&self, _: &str) -> Result<(), VirtError> {
            unreachable!()
        }
        fn start_force_boot(&self, _: &str) -> Result<(), VirtError> {
            unreachable!()
        }
        fn shutdown(&self, _: &str) -> Result<(), VirtError> {
            unreachable!()
        }
        fn destroy(&self, _: &str) -> Result<(), VirtError> {
            unreachable!()
        }
        fn managed_save(&self, _: &str) -> Result<(), VirtError> {
            unreachable!()
        }
        fn managed_save_remove(&self, _: &str) -> Result<(), VirtError> {
            unreachable!()
        }
        fn managed_save_bypass_cache(&self, _: &str) -> Result<(), VirtError> {
            unreachable!()
        }
        fn abort_job(&self, _: &str) -> Result<(), VirtError> {
            unreachable!()
        }
        fn job_progress(&self, _: &str) -> Result<Option<(u64, u64)>, VirtError> {
            unreachable!()
        }
        fn grow_disk(&self, _: &str, _: &str, _: u64) -> Result<u64, VirtError> {
            unreachable!()
        }
        fn change_media(&self, _: &str, _: &str) -> Result<(), VirtError> {
            unreachable!()
        }
        fn delete_image(&self, _: &str) -> Result<bool, VirtError> {
            unreachable!()
        }
        fn migrate(&self, _: &str, _: &kvmroll_virt::MigrateTo) -> Result<(), VirtError> {
            unreachable!()
        }
        fn node(&self) -> Result<kvmroll_virt::NodeResources, VirtError> {
            unreachable!()
        }
    }

    /// A definition as kvmroll renders it, with these settings.
    fn defined(name: &str, container: &str, vm: &[(&str, &str)], ct: &[(&str, &str)]) -> String {
        let meta = Metadata {
            generation: 1,
            container: Some(container.into()),
            container_settings: ct
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            settings: vm
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            facts: vec![],
            sha256: kvmroll_core::metadata::digest(&[]),
            ..Metadata::default()
        };
        format!(
            "<domain type='kvm'><name>{name}</name><metadata>{}</metadata></domain>",
            meta.to_xml()
        )
    }

    #[test]
    fn definitions_say_which_vms_come_back_and_their_limits() {
        let save = [
            ("kvm_guests_save_timeout", "600"),
            ("kvm_guests_parallel", "2"),
        ];
        let hv = Defined(vec![
            ("a", defined("a", "c0", &[("kvm_autostart", "true")], &save)),
            (
                "b",
                defined("b", "c0", &[("kvm_autostart", "false")], &save),
            ),
            // Stale: defined before the container's limits changed.
            ("d", defined("d", "c0", &[("kvm_autostart", "true")], &[])),
            ("e", defined("e", "c9", &[("kvm_autostart", "true")], &save)),
            ("hand", "<domain><name>hand</name></domain>".to_string()),
        ]);
        let k = Known::from_definitions(&hv, "c0", "down".into()).unwrap();
        assert_eq!(k.vms.keys().collect::<Vec<_>>(), ["a", "b", "d"]);
        assert_eq!(k.autostart().into_iter().collect::<Vec<_>>(), ["a", "d"]);
        assert_eq!(k.limits("a").save_timeout, Duration::from_secs(600));
        assert_eq!(k.limits("d").save_timeout, Duration::from_secs(300));
        // The run takes what most definitions carry.
        assert_eq!(k.settings.parallel, Parallel::Fixed(2));
        assert!(k.cluster().is_none());
    }

    #[test]
    fn kvm_guests_parallel_is_auto_unless_a_number_above_zero() {
        assert_eq!(Parallel::parse(None), Parallel::Auto);
        assert_eq!(Parallel::parse(Some("auto")), Parallel::Auto);
        assert_eq!(Parallel::parse(Some("0")), Parallel::Auto);
        assert_eq!(Parallel::parse(Some("3")), Parallel::Fixed(3));
    }

    #[test]
    fn kvm_guests_on_shutdown_is_save_unless_migrate() {
        let of = |v: &'static str| {
            Settings::from(&|n| (n == "kvm_guests_on_shutdown").then(|| v.to_string()))
        };
        assert_eq!(Settings::from(&|_| None).on_shutdown, OnShutdown::Save);
        assert_eq!(of("migrate").on_shutdown, OnShutdown::Migrate);
        assert_eq!(of("save").on_shutdown, OnShutdown::Save);
    }

    #[test]
    fn kvm_guests_stop_budget_defaults_to_ten_minutes() {
        let s = Settings::from(&|_| None);
        assert_eq!(s.stop_budget, Duration::from_secs(600));
        let s = Settings::from(&|n| (n == "kvm_guests_stop_budget").then(|| "90".to_string()));
        assert_eq!(s.stop_budget, Duration::from_secs(90));
    }
}

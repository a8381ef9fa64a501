//! One connection to a [`FakeLibvirt`]: the [`Hypervisor`] calls, each
//! recorded and acted out on the shared domains, faults included.

use super::{
    refused, remove_image, write_image, Call, Domain, FakeHosts, FakeLibvirt, Fault, World,
    HANG_CAP,
};
use crate::{DomainInfo, DomainState, Hypervisor, MigrateTo, NodeResources, VirtError};
use std::path::Path;
use std::sync::MutexGuard;
use std::time::Instant;

/// One connection to a [`FakeLibvirt`].
#[derive(Debug)]
pub(super) struct Connection {
    pub(super) fake: FakeLibvirt,
    /// The hosts a migration from here reaches, when opened by [`FakeHosts`].
    pub(super) peers: Option<FakeHosts>,
}

impl Connection {
    /// Records `call`, then runs `op` on domain `name` (a lookup error when
    /// there is none); `err` names a failure of `op`.
    fn act<T>(
        &self,
        call: Call,
        name: &str,
        err: impl FnOnce(String, virt::error::Error) -> VirtError,
        op: impl FnOnce(&mut Domain, Option<&Path>) -> Result<T, ()>,
    ) -> Result<T, VirtError> {
        let mut w = self.fake.world();
        w.record(call);
        let dir = w.save_dir.clone();
        let d = w.domains.get_mut(name).ok_or_else(|| lookup_error(name))?;
        op(d, dir.as_deref()).map_err(|()| err(name.to_owned(), refused()))
    }

    /// A save: checked and begun under the lock, waited for outside it, so
    /// that saves run at the same time as they do in libvirtd.
    fn save(&self, name: &str, bypass_cache: bool) -> Result<(), VirtError> {
        let fail = || VirtError::ManagedSave {
            name: name.to_owned(),
            source: refused(),
        };
        let takes = {
            let mut w = self.fake.world();
            w.record(Call::ManagedSave {
                name: name.to_owned(),
                bypass_cache,
            });
            let d = w.domains.get_mut(name).ok_or_else(|| lookup_error(name))?;
            if !active(&d.state) || d.job {
                return Err(fail());
            }
            d.job = true;
            d.aborted = false;
            let takes = if d.faults.contains(&Fault::SaveHangs) {
                HANG_CAP
            } else {
                d.save_takes
            };
            w.saves_now += 1;
            w.most_saves_at_once = w.most_saves_at_once.max(w.saves_now);
            takes
        };
        let mut w = self.wait_job(name, Instant::now() + takes);
        w.saves_now -= 1;
        let dir = w.save_dir.clone();
        let d = w.domains.get_mut(name).ok_or_else(|| lookup_error(name))?;
        d.job = false;
        let fails = [Fault::SaveHangs, Fault::SaveFails]
            .iter()
            .any(|f| d.faults.contains(f));
        if d.aborted || fails {
            return Err(fail());
        }
        d.state = DomainState::ShutOff;
        if !d.faults.contains(&Fault::SaveLost) {
            d.managed_save = true;
            write_image(dir.as_deref(), name, &d.xml);
        }
        Ok(())
    }
}

impl Connection {
    /// Waits until `until` or until the job of `name` is aborted, and
    /// returns the world locked.
    fn wait_job(&self, name: &str, until: Instant) -> MutexGuard<'_, World> {
        let (lock, cvar) = &*self.fake.world;
        let mut w = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            if now >= until || w.domains.get(name).is_none_or(|d| d.aborted) {
                return w;
            }
            w = cvar
                .wait_timeout(w, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn lookup_error(name: &str) -> VirtError {
    VirtError::Lookup {
        name: name.to_owned(),
        source: refused(),
    }
}

fn active(state: &DomainState) -> bool {
    matches!(state, DomainState::Running | DomainState::Paused)
}

/// The text of the first `<name>` element of a definition.
fn name_in(xml: &str) -> Option<&str> {
    let start = xml.find("<name>")? + "<name>".len();
    let len = xml[start..].find("</name>")?;
    Some(&xml[start..start + len])
}

impl Hypervisor for Connection {
    fn domain(&self, name: &str) -> Result<Option<DomainInfo>, VirtError> {
        let w = self.fake.world();
        let Some(d) = w.domains.get(name) else {
            return Ok(None);
        };
        if d.faults.contains(&Fault::Inspect) {
            return Err(VirtError::Inspect {
                name: name.to_owned(),
                source: refused(),
            });
        }
        Ok(Some(info(name, d)))
    }

    fn list_domains(&self) -> Result<Vec<DomainInfo>, VirtError> {
        let mut w = self.fake.world();
        w.record(Call::List);
        Ok(w.domains
            .iter()
            .filter(|(_, d)| !d.faults.contains(&Fault::Inspect))
            .map(|(n, d)| info(n, d))
            .collect())
    }

    fn define(&self, xml: &str) -> Result<(), VirtError> {
        let mut w = self.fake.world();
        let name = name_in(xml).unwrap_or_default().to_owned();
        w.record(Call::Define(name.clone()));
        let refuse = || VirtError::Define {
            uri: "fake".into(),
            source: refused(),
        };
        if name.is_empty() {
            return Err(refuse());
        }
        match w.domains.get_mut(&name) {
            Some(d) if d.faults.contains(&Fault::DefineFails) => Err(refuse()),
            Some(d) => {
                d.xml = xml.to_owned();
                Ok(())
            }
            None => {
                drop(w);
                self.fake.add_xml(&name, xml, DomainState::ShutOff);
                Ok(())
            }
        }
    }

    fn undefine(&self, name: &str) -> Result<(), VirtError> {
        let mut w = self.fake.world();
        w.record(Call::Undefine(name.to_owned()));
        let dir = w.save_dir.clone();
        match w.domains.remove(name) {
            Some(_) => {
                remove_image(dir.as_deref(), name);
                Ok(())
            }
            None => Err(lookup_error(name)),
        }
    }

    fn xml(&self, name: &str, _inactive: bool) -> Result<String, VirtError> {
        let w = self.fake.world();
        let d = w.domains.get(name).ok_or_else(|| lookup_error(name))?;
        Ok(d.xml.clone())
    }

    fn start(&self, name: &str) -> Result<(), VirtError> {
        let call = Call::Start(name.to_owned());
        let err = |name, source| VirtError::Start { name, source };
        // The hook runs before anything starts, a restore included.
        let refused_by_hook = self.act(call, name, err, |d, dir| {
            if let Some(said) = &d.hook_refuses {
                return Ok(Some(said.clone()));
            }
            let restore_fails = d.managed_save && d.faults.contains(&Fault::RestoreFails);
            if active(&d.state) || d.faults.contains(&Fault::StartFails) || restore_fails {
                return Err(());
            }
            if d.managed_save {
                d.managed_save = false;
                remove_image(dir, name);
            }
            d.state = DomainState::Running;
            Ok(None)
        })?;
        match refused_by_hook {
            Some(said) => Err(VirtError::HookRefused {
                name: name.to_owned(),
                said,
            }),
            None => Ok(()),
        }
    }

    fn start_force_boot(&self, name: &str) -> Result<(), VirtError> {
        let call = Call::StartForceBoot(name.to_owned());
        let err = |name, source| VirtError::StartForceBoot { name, source };
        self.act(call, name, err, |d, dir| {
            if active(&d.state) || d.faults.contains(&Fault::StartFails) {
                return Err(());
            }
            d.managed_save = false;
            remove_image(dir, name);
            d.state = DomainState::Running;
            Ok(())
        })
    }

    fn shutdown(&self, name: &str) -> Result<(), VirtError> {
        let call = Call::Shutdown(name.to_owned());
        let err = |name, source| VirtError::Shutdown { name, source };
        self.act(call, name, err, |d, _| {
            if !active(&d.state) {
                return Err(());
            }
            if d.faults.contains(&Fault::ShutdownIgnored) {
                return Ok(());
            }
            if d.shutdown_takes.is_zero() {
                d.state = DomainState::ShutOff;
            } else {
                d.powers_off_at = Some(Instant::now() + d.shutdown_takes);
            }
            Ok(())
        })
    }

    fn destroy(&self, name: &str) -> Result<(), VirtError> {
        let call = Call::Destroy(name.to_owned());
        let err = |name, source| VirtError::Destroy { name, source };
        self.act(call, name, err, |d, _| {
            if !active(&d.state) || d.faults.contains(&Fault::DestroyFails) {
                return Err(());
            }
            d.state = DomainState::ShutOff;
            Ok(())
        })
    }

    fn managed_save(&self, name: &str) -> Result<(), VirtError> {
        self.save(name, false)
    }

    fn managed_save_remove(&self, name: &str) -> Result<(), VirtError> {
        let call = Call::ManagedSaveRemove(name.to_owned());
        let err = |name, source| VirtError::ManagedSaveRemove { name, source };
        self.act(call, name, err, |d, dir| {
            d.managed_save = false;
            remove_image(dir, name);
            Ok(())
        })
    }

    fn managed_save_bypass_cache(&self, name: &str) -> Result<(), VirtError> {
        self.save(name, true)
    }

    fn abort_job(&self, name: &str) -> Result<(), VirtError> {
        let call = Call::AbortJob(name.to_owned());
        let err = |name, source| VirtError::AbortJob { name, source };
        let aborted = self.act(call, name, err, |d, _| {
            if !d.job {
                return Err(());
            }
            d.aborted = !d.faults.contains(&Fault::AbortIgnored);
            Ok(())
        });
        self.fake.world.1.notify_all();
        aborted
    }

    fn job_progress(&self, name: &str) -> Result<Option<(u64, u64)>, VirtError> {
        let w = self.fake.world();
        let d = w.domains.get(name).ok_or_else(|| lookup_error(name))?;
        Ok(d.job.then_some((1 << 20, 2 << 20)))
    }

    fn grow_disk(&self, name: &str, dev: &str, bytes: u64) -> Result<u64, VirtError> {
        let call = Call::GrowDisk {
            name: name.to_owned(),
            dev: dev.to_owned(),
            bytes,
        };
        let mut w = self.fake.world();
        w.record(call);
        if !w.domains.contains_key(name) {
            return Err(lookup_error(name));
        }
        let size = w
            .disks
            .entry((name.to_owned(), dev.to_owned()))
            .or_default();
        let had = *size;
        *size = had.max(bytes);
        Ok(had)
    }

    fn change_media(&self, name: &str, device_xml: &str) -> Result<(), VirtError> {
        let call = Call::ChangeMedia(name.to_owned());
        let err = |name, source| VirtError::ChangeMedia { name, source };
        self.act(call, name, err, |d, _| {
            if !active(&d.state) {
                return Err(());
            }
            d.live_media = Some(device_xml.to_owned());
            Ok(())
        })
    }

    fn migrate(&self, name: &str, to: &MigrateTo) -> Result<(), VirtError> {
        let fail = || VirtError::Migrate {
            name: name.to_owned(),
            to: to.uri.clone(),
            source: refused(),
        };
        let hangs = {
            let mut w = self.fake.world();
            w.record(Call::Migrate {
                name: name.to_owned(),
                to: to.uri.clone(),
            });
            let d = w.domains.get_mut(name).ok_or_else(|| lookup_error(name))?;
            if !active(&d.state) || d.job || d.faults.contains(&Fault::MigrateFails) {
                return Err(fail());
            }
            if d.faults.contains(&Fault::MigrateRefused) {
                return Err(VirtError::MigrateRefused {
                    name: name.to_owned(),
                    to: to.uri.clone(),
                    said: "refused by the fake hook".into(),
                });
            }
            d.job = true;
            d.aborted = false;
            d.faults.contains(&Fault::MigrateHangs)
        };
        // As libvirt: the destination is reached by the source's daemon,
        // and a migration to the same host is refused.
        let dest = self.peers.as_ref().map(|p| p.host(&to.uri));
        let dest = dest.filter(|d| {
            !d.same_host(&self.fake) && {
                let w = d.world();
                !w.unreachable.contains(&to.uri) && !w.hanging.contains_key(&to.uri)
            }
        });
        let until = Instant::now() + if hangs { HANG_CAP } else { Default::default() };
        let mut w = self.wait_job(name, until);
        let d = w.domains.get_mut(name).ok_or_else(|| lookup_error(name))?;
        d.job = false;
        let Some(dest) = dest.filter(|_| !d.aborted && !hangs) else {
            return Err(fail());
        };
        let moved = w.domains.remove(name).expect("looked up above");
        drop(w);
        let mut dw = dest.world();
        let mut arrived = moved;
        arrived.xml = to.xml.clone();
        arrived.faults.clear();
        arrived.managed_save = false;
        dw.domains.insert(name.to_owned(), arrived);
        Ok(())
    }

    fn node(&self) -> Result<NodeResources, VirtError> {
        Ok(self.fake.world().node.unwrap_or(NodeResources {
            cpus: 64,
            free_memory: 64 << 30,
        }))
    }

    fn delete_image(&self, path: &str) -> Result<bool, VirtError> {
        let mut w = self.fake.world();
        w.record(Call::DeleteImage(path.to_owned()));
        Ok(w.images.remove(path))
    }
}

/// What a domain looks like to kvmroll.
fn info(name: &str, d: &Domain) -> DomainInfo {
    DomainInfo {
        name: name.to_owned(),
        state: d.state.clone(),
        has_managed_save: d.managed_save,
        saving: d.orphan_save_ends.is_some(),
    }
}

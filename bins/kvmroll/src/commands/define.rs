//! Bringing libvirt in step with the database: after every write, and
//! `kvmroll vm define` and `vm sync`.

use super::{refused, App, Error, Exit};
use crate::sync::{mark_stale, Missed, SyncMode};
use kvmroll_cli::error_chain;
use kvmroll_core::{Change, Cluster, ClusterError, Plan};
use kvmroll_virt::DomainState;
use std::collections::BTreeSet;
/// Why libvirt's definition (`current`) does not carry the metadata of
/// kvmroll's rendering (`rendered`): none (defined before kvmroll wrote
/// it), an older generation, or other settings. The hook and
/// kvmroll-guests decide from it when the database does not answer.
fn metadata_differs(rendered: &str, current: &str) -> Option<String> {
    use kvmroll_core::metadata::Metadata;
    let read = |xml: &str| {
        kvmroll_core::xml::parse_document(xml)
            .ok()
            .and_then(|d| Metadata::find(&d).ok().flatten())
    };
    let (want, have) = (read(rendered)?, read(current));
    match have {
        None => Some("it had no kvmroll metadata".into()),
        Some(h) if h.generation != want.generation => Some(format!(
            "its kvmroll metadata was generation {}, now {}",
            h.generation, want.generation
        )),
        Some(h) if h != want => Some("its kvmroll metadata differs".into()),
        Some(_) => None,
    }
}

impl App<'_> {
    /// Writes changes, then brings libvirt in step.
    pub(super) fn write(
        &mut self,
        changes: &mut dyn FnMut(&Cluster) -> Result<Vec<Change>, ClusterError>,
    ) -> Result<(Plan, Exit), Error> {
        let plan = self.store.update(changes)?;
        let outcome = self.after_write(&plan)?;
        Ok((plan, outcome))
    }

    pub(super) fn after_write(&mut self, plan: &Plan) -> Result<Exit, Error> {
        let missed = self.sync.refresh(plan);
        self.report_missed(missed)
    }

    pub(super) fn report_missed(&mut self, missed: Vec<Missed>) -> Result<Exit, Error> {
        if missed.is_empty() {
            return Ok(Exit::Done);
        }
        let names: BTreeSet<String> = missed.iter().map(|m| m.vm.clone()).collect();
        mark_stale(self.store.as_mut(), &names, true)?;
        if self.sync.mode == SyncMode::Deferred {
            for m in &missed {
                eprintln!(
                    "kvmroll: VM {}: libvirt definition marked for refresh (inside a hook stage)",
                    m.vm
                );
            }
            return Ok(Exit::Done);
        }
        for m in &missed {
            eprintln!(
                "kvmroll: warning: VM {} changed in the database but its libvirt definition on {} \
                 was not refreshed ({}); it is marked stale: run `kvmroll vm define {}` once the \
                 container is reachable",
                m.vm, m.container, m.reason, m.vm
            );
        }
        Ok(Exit::Stale)
    }

    /// Looks up and renders every VM before libvirt is touched, so that a
    /// bad name is refused having changed nothing. VMs not placed on a
    /// container are an error for `define` and skipped by `sync`.
    pub(super) fn render_all(
        &self,
        c: &Cluster,
        names: &[String],
        what: &str,
        unplaced_is_error: bool,
    ) -> Result<Vec<(String, String, String)>, Error> {
        if self.sync.mode == SyncMode::Deferred {
            return Err(refused(format!(
                "kvmroll vm {what} cannot run inside a libvirt hook stage: libvirtd is waiting for the hook"
            )));
        }
        let mut renderer = kvmroll_core::Renderer::new(c);
        let mut jobs = Vec::new();
        for name in names {
            let vm = c.vm(name)?;
            let Some(container) = vm.container.clone() else {
                if unplaced_is_error {
                    return Err(refused(format!("VM {name} is not placed on a container")));
                }
                continue;
            };
            jobs.push((name.clone(), container, renderer.render(name)?));
        }
        Ok(jobs)
    }

    /// Clears `stale` for the VMs now in step with libvirt; fails naming how
    /// many of `total` were not.
    pub(super) fn settle(
        &mut self,
        in_step: &BTreeSet<String>,
        failed: usize,
        total: usize,
        what: &str,
    ) -> Result<Exit, Error> {
        mark_stale(self.store.as_mut(), in_step, false)?;
        if failed > 0 {
            return Err(refused(format!(
                "{failed} of {total} VM(s) could not be {what}"
            )));
        }
        Ok(Exit::Done)
    }

    /// Renders and defines VMs in their containers' libvirt; clears `stale`
    /// for those that succeed.
    pub(super) fn define(&mut self, c: &Cluster, names: &[String]) -> Result<Exit, Error> {
        let jobs = self.render_all(c, names, "define", true)?;
        let mut done = BTreeSet::new();
        let mut failed = 0;
        for (name, container, xml) in jobs {
            let uri = self.uri(c, &container);
            match self
                .sync
                .conn(&uri)
                .and_then(|hv| hv.define(&xml).map_err(|e| error_chain(&e)))
            {
                Ok(()) => {
                    eprintln!("kvmroll: VM {name} defined on {container} ({uri})");
                    done.insert(name);
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("kvmroll: VM {name}: cannot define it on {container} ({uri}): {e}");
                }
            }
        }
        self.settle(&done, failed, names.len(), "defined")
    }

    /// Redefines each VM whose libvirt definition differs from its rendering
    /// (or that is marked stale); leaves alone those libvirt does not have.
    /// With `from`, a VM defined on that container but placed on another is
    /// moved there first ([`App::move_definition`]).
    pub(super) fn sync_vms(
        &mut self,
        c: &Cluster,
        names: &[String],
        from: Option<&str>,
    ) -> Result<Exit, Error> {
        let jobs = self.render_all(c, names, "sync", false)?;
        let mut in_step = BTreeSet::new();
        let mut failed = 0;
        for (name, container, xml) in jobs {
            let stale = c.vm(&name)?.stale;
            let uri = self.uri(c, &container);
            if let Some(old) = from.filter(|old| *old != container) {
                match self.move_definition(c, &name, old, &container, &xml) {
                    Ok(Some(what)) => {
                        eprintln!("kvmroll: VM {name}: {what}");
                        in_step.insert(name);
                        continue;
                    }
                    // Not defined there: synced where it belongs, as any.
                    Ok(None) => {}
                    Err(e) => {
                        failed += 1;
                        eprintln!(
                            "kvmroll: VM {name}: cannot move it from {old} to {container}: {e}"
                        );
                        continue;
                    }
                }
            }
            let result = self.sync.conn(&uri).and_then(|hv| {
                if hv.domain(&name).map_err(|e| error_chain(&e))?.is_none() {
                    return Ok("not defined in libvirt; nothing to refresh".to_string());
                }
                let current = hv.xml(&name, true).map_err(|e| error_chain(&e))?;
                let mut diffs =
                    kvmroll_core::drift::compare(&xml, &current).map_err(|e| e.to_string())?;
                if let Some(why) = metadata_differs(&xml, &current) {
                    diffs.push(why);
                }
                if diffs.is_empty() && !stale {
                    return Ok("in step".to_string());
                }
                hv.define(&xml).map_err(|e| error_chain(&e))?;
                Ok(if diffs.is_empty() {
                    "redefined (was marked stale)".to_string()
                } else {
                    format!("redefined: {}", diffs.join("; "))
                })
            });
            match result {
                Ok(what) => {
                    eprintln!("kvmroll: VM {name} on {container}: {what}");
                    in_step.insert(name);
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("kvmroll: VM {name}: cannot sync it on {container} ({uri}): {e}");
                }
            }
        }
        self.settle(&in_step, failed, names.len(), "synced")
    }

    /// Moves a VM's definition from container `old`, whose libvirt has it,
    /// to `new`, where the database now places it: defines `xml` on `new`,
    /// then undefines it on `old`. A VM running or saved on `old` is left
    /// there. `None` when `old` does not have it.
    pub(super) fn move_definition(
        &mut self,
        c: &Cluster,
        name: &str,
        old: &str,
        new: &str,
        xml: &str,
    ) -> Result<Option<String>, String> {
        let (old_uri, new_uri) = (self.uri(c, old), self.uri(c, new));
        let Some(there) = self
            .sync
            .conn(&old_uri)?
            .domain(name)
            .map_err(|e| error_chain(&e))?
        else {
            return Ok(None);
        };
        if there.state != DomainState::ShutOff {
            return Err(format!("it runs on {old}"));
        }
        if there.has_managed_save {
            return Err(format!(
                "it has a saved image on {old}, which it needs to resume"
            ));
        }
        self.sync
            .conn(&new_uri)?
            .define(xml)
            .map_err(|e| format!("defining it on {new} ({new_uri}): {}", error_chain(&e)))?;
        self.sync.conn(&old_uri)?.undefine(name).map_err(|e| {
            format!(
                "defined on {new}, but undefining it on {old}: {}",
                error_chain(&e)
            )
        })?;
        Ok(Some(format!("moved from {old} to {new} ({new_uri})")))
    }
}

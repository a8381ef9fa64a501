//! [`Hypervisor`] over a real libvirt connection, opened by [`Libvirt`].

use std::ffi::CString;
use std::sync::Once;

use virt::connect::Connect;
use virt::domain::{Domain, DomainPausedReason, DomainState as VirDomainState, DomainStateReason};
use virt::enumutil::Enum;
use virt::error::{Error, ErrorNumber};
use virt::sys;

use crate::{
    Connector, DomainInfo, DomainState, Hypervisor, MigrateTo, NodeResources, Transport, VirtError,
};

/// Opens real libvirt connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Libvirt;

impl Connector for Libvirt {
    fn connect(&self, uri: &str) -> Result<Box<dyn Hypervisor>, VirtError> {
        // libvirt's default error handler prints every error to stderr; we
        // return ours instead, so it is reported once, where it is handled.
        static QUIET: Once = Once::new();
        QUIET.call_once(virt::error::clear_error_callback);

        let connect_err = |source| VirtError::Connect {
            uri: uri.to_owned(),
            source,
        };
        // virt 0.5 panics on a NUL inside the URI; turn it into an error.
        CString::new(uri).map_err(|e| connect_err(e.into()))?;
        let conn = Connect::open(Some(uri)).map_err(connect_err)?;
        Ok(Box::new(Connection {
            uri: uri.to_owned(),
            conn,
        }))
    }
}

/// One open connection; dropping `conn` closes it (`virConnectClose`).
#[derive(Debug)]
struct Connection {
    uri: String,
    conn: Connect,
}

impl Connection {
    fn lookup(&self, name: &str) -> Result<Domain, VirtError> {
        self.conn
            .lookup_domain_by_name(name)
            .map_err(|source| VirtError::Lookup {
                name: name.to_owned(),
                source,
            })
    }

    /// Looks up `name` and runs `op` on it, naming the domain in its error.
    fn with_domain<T>(
        &self,
        name: &str,
        op: impl FnOnce(&Domain) -> Result<T, Error>,
        err: impl FnOnce(String, Error) -> VirtError,
    ) -> Result<T, VirtError> {
        let dom = self.lookup(name)?;
        op(&dom).map_err(|source| err(name.to_owned(), source))
    }
}

impl Hypervisor for Connection {
    fn domain(&self, name: &str) -> Result<Option<DomainInfo>, VirtError> {
        let dom = match self.lookup(name) {
            Ok(dom) => dom,
            Err(e) if e.is_no_domain() => return Ok(None),
            Err(e) => return Err(e),
        };
        match info(&dom, name) {
            Err(e) if e.is_no_domain() => Ok(None),
            other => other.map(Some),
        }
    }

    fn list_domains(&self) -> Result<Vec<DomainInfo>, VirtError> {
        let flags = sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE | sys::VIR_CONNECT_LIST_DOMAINS_INACTIVE;
        let doms = self
            .conn
            .list_all_domains(flags)
            .map_err(|source| VirtError::List {
                uri: self.uri.clone(),
                source,
            })?;
        let mut infos = Vec::with_capacity(doms.len());
        for dom in &doms {
            let name = dom.name().unwrap_or_default();
            match info(dom, &name) {
                Ok(i) => infos.push(i),
                // Undefined since it was listed: it is no longer there.
                Err(e) if e.is_no_domain() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(infos)
    }

    fn define(&self, xml: &str) -> Result<(), VirtError> {
        self.conn
            .define_domain_xml(xml)
            .map(drop)
            .map_err(|source| VirtError::Define {
                uri: self.uri.clone(),
                source,
            })
    }

    fn undefine(&self, name: &str) -> Result<(), VirtError> {
        let with_nvram = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
        self.with_domain(
            name,
            |dom| match dom.undefine_flags(with_nvram) {
                // Drivers without NVRAM (the test driver) reject the flag as
                // unsupported; there is no NVRAM to remove then.
                Err(e) if e.code() == Enum::Known(ErrorNumber::InvalidArg) => {
                    log::debug!("undefining {name} without VIR_DOMAIN_UNDEFINE_NVRAM: {e}");
                    dom.undefine_flags(sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
                }
                other => other,
            },
            |name, source| VirtError::Undefine { name, source },
        )
    }

    fn xml(&self, name: &str, inactive: bool) -> Result<String, VirtError> {
        let flags = if inactive {
            sys::VIR_DOMAIN_XML_INACTIVE
        } else {
            0
        };
        self.with_domain(
            name,
            |dom| dom.xml_desc(flags),
            |name, source| VirtError::Xml { name, source },
        )
    }

    fn start(&self, name: &str) -> Result<(), VirtError> {
        self.with_domain(name, Domain::create, |name, source| {
            match hook_said(&source) {
                Some(said) => VirtError::HookRefused { name, said },
                None => VirtError::Start { name, source },
            }
        })
    }

    fn start_force_boot(&self, name: &str) -> Result<(), VirtError> {
        self.with_domain(
            name,
            |dom| match dom.create_with_flags(sys::VIR_DOMAIN_START_FORCE_BOOT) {
                // Drivers that do not know the flag (the test driver) reject it
                // as unsupported; removing the image first has the same effect,
                // which is how `virsh start --force-boot` copes too.
                Err(e) if e.code() == Enum::Known(ErrorNumber::InvalidArg) => {
                    log::debug!("emulating VIR_DOMAIN_START_FORCE_BOOT for {name}: {e}");
                    if dom.has_managed_save(0)? {
                        dom.managed_save_remove(0)?;
                    }
                    dom.create()
                }
                other => other,
            },
            |name, source| VirtError::StartForceBoot { name, source },
        )
    }

    fn shutdown(&self, name: &str) -> Result<(), VirtError> {
        self.with_domain(name, Domain::shutdown, |name, source| VirtError::Shutdown {
            name,
            source,
        })
    }

    fn destroy(&self, name: &str) -> Result<(), VirtError> {
        self.with_domain(name, Domain::destroy, |name, source| VirtError::Destroy {
            name,
            source,
        })
    }

    fn managed_save(&self, name: &str) -> Result<(), VirtError> {
        self.with_domain(
            name,
            |dom| dom.managed_save(0),
            |name, source| VirtError::ManagedSave { name, source },
        )
    }

    fn managed_save_bypass_cache(&self, name: &str) -> Result<(), VirtError> {
        self.with_domain(
            name,
            |dom| match dom.managed_save(sys::VIR_DOMAIN_SAVE_BYPASS_CACHE) {
                Err(e) if e.code() == Enum::Known(ErrorNumber::InvalidArg) => {
                    log::debug!("VIR_DOMAIN_SAVE_BYPASS_CACHE unsupported for {name}: {e}");
                    dom.managed_save(0)
                }
                other => other,
            },
            |name, source| VirtError::ManagedSave { name, source },
        )
    }

    fn managed_save_remove(&self, name: &str) -> Result<(), VirtError> {
        self.with_domain(
            name,
            |dom| dom.managed_save_remove(0),
            |name, source| VirtError::ManagedSaveRemove { name, source },
        )
    }

    fn abort_job(&self, name: &str) -> Result<(), VirtError> {
        self.with_domain(
            name,
            |dom| {
                // SAFETY: `dom` is a live domain reference for the whole call;
                // virDomainAbortJob only reads the pointer, and its -1 return
                // leaves the reason in libvirt's per-thread last error, which
                // check-then-read below takes on this same thread.
                let ret = unsafe { sys::virDomainAbortJob(dom.as_ptr()) };
                if ret < 0 {
                    Err(virt::error::Error::last_error())
                } else {
                    Ok(())
                }
            },
            |name, source| VirtError::AbortJob { name, source },
        )
    }

    fn grow_disk(&self, name: &str, dev: &str, bytes: u64) -> Result<u64, VirtError> {
        let dom = self.lookup(name)?;
        let fail = |source| VirtError::GrowDisk {
            name: name.to_owned(),
            dev: dev.to_owned(),
            source,
        };
        let had = dom.block_info(dev, 0).map_err(fail)?.capacity;
        // QEMU's block_resize shrinks as readily as it grows.
        if had < bytes {
            dom.block_resize(dev, bytes, sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                .map_err(fail)?;
        }
        Ok(had)
    }

    fn change_media(&self, name: &str, device_xml: &str) -> Result<(), VirtError> {
        self.with_domain(
            name,
            |dom| dom.update_device_flags(device_xml, sys::VIR_DOMAIN_AFFECT_LIVE),
            |name, source| VirtError::ChangeMedia { name, source },
        )
    }

    fn delete_image(&self, path: &str) -> Result<bool, VirtError> {
        let fail = |source| VirtError::DeleteImage {
            path: path.to_owned(),
            source,
        };
        let no_vol = |e: &Error| e.code() == Enum::Known(ErrorNumber::NoStorageVolume);
        // A pool that covers the folder already knows the file.
        match self.conn.lookup_storage_vol_by_path(path) {
            Ok(vol) => return vol.delete(0).map(|()| true).map_err(fail),
            Err(e) if no_vol(&e) => {}
            Err(e) => return Err(fail(e)),
        }
        let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
        let dir = if dir.is_empty() { "/" } else { dir };
        // A transient pool goes with the daemon even if this process dies
        // before destroying it.
        let xml = format!(
            "<pool type='dir'><name>kvmroll-delete-{}-{}</name>\
             <target><path>{}</path></target></pool>",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            xml_text(dir)
        );
        let pool = self.conn.create_storage_pool_xml(&xml, 0).map_err(fail)?;
        let deleted = match pool.lookup_storage_vol_by_name(file) {
            Ok(vol) => vol.delete(0).map(|()| true),
            Err(e) if no_vol(&e) => Ok(false),
            Err(e) => Err(e),
        };
        if let Err(e) = pool.destroy() {
            log::warn!("the transient storage pool for {dir} stays until libvirtd restarts: {e}");
        }
        deleted.map_err(fail)
    }

    fn migrate(&self, name: &str, to: &MigrateTo) -> Result<(), VirtError> {
        let dom = self.lookup(name)?;
        let mut flags = sys::VIR_MIGRATE_PEER2PEER
            | sys::VIR_MIGRATE_PERSIST_DEST
            | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
        if to.live {
            flags |= sys::VIR_MIGRATE_LIVE;
        }
        if to.transport == Transport::Tunnelled {
            flags |= sys::VIR_MIGRATE_TUNNELLED;
        }
        // The same definition live and persistent: kvmroll's rendering for
        // the destination (its pins, its metadata).
        // libvirt's default native URI is the destination's host name,
        // which the source may not resolve (or resolve to another network):
        // the destination's migration address, when known, says where.
        let migrate_uri = match to.transport {
            Transport::Native => to.migrate_uri.clone(),
            Transport::Tunnelled => None,
        };
        let params = virt::domain::MigrateParameters {
            dest_xml: Some(to.xml.clone()),
            persist_xml: Some(to.xml.clone()),
            uri: migrate_uri.clone(),
            ..Default::default()
        };
        // virt 0.5 panics on a NUL inside its strings; turn it into an error.
        let fail = |source| VirtError::Migrate {
            name: name.to_owned(),
            to: to.uri.clone(),
            source,
        };
        for s in [&to.uri, &to.xml].into_iter().chain(migrate_uri.as_ref()) {
            CString::new(s.as_str()).map_err(|e| fail(e.into()))?;
        }
        dom.migrate_to_uri3(Some(&to.uri), params, flags)
            .map_err(|source| match hook_said(&source) {
                Some(said) => VirtError::MigrateRefused {
                    name: name.to_owned(),
                    to: to.uri.clone(),
                    said,
                },
                None => fail(source),
            })
    }

    fn node(&self) -> Result<NodeResources, VirtError> {
        let fail = |source| VirtError::NodeInfo {
            uri: self.uri.clone(),
            source,
        };
        let info = self.conn.node_info().map_err(fail)?;
        let free_memory = match available_memory(&self.conn) {
            Some(bytes) => bytes,
            // Drivers without memory statistics (the test driver).
            None => self.conn.free_memory().map_err(fail)?,
        };
        Ok(NodeResources {
            cpus: info.cpus,
            free_memory,
        })
    }

    fn job_progress(&self, name: &str) -> Result<Option<(u64, u64)>, VirtError> {
        self.with_domain(
            name,
            |dom| {
                let job = dom.job_info()?;
                let total = job.data_total.unwrap_or(0);
                Ok((job.r#type != sys::VIR_DOMAIN_JOB_NONE as i32)
                    .then(|| (job.data_processed.unwrap_or(0), total)))
            },
            |name, source| VirtError::Inspect { name, source },
        )
    }
}

/// The memory a new guest can have on the connection's host, in bytes:
/// free memory plus the buffers and page cache the kernel gives back
/// (`virNodeGetMemoryStats` of all cells, in KiB). Free memory alone is
/// a fraction of that on a host whose cache fills its memory, as any host
/// that has run a while. `None` where the statistics are not known.
fn available_memory(conn: &Connect) -> Option<u64> {
    let cells = sys::VIR_NODE_MEMORY_STATS_ALL_CELLS;
    let mut n: std::os::raw::c_int = 0;
    // SAFETY: `conn` is an open connection for the whole call; with a null
    // array libvirt only writes the number of fields into `n`.
    let ret = unsafe {
        sys::virNodeGetMemoryStats(conn.as_ptr(), cells, std::ptr::null_mut(), &mut n, 0)
    };
    if ret < 0 || n <= 0 {
        return None;
    }
    let mut stats = vec![
        sys::virNodeMemoryStats {
            field: [0; sys::VIR_NODE_MEMORY_STATS_FIELD_LENGTH as usize],
            value: 0,
        };
        n as usize
    ];
    // SAFETY: `stats` holds `n` entries, which is as many as libvirt was
    // told it may fill; it writes back how many it did into `n`.
    let ret =
        unsafe { sys::virNodeGetMemoryStats(conn.as_ptr(), cells, stats.as_mut_ptr(), &mut n, 0) };
    if ret < 0 {
        return None;
    }
    let mut kib = 0u64;
    for s in stats.iter().take(n.max(0) as usize) {
        // SAFETY: libvirt NUL-terminates each field name within its array.
        let name = unsafe { std::ffi::CStr::from_ptr(s.field.as_ptr()) };
        if matches!(name.to_bytes(), b"free" | b"buffers" | b"cached") {
            kib += s.value;
        }
    }
    Some(kib << 10)
}

/// Text for an XML element's content.
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Reads what kvmroll wants to know of `dom`, called `name` in errors.
fn info(dom: &Domain, name: &str) -> Result<DomainInfo, VirtError> {
    let inspect = |source| VirtError::Inspect {
        name: name.to_owned(),
        source,
    };
    // `Domain::info` rather than `Domain::state`: virt 0.5's `state` ignores
    // libvirt's error and reports an unknown state instead.
    let state = domain_state(dom.info().map_err(inspect)?.state);
    // The reason, asked only of a paused domain. virt's `state` hides a
    // failed call as an unknown state, which reads here as "not saving".
    let saving = state == DomainState::Paused
        && matches!(
            dom.state(),
            Ok((
                Enum::Known(VirDomainState::Paused),
                Enum::Known(DomainStateReason::Paused(Enum::Known(
                    DomainPausedReason::Save
                )))
            ))
        );
    Ok(DomainInfo {
        name: dom.name().map_err(inspect)?,
        state,
        has_managed_save: dom.has_managed_save(0).map_err(inspect)?,
        saving,
    })
}

fn domain_state(state: virt::domain::DomainStateEnum) -> DomainState {
    let other = match state {
        Enum::Known(VirDomainState::Running) => return DomainState::Running,
        Enum::Known(VirDomainState::Paused) => return DomainState::Paused,
        Enum::Known(VirDomainState::Shutoff) => return DomainState::ShutOff,
        Enum::Known(VirDomainState::NoState) => "nostate".to_owned(),
        Enum::Known(VirDomainState::Blocked) => "blocked".to_owned(),
        Enum::Known(VirDomainState::Shutdown) => "shutdown".to_owned(),
        Enum::Known(VirDomainState::Crashed) => "crashed".to_owned(),
        Enum::Known(VirDomainState::PMSuspended) => "pmsuspended".to_owned(),
        Enum::Unknown(raw) => format!("unknown {raw}"),
    };
    DomainState::Other(other)
}

/// What the qemu hook said when it refused, if `err` is libvirt's report of
/// a hook that failed: libvirt (src/util/virhook.c, src/util/vircommand.c)
/// turns the hook's exit into "... unexpected exit status N: STDERR", so the
/// hook's own words are after the status. Its lines are joined into one.
fn hook_said(err: &Error) -> Option<String> {
    if err.code() != Enum::Known(ErrorNumber::HookScriptFailed) {
        return None;
    }
    Some(hook_words(err.message()))
}

/// The hook's words in libvirt's message of a failed hook, on one line:
/// its non-empty lines trimmed and joined with "; ".
fn hook_words(msg: &str) -> String {
    let said = msg
        .split_once("unexpected exit status ")
        .and_then(|(_, rest)| rest.split_once(": "))
        .map_or(msg, |(_, said)| said);
    let lines: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

/// Whether libvirt's error says there is no such domain.
pub(crate) fn is_no_domain(err: &Error) -> bool {
    err.code() == Enum::Known(ErrorNumber::NoDomain)
}

#[cfg(test)]
mod tests;

//! The VM's disk images at `prepare begin`: made where missing, grown where
//! the database asks, and what was done recorded.

use super::refusal::Refusal;
use super::run::{Db, Run};
use kvmroll_core::disks::{self, Done, Place, Roots};
use kvmroll_core::error_chain;
use kvmroll_core::events::EventOutcome;
use kvmroll_core::metadata::Metadata;
use kvmroll_core::model::{Disk, DiskKind};
use kvmroll_core::xml::Element;
use kvmroll_core::{VmBrief, VmDisk};
use std::path::Path;
use std::time::{Duration, Instant};

/// The VM's disks as its definition says them: each `<disk device='disk'>`
/// with the size kvmroll's metadata keeps for it.
pub(super) fn disks_of(doc: &Element, meta: &Metadata) -> Vec<VmDisk> {
    let Some(devices) = doc.child("devices") else {
        return Vec::new();
    };
    devices
        .children
        .iter()
        .filter(|d| d.name == "disk" && d.attr("device").unwrap_or("disk") == "disk")
        .filter_map(|d| {
            let target = d.child("target")?;
            let dev = target.attr("dev")?.to_string();
            let source = d.child("source")?;
            let format = d.child("driver").and_then(|dr| dr.attr("type"));
            let (kind, path) = match d.attr("type").unwrap_or("file") {
                "block" => (DiskKind::Block, source.attr("dev")?),
                "file" if format == Some("qcow2") => (DiskKind::Qcow2, source.attr("file")?),
                "file" => (DiskKind::Raw, source.attr("file")?),
                _ => return None,
            };
            let size_gib = meta.disks.iter().find(|s| s.dev == dev).map(|s| s.size_gib);
            Some(VmDisk {
                disk: Disk {
                    kind,
                    path: path.to_string(),
                    bus: target.attr("bus").unwrap_or_default().to_string(),
                    dev,
                    size_gib,
                },
                grow: false,
            })
        })
        .collect()
}

/// Makes the VM's missing disk images and grows those the database asks to
/// grow (`kvmroll_core::disks`), after the allocate plugins, which may have
/// changed them as Rocks' allocate plugins changed a disk's path and type.
/// The first disk that cannot be made ready refuses the start; what was done
/// is recorded (events, and the images made, for `vm remove --delete-disks`).
///
/// With kvmroll's metadata the disks, their sizes and `kvm_disk_roots` come
/// from the definition, and the database is needed only for the images
/// made (to record them), or grows (an image smaller than its size may have
/// one waiting); after plugins that may have changed them, from the
/// database where it answers.
#[allow(clippy::too_many_arguments)]
pub(super) fn prepare_disks(
    run: &mut Run<'_>,
    brief: Option<&VmBrief>,
    meta: Option<&Metadata>,
    doc: Option<&Element>,
    after_plugins: bool,
    roots: Option<&str>,
    deadline: Instant,
) -> Result<(), Refusal> {
    let vm = run.call.vm.clone();
    let from_db = match (meta, doc) {
        (Some(_), Some(_)) => after_plugins && matches!(run.db, Db::Open(_)),
        _ => true,
    };
    let mut disks = match (from_db, meta, doc) {
        (false, Some(m), Some(d)) => disks_of(d, m),
        _ => match run.db.store() {
            Some(store) => store.vm_disks(&vm).map_err(|source| Refusal::Disks {
                vm: vm.clone(),
                source: Box::new(source),
            })?,
            None => return Ok(()),
        },
    };
    if disks.is_empty() {
        return Ok(());
    }
    let roots = Roots::of(roots).map_err(|why| Refusal::Roots {
        vm: vm.clone(),
        why,
    })?;
    if !from_db && disks.iter().any(|d| disks::smaller_than_its_size(&d.disk)) {
        // A grow may wait in the database (`kvmroll vm disk resize`).
        waiting_grows(run, brief, deadline, &mut disks);
    }
    let place = Place {
        sysroot: Path::new("/"),
        vm: &vm,
        qemu_img: Path::new("qemu-img"),
        deadline,
    };
    let work = make_ready(run, &disks, &roots, &place);
    if !work.made.is_empty() || !work.grown.is_empty() {
        record(run, brief, deadline, &work);
    }
    work.refusal.map_or(Ok(()), Err)
}

/// Marks the disks a grow waits for in the database, where it answers.
fn waiting_grows(
    run: &mut Run<'_>,
    brief: Option<&VmBrief>,
    deadline: Instant,
    disks: &mut [VmDisk],
) {
    let vm = run.call.vm.clone();
    run.open_db(brief, deadline);
    match run.db.store().map(|s| s.vm_disks(&vm)) {
        Some(Ok(known)) => {
            for d in disks {
                d.grow = known.iter().any(|k| k.grow && k.disk.path == d.disk.path);
            }
        }
        Some(Err(e)) => log::warn!(
            "VM {vm}: cannot read the grows waiting for its disks: {}",
            error_chain(&e)
        ),
        None => {}
    }
}

/// What [`make_ready`] did: the images made, the grows done (or found
/// needless), and the refusal of the first disk that cannot be made ready.
struct Work {
    made: Vec<String>,
    grown: Vec<String>,
    refusal: Option<Refusal>,
}

/// Makes each disk ready in order, each step in an event and the log,
/// until one cannot be.
fn make_ready(run: &mut Run<'_>, disks: &[VmDisk], roots: &Roots, place: &Place<'_>) -> Work {
    let vm = run.call.vm.clone();
    let (mut made, mut grown) = (Vec::new(), Vec::new());
    let mut refusal = None;
    for VmDisk { disk, grow } in disks {
        let started = Instant::now();
        let said = match disks::prepare(disk, *grow, roots, place) {
            Ok(Done::Present) => None,
            Ok(Done::Made) => {
                made.push(disk.path.clone());
                Some(format!(
                    "disk {}: made {} image {} ({} GiB)",
                    disk.dev,
                    disk.kind.as_str(),
                    disk.path,
                    disk.size_gib.unwrap_or_default()
                ))
            }
            Ok(Done::Grown { from, to }) => Some(format!(
                "disk {}: grew {} from {from} to {to} bytes",
                disk.dev, disk.path
            )),
            Ok(Done::NotGrown(why)) => {
                log::warn!("VM {vm}: disk {}: not grown: {why}", disk.dev);
                Some(format!("disk {}: not grown: {why}", disk.dev))
            }
            // The invocation's own event records the refusal.
            Err(source) => {
                refusal = Some(Refusal::Disk {
                    vm: vm.clone(),
                    dev: disk.dev.clone(),
                    source: Box::new(source),
                });
                break;
            }
        };
        // Done, or nothing to do: the grow waits no more.
        if *grow {
            grown.push(disk.path.clone());
        }
        if let Some(msg) = said {
            log::info!("VM {vm}: {msg}");
            run.event(None, EventOutcome::Ok, None, started.elapsed(), msg);
        }
    }
    Work {
        made,
        grown,
        refusal,
    }
}

/// Records the images made (for `vm remove --delete-disks`) and the grows
/// done; where the database does not take them, says which images it will
/// not know of.
fn record(run: &mut Run<'_>, brief: Option<&VmBrief>, deadline: Instant, work: &Work) {
    let vm = run.call.vm.clone();
    run.open_db(brief, deadline);
    let host = run.conf.host.clone();
    let recorded = match run.db.store() {
        Some(store) => store
            .record_disk_work(&vm, &host, &work.made, &work.grown)
            .map_err(|e| error_chain(&e)),
        None => Err("the database is unreachable".to_string()),
    };
    if let Err(why) = recorded {
        let msg = format!(
            "the images made ({}) are not recorded, so `kvmroll vm remove --delete-disks` will not remove them: {why}",
            work.made.join(", ")
        );
        log::error!("VM {vm}: {msg}");
        run.event(None, EventOutcome::Unreachable, None, Duration::ZERO, msg);
    }
}

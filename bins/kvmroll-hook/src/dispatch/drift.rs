//! The drift check at `start begin`: is the definition libvirt is about to
//! start still what kvmroll decided? From the metadata's facts, or, for a VM
//! without metadata, by rendering it from the database.

use super::limits::flag;
use super::refusal::Refusal;
use super::run::{Db, Run};
use kvmroll_core::drift;
use kvmroll_core::events::EventOutcome;
use kvmroll_core::metadata::Metadata;
use kvmroll_core::xml::Element;
use kvmroll_core::{error_chain, Store, VmBrief};
use std::time::Instant;

/// Compares the decided parts of the XML libvirt is about to start with
/// the facts kvmroll's metadata holds (`kvmroll_core::drift`), with no
/// database: a drift (a `virsh edit` of a decided part, or of the facts
/// themselves) is logged and recorded, naming each fact, or refuses the
/// start where `kvm_strict_definition` is true.
pub(super) fn drift_from_metadata(
    run: &mut Run<'_>,
    meta: &Metadata,
    doc: &Element,
    brief: Option<&VmBrief>,
) -> Result<(), Refusal> {
    let vm = &run.call.vm;
    let started = Instant::now();
    let diffs = if !meta.intact() {
        vec![
            "kvmroll's metadata was edited: its facts are not those its digest was made of"
                .to_string(),
        ]
    } else {
        let facts = drift::project(doc, Some(&drift::device_kinds(&meta.facts)));
        // libvirt's own definition, as it was defined: the same facts.
        if facts == meta.facts {
            return Ok(());
        }
        drift::compare_facts(&meta.facts, &facts)
    };
    if diffs.is_empty() {
        return Ok(());
    }
    let why = Refusal::DriftFromFacts {
        vm: vm.clone(),
        generation: meta.generation,
        diffs: diffs.join("; "),
    };
    drifted(run, why, started, flag(brief, "kvm_strict_definition"))
}

/// A drift: recorded, and the refusal where `strict`, else logged.
fn drifted(run: &mut Run<'_>, why: Refusal, started: Instant, strict: bool) -> Result<(), Refusal> {
    let text = error_chain(&why);
    run.event(
        None,
        EventOutcome::Drift,
        None,
        started.elapsed(),
        text.clone(),
    );
    if strict {
        return Err(why);
    }
    log::warn!("{text}");
    Ok(())
}

/// Renders the VM from the database and compares it with what libvirt is
/// about to start; a drift is logged and recorded, or refuses the start where
/// `kvm_strict_definition` is true.
pub(super) fn drift_check(
    run: &mut Run<'_>,
    brief: &VmBrief,
    store: &dyn Store,
) -> Result<(), Refusal> {
    let vm = &run.call.vm;
    let started = Instant::now();
    let strict = flag(Some(brief), "kvm_strict_definition");
    // The hook's own connection: a second one would only open the file again.
    let cluster = match store.snapshot() {
        Ok(c) => c,
        Err(e) => {
            log::warn!("VM {vm}: drift check skipped: {}", error_chain(&e));
            return Ok(());
        }
    };
    let rendered = match kvmroll_core::render_domain(&cluster, vm) {
        Ok(x) => x,
        Err(source) => {
            let why = Refusal::Unrenderable {
                vm: vm.clone(),
                source: Box::new(source),
            };
            let text = error_chain(&why);
            run.event(None, EventOutcome::Drift, None, started.elapsed(), text);
            return if strict { Err(why) } else { Ok(()) };
        }
    };
    let diffs = match kvmroll_core::drift::compare(&rendered, &run.call.xml) {
        Ok(d) => d,
        Err(e) => vec![format!("libvirt's XML cannot be compared: {e}")],
    };
    if diffs.is_empty() {
        return Ok(());
    }
    let why = Refusal::DriftFromDatabase {
        vm: vm.clone(),
        diffs: diffs.join("; "),
    };
    drifted(run, why, started, strict)
}

/// At `start begin`: the drift check, from the metadata's facts where the
/// definition has them, else from the database where it is open.
pub(super) fn before_start(
    run: &mut Run<'_>,
    brief: Option<&VmBrief>,
    meta: Option<&Metadata>,
    doc: Option<&Element>,
) -> Result<(), Refusal> {
    match (meta, doc, brief) {
        (Some(m), Some(d), _) => drift_from_metadata(run, m, d, brief)?,
        (None, _, Some(b)) => {
            if let Db::Open(store) = std::mem::replace(&mut run.db, Db::Unopened) {
                let result = drift_check(run, b, store.as_ref());
                run.db = Db::Open(store);
                result?;
            }
        }
        _ => {}
    }
    Ok(())
}

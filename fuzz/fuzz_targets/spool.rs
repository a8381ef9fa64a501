//! A file of the container's event spool, which the upkeep reads back
//! after whatever happened to it (torn by a power cut, or foreign):
//! `spool::Spool::parse`. Beyond not crashing: every event it takes has
//! an origin of its own, and is the event it would write again.

#![no_main]

use kvmroll_core::events::Event;
use kvmroll_core::spool::Spool;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;

fuzz_target!(|data: &[u8]| {
    let spool = Spool::new("/nonexistent/spool", "vm-container-0-0");
    let Some(events) = spool.parse("000000000000000000000001-0000000001.events", data) else {
        return;
    };
    assert!(!events.is_empty());
    let origins: BTreeSet<&str> = events.iter().map(|s| s.origin.as_str()).collect();
    assert_eq!(origins.len(), events.len(), "two events share an origin");
    for s in &events {
        let line = serde_json::to_string(&s.event).expect("an event serialises");
        let back: Event = serde_json::from_str(&line).expect("an event parses back");
        assert_eq!(back, s.event);
    }
});

//! The journal of `kvmroll-guests` (`/var/lib/kvmroll/guests/journal.json`),
//! read back by the next `stop`, `start` and `status` after a run that may
//! have been cut off anywhere. Beyond not crashing: what it reads, it
//! writes back the same.

#![no_main]

// The module of the binary itself, reached by path (kvmroll-guests' library
// target exposes its command line only): its tests and the writing half go
// unused here.
#[allow(dead_code)]
#[path = "../../bins/kvmroll-guests/src/journal.rs"]
mod journal;

use journal::Journal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(j) = Journal::parse(data) else {
        return;
    };
    let bytes = j.to_bytes().expect("a journal serialises");
    assert_eq!(Journal::parse(&bytes).ok(), Some(j), "a journal does not round-trip");
});

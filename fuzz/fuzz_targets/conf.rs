//! `kvmroll.conf`, which every binary reads and the hook reads at every
//! event (`conf::Config::parse`). Beyond not crashing: every path it
//! accepts is absolute (the database a path or a URL), as the hook relies on.

#![no_main]

use kvmroll_core::conf::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Config::parse(Path::new("/etc/kvmroll/kvmroll.conf"), text) {
        // The database may also be a URL (postgresql://...), parsed whole.
        let url = kvmroll_core::location::Location::from_url_path(&c.db);
        assert!(c.db.is_absolute() || matches!(url, Ok(Some(_))), "{:?}", c.db);
        for p in [Some(&c.root), Some(&c.kvmroll), c.passfile.as_ref()]
            .into_iter()
            .flatten()
        {
            // The CLI's default may be a bare name looked up in PATH.
            assert!(p.is_absolute() || p == Path::new("kvmroll"), "{p:?}");
        }
        assert!(!c.host.is_empty());
    }
});

//! `kvmroll events` and `events prune`: what the hook did.

use super::{refused, App, Error, Exit};
use kvmroll_cli::{print_listing, Format};
use kvmroll_core::{open_store, OpenMode};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

/// How long events are kept when kvm_events_keep_days is not set.
const DEFAULT_EVENTS_KEEP_DAYS: u32 = 90;

/// How long `kvmroll events` waits for the hook's own forwarder to hand
/// the container's spooled events over.
const SPOOL_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// On a container, hands the events its hook spooled to the database
/// before `kvmroll events` reads them, as the hook's detached upkeep does a
/// moment after each event: what is shown is then up to date. Only the
/// spool of this host's kvmroll.conf goes, and only to the database that
/// configuration names (`--db` elsewhere reads it as it is). A spool this
/// user cannot read, or a database that refuses, is left to the upkeep:
/// the events are shown all the same.
pub(super) fn forward_spool(db: &Path) {
    let Ok(conf) = kvmroll_core::conf::Config::load() else {
        return;
    };
    if conf.database() != db {
        return;
    }
    let spool = kvmroll_core::spool::Spool::new(&conf.spool, &conf.host);
    let done = spool.forward_now(SPOOL_WAIT, &mut || open_store(db, OpenMode::ReadWrite));
    if let Ok(kvmroll_core::spool::Forwarded {
        waiting: Some(why),
        left,
        ..
    }) = done
    {
        eprintln!(
            "kvmroll: {left} spooled event file(s) on this host wait for the database: {why}"
        );
    }
}

impl App<'_> {
    /// `events prune`: by age (given, or the global kvm_events_keep_days,
    /// default 90) and by count.
    pub(super) fn prune_events(
        &mut self,
        older_than: Option<u32>,
        keep: Option<u64>,
        out: &mut dyn Write,
    ) -> Result<Exit, Error> {
        let days = match (older_than, keep) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => {
                let cluster = self.store.snapshot()?;
                let set = cluster
                    .attrs
                    .get(&kvmroll_core::Scope::Global)
                    .and_then(|a| a.get("kvm_events_keep_days"));
                Some(match set {
                    Some(v) => v.parse().map_err(|_| {
                        refused(format!(
                            "kvm_events_keep_days is {v:?}, not a number of days"
                        ))
                    })?,
                    None => DEFAULT_EVENTS_KEEP_DAYS,
                })
            }
        };
        let now_ms = kvmroll_core::now_ms();
        // Days are a u32 (as kvm_events_keep_days is validated): no overflow.
        let before = days.map(|d| now_ms.saturating_sub(i64::from(d) * 86_400_000));
        let gone = self.store.prune_events(before, keep)?;
        let mut why = Vec::new();
        if let Some(d) = days {
            why.push(format!("older than {d} days"));
        }
        if let Some(k) = keep {
            why.push(format!("beyond the newest {k}"));
        }
        writeln!(out, "pruned {gone} event(s) {}", why.join(" or "))?;
        Ok(Exit::Done)
    }

    pub(super) fn events(
        &mut self,
        vm: Option<String>,
        container: Option<String>,
        limit: u32,
        format: Format,
        out: &mut dyn Write,
    ) -> Result<Exit, Error> {
        let events = self.store.events(&kvmroll_core::EventFilter {
            vm,
            container,
            limit: Some(limit),
        })?;
        let rows: Vec<Vec<Value>> = events
            .iter()
            .map(|e| {
                vec![
                    json!(e.id),
                    json!(rfc3339_utc(e.time_ms)),
                    json!(e.vm),
                    json!(e.container),
                    json!(e.stage),
                    json!(e.op),
                    json!(e.subop),
                    json!(e.plugin),
                    json!(e.outcome.as_str()),
                    json!(e.status),
                    json!(e.duration_ms),
                    json!(e.message),
                ]
            })
            .collect();
        print_listing(out, EVENT_COLUMNS, &rows, format)?;
        Ok(Exit::Done)
    }
}

/// The columns of `kvmroll events`, and its JSON's fields.
const EVENT_COLUMNS: &[&str] = &[
    "ID",
    "TIME",
    "VM",
    "CONTAINER",
    "STAGE",
    "OP",
    "SUBOP",
    "PLUGIN",
    "OUTCOME",
    "STATUS",
    "DURATION_MS",
    "MESSAGE",
];

/// Unix milliseconds in RFC 3339, in UTC and saying so:
/// `2026-11-26T06:15:33.554Z`.
fn rfc3339_utc(ms: i64) -> String {
    let t = utc(ms);
    format!("{}Z", t.replacen(' ', "T", 1))
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` UTC (the civil-from-days
/// conversion of Howard Hinnant's date algorithms).
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(utc(1_795_673_733_554), "2026-11-26 06:15:33.554");
        assert_eq!(
            super::rfc3339_utc(1_795_673_733_554),
            "2026-11-26T06:15:33.554Z"
        );
    }
}

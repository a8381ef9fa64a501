//! The registry of every attribute kvmroll reads: its name, the type of its
//! value, its default, the host whose resolved value counts, and one line
//! on what it does.
//!
//! `kvmroll attr known` prints it; kvmroll-attributes(7) holds one summary
//! line per entry, which `tests/registry.rs` compares with
//! [`Known::summary`], and the same test fails when the code reads an
//! attribute this list lacks. `kvmroll attr set` refuses a name within two
//! edits of a known one ([`did_you_mean`]): a typo'd attribute is silently
//! ignored otherwise, and Rocks sites keep their own names, so only near
//! misses are refused.

/// The kind of value an attribute holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// `true` or `false` (`yes`, `no`, `1`, `0`, `on`, `off` read as those).
    Boolean,
    /// Whole seconds above zero.
    Seconds,
    /// Whole milliseconds, 0 or more.
    Milliseconds,
    /// A whole number above zero.
    Count,
    /// A whole number above zero, or `auto` (kvmroll chooses).
    CountOrAuto,
    /// Whole days above zero.
    Days,
    /// One of a few fixed words (see the description).
    Choice,
    /// Free text with a syntax of its own (see the description).
    Text,
    /// An XML fragment.
    Xml,
    /// An absolute path.
    Path,
    /// Absolute folders separated by `:`.
    Folders,
    /// A libvirt URI.
    Uri,
    /// A URL.
    Url,
    /// Words separated by white space.
    Words,
    /// A command line split by shell rules.
    Command,
    /// A name (letters, digits, `.`, `_`, `-`).
    Name,
    /// cpusets in libvirt's syntax, one per NUMA cell, separated by `;`.
    Cpusets,
}

impl AttrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::Boolean => "boolean",
            AttrType::Seconds => "seconds",
            AttrType::Milliseconds => "milliseconds",
            AttrType::Count => "count",
            AttrType::CountOrAuto => "count or auto",
            AttrType::Days => "days",
            AttrType::Choice => "choice",
            AttrType::Text => "text",
            AttrType::Xml => "xml",
            AttrType::Path => "path",
            AttrType::Folders => "folders",
            AttrType::Uri => "uri",
            AttrType::Url => "url",
            AttrType::Words => "words",
            AttrType::Command => "command",
            AttrType::Name => "name",
            AttrType::Cpusets => "cpusets",
        }
    }
}

/// Whose resolved value kvmroll reads: where setting the attribute means
/// something (at that host's scope, or any scope above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFor {
    /// The VM's own node row.
    Vm,
    /// The VM container (the physical host) concerned.
    Container,
    /// Any host (the one being installed or enabled).
    Host,
    /// Only the global scope is read.
    Global,
}

impl ReadFor {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadFor::Vm => "vm",
            ReadFor::Container => "container",
            ReadFor::Host => "host",
            ReadFor::Global => "global",
        }
    }
}

/// One attribute kvmroll reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// The name; `kvm_device_N` stands for `kvm_device_0`, `kvm_device_1`, ...
    pub name: &'static str,
    pub kind: AttrType,
    /// The value used when none is set; `None` when unset means "off" or
    /// "none" (the description says which).
    pub default: Option<&'static str>,
    /// Whose resolved value counts.
    pub scope: ReadFor,
    /// What it does, in one line.
    pub description: &'static str,
}

impl Known {
    /// Whether `name` is this attribute (`kvm_device_7` is `kvm_device_N`).
    pub fn matches(&self, name: &str) -> bool {
        match self.name.strip_suffix("_N") {
            Some(prefix) => name
                .strip_prefix(prefix)
                .and_then(|n| n.strip_prefix('_'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            None => self.name == name,
        }
    }

    /// The line kvmroll-attributes(7) gives the entry, under its heading:
    /// ``- `NAME`: SCOPE; TYPE; default `VALUE` `` (or `; no default`).
    pub fn summary(&self) -> String {
        let default = match self.default {
            Some(v) => format!("default `{v}`"),
            None => "no default".to_string(),
        };
        format!(
            "- `{}`: {}; {}; {default}",
            self.name,
            self.scope.as_str(),
            self.kind.as_str()
        )
    }
}

/// Builds one entry (keeps the table below one line per field).
const fn known(
    name: &'static str,
    kind: AttrType,
    default: Option<&'static str>,
    scope: ReadFor,
    description: &'static str,
) -> Known {
    Known {
        name,
        kind,
        default,
        scope,
        description,
    }
}

use AttrType as T;
use ReadFor as F;

/// Every attribute kvmroll reads, in the order of kvmroll-attributes(7).
pub const KNOWN: &[Known] = &[
    // The virtual hardware.
    known("cpu_mode", T::Text, Some("host-passthrough"), F::Vm,
        "the <cpu> mode (host-model, host-passthrough, maximum, or MODE: <inner xml>); none for a qemu VM"),
    known("kvm_cpu_pinning", T::Text, None, F::Vm,
        "pin_all, pin_auto or a <cputune>/<numatune> fragment; unset: no pinning"),
    known("kvm_device_N", T::Xml, None, F::Vm,
        "a <devices> child added in order of N (a PCI <hostdev> is also bound to vfio-pci)"),
    known("kvm_machine", T::Name, Some("pc"), F::Vm,
        "the machine type; on q35 the cdrom goes on SATA"),
    known("kvm_graphics", T::Choice, Some("vnc"), F::Vm,
        "vnc, spice or none; listening on 127.0.0.1 only"),
    known("kvm_emulator", T::Path, None, F::Vm,
        "the <emulator> path; unset: libvirt picks the container's QEMU"),
    known("kvm_disk_roots", T::Folders, Some("/state/partition1/kvm/disks:/var/lib/libvirt/images"), F::Vm,
        "the folders where the hook makes and grows disk images"),
    // The VM's life.
    known("kvm_autostart", T::Boolean, Some("false"), F::Vm,
        "saved when its container stops, brought back when it boots"),
    known("kvm_strict_definition", T::Boolean, Some("false"), F::Vm,
        "refuse a start whose definition drifted from what kvmroll decided"),
    known("kvm_require_database", T::Boolean, Some("false"), F::Vm,
        "refuse a start when the hook cannot reach the database where it needs it"),
    known("kvm_db_connect_timeout", T::Seconds, Some("5"), F::Vm,
        "how long the hook waits for the database, at most 3600"),
    known("kvm_plugin_timeout_allocate", T::Seconds, Some("300"), F::Vm,
        "the time all allocate plugins share, at most 3600"),
    known("kvm_plugin_timeout_preboot", T::Seconds, Some("60"), F::Vm,
        "the time all preboot, restore and migrate plugins share, at most 3600"),
    known("kvm_plugin_timeout_shutdown", T::Seconds, Some("120"), F::Vm,
        "the time all shutdown plugins share, at most 3600"),
    known("kvm_plugin_timeout_other", T::Seconds, Some("30"), F::Vm,
        "the time all plugins of another stage share, at most 3600"),
    known("kvm_migrate_timeout", T::Seconds, Some("600"), F::Vm,
        "how long kvmroll vm migrate lets a live migration run before aborting it"),
    known("kvm_migrate_transport", T::Choice, Some("tunnelled"), F::Vm,
        "tunnelled (over libvirt's connection) or native (QEMU's own stream)"),
    known("kvm_migrating_from", T::Name, None, F::Vm,
        "set by kvmroll only: the container a migration under way left"),
    // The container.
    known("kvm", T::Boolean, Some("false"), F::Host,
        "the host is a VM container (from its next install)"),
    known("libvirt_uri", T::Uri, Some("qemu+ssh://root@{host}/system"), F::Container,
        "where the container's libvirt is reached; qemu:///system on the machine itself"),
    known("kvm_migrate_address", T::Text, None, F::Container,
        "where a native migration's stream reaches this container (IP or host name); unset: its host name"),
    known("numa_cells", T::Cpusets, None, F::Container,
        "the container's NUMA cells, e.g. 0-7;8-15; unset: one cell"),
    known("kvm_guests_parallel", T::CountOrAuto, Some("auto"), F::Container,
        "how many saves and starts kvmroll-guests runs at once; auto: from the disk and memory"),
    known("kvm_guests_stop_budget", T::Seconds, Some("600"), F::Container,
        "the whole of a kvmroll-guests stop, planned over its rounds of saves"),
    known("kvm_guests_save_timeout", T::Seconds, Some("300"), F::Container,
        "how long one managed save may take at kvmroll-guests stop"),
    known("kvm_guests_shutdown_timeout", T::Seconds, Some("120"), F::Container,
        "how long a VM asked to shut down at kvmroll-guests stop may take"),
    known("kvm_guests_on_timeout", T::Choice, None, F::Container,
        "shutdown or destroy a VM that did not stop in time; unset: left running"),
    known("kvm_guests_start_delay", T::Milliseconds, Some("0"), F::Container,
        "above 0: kvmroll-guests start starts one VM at a time, this far apart"),
    known("kvm_guests_bypass_cache", T::Boolean, Some("false"), F::Container,
        "write saved images around the page cache"),
    known("kvm_guests_on_shutdown", T::Choice, Some("save"), F::Container,
        "save, or migrate: kvmroll-guests stop first moves the running VMs to other containers"),
    // Installing a container.
    known("kvm_packages", T::Words, Some("qemu-kvm libvirt libvirt-client bridge-utils dracut"), F::Container,
        "the packages the container's kickstart installs besides kvmroll"),
    known("kvmroll_dist_url", T::Url, None, F::Container,
        "a kvmroll tarball the kickstart unpacks; unset: the kvmroll package"),
    known("kvmroll_db_url", T::Text, Some("/var/lib/kvmroll/kvmroll.db"), F::Container,
        "the db line of the container's kvmroll.conf (no password)"),
    known("kvmroll_db_credential_in_kickstart", T::Boolean, Some("false"), F::Container,
        "put the PostgreSQL credential into the kickstart"),
    known("kvmroll_db_passfile", T::Path, Some("/etc/kvmroll/db.pgpass"), F::Container,
        "the frontend's passfile the kickstart may carry"),
    known("kvm_reinstall_command", T::Command, None, F::Host,
        "how kvmroll-enable reinstalls the host; unset: kvmroll-enable refuses"),
    known("kvm_reinstall_timeout", T::Seconds, Some("300"), F::Host,
        "how long the reinstall command may run"),
    // The cluster.
    known("kvm_events_keep_days", T::Days, Some("90"), F::Global,
        "how long kvmroll events prune keeps the hook's events"),
];

/// The registry's entry for `name`, if kvmroll reads it.
pub fn lookup(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.matches(name))
}

/// The known attribute an unknown `name` is most likely a typo of: one
/// within two edits (insertions, deletions, substitutions, or two
/// neighbours swapped, which `kvm_autostrat` is). `None` for a known name
/// and for a name far from all of them.
pub fn did_you_mean(name: &str) -> Option<String> {
    if lookup(name).is_some() {
        return None;
    }
    let candidates = KNOWN.iter().map(|k| match k.name.strip_suffix("N") {
        // kvm_device_N against the name's own number, if it has one.
        Some(prefix) if k.name.ends_with("_N") => {
            let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
            let digits = if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                "0"
            } else {
                digits
            };
            format!("{prefix}{digits}")
        }
        _ => k.name.to_string(),
    });
    candidates
        .map(|c| (edits(name, &c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The optimal string alignment distance between `a` and `b`: Levenshtein's
/// edits plus a swap of two neighbours as one.
fn edits(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: the distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_is_one_edit() {
        assert_eq!(edits("kvm_autostrat", "kvm_autostart"), 1);
        assert_eq!(edits("kvm", "kvm"), 0);
        assert_eq!(edits("", "abc"), 3);
        assert_eq!(edits("kvm_autostart", "kvm_autostrt"), 1);
    }

    #[test]
    fn a_near_miss_is_named_and_other_names_are_not() {
        assert_eq!(
            did_you_mean("kvm_autostrat").as_deref(),
            Some("kvm_autostart")
        );
        assert_eq!(did_you_mean("kvm_autostart"), None);
        assert_eq!(did_you_mean("libvirt_ur").as_deref(), Some("libvirt_uri"));
        assert_eq!(
            did_you_mean("kvm_devise_3").as_deref(),
            Some("kvm_device_3")
        );
        assert_eq!(did_you_mean("kvm_device_12"), None);
        // A site's own attributes, far from every known one.
        for own in ["Kickstart_PublicHostname", "site_rack_label", "x"] {
            assert_eq!(did_you_mean(own), None, "{own}");
        }
    }

    #[test]
    fn device_attributes_match_by_number() {
        let k = lookup("kvm_device_12").unwrap();
        assert_eq!(k.name, "kvm_device_N");
        for not in ["kvm_device_", "kvm_device_x", "kvm_device_N1"] {
            assert!(lookup(not).is_none(), "{not}");
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = KNOWN.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KNOWN.len());
    }
}

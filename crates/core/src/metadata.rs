//! kvmroll's metadata in a domain definition: what a container must know
//! about a VM, carried in the definition itself so that the hook and
//! `kvmroll-guests` can decide without the cluster database.
//!
//! libvirt keeps a `<metadata>` child in a namespace of the application's
//! choosing through define, start, managed save and restore, and hands it to
//! the hook with the rest of the domain at every event (the approach of
//! oVirt's `ovirt-vm`, OpenNebula's `one:vm` and Nova's `nova:instance`;
//! <https://libvirt.org/formatdomain.html#general-metadata>). kvmroll's is
//! one element:
//!
//! ```xml
//! <metadata>
//!   <kvmroll:vm xmlns:kvmroll='https://kvmroll.org/xmlns/domain/1' generation='4'>
//!     <kvmroll:container name='vm-container-0-0'>
//!       <kvmroll:attr name='kvm_guests_save_timeout' value='600'/>
//!     </kvmroll:container>
//!     <kvmroll:attr name='kvm_autostart' value='true'/>
//!     <kvmroll:disk dev='vda' size-gib='36'/>
//!     <kvmroll:decided sha256='9f2c...'>
//!       <kvmroll:fact>memory KiB: 2097152</kvmroll:fact>
//!       <kvmroll:fact>vcpus: 2</kvmroll:fact>
//!     </kvmroll:decided>
//!   </kvmroll:vm>
//! </metadata>
//! ```
//!
//! - `generation`: the generation of the VM's database rows it was rendered
//!   from ([`crate::Vm::generation`]): a smaller one than the database's is
//!   a stale definition.
//! - `container`: the container it was defined for, with the container's
//!   own resolved settings that `kvmroll-guests` uses ([`CONTAINER_SETTINGS`]).
//! - `attr`: the VM's resolved settings that the hook and `kvmroll-guests`
//!   use ([`VM_SETTINGS`]); one left out has its default.
//! - `disk`: each disk's size, which the domain XML cannot say.
//! - `decided`: the facts of the parts kvmroll decides
//!   ([`crate::drift::project`]), and their SHA-256 ([`digest`]).

use crate::xml::{escape_attr, escape_text, Element};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// kvmroll's namespace in a domain's `<metadata>`.
pub const NAMESPACE: &str = "https://kvmroll.org/xmlns/domain/1";

/// The prefix kvmroll writes; any other bound to [`NAMESPACE`] reads too.
pub const PREFIX: &str = "kvmroll";

/// The VM's resolved attributes used on its container: by the hook (plugin
/// budgets, strictness, the database's time limit and whether a start needs
/// it, disk roots) and by `kvmroll-guests` (autostart).
pub const VM_SETTINGS: &[&str] = &[
    "kvm_autostart",
    "kvm_db_connect_timeout",
    "kvm_disk_roots",
    "kvm_plugin_timeout_allocate",
    "kvm_plugin_timeout_other",
    "kvm_plugin_timeout_preboot",
    "kvm_plugin_timeout_shutdown",
    "kvm_require_database",
    "kvm_strict_definition",
];

/// The container's resolved attributes `kvmroll-guests` uses (its save and
/// shutdown limits): resolved for the container, as the service does.
pub const CONTAINER_SETTINGS: &[&str] = &[
    "kvm_guests_bypass_cache",
    "kvm_guests_on_shutdown",
    "kvm_guests_on_timeout",
    "kvm_guests_parallel",
    "kvm_guests_save_timeout",
    "kvm_guests_shutdown_timeout",
    "kvm_guests_start_delay",
    "kvm_guests_stop_budget",
];

/// Why kvmroll's metadata in a definition cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("kvmroll's metadata: {what} is {value:?}, not a number")]
    Number { what: &'static str, value: String },
    #[error("kvmroll's metadata: <{0}> lacks its {1} attribute")]
    Missing(&'static str, &'static str),
    #[error("kvmroll's metadata has no <decided> facts")]
    NoFacts,
}

/// A disk's size, by its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSize {
    pub dev: String,
    pub size_gib: u32,
}

/// kvmroll's metadata of one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub generation: u64,
    /// The container it was defined for.
    pub container: Option<String>,
    /// That container's settings ([`CONTAINER_SETTINGS`]), by name.
    pub container_settings: BTreeMap<String, String>,
    /// The VM's settings ([`VM_SETTINGS`]), by name.
    pub settings: BTreeMap<String, String>,
    pub disks: Vec<DiskSize>,
    /// The decided facts, in [`crate::drift::project`]'s order.
    pub facts: Vec<String>,
    /// The SHA-256 of the facts, as written ([`digest`]).
    pub sha256: String,
}

/// The SHA-256 of facts, in hex: over each fact and a newline.
pub fn digest(facts: &[String]) -> String {
    let mut h = Sha256::new();
    for f in facts {
        h.update(f.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Metadata {
    /// Whether the facts are those the digest was made of: a `virsh edit`
    /// that changed a fact to hide a drift leaves them apart.
    pub fn intact(&self) -> bool {
        digest(&self.facts) == self.sha256
    }

    /// A setting of the VM, if set.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(String::as_str)
    }

    /// The `<kvmroll:vm>` element, indented for a child of `<metadata>` in
    /// kvmroll's rendering (each line ending in a newline).
    pub fn to_xml(&self) -> String {
        let mut x = String::with_capacity(256 + 48 * self.facts.len());
        let mut line = |indent: usize, s: &str| {
            for _ in 0..indent {
                x.push_str("  ");
            }
            x.push_str(s);
            x.push('\n');
        };
        line(
            2,
            &format!(
                "<{PREFIX}:vm xmlns:{PREFIX}='{NAMESPACE}' generation='{}'>",
                self.generation
            ),
        );
        if let Some(c) = &self.container {
            if self.container_settings.is_empty() {
                line(
                    3,
                    &format!("<{PREFIX}:container name='{}'/>", escape_attr(c)),
                );
            } else {
                line(
                    3,
                    &format!("<{PREFIX}:container name='{}'>", escape_attr(c)),
                );
                for (k, v) in &self.container_settings {
                    line(4, &attr_xml(k, v));
                }
                line(3, &format!("</{PREFIX}:container>"));
            }
        }
        for (k, v) in &self.settings {
            line(3, &attr_xml(k, v));
        }
        for d in &self.disks {
            line(
                3,
                &format!(
                    "<{PREFIX}:disk dev='{}' size-gib='{}'/>",
                    escape_attr(&d.dev),
                    d.size_gib
                ),
            );
        }
        line(3, &format!("<{PREFIX}:decided sha256='{}'>", self.sha256));
        for f in &self.facts {
            line(
                4,
                &format!("<{PREFIX}:fact>{}</{PREFIX}:fact>", escape_text(f)),
            );
        }
        line(3, &format!("</{PREFIX}:decided>"));
        line(2, &format!("</{PREFIX}:vm>"));
        x
    }

    /// kvmroll's metadata in a parsed domain: `None` when the domain has
    /// none (defined by hand, or by a kvmroll before metadata).
    pub fn find(domain: &Element) -> Result<Option<Metadata>, MetadataError> {
        let Some(meta) = domain.child("metadata") else {
            return Ok(None);
        };
        let Some((vm, prefix)) = kvmroll_element(meta) else {
            return Ok(None);
        };
        let local = |e: &Element| local_name(e, prefix);
        let mut m = Metadata {
            generation: number("generation", vm.attr("generation").unwrap_or_default())?,
            ..Metadata::default()
        };
        let mut decided = false;
        for child in &vm.children {
            match local(child).as_deref() {
                Some("container") => {
                    let name = child
                        .attr("name")
                        .ok_or(MetadataError::Missing("container", "name"))?;
                    m.container = Some(name.to_string());
                    for a in child
                        .children
                        .iter()
                        .filter(|a| local(a).as_deref() == Some("attr"))
                    {
                        let (k, v) = attr_of(a)?;
                        m.container_settings.insert(k, v);
                    }
                }
                Some("attr") => {
                    let (k, v) = attr_of(child)?;
                    m.settings.insert(k, v);
                }
                Some("disk") => m.disks.push(disk_size(child)?),
                Some("decided") => {
                    decided = true;
                    m.sha256 = child.attr("sha256").unwrap_or_default().to_string();
                    m.facts = child
                        .children
                        .iter()
                        .filter(|f| local(f).as_deref() == Some("fact"))
                        .map(|f| f.text.trim().to_string())
                        .collect();
                }
                // Left for a later kvmroll to add.
                _ => {}
            }
        }
        if !decided {
            return Err(MetadataError::NoFacts);
        }
        Ok(Some(m))
    }
}

/// kvmroll's element in a domain's `<metadata>`, and the prefix it is
/// written with (`None` where its namespace is the default one).
fn kvmroll_element(meta: &Element) -> Option<(&Element, Option<&str>)> {
    // libvirt keeps the prefix it was given; another tool may have
    // written the element with its own, or as the default namespace.
    meta.children.iter().find_map(|e| {
        let (prefix, local) = match e.name.split_once(':') {
            Some((p, l)) => (Some(p), l),
            None => (None, e.name.as_str()),
        };
        let binding = match prefix {
            Some(p) => e.attr(&format!("xmlns:{p}")),
            None => e.attr("xmlns"),
        };
        (local == "vm" && binding == Some(NAMESPACE)).then_some((e, prefix))
    })
}

/// The name of `e` without `prefix`; `None` for an element of another
/// namespace.
fn local_name(e: &Element, prefix: Option<&str>) -> Option<String> {
    match prefix {
        Some(p) => e
            .name
            .strip_prefix(p)?
            .strip_prefix(':')
            .map(str::to_string),
        None => (!e.name.contains(':')).then(|| e.name.clone()),
    }
}

fn number(what: &'static str, v: &str) -> Result<u64, MetadataError> {
    v.trim().parse::<u64>().map_err(|_| MetadataError::Number {
        what,
        value: crate::text::clip(v, crate::text::QUOTE_CHARS),
    })
}

/// An `<attr name=... value=...>` of the metadata.
fn attr_of(e: &Element) -> Result<(String, String), MetadataError> {
    let name = e
        .attr("name")
        .ok_or(MetadataError::Missing("attr", "name"))?;
    let value = e
        .attr("value")
        .ok_or(MetadataError::Missing("attr", "value"))?;
    Ok((name.to_string(), value.to_string()))
}

/// A `<disk dev=... size-gib=...>` of the metadata.
fn disk_size(e: &Element) -> Result<DiskSize, MetadataError> {
    let dev = e.attr("dev").ok_or(MetadataError::Missing("disk", "dev"))?;
    let size = e
        .attr("size-gib")
        .ok_or(MetadataError::Missing("disk", "size-gib"))?;
    Ok(DiskSize {
        dev: dev.to_string(),
        size_gib: u32::try_from(number("a disk's size-gib", size)?).map_err(|_| {
            MetadataError::Number {
                what: "a disk's size-gib",
                value: size.to_string(),
            }
        })?,
    })
}

fn attr_xml(name: &str, value: &str) -> String {
    format!(
        "<{PREFIX}:attr name='{}' value='{}'/>",
        escape_attr(name),
        escape_attr(value)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse_document;

    fn sample() -> Metadata {
        let facts = vec!["memory KiB: 65536".to_string(), "vcpus: 2".to_string()];
        Metadata {
            generation: 7,
            container: Some("vm-container-0-0".into()),
            container_settings: [("kvm_guests_save_timeout".into(), "600".into())].into(),
            settings: [("kvm_autostart".into(), "true".into())].into(),
            disks: vec![DiskSize {
                dev: "vda".into(),
                size_gib: 36,
            }],
            sha256: digest(&facts),
            facts,
        }
    }

    fn domain(meta: &str) -> String {
        format!("<domain type='kvm'><name>v</name><metadata>{meta}</metadata></domain>")
    }

    #[test]
    fn written_metadata_reads_back_whole() {
        let m = sample();
        let doc = parse_document(&domain(&m.to_xml())).unwrap();
        let back = Metadata::find(&doc).unwrap().unwrap();
        assert_eq!(back, m);
        assert!(back.intact());
    }

    /// libvirt writes the element back with double quotes and keeps its
    /// prefix; a prefix of another's choosing, or a default namespace,
    /// reads the same.
    #[test]
    fn any_prefix_bound_to_the_namespace_reads() {
        let m = sample();
        let theirs = m
            .to_xml()
            .replace("kvmroll:", "k:")
            .replace("xmlns:kvmroll=", "xmlns:k=")
            .replace('\'', "\"");
        let doc = parse_document(&domain(&theirs)).unwrap();
        assert_eq!(Metadata::find(&doc).unwrap().unwrap(), m);
        let default_ns = m
            .to_xml()
            .replace("kvmroll:", "")
            .replace("xmlns:kvmroll=", "xmlns=");
        let doc = parse_document(&domain(&default_ns)).unwrap();
        assert_eq!(Metadata::find(&doc).unwrap().unwrap(), m);
    }

    #[test]
    fn other_namespaces_and_no_metadata_are_none() {
        let doc = parse_document("<domain><name>v</name></domain>").unwrap();
        assert_eq!(Metadata::find(&doc).unwrap(), None);
        let other = domain("<x:vm xmlns:x='https://example.org/other' generation='1'/>");
        assert_eq!(
            Metadata::find(&parse_document(&other).unwrap()).unwrap(),
            None
        );
    }

    #[test]
    fn edited_facts_no_longer_match_their_digest() {
        let mut m = sample();
        m.facts[1] = "vcpus: 4".into();
        let doc = parse_document(&domain(&m.to_xml())).unwrap();
        assert!(!Metadata::find(&doc).unwrap().unwrap().intact());
    }

    #[test]
    fn bad_metadata_is_an_error_naming_what() {
        let bad = sample()
            .to_xml()
            .replace("generation='7'", "generation='seven'");
        let e = Metadata::find(&parse_document(&domain(&bad)).unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "kvmroll's metadata: generation is \"seven\", not a number"
        );
        let bare = domain(&format!(
            "<kvmroll:vm xmlns:kvmroll='{NAMESPACE}' generation='1'/>"
        ));
        assert_eq!(
            Metadata::find(&parse_document(&bare).unwrap()),
            Err(MetadataError::NoFacts)
        );
    }

    #[test]
    fn text_is_escaped() {
        let mut m = sample();
        m.settings
            .insert("kvm_disk_roots".into(), "/a&b'<c>".into());
        m.facts.push("disk vda: source=/x&<y>".into());
        m.sha256 = digest(&m.facts);
        let x = m.to_xml();
        assert!(x.contains("value='/a&amp;b&apos;&lt;c&gt;'"), "{x}");
        let back = Metadata::find(&parse_document(&domain(&x)).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(back, m);
    }
}

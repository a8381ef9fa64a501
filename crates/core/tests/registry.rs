//! The attribute registry ([`kvmroll_core::attrs::known`]) against the code
//! and the manual: every attribute name the workspace's code reads is in
//! the registry, and kvmroll-attributes(7) gives every entry, field by
//! field, in the summary line [`Known::summary`] writes (the page's prose
//! around it is the manual's own).

use kvmroll_core::attrs::known::{lookup, Known, KNOWN};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The non-test Rust sources under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "tests" && name != "target" {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(path);
        }
    }
}

/// Literals that look like attribute names and are not.
const NOT_ATTRIBUTES: &[&str] = &[
    // The containers' PostgreSQL role (crates/core/src/pg).
    "kvmroll_container",
];

/// The string literals in `text` that look like attribute names kvmroll
/// reads, up to the file's unit tests.
fn attribute_literals(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = Vec::new();
    for piece in code.split('"').skip(1).step_by(2) {
        let bare = ["kvm", "cpu_mode", "libvirt_uri", "numa_cells"];
        let looks =
            piece.starts_with("kvm_") || piece.starts_with("kvmroll_") || bare.contains(&piece);
        if looks
            && !NOT_ATTRIBUTES.contains(&piece)
            && piece
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            out.push(piece.to_string());
        }
    }
    out
}

/// Whether the registry has `name`, or, for a prefix the code builds
/// names from (`kvm_device_`, `kvm_plugin_timeout_`), entries under it.
fn registered(name: &str) -> bool {
    lookup(name).is_some()
        || (name.ends_with('_') && KNOWN.iter().any(|k| k.name.starts_with(name)))
}

#[test]
fn every_attribute_the_code_reads_is_in_the_registry() {
    let mut files = Vec::new();
    sources(&root().join("crates"), &mut files);
    sources(&root().join("bins"), &mut files);
    let mut missing = Vec::new();
    let mut seen = 0;
    for f in &files {
        for name in attribute_literals(&std::fs::read_to_string(f).unwrap()) {
            seen += 1;
            if !registered(&name) {
                missing.push(format!("{name} ({})", f.display()));
            }
        }
    }
    assert!(seen > 30, "found only {seen} attribute names in the code");
    assert!(
        missing.is_empty(),
        "read by the code, not in crates/core/src/attrs/known.rs: {missing:?}"
    );
}

#[test]
fn an_unregistered_attribute_is_found() {
    let found = attribute_literals(
        "let x = c.attr(h, \"kvm_brand_new\");\n#[cfg(test)]\n\"kvm_in_a_test\"",
    );
    assert_eq!(found, ["kvm_brand_new"]);
    assert!(!registered("kvm_brand_new"));
    assert!(registered("kvm_device_"));
}

/// The page's summary lines: those under a `### ` heading that start
/// with ``- `NAME`:``, by name.
fn page_summaries(page: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_attr = false;
    for line in page.lines() {
        if line.starts_with("## ") {
            in_attr = false;
        } else if line.starts_with("### ") {
            in_attr = true;
        } else if in_attr {
            if let Some(rest) = line.strip_prefix("- `") {
                if let Some((name, _)) = rest.split_once("`:") {
                    out.push((name.to_string(), line.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn the_manual_gives_every_entry_field_by_field() {
    let page = std::fs::read_to_string(root().join("docs/man/kvmroll-attributes.7.md")).unwrap();
    let lines = page_summaries(&page);
    let mut wrong = Vec::new();
    for k in KNOWN {
        let want = k.summary();
        match lines
            .iter()
            .filter(|(n, _)| n == k.name)
            .collect::<Vec<_>>()[..]
        {
            [(_, line)] if *line == want => {}
            [(_, line)] => wrong.push(format!(
                "{}: the page has\n  {line}\nthe registry\n  {want}",
                k.name
            )),
            [] => wrong.push(format!(
                "{}: not on the page; add under its heading:\n  {want}",
                k.name
            )),
            _ => wrong.push(format!("{}: on the page more than once", k.name)),
        }
    }
    for (name, _) in &lines {
        if !KNOWN.iter().any(|k: &Known| k.name == name) {
            wrong.push(format!("{name}: on the page, not in the registry"));
        }
    }
    assert!(
        wrong.is_empty(),
        "kvmroll-attributes.7.md:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_changed_default_is_seen_on_the_page() {
    let page = "## X\n### kvm_autostart\n- `kvm_autostart`: vm; boolean; default `true`\n";
    let lines = page_summaries(page);
    assert_eq!(lines.len(), 1);
    let k = lookup("kvm_autostart").unwrap();
    assert_ne!(lines[0].1, k.summary());
}

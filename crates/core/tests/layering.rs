//! Holds the layering written down in `src/lib.rs`: no two modules of
//! kvmroll-core (nor of any other crate of the workspace) import each
//! other, directly or through others. A cycle
//! means neither module can be read, tested or moved without the other.
//!
//! The sources are read as text: a module is a file or folder right under
//! `src/`, and it imports another wherever its code (comments left out)
//! names `crate::other`, or `other` inside a `crate::{...}` group. Unit
//! tests count: a test that needs a module above its own is a cycle too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules of `src` and the files of each.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            out.entry(name).or_default().extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            out.entry(name).or_default().push(path);
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// `text` without its comment lines (`//`, `//!`, `///`): a doc link names
/// a module without importing it.
fn code_of(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment of every item `code` reaches through `crate::`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        // `$crate::` in a macro is the same crate; any other identifier
        // ending in `crate` (`kvmroll_crate::`) is not.
        let before = rest[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            rest = after;
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            // Top-level items of the group: split at commas outside braces.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(first_segment(&item));
        } else {
            out.insert(first_segment(after));
        }
        rest = after;
    }
    out
}

fn first_segment(path: &str) -> String {
    path.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Which modules each module imports.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let mut edges = BTreeMap::new();
    for (name, files) in &mods {
        let mut to = BTreeSet::new();
        for file in files {
            let code = code_of(&std::fs::read_to_string(file).unwrap());
            to.extend(
                crate_paths(&code)
                    .into_iter()
                    .filter(|m| m != name && mods.contains_key(m)),
            );
        }
        edges.insert(name.clone(), to);
    }
    edges
}

/// A path from `from` back to `to` through `edges`, if there is one.
fn path_back(
    edges: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in &edges[from] {
        if next == to {
            return Some(vec![to.to_string()]);
        }
        if seen.insert(next.clone()) {
            if let Some(mut rest) = path_back(edges, next, to, seen) {
                rest.insert(0, next.clone());
                return Some(rest);
            }
        }
    }
    None
}

/// Every module that is part of a cycle, each with one cycle it is on.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for name in edges.keys() {
        if let Some(back) = path_back(edges, name, name, &mut BTreeSet::new()) {
            found.push(format!("{name} -> {}", back.join(" -> ")));
        }
    }
    found
}

#[test]
fn no_two_modules_of_core_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(
        edges.len() > 10 && edges.values().any(|e| !e.is_empty()),
        "the sources were not read: {edges:?}"
    );
    let found = cycles(&edges);
    assert!(
        found.is_empty(),
        "modules of kvmroll-core import each other (see the layering in src/lib.rs):\n{}",
        found.join("\n")
    );
}

/// The same for every other crate of the workspace: its libraries and its
/// binaries (whose root is main.rs).
#[test]
fn no_two_modules_of_any_crate_of_the_workspace_import_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    let mut found = Vec::new();
    for group in ["crates", "bins"] {
        for entry in std::fs::read_dir(root.join(group)).unwrap() {
            let src = entry.unwrap().path().join("src");
            if !src.is_dir() {
                continue;
            }
            checked += 1;
            for cycle in cycles(&graph(&src)) {
                found.push(format!("{}: {cycle}", src.display()));
            }
        }
    }
    assert!(checked >= 9, "only {checked} crates were read");
    assert!(
        found.is_empty(),
        "modules of a crate import each other:\n{}",
        found.join("\n")
    );
}

/// The checker itself finds a cycle, direct or through others, and reads
/// `crate::{...}` groups and nothing in comments.
#[test]
fn the_checker_sees_cycles_through_groups_and_not_in_comments() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path();
    std::fs::create_dir(src.join("c")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a; pub mod b; pub mod c;").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::{b::X, text};\n").unwrap();
    std::fs::write(src.join("b.rs"), "fn f() { crate::c::g() }\n").unwrap();
    std::fs::write(src.join("c/mod.rs"), "//! see [`crate::a`]\nmod d;\n").unwrap();
    std::fs::write(src.join("c/d.rs"), "fn g() {}\n").unwrap();
    let edges = graph(src);
    assert!(cycles(&edges).is_empty(), "{edges:?}");
    std::fs::write(src.join("c/d.rs"), "use crate::{\n    a::{Y, Z},\n};\n").unwrap();
    assert_eq!(cycles(&graph(src))[0], "a -> b -> c -> a");
}

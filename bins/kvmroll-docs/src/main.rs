//! `kvmroll-docs DIR`: writes the manual pages and the bash, zsh and fish
//! completions of every kvmroll binary under DIR, from the very clap
//! definitions the binaries parse with (options and commands, so they never
//! drift) and the prose of `docs/man/*.md` (each page's NAME line and its
//! sections), built into this binary.
//!
//!     DIR/man/man1/kvmroll.1  kvmroll-SUBCOMMAND.1  kvmroll-gen.1
//!     DIR/man/man5/kvmroll.conf.5  kvmroll-metadata.5
//!     DIR/man/man7/kvmroll-attributes.7
//!     DIR/man/man8/kvmroll-enable.8  kvmroll-guests.8  kvmroll-hook.8
//!     DIR/bash-completion/completions/NAME
//!     DIR/zsh/vendor-completions/_NAME
//!     DIR/fish/vendor_completions.d/NAME.fish
//!
//! kvmroll's completions are the scripts of clap_complete's dynamic
//! completion, which ask `kvmroll` for VM, host and attribute names from
//! the database; the other binaries' list their options.
//!
//! It refuses (exit 1) a page whose Markdown lacks a NAME line for it, and
//! a page that names a kvmroll page it does not write.

mod markdown;
mod page;

use clap::Command;
use markdown::Doc;
use page::{Page, Text};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A binary's page: its clap command, section, Markdown, and whether its
/// first-level subcommands get pages of their own.
struct Binary {
    name: &'static str,
    section: &'static str,
    cmd: fn() -> Command,
    md: &'static str,
    split: bool,
    /// Its completions ask the binary (names from the database), rather
    /// than being a fixed script of its options.
    dynamic: bool,
}

const BINARIES: &[Binary] = &[
    Binary {
        name: "kvmroll",
        section: "1",
        cmd: kvmroll::command,
        md: include_str!("../../../docs/man/kvmroll.1.md"),
        split: true,
        dynamic: true,
    },
    Binary {
        name: "kvmroll-gen",
        section: "1",
        cmd: kvmroll_gen::command,
        md: include_str!("../../../docs/man/kvmroll-gen.1.md"),
        split: false,
        dynamic: false,
    },
    Binary {
        name: "kvmroll-enable",
        section: "8",
        cmd: kvmroll_enable::command,
        md: include_str!("../../../docs/man/kvmroll-enable.8.md"),
        split: false,
        dynamic: false,
    },
    Binary {
        name: "kvmroll-guests",
        section: "8",
        cmd: kvmroll_guests::command,
        md: include_str!("../../../docs/man/kvmroll-guests.8.md"),
        split: false,
        dynamic: false,
    },
    Binary {
        name: "kvmroll-hook",
        section: "8",
        cmd: kvmroll_hook::command,
        md: include_str!("../../../docs/man/kvmroll-hook.8.md"),
        split: false,
        dynamic: false,
    },
];

/// The configuration file's page, written in roff by hand.
const CONF_PAGE: &str = include_str!("../../../docs/man/kvmroll.conf.5");
/// Every attribute kvmroll reads.
const ATTRIBUTES_MD: &str = include_str!("../../../docs/man/kvmroll-attributes.7.md");
/// What kvmroll writes into every domain definition.
const METADATA_MD: &str = include_str!("../../../docs/man/kvmroll-metadata.5.md");

/// Why the pages could not be made.
#[derive(Debug, thiserror::Error)]
enum DocsError {
    #[error("{page}: its Markdown has no NAME section reading \"{page} - WHAT\"")]
    NoName { page: String },
    #[error("{page} names pages that are not made: {names}")]
    Dangling { page: String, names: String },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How `kvmroll-docs` exits.
#[derive(Debug, Clone, Copy)]
enum Exit {
    Done,
    /// A page could not be made or written: said on stderr.
    Failed,
    /// Not one DIR argument.
    Usage,
}

impl kvmroll_cli::ExitStatus for Exit {
    fn code(&self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
            Exit::Usage => kvmroll_cli::usage::USAGE_EXIT,
        }
    }
}

/// The NAME line's description from a page's Markdown, which must name it.
fn name_of(page: &str, doc: &Doc) -> Result<String, DocsError> {
    match doc.name_line() {
        Some((name, what)) if name == page => Ok(what),
        _ => Err(DocsError::NoName {
            page: page.to_string(),
        }),
    }
}

/// Every page, rendered.
fn pages() -> Result<Vec<Page>, DocsError> {
    let docs: Vec<Doc> = BINARIES.iter().map(|b| Doc::parse(b.md)).collect();
    let mut cmds: Vec<Command> = BINARIES
        .iter()
        .map(|b| {
            let mut c = (b.cmd)().disable_help_subcommand(true);
            c.build();
            c
        })
        .collect();
    let top: Vec<String> = BINARIES
        .iter()
        .map(|b| format!("{}({})", b.name, b.section))
        .chain([
            "kvmroll.conf(5)".to_string(),
            "kvmroll-attributes(7)".to_string(),
            "kvmroll-metadata(5)".to_string(),
        ])
        .collect();
    let others = |me: &str| -> Vec<String> { top.iter().filter(|p| *p != me).cloned().collect() };
    let mut out = Vec::new();
    for ((b, doc), cmd) in BINARIES.iter().zip(&docs).zip(&mut cmds) {
        let me = format!("{}({})", b.name, b.section);
        let split = b.split.then(|| {
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| format!("{}-{}({})", b.name, s.get_name(), b.section))
                .collect::<Vec<_>>()
        });
        let mut see_also = split.clone().unwrap_or_default();
        see_also.extend(others(&me));
        out.push(page::command_page(
            cmd,
            &Text {
                name: b.name.to_string(),
                what: name_of(b.name, doc)?,
                section: b.section,
                md: Some(doc),
                split: split.clone(),
                see_also,
            },
        ));
        if b.split {
            out.extend(subcommand_pages(b, cmd, &me));
        }
    }
    for (name, section, md) in [
        ("kvmroll-attributes", "7", ATTRIBUTES_MD),
        ("kvmroll-metadata", "5", METADATA_MD),
    ] {
        let doc = Doc::parse(md);
        out.push(page::markdown_page(
            &doc,
            &Text {
                name: name.to_string(),
                what: name_of(name, &doc)?,
                section,
                md: Some(&doc),
                split: None,
                see_also: others(&format!("{name}({section})")),
            },
        ));
    }
    out.push(Page {
        name: "kvmroll.conf".to_string(),
        section: "5".to_string(),
        roff: CONF_PAGE.to_string(),
    });
    check_references(&out)?;
    Ok(out)
}

/// A page for each visible first-level subcommand of `b`, as
/// `NAME-SUBCOMMAND(N)`, seeing also its binary's page `me`.
fn subcommand_pages(b: &Binary, cmd: &Command, me: &str) -> Vec<Page> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{}-{}", b.name, sub.get_name());
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.push(page::command_page(
            sub,
            &Text {
                what: page::what_of(&about),
                name,
                section: b.section,
                md: None,
                split: None,
                see_also: vec![
                    me.to_string(),
                    "kvmroll-attributes(7)".to_string(),
                    "kvmroll.conf(5)".to_string(),
                ],
            },
        ));
    }
    out
}

/// Refuses a page that names a kvmroll page not among `pages`.
fn check_references(pages: &[Page]) -> Result<(), DocsError> {
    let made: Vec<String> = pages
        .iter()
        .map(|p| format!("{}({})", p.name, p.section))
        .collect();
    for p in pages {
        let dangling: Vec<String> = references(&p.roff)
            .into_iter()
            .filter(|r| !made.contains(r))
            .collect();
        if !dangling.is_empty() {
            return Err(DocsError::Dangling {
                page: format!("{}({})", p.name, p.section),
                names: dangling.join(", "),
            });
        }
    }
    Ok(())
}

/// The kvmroll pages a roff text names, as `name(N)`.
pub fn references(roff: &str) -> Vec<String> {
    let text = roff
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
        .replace("\\&", "");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("kvmroll") {
        let tail = &rest[i..];
        let name_len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
            .unwrap_or(tail.len());
        let after = &tail[name_len..];
        let section: String = after
            .strip_prefix('(')
            .map(|s| s.chars().take_while(char::is_ascii_digit).collect())
            .unwrap_or_default();
        let name = tail[..name_len].trim_end_matches('.');
        if !section.is_empty() && after[1 + section.len()..].starts_with(')') {
            let r = format!("{name}({section})");
            if !out.contains(&r) {
                out.push(r);
            }
        }
        rest = &tail[name_len.max(1)..];
    }
    out
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DocsError> {
    let err = |source| DocsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, bytes).map_err(err)
}

/// The script that has the shell ask `NAME` itself for completions
/// (`COMPLETE=SHELL NAME -- WORDS...`), so that names come from the
/// database as it is when the user presses tab.
fn registration(shell: clap_complete::Shell, name: &str, out: &mut Vec<u8>) {
    use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Zsh => &Zsh,
        clap_complete::Shell::Fish => &Fish,
        _ => &Bash,
    };
    completer
        .write_registration("COMPLETE", name, name, name, out)
        .expect("writing to a Vec cannot fail");
}

fn completions(dir: &Path) -> Result<(), DocsError> {
    use clap_complete::Shell;
    for b in BINARIES {
        for (shell, file) in [
            (
                Shell::Bash,
                format!("bash-completion/completions/{}", b.name),
            ),
            (Shell::Zsh, format!("zsh/vendor-completions/_{}", b.name)),
            (
                Shell::Fish,
                format!("fish/vendor_completions.d/{}.fish", b.name),
            ),
        ] {
            let mut out = Vec::new();
            if b.dynamic {
                registration(shell, b.name, &mut out);
            } else {
                let mut cmd = (b.cmd)();
                clap_complete::generate(shell, &mut cmd, b.name, &mut out);
            }
            write_file(&dir.join(file), &out)?;
        }
    }
    Ok(())
}

fn run(dir: &Path) -> Result<(), DocsError> {
    for p in pages()? {
        let path = dir.join(format!("man/man{0}/{1}.{0}", p.section, p.name));
        write_file(&path, p.roff.as_bytes())?;
    }
    completions(dir)
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: kvmroll-docs DIR");
        return ExitCode::from(kvmroll_cli::ExitStatus::code(&Exit::Usage));
    };
    kvmroll_cli::finish("kvmroll-docs", run(dir).map(|()| Exit::Done), Exit::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_through_roff_escapes() {
        let r = references(
            ".B kvmroll\\-vm(1), \\fBkvmroll.conf\\fR(5) and kvmroll-hook(8).\nkvmroll vm",
        );
        assert_eq!(r, ["kvmroll-vm(1)", "kvmroll.conf(5)", "kvmroll-hook(8)"]);
    }

    #[test]
    fn every_page_has_its_own_name_line() {
        for p in pages().unwrap() {
            let name = p.name.replace('-', "\\-");
            let after = p.roff.split(".SH NAME\n").nth(1).unwrap_or_default();
            let line = after.lines().next().unwrap_or_default();
            assert!(
                line.starts_with(&format!("{name} \\- ")),
                "{}: {line}",
                p.name
            );
            assert!(!line.contains("Generates"), "{}: {line}", p.name);
        }
    }

    #[test]
    fn a_markdown_page_for_another_name_is_refused() {
        let doc = Doc::parse("## NAME\nkvmroll-gen - render\n");
        assert!(name_of("kvmroll-enable", &doc).is_err());
        assert_eq!(name_of("kvmroll-gen", &doc).unwrap(), "render");
    }
}

//! One manual page in roff, from a binary's clap definition and its
//! `docs/man/*.md` text. The Markdown gives the NAME line and the prose
//! (DESCRIPTION, EXIT STATUS, FILES, ...); clap gives the OPTIONS and the
//! COMMANDS, so those never drift from what the binary parses. A command's
//! subcommands are described inline, except where they get pages of their
//! own (`kvmroll`'s, such as kvmroll-vm(1)): a page names only pages that
//! are generated too.

use crate::markdown::{self, Doc};
use clap::{Arg, ArgAction, Command};
use roff::{bold, italic, roman, Inline, Roff};

/// Sections a page builds itself rather than copy from its Markdown.
const OWN: &[&str] = &["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"];

/// A rendered page: its name, its section and its roff text.
#[derive(Debug, Clone)]
pub struct Page {
    pub name: String,
    pub section: String,
    pub roff: String,
}

/// What a page needs besides its command.
#[derive(Debug)]
pub struct Text<'a> {
    /// The page's name and the NAME line's description.
    pub name: String,
    pub what: String,
    pub section: &'a str,
    /// Its Markdown, for the prose sections.
    pub md: Option<&'a Doc>,
    /// The pages of the first-level subcommands, where they have their own.
    pub split: Option<Vec<String>>,
    /// The pages it points to at its end, as `name(N)`.
    pub see_also: Vec<String>,
}

/// The `.TH` line every page starts with.
fn title(roff: &mut Roff, name: &str, section: &str) {
    let source = format!("kvmroll {}", env!("CARGO_PKG_VERSION"));
    roff.control(
        "TH",
        [
            name.to_uppercase().as_str(),
            section,
            "",
            source.as_str(),
            "kvmroll manual",
        ],
    );
}

/// A one-line description as a NAME line wants it: lowercase start, no
/// closing period.
pub fn what_of(about: &str) -> String {
    let line = about.lines().next().unwrap_or_default().trim();
    let line = line.strip_suffix('.').unwrap_or(line);
    let mut chars = line.chars();
    match (chars.next(), chars.clone().next()) {
        // An acronym or a name (`VM`, `NIC`) keeps its case.
        (Some(c), Some(n)) if n.is_lowercase() => c.to_lowercase().chain(chars).collect(),
        _ => line.to_string(),
    }
}

/// The subcommands a page describes: not hidden, not clap's `help`.
fn subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// The arguments a page lists: not hidden; `global` ones only where
/// `globals` (they are listed once, on the page of the command that has them).
fn arguments(cmd: &Command, globals: bool) -> Vec<&Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter(|a| globals || !a.is_global_set())
        .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version) || globals)
        .collect()
}

/// `clap`'s usage line of a built command, without its "Usage: ".
fn usage(cmd: &Command) -> String {
    let text = cmd.clone().render_usage().to_string();
    let text = text.trim();
    // clap's first line of several (a command with arguments and subcommands).
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("Usage: ").unwrap_or(first).to_string()
}

/// The tag of an option's entry: `-s`, `--long VALUE` or a positional's
/// `VALUE`.
fn arg_tag(arg: &Arg) -> Vec<Inline> {
    let value = || {
        arg.get_value_names()
            .map(|v| v.join(" "))
            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase())
    };
    let takes_value = !matches!(
        arg.get_action(),
        ArgAction::SetTrue
            | ArgAction::SetFalse
            | ArgAction::Count
            | ArgAction::Help
            | ArgAction::HelpShort
            | ArgAction::HelpLong
            | ArgAction::Version
    );
    let mut tag = Vec::new();
    if arg.is_positional() {
        tag.push(italic(value()));
        return tag;
    }
    if let Some(s) = arg.get_short() {
        tag.push(bold(format!("-{s}")));
    }
    if let Some(l) = arg.get_long() {
        if !tag.is_empty() {
            tag.push(roman(", "));
        }
        tag.push(bold(format!("--{l}")));
    }
    if takes_value {
        tag.push(roman(" "));
        tag.push(italic(value()));
    }
    tag
}

/// An option's description, with its default and possible values.
fn arg_help(arg: &Arg) -> String {
    let mut text = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default()
        .replace('\n', " ");
    let plain = matches!(
        arg.get_action(),
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
    );
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !plain && !arg.is_hide_default_value_set() && !defaults.is_empty() {
        text.push_str(&format!(" [default: {}]", defaults.join(", ")));
    }
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|p| !p.is_hide_set())
        .map(|p| p.get_name().to_string())
        .collect();
    if !plain && !arg.is_hide_possible_values_set() && !possible.is_empty() {
        text.push_str(&format!(" [possible values: {}]", possible.join(", ")));
    }
    text.trim().to_string()
}

fn options(roff: &mut Roff, args: &[&Arg]) {
    for arg in args {
        roff.control("TP", []);
        roff.text(arg_tag(arg));
        let help = arg_help(arg);
        if !help.is_empty() {
            roff.text(markdown::inline(&help));
        }
    }
}

/// A command's long description as paragraphs.
fn described(roff: &mut Roff, cmd: &Command) {
    let Some(text) = cmd.get_long_about().or_else(|| cmd.get_about()) else {
        return;
    };
    let lines: Vec<String> = text.to_string().lines().map(str::to_string).collect();
    markdown::body(roff, &lines);
}

/// Every subcommand of `cmd`, depth first, each as a subsection with its
/// usage, description and own options.
fn inline_commands(roff: &mut Roff, cmd: &Command) {
    for sub in subcommands(cmd) {
        let path = sub
            .get_bin_name()
            .map(str::to_string)
            .unwrap_or_else(|| sub.get_name().to_string());
        roff.control("SS", [path.as_str()]);
        roff.text([bold(usage(sub))]);
        roff.control("PP", []);
        described(roff, sub);
        let args = arguments(sub, false);
        if !args.is_empty() {
            roff.control("RS", ["4"]);
            options(roff, &args);
            roff.control("RE", []);
        }
        inline_commands(roff, sub);
    }
}

/// The page of a built command.
pub fn command_page(cmd: &Command, t: &Text<'_>) -> Page {
    let mut r = head(t);

    r.control("SH", ["SYNOPSIS"]);
    match t.md.and_then(|d| d.section("SYNOPSIS")) {
        Some(lines) => markdown::body(&mut r, lines),
        None => {
            let mut lines = vec![usage(cmd)];
            if t.split.is_none() && subcommands(cmd).next().is_some() {
                // A command that runs by itself too (`events`) keeps its line.
                if arguments(cmd, false).is_empty() {
                    lines.clear();
                }
                lines.extend(leaves(cmd).iter().map(|c| usage(c)));
            }
            r.control("nf", []);
            for l in lines {
                r.text([bold(l)]);
            }
            r.control("fi", []);
        }
    }

    r.control("SH", ["DESCRIPTION"]);
    match t.md.and_then(|d| d.section("DESCRIPTION")) {
        Some(lines) => markdown::body(&mut r, lines),
        None => described(&mut r, cmd),
    }

    let args = arguments(cmd, true);
    if !args.is_empty() {
        r.control("SH", ["OPTIONS"]);
        options(&mut r, &args);
    }

    if subcommands(cmd).next().is_some() {
        r.control("SH", ["COMMANDS"]);
        match &t.split {
            Some(pages) => {
                for (sub, page) in subcommands(cmd).zip(pages) {
                    r.control("TP", []);
                    r.text([bold(page.as_str())]);
                    r.text([roman(what_of(
                        &sub.get_about().map(|a| a.to_string()).unwrap_or_default(),
                    ))]);
                }
            }
            None => inline_commands(&mut r, cmd),
        }
    }

    finish(r, t)
}

/// A page of Markdown alone (kvmroll-attributes(7)).
pub fn markdown_page(doc: &Doc, t: &Text<'_>) -> Page {
    let mut r = head(t);
    for heading in ["SYNOPSIS", "DESCRIPTION"] {
        if let Some(lines) = doc.section(heading) {
            r.control("SH", [heading]);
            markdown::body(&mut r, lines);
        }
    }
    finish(r, t)
}

/// A page's start: its title and NAME line.
fn head(t: &Text<'_>) -> Roff {
    let mut r = Roff::new();
    title(&mut r, &t.name, t.section);
    r.control("SH", ["NAME"]);
    r.text([roman(format!("{} - {}", t.name, t.what))]);
    r
}

/// A page's end: its Markdown's sections that are not built otherwise,
/// and SEE ALSO.
fn finish(mut r: Roff, t: &Text<'_>) -> Page {
    if let Some(doc) = t.md {
        prose(&mut r, doc);
    }
    see_also(&mut r, &t.see_also);
    Page {
        name: t.name.clone(),
        section: t.section.to_string(),
        roff: r.to_roff(),
    }
}

/// The commands at the ends of `cmd`'s tree (those a user runs).
fn leaves(cmd: &Command) -> Vec<&Command> {
    let mut out = Vec::new();
    for sub in subcommands(cmd) {
        // A command with arguments of its own runs by itself too (`events`).
        if subcommands(sub).next().is_none() || !arguments(sub, false).is_empty() {
            out.push(sub);
        }
        out.extend(leaves(sub));
    }
    out
}

/// The Markdown's sections that the page does not build itself, in order.
fn prose(r: &mut Roff, doc: &Doc) {
    for (heading, lines) in &doc.sections {
        if OWN.contains(&heading.as_str()) {
            continue;
        }
        r.control("SH", [heading.as_str()]);
        markdown::body(r, lines);
    }
}

fn see_also(r: &mut Roff, pages: &[String]) {
    if pages.is_empty() {
        return;
    }
    r.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, p) in pages.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(p.as_str()));
    }
    r.text(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_also_runs_alone_keeps_its_synopsis_line() {
        let mut cmd = Command::new("events")
            .bin_name("kvmroll events")
            .arg(clap::Arg::new("vm").long("vm"))
            .subcommand(Command::new("prune").about("Delete old events."))
            .args_conflicts_with_subcommands(true)
            .disable_help_subcommand(true);
        cmd.build();
        let page = command_page(
            &cmd,
            &Text {
                name: "kvmroll-events".into(),
                what: "events".into(),
                section: "1",
                md: None,
                split: None,
                see_also: vec!["kvmroll(1)".into()],
            },
        );
        let synopsis = page.roff.split(".SH SYNOPSIS\n").nth(1).unwrap();
        let synopsis = synopsis.split(".SH").next().unwrap();
        assert!(synopsis.contains("kvmroll events [OPTIONS]"), "{synopsis}");
        assert!(synopsis.contains("kvmroll events prune"), "{synopsis}");
        assert!(
            page.roff.contains(".SS \"kvmroll events prune\""),
            "{}",
            page.roff
        );
    }

    #[test]
    fn what_reads_as_a_name_line() {
        assert_eq!(what_of("Virtual machines."), "virtual machines");
        assert_eq!(what_of("VM state"), "VM state");
        assert_eq!(what_of("Add a host.\n\nMore."), "add a host");
    }
}

//! The small part of Markdown that `docs/man/*.md` is written in, turned
//! into roff for a manual page: `## SECTION` and `### Subsection` headings,
//! paragraphs, indented code blocks, `- ` lists, tables (each row a tagged
//! paragraph, its cells labelled by the header) and, inline, `code` and
//! **strong** (both bold). Everything else is text, escaped by the roff
//! crate, so a stray `.` or `\` cannot become a roff request.

use roff::{bold, roman, Inline, Roff};

/// A Markdown document split at its `## ` headings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// `(HEADING, body lines)` in their order.
    pub sections: Vec<(String, Vec<String>)>,
}

impl Doc {
    /// Splits `text` at `## ` headings; a `# ` title and anything before the
    /// first section are dropped.
    pub fn parse(text: &str) -> Doc {
        let mut sections: Vec<(String, Vec<String>)> = Vec::new();
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("## ") {
                sections.push((h.trim().to_string(), Vec::new()));
            } else if let Some((_, body)) = sections.last_mut() {
                body.push(line.to_string());
            }
        }
        Doc { sections }
    }

    /// The body of section `heading`, if the document has it.
    pub fn section(&self, heading: &str) -> Option<&[String]> {
        self.sections
            .iter()
            .find(|(h, _)| h == heading)
            .map(|(_, b)| b.as_slice())
    }

    /// The NAME section as `(name, what it is)`: its text is `name - what`.
    pub fn name_line(&self) -> Option<(String, String)> {
        let text = self.section("NAME")?.join(" ");
        let (name, what) = text.trim().split_once(" - ")?;
        Some((name.trim().to_string(), what.trim().to_string()))
    }
}

/// `text` with `code` and **strong** spans in bold.
pub fn inline(text: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut plain = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['`', '*']) {
        let (before, from) = rest.split_at(i);
        let marker = if from.starts_with("**") {
            "**"
        } else if from.starts_with('`') {
            "`"
        } else {
            plain.push_str(before);
            plain.push('*');
            rest = &from[1..];
            continue;
        };
        match from[marker.len()..].find(marker) {
            Some(end) if end > 0 => {
                plain.push_str(before);
                if !plain.is_empty() {
                    out.push(roman(std::mem::take(&mut plain)));
                }
                out.push(bold(&from[marker.len()..marker.len() + end]));
                rest = &from[2 * marker.len() + end..];
            }
            // An unpaired marker is text.
            _ => {
                plain.push_str(before);
                plain.push_str(marker);
                rest = &from[marker.len()..];
            }
        }
    }
    plain.push_str(rest);
    if !plain.is_empty() {
        out.push(roman(plain));
    }
    out
}

/// The cells of a table row `| a | b |`.
fn cells(row: &str) -> Vec<String> {
    row.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// Whether a table row is the `|---|---|` line under the header.
fn is_rule(row: &str) -> bool {
    row.trim()
        .chars()
        .all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// Appends the roff of a section body (the lines under a `## ` heading).
pub fn body(roff: &mut Roff, lines: &[String]) {
    let mut i = 0;
    let mut first = true;
    while i < lines.len() {
        let line = &lines[i];
        if line.trim().is_empty() {
            i += 1;
            continue;
        }
        if let Some(h) = line.strip_prefix("### ") {
            roff.control("SS", [h.trim()]);
            first = true;
            i += 1;
            continue;
        }
        if line.starts_with("- ") {
            i = item(roff, lines, i);
            first = false;
            continue;
        }
        // A new block after the first starts a new paragraph.
        if !first {
            roff.control("PP", []);
        }
        first = false;
        i = if line.starts_with("    ") {
            code_block(roff, lines, i)
        } else if line.trim_start().starts_with('|') {
            table(roff, lines, i)
        } else {
            paragraph(roff, lines, i)
        };
    }
}

/// An indented code block from line `i`, kept as it is; the line after it.
fn code_block(roff: &mut Roff, lines: &[String], mut i: usize) -> usize {
    roff.control("RS", ["4"]);
    roff.control("nf", []);
    while i < lines.len() && (lines[i].starts_with("    ") || lines[i].trim().is_empty()) {
        // A blank line inside the block is kept only before more code.
        let more = lines[i..].iter().any(|l| l.starts_with("    "));
        if !more {
            break;
        }
        roff.text([roman(lines[i].get(4..).unwrap_or_default())]);
        i += 1;
    }
    roff.control("fi", []);
    roff.control("RE", []);
    i
}

/// A table from line `i`: one tagged paragraph per row, its other cells
/// named by their headers; the line after it.
fn table(roff: &mut Roff, lines: &[String], mut i: usize) -> usize {
    let header = cells(&lines[i]);
    i += 1;
    while i < lines.len() && lines[i].trim_start().starts_with('|') {
        if !is_rule(&lines[i]) {
            let row = cells(&lines[i]);
            roff.control("TP", []);
            roff.text(inline(&row[0]));
            let described: Vec<String> = row
                .iter()
                .zip(header.iter())
                .skip(1)
                .map(|(cell, head)| format!("{head}: {cell}"))
                .collect();
            roff.text(inline(&described.join("; ")));
        }
        i += 1;
    }
    i
}

/// A `- ` list item from line `i` with its indented continuation lines;
/// the line after it.
fn item(roff: &mut Roff, lines: &[String], mut i: usize) -> usize {
    let mut text = lines[i]["- ".len()..].to_string();
    i += 1;
    while i < lines.len() && lines[i].starts_with("  ") && !lines[i].trim().is_empty() {
        text.push(' ');
        text.push_str(lines[i].trim());
        i += 1;
    }
    roff.control("IP", ["\\(bu", "2"]);
    roff.text(inline(&text));
    i
}

/// A paragraph from line `i`, up to a blank line or another block; the
/// line after it.
fn paragraph(roff: &mut Roff, lines: &[String], mut i: usize) -> usize {
    let mut text = lines[i].trim().to_string();
    i += 1;
    while i < lines.len() {
        let l = &lines[i];
        let ends = l.trim().is_empty()
            || l.starts_with("    ")
            || l.starts_with("### ")
            || l.trim_start().starts_with('|')
            || l.starts_with("- ");
        if ends {
            break;
        }
        text.push(' ');
        text.push_str(l.trim());
        i += 1;
    }
    roff.text(inline(&text));
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(md: &str) -> String {
        let doc = Doc::parse(md);
        let mut roff = Roff::new();
        for (h, b) in &doc.sections {
            roff.control("SH", [h.as_str()]);
            body(&mut roff, b);
        }
        roff.to_roff()
    }

    #[test]
    fn sections_name_and_text() {
        let md = "# x(1)\n\n## NAME\nkvmroll-x - do a\nthing\n\n## DESCRIPTION\nOne `code` and\n**strong**.\n\nTwo.\n";
        let doc = Doc::parse(md);
        assert_eq!(
            doc.name_line(),
            Some(("kvmroll-x".to_string(), "do a thing".to_string()))
        );
        let r = render(md);
        assert!(
            r.contains(".SH DESCRIPTION\nOne \\fBcode\\fR and \\fBstrong\\fR.\n.PP\nTwo.\n"),
            "{r}"
        );
    }

    #[test]
    fn a_leading_dot_or_backslash_stays_text() {
        let r = render("## A\n.TH evil\n\\fBx\n");
        assert!(!r.contains("\n.TH evil"), "{r}");
        assert!(r.contains("\\\\fBx"), "{r}");
    }

    #[test]
    fn code_blocks_tables_and_lists() {
        let md = "## A\n    kvmroll vm add X\n    kvmroll vm list\n\n| event | stage |\n|---|---|\n| prepare begin | allocate |\n\n- one\n  more\n- two\n";
        let r = render(md);
        assert!(
            r.contains(".nf\nkvmroll vm add X\nkvmroll vm list\n.fi"),
            "{r}"
        );
        assert!(r.contains(".TP\nprepare begin\nstage: allocate\n"), "{r}");
        assert!(r.contains(".IP \\(bu 2\none more\n"), "{r}");
    }

    #[test]
    fn unpaired_markers_are_text() {
        let r = render("## A\nkvm_guests_* and `x\n");
        assert!(r.contains("kvm_guests_* and `x"), "{r}");
    }
}

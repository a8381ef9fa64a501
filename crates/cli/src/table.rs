//! Rows printed as aligned columns under a header, for people to read
//! (scripts use `--json`).

use std::io::Write;

/// Prints `header` and `rows` as columns two spaces apart, each as wide as
/// its widest cell (in characters); the last column is not padded and no
/// line ends in a space. The header line is printed only if `show_header`
/// (the columns as wide as with it, so that rows line up either way).
pub fn print_rows(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
    show_header: bool,
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    if show_header {
        writeln!(out, "{}", line(header))?;
    }
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    Ok(())
}

/// A list a command prints: a table for people (`--no-header` drops its
/// header line), or, with `--json`, an array of objects whose keys are the
/// table's columns (lowercase, a space as `_`) and whose values keep their
/// types. One value per cell keeps the two in step: a field cannot be in
/// one and not in the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table { header: bool },
    Json,
}

impl Format {
    /// The format `--json` and `--no-header` ask for.
    pub fn of(json: bool, no_header: bool) -> Format {
        if json {
            Format::Json
        } else {
            Format::Table { header: !no_header }
        }
    }
}

/// The JSON key of a column: `SAVED IMAGE` is `saved_image`.
pub fn json_key(column: &str) -> String {
    column.to_lowercase().replace(' ', "_")
}

/// A cell as the table shows it: text on one line (a newline as `\n`),
/// null as `-`, booleans as `yes` and `no`.
pub fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        serde_json::Value::String(s) => s.replace('\n', "\\n"),
        other => other.to_string(),
    }
}

/// Prints `rows` under `columns` in `format`.
pub fn print_listing(
    out: &mut dyn Write,
    columns: &[&str],
    rows: &[Vec<serde_json::Value>],
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            let objects: Vec<serde_json::Map<String, serde_json::Value>> = rows
                .iter()
                .map(|row| {
                    columns
                        .iter()
                        .map(|c| json_key(c))
                        .zip(row.iter().cloned())
                        .collect()
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &objects)?;
            writeln!(out)
        }
        Format::Table { header } => {
            let text: Vec<Vec<String>> = rows
                .iter()
                .map(|r| r.iter().map(cell_text).collect())
                .collect();
            print_rows(out, columns, &text, header)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::print_rows;

    fn table(header: &[&str], rows: &[&[&str]]) -> String {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect();
        let mut out = Vec::new();
        print_rows(&mut out, header, &rows, true).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        assert_eq!(
            table(
                &["NAME", "CPUS", "HOST"],
                &[&["vm-a", "2", "h1"], &["a-long-name", "16", ""]]
            ),
            "NAME         CPUS  HOST\nvm-a         2     h1\na-long-name  16\n"
        );
    }

    #[test]
    fn without_the_header_the_rows_keep_their_columns() {
        let rows = vec![vec!["vm-a".to_string(), "2".to_string()]];
        let mut out = Vec::new();
        super::print_rows(&mut out, &["A-LONG-HEADER", "CPUS"], &rows, false).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "vm-a           2\n");
    }

    #[test]
    fn a_listing_s_json_keys_are_its_columns() {
        use serde_json::json;
        let rows = vec![vec![json!("vm-a"), json!(null), json!(true), json!(2)]];
        let columns = ["VM", "CONTAINER", "KVM", "SAVED IMAGE"];
        let mut out = Vec::new();
        super::print_listing(&mut out, &columns, &rows, super::Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!([{"vm": "vm-a", "container": null, "kvm": true, "saved_image": 2}])
        );
        let mut out = Vec::new();
        let table = super::Format::of(false, false);
        super::print_listing(&mut out, &columns, &rows, table).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "VM    CONTAINER  KVM  SAVED IMAGE\nvm-a  -          yes  2\n"
        );
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        assert_eq!(
            table(&["A", "B"], &[&["é", "x"], &["ab", "y"]]),
            "A   B\né   x\nab  y\n"
        );
    }
}

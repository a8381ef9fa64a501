//! Rows printed as aligned columns under a header, for people to read
//! (scripts use `--json`).

use std::io::Write;

/// Prints `header` and `rows` as columns two spaces apart, each as wide as
/// its widest cell (in characters); the last column is not padded and no
/// line ends in a space.
pub fn print_table(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
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
    writeln!(out, "{}", line(header))?;
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::print_table;

    fn table(header: &[&str], rows: &[&[&str]]) -> String {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect();
        let mut out = Vec::new();
        print_table(&mut out, header, &rows).unwrap();
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
    fn width_counts_characters_not_bytes() {
        assert_eq!(
            table(&["A", "B"], &[&["é", "x"], &["ab", "y"]]),
            "A   B\né   x\nab  y\n"
        );
    }
}

//! libvirt's cpuset syntax (`0-3,^2,8`), used by `vcpupin`, `numa_cells` and
//! the pinning that kvmroll writes.

use std::collections::BTreeSet;

/// A set (or part of one) quoted in a refusal: the first characters only.
fn shown(spec: &str) -> String {
    crate::text::clip(spec, crate::text::QUOTE_CHARS)
}

/// The highest CPU number accepted; libvirt's own limit is far above any host.
pub const MAX_CPU: u32 = 4095;

/// Parses a libvirt cpuset: comma-separated numbers and ranges, with `^N`
/// excluding a CPU. An empty result is an error.
pub fn parse(spec: &str) -> Result<BTreeSet<u32>, String> {
    let mut set = BTreeSet::new();
    let mut excluded = BTreeSet::new();
    for part in spec.split(',') {
        let part = part.trim();
        if let Some(n) = part.strip_prefix('^') {
            excluded.insert(number(n, spec)?);
        } else if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (number(a, spec)?, number(b, spec)?);
            if a > b {
                return Err(format!(
                    "cpuset {:?}: range {a}-{b} runs backwards",
                    shown(spec)
                ));
            }
            set.extend(a..=b);
        } else {
            set.insert(number(part, spec)?);
        }
    }
    for e in excluded {
        set.remove(&e);
    }
    if set.is_empty() {
        return Err(format!("cpuset {:?} names no CPU", shown(spec)));
    }
    Ok(set)
}

fn number(s: &str, spec: &str) -> Result<u32, String> {
    let s = s.trim();
    match s.parse::<u32>() {
        Ok(n) if n <= MAX_CPU && !s.starts_with('+') => Ok(n),
        _ => Err(format!(
            "cpuset {:?}: {:?} is not a CPU number",
            shown(spec),
            shown(s)
        )),
    }
}

/// Parses `numa_cells`: one cpuset per NUMA cell, separated by `;` or white
/// space, e.g. `0-3,8-11;4-7,12-15`. Cells must not overlap.
pub fn parse_cells(spec: &str) -> Result<Vec<BTreeSet<u32>>, String> {
    let mut cells: Vec<BTreeSet<u32>> = Vec::new();
    for cell in spec.split([';', ' ', '\t', '\n']).filter(|c| !c.is_empty()) {
        let set = parse(cell)?;
        if let Some(cpu) = cells.iter().flatten().find(|c| set.contains(c)) {
            return Err(format!(
                "numa_cells {:?}: CPU {cpu} is in two cells",
                shown(spec)
            ));
        }
        cells.push(set);
    }
    if cells.is_empty() {
        return Err("numa_cells is empty".to_string());
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_exclusions() {
        let s = parse("0-3,^2,8").unwrap();
        assert_eq!(s.into_iter().collect::<Vec<_>>(), vec![0, 1, 3, 8]);
    }

    #[test]
    fn refuses_bad_sets() {
        for bad in ["", "a", "3-1", "^1", "1,,2", "-1", "99999", "+1"] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn parses_cells() {
        let c = parse_cells("0-1,4;2-3 5").unwrap();
        assert_eq!(c.len(), 3);
        assert!(parse_cells("0-3;3-5").is_err());
        assert!(parse_cells(" ; ").is_err());
    }
}

//! A whole cluster database as rows ([`Store::rows`], [`Store::fill`]):
//! every row of every kvmroll table, in engine-neutral cells, so that a
//! copy between engines keeps each row's identity and can be checked row
//! for row ([`crate::copy`]).

#[cfg(doc)]
use super::Store;
use super::StoreError;
use crate::cluster::Cluster;
use std::collections::BTreeSet;

/// kvmroll's tables, parents before the tables that refer to them.
pub const TABLES: &[&str] = &[
    "appliances",
    "hosts",
    "attributes",
    "vms",
    "vm_disks",
    "vm_nics",
    "events",
    "made_images",
    "disk_grows",
];

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Int(i) => write!(f, "{i}"),
            Cell::Text(t) => write!(f, "{:?}", crate::text::clip(t, 60)),
        }
    }
}

/// One table's rows; each row holds its cells in the order of `columns`,
/// which are sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The rows in one order whatever the engine returned them in.
    fn sort(&mut self) {
        self.rows.sort();
    }
}

/// Every kvmroll table of one database, in [`TABLES`] order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rows {
    pub tables: Vec<Table>,
}

impl Rows {
    /// Makes rows read by an engine comparable: columns by name, rows
    /// sorted. `columns` and each row come in the engine's column order.
    pub(crate) fn push(&mut self, name: &str, columns: Vec<String>, rows: Vec<Vec<Cell>>) {
        let mut order: Vec<usize> = (0..columns.len()).collect();
        order.sort_by(|a, b| columns[*a].cmp(&columns[*b]));
        let mut table = Table {
            name: name.to_string(),
            columns: order.iter().map(|i| columns[*i].clone()).collect(),
            rows: rows
                .into_iter()
                .map(|row| order.iter().map(|i| row[*i].clone()).collect())
                .collect(),
        };
        table.sort();
        self.tables.push(table);
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// How many rows `table` holds.
    pub fn count(&self, table: &str) -> usize {
        self.table(table).map_or(0, |t| t.rows.len())
    }

    /// What these rows hold beyond what a new database is seeded with, said
    /// for a message ("2 hosts, 1 VM, 30 events"); `None` for a database
    /// that holds no cluster yet.
    pub fn occupied(&self) -> Option<String> {
        let mut held = Vec::new();
        let vms = self.count("vms");
        let physical = self.count("hosts").saturating_sub(vms);
        for (n, one, many) in [
            (physical, "host", "hosts"),
            (vms, "VM", "VMs"),
            (self.count("events"), "event", "events"),
            (self.count("made_images"), "made image", "made images"),
        ] {
            if n > 0 {
                held.push(format!("{n} {}", if n == 1 { one } else { many }));
            }
        }
        let seeded = Cluster::seeded();
        let appliances = self.texts("appliances", &["name"]);
        let wanted: BTreeSet<Vec<String>> =
            seeded.appliances.iter().map(|a| vec![a.clone()]).collect();
        if appliances != wanted {
            held.push("appliances of its own".into());
        }
        let attributes = self.texts("attributes", &["scope", "target", "name", "value"]);
        let wanted: BTreeSet<Vec<String>> = seeded
            .attrs
            .iter()
            .flat_map(|(scope, attrs)| {
                attrs.iter().map(move |(name, value)| {
                    vec![
                        scope.kind().into(),
                        scope.target(),
                        name.clone(),
                        value.clone(),
                    ]
                })
            })
            .collect();
        if attributes != wanted {
            let n = attributes.len();
            held.push(format!(
                "{n} {}",
                if n == 1 { "attribute" } else { "attributes" }
            ));
        }
        (!held.is_empty()).then(|| held.join(", "))
    }

    /// The given columns of every row of `table`, as text.
    fn texts(&self, table: &str, columns: &[&str]) -> BTreeSet<Vec<String>> {
        let Some(t) = self.table(table) else {
            return BTreeSet::new();
        };
        let at: Vec<Option<usize>> = columns.iter().map(|c| t.column(c)).collect();
        t.rows
            .iter()
            .map(|row| {
                at.iter()
                    .map(|i| match i.map(|i| &row[i]) {
                        Some(Cell::Text(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    })
                    .collect()
            })
            .collect()
    }

    /// The first difference between `self` and `other`, said for a message;
    /// `None` when they hold the same rows.
    pub fn difference(&self, other: &Rows) -> Option<String> {
        for name in TABLES {
            let (Some(a), Some(b)) = (self.table(name), other.table(name)) else {
                if self.table(name).is_some() != other.table(name).is_some() {
                    return Some(format!("table {name} is missing from one of them"));
                }
                continue;
            };
            if a.columns != b.columns {
                return Some(format!(
                    "table {name} has columns {} against {}",
                    a.columns.join(","),
                    b.columns.join(",")
                ));
            }
            if a.rows.len() != b.rows.len() {
                return Some(format!(
                    "table {name} has {} rows against {}",
                    a.rows.len(),
                    b.rows.len()
                ));
            }
            for (i, (ra, rb)) in a.rows.iter().zip(&b.rows).enumerate() {
                if let Some(c) = (0..ra.len()).find(|c| ra[*c] != rb[*c]) {
                    return Some(format!(
                        "table {name}, row {}: {} is {} against {}",
                        i + 1,
                        a.columns[c],
                        ra[c],
                        rb[c]
                    ));
                }
            }
        }
        None
    }

    /// Checks that `target` (a table of the database being filled, read in
    /// the same transaction) has the columns the copy brings.
    pub(crate) fn check_columns(&self, target: &Rows, location: &str) -> Result<(), StoreError> {
        for name in TABLES {
            let ours = self.table(name).map(|t| &t.columns);
            let theirs = target.table(name).map(|t| &t.columns);
            if ours != theirs {
                return Err(StoreError::CopyRefused {
                    location: location.to_string(),
                    why: format!(
                        "its table {name} has other columns than the source's ({} against {})",
                        theirs.map_or_else(|| "none".into(), |c| c.join(",")),
                        ours.map_or_else(|| "none".into(), |c| c.join(","))
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded_rows() -> Rows {
        let mut r = Rows::default();
        for name in TABLES {
            r.push(name, vec!["id".into()], Vec::new());
        }
        r.tables[0] = Table {
            name: "appliances".into(),
            columns: vec!["id".into(), "name".into()],
            rows: ["compute", "frontend", "hosted-vm", "vm-container"]
                .iter()
                .enumerate()
                .map(|(i, n)| vec![Cell::Int(i as i64 + 1), Cell::Text(n.to_string())])
                .collect(),
        };
        r.tables[2] = Table {
            name: "attributes".into(),
            columns: ["id", "name", "scope", "target", "value"]
                .map(String::from)
                .to_vec(),
            rows: vec![["kvm", "appliance", "vm-container", "true"]
                .iter()
                .map(|s| Cell::Text(s.to_string()))
                .fold(vec![Cell::Int(1)], |mut v, c| {
                    v.push(c);
                    v
                })],
        };
        r
    }

    #[test]
    fn a_seeded_database_is_empty_and_anything_more_is_said() {
        let mut r = seeded_rows();
        assert_eq!(r.occupied(), None);
        r.tables[2].rows[0][4] = Cell::Text("false".into());
        assert_eq!(r.occupied().as_deref(), Some("1 attribute"));
        let mut r = seeded_rows();
        r.tables[1].rows = vec![vec![Cell::Int(1)], vec![Cell::Int(2)]];
        r.tables[3].rows = vec![vec![Cell::Int(9)]];
        r.tables[6].rows = vec![vec![Cell::Int(1)]; 3];
        assert_eq!(r.occupied().as_deref(), Some("1 host, 1 VM, 3 events"));
    }

    #[test]
    fn columns_are_ordered_by_name_and_rows_sorted() {
        let mut r = Rows::default();
        r.push(
            "hosts",
            vec!["name".into(), "id".into()],
            vec![
                vec![Cell::Text("b".into()), Cell::Int(2)],
                vec![Cell::Text("a".into()), Cell::Int(1)],
            ],
        );
        let t = r.table("hosts").unwrap();
        assert_eq!(t.columns, ["id", "name"]);
        assert_eq!(t.rows[0], [Cell::Int(1), Cell::Text("a".into())]);
    }

    #[test]
    fn the_first_difference_is_named() {
        let a = seeded_rows();
        let mut b = a.clone();
        assert_eq!(a.difference(&b), None);
        b.tables[0].rows[2][1] = Cell::Text("other".into());
        assert_eq!(
            a.difference(&b).as_deref(),
            Some("table appliances, row 3: name is \"hosted-vm\" against \"other\"")
        );
        b.tables[0].rows.pop();
        assert_eq!(
            a.difference(&b).as_deref(),
            Some("table appliances has 4 rows against 3")
        );
    }
}

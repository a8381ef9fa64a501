//! The output of `rocks list host vm showdisks=1`, read for each VM's cdrom.

use super::Unreadable;

/// One VM's row of `rocks list host vm showdisks=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmListRow {
    pub line: usize,
    /// `None` where Rocks left the VM-HOST column out: `endOutput` drops
    /// the owner column when every row has the same owner (one VM listed).
    pub vm: Option<String>,
    pub cdrom: Option<String>,
}

/// Reads the output of `rocks list host vm showdisks=1` (the kvm roll's
/// `list/host/vm`; columns VM-HOST SLICE MEM CPUS MAC HOST VIRT-TYPE
/// [STATUS] DISK DISKSIZE CDROM) for each VM's cdrom.
///
/// Rocks' `endOutput` (core `rocks/commands/__init__.py`) pads every cell
/// to its column's width and joins them with one space, the header too, so
/// each column starts where its header word starts (byte offsets, as
/// Python 2 counted them); an empty cell is a run of dashes. A VM with more
/// disks or MACs gets more rows, whose CDROM is empty: the first row of a
/// VM carries its cdrom.
pub fn parse_vm_list(text: &[u8]) -> Result<Vec<VmListRow>, Unreadable> {
    let mut lines = text
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(n, l)| (n + 1, l))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    let Some((header_line, header)) = lines.next() else {
        return Err(Unreadable {
            line: 1,
            why: "the VM list is empty".into(),
        });
    };
    let mut columns: Vec<(usize, &[u8])> = Vec::new();
    let mut at = 0;
    for word in header.split(|&b| b == b' ') {
        if !word.is_empty() {
            columns.push((at, word));
        }
        at += word.len() + 1;
    }
    let find = |name: &[u8]| columns.iter().position(|(_, w)| *w == name);
    let Some(cdrom) = find(b"CDROM") else {
        return Err(Unreadable {
            line: header_line,
            why: "no CDROM column: give the output of `rocks list host vm showdisks=1`".into(),
        });
    };
    let owner = find(b"VM-HOST");
    if owner.is_some_and(|o| o != 0) {
        return Err(Unreadable {
            line: header_line,
            why: "VM-HOST is not the first column".into(),
        });
    }
    let cell = |row: &[u8], k: usize| -> Vec<u8> {
        let start = columns[k].0;
        let end = columns.get(k + 1).map_or(row.len(), |(s, _)| *s);
        let cell = row.get(start..end.min(row.len())).unwrap_or(b"");
        cell.trim_ascii().to_vec()
    };
    let mut rows: Vec<VmListRow> = Vec::new();
    for (line, row) in lines {
        let text_of = |bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| Unreadable {
                line,
                why: "not UTF-8 text".into(),
            })
        };
        let vm = match owner {
            Some(o) => {
                let name = text_of(cell(row, o))?;
                let Some(name) = name.strip_suffix(':') else {
                    return Err(Unreadable {
                        line,
                        why: format!(
                            "{:?} is not a VM-HOST cell (NAME:) under the header's",
                            crate::text::clip(&name, 40)
                        ),
                    });
                };
                Some(name.to_string())
            }
            None => None,
        };
        let path = text_of(cell(row, cdrom))?;
        let path = (!path.is_empty() && !path.bytes().all(|b| b == b'-')).then_some(path);
        if rows.iter().any(|r| r.vm == vm) {
            // A later row of the same VM: its CDROM cell is empty.
            continue;
        }
        rows.push(VmListRow {
            line,
            vm,
            cdrom: path,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_list_columns_are_read_where_the_header_puts_them() {
        let text = "\
VM-HOST          SLICE MEM  CPUS MAC               HOST             VIRT-TYPE DISK                                    DISKSIZE CDROM                      \n\
hosted-vm-0-0-0: 0     2048 2    52:54:00:00:00:01 vm-container-0-0 hvm       qcow2:/state/a.qcow2,vda,virtio         20       /isos/My Rescue.iso        \n\
hosted-vm-0-0-1: 1     1024 1    52:54:00:00:00:02 vm-container-0-0 hvm       file:/state/b.img,vda,virtio            36       -------------------------- \n\
hosted-vm-0-0-1: ----- ---- ---- 52:54:00:00:00:03 ---------------- --------- file:/state/c.img,vdb,virtio            10       -------------------------- \n";
        let rows = parse_vm_list(text.as_bytes()).unwrap();
        assert_eq!(
            rows,
            vec![
                VmListRow {
                    line: 2,
                    vm: Some("hosted-vm-0-0-0".into()),
                    cdrom: Some("/isos/My Rescue.iso".into())
                },
                VmListRow {
                    line: 3,
                    vm: Some("hosted-vm-0-0-1".into()),
                    cdrom: None
                },
            ]
        );
        let one_vm = "SLICE MEM CPUS MAC  HOST VIRT-TYPE DISK DISKSIZE CDROM\n0     512 1    ---- c    hvm       ---- -------- /isos/x.iso\n";
        assert_eq!(
            parse_vm_list(one_vm.as_bytes()).unwrap(),
            vec![VmListRow {
                line: 2,
                vm: None,
                cdrom: Some("/isos/x.iso".into())
            }]
        );
        let e = parse_vm_list(b"VM-HOST SLICE MEM\nv: 0 512\n").unwrap_err();
        assert!(e.why.contains("no CDROM column"), "{e}");
    }
}

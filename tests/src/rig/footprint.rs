//! What identifies a rig sandbox from outside (its folder and its
//! namespaces), kept after the sandbox ends, to check that nothing of it
//! remains: no folder, no process in its namespaces or naming its folder, no
//! mount of it in any mount namespace.

use super::sandbox::{pids, stat};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// A sandbox's folder and its namespaces (`mnt:[4026532000]`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    pub dir: PathBuf,
    pub namespaces: Vec<String>,
}

impl Footprint {
    /// The live processes in the sandbox's namespaces: `(pid, command
    /// name)`, as the machine sees them.
    pub fn processes(&self) -> Vec<(u32, String)> {
        pids()
            .into_iter()
            .filter(|&pid| self.in_namespaces(pid).is_some())
            .map(|pid| (pid, comm(pid)))
            .collect()
    }

    /// The namespace of the sandbox that `pid` is in, if any.
    fn in_namespaces(&self, pid: u32) -> Option<String> {
        ["mnt", "pid", "net", "uts", "ipc"].iter().find_map(|kind| {
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
            let ns = ns.to_string_lossy().into_owned();
            self.namespaces.contains(&ns).then_some(ns)
        })
    }

    /// Everything of the sandbox that still exists, one line each; empty
    /// once it is all gone.
    pub fn remains(&self) -> Vec<String> {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut left = Vec::new();
        if self.dir.exists() {
            left.push(format!("folder {dir}"));
        }
        let mut mount_spaces = BTreeSet::new();
        for pid in pids() {
            if stat(pid).is_none_or(|(state, _, _)| state == 'Z') {
                continue;
            }
            if let Some(ns) = self.in_namespaces(pid) {
                left.push(format!("process {pid} ({}) in {ns}", comm(pid)));
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&dir) {
                left.push(format!("process {pid} ({}) names {dir}", comm(pid)));
            }
            // Each mount namespace once: every process in it shows the same
            // table.
            let Ok(mnt) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
                continue;
            };
            if !mount_spaces.insert(mnt) {
                continue;
            }
            let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"));
            for line in table.unwrap_or_default().lines() {
                if line.contains(&dir) {
                    left.push(format!("mount seen by process {pid}: {line}"));
                }
            }
        }
        left
    }

    /// One line: the folder, then the namespaces (none holds a space).
    pub fn to_line(&self) -> String {
        let mut line = self.dir.to_string_lossy().into_owned();
        for ns in &self.namespaces {
            line.push(' ');
            line.push_str(ns);
        }
        line
    }

    /// Reads [`Footprint::to_line`] back.
    pub fn from_line(line: &str) -> Option<Footprint> {
        let mut words = line.split_whitespace();
        let dir = PathBuf::from(words.next()?);
        Some(Footprint {
            dir,
            namespaces: words.map(str::to_string).collect(),
        })
    }
}

/// A process's command name, or `?` once it is gone.
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_footprint_reads_back_from_its_line() {
        let f = Footprint {
            dir: "/tmp/kvmroll-rig-node-a-1-0".into(),
            namespaces: vec!["mnt:[4026532001]".into(), "pid:[4026532002]".into()],
        };
        assert_eq!(Footprint::from_line(&f.to_line()), Some(f));
    }

    #[test]
    fn remains_names_the_folder_and_a_process_in_the_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let mine = std::fs::read_link("/proc/self/ns/ipc").unwrap();
        let f = Footprint {
            dir: dir.path().to_path_buf(),
            namespaces: vec![mine.to_string_lossy().into_owned()],
        };
        let left = f.remains();
        assert!(left.iter().any(|l| l.starts_with("folder ")), "{left:?}");
        let me = format!("process {} ", std::process::id());
        assert!(left.iter().any(|l| l.starts_with(&me)), "{left:?}");
    }
}

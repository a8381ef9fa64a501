//! What the golden tests share: the comparison with a golden file (which
//! `KVMROLL_UPDATE_GOLDEN=1` rewrites instead), a readable diff, and
//! libvirt's own schema check of a domain (`virt-xml-validate`).

use std::path::Path;

// Each test binary uses part of it.
#[allow(dead_code)]
pub mod cluster;
use std::process::Command;

/// Compares `got` with the golden file `file`: `None` when they are the
/// same, else a readable diff. Under `KVMROLL_UPDATE_GOLDEN` the file is
/// written with `got` instead.
pub fn check(file: &Path, got: &str) -> Option<String> {
    if std::env::var_os("KVMROLL_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, got).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (KVMROLL_UPDATE_GOLDEN=1 writes it)",
            file.display()
        )
    });
    (expected != got).then(|| diff(&expected, got))
}

/// A readable diff: the first differing line with context.
fn diff(expected: &str, got: &str) -> String {
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let at = e
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(e.len().min(g.len()));
    let mut s = format!("first difference at line {}:\n", at + 1);
    for i in at.saturating_sub(2)..(at + 3) {
        s.push_str(&format!(
            "  expected {:>3}: {}\n",
            i + 1,
            e.get(i).unwrap_or(&"<end>")
        ));
        s.push_str(&format!(
            "  got      {:>3}: {}\n",
            i + 1,
            g.get(i).unwrap_or(&"<end>")
        ));
    }
    s
}

/// Whether `virt-xml-validate` and `xmllint` are here. Where they are not,
/// the check is skipped with a message, except under `KVMROLL_E2E` (CI),
/// which must have them.
pub fn have_validator() -> bool {
    let have = Command::new("virt-xml-validate")
        .arg("--help")
        .output()
        .is_ok()
        && Command::new("xmllint").arg("--version").output().is_ok();
    if !have {
        assert!(
            std::env::var_os("KVMROLL_E2E").is_none(),
            "virt-xml-validate (libvirt-clients) and xmllint (libxml2-utils) are required here"
        );
        eprintln!("skipped: virt-xml-validate or xmllint is not installed (scripts/deps.sh installs them)");
    }
    have
}

/// Asserts that libvirt's schema accepts the domain XML in `file`.
pub fn validate(file: &Path) {
    let out = Command::new("virt-xml-validate")
        .arg(file)
        .arg("domain")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Small things every kvmroll binary needs of the system and of its errors:
//! this machine's name, an error printed on one
//! line, and a file written so that no reader ever sees half of it.

use std::io::Write;
use std::path::Path;

/// This machine's host name, as the kernel has it.
pub fn local_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// This machine's short host name: the container name kvmroll assumes when
/// none is given.
pub fn local_short_hostname() -> String {
    let h = local_hostname();
    h.split('.').next().unwrap_or_default().to_string()
}

/// Milliseconds since the Unix epoch (0 for a clock before it): what the
/// events table and the guests' journal record.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An error and its sources on one line, as the binaries print it once.
///
/// The line is bounded (see [`crate::text::one_line`]): a source may carry
/// outside text of any size, libvirt's error above all, which quotes the
/// definition it refuses over hundreds of KB and many lines. Its first line
/// says what is wrong; the note of the cut says how much more there was.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    crate::text::one_line(&s)
}

/// Writes `bytes` to `dest` through a temporary file beside it: written,
/// given `mode`, synced, renamed over `dest`, and the folder synced. A crash
/// leaves the old file or the new one, never a mix; a failure leaves no
/// temporary behind.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot define a domain")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chains_sources_on_one_line() {
        let e = Outer(std::io::Error::other("the database is open read-only"));
        assert_eq!(
            error_chain(&e),
            "cannot define a domain: the database is open read-only"
        );
    }

    #[test]
    fn a_huge_source_is_cut_to_one_line() {
        let libvirt = format!("XML error: bad\n{}\n", "<a>".repeat(250_000));
        let e = Outer(std::io::Error::other(libvirt));
        let line = error_chain(&e);
        assert!(
            line.starts_with("cannot define a domain: XML error: bad …"),
            "{line}"
        );
        assert!(line.ends_with("(cut: 750040 bytes in all)"), "{line}");
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        write_atomic(&f, b"one", 0o600).unwrap();
        write_atomic(&f, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomic(&dir.path().join("no/such/dir/x"), b"", 0o644).is_err());
    }
}

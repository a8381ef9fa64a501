//! Managed-save images: is one usable, and moving a bad one aside.
//!
//! libvirt 9's QEMU driver (src/qemu/qemu_saveimage.c) writes a header that
//! starts with the magic `LibvirtQemudPart` and turns it into
//! `LibvirtQemudSave` only when the save completed; then come, as 32-bit
//! words, the version, the length of the domain XML, whether the VM was
//! running, the compression format and a cookie offset, 14 unused words, then
//! the XML, then QEMU's migration stream (magic `QEVM` when uncompressed).
//! libvirt deletes an image whose header is short or partial and silently
//! cold-boots, and refuses to start from a complete header over data cut
//! short, so kvmroll looks first and moves a bad image aside, keeping it.

use std::io::Read;
use std::path::{Path, PathBuf};

const MAGIC_DONE: &[u8; 16] = b"LibvirtQemudSave";
const MAGIC_PART: &[u8; 16] = b"LibvirtQemudPart";
const HEADER_LEN: u64 = 16 + 4 * 19;

/// What an image looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Usable { size: u64 },
    Unusable { why: String },
}

/// The managed-save image of `vm` under libvirt's save folder.
pub fn path(root: &Path, vm: &str) -> PathBuf {
    root.join("var/lib/libvirt/qemu/save")
        .join(format!("{vm}.save"))
}

/// Inspects an image; `expected_size` is the size recorded when the save
/// completed, if known.
pub fn inspect(path: &Path, expected_size: Option<u64>) -> Verdict {
    let bad = |why: String| Verdict::Unusable { why };
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return bad(format!("cannot open it: {e}")),
    };
    let size = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => return bad(format!("cannot stat it: {e}")),
    };
    let mut header = [0u8; HEADER_LEN as usize];
    if f.read_exact(&mut header).is_err() {
        return bad(format!("it is {size} bytes, shorter than a save header"));
    }
    if &header[..16] == MAGIC_PART {
        return bad("its header says the save never completed".into());
    }
    if &header[..16] != MAGIC_DONE {
        return bad("it does not start with libvirt's save magic".into());
    }
    // libvirt writes native order, and byte-swaps a header whose version
    // reads impossibly large.
    let raw = |i: usize| {
        let at = 16 + 4 * i;
        [header[at], header[at + 1], header[at + 2], header[at + 3]]
    };
    let swapped = u32::from_le_bytes(raw(0)) > 0xffff;
    let word = |i: usize| {
        if swapped {
            u32::from_be_bytes(raw(i))
        } else {
            u32::from_le_bytes(raw(i))
        }
    };
    let (xml_len, compressed) = (u64::from(word(1)), word(3));
    let stream_at = HEADER_LEN + xml_len;
    if stream_at >= size {
        return bad(format!(
            "it is {size} bytes, but its header promises {stream_at} before QEMU's data"
        ));
    }
    if compressed == 0 {
        let mut magic = [0u8; 4];
        use std::io::Seek;
        if f.seek(std::io::SeekFrom::Start(stream_at)).is_err()
            || f.read_exact(&mut magic).is_err()
            || &magic != b"QEVM"
        {
            return bad("QEMU's data does not start where the header says".into());
        }
    }
    if let Some(want) = expected_size {
        if want != size {
            return bad(format!(
                "it is {size} bytes, but the save that wrote it left {want}"
            ));
        }
    }
    Verdict::Usable { size }
}

/// Moves an image into `quarantine` (kept, never deleted): a rename, or a
/// synced copy and removal across file systems. Returns where it went.
pub fn quarantine(image: &Path, quarantine: &Path, vm: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(quarantine)?;
    let dest = quarantine.join(format!("{vm}.{}.save", kvmroll_core::now_ms()));
    match std::fs::rename(image, &dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
            std::fs::copy(image, &dest)?;
            std::fs::File::open(&dest)?.sync_all()?;
            std::fs::remove_file(image)?;
        }
        Err(e) => return Err(e),
    }
    std::fs::File::open(quarantine)?.sync_all()?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(magic: &[u8; 16], xml: &str, tail: &[u8]) -> Vec<u8> {
        let mut v = magic.to_vec();
        for w in [2u32, xml.len() as u32, 1, 0, 0] {
            v.extend(w.to_le_bytes());
        }
        v.extend([0u8; 56]);
        v.extend(xml.as_bytes());
        v.extend(tail);
        v
    }

    #[test]
    fn tells_good_from_bad() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vm.save");
        let good = image(MAGIC_DONE, "<domain/>", b"QEVM\0\0\0\x03rest");
        std::fs::write(&p, &good).unwrap();
        assert_eq!(
            inspect(&p, None),
            Verdict::Usable {
                size: good.len() as u64
            }
        );
        assert_eq!(
            inspect(&p, Some(good.len() as u64)),
            Verdict::Usable {
                size: good.len() as u64
            }
        );
        assert!(
            matches!(inspect(&p, Some(1 << 30)), Verdict::Unusable { why } if why.contains("left"))
        );
        std::fs::write(&p, image(MAGIC_PART, "<domain/>", b"QEVM")).unwrap();
        assert!(
            matches!(inspect(&p, None), Verdict::Unusable { why } if why.contains("never completed"))
        );
        std::fs::write(&p, &good[..40]).unwrap();
        assert!(matches!(inspect(&p, None), Verdict::Unusable { why } if why.contains("shorter")));
        std::fs::write(&p, &good[..good.len() - 12]).unwrap();
        assert!(matches!(inspect(&p, None), Verdict::Unusable { .. }));
        std::fs::write(&p, image(MAGIC_DONE, "<domain/>", b"JUNKJUNK")).unwrap();
        assert!(
            matches!(inspect(&p, None), Verdict::Unusable { why } if why.contains("QEMU's data"))
        );
    }

    #[test]
    fn quarantine_keeps_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vm.save");
        std::fs::write(&p, b"data").unwrap();
        let q = quarantine(&p, &dir.path().join("quarantine"), "vm").unwrap();
        assert!(!p.exists());
        assert_eq!(std::fs::read(q).unwrap(), b"data");
    }
}

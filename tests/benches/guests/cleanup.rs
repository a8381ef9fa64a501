//! Cleaning up, whatever happens: what the run made is recorded as it is
//! made, and undone at the end, on a panic and on SIGINT, SIGTERM or SIGHUP.

use super::*;

/// What to undo when the run ends, panics or is interrupted.
#[derive(Debug)]
pub(crate) struct Leftovers {
    pub(crate) domains: Vec<String>,
    pub(crate) paths: Vec<PathBuf>,
    /// The original /etc/default/libvirt-guests (`Some(None)`: there was
    /// none) while ours is in place.
    pub(crate) defaults: Option<Option<Vec<u8>>>,
    /// Whether libvirt-guests' lock file existed before the run.
    pub(crate) lock_existed: Option<bool>,
    /// libvirt-guests' list file was absent before the run: remove any left.
    pub(crate) listfile: bool,
}

pub(crate) static LEFTOVERS: Mutex<Leftovers> = Mutex::new(Leftovers {
    domains: Vec::new(),
    paths: Vec::new(),
    defaults: None,
    lock_existed: None,
    listfile: false,
});

pub(crate) fn leftovers<T>(f: impl FnOnce(&mut Leftovers) -> T) -> T {
    f(&mut LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner()))
}

pub(crate) fn image(name: &str) -> PathBuf {
    Path::new(SAVE_DIR).join(format!("{name}.save"))
}

/// `virsh` for the clean-up: never panics.
pub(crate) fn quiet_virsh(args: &[&str]) {
    let _ = Command::new("virsh")
        .args(["-c", "qemu:///system", "-q"])
        .args(args)
        .output();
}

/// Undoes everything recorded in [`LEFTOVERS`]; safe to call twice and from
/// two threads (the second waits for the first, then finds nothing left).
/// Never panics.
pub(crate) fn cleanup() {
    let mut l = LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner());
    for name in std::mem::take(&mut l.domains) {
        quiet_virsh(&["destroy", &name]);
        quiet_virsh(&["undefine", &name, "--managed-save"]);
        let _ = std::fs::remove_file(image(&name));
    }
    if let Some(original) = l.defaults.take() {
        let result = match original {
            Some(bytes) => std::fs::write(LG_DEFAULTS, bytes),
            None => std::fs::remove_file(LG_DEFAULTS),
        };
        if let Err(e) = result {
            eprintln!("guests bench: cannot put back {LG_DEFAULTS}: {e}");
        }
    }
    if std::mem::take(&mut l.listfile) {
        let _ = std::fs::remove_file(LG_LISTFILE);
    }
    match l.lock_existed.take() {
        Some(false) => {
            let _ = std::fs::remove_file(LG_LOCK);
        }
        Some(true) => {
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(LG_LOCK);
        }
        None => {}
    }
    for p in std::mem::take(&mut l.paths) {
        let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
    }
}

/// The signal that asked the run to end, 0 while none has.
pub(crate) static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// Between two steps: ends the run, cleaned up, if a signal asked for it.
/// (Cleaning up from the signal's own thread while the run goes on would
/// race with it: a guest defined a moment after the clean-up would stay.)
pub(crate) fn checkpoint() {
    let sig = INTERRUPTED.load(Ordering::SeqCst);
    if sig != 0 {
        eprintln!("guests bench: interrupted: cleaning up");
        cleanup();
        std::process::exit(128 + sig);
    }
}

/// Cleans up on a panic (the release profile aborts, so no destructor would
/// run) and on SIGINT, SIGTERM, SIGHUP: the first such signal ends the run
/// at the next step (a service already running is let finish), a second one
/// at once. Call before any thread is made: the signals are blocked in every
/// thread but the one that waits for them (children get an empty mask from
/// std).
pub(crate) fn guard() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        cleanup();
    }));
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().expect("block signals");
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            if INTERRUPTED.swap(sig as i32, Ordering::SeqCst) == 0 {
                eprintln!(
                    "guests bench: {sig}: stopping after the current step (again to stop at once)"
                );
                continue;
            }
            eprintln!("guests bench: {sig}: cleaning up now");
            cleanup();
            std::process::exit(128 + sig as i32);
        }
    });
}

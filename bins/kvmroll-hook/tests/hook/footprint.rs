//! What the hook's common path does not touch: at `start begin` it opens
//! no database file and connects to no database server.

use crate::fixture::*;
use crate::outage::tell_tale;
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
use std::os::fd::AsRawFd;

/// The processes that opened a file in `dir` whose name starts with
/// `prefix`, as fanotify saw them: (pid, path).
pub fn openers(fan: &Fanotify, prefix: &str) -> Vec<(i32, String)> {
    let mut seen = Vec::new();
    loop {
        let events = match fan.read_events() {
            Ok(e) if !e.is_empty() => e,
            _ => return seen,
        };
        for e in events {
            let Some(fd) = e.fd() else { continue };
            let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if path.starts_with(prefix) {
                seen.push((e.pid(), path));
            }
        }
    }
}

/// Shown, not only read in the code: at `start begin` the hook opens no
/// file of the database (nor its -wal and -shm), though the database is
/// there. fanotify names each process that opens, reads or writes a file
/// in the database's folder. The control: at `prepare begin` with an
/// allocate plugin, the hook does open it, and is seen doing so.
#[test]
fn start_begin_opens_no_database_file() {
    let fx = Fx::new();
    fx.plugin("plugins/preboot.d", "10-ok", "true");
    fx.plugin("plugins/allocate.d", "10-ok", "true");
    let xml = fx.xml();
    let Ok(fan) = Fanotify::init(
        InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_NONBLOCK,
        EventFFlags::O_RDONLY,
    ) else {
        assert!(
            std::env::var_os("KVMROLL_E2E").is_none(),
            "fanotify is not available"
        );
        eprintln!("skipped: fanotify is not available here (root, CAP_SYS_ADMIN)");
        return;
    };
    fan.mark(
        MarkFlags::FAN_MARK_ADD,
        MaskFlags::FAN_OPEN
            | MaskFlags::FAN_ACCESS
            | MaskFlags::FAN_MODIFY
            | MaskFlags::FAN_EVENT_ON_CHILD,
        None,
        Some(fx.dir.path()),
    )
    .unwrap();
    let db = fx.db().display().to_string();
    openers(&fan, &db);
    let child = fx.spawn_hook(VM, "start", "begin", &xml);
    let pid = child.id() as i32;
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The upkeep it started opens the database, to forward its events:
    // another process.
    let seen = openers(&fan, &db);
    let by_hook: Vec<_> = seen.iter().filter(|(p, _)| *p == pid).collect();
    assert!(by_hook.is_empty(), "start begin opened {by_hook:?}");
    let child = fx.spawn_hook(VM, "prepare", "begin", &xml);
    let pid = child.id() as i32;
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = openers(&fan, &db);
    assert!(
        seen.iter().any(|(p, path)| *p == pid && *path == db),
        "the control: prepare begin with a plugin should open {db}: {seen:?}"
    );
}

/// Shown for a cluster database too: with `db` a PostgreSQL URL, `start
/// begin` connects to no server. The "server" is a socket of this test's,
/// which names the process of every connection made to it (SO_PEERCRED)
/// and never answers. The control: `prepare begin` with an allocate plugin
/// connects, gives up at the VM's `kvm_db_connect_timeout`, and tells the
/// plugin why.
#[test]
fn start_begin_connects_to_no_database_server() {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    use std::os::unix::net::UnixListener;
    let fx = Fx::new();
    fx.set_attr("kvm_db_connect_timeout", "1");
    let told = tell_tale(&fx, &format!("vms/{VM}/allocate.d"), "told");
    fx.plugin("plugins/preboot.d", "10-ok", "true");
    let xml = fx.xml();
    let server = fx.dir.path().join("pg");
    std::fs::create_dir(&server).unwrap();
    let listener = UnixListener::bind(server.join(".s.PGSQL.5432")).unwrap();
    std::fs::write(
        fx.conf(),
        format!(
            "db = postgresql://kvmroll_container:pw@/kvmroll?host={}&port=5432\nroot = {}\nhost = {HOST}\nkvmroll = /bin/false\nspool = {}\n",
            server.display(),
            fx.root().display(),
            fx.spool().display()
        ),
    )
    .unwrap();
    let callers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = callers.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let pid = getsockopt(&stream, PeerCredentials).map_or(0, |c| c.pid());
            seen.lock().unwrap().push(pid);
            // Kept open, never answered: a server that hangs.
            held.push(stream);
        }
    });
    let from = |pid: i32| {
        callers
            .lock()
            .unwrap()
            .iter()
            .filter(|p| **p == pid)
            .count()
    };
    let child = fx.spawn_hook(VM, "start", "begin", &xml);
    let pid = child.id() as i32;
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(from(pid), 0, "start begin connected to the server");
    let child = fx.spawn_hook(VM, "prepare", "begin", &xml);
    let pid = child.id() as i32;
    let t = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(from(pid), 1, "the control: prepare begin should connect");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        t.elapsed()
    );
    let said = std::fs::read_to_string(&told).unwrap();
    assert!(said.starts_with("unreachable=1 reason="), "{said}");
}

//! `kvmroll-hook`: libvirt's qemu hook for kvmroll.
//!
//! Called by libvirtd as `/etc/libvirt/hooks/qemu VM OP SUBOP EXTRA` (or as a
//! `qemu.d/` drop-in) with the domain XML on stdin. Also:
//!
//!     kvmroll-hook install [--dropin] [--root DIR] [--force]
//!     kvmroll-hook refresh-after PID VM     (internal: the detached refresh)
//!
//! Exit status: 0 when libvirt may go on (and for every event of a VM the
//! database does not know); 1 when a stage refuses, with one line on stderr
//! that libvirt shows; 2 for a malformed call.
//!
//! This package must never depend on libvirt: libvirtd waits for its hooks,
//! and a hook calling back into it deadlocks.
//!
//! libvirtd runs the hook at every lifecycle event of every VM and waits for
//! it, so its start-up is kept short: the binary is built statically (no
//! dynamic loader; see scripts/build.sh), and it has its own C `main` in
//! place of std's, which would first read /proc/self/maps to place a stack
//! guard, install stack-overflow handlers and check fds 0 to 2.

// The test harness brings its own main, which calls none of the hook's
// entry points.
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

use kvmroll_core::conf as config;
use kvmroll_core::error_chain;
use kvmroll_hook::cli;
mod dispatch;
mod install;
mod refresh;
mod upkeep;

use std::io::{Read, Write};

/// Marks the binary as kvmroll's hook, so `install` knows what it replaces.
pub const MARKER: &str = "kvmroll-hook: the libvirt qemu hook of kvmroll";

/// The one line a malformed call gets.
const USAGE: &str = "expected VM OP SUBOP EXTRA (as libvirt calls /etc/libvirt/hooks/qemu) \
                     or install [--dropin] [--root DIR] [--force]";

/// The hook's log: the journal (or syslog) only, never stderr, which
/// libvirtd shows only when the hook fails (the refusal's own line).
fn init_log() {
    kvmroll_cli::log::init(kvmroll_cli::log::Options {
        stderr: false,
        ..kvmroll_cli::log::Options::new("kvmroll-hook")
    });
}

fn hook(args: &[String]) -> u8 {
    init_log();
    kvmroll_cli::log::set_vm(&args[0]);
    let mut xml = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut xml) {
        log::warn!("cannot read the domain XML on stdin: {e}");
    }
    let call = dispatch::Call {
        vm: args[0].clone(),
        op: args[1].clone(),
        subop: args[2].clone(),
        extra: args[3].clone(),
        xml,
    };
    let conf = match config::Config::load() {
        Ok(c) => c,
        Err(e) => {
            let why = format!("kvmroll-hook: {}", error_chain(&e));
            log::error!("{why}");
            // Without its configuration the hook cannot know the VM: a start
            // is refused, the stop side goes on.
            if dispatch::Stage::of(&call.op, &call.subop).aborts() {
                eprintln!("{why}");
                return 1;
            }
            return 0;
        }
    };
    let answer = dispatch::handle(&call, &conf);
    if let Some(xml) = &answer.stdout {
        let mut out = std::io::stdout().lock();
        if out
            .write_all(xml.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            eprintln!(
                "kvmroll-hook: VM {}: cannot hand the filtered XML to libvirt",
                call.vm
            );
            return 1;
        }
    }
    // The refresh waits for this hook to exit before it lets `kvmroll vm
    // sync` call libvirt; the upkeep forwards the spooled events to the
    // database, which may be a frontend that is slow, or down.
    if answer.refresh {
        let pid = std::process::id().to_string();
        spawn_detached(
            &["refresh-after", &pid, &call.vm],
            &format!("the definition refresh of VM {}", call.vm),
        );
    }
    if answer.upkeep {
        spawn_detached(&["upkeep"], "the event spool's upkeep");
    }
    match answer.refusal {
        Some(reason) => {
            // libvirt shows the hook's stderr whole: one line, a few KB.
            let reason = error_chain(&reason);
            // An operation on the VM refused: an error, logged here only.
            log::error!("{reason}");
            eprintln!("{reason}");
            1
        }
        None => 0,
    }
}

/// Starts `kvmroll-hook ARGS` detached, for work libvirt must not wait for:
/// no stdio (so it holds none of libvirt's pipes) and a process group of its
/// own. posix_spawn starts it: a hook pays for a fork.
fn spawn_detached(args: &[&str], what: &str) {
    use std::os::unix::process::CommandExt;
    let spawned = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
    });
    if let Err(e) = spawned {
        log::warn!("cannot start {what}: {e}");
    }
}

/// The detached upkeep of the event spool (see [`upkeep`]).
fn upkeep() -> u8 {
    init_log();
    let conf = match config::Config::load() {
        Ok(c) => c,
        Err(e) => {
            log::error!("no upkeep: {}", error_chain(&e));
            return 1;
        }
    };
    match upkeep::upkeep(&conf) {
        Ok(upkeep::Ended::Done) => 0,
        // Files are left for the next upkeep; the log said why they wait.
        Ok(upkeep::Ended::GaveUp) => 1,
        Err(e) => {
            log::error!("{}", error_chain(&e));
            1
        }
    }
}

/// The detached definition refresh (see [`refresh`]).
fn refresh_after(pid: &str, vm: &str) -> u8 {
    init_log();
    kvmroll_cli::log::set_vm(vm);
    let Ok(pid) = pid.parse::<i32>() else {
        eprintln!("kvmroll-hook: refresh-after: {pid:?} is not a pid");
        return 2;
    };
    refresh::wait_for(nix::unistd::Pid::from_raw(pid));
    let conf = match config::Config::load() {
        Ok(c) => c,
        Err(e) => {
            log::error!("VM {vm}: no definition refresh: {}", error_chain(&e));
            return 1;
        }
    };
    match refresh::refresh(&conf, vm) {
        Ok(said) => {
            log::info!("VM {vm}: definition refreshed: {said}");
            0
        }
        Err(e) => {
            log::warn!("{}", error_chain(&e));
            1
        }
    }
}

/// Opens /dev/null on whichever of fds 0, 1 and 2 is closed, as std's own
/// start-up does: otherwise the next file or pipe opened (the configuration,
/// a plugin's pipe) would be "stdout", and the XML of a restore could land in
/// it. (SQLite keeps its own files off fds 0 to 2 by itself.)
fn guard_standard_fds() {
    use nix::libc;
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll reads and writes only the three structs given, with no
    // wait; a closed descriptor is reported as POLLNVAL, not touched.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
        return;
    }
    for f in fds.iter().filter(|f| f.revents & libc::POLLNVAL != 0) {
        // The lowest free descriptor is the closed one, in order.
        let flags = if f.fd == 0 {
            libc::O_RDONLY
        } else {
            libc::O_WRONLY
        };
        // SAFETY: a NUL-terminated path; the descriptor is kept open for
        // the life of the process on purpose.
        unsafe { libc::open(c"/dev/null".as_ptr(), flags) };
    }
}

/// The process entry, in place of std's `lang_start` (see the crate notes).
/// It does the parts of std's set-up the hook relies on: fds 0 to 2 open,
/// and SIGPIPE ignored, so that a plugin or libvirt closing its end of a
/// pipe is a write error, not the hook's death (children get it back at
/// its default: std's spawn resets it). std still collects the arguments
/// itself (glibc hands them to its initialiser).
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    use nix::sys::signal::{signal, SigHandler, Signal};
    guard_standard_fds();
    // SAFETY: SIG_IGN is no handler code; nothing else has started yet.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    // std::process::exit flushes stdout, as returning from std's main would.
    std::process::exit(i32::from(run()))
}

fn run() -> u8 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("refresh-after") if args.len() == 3 => refresh_after(&args[1], &args[2]),
        Some("upkeep") if args.len() == 1 => upkeep(),
        // libvirt always passes four arguments, and an operation never starts
        // with '-' (four-argument `install` calls do: `install --root DIR
        // --force`); a VM may be called "install".
        _ if args.len() == 4 && !args[1].starts_with('-') => hook(&args),
        Some("install" | "help" | "--help" | "-h" | "--version" | "-V") => {
            match kvmroll_cli::parse::<cli::Cli>("kvmroll-hook").command {
                cli::Command::Install {
                    dropin,
                    root,
                    force,
                } => install::main(dropin, &root, force),
            }
        }
        _ => {
            eprintln!(
                "kvmroll-hook: malformed call ({} arguments): {USAGE}",
                args.len()
            );
            2
        }
    }
}

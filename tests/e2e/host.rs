//! End to end on this machine, as root: a host installation laid out under a
//! DESTDIR, the generated and static udev rules read by the real udevadm,
//! the dracut module built into a real initramfs, and kvmroll-enable asking
//! a real libvirtd whether VMs still run.

use kvmroll_tests::{bin, bin_dir, libvirtd_available, ok, prefix, virsh_ok, Domains, Kvmroll};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// udev and dracut tests touch the real /etc: one at a time.
static SYSTEM: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips (with a message) only where the machine cannot run the tool; where
/// the suite must run end to end, a missing tool is a failure.
fn have(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found || !is_root() {
        assert!(
            std::env::var_os("KVMROLL_E2E").is_none(),
            "{test}: {tool} and root are required here (scripts/deps.sh)"
        );
        eprintln!("{test}: skipped: needs {tool} and root");
    }
    found && is_root()
}

fn install(dest: &Path) {
    install_with(dest, &[]);
}

/// scripts/install.sh of this build into `dest`, with more options.
fn install_with(dest: &Path, options: &[&str]) {
    let out = Command::new(repo().join("scripts/install.sh"))
        .args(["--bin-dir", bin_dir().to_str().unwrap()])
        .args(options)
        .arg(dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_installation_holds_every_file_with_its_mode() {
    if !have("install", "the_installation_holds_every_file_with_its_mode") {
        return;
    }
    let dest = tempfile::tempdir().unwrap();
    install(dest.path());
    let expect: &[(&str, u32)] = &[
        ("usr/bin/kvmroll", 0o755),
        ("usr/bin/kvmroll-gen", 0o755),
        ("usr/bin/kvmroll-guests", 0o755),
        ("usr/bin/kvmroll-enable", 0o755),
        ("usr/bin/kvmroll-hook", 0o755),
        ("usr/lib/systemd/system/kvmroll-guests.service", 0o644),
        ("usr/lib/systemd/system/kvmroll-events-prune.service", 0o644),
        ("usr/lib/systemd/system/kvmroll-events-prune.timer", 0o644),
        ("usr/lib/udev/rules.d/91-kvmroll-vfio-bind.rules", 0o644),
        ("usr/lib/modprobe.d/kvmroll-vfio.conf", 0o644),
        ("usr/lib/dracut/modules.d/90kvmroll/module-setup.sh", 0o755),
        ("usr/share/man/man1/kvmroll.1.gz", 0o644),
        ("usr/share/man/man1/kvmroll-vm.1.gz", 0o644),
        ("usr/share/man/man1/kvmroll-gen.1.gz", 0o644),
        ("usr/share/man/man5/kvmroll.conf.5.gz", 0o644),
        ("usr/share/man/man7/kvmroll-attributes.7.gz", 0o644),
        ("usr/share/man/man8/kvmroll-enable.8.gz", 0o644),
        ("usr/share/man/man8/kvmroll-guests.8.gz", 0o644),
        ("usr/share/man/man8/kvmroll-hook.8.gz", 0o644),
        ("usr/share/bash-completion/completions/kvmroll", 0o644),
        ("usr/share/zsh/vendor-completions/_kvmroll-guests", 0o644),
        ("usr/share/fish/vendor_completions.d/kvmroll.fish", 0o644),
        ("etc/kvmroll/kvmroll.conf", 0o644),
        ("var/lib/kvmroll", 0o755),
        ("etc/kvmroll/plugins", 0o755),
    ];
    for (path, mode) in expect {
        let meta =
            std::fs::metadata(dest.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.mode() & 0o7777, *mode, "{path}");
        assert_eq!(meta.uid(), 0, "{path} is not owned by root");
    }
    // Nothing under /lib, which is a link to usr/lib on a merged-/usr host.
    assert!(!dest.path().join("lib").exists());
    // The hook is the hook binary, and libvirt's drop-in links to it.
    assert_eq!(
        std::fs::read(dest.path().join("usr/bin/kvmroll-hook")).unwrap(),
        std::fs::read(bin_dir().join("kvmroll-hook")).unwrap()
    );
    assert_eq!(
        std::fs::read_link(dest.path().join("etc/libvirt/hooks/qemu.d/kvmroll")).unwrap(),
        Path::new("/usr/bin/kvmroll-hook")
    );
    assert!(!dest.path().join("etc/libvirt/hooks/qemu").exists());
    assert!(std::fs::read_dir(dest.path().join("var/lib/kvmroll"))
        .unwrap()
        .next()
        .is_none());
    // The man pages carry the exit codes.
    let man = gunzip(&dest.path().join("usr/share/man/man8/kvmroll-guests.8.gz"));
    assert!(
        man.contains("EXIT STATUS") && man.contains("journal.json"),
        "{man}"
    );
    assert_dynamic_completion(dest.path());
}

/// kvmroll's installed bash completion is clap's dynamic one: the script
/// asks the installed kvmroll, which answers from its own definition (and
/// names from the database).
fn assert_dynamic_completion(root: &Path) {
    let completion =
        std::fs::read_to_string(root.join("usr/share/bash-completion/completions/kvmroll"))
            .unwrap();
    assert!(
        completion.contains("COMPLETE=\"bash\"") && completion.contains("\"kvmroll\" --"),
        "{completion}"
    );
    let complete = |words: &[&str]| {
        let out = Command::new(root.join("usr/bin/kvmroll"))
            .arg("--")
            .args(words)
            .env("COMPLETE", "bash")
            .env("_CLAP_IFS", "\n")
            .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
            .env("_CLAP_COMPLETE_COMP_TYPE", "9")
            .env("_CLAP_COMPLETE_SPACE", "true")
            .env("KVMROLL_DB", root.join("no.db"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(complete(&["kvmroll", "vm", "cd"]).trim(), "cdrom");
    assert_eq!(
        complete(&["kvmroll", "attr", "set", "--val"]).trim(),
        "--value-file"
    );
}

/// A gzipped file's text.
fn gunzip(path: &Path) -> String {
    let out = Command::new("gzip").arg("-dc").arg(path).output().unwrap();
    assert!(out.status.success(), "gzip -dc {}", path.display());
    String::from_utf8(out.stdout).unwrap()
}

/// The kickstart's fallback unpacked a tarball holding "./" and "./lib/..."
/// into /: GNU tar replaced a merged-/usr host's /lib link with a folder and
/// gave / the archive's mode. The tarball now holds neither, and the
/// kickstart's tar keeps directory links and the modes of folders that exist.
// size: one scenario against real daemons, each step on the state the last one left; kept whole
#[test]
fn the_tarball_unpacks_without_replacing_lib_or_changing_modes() {
    if !have(
        "tar",
        "the_tarball_unpacks_without_replacing_lib_or_changing_modes",
    ) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("kvmroll.tar.gz");
    install_with(
        &dir.path().join("tree"),
        &["--tarball", tarball.to_str().unwrap()],
    );
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&tarball)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for entry in listing.lines() {
        assert!(
            !entry.starts_with("./")
                && !entry.starts_with("lib/")
                && entry != "usr/"
                && entry != "etc/"
                && entry != "usr/lib/",
            "the tarball holds {entry:?}"
        );
    }
    assert!(
        listing.lines().any(|l| l == "usr/bin/kvmroll-hook"),
        "{listing}"
    );
    assert!(!listing.contains("etc/kvmroll/kvmroll.conf"), "{listing}");
    // A merged-/usr root whose folders have modes of their own.
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    for (d, mode) in [("", 0o700), ("usr", 0o750), ("etc", 0o751)] {
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // The kickstart's own extraction command, fed the tarball.
    let db = dir.path().join("k.db");
    let kvmroll = Kvmroll::new(&db);
    kvmroll.ok(&[
        "--no-sync",
        "host",
        "add",
        "c-0-0",
        "--appliance",
        "vm-container",
    ]);
    kvmroll.ok(&["--no-sync", "attr", "set", "c-0-0", "kvm", "true"]);
    let url = format!("file://{}", tarball.display());
    let kickstart = ok(
        bin("kvmroll-gen")
            .arg("--db")
            .arg(&db)
            .args(["kickstart", "c-0-0", "--dist-url", &url])
            .output()
            .unwrap(),
        "kvmroll-gen kickstart",
    );
    let line = kickstart
        .lines()
        .find(|l| l.contains("| tar "))
        .unwrap_or_else(|| panic!("no tar line in {kickstart}"))
        .replace("&apos;", "'")
        .replace("-C /", &format!("-C {}", root.display()));
    let out = Command::new("sh").args(["-ec", &line]).output().unwrap();
    assert!(out.status.success(), "{line}: {}", printed(&out));
    let lib = std::fs::symlink_metadata(root.join("lib")).unwrap();
    assert!(lib.file_type().is_symlink(), "/lib is no longer a link");
    for (d, mode) in [("", 0o700), ("usr", 0o750), ("etc", 0o751)] {
        let m = std::fs::metadata(root.join(d)).unwrap().mode() & 0o7777;
        assert_eq!(m, mode, "the mode of /{d} changed");
    }
    assert!(root.join("usr/bin/kvmroll").is_file());
    assert!(root
        .join("usr/lib/systemd/system/kvmroll-guests.service")
        .is_file());
}

/// Writes a cluster with passed-through devices and returns its database.
fn pci_cluster(dir: &Path) -> PathBuf {
    let db = dir.join("k.db");
    let kvmroll = Kvmroll::new(&db);
    let k = |args: &[&str]| {
        let mut all = vec!["--no-sync"];
        all.extend_from_slice(args);
        kvmroll.ok(&all)
    };
    k(&[
        "host",
        "add",
        "c-0-0",
        "--appliance",
        "vm-container",
        "--cpus",
        "4",
    ]);
    k(&["vm", "add", "gpu-vm", "--container", "c-0-0"]);
    k(&[
        "attr",
        "set",
        "gpu-vm",
        "kvm_device_0",
        "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source></hostdev>",
    ]);
    db
}

fn gen(db: &Path, what: &str) -> String {
    ok(
        bin("kvmroll-gen")
            .arg("--db")
            .arg(db)
            .args([what, "c-0-0"])
            .output()
            .unwrap(),
        "kvmroll-gen",
    )
}

/// Files put in place for one test, removed again afterwards.
struct Placed(Vec<PathBuf>);

impl Placed {
    fn put(&mut self, path: &str, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let p = PathBuf::from(path);
        assert!(!p.exists(), "{path} exists already; not overwriting it");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        self.0.push(p);
    }
}

impl Placed {
    /// The generated rules of `db`'s container and the static binding rule,
    /// where udev reads them.
    fn rules(db: &Path) -> Placed {
        let mut placed = Placed(Vec::new());
        placed.put(
            "/etc/udev/rules.d/90-kvmroll-vfio.rules",
            &gen(db, "udev"),
            0o644,
        );
        placed.put(
            "/usr/lib/udev/rules.d/91-kvmroll-vfio-bind.rules",
            &std::fs::read_to_string(repo().join("udev/91-kvmroll-vfio-bind.rules")).unwrap(),
            0o644,
        );
        placed
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = std::fs::remove_file(p);
            if p.ends_with("module-setup.sh") {
                let _ = std::fs::remove_dir(p.parent().unwrap());
            }
        }
    }
}

/// What a command printed, stdout then stderr.
fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn systemd_analyze_accepts_every_unit() {
    if !have("systemd-analyze", "systemd_analyze_accepts_every_unit") {
        return;
    }
    // Copies of every unit of systemd/, their programs pointed at this build
    // (systemd checks that they exist).
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let dir = tempfile::tempdir().unwrap();
    let bins = format!("{}/", bin_dir().display());
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let copy = dir.path().join(path.file_name().unwrap());
        std::fs::write(&copy, text.replace("/usr/bin/", &bins)).unwrap();
        units.push(copy);
    }
    assert!(units.len() >= 3, "{units:?}");
    // The man pages are installed with the package, not here.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let said = printed(&out);
    // Units they refer to that this machine lacks (libvirtd.service without
    // libvirt-daemon-system) are not faults of these units.
    let faults: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("kvmroll-"))
        .filter(|l| {
            !l.contains("libvirtd.service")
                && !l.contains("virtqemud.service")
                && !l.contains("libvirt-guests.service")
        })
        .collect();
    assert!(faults.is_empty(), "{said}");
}

#[test]
fn udevadm_reads_the_rules_without_errors() {
    if !have("udevadm", "udevadm_reads_the_rules_without_errors") {
        return;
    }
    let _lock = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = pci_cluster(dir.path());
    let placed = Placed::rules(&db);
    // A device with no /dev node: udevadm test has side effects on nodes.
    let out = Command::new("udevadm")
        .args(["test", "--action=add", "/sys/class/net/lo"])
        .output()
        .unwrap();
    let said = printed(&out);
    assert!(
        said.contains("90-kvmroll-vfio.rules") || said.contains("Reading rules file"),
        "udevadm did not read the rules: {said}"
    );
    let faults: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("kvmroll"))
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("invalid")
                || l.contains("error")
                || l.contains("unknown")
                || l.contains("ignoring")
        })
        .collect();
    assert!(faults.is_empty(), "{}", faults.join("\n"));
    // A rule with a fault is seen as one, so the check above can fail.
    drop(placed);
    let mut bad = Placed(Vec::new());
    bad.put(
        "/etc/udev/rules.d/90-kvmroll-vfio.rules",
        "KERNEL==\"x\", BOGUS{y}=\"z\"\n",
        0o644,
    );
    let out = Command::new("udevadm")
        .args(["test", "--action=add", "/sys/class/net/lo"])
        .output()
        .unwrap();
    let said = printed(&out);
    assert!(
        said.lines()
            .any(|l| l.contains("90-kvmroll-vfio.rules") && l.to_lowercase().contains("invalid")),
        "a bad rule went unnoticed: {said}"
    );
}

#[test]
fn dracut_builds_an_initramfs_with_the_module() {
    if !have("dracut", "dracut_builds_an_initramfs_with_the_module") {
        return;
    }
    let _lock = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = pci_cluster(dir.path());
    let mut placed = Placed::rules(&db);
    placed.put(
        "/usr/lib/modprobe.d/kvmroll-vfio.conf",
        &std::fs::read_to_string(repo().join("modprobe/kvmroll-vfio.conf")).unwrap(),
        0o644,
    );
    placed.put(
        "/usr/lib/dracut/modules.d/90kvmroll/module-setup.sh",
        &std::fs::read_to_string(repo().join("dracut/90kvmroll/module-setup.sh")).unwrap(),
        0o755,
    );
    let confdir = dir.path().join("dracut.conf.d");
    std::fs::create_dir_all(&confdir).unwrap();
    let conf = dir.path().join("kvmroll.conf");
    std::fs::write(&conf, gen(&db, "dracut")).unwrap();
    let list = Command::new("dracut")
        .args(["--list-modules", "--no-kernel"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .any(|l| l.trim() == "kvmroll"),
        "dracut does not list the module"
    );
    let image = dir.path().join("initrd.img");
    let kernel =
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let out = Command::new("dracut")
        .args(["--no-kernel", "--no-hostonly", "--force", "--conf"])
        .arg(&conf)
        .arg("--confdir")
        .arg(&confdir)
        .args(["-m", "base kvmroll"])
        .arg(&image)
        .arg(kernel.trim())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dracut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = Command::new("lsinitrd").arg(&image).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for want in [
        "90-kvmroll-vfio.rules",
        "91-kvmroll-vfio-bind.rules",
        "usr/lib/modprobe.d/kvmroll-vfio.conf",
    ] {
        assert!(
            listing.contains(want),
            "{want} is not in the initramfs:\n{listing}"
        );
    }
    let rules = Command::new("lsinitrd")
        .arg(&image)
        .args(["-f", "etc/udev/rules.d/90-kvmroll-vfio.rules"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&rules.stdout)
        .contains("KERNEL==\"0000:03:00.0\", ATTR{driver_override}=\"vfio-pci\""));
}

#[test]
fn enable_refuses_a_host_whose_libvirt_runs_a_vm() {
    if !libvirtd_available("enable_refuses_a_host_whose_libvirt_runs_a_vm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let kvmroll = Kvmroll::new(&db);
    let host = kvmroll.local_container();
    let vm = format!("{}-running", prefix("enable"));
    let _guard = Domains(vec![vm.clone()]);
    let k = |args: &[&str]| kvmroll.ok(args);
    let log = dir.path().join("calls");
    k(&[
        "attr",
        "set",
        "--global",
        "kvm_reinstall_command",
        &format!("sh -c 'echo {{host}} >> {}'", log.display()),
    ]);
    k(&["vm", "add", &vm, "--container", &host, "--mem", "64"]);
    k(&["vm", "define", &vm]);
    virsh_ok(&["start", &vm]);
    // Reinstalling a container whose libvirt still runs a VM is refused.
    let out = bin("kvmroll-enable")
        .arg("--db")
        .arg(&db)
        .arg(&host)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still runs") && err.contains(&vm), "{err}");
    assert!(!log.exists(), "the reinstall command ran");
    // Disabling it is refused by the database too, even with --force,
    // until its VM is moved.
    let out = bin("kvmroll-enable")
        .arg("--db")
        .arg(&db)
        .args([host.as_str(), "--disable", "--force"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("still holds 1 VM"));
    assert!(!log.exists(), "the reinstall command ran");
    // --force reinstalls it all the same.
    let out = bin("kvmroll-enable")
        .arg("--db")
        .arg(&db)
        .args([host.as_str(), "--force"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), host);
}

#[test]
fn every_binary_says_a_usage_error_in_one_line() {
    for name in [
        "kvmroll",
        "kvmroll-gen",
        "kvmroll-guests",
        "kvmroll-enable",
        "kvmroll-hook",
    ] {
        for args in [&["--bogus"][..], &["no-such-command", "x"][..], &[][..]] {
            let out = bin(name).args(args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{name} {args:?}: {err}");
            assert!(err.starts_with(&format!("{name}: ")), "{name}: {err}");
            // It says what is wrong, not the first line of a help page.
            assert!(
                [
                    "unexpected",
                    "unrecognized",
                    "required",
                    "missing",
                    "malformed"
                ]
                .iter()
                .any(|w| err.contains(w)),
                "{name} {args:?}: {err}"
            );
            assert!(out.stdout.is_empty(), "{name} {args:?} printed to stdout");
        }
    }
}

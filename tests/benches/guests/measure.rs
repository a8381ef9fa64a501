//! What is measured: the tools, one stop and start of each, a round, and a
//! set of guests of one size.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Kvmroll,
    LibvirtGuests,
    /// `virsh managedsave` / `virsh start` of every guest at once: what
    /// libvirt itself can do, for reference.
    Virsh,
}

pub(crate) const TOOLS: [Tool; 3] = [Tool::Kvmroll, Tool::LibvirtGuests, Tool::Virsh];

impl Tool {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tool::Kvmroll => "kvmroll-guests",
            Tool::LibvirtGuests => "libvirt-guests.sh",
            Tool::Virsh => "virsh, 4 at once (reference)",
        }
    }
}

/// One stop and start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) stop: Duration,
    /// The `sync` right after the stop.
    pub(crate) sync: Duration,
    pub(crate) start: Duration,
    pub(crate) image_bytes: u64,
}

impl Run {
    pub(crate) fn stopped(&self) -> f64 {
        secs(self.stop + self.sync)
    }
}

/// One round: the disk, then each tool.
#[derive(Debug)]
pub(crate) struct Round {
    pub(crate) write_bw: f64,
    pub(crate) read_bw: f64,
    pub(crate) runs: Vec<(Tool, Run)>,
}

/// One set of guests of one size, their database and state folder.
#[derive(Debug)]
pub(crate) struct Set {
    pub(crate) label: String,
    pub(crate) mem_mib: u64,
    pub(crate) names: Vec<String>,
    pub(crate) db: PathBuf,
    pub(crate) state_dir: PathBuf,
    pub(crate) host: String,
    pub(crate) boots: Vec<Duration>,
    pub(crate) warmup: Option<Run>,
}

impl Set {
    /// Registers the guests in a database of their own (kvm_autostart true),
    /// defines and boots them with virsh, their RAM filled from an initrd,
    /// then saves and restores them once, untimed.
    pub(crate) fn up(mem_mib: u64, dir: &Path, kernel: &Path) -> Set {
        let dir = dir.join(format!("{mem_mib}m"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let host = kvmroll_tests::local_host();
        let mut set = Set {
            label: format!("{GUESTS} guests of {mem_mib} MiB, RAM full"),
            mem_mib,
            names: (0..GUESTS)
                .map(|i| format!("{PREFIX}{mem_mib}m-{i}"))
                .collect(),
            db: dir.join("kvmroll.db"),
            state_dir: dir.join("state"),
            host: host.clone(),
            boots: Vec::new(),
            warmup: None,
        };
        let kvmroll = |args: &[&str]| {
            must(
                kvmroll_tests::bin("kvmroll")
                    .arg("--db")
                    .arg(&set.db)
                    .arg("--no-sync")
                    .args(args),
            )
        };
        kvmroll(&[
            "host",
            "add",
            &host,
            "--appliance",
            "vm-container",
            "--cpus",
            "2",
        ]);
        // KVMROLL_BENCH_ATTRS="kvm_guests_parallel=2,..." sets container
        // attributes, to try kvmroll-guests' settings on this machine.
        for pair in std::env::var("KVMROLL_BENCH_ATTRS")
            .unwrap_or_default()
            .split(',')
        {
            if let Some((name, value)) = pair.split_once('=') {
                kvmroll(&["attr", "set", &host, name.trim(), value.trim()]);
            }
        }
        for name in &set.names {
            let mem = mem_mib.to_string();
            kvmroll(&["vm", "add", name, "--container", &host, "--mem", &mem]);
            kvmroll(&["attr", "set", name, "kvm_autostart", "true"]);
        }
        let initrd = dir.join("initrd");
        random_file(
            &initrd,
            (mem_mib - HEADROOM_MIB) * MIB,
            0x6b76_6d72_6f6c_6c00 ^ mem_mib,
        );
        set.boot(&dir, kernel, &initrd);
        if std::env::var_os("KVMROLL_BENCH_KEEP_INITRD").is_none() {
            let small = dir.join("initrd.small");
            random_file(&small, 4096, 7);
            std::fs::rename(&small, &initrd).expect("swap the initrd");
        }
        std::thread::sleep(Duration::from_secs(1));
        for name in &set.names {
            assert_eq!(state(name), "running", "{name} did not stay running");
            assert!(halted(name), "{name} left halt.S's loop");
        }
        set.warmup = Some(set.round(Tool::Virsh, false));
        set
    }

    /// Defines and boots the guests one by one, each until its vCPU sits in
    /// halt.S's loop (its initrd copied into RAM); the time each took.
    fn boot(&mut self, dir: &Path, kernel: &Path, initrd: &Path) {
        for name in &self.names {
            let xml = dir.join(format!("{name}.xml"));
            std::fs::write(&xml, domain_xml(name, self.mem_mib, kernel, initrd))
                .expect("write xml");
            checkpoint();
            leftovers(|l| l.domains.push(name.clone()));
            kvmroll_tests::virsh_ok(&["define", xml.to_str().expect("utf-8 path")]);
            let t = Instant::now();
            kvmroll_tests::virsh_ok(&["start", name]);
            while !halted(name) {
                checkpoint();
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "{name} did not reach halt.S's loop in 120 s (state {})",
                    state(name)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            self.boots.push(t.elapsed());
        }
    }

    pub(crate) fn kvmroll_guests(&self, verb: &str) -> Output {
        let mut cmd = kvmroll_tests::bin("kvmroll-guests");
        cmd.arg("--db")
            .arg(&self.db)
            .arg("--host")
            .arg(&self.host)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg(verb);
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "kvmroll-guests {verb} failed ({:?}):\n{}",
            out.status.code(),
            text(&out)
        );
        out
    }

    pub(crate) fn libvirt_guests(verb: &str) -> Output {
        let out = run(Command::new(LG_SCRIPT).arg(verb).env("LC_ALL", "C"));
        assert!(
            out.status.success(),
            "{LG_SCRIPT} {verb} failed ({:?}):\n{}",
            out.status.code(),
            text(&out)
        );
        out
    }

    /// `virsh ARGS NAME` for every guest at once.
    pub(crate) fn virsh_all(&self, args: &[&str]) -> Output {
        let workers: Vec<_> = self
            .names
            .iter()
            .map(|name| {
                let mut argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                argv.push(name.clone());
                std::thread::spawn(move || {
                    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                    (argv.join(" "), kvmroll_tests::virsh(&argv))
                })
            })
            .collect();
        let mut all = Output {
            status: Default::default(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        for w in workers {
            let (what, out) = w.join().expect("virsh thread");
            assert!(out.status.success(), "virsh {what}: {}", text(&out));
            all.stdout.extend(out.stdout);
            all.stderr.extend(out.stderr);
        }
        all
    }

    pub(crate) fn stop_with(&self, tool: Tool) -> Output {
        match tool {
            Tool::Kvmroll => self.kvmroll_guests("stop"),
            Tool::LibvirtGuests => {
                let out = Set::libvirt_guests("stop");
                assert!(
                    Path::new(LG_LISTFILE).exists(),
                    "libvirt-guests stop left no list of the guests it suspended ({LG_LISTFILE})"
                );
                out
            }
            Tool::Virsh => self.virsh_all(&["managedsave"]),
        }
    }

    pub(crate) fn start_with(&self, tool: Tool) -> Output {
        match tool {
            Tool::Kvmroll => self.kvmroll_guests("start"),
            Tool::LibvirtGuests => {
                let out = Set::libvirt_guests("start");
                assert!(
                    !Path::new(LG_LISTFILE).exists(),
                    "libvirt-guests start left its list {LG_LISTFILE}"
                );
                out
            }
            Tool::Virsh => self.virsh_all(&["start"]),
        }
    }

    /// One stop and start with `tool`, checked: every guest saved, then
    /// every guest restored.
    pub(crate) fn round(&self, tool: Tool, verbose: bool) -> Run {
        checkpoint();
        let who = tool.name();
        let others = other_guests();
        assert!(
            others.is_empty(),
            "other guests started during the run ({}); not running {who} stop, which would act on them",
            others.join(", ")
        );
        let before: Vec<Option<u32>> = self.names.iter().map(|n| qemu_pid(n)).collect();
        let t = Instant::now();
        let out = self.stop_with(tool);
        let stop = t.elapsed();
        if verbose {
            print_log(&out);
        }
        let dirty = meminfo("Dirty");
        let t = Instant::now();
        nix::unistd::sync();
        let sync = t.elapsed();
        if dirty > 64 * MIB {
            println!(
                "    note: {who} stop left {} MiB dirty; sync took {:.2} s",
                dirty / MIB,
                secs(sync)
            );
        }
        let image_bytes = self.check_saved(who);
        self.uncache_images();
        checkpoint();
        let t = Instant::now();
        let out = self.start_with(tool);
        let start = t.elapsed();
        if verbose {
            print_log(&out);
        }
        self.check_restored(who, &before);
        if tool == Tool::Kvmroll {
            // Its log gives each restore's time: if they add up to the whole
            // start while none of them took most of it, the restores ran one
            // after another.
            let times: Vec<f64> = text(&out)
                .lines()
                .filter_map(|l| l.split("restored from its saved image in ").nth(1))
                .filter_map(|t| t.trim().trim_end_matches('s').parse::<f64>().ok())
                .collect();
            let sum: f64 = times.iter().sum();
            let longest = times.iter().copied().fold(0.0, f64::max);
            if GUESTS > 1 && sum >= 0.75 * secs(start) && longest < 0.6 * secs(start) {
                println!(
                    "    note: kvmroll-guests' restores add up to {sum:.1} s of its {:.2} s start: \
                     they ran one after another, not at once",
                    secs(start)
                );
            }
        }
        Run {
            stop,
            sync,
            start,
            image_bytes,
        }
    }

    /// After a stop: every guest is off with a managed-save image the size of
    /// its RAM; the images' total size.
    pub(crate) fn check_saved(&self, who: &str) -> u64 {
        let mut total = 0;
        for name in &self.names {
            let st = state(name);
            assert_eq!(
                st, "shut off",
                "after {who} stop, {name} is {st}, not saved"
            );
            let size = std::fs::metadata(image(name))
                .unwrap_or_else(|e| panic!("after {who} stop, {name} has no saved image: {e}"))
                .len();
            let dominfo = kvmroll_tests::virsh_ok(&["dominfo", name]);
            assert!(
                dominfo
                    .lines()
                    .any(|l| l.starts_with("Managed save:") && l.trim_end().ends_with("yes")),
                "after {who} stop, libvirt does not see {name}'s managed save:\n{dominfo}"
            );
            assert!(
                size >= (self.mem_mib - HEADROOM_MIB) * MIB * 9 / 10,
                "{name}'s image is {} MiB for {} MiB of RAM: its RAM was not full",
                size / MIB,
                self.mem_mib
            );
            total += size;
        }
        total
    }

    /// Drops every image from the page cache so that a start reads the
    /// disk; says so if the kernel kept some.
    pub(crate) fn uncache_images(&self) {
        for name in &self.names {
            let f = std::fs::File::open(image(name)).expect("open image");
            f.sync_all().expect("fsync image");
            posix_fadvise(f.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
                .expect("fadvise");
        }
        if on_path("fincore") {
            let out = run(Command::new("fincore")
                .args(["--bytes", "--noheadings", "--output", "RES"])
                .args(self.names.iter().map(|n| image(n))));
            let cached: u64 = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|w| w.parse::<u64>().ok())
                .sum();
            if cached > 16 * MIB {
                println!(
                    "    note: {} MiB of the images stayed in the page cache",
                    cached / MIB
                );
            }
        }
    }

    /// After a start: every guest runs in a new QEMU process that was
    /// started with `-incoming` (restored, not cold-booted), its image gone.
    pub(crate) fn check_restored(&self, who: &str, before: &[Option<u32>]) {
        for (name, old) in self.names.iter().zip(before) {
            let st = state(name);
            assert_eq!(st, "running", "after {who} start, {name} is {st}");
            let pid = qemu_pid(name)
                .unwrap_or_else(|| panic!("after {who} start, {name} has no QEMU pid file"));
            assert_ne!(
                Some(pid),
                *old,
                "after {who} start, {name} still runs its old QEMU process"
            );
            assert!(
                incoming(pid),
                "after {who} start, {name} was cold-booted: its QEMU (pid {pid}) has no -incoming"
            );
            assert!(
                !image(name).exists(),
                "after {who} start, {name}'s image is still there"
            );
        }
    }

    pub(crate) fn down(&self) {
        for name in &self.names {
            let _ = kvmroll_tests::virsh(&["destroy", name]);
            kvmroll_tests::virsh_ok(&["undefine", name, "--managed-save"]);
            let _ = std::fs::remove_file(image(name));
        }
        leftovers(|l| l.domains.retain(|d| !self.names.contains(d)));
    }
}

pub(crate) fn print_log(out: &Output) {
    for line in text(out).lines().filter(|l| !l.trim().is_empty()) {
        println!("    | {line}");
    }
}

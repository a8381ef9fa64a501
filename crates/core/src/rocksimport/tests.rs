//! Unit tests of [`super`] (rocksimport), kept beside it so the module reads
//! on its own.

use super::gather::appliance_by_rule;
use super::*;
use crate::rocksdump::{self, parse_vm_list};

/// A container and one VM on it, as `rocks dump` writes them.
const SMALL: &[&str] = &[
    "add attr Kickstart_PrivateHostname fe",
    "add appliance vm-container graph=default node=client membership=VM\\ Container public=yes",
    "\"add host\" vm-container-0-0 cpus=4 rack=0 rank=0 membership=VM\\ Container os=linux",
    "add host interface vm-container-0-0 eth0",
    "set host interface subnet vm-container-0-0 eth0 private",
    "\"add host\" v cpus=1 rack=0 rank=0 membership=Hosted\\ VM os=linux",
    "add host interface v eth0",
    "set host interface mac v eth0 52:54:00:00:00:01",
    "set host interface subnet v eth0 private",
    "set host vm v physnode='vm-container-0-0' disk='file:/state/partition1/kvm/disks/v.img,vda,virtio' disksize='8' mem='512' slice='0' virt-type='hvm'",
];

fn dump(more: &[&str]) -> Dump {
    let text: String = SMALL
        .iter()
        .chain(more)
        .map(|l| format!("/opt/rocks/bin/rocks {l}\n"))
        .collect();
    rocksdump::parse(text.as_bytes())
}

fn run(
    base: &Cluster,
    d: &Dump,
    list: Option<&str>,
    opts: Options,
) -> Result<Translation, ImportError> {
    let rows = list.map(|l| parse_vm_list(l.as_bytes()).unwrap());
    let mut n = 0;
    translate(base, d, rows.as_deref(), opts, &mut || {
        n += 1;
        format!("00000000-0000-4000-8000-{n:012}")
    })
}

fn imported(more: &[&str], opts: Options) -> Translation {
    run(&Cluster::seeded(), &dump(more), None, opts).unwrap()
}

fn refused(more: &[&str]) -> String {
    match run(&Cluster::seeded(), &dump(more), None, Options::default()) {
        Ok(t) => panic!("imported: {:?}", t.report),
        Err(e) => crate::sys::error_chain(&e),
    }
}

const SKIP: Options = Options {
    skip_invalid: true,
    merge: false,
};

#[test]
fn memberships_name_appliances_through_add_appliance_else_by_rule() {
    assert_eq!(appliance_by_rule("NAS Appliance"), "nas-appliance");
    assert_eq!(appliance_by_rule("Hosted VM"), "hosted-vm");
    let t = imported(
        &[
            "add appliance nas graph=default node=nas membership=NAS\\ Appliance public=yes",
            "\"add host\" nas-0-0 cpus=2 rack=0 rank=0 membership=NAS\\ Appliance os=linux",
            "\"add host\" login-0-0 cpus=2 rack=0 rank=0 membership=Login\\ Node os=linux",
        ],
        Options::default(),
    );
    let appliance = |h: &str| {
        t.report
            .hosts
            .iter()
            .find(|x| x.name == h)
            .map(|x| x.appliance.clone())
    };
    assert_eq!(appliance("nas-0-0").as_deref(), Some("nas"));
    assert_eq!(appliance("login-0-0").as_deref(), Some("login-node"));
    assert_eq!(appliance("fe").as_deref(), Some("frontend"));
    assert_eq!(t.report.appliances, ["nas", "login-node"]);
}

#[test]
fn localhost_needs_the_frontend_named() {
    let d = rocksdump::parse(b"/opt/rocks/bin/rocks add host attr localhost kvm true\n");
    let e = run(&Cluster::seeded(), &d, None, Options::default()).unwrap_err();
    assert_eq!(
        crate::sys::error_chain(&e),
        "line 1 (attribute kvm of host localhost): the frontend appears as localhost, but the dump sets no global Kickstart_PrivateHostname to name it"
    );
}

#[test]
fn name_old_is_passed_over_only_beside_its_name() {
    let t = imported(
        &[
            "add host attr v cpu_mode host-model",
            "add host attr v cpu_mode_old host-passthrough",
            "add host attr vm-container-0-0 site_old kept",
            "add attr cpu_mode_old host-model",
        ],
        Options::default(),
    );
    assert_eq!(t.report.old_attrs, 1);
    let names: Vec<&str> = t.report.attrs.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(
        names,
        [
            "Kickstart_PrivateHostname",
            "site_old",
            "cpu_mode_old",
            "cpu_mode"
        ]
    );
}

/// Rocks rendered kvm_device_N up to the first gap and dropped the rest
/// silently; kvmroll names the device after the gap.
#[test]
fn a_device_gap_is_refused_naming_the_device_after_it_or_skipped() {
    let devices = [
        "add host attr v kvm_device_0 \\<watchdog\\ model=\\'i6300esb\\'/\\>",
        "add host attr v kvm_device_2 \\<rng\\ model=\\'virtio\\'\\>\\<backend\\ model=\\'random\\'\\>/dev/urandom\\</backend\\>\\</rng\\>",
    ];
    let e = refused(&devices);
    assert!(
        e.starts_with("line 12 (attribute kvm_device_2 of host v): VM \"v\": kvm_device_2 is set but kvm_device_1 is not"),
        "{e}"
    );
    let t = imported(&devices, SKIP);
    assert_eq!(t.report.skipped.len(), 1);
    assert_eq!(t.report.skipped[0].origin, Origin::Line(12));
    assert_eq!(t.report.vms.len(), 1);
}

#[test]
fn a_cdrom_without_a_slot_is_refused_at_its_vm_list_line_or_left_out() {
    let mut d = dump(&[]);
    for c in &mut d.commands {
        if let rocksdump::Command::Vm(vm) = &mut c.command {
            let disks = vm.disks.as_mut().unwrap();
            let first = disks[0].clone();
            disks.clear();
            for dev in ["hda", "hdb", "hdc", "hdd"] {
                let mut d = first.clone();
                d.dev = dev.into();
                d.mode = "ide".into();
                d.path = format!("/state/partition1/kvm/disks/{dev}.img");
                disks.push(d);
            }
        }
    }
    let list = "SLICE MEM CDROM\n0     512 /isos/a.iso\n";
    let e = run(&Cluster::seeded(), &d, Some(list), Options::default()).unwrap_err();
    assert!(
        crate::sys::error_chain(&e).starts_with(
            "VM list line 2 (cdrom of VM v): VM \"v\": no ide slot is left for the cdrom"
        ),
        "{e}"
    );
    let t = run(&Cluster::seeded(), &d, Some(list), SKIP).unwrap();
    assert_eq!(t.report.vms[0].cdrom, None);
    assert_eq!(t.report.vms[0].disks.len(), 4);
    // Without a VM-HOST column the list is one VM's, so two VMs refuse it.
    let two = dump(&[
        "\"add host\" w cpus=1 rack=0 rank=0 membership=Hosted\\ VM os=linux",
        "set host vm w physnode='vm-container-0-0' disk='' disksize='' mem='512' slice='1' virt-type='hvm'",
    ]);
    let e = run(&Cluster::seeded(), &two, Some(list), SKIP).unwrap_err();
    assert!(e.to_string().contains("VM list line 2 (VM list)"), "{e}");
}

#[test]
fn an_unreadable_line_is_listed_when_skipped() {
    let d = dump(&["add attr broken 'quote"]);
    assert!(matches!(
        run(&Cluster::seeded(), &d, None, Options::default()),
        Err(ImportError::Unreadable(_))
    ));
    let t = run(&Cluster::seeded(), &d, None, SKIP).unwrap();
    assert_eq!(t.report.skipped.len(), 1);
    assert_eq!(t.report.skipped[0].origin, Origin::Line(11));
    assert_eq!(t.report.vms.len(), 1);
}

#[test]
fn a_vm_on_a_host_that_is_no_container_is_refused_with_its_line() {
    let e = refused(&[
        "\"add host\" c-0-0 cpus=2 rack=0 rank=0 membership=Compute os=linux",
        "set host vm v physnode='c-0-0'",
    ]);
    assert_eq!(
        e,
        "line 12 (VM v): \"c-0-0\" is not a VM container: its resolved kvm attribute is not true"
    );
}

#[test]
fn a_host_refused_for_its_boot_action_takes_its_attributes_along() {
    let more = [
        "set host boot vm-container-0-0 action=run",
        "add host attr vm-container-0-0 site z",
    ];
    let e = refused(&more);
    assert!(
        e.starts_with("line 11 (host vm-container-0-0): invalid value \"run\" for boot action"),
        "{e}"
    );
    let t = imported(&more, SKIP);
    let skipped: Vec<(Origin, &str, usize)> = t
        .report
        .skipped
        .iter()
        .map(|s| (s.origin, s.subject.as_str(), s.with_it))
        .collect();
    // Its VM, placed on it, is refused in turn.
    assert_eq!(
        skipped,
        [
            (Origin::Line(10), "VM v", 1),
            (Origin::Line(11), "host vm-container-0-0", 1)
        ]
    );
    assert!(t.report.hosts.iter().all(|h| h.name != "vm-container-0-0"));
}

#[test]
fn a_vm_on_the_frontend_is_bridged_to_the_interfaces_its_installer_makes() {
    let t = imported(
        &[
            "add attr Kickstart_PrivateInterface eth0",
            "add attr Kickstart_PublicInterface eth1",
            "add host attr localhost kvm true",
            "\"add host\" w cpus=1 rack=0 rank=0 membership=Hosted\\ VM os=linux",
            "add host interface w eth0",
            "set host interface mac w eth0 52:54:00:00:00:02",
            "set host interface subnet w eth0 public",
            "set host vm w physnode='localhost' disk='' disksize='' mem='512' slice='0' virt-type='hvm'",
        ],
        Options::default(),
    );
    let w = t.report.vms.iter().find(|v| v.name == "w").unwrap();
    assert_eq!(w.container.as_deref(), Some("fe"));
    assert_eq!(
        w.nics.iter().map(|n| n.source.as_str()).collect::<Vec<_>>(),
        ["eth1"]
    );
}

#[test]
fn a_merge_keeps_what_is_equal_and_refuses_what_differs() {
    let first = imported(&["add attr site x"], Options::default());
    let mut base = Cluster::seeded();
    for c in &first.changes {
        base.apply(c).unwrap();
    }
    let merge = Options {
        skip_invalid: false,
        merge: true,
    };
    let again = run(&base, &dump(&["add attr site x"]), None, merge).unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.report.unchanged, 7);
    let e = run(&base, &dump(&["add attr site y"]), None, merge).unwrap_err();
    assert_eq!(
        e.to_string(),
        "1 conflict with the database (the same name, other values): attribute site (global)"
    );
    let e = run(&base, &dump(&[]), None, Options::default()).unwrap_err();
    assert!(matches!(e, ImportError::NotEmpty(3)), "{e}");
}

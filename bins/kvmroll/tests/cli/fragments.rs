//! CPU modes, pinning and device fragments: checked before they reach a definition.

use crate::fixture::*;

on_both_engines!(
    malformed_cpu_mode,
    malformed_pinning_and_devices,
    impossible_pinning,
    a_plugin_time_limit_over_the_cap_is_refused,
    fragments_nested_deeper_than_libvirt_takes_are_refused,
    every_cpuset_of_a_pinning_fragment_is_checked,
);

fn malformed_cpu_mode(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    f.refused(
        &["attr", "set", vm, "cpu_mode", "passthrough"],
        "unknown mode",
    );
    f.refused(
        &["attr", "set", vm, "cpu_mode", "custom"],
        "needs a CPU model",
    );
    f.refused(
        &["attr", "set", vm, "cpu_mode", "custom: <model>x"],
        "never closed",
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "cpu_mode",
            "custom: <model>x</model></cpu><devices><disk/>",
        ],
        "closes an element the fragment did not open",
    );
    f.refused(
        &[
            "attr",
            "set",
            "--global",
            "cpu_mode",
            "exact: <model>a & b</model>",
        ],
        "malformed XML",
    );
}

fn malformed_pinning_and_devices(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    f.refused(
        &["attr", "set", vm, "kvm_cpu_pinning", "pin_some"],
        "not pin_all, pin_auto or a well-formed",
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "kvm_cpu_pinning",
            "<cputune><vcpupin vcpu='0' cpuset='1'/>",
        ],
        "never closed",
    );
    f.refused(
        &["attr", "set", vm, "kvm_cpu_pinning", "</domain><devices/>"],
        "closes an element",
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "kvm_device_0",
            "<hostdev mode='subsystem'>",
        ],
        "never closed",
    );
    f.refused(
        &["attr", "set", vm, "kvm_device_0", "</devices><hostdev/>"],
        "closes an element",
    );
    f.refused(
        &["attr", "set", vm, "kvm_device_0", "<domain/>"],
        "not a libvirt device",
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "kvm_device_1",
            "<watchdog model='i6300esb'/>",
        ],
        "kvm_device_0 is not",
    );
}

fn impossible_pinning(e: Engine) {
    let f = Fixture::on(e);
    f.ok(&[
        "vm",
        "add",
        "wide",
        "--container",
        "vm-container-0-0",
        "--cpus",
        "8",
    ]);
    f.refused(
        &["attr", "set", "wide", "kvm_cpu_pinning", "pin_all"],
        "has only 4 CPUs",
    );
    f.refused(
        &[
            "attr",
            "set",
            "hosted-vm-0-0-0",
            "kvm_cpu_pinning",
            "<cputune><vcpupin vcpu='0' cpuset='7'/></cputune>",
        ],
        "pins to CPU 7 but container \"vm-container-0-0\" has only CPUs 0-3",
    );
    f.refused(
        &[
            "attr",
            "set",
            "hosted-vm-0-0-0",
            "kvm_cpu_pinning",
            "<cputune><vcpupin vcpu='5' cpuset='1'/></cputune>",
        ],
        "names vCPU 5",
    );
    f.ok(&[
        "attr",
        "set",
        "hosted-vm-0-0-0",
        "kvm_cpu_pinning",
        "pin_all",
    ]);
    f.refused(
        &["vm", "set", "hosted-vm-0-0-0", "--cpus", "6"],
        "pin_all needs 6 vCPUs",
    );
    f.refused(
        &["host", "set", "vm-container-0-0", "--cpus", "1"],
        "pin_all needs 2 vCPUs",
    );
    // pin_auto on a full container.
    f.ok(&[
        "attr",
        "set",
        "wide",
        "kvm_cpu_pinning",
        "<cputune><vcpupin vcpu='0' cpuset='2-3'/></cputune>",
    ]);
    f.refused(
        &["attr", "set", "wide", "kvm_cpu_pinning", "pin_auto"],
        "pin_auto needs 8 free CPUs",
    );
}

fn a_plugin_time_limit_over_the_cap_is_refused(e: Engine) {
    let f = Fixture::on(e);
    f.refused(
        &[
            "attr",
            "set",
            "hosted-vm-0-0-0",
            "kvm_plugin_timeout_allocate",
            "4294967295",
        ],
        "over the cap of 3600 s",
    );
    f.ok(&[
        "attr",
        "set",
        "hosted-vm-0-0-0",
        "kvm_plugin_timeout_allocate",
        "3600",
    ]);
}

fn nested(depth: usize) -> String {
    format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth))
}

/// Regression: a fragment 300 levels deep was stored and libvirt then
/// refused the definition ("Excessive depth in document: 256"); 120,000
/// levels overflowed the CLI's stack (exit 134, no message).
fn fragments_nested_deeper_than_libvirt_takes_are_refused(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    let deep = format!("<hostdev>{}</hostdev>", nested(300));
    f.refused(
        &["attr", "set", vm, "kvm_device_0", &deep],
        "kvm_device_0: not a well-formed XML fragment: nested deeper than 254 elements \
         (256 with the 2 of the domain around it)",
    );
    let tune = format!("<cputune>{}</cputune>", nested(300));
    f.refused(
        &["attr", "set", vm, "kvm_cpu_pinning", &tune],
        "nested deeper than 255 elements",
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "cpu_mode",
            &format!("custom: {}", nested(300)),
        ],
        "nested deeper than 254 elements",
    );
    let deepest = format!("<hostdev>{}</hostdev>", nested(120_000));
    let args = f.attr_from_file(vm, "kvm_device_0", &deepest);
    f.refused(
        &args.each_ref().map(String::as_str),
        "nested deeper than 254 elements",
    );
    // The deepest that libvirt takes is kept.
    let ok = format!("<hostdev>{}</hostdev>", nested(253));
    f.ok(&["attr", "set", vm, "kvm_device_0", &ok]);
}

/// Regression: `kvm_cpu_pinning` was checked for `<vcpupin>` only.
fn every_cpuset_of_a_pinning_fragment_is_checked(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    for (fragment, why) in [
        (
            "<cputune><emulatorpin cpuset='zzz'/></cputune>",
            "cpuset \"zzz\": \"zzz\" is not a CPU number",
        ),
        (
            "<cputune><emulatorpin cpuset='6'/></cputune>",
            "kvm_cpu_pinning's <emulatorpin> pins to CPU 6 but container \"vm-container-0-0\" \
             has only CPUs 0-3",
        ),
        (
            "<iothreads>1</iothreads><cputune><iothreadpin iothread='1' cpuset='2-5'/></cputune>",
            "<iothreadpin> pins to CPU 4",
        ),
        (
            "<cputune><vcpupin vcpu='0' cpuset='1'/></cputune><name>evil</name>",
            "<name> is not for this attribute, whose XML holds only <cputune>, <numatune>, \
             <iothreads>, <iothreadids>",
        ),
        (
            "<uuid>0f5a2b3c-1d2e-4f50-8a6b-7c8d9e0f1a2b</uuid>",
            "<uuid> is not for this attribute",
        ),
    ] {
        f.refused(&["attr", "set", vm, "kvm_cpu_pinning", fragment], why);
    }
    f.ok(&[
        "attr",
        "set",
        vm,
        "kvm_cpu_pinning",
        "<cputune><vcpupin vcpu='1' cpuset='3'/><emulatorpin cpuset='0-1'/></cputune>",
    ]);
    // libvirt (its test driver) takes what was accepted.
    f.ok(&["vm", "define", vm]);
}

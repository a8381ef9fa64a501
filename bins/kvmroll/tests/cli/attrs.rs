//! Attributes: the winning scope, and values from files and standard input.

use crate::fixture::*;

on_both_engines!(
    resolution_shows_the_winning_scope,
    values_from_files_and_stdin_and_rocks_escaping,
);

fn resolution_shows_the_winning_scope(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    f.ok(&["attr", "set", "--global", "x", "global"]);
    assert_eq!(f.ok(&["attr", "get", vm, "x"]), "global\n");
    f.ok(&["attr", "set", "--os", "linux", "x", "os"]);
    assert_eq!(f.ok(&["attr", "get", vm, "x"]), "os\n");
    f.ok(&["attr", "set", "--appliance", "hosted-vm", "x", "appliance"]);
    assert_eq!(f.ok(&["attr", "get", vm, "x"]), "appliance\n");
    f.ok(&["attr", "set", "--rack", "0", "x", "rack"]);
    assert_eq!(f.ok(&["attr", "get", vm, "x"]), "rack\n");
    f.ok(&["attr", "set", vm, "x", "host"]);
    let list = f.ok(&["attr", "list", vm]);
    let line = list.lines().find(|l| l.starts_with("x ")).unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["x", "host:hosted-vm-0-0-0", "host"]
    );
    f.ok(&["attr", "rm", vm, "x"]);
    let json: serde_json::Value =
        serde_json::from_str(&f.ok(&["attr", "list", vm, "--json"])).unwrap();
    let x = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "x")
        .unwrap();
    assert_eq!(
        (x["value"].as_str(), x["scope"].as_str()),
        (Some("rack"), Some("rack:0"))
    );
    // Unset: exit 1, nothing printed.
    let out = f.run(&["attr", "get", vm, "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    f.refused(
        &["attr", "rm", vm, "nosuch"],
        "attribute nosuch is not set on host:hosted-vm-0-0-0",
    );
}

fn values_from_files_and_stdin_and_rocks_escaping(e: Engine) {
    let f = Fixture::on(e);
    let vm = "hosted-vm-0-0-0";
    let file = f.file("gpu.xml");
    std::fs::write(
        &file,
        "<hostdev mode='subsystem' type='pci' managed='yes'>\n  <source><address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source>\n</hostdev>\n",
    )
    .unwrap();
    f.ok(&[
        "attr",
        "set",
        vm,
        "kvm_device_0",
        "--value-file",
        file.to_str().unwrap(),
    ]);
    let got = f.ok(&["attr", "get", vm, "kvm_device_0"]);
    assert!(
        got.starts_with("<hostdev") && got.ends_with("</hostdev>\n"),
        "{got}"
    );
    let out = f.run_stdin(
        &["attr", "set", vm, "kvm_cpu_pinning", "-"],
        "&lt;cputune&gt;&lt;vcpupin vcpu='0' cpuset='3'/&gt;&lt;/cputune&gt;\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        f.ok(&["attr", "get", vm, "kvm_cpu_pinning"]),
        "<cputune><vcpupin vcpu='0' cpuset='3'/></cputune>\n"
    );
    f.refused(
        &[
            "attr",
            "set",
            vm,
            "kvm_device_1",
            "--value-file",
            "/nonexistent/x.xml",
        ],
        "cannot read value file",
    );
}

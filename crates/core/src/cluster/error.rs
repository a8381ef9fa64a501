//! Why a change to the cluster, or the rendering of one of its VMs, was
//! refused. Both live here, below the renderer: a change that would break
//! a VM's definition is refused with the renderer's reason
//! ([`ClusterError::WouldBreak`]).

use crate::model::ValidationError;

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("unknown host {0:?}")]
    UnknownHost(String),
    #[error("unknown VM {0:?}")]
    UnknownVm(String),
    #[error("unknown appliance {0:?}")]
    UnknownAppliance(String),
    #[error("{kind} {name:?} already exists")]
    Duplicate { kind: &'static str, name: String },
    #[error("{0:?} is a VM; use `kvmroll vm` for it")]
    IsVm(String),
    #[error("{0:?} is not a VM container: its resolved kvm attribute is not true")]
    NotContainer(String),
    #[error(
        "host {host:?} still holds {count} VM(s), e.g. {example:?}; move or remove them first"
    )]
    HoldsVms {
        host: String,
        count: usize,
        example: String,
    },
    #[error("MAC {0} is already used in the cluster")]
    DuplicateMac(String),
    #[error("VM {vm:?} already has a disk {dev}")]
    DuplicateDisk { vm: String, dev: String },
    #[error("VM {vm:?} has no disk {dev}")]
    UnknownDisk { vm: String, dev: String },
    #[error(
        "disk {dev} of VM {vm:?} is {from} GiB: kvmroll never shrinks a disk (asked for {to} GiB)"
    )]
    DiskShrink {
        vm: String,
        dev: String,
        from: u32,
        to: u32,
    },
    #[error("VM {vm:?} has no NIC with MAC {mac}")]
    UnknownNic { vm: String, mac: String },
    #[error("attribute {name} is not set on {scope}")]
    UnsetAttr { name: String, scope: String },
    #[error("this change would break the definition of VM {vm:?}")]
    WouldBreak {
        vm: String,
        #[source]
        source: RenderError,
    },
}

/// Why a VM cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("unknown VM {0:?}")]
    UnknownVm(String),
    #[error("VM {vm:?}")]
    Attribute {
        vm: String,
        #[source]
        source: ValidationError,
    },
    #[error("VM {vm:?}: kvm_cpu_pinning {pinning} needs the VM placed on a container")]
    Unplaced { vm: String, pinning: &'static str },
    #[error("VM {vm:?}: pin_all needs {vcpus} vCPUs pinned but container {container:?} has only {cpus} CPUs")]
    PinAllTooWide {
        vm: String,
        vcpus: u32,
        container: String,
        cpus: u32,
    },
    #[error("VM {vm:?}: kvm_cpu_pinning's <{element}> pins to CPU {cpu} but container {container:?} has only CPUs 0-{last}")]
    NoSuchCpu {
        vm: String,
        element: &'static str,
        cpu: u32,
        container: String,
        last: u32,
    },
    #[error("VM {vm:?}: no {bus} slot is left for the cdrom: its disks take {taken}")]
    NoCdromSlot {
        vm: String,
        bus: &'static str,
        taken: String,
    },
    #[error("VM {vm:?}: kvm_cpu_pinning's <{element}> names vCPU {vcpu} but the VM has only {vcpus} vCPUs")]
    NoSuchVcpu {
        vm: String,
        element: &'static str,
        vcpu: u32,
        vcpus: u32,
    },
    #[error("VM {vm:?}: kvm_cpu_pinning's <{element}> names NUMA node {node} but container {container:?} has {nodes} (its numa_cells)")]
    NoSuchNode {
        vm: String,
        element: &'static str,
        node: u32,
        container: String,
        nodes: usize,
    },
    #[error("VM {vm:?}: pin_auto needs {need} free CPUs{where_} on container {container:?} but at most {free} are free")]
    PinAutoFull {
        vm: String,
        container: String,
        need: u32,
        free: u32,
        where_: &'static str,
    },
    #[error("VM {vm:?}: kvm_device_{next} is set but kvm_device_{missing} is not; the numbering must have no gap")]
    DeviceGap { vm: String, missing: u32, next: u32 },
    #[error("VM {vm:?}: kvm_device_{index}'s <disk> takes target {dev}, which another disk of the VM has")]
    DuplicateTarget { vm: String, index: u32, dev: String },
    #[error("VM {vm:?}: disks {other} and {dev} take the same {bus} slot (libvirt places a disk by the letters of its name: hda, sda and vda are all the first)")]
    SameSlot {
        vm: String,
        dev: String,
        other: String,
        bus: &'static str,
    },
    /// A fault of kvmroll's own: what it rendered does not parse.
    #[error("VM {vm:?}: the rendered definition does not parse: {why}")]
    Unparsable { vm: String, why: String },
}

#!/bin/bash
# kvmroll's dracut module: puts vfio-pci and kvmroll's udev rules into the
# initramfs, so a PCI device passed through to a VM is bound to vfio-pci
# before the host's own driver can claim it. The host-specific rules come
# from `kvmroll-gen udev HOST`, the configuration that asks for this module
# from `kvmroll-gen dracut HOST`.

# Only on a VM container, where kvmroll's generated rules exist.
check() {
    [[ -f /etc/udev/rules.d/90-kvmroll-vfio.rules ]] || return 1
    return 0
}

depends() {
    echo udev-rules
    return 0
}

installkernel() {
    hostonly='' instmods vfio vfio_iommu_type1 vfio_pci vfio_virqfd
}

install() {
    inst_rules /etc/udev/rules.d/90-kvmroll-vfio.rules 91-kvmroll-vfio-bind.rules
    [[ -f /usr/lib/modprobe.d/kvmroll-vfio.conf ]] && inst_simple /usr/lib/modprobe.d/kvmroll-vfio.conf
    return 0
}

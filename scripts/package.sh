#!/usr/bin/env bash
# Builds kvmroll's packages from the workspace:
#
#   target/packages/kvmroll_VERSION_ARCH.deb     (dpkg-deb)
#   target/packages/kvmroll-VERSION.ARCH.rpm     (rpmbuild, from Debian's rpm)
#
#   scripts/package.sh [--profile release|debug]
#
# Both hold the tree scripts/install.sh lays out (the distributions' paths,
# nothing under /lib), with /etc/kvmroll/kvmroll.conf a configuration file,
# the dependencies declared, and the scripts of packaging/maintainer.sh. The
# release profile is the one to ship; the tests build the debug one, whose
# binaries are stripped here as the release ones are by cargo.
#
# The archives are written with the distributions' own tools, dpkg-deb and
# rpmbuild, which Debian packages (scripts/deps.sh installs them): nothing
# to compile, and the control file, conffiles and scripts are ours to read.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

die() {
    echo "package.sh: $*" >&2
    exit 1
}

profile=release
while [ $# -gt 0 ]; do
    case $1 in
    --profile) profile=${2:-}; shift 2 || die "--profile needs release or debug" ;;
    *) echo "usage: $0 [--profile release|debug]" >&2; exit 2 ;;
    esac
done
case $profile in release | debug) ;; *) echo "package.sh: profile $profile?" >&2; exit 2 ;; esac
for tool in dpkg-deb rpmbuild dpkg-shlibdeps strip gzip; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: run scripts/deps.sh"
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || die "no [workspace.package] version in Cargo.toml"
# KVMROLL_PACKAGE_VERSION: another version for the same build (the package
# test makes a newer one to install over the first).
version=${KVMROLL_PACKAGE_VERSION:-$version}
debarch=$(dpkg --print-architecture)
rpmarch=$(uname -m)
maintainer="kvmroll developers <kvmroll@example.org>"
out=$PWD/target/packages
mkdir -p "$out"
work=$(mktemp -d /tmp/kvmroll-package.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The installed tree, binaries stripped, files root's.
stage=$work/stage
scripts/install.sh --profile "$profile" "$stage" >/dev/null
for b in "$stage"/usr/bin/*; do
    strip --strip-unneeded "$b"
done
install -m 0644 packaging/copyright "$stage/usr/share/doc/kvmroll/copyright"
chown -R -h root:root "$stage" 2>/dev/null || true

# The maintainer scripts' shared text, with a script put in place of the
# line that names it.
with_maintainer() {
    awk -v lib=packaging/maintainer.sh '
        /^#KVMROLL_MAINTAINER#$/ { while ((getline l < lib) > 0) print l; next }
        { print }' "$1"
}

# --- .deb ------------------------------------------------------------------
deb=$work/deb
# Hard links: the three trees share their files (the binaries are large).
cp -al "$stage" "$deb"
mkdir -p "$deb/DEBIAN"
date=$(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")
printf 'kvmroll (%s) unstable; urgency=medium\n\n  * Built from the kvmroll workspace (scripts/package.sh).\n\n -- %s  %s\n' \
    "$version" "$maintainer" "$date" | gzip -9n >"$deb/usr/share/doc/kvmroll/changelog.gz"
for s in postinst prerm postrm; do
    with_maintainer "packaging/deb/$s" >"$deb/DEBIAN/$s"
    chmod 0755 "$deb/DEBIAN/$s"
done
echo /etc/kvmroll/kvmroll.conf >"$deb/DEBIAN/conffiles"
# The shared libraries the binaries link (libc, libvirt), as dpkg-shlibdeps
# finds them; it reads a source package's debian/control.
mkdir -p "$work/src/debian"
printf 'Source: kvmroll\n\nPackage: kvmroll\nArchitecture: any\n' >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O "$deb"/usr/bin/* 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no library dependencies"
size=$(du -sk --exclude=DEBIAN "$deb" | cut -f1)
cat >"$deb/DEBIAN/control" <<CONTROL
Package: kvmroll
Version: $version
Architecture: $debarch
Maintainer: $maintainer
Installed-Size: $size
Depends: $shlibs, libvirt-daemon-driver-qemu | libvirt-daemon-system, qemu-system-x86 | qemu-kvm
Section: admin
Priority: optional
Description: libvirt VM management for Rocks-style clusters
 kvmroll brings the virtual-machine features of a Rocks cluster's KVM roll
 to plain libvirt: a database of hosts, VMs and attributes (kvmroll), a
 libvirt qemu hook that runs the cluster's plugins at every VM event
 (kvmroll-hook, the drop-in /etc/libvirt/hooks/qemu.d/kvmroll), a service
 that saves VMs at shutdown and restores them at boot (kvmroll-guests), the
 renderer of domain XML, kickstart fragments, udev rules and dracut
 configuration (kvmroll-gen), and the node enabler (kvmroll-enable).
CONTROL
(cd "$deb" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
    xargs -d '\n' md5sum) >"$deb/DEBIAN/md5sums"
chmod 0644 "$deb/DEBIAN/control" "$deb/DEBIAN/conffiles" "$deb/DEBIAN/md5sums"
debfile=$out/kvmroll_${version}_${debarch}.deb
dpkg-deb --root-owner-group -Zxz --build "$deb" "$debfile" >/dev/null

# --- .rpm ------------------------------------------------------------------
rpmroot=$work/rpmroot
cp -al "$stage" "$rpmroot"
# RHEL's zsh looks in site-functions.
mkdir -p "$rpmroot/usr/share/zsh/site-functions"
mv "$rpmroot"/usr/share/zsh/vendor-completions/* "$rpmroot/usr/share/zsh/site-functions/"
rmdir "$rpmroot/usr/share/zsh/vendor-completions"
# %files: every file and link, the folders kvmroll owns, the configuration
# kept where it was changed (%config(noreplace)).
files=$work/files
{
    for d in etc/kvmroll etc/kvmroll/plugins etc/kvmroll/vms etc/libvirt/hooks/qemu.d \
        var/lib/kvmroll usr/lib/dracut/modules.d/90kvmroll; do
        echo "%dir /$d"
    done
    (cd "$rpmroot" && find . \( -type f -o -type l \) -printf '/%P\n') | LC_ALL=C sort |
        sed -e 's|^/etc/kvmroll/kvmroll.conf$|%config(noreplace) &|'
} >"$files"
# rpm expands %-macros in the scripts: their own % are doubled.
sed 's/%/%%/g' packaging/maintainer.sh >"$work/maintainer.sh"
spec=$work/kvmroll.spec
awk -v version="$version" -v arch="$rpmarch" -v stage="$rpmroot" -v files="$files" \
    -v maint="$work/maintainer.sh" '
    /^@MAINTAINER@$/ { while ((getline l < maint) > 0) print l; close(maint); next }
    /^@FILES@$/ { while ((getline l < files) > 0) print l; next }
    { gsub(/@VERSION@/, version); gsub(/@ARCH@/, arch); gsub(/@STAGE@/, stage); print }
    ' packaging/kvmroll.spec.in >"$spec"
rpmbuild -bb --quiet \
    --define "_topdir $work/rpmbuild" \
    --define "_rpmdir $out" \
    --define "_rpmfilename %%{NAME}-%%{VERSION}.%%{ARCH}.rpm" \
    --define "_buildhost kvmroll" \
    --define "_binary_payload w6.xzdio" \
    "$spec" >"$work/rpmbuild.log" 2>&1 ||
    die "rpmbuild failed: $(grep -v '^+' "$work/rpmbuild.log" | tail -n 3 | tr '\n' ' ')"
rpmfile=$out/kvmroll-$version.$rpmarch.rpm
[ -f "$rpmfile" ] || die "rpmbuild wrote no $rpmfile"

echo "package.sh: $debfile ($(du -k "$debfile" | cut -f1) KiB), $rpmfile ($(du -k "$rpmfile" | cut -f1) KiB)"

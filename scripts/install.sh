#!/usr/bin/env bash
# Lays out a kvmroll host installation under DESTDIR, in the distributions'
# paths: the binaries in /usr/bin (the hook statically linked), the hook's
# drop-in /etc/libvirt/hooks/qemu.d/kvmroll (a link to it), the systemd
# units in /usr/lib/systemd/system, udev rules in /usr/lib/udev/rules.d,
# the dracut module in /usr/lib/dracut/modules.d, modprobe configuration in
# /usr/lib/modprobe.d, manual pages (gzipped) in /usr/share/man, bash, zsh
# and fish completions, /etc/kvmroll/kvmroll.conf and the empty plugin and
# database folders. Nothing goes under /lib: on a merged-/usr host that is a
# link to usr/lib. scripts/package.sh makes the .deb and .rpm from it.
#
#   scripts/install.sh [--profile release|debug] [--bin-dir DIR] [--tarball OUT.tar.gz] DESTDIR
#
# Builds the binaries with cargo, unless --bin-dir names a folder of built
# ones (the tests use that). Files are owned by whoever runs it: root, for
# a package or a host.
#
# --tarball also packs the files into OUT.tar.gz, for the kickstart's
# fallback (the kvmroll_dist_url attribute). It holds the files and links
# and only the folders kvmroll owns: no "./", "usr/" or "lib/" entry, so
# unpacking it into / (tar --keep-directory-symlink --no-overwrite-dir)
# neither replaces a merged /lib link nor changes the mode of a folder
# that exists. It leaves out /etc/kvmroll/kvmroll.conf, which the kickstart
# writes, so unpacking it never replaces a host's configuration.
set -euo pipefail
# Paths given relative to where it was called from, before the cd below.
here=$PWD
absolute() { case $1 in /*) echo "$1" ;; *) echo "$here/$1" ;; esac; }
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

profile=release tarball= bindir=
while [ $# -gt 1 ]; do
    case $1 in
    --profile) profile=$2; shift 2 ;;
    --tarball) tarball=$(absolute "$2"); shift 2 ;;
    --bin-dir) bindir=$(absolute "$2"); shift 2 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--profile release|debug] [--bin-dir DIR] [--tarball OUT.tar.gz] DESTDIR" >&2; exit 2; }
dest=$1
case $dest in /*) ;; *) echo "install.sh: DESTDIR $dest must be absolute" >&2; exit 2 ;; esac
case $profile in release) flag=--release ;; debug) flag= ;; *) echo "install.sh: profile $profile?" >&2; exit 2 ;; esac

bins="kvmroll kvmroll-gen kvmroll-guests kvmroll-enable kvmroll-hook"
if [ -n "$bindir" ]; then
    out=$bindir hook=$bindir/kvmroll-hook
else
    scripts/build.sh $flag
    # The hook installed is the static one scripts/build.sh builds.
    out=target/$profile hook=$(scripts/build.sh --hook-path $flag)
fi

# The folders kvmroll owns (the tarball's only folder entries).
owned="etc/kvmroll etc/kvmroll/plugins etc/kvmroll/vms var/lib/kvmroll
    usr/lib/dracut/modules.d/90kvmroll usr/share/doc/kvmroll"
for d in $owned usr/bin etc/libvirt/hooks/qemu.d usr/lib/systemd/system usr/lib/udev/rules.d \
    usr/lib/modprobe.d usr/share/bash-completion/completions usr/share/zsh/vendor-completions \
    usr/share/fish/vendor_completions.d; do
    # A folder that exists keeps its mode and owner (DESTDIR may be /).
    [ -d "$dest/$d" ] || install -d -m 0755 "$dest/$d"
done
for b in $bins; do
    from=$out/$b
    [ "$b" = kvmroll-hook ] && from=$hook
    install -m 0755 "$from" "$dest/usr/bin/$b"
done
# The drop-in is the repository's link to /usr/bin/kvmroll-hook.
cp -P etc-libvirt-hooks/qemu.d/kvmroll "$dest/etc/libvirt/hooks/qemu.d/kvmroll"
install -m 0644 etc-kvmroll/kvmroll.conf "$dest/etc/kvmroll/kvmroll.conf"
install -m 0644 systemd/kvmroll-guests.service systemd/kvmroll-events-prune.service \
    systemd/kvmroll-events-prune.timer "$dest/usr/lib/systemd/system/"
install -m 0644 udev/91-kvmroll-vfio-bind.rules "$dest/usr/lib/udev/rules.d/"
install -m 0644 modprobe/kvmroll-vfio.conf "$dest/usr/lib/modprobe.d/"
install -m 0755 dracut/90kvmroll/module-setup.sh "$dest/usr/lib/dracut/modules.d/90kvmroll/"
install -m 0644 README.md "$dest/usr/share/doc/kvmroll/README.md"

docs=$(mktemp -d)
trap 'rm -rf "$docs"' EXIT
"$out/kvmroll-docs" "$docs"
for page in "$docs"/man/man*/*; do
    sec=$(basename "$(dirname "$page")")
    [ -d "$dest/usr/share/man/$sec" ] || install -d -m 0755 "$dest/usr/share/man/$sec"
    # -n: no name or time stamp in the header, so a rebuild is the same.
    gzip -9n <"$page" >"$dest/usr/share/man/$sec/$(basename "$page").gz"
    chmod 0644 "$dest/usr/share/man/$sec/$(basename "$page").gz"
done
install -m 0644 "$docs/bash-completion/completions/"* "$dest/usr/share/bash-completion/completions/"
install -m 0644 "$docs/zsh/vendor-completions/"* "$dest/usr/share/zsh/vendor-completions/"
install -m 0644 "$docs/fish/vendor_completions.d/"* "$dest/usr/share/fish/vendor_completions.d/"
if [ -n "$tarball" ]; then
    # Files and links, and the folders kvmroll owns; never "./" nor a
    # folder of the system's (tar makes a missing one, mode 0755).
    (
        cd "$dest"
        find . -mindepth 1 \( -type f -o -type l \) ! -path ./etc/kvmroll/kvmroll.conf -printf '%P\n'
        for d in $owned; do echo "$d"; done
    ) | LC_ALL=C sort |
        tar -C "$dest" --owner=0 --group=0 --numeric-owner --no-recursion -T - -czf "$tarball"
fi
echo "install.sh: kvmroll installed under $dest${tarball:+ (and packed into $tarball)}"

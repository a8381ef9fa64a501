#!/usr/bin/env bash
# Lays out a kvmroll host installation under DESTDIR: binaries, the hook, the
# systemd unit, udev rules, the dracut module, modprobe configuration, man
# pages, bash and zsh completions, and the empty configuration and database
# folders. For package builds (DESTDIR=pkgroot) and for the kickstart's post
# section, which unpacks the tarball of it (--tarball) on a new container.
#
#   scripts/install.sh [--profile release|debug] [--bin-dir DIR] [--tarball OUT.tar.gz] DESTDIR
#
# Builds the binaries with cargo, unless --bin-dir names a folder of built
# ones (the tests use that). Files are owned by root where run as root.
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

install -d -m 0755 "$dest/usr/local/bin" "$dest/etc/libvirt/hooks" "$dest/etc/kvmroll" \
    "$dest/etc/kvmroll/plugins" "$dest/etc/kvmroll/vms" "$dest/var/lib/kvmroll" \
    "$dest/lib/systemd/system" "$dest/usr/lib/udev/rules.d" "$dest/etc/modprobe.d" \
    "$dest/usr/lib/dracut/modules.d/90kvmroll" "$dest/usr/local/share/man/man5" \
    "$dest/usr/share/bash-completion/completions" "$dest/usr/share/zsh/vendor-completions"
for b in $bins; do
    from=$out/$b
    [ "$b" = kvmroll-hook ] && from=$hook
    install -m 0755 "$from" "$dest/usr/local/bin/$b"
done
"$hook" install --force --root "$dest" >/dev/null
install -m 0644 systemd/kvmroll-guests.service systemd/kvmroll-events-prune.service \
    systemd/kvmroll-events-prune.timer "$dest/lib/systemd/system/"
install -m 0644 udev/91-kvmroll-vfio-bind.rules "$dest/usr/lib/udev/rules.d/"
install -m 0644 modprobe/kvmroll-vfio.conf "$dest/etc/modprobe.d/"
install -m 0755 dracut/90kvmroll/module-setup.sh "$dest/usr/lib/dracut/modules.d/90kvmroll/"

docs=$(mktemp -d)
trap 'rm -rf "$docs"' EXIT
"$out/kvmroll-docs" "$docs"
for sec in 1 8; do
    install -d -m 0755 "$dest/usr/local/share/man/man$sec"
    install -m 0644 "$docs/man/man$sec/"* "$dest/usr/local/share/man/man$sec/"
done
install -m 0644 docs/man/kvmroll.conf.5 "$dest/usr/local/share/man/man5/"
install -m 0644 "$docs/bash-completion/completions/"* "$dest/usr/share/bash-completion/completions/"
install -m 0644 "$docs/zsh/vendor-completions/"* "$dest/usr/share/zsh/vendor-completions/"
if [ "$(id -u)" -eq 0 ]; then
    chown -R root:root "$dest/usr/local/bin" "$dest/etc/libvirt" "$dest/etc/kvmroll" \
        "$dest/lib/systemd" "$dest/usr/lib/udev" "$dest/usr/lib/dracut" "$dest/etc/modprobe.d"
fi
if [ -n "$tarball" ]; then
    tar -C "$dest" --owner=0 --group=0 -czf "$tarball" .
fi
echo "install.sh: kvmroll installed under $dest${tarball:+ (and packed into $tarball)}"

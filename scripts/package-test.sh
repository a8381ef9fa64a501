#!/usr/bin/env bash
# The packages' test, on this machine, as root: builds both packages
# (scripts/package.sh, debug profile), reads them (lintian, rpm -qlp,
# dpkg-deb), installs the .deb with dpkg -i beside a hook of the host's own
# at /etc/libvirt/hooks/qemu, starts a VM on this machine's libvirtd through
# the packaged hook, reads every installed manual page with man -l, then
# removes and purges the package.
#
#   scripts/package-test.sh
#
# It changes the machine for every other test (a package installed,
# libvirtd restarted), so scripts/test.sh runs it alone, after cargo test.
# It puts back what it found: /etc/libvirt/hooks/qemu, /etc/kvmroll (the
# end-to-end setup's), no kvmroll package, libvirtd restarted with the
# hooks it had. Prints one line per check and closes with
# "package-test: N passed, M failed"; exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"
export LC_ALL=C

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAILED: $*"; }
# check WHAT CMD...: one check, passed when CMD succeeds.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
die() {
    echo "package-test.sh: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (dpkg -i, libvirtd)"
state=$(dpkg-query -W -f='${Status}' kvmroll 2>/dev/null || true)
[ -z "$state" ] || [ "$state" = "unknown ok not-installed" ] ||
    die "a kvmroll package is on this machine already ($state): not touching it"

started=$(date +%s)
hooks=/etc/libvirt/hooks
vm=kvmroll-pkgtest-vm
data=/var/lib/kvmroll/pkgtest
save=$(mktemp -d /var/tmp/kvmroll-package-test.XXXXXX)
out=$save/out
had_qemu_d=no
[ -d $hooks/qemu.d ] && had_qemu_d=yes
had_var=no
[ -d /var/lib/kvmroll ] && had_var=yes
libvirtd_ran=no
scripts/libvirtd.sh status >/dev/null 2>&1 && libvirtd_ran=yes

# What the machine had, to put back whatever happens. A copy that cannot
# be made (a full disk) ends the test here, before anything is changed:
# putting back from a broken copy would lose what it failed to keep.
unsaved() {
    rm -rf "$save"
    die "cannot keep a copy of $1 in /var/tmp ($2): nothing was changed"
}
if [ -e $hooks/qemu ]; then
    why=$(cp -a $hooks/qemu "$save/qemu" 2>&1) || unsaved $hooks/qemu "${why%%$'\n'*}"
fi
if [ -d /etc/kvmroll ]; then
    why=$(tar -C /etc -cpf "$save/etc-kvmroll.tar" kvmroll 2>&1) ||
        unsaved /etc/kvmroll "${why%%$'\n'*}"
fi

restore() {
    if dpkg-query -W -f='${Status}' kvmroll 2>/dev/null | grep -qv not-installed; then
        dpkg --purge kvmroll >/dev/null 2>&1 || echo "package-test.sh: warning: dpkg --purge kvmroll failed" >&2
    fi
    if virsh -q -c qemu:///system dominfo "$vm" >/dev/null 2>&1; then
        virsh -q -c qemu:///system destroy "$vm" >/dev/null 2>&1
        virsh -q -c qemu:///system undefine "$vm" >/dev/null 2>&1
    fi
    rm -f $hooks/qemu
    [ -e "$save/qemu" ] && cp -a "$save/qemu" $hooks/qemu
    [ $had_qemu_d = no ] && rmdir $hooks/qemu.d 2>/dev/null
    rm -rf /etc/kvmroll
    [ -e "$save/etc-kvmroll.tar" ] && tar -C /etc -xpf "$save/etc-kvmroll.tar"
    rm -rf "$data"
    [ $had_var = no ] && rmdir /var/lib/kvmroll 2>/dev/null
    # libvirtd as it was: running with the hooks it had.
    if [ $libvirtd_ran = yes ]; then
        KVMROLL_LIBVIRTD_RESTART=1 scripts/libvirtd.sh up >/dev/null ||
            echo "package-test.sh: warning: libvirtd did not come back up" >&2
    fi
    rm -rf "$save"
}
trap restore EXIT

# --- the packages ----------------------------------------------------------
t0=$(date +%s)
if scripts/package.sh --profile debug >"$out" 2>&1; then
    pass "both packages build ($(($(date +%s) - t0)) s): $(tail -n1 "$out" | sed 's/^package.sh: //')"
else
    fail "scripts/package.sh: $(tail -n3 "$out")"
    echo "package-test: $passed passed, $failed failed"
    exit 1
fi
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
deb=target/packages/kvmroll_${version}_$(dpkg --print-architecture).deb
rpmf=target/packages/kvmroll-$version.$(uname -m).rpm

lintian --fail-on error "$deb" >"$out" 2>&1
check "lintian reports no error on the .deb ($(grep -c '^W:' "$out") warnings)" \
    sh -c "! grep -q '^E:' '$out'"
grep '^E:' "$out"
rpm -qlp "$rpmf" >"$save/rpm-files" 2>"$out"
check "rpm -qlp lists the .rpm's files ($(wc -l <"$save/rpm-files"))" \
    grep -qx /usr/bin/kvmroll-hook "$save/rpm-files"
check "no path of the .rpm starts with /lib/" sh -c "! grep -q '^/lib/' '$save/rpm-files'"
check "the .rpm's configuration file is /etc/kvmroll/kvmroll.conf" \
    sh -c "rpm -qpc '$rpmf' 2>/dev/null | grep -qx /etc/kvmroll/kvmroll.conf"
dpkg-deb -c "$deb" | awk '{print $6}' >"$save/deb-files"
check "no path of the .deb starts with /lib/" sh -c "! grep -q '^\./lib/' '$save/deb-files'"
check "the .deb's conffile is /etc/kvmroll/kvmroll.conf" \
    sh -c "dpkg-deb -f '$deb' >/dev/null && dpkg-deb -I '$deb' conffiles | grep -qx /etc/kvmroll/kvmroll.conf"

# --- installed beside a host's own hook --------------------------------------
mkdir -p $hooks
printf '#!/bin/sh\n# A site hook of the test: it notes each call.\necho "$1 $2 $3" >>%s/site-hook.log\ncat >/dev/null\n' \
    "$save" >$hooks/qemu
chmod 0755 $hooks/qemu
cp -a $hooks/qemu "$save/site-hook"
rm -rf /etc/kvmroll
if dpkg -i "$deb" >"$out" 2>&1; then
    pass "dpkg -i installs the .deb"
elif timeout 600 apt-get install -f -y -q >>"$out" 2>&1 && dpkg-query -W -f='${Status}' kvmroll | grep -q "ok installed"; then
    pass "dpkg -i, then apt-get install -f for its dependencies, installs the .deb"
else
    fail "dpkg -i: $(tail -n5 "$out")"
    echo "package-test: $passed passed, $failed failed"
    exit 1
fi
sed 's/^/  postinst: /' "$out" | grep kvmroll: || true
check "the host's own /etc/libvirt/hooks/qemu survives installation, byte for byte" cmp -s "$save/site-hook" $hooks/qemu
check "the postinst reports that hook, left as it is" grep -q "$hooks/qemu, this host's own hook, was left as it is" "$out"
check "the hook is the drop-in $hooks/qemu.d/kvmroll -> /usr/bin/kvmroll-hook" \
    test "$(readlink $hooks/qemu.d/kvmroll)" = /usr/bin/kvmroll-hook -a -x /usr/bin/kvmroll-hook
check "no installed path starts with /lib/" sh -c "! dpkg -L kvmroll | grep -q '^/lib/'"
check "the units a container needs are enabled" \
    test -L /etc/systemd/system/multi-user.target.wants/kvmroll-guests.service -a \
    -L /etc/systemd/system/timers.target.wants/kvmroll-events-prune.timer

# --- a VM start runs the packaged hook ---------------------------------------
host=$(hostname -s)
cat >/etc/kvmroll/kvmroll.conf <<CONF
# The package test's database (scripts/package-test.sh).
db = $data/kvmroll.db
root = $data/etc
kvmroll = /usr/bin/kvmroll
CONF
k() { /usr/bin/kvmroll "$@" >>"$out" 2>&1; }
: >"$out"
k db init && k --no-sync host add "$host" --appliance vm-container --cpus 2 &&
    k --no-sync attr set --appliance hosted-vm cpu_mode "host-passthrough: <feature policy='disable' name='arch-capabilities'/>" &&
    k --no-sync attr set --global kvm_graphics none &&
    k --no-sync vm add "$vm" --container "$host" --mem 64 --cpus 1 ||
    fail "the packaged kvmroll makes a database: $(tail -n2 "$out")"
# libvirtd runs a hook only if it found one when it started.
KVMROLL_LIBVIRTD_RESTART=1 scripts/libvirtd.sh up >/dev/null || fail "libvirtd restart"
if k vm define "$vm" && virsh -q -c qemu:///system start "$vm" >>"$out" 2>&1; then
    /usr/bin/kvmroll events --vm "$vm" >"$save/events" 2>&1
    check "a VM start on this machine's libvirtd runs the packaged hook (its events are recorded)" \
        sh -c "grep -Eq 'prepare +begin' '$save/events' && grep -Eq 'start +begin' '$save/events' &&
            ! grep -q pass-through '$save/events'"
    check "libvirt ran the host's own hook too" grep -q "^$vm prepare begin" "$save/site-hook.log"
    virsh -q -c qemu:///system destroy "$vm" >/dev/null 2>&1
else
    fail "the VM start: $(tail -n3 "$out")"
fi
# The hook's detached refresh after release end may still be running.
sleep 1
k vm remove "$vm" || virsh -q -c qemu:///system undefine "$vm" >/dev/null 2>&1

# --- manual pages --------------------------------------------------------------
pages=$(dpkg -L kvmroll | grep '^/usr/share/man/man./.*\.gz$')
names=$(for p in $pages; do b=${p##*/}; b=${b%.gz}; echo "${b%.*}(${b##*.})"; done)
bad=
for p in $pages; do
    b=${p##*/}
    b=${b%.gz}
    name=${b%.*}
    text=$(MANWIDTH=1000 man -l "$p" 2>/dev/null | col -b)
    line=$(printf '%s\n' "$text" | sed -n '/^NAME$/{n;p;q}' | sed 's/^ *//')
    case $line in
    "$name - "*) ;;
    *) bad="$bad $name: NAME reads '$line';" ;;
    esac
    case $line in *Generates*) bad="$bad $name: the docs crate's NAME;" ;; esac
    for ref in $(printf '%s\n' "$text" | grep -o 'kvmroll[a-z.-]*([0-9])' | sort -u); do
        printf '%s\n' "$names" | grep -qxF "$ref" || bad="$bad $name names $ref, not installed;"
    done
done
check "man -l of every installed page ($(echo "$pages" | wc -w)) shows its own NAME line, and no page names one not installed${bad:+:$bad}" \
    test -z "$bad"

# --- reinstall, removal, purge ------------------------------------------------
dpkg -i "$deb" >"$out" 2>&1
check "installing it again keeps the database, which its postinst finds current" \
    sh -c "grep -q 'at schema [0-9]*: nothing to do' '$out' && /usr/bin/kvmroll host show '$host' >/dev/null 2>&1"
# A newer package over this one: the same build under a higher version.
newer=$version+upgrade
if KVMROLL_PACKAGE_VERSION=$newer scripts/package.sh --profile debug >"$out" 2>&1 &&
    dpkg -i "target/packages/kvmroll_${newer}_$(dpkg --print-architecture).deb" >"$out" 2>&1; then
    check "a newer package ($newer) installed over it keeps the database and the configuration" \
        sh -c "dpkg-query -W -f='\${Version}' kvmroll | grep -qx '$newer' && /usr/bin/kvmroll host show '$host' >/dev/null 2>&1 && test -s /etc/kvmroll/kvmroll.conf"
else
    fail "the newer package $newer: $(tail -n3 "$out")"
fi
rm -f target/packages/kvmroll_${newer}_* target/packages/kvmroll-${newer}.*
cp /etc/kvmroll/kvmroll.conf "$save/conf"
dpkg -r kvmroll >"$out" 2>&1 || fail "dpkg -r: $(tail -n3 "$out")"
check "dpkg -r leaves the database in place" test -s "$data/kvmroll.db"
check "dpkg -r leaves the configuration in place" cmp -s "$save/conf" /etc/kvmroll/kvmroll.conf
check "dpkg -r removes the binaries and the drop-in" \
    test ! -e /usr/bin/kvmroll -a ! -L $hooks/qemu.d/kvmroll
check "dpkg -r disables the units" \
    test ! -L /etc/systemd/system/multi-user.target.wants/kvmroll-guests.service -a \
    ! -L /etc/systemd/system/timers.target.wants/kvmroll-events-prune.timer
check "the host's own hook survives removal, byte for byte" cmp -s "$save/site-hook" $hooks/qemu
dpkg --purge kvmroll >"$out" 2>&1 || fail "dpkg --purge: $(tail -n3 "$out")"
check "dpkg --purge removes the configuration and keeps the database" \
    test ! -e /etc/kvmroll/kvmroll.conf -a -s "$data/kvmroll.db"

echo "package-test: the step took $(($(date +%s) - started)) s"
echo "package-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

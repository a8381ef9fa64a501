#!/usr/bin/env bash
# Install what kvmroll needs to build and to run its tests against a real
# libvirtd (Debian 12). Idempotent; quiet unless something fails, then prints
# one line on stderr and exits non-zero.
#
#   scripts/deps.sh            install missing packages, check rustfmt/clippy
#
# Never installs libvirt-daemon-system: it pulls in systemd-sysv. The daemons
# are started by hand with scripts/libvirtd.sh.
set -euo pipefail

PACKAGES=(
    libvirt-daemon
    libvirt-daemon-driver-qemu
    libvirt-clients
    qemu-system-x86
    # qemu-img: grows qcow2 disk images (the hook), and the tests read images
    # with it; qemu-io writes into them.
    qemu-utils
    libvirt-dev
    pkg-config
    iproute2
    libxml2-utils
    systemd
    udev
    dracut-core
    # The C of bundled SQLite, and glibc's static libraries for the static
    # hook (scripts/build.sh); binutils (as, ld) comes with gcc.
    gcc
    libc6-dev
    # libFuzzer's C++, which the fuzz targets build (scripts/fuzz.sh).
    g++
    # The cluster test rig (tests/src/rig): a private PostgreSQL server, and
    # unshare, nsenter and setpriv for its namespaced daemons. The package's
    # postinst makes a "main" cluster and asks invoke-rc.d to start it; with
    # no init system running invoke-rc.d starts nothing, and the rig uses
    # neither that cluster nor port 5432.
    postgresql
    util-linux
)

die() {
    echo "deps.sh: $*" >&2
    exit 1
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "must run as root (or with sudo available)"
    SUDO=(sudo -n)
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "needs a Debian-based system with apt-get (Debian 12 expected)"
fi

installed() {
    # "install ok installed" only; "rc" (config-files) or half-installed count as missing.
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for p in "${PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    log=$(mktemp /tmp/kvmroll-deps.XXXXXX.log)
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-q -y -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=120)
    if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_opts[@]}" update >>"$log" 2>&1; then
        die "apt-get update failed ($(grep -E '^(E|W):' "$log" | tail -n1 || true); log: $log)"
    fi
    if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
        die "apt-get install ${missing[*]} failed ($(grep -E '^E:' "$log" | tail -n1 || true); log: $log)"
    fi
    still=()
    for p in "${missing[@]}"; do
        installed "$p" || still+=("$p")
    done
    [ "${#still[@]}" -eq 0 ] || die "packages still not installed after apt-get: ${still[*]} (log: $log)"
    rm -f "$log"
fi

# Binaries the scripts and tests rely on, whatever package provided them.
for b in virsh libvirtd virtlogd qemu-system-x86_64 qemu-img ip pkg-config; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || die "'$b' not found after install"
done
pkg-config --exists libvirt || die "pkg-config cannot find libvirt (libvirt-dev broken?)"
for b in unshare nsenter setpriv; do
    command -v "$b" >/dev/null 2>&1 || die "'$b' not found after install (util-linux)"
done
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null ||
    die "no PostgreSQL server under /usr/lib/postgresql after install"

# Rust toolchain components used by CI.
command -v cargo >/dev/null 2>&1 || die "cargo not found in PATH (install a Rust toolchain via rustup)"
need_components=()
cargo fmt --version >/dev/null 2>&1 || need_components+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || need_components+=(clippy)
if [ "${#need_components[@]}" -gt 0 ]; then
    command -v rustup >/dev/null 2>&1 ||
        die "missing Rust components: ${need_components[*]} (and no rustup to add them)"
    rustup component add "${need_components[@]}" >/dev/null 2>&1 ||
        die "rustup component add ${need_components[*]} failed"
    cargo fmt --version >/dev/null 2>&1 || die "cargo fmt still unavailable after rustup component add"
    cargo clippy --version >/dev/null 2>&1 || die "cargo clippy still unavailable after rustup component add"
fi

# Fuzzing (scripts/fuzz.sh): cargo-fuzz on the nightly toolchain, which
# these machines have (nothing but the package registries can be reached,
# so a missing toolchain cannot be fetched). cargo-fuzz is built from
# crates.io when missing: about 4 minutes here, bounded at 15.
rustup run nightly rustc --version >/dev/null 2>&1 ||
    die "the nightly Rust toolchain is missing (scripts/fuzz.sh needs it)"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    log=$(mktemp /tmp/kvmroll-deps.XXXXXX.log)
    timeout 900 cargo install cargo-fuzz --locked >"$log" 2>&1 ||
        die "cargo install cargo-fuzz failed or took over 15 minutes (log: $log)"
    command -v cargo-fuzz >/dev/null 2>&1 || die "cargo-fuzz not in PATH after cargo install (log: $log)"
    rm -f "$log"
fi
exit 0

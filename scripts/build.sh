#!/usr/bin/env bash
# Builds kvmroll: every binary of the workspace into target/PROFILE, and the
# hook once more, statically linked, into target/TRIPLE/PROFILE. The static
# hook is the one installed (hook-setup.sh, install.sh): libvirtd waits for
# its hook at every VM event, and a static binary starts without the dynamic
# loader (see bins/kvmroll-hook/src/main.rs), nor breaks while shared
# libraries are being upgraded under it.
#
#   scripts/build.sh [--release]           builds
#   scripts/build.sh --hook-path [--release]
#                                          prints where the static hook is
#
# The static build has its own target folder because crt-static cannot apply
# to the binaries that link libvirt, and cargo has no per-package rustflags.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

profile=debug flag= print=
for a in "$@"; do
    case $a in
    --release) profile=release flag=--release ;;
    --hook-path) print=1 ;;
    *) echo "build.sh: unknown option $a" >&2; exit 2 ;;
    esac
done
triple=$(rustc -vV | sed -n 's/^host: //p')
hook=$PWD/target/$triple/$profile/kvmroll-hook
if [ -n "$print" ]; then
    echo "$hook"
    exit 0
fi
cargo build --workspace $flag --quiet
# --target keeps RUSTFLAGS off build scripts and proc macros.
RUSTFLAGS="-C target-feature=+crt-static" cargo build -p kvmroll-hook $flag --target "$triple" --quiet

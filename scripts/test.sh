#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run): installs what is missing,
# checks formatting and lints, builds, brings up a real libvirtd, runs the
# unit, golden, property, CLI and end-to-end tests against it, then fuzzes
# every parser of outside input for a bounded time (scripts/fuzz.sh, 30 s a
# target; KVMROLL_FUZZ_SECONDS changes it).
#
#   scripts/test.sh            everything
#
# Needs root (apt-get, libvirtd, /etc/libvirt/hooks). The end-to-end tests are
# required here (KVMROLL_E2E=1): a missing daemon fails them instead of
# skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '== %s\n' "$*"; }

step "dependencies"
scripts/deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build (and the static hook)"
scripts/build.sh

step "libvirtd, with the built hook installed before it starts"
E2E=/var/lib/kvmroll/e2e
scripts/hook-setup.sh debug "$E2E/kvmroll.db" "$E2E/etc"

step "a private PostgreSQL server for the store tests"
pg_dir=$(mktemp -d /tmp/kvmroll-pg.XXXXXX)
trap 'scripts/pg-test-server.sh stop "$pg_dir" || true; rm -rf "$pg_dir"' EXIT
export "$(scripts/pg-test-server.sh start "$pg_dir")"

step "tests (unit, golden, CLI, end-to-end)"
export KVMROLL_E2E=1
log=$(mktemp /tmp/kvmroll-test.XXXXXX.log)
set +e
cargo test --workspace --no-fail-fast -- --test-threads=4 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo's own last line is the
# doc-tests of the last crate, often "0 passed").
passed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
failed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | awk '{s += $1} END {print s + 0}')
rm -f "$log"

step "fuzzing (scripts/fuzz.sh)"
set +e
scripts/fuzz.sh "${KVMROLL_FUZZ_SECONDS:-30}"
fuzz_status=$?
set -e

# Last, as CI reads it: the tests' closing line.
echo "tests: $passed passed, $failed failed"
[ "$status" -ne 0 ] && exit "$status"
exit "$fuzz_status"
